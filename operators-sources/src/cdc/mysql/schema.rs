//! The followed table's columns, read from `information_schema`.

use arrow::datatypes::{Field, SchemaRef};
use sqlx::MySqlPool;

use crate::cdc::changelog_schema;
use crate::error::SourceError;
use crate::jdbc::{ColumnKind, DbKind, describe_sqlx};

/// One column of the followed table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TableColumn {
    pub name: String,
    pub kind: ColumnKind,
    /// An unsigned integer: the log's values are read as signed (MariaDB sends no
    /// signedness by default) and are taken back to unsigned with this many bits.
    pub unsigned_bits: Option<u32>,
    /// An ENUM's or SET's members, in declaration order: the log has their numbers.
    pub members: Option<Vec<String>>,
    /// `set`: the log's value is a bit mask of members.
    pub is_set: bool,
}

/// The followed table.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub database: String,
    pub table: String,
    pub columns: Vec<TableColumn>,
    /// The primary key column's index: the snapshot reads in its order and the log's
    /// changes are matched to the snapshot's chunks by it.
    pub key: usize,
    /// The table's columns and the change columns.
    pub schema: SchemaRef,
}

/// The setting that names the table, for errors.
pub(crate) const TABLE_KEY: &str = "source.db.table";

impl TableInfo {
    /// Reads the columns of `database`.`table`.
    pub(crate) async fn describe(pool: &MySqlPool, database: &str, table: &str) -> Result<Self, SourceError> {
        let sql = "select cast(column_name as char), cast(data_type as char), cast(column_type as char), \
                   cast(column_key as char), cast(coalesce(character_set_name, '') as char) \
                   from information_schema.columns \
                   where table_schema = ? and table_name = ? order by ordinal_position";
        let rows: Vec<(String, String, String, String, String)> =
            sqlx::query_as(sql).bind(database).bind(table).fetch_all(pool).await.map_err(|e| {
                SourceError::config(
                    TABLE_KEY,
                    format!("cannot read the columns of `{database}`.`{table}`: {}", describe_sqlx(&e)),
                )
            })?;
        if rows.is_empty() {
            return Err(SourceError::config(TABLE_KEY, format!("table `{database}`.`{table}` does not exist")));
        }
        let mut columns = Vec::with_capacity(rows.len());
        let mut keys = Vec::new();
        for (i, (name, data_type, column_type, column_key, charset)) in rows.into_iter().enumerate() {
            let column = map_column(&name, &data_type, &column_type).map_err(|m| {
                SourceError::config(TABLE_KEY, format!("column `{name}` of `{database}`.`{table}`: {m}"))
            })?;
            // The log has text in the column's character set, not converted as query
            // results are: only UTF-8 (and its ASCII subset) is read as is.
            let utf8 = ["", "utf8", "utf8mb3", "utf8mb4", "ascii", "binary"];
            if !utf8.contains(&charset.to_ascii_lowercase().as_str()) {
                return Err(SourceError::config(
                    TABLE_KEY,
                    format!(
                        "column `{name}` of `{database}`.`{table}` is in character set {charset}; the CDC source reads \
                         utf8mb4 (or ascii) text from the binlog: convert the column (ALTER TABLE … CONVERT TO \
                         CHARACTER SET utf8mb4)"
                    ),
                ));
            }
            if column_key.eq_ignore_ascii_case("PRI") {
                keys.push(i);
            }
            columns.push(column);
        }
        let key = match keys.as_slice() {
            [k] if is_integer(columns[*k].kind) => *k,
            [k] => {
                return Err(SourceError::config(
                    TABLE_KEY,
                    format!(
                        "`{database}`.`{table}`'s primary key `{}` is not an integer column; the snapshot reads a \
                         table in chunks of its integer primary key",
                        columns[*k].name
                    ),
                ));
            }
            [] => {
                return Err(SourceError::config(
                    TABLE_KEY,
                    format!("`{database}`.`{table}` has no primary key; changes are applied by key, so it needs one"),
                ));
            }
            _ => {
                return Err(SourceError::config(
                    TABLE_KEY,
                    format!(
                        "`{database}`.`{table}` has a primary key of {} columns; the source follows tables with a \
                         one-column integer primary key",
                        keys.len()
                    ),
                ));
            }
        };
        let fields: Vec<Field> = columns.iter().map(|c| Field::new(&c.name, c.kind.arrow_type(), true)).collect();
        let schema = changelog_schema(fields, &columns[key].name);
        Ok(Self { database: database.into(), table: table.into(), columns, key, schema })
    }

    /// `database`.`table`, quoted for MySQL.
    pub(crate) fn quoted(&self) -> String {
        format!("`{}`.`{}`", self.database.replace('`', "``"), self.table.replace('`', "``"))
    }
}

fn is_integer(kind: ColumnKind) -> bool {
    matches!(
        kind,
        ColumnKind::I8
            | ColumnKind::I16
            | ColumnKind::I32
            | ColumnKind::I64
            | ColumnKind::U8
            | ColumnKind::U16
            | ColumnKind::U32
            | ColumnKind::U64
    )
}

/// The column's kind as the database source maps it (so that a table read by either
/// source has one schema), with what decoding the log needs besides.
pub(crate) fn map_column(name: &str, data_type: &str, column_type: &str) -> Result<TableColumn, String> {
    let data_type = data_type.to_ascii_lowercase();
    let declared = column_type;
    let column_type = column_type.to_ascii_lowercase();
    let unsigned = column_type.contains("unsigned");
    let bits = match data_type.as_str() {
        "tinyint" => Some(8),
        "smallint" => Some(16),
        "mediumint" => Some(24),
        "int" | "integer" => Some(32),
        "bigint" => Some(64),
        _ => None,
    };
    // sqlx's names, which `ColumnKind` maps for the database source.
    let type_name = match data_type.as_str() {
        "tinyint" if column_type.starts_with("tinyint(1)") && !unsigned => "BOOLEAN".to_string(),
        "integer" => if unsigned { "INT UNSIGNED" } else { "INT" }.to_string(),
        d if bits.is_some() && unsigned => format!("{} UNSIGNED", d.to_ascii_uppercase()),
        "numeric" => "DECIMAL".to_string(),
        "real" => "DOUBLE".to_string(),
        d => d.to_ascii_uppercase(),
    };
    let kind = ColumnKind::from_type_name(DbKind::MySql, &type_name)
        .ok_or_else(|| format!("type {column_type} is not one the source can read"))?;
    let is_set = data_type == "set";
    let members = (data_type == "enum" || is_set).then(|| parse_members(declared)).transpose()?;
    Ok(TableColumn { name: name.to_string(), kind, unsigned_bits: if unsigned { bits } else { None }, members, is_set })
}

/// The members of `enum('a','b')` or `set('a','b')`, with `''` read as `'`.
fn parse_members(column_type: &str) -> Result<Vec<String>, String> {
    let inner = column_type
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .ok_or_else(|| format!("cannot read the members of {column_type}"))?;
    let mut members = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        match chars.next() {
            None => break,
            Some('\'') => {
                let mut member = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            member.push('\'');
                        }
                        Some('\'') => break,
                        Some('\\') => member.extend(chars.next()),
                        Some(c) => member.push(c),
                        None => return Err(format!("cannot read the members of {column_type}")),
                    }
                }
                members.push(member);
            }
            Some(',' | ' ') => {}
            Some(_) => return Err(format!("cannot read the members of {column_type}")),
        }
    }
    Ok(members)
}

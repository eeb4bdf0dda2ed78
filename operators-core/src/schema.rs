//! The original toolkit's schema strings and value rules.
//!
//! Two notations describe the columns of a text file or a JSON record:
//!
//! - `struct<_col0:BigInt,_col1:String>` (Hive style, [`parse_struct_schema`]);
//! - ordered JSON `{"id":"BigInt","name":"String"}` ([`parse_json_schema`]).
//!
//! Type names are case-insensitive and map to Arrow as the toolkit mapped them to Flink:
//!
//! | name | Arrow |
//! |---|---|
//! | Boolean | Boolean |
//! | SmallInt | Int16 |
//! | Int (Integer) | Int32 |
//! | BigInt (Long) | Int64 |
//! | Float | Float32 |
//! | Double, Decimal | Float64 |
//! | Timestamp | Timestamp(ms): 13-digit epoch ms, `yyyy-MM-dd HH:mm:ss[.SSS]` |
//! | Date | Date32: `yyyy-MM-dd` |
//! | String, List, Map, anything else | Utf8 |
//!
//! A malformed schema string is a [`SchemaError`] that points at the character where it
//! goes wrong. [`convert_strings`] turns text values into a typed column and reports every
//! value that does not parse, by row, so a source can dead-letter exactly those rows.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder, Int16Builder, Int32Builder,
    Int64Builder, StringArray, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::error::Error;

/// A schema string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    /// The text that was parsed.
    pub input: String,
    /// Character index (0-based) where the problem is.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed schema at character {}: {}", self.position + 1, self.message)?;
        // Show the input with a caret under the position (inputs are usually one line).
        if !self.input.contains('\n') && self.input.chars().count() <= 400 {
            write!(f, "\n  {}\n  {}^", self.input, " ".repeat(self.position))?;
        }
        Ok(())
    }
}

impl std::error::Error for SchemaError {}

impl SchemaError {
    /// The configuration error for the setting `key` that held the schema.
    pub fn into_config_error(self, key: &str) -> Error {
        Error::config(key, self.to_string())
    }
}

/// The Arrow type of a toolkit type name (`BigInt`, `decimal(10,2)`, `array<string>`...).
pub fn data_type_for(type_name: &str) -> DataType {
    let base: String = type_name
        .trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect::<String>()
        .to_ascii_lowercase();
    match base.as_str() {
        "boolean" | "bool" => DataType::Boolean,
        "smallint" | "short" => DataType::Int16,
        "int" | "integer" => DataType::Int32,
        "bigint" | "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" | "decimal" => DataType::Float64,
        "timestamp" => DataType::Timestamp(TimeUnit::Millisecond, None),
        "date" => DataType::Date32,
        _ => DataType::Utf8,
    }
}

/// The canonical toolkit name of an Arrow type (the inverse of [`data_type_for`] on the
/// types it produces; other types print as `String`).
pub fn type_name_of(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Boolean => "Boolean",
        DataType::Int16 => "SmallInt",
        DataType::Int32 => "Int",
        DataType::Int64 => "BigInt",
        DataType::Float32 => "Float",
        DataType::Float64 => "Double",
        DataType::Timestamp(_, _) => "Timestamp",
        DataType::Date32 | DataType::Date64 => "Date",
        _ => "String",
    }
}

/// Parses `struct<...>` or ordered-JSON notation, whichever `text` uses.
pub fn parse_schema(text: &str) -> Result<SchemaRef, SchemaError> {
    if text.trim_start().starts_with('{') { parse_json_schema(text) } else { parse_struct_schema(text) }
}

struct Cursor<'a> {
    input: &'a str,
    chars: Vec<char>,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(input: &'a str) -> Self {
        Self { input, chars: input.chars().collect(), pos: 0 }
    }

    fn err(&self, at: usize, message: impl Into<String>) -> SchemaError {
        SchemaError { input: self.input.to_string(), position: at.min(self.chars.len()), message: message.into() }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char, context: &str) -> Result<(), SchemaError> {
        self.skip_ws();
        match self.peek() {
            Some(got) if got == c => {
                self.pos += 1;
                Ok(())
            }
            Some(got) => Err(self.err(self.pos, format!("expected '{c}' {context}, found '{got}'"))),
            None => Err(self.err(self.pos, format!("expected '{c}' {context}, found the end"))),
        }
    }

    fn name(&mut self) -> Result<String, SchemaError> {
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('`') {
            self.pos += 1;
            let mut name = String::new();
            loop {
                match self.peek() {
                    Some('`') if self.chars.get(self.pos + 1) == Some(&'`') => {
                        name.push('`');
                        self.pos += 2;
                    }
                    Some('`') => {
                        self.pos += 1;
                        break;
                    }
                    Some(c) => {
                        name.push(c);
                        self.pos += 1;
                    }
                    None => return Err(self.err(start, "unterminated `quoted` field name")),
                }
            }
            if name.is_empty() {
                return Err(self.err(start, "empty field name"));
            }
            return Ok(name);
        }
        while self.peek().is_some_and(|c| !c.is_whitespace() && !matches!(c, ':' | ',' | '<' | '>' | '(' | ')' | '`')) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(match self.peek() {
                Some(c) => self.err(start, format!("expected a field name, found '{c}'")),
                None => self.err(start, "expected a field name, found the end"),
            });
        }
        Ok(self.chars[start..self.pos].iter().collect())
    }

    /// A type: an identifier, optionally followed by balanced `<...>` or `(...)`.
    fn type_name(&mut self) -> Result<String, SchemaError> {
        self.skip_ws();
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(match self.peek() {
                Some(c) => self.err(start, format!("expected a type name, found '{c}'")),
                None => self.err(start, "expected a type name, found the end"),
            });
        }
        self.skip_ws();
        if let Some(open @ ('<' | '(')) = self.peek() {
            let close = if open == '<' { '>' } else { ')' };
            let open_at = self.pos;
            let mut depth = 0usize;
            loop {
                match self.peek() {
                    Some(c) if c == open => depth += 1,
                    Some(c) if c == close => {
                        depth -= 1;
                        if depth == 0 {
                            self.pos += 1;
                            break;
                        }
                    }
                    Some(_) => {}
                    None => return Err(self.err(open_at, format!("unclosed '{open}' in a type"))),
                }
                self.pos += 1;
            }
        }
        Ok(self.chars[start..self.pos].iter().collect::<String>().trim().to_string())
    }
}

fn check_unique(fields: &[(String, usize)], cursor: &Cursor<'_>) -> Result<(), SchemaError> {
    for (i, (name, at)) in fields.iter().enumerate() {
        if fields[..i].iter().any(|(n, _)| n == name) {
            return Err(cursor.err(*at, format!("duplicate field name `{name}`")));
        }
    }
    Ok(())
}

/// Parses `struct<name:Type,...>`.
pub fn parse_struct_schema(text: &str) -> Result<SchemaRef, SchemaError> {
    let mut c = Cursor::new(text);
    c.skip_ws();
    let kw_start = c.pos;
    let kw = c.name().map_err(|_| c.err(kw_start, "expected `struct<`"))?;
    if !kw.eq_ignore_ascii_case("struct") {
        return Err(c.err(kw_start, format!("expected `struct<`, found `{kw}`")));
    }
    c.expect('<', "after `struct`")?;
    let mut fields = Vec::new();
    let mut names = Vec::new();
    c.skip_ws();
    if c.peek() == Some('>') {
        return Err(c.err(c.pos, "a schema needs at least one field"));
    }
    loop {
        c.skip_ws();
        let at = c.pos;
        let name = c.name()?;
        c.expect(':', &format!("after field name `{name}`"))?;
        let ty = c.type_name()?;
        fields.push(Field::new(&name, data_type_for(&ty), true));
        names.push((name, at));
        c.skip_ws();
        match c.peek() {
            Some(',') => c.pos += 1,
            Some('>') => {
                c.pos += 1;
                break;
            }
            Some(other) => return Err(c.err(c.pos, format!("expected ',' or '>' after a field, found '{other}'"))),
            None => return Err(c.err(c.pos, "expected ',' or '>' after a field, found the end")),
        }
    }
    c.skip_ws();
    if let Some(extra) = c.peek() {
        return Err(c.err(c.pos, format!("unexpected '{extra}' after the closing '>'")));
    }
    check_unique(&names, &c)?;
    Ok(Arc::new(Schema::new(fields)))
}

fn json_string(c: &mut Cursor<'_>, what: &str) -> Result<String, SchemaError> {
    c.skip_ws();
    let start = c.pos;
    if c.peek() != Some('"') {
        return Err(match c.peek() {
            Some(got) => c.err(start, format!("expected a quoted {what}, found '{got}'")),
            None => c.err(start, format!("expected a quoted {what}, found the end")),
        });
    }
    c.pos += 1;
    let mut out = String::new();
    loop {
        match c.peek() {
            Some('"') => {
                c.pos += 1;
                return Ok(out);
            }
            Some('\\') => {
                let esc_at = c.pos;
                c.pos += 1;
                let e = c.peek().ok_or_else(|| c.err(esc_at, "unterminated escape"))?;
                c.pos += 1;
                match e {
                    '"' => out.push('"'),
                    '\\' => out.push('\\'),
                    '/' => out.push('/'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex: String = c.chars.get(c.pos..c.pos + 4).map(|h| h.iter().collect()).unwrap_or_default();
                        let code = u32::from_str_radix(&hex, 16).map_err(|_| c.err(esc_at, "bad \\u escape"))?;
                        out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        c.pos += 4;
                    }
                    other => return Err(c.err(esc_at, format!("unknown escape '\\{other}'"))),
                }
            }
            Some(ch) => {
                out.push(ch);
                c.pos += 1;
            }
            None => return Err(c.err(start, format!("unterminated {what}"))),
        }
    }
}

/// Parses ordered JSON `{"name":"Type",...}`; the order of the keys is the column order.
pub fn parse_json_schema(text: &str) -> Result<SchemaRef, SchemaError> {
    let mut c = Cursor::new(text);
    c.expect('{', "at the start of a JSON schema")?;
    let mut fields = Vec::new();
    let mut names = Vec::new();
    c.skip_ws();
    if c.peek() == Some('}') {
        return Err(c.err(c.pos, "a schema needs at least one field"));
    }
    loop {
        c.skip_ws();
        let at = c.pos;
        let name = json_string(&mut c, "field name")?;
        if name.is_empty() {
            return Err(c.err(at, "empty field name"));
        }
        c.expect(':', &format!("after field name \"{name}\""))?;
        let ty = json_string(&mut c, "type name")?;
        if ty.trim().is_empty() {
            return Err(c.err(c.pos.saturating_sub(1), format!("empty type for field \"{name}\"")));
        }
        fields.push(Field::new(&name, data_type_for(&ty), true));
        names.push((name, at));
        c.skip_ws();
        match c.peek() {
            Some(',') => c.pos += 1,
            Some('}') => {
                c.pos += 1;
                break;
            }
            Some(other) => return Err(c.err(c.pos, format!("expected ',' or '}}' after a field, found '{other}'"))),
            None => return Err(c.err(c.pos, "expected ',' or '}' after a field, found the end")),
        }
    }
    c.skip_ws();
    if let Some(extra) = c.peek() {
        return Err(c.err(c.pos, format!("unexpected '{extra}' after the closing '}}'")));
    }
    check_unique(&names, &c)?;
    Ok(Arc::new(Schema::new(fields)))
}

fn needs_quotes(name: &str) -> bool {
    name.is_empty() || name.chars().any(|c| c.is_whitespace() || matches!(c, ':' | ',' | '<' | '>' | '(' | ')' | '`'))
}

/// Prints `schema` as `struct<name:Type,...>` with canonical type names.
pub fn to_struct_string(schema: &Schema) -> String {
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| {
            let name =
                if needs_quotes(f.name()) { format!("`{}`", f.name().replace('`', "``")) } else { f.name().clone() };
            format!("{name}:{}", type_name_of(f.data_type()))
        })
        .collect();
    format!("struct<{}>", fields.join(","))
}

/// Prints `schema` as ordered JSON with canonical type names.
pub fn to_json_schema_string(schema: &Schema) -> String {
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{}:\"{}\"", serde_json::Value::String(f.name().clone()), type_name_of(f.data_type())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// A column converted from text, with the rows whose value did not parse.
#[derive(Debug, Clone)]
pub struct ConvertedColumn {
    /// The typed column; rows in `errors` are null.
    pub array: ArrayRef,
    /// `(row, reason)` of every value that does not parse as the type.
    pub errors: Vec<(usize, String)>,
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(b: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses `yyyy-MM-dd` into days since the epoch.
pub fn parse_date(s: &str) -> Option<i32> {
    let b = s.trim().as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(i64::from(y), m) {
        return None;
    }
    i32::try_from(days_from_civil(i64::from(y), m, d)).ok()
}

/// Parses a timestamp in one of the toolkit's forms into epoch milliseconds:
/// 13-digit epoch ms, `yyyy-MM-dd HH:mm:ss`, or `yyyy-MM-dd HH:mm:ss.SSS` (1 to 9
/// fractional digits, truncated to ms). Times without a zone are read as UTC.
pub fn parse_timestamp_ms(s: &str) -> Option<i64> {
    let t = s.trim();
    let b = t.as_bytes();
    if b.len() == 13 && b.iter().all(u8::is_ascii_digit) {
        return t.parse().ok();
    }
    if b.len() < 19 || (b[10] != b' ' && b[10] != b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let days = i64::from(parse_date(std::str::from_utf8(&b[..10]).ok()?)?);
    let (h, mi, sec) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut ms = 0i64;
    if b.len() > 19 {
        if b[19] != b'.' || b.len() == 20 || b.len() > 29 {
            return None;
        }
        let frac = &b[20..];
        let v = i64::from(digits(&frac[..frac.len().min(3)])?);
        digits(frac)?;
        ms = v * 10i64.pow(3u32.saturating_sub(frac.len() as u32));
    }
    Some(((days * 24 + i64::from(h)) * 60 + i64::from(mi)) * 60_000 + i64::from(sec) * 1000 + ms)
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        t if t.eq_ignore_ascii_case("true") || t == "1" => Some(true),
        t if t.eq_ignore_ascii_case("false") || t == "0" => Some(false),
        _ => None,
    }
}

macro_rules! convert_with {
    ($values:expr, $builder:expr, $parse:expr, $what:expr) => {{
        let mut builder = $builder;
        let mut errors = Vec::new();
        for (row, v) in $values.iter().enumerate() {
            match v {
                None => builder.append_null(),
                Some(s) if s.is_empty() => builder.append_null(),
                Some(s) => match $parse(s) {
                    Some(x) => builder.append_value(x),
                    None => {
                        builder.append_null();
                        errors.push((row, format!("`{}` is not a valid {}", truncate(s), $what)));
                    }
                },
            }
        }
        ConvertedColumn { array: Arc::new(builder.finish()), errors }
    }};
}

fn truncate(s: &str) -> String {
    if s.chars().count() > 60 { format!("{}…", s.chars().take(60).collect::<String>()) } else { s.to_string() }
}

/// Converts text values to `to` by the toolkit's rules. Empty and null values become
/// null; values that do not parse become null and are listed in `errors`.
pub fn convert_strings(values: &StringArray, to: &DataType) -> ConvertedColumn {
    let n = values.len();
    match to {
        DataType::Utf8 => ConvertedColumn { array: Arc::new(values.clone()), errors: Vec::new() },
        DataType::Boolean => convert_with!(values, BooleanBuilder::with_capacity(n), parse_bool, "Boolean"),
        DataType::Int16 => {
            convert_with!(values, Int16Builder::with_capacity(n), |s: &str| s.trim().parse::<i16>().ok(), "SmallInt")
        }
        DataType::Int32 => {
            convert_with!(values, Int32Builder::with_capacity(n), |s: &str| s.trim().parse::<i32>().ok(), "Int")
        }
        DataType::Int64 => {
            convert_with!(values, Int64Builder::with_capacity(n), |s: &str| s.trim().parse::<i64>().ok(), "BigInt")
        }
        DataType::Float32 => {
            convert_with!(values, Float32Builder::with_capacity(n), |s: &str| s.trim().parse::<f32>().ok(), "Float")
        }
        DataType::Float64 => {
            convert_with!(values, Float64Builder::with_capacity(n), |s: &str| s.trim().parse::<f64>().ok(), "Double")
        }
        DataType::Date32 => convert_with!(values, Date32Builder::with_capacity(n), parse_date, "Date (yyyy-MM-dd)"),
        DataType::Timestamp(TimeUnit::Millisecond, None) => convert_with!(
            values,
            TimestampMillisecondBuilder::with_capacity(n),
            parse_timestamp_ms,
            "Timestamp (13-digit epoch ms or yyyy-MM-dd HH:mm:ss[.SSS])"
        ),
        other => {
            // Types outside the toolkit's table: let Arrow's cast decide, value by value.
            let cast = arrow::compute::cast(values, other);
            match cast {
                Ok(array) => {
                    let errors = (0..n)
                        .filter(|&i| values.is_valid(i) && !values.value(i).is_empty() && array.is_null(i))
                        .map(|i| (i, format!("`{}` is not a valid {other}", truncate(values.value(i)))))
                        .collect();
                    ConvertedColumn { array, errors }
                }
                Err(e) => ConvertedColumn {
                    array: arrow::array::new_null_array(other, n),
                    errors: (0..n).map(|i| (i, format!("cannot convert text to {other}: {e}"))).collect(),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};
    use proptest::prelude::*;

    #[test]
    fn struct_schema_with_every_type() {
        let s = parse_struct_schema(
            "struct<a:Boolean, b:smallint,c:INT,d:BigInt,e:Float,f:Double,g:decimal(10,2),h:Timestamp,i:Date,j:String,k:array<string>,l:map<string,int>,m:whatever>",
        )
        .unwrap();
        let types: Vec<&DataType> = s.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            vec![
                &DataType::Boolean,
                &DataType::Int16,
                &DataType::Int32,
                &DataType::Int64,
                &DataType::Float32,
                &DataType::Float64,
                &DataType::Float64,
                &DataType::Timestamp(TimeUnit::Millisecond, None),
                &DataType::Date32,
                &DataType::Utf8,
                &DataType::Utf8,
                &DataType::Utf8,
                &DataType::Utf8,
            ]
        );
        assert_eq!(
            to_struct_string(&s),
            "struct<a:Boolean,b:SmallInt,c:Int,d:BigInt,e:Float,f:Double,g:Double,h:Timestamp,i:Date,j:String,k:String,l:String,m:String>"
        );
    }

    #[test]
    fn json_schema_keeps_order() {
        let s = parse_json_schema(r#"{"city": "String", "name": "String", "id": "Int"}"#).unwrap();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, vec!["city", "name", "id"]);
        assert_eq!(to_json_schema_string(&s), r#"{"city":"String","name":"String","id":"Int"}"#);
        assert_eq!(parse_schema(&to_json_schema_string(&s)).unwrap(), s);
    }

    #[test]
    fn errors_point_at_the_character() {
        let e = parse_struct_schema("struct<id BigInt>").unwrap_err();
        assert_eq!(e.position, 10);
        assert!(e.message.contains("expected ':' after field name `id`"), "{e}");
        assert!(e.to_string().contains("at character 11"), "{e}");
        let e = parse_struct_schema("struct<id:BigInt,,x:Int>").unwrap_err();
        assert_eq!(e.position, 17);
        let e = parse_struct_schema("struct<id:BigInt").unwrap_err();
        assert!(e.message.contains("found the end"), "{e}");
        let e = parse_json_schema(r#"{"id": BigInt}"#).unwrap_err();
        assert_eq!(e.position, 7);
        let e = parse_json_schema(r#"{"id":"Int","id":"String"}"#).unwrap_err();
        assert!(e.message.contains("duplicate field name `id`"), "{e}");
        assert_eq!(e.position, 12);
        let e = parse_struct_schema("list<a:Int>").unwrap_err();
        assert!(e.message.contains("expected `struct<`"), "{e}");
        let e = parse_struct_schema("struct<a:decimal(10,2>").unwrap_err();
        assert!(e.message.contains("unclosed '('"), "{e}");
    }

    #[test]
    fn timestamps_in_the_three_forms() {
        assert_eq!(parse_timestamp_ms("1586959594000"), Some(1_586_959_594_000));
        assert_eq!(parse_timestamp_ms("2020-04-15 14:06:34"), Some(1_586_959_594_000));
        assert_eq!(parse_timestamp_ms("2020-04-15 14:06:34.123"), Some(1_586_959_594_123));
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:00.5"), Some(500));
        assert_eq!(parse_timestamp_ms("1586959594"), None, "10 digits are not 13-digit ms");
        assert_eq!(parse_timestamp_ms("2020-02-30 00:00:00"), None);
        assert_eq!(parse_timestamp_ms("2020-04-15 24:00:00"), None);
        assert_eq!(parse_timestamp_ms("2020-04-15 14:06:34."), None);
        assert_eq!(parse_date("2020-02-29"), Some(18321));
        assert_eq!(parse_date("2021-02-29"), None);
        assert_eq!(parse_date("1969-12-31"), Some(-1));
    }

    #[test]
    fn convert_reports_bad_rows() {
        let values = StringArray::from(vec![Some("1"), Some(""), None, Some("x1"), Some(" 7 ")]);
        let c = convert_strings(&values, &DataType::Int64);
        let a = c.array.as_primitive::<Int64Type>();
        assert_eq!(a.value(0), 1);
        assert!(a.is_null(1) && a.is_null(2) && a.is_null(3));
        assert_eq!(a.value(4), 7);
        assert_eq!(c.errors.len(), 1);
        assert_eq!(c.errors[0].0, 3);
        assert!(c.errors[0].1.contains("`x1` is not a valid BigInt"));
        let ts = convert_strings(
            &StringArray::from(vec!["2020-04-15 14:06:34", "nope"]),
            &DataType::Timestamp(TimeUnit::Millisecond, None),
        );
        assert_eq!(ts.array.as_primitive::<TimestampMillisecondType>().value(0), 1_586_959_594_000);
        assert_eq!(ts.errors.len(), 1);
    }

    fn type_names() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Boolean"),
            Just("smallint"),
            Just("INT"),
            Just("Integer"),
            Just("BigInt"),
            Just("long"),
            Just("Float"),
            Just("double"),
            Just("Decimal(10,2)"),
            Just("Timestamp"),
            Just("date"),
            Just("String"),
            Just("array<string>"),
            Just("map<string,bigint>"),
            Just("Varchar"),
        ]
        .prop_map(str::to_string)
    }

    proptest! {
        /// Parsing the printed form of a parsed schema gives the same schema, for both
        /// notations.
        #[test]
        fn round_trip(
            fields in proptest::collection::vec(("[a-zA-Z_][a-zA-Z0-9_ $.:-]{0,8}", type_names()), 1..12)
        ) {
            let mut seen = std::collections::HashSet::new();
            let fields: Vec<(String, String)> = fields.into_iter().filter(|(n, _)| seen.insert(n.clone())).collect();
            let schema = Arc::new(Schema::new(
                fields.iter().map(|(n, t)| Field::new(n, data_type_for(t), true)).collect::<Vec<_>>(),
            ));
            let s = to_struct_string(&schema);
            prop_assert_eq!(&parse_struct_schema(&s).unwrap(), &schema, "{}", s);
            let j = to_json_schema_string(&schema);
            prop_assert_eq!(&parse_json_schema(&j).unwrap(), &schema, "{}", j);
        }

        /// Arbitrary input never panics, and errors point inside the input.
        #[test]
        fn never_panics(input in ".{0,80}") {
            for result in [parse_struct_schema(&input), parse_json_schema(&input), parse_schema(&input)] {
                if let Err(e) = result {
                    prop_assert!(e.position <= input.chars().count());
                    let _ = e.to_string();
                }
            }
        }

        /// Near-valid input (a valid schema with one character changed) never panics.
        #[test]
        fn never_panics_near_valid(pos in 0usize..40, c in any::<char>()) {
            let mut chars: Vec<char> = "struct<id:BigInt,name:String,ts:Timestamp>".chars().collect();
            let p = pos % chars.len();
            chars[p] = c;
            let s: String = chars.into_iter().collect();
            let _ = parse_struct_schema(&s);
            let mut chars: Vec<char> = r#"{"id":"BigInt","name":"String"}"#.chars().collect();
            let p = pos % chars.len();
            chars[p] = c;
            let s: String = chars.into_iter().collect();
            let _ = parse_json_schema(&s);
        }

        #[test]
        fn timestamp_parser_never_panics(s in ".{0,40}") {
            let _ = parse_timestamp_ms(&s);
            let _ = parse_date(&s);
        }
    }
}

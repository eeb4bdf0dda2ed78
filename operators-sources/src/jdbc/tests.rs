//! Unit tests of the database source's pieces: the queries it builds, the position it
//! checkpoints and the batches it builds from rows. The reads against real PostgreSQL and
//! MariaDB are in `tests/jdbc_source.rs`.

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use operators_core::Error;

use super::source::{Batcher, page_sql};
use super::{ColumnKind, DbConfig, DbKind, DbPosition, JdbcSource};

fn source(kind: &str) -> JdbcSource {
    let url = match kind {
        "postgres" => "postgres://127.0.0.1/db",
        "mysql" => "mysql://127.0.0.1/db",
        _ => "sqlite:/tmp/unused.db",
    };
    JdbcSource::new(DbConfig::parse("source.db.url", url, None, None).unwrap())
}

#[test]
fn a_table_is_read_with_its_name_quoted_for_the_database() {
    assert_eq!(source("postgres").with_table("orders").query().unwrap(), r#"select * from "orders""#);
    assert_eq!(source("mysql").with_table("shop.orders").query().unwrap(), "select * from `shop`.`orders`");
    // A quote inside the name is doubled, so the name cannot end the identifier early.
    assert_eq!(source("sqlite").with_table(r#"a"b"#).query().unwrap(), r#"select * from "a""b""#);
}

#[test]
fn a_query_wins_over_the_table_and_loses_its_trailing_semicolon() {
    let s = source("postgres").with_table("orders").with_sql("  select id from orders where id > 3; ");
    assert_eq!(s.query().unwrap(), "select id from orders where id > 3");
}

#[test]
fn neither_table_nor_query_is_refused_naming_the_parameter() {
    let err = source("postgres").query().unwrap_err().to_string();
    assert!(err.contains("source.db.table") && err.contains("source.db.sql"), "{err}");
}

#[test]
fn pages_follow_the_key_with_the_key_bound_as_a_parameter() {
    let inner = "select * from \"t\"";
    assert_eq!(
        page_sql(DbKind::Postgres, inner, "id", 50, &DbPosition::Rows(0)),
        r#"select * from (select * from "t") as q order by q."id" limit 50"#
    );
    assert_eq!(
        page_sql(DbKind::Postgres, inner, "id", 50, &DbPosition::AfterInt(7)),
        r#"select * from (select * from "t") as q where q."id" > $1 order by q."id" limit 50"#
    );
    // MySQL and SQLite take `?`; a text key is bound the same way, never written into the SQL.
    let after = DbPosition::AfterText("x' or 1=1 --".into());
    assert_eq!(
        page_sql(DbKind::MySql, "select * from `t`", "k", 10, &after),
        "select * from (select * from `t`) as q where q.`k` > ? order by q.`k` limit 10"
    );
    assert!(page_sql(DbKind::Sqlite, inner, "k", 10, &after).contains("q.\"k\" > ? order"));
}

/// The position is what a checkpoint holds: it must read back as it was written.
#[test]
fn positions_read_back_from_their_checkpoint_bytes() {
    for position in [
        DbPosition::Rows(0),
        DbPosition::Rows(u64::MAX),
        DbPosition::AfterInt(i64::MIN),
        DbPosition::AfterText("ключ 🔑".into()),
        DbPosition::Done,
    ] {
        let bytes = postcard::to_allocvec(&position).unwrap();
        assert_eq!(postcard::from_bytes::<DbPosition>(&bytes).unwrap(), position);
    }
}

async fn sqlite_rows(sql: &str) -> Vec<sqlx::sqlite::SqliteRow> {
    let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
    sqlx::query(sql).fetch_all(&pool).await.unwrap()
}

fn batcher(kinds: &[(&str, ColumnKind)], first_row: u64) -> Batcher {
    let schema =
        Arc::new(Schema::new(kinds.iter().map(|(n, k)| Field::new(*n, k.arrow_type(), true)).collect::<Vec<_>>()));
    Batcher::new(schema, kinds.iter().map(|(_, k)| *k).collect(), "sqlite:/db".into(), first_row)
}

#[tokio::test]
async fn rows_become_a_batch_with_nulls_kept() {
    let rows = sqlite_rows("select 1 as id, 'a' as name union all select 2, null union all select null, 'c'").await;
    let mut b = batcher(&[("id", ColumnKind::I64), ("name", ColumnKind::Text)], 0);
    for row in &rows {
        b.push(row).unwrap();
    }
    let batch = b.take().unwrap();
    assert_eq!(batch.num_rows(), 3);
    assert_eq!(batch.column(0).as_primitive::<Int64Type>(), &Int64Array::from(vec![Some(1), Some(2), None]));
    let names: Vec<Option<&str>> = batch.column(1).as_string::<i32>().iter().collect();
    assert_eq!(names, vec![Some("a"), None, Some("c")]);
    // The builders start again empty for the next batch.
    let empty = b.take().unwrap();
    assert_eq!((empty.num_rows(), empty.schema().field(1).data_type()), (0, &DataType::Utf8));
}

#[tokio::test]
async fn a_batch_of_no_columns_keeps_its_row_count() {
    let rows = sqlite_rows("select 1 union all select 2").await;
    let mut b = batcher(&[], 0);
    for row in &rows {
        b.push(row).unwrap();
    }
    assert_eq!(b.take().unwrap().num_rows(), 2);
}

/// A value the column's type cannot hold is a bad record naming the database, the row's
/// number in the whole result (rows skipped on resume included) and the column.
#[tokio::test]
async fn a_value_that_does_not_fit_is_a_bad_record_naming_row_and_column() {
    let rows = sqlite_rows("select 1 as id union all select 'abc'").await;
    let mut b = batcher(&[("id", ColumnKind::I64)], 100);
    b.push(&rows[0]).unwrap();
    match b.push(&rows[1]) {
        Err(Error::BadRecord { location, reason }) => {
            assert_eq!(location, "sqlite:/db row 102");
            assert!(reason.contains("column `id`"), "{reason}");
        }
        other => panic!("expected a bad record, got {other:?}"),
    }
}

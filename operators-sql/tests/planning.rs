//! Every planning error class, asserting the message names the problem and quotes the SQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use operators_sql::{SqlError, SqlTransformBuilder};

const SCHEMA: &str = "struct<id:BigInt,name:String,score:Double,tags:String>";

fn plan(sql: &str) -> Result<operators_sql::SqlTransform, SqlError> {
    SqlTransformBuilder::new(sql).with_schema_string(SCHEMA).unwrap().build()
}

fn message(sql: &str) -> String {
    let err = plan(sql).expect_err(sql).to_string();
    assert!(err.contains(sql.trim()), "the message quotes the SQL: {err}");
    err
}

#[test]
fn syntax_error() {
    let m = message("select id frm t1");
    assert!(m.contains("cannot plan the SQL"), "{m}");
}

#[test]
fn unknown_column_names_the_column() {
    let m = message("select id, nope from t1");
    assert!(m.contains("nope"), "{m}");
}

#[test]
fn unknown_function_names_the_function() {
    let m = message("select arraySplitt(tags) from t1");
    assert!(m.contains("arraysplitt"), "{m}");
}

#[test]
fn type_error_names_the_types() {
    let m = message("select id from t1 where name > 1.5 + name");
    assert!(m.contains("Utf8") || m.contains("coerce"), "{m}");
}

#[test]
fn stateful_clauses_are_named() {
    for (sql, clause) in [
        ("select name, count(*) from t1 group by name", "GROUP BY"),
        ("select a.id from t1 a join t1 b on a.id = b.id", "JOIN"),
        ("select id from t1 order by score desc", "ORDER BY"),
        ("select id, sum(score) over (partition by name) from t1", "window functions"),
        ("select distinct name from t1", "DISTINCT"),
        ("select id from t1 limit 5", "LIMIT"),
    ] {
        let err = plan(sql).unwrap_err();
        assert!(matches!(err, SqlError::Unsupported { .. }), "{sql}: {err}");
        assert!(err.to_string().contains(clause), "{sql}: {err}");
    }
}

#[test]
fn malformed_schema_points_at_the_character() {
    let err =
        SqlTransformBuilder::new("select * from t1").with_schema_string("struct<id:BigInt name:String>").unwrap_err();
    assert!(matches!(err, SqlError::Schema(ref e) if e.position == 17), "{err}");
    let core: operators_core::Error = err.into();
    assert!(core.to_string().contains("sql.schema"), "{core}");
}

#[test]
fn a_missing_schema_is_refused() {
    let err = SqlTransformBuilder::new("select * from t1").build().unwrap_err();
    assert!(err.to_string().contains("no input schema"), "{err}");
}

#[test]
fn planning_errors_become_config_errors_naming_sql() {
    let core: operators_core::Error = plan("select nope from t1").unwrap_err().into();
    assert!(matches!(core, operators_core::Error::Config { ref key, .. } if key == "sql"), "{core}");
}

use super::StartupMode;
use super::binlog::{artificial_rotate_name, changes_table, writes_table};
use super::position::{BinlogPosition, Chunk, ChunkFilter};
use super::schema::map_column;
use crate::jdbc::ColumnKind;

fn at(file: &str, pos: u64) -> BinlogPosition {
    BinlogPosition::new(file, pos)
}

#[test]
fn positions_compare_in_log_order() {
    assert!(at("mariadb-bin.000009", 900) < at("mariadb-bin.000010", 4));
    assert!(at("mariadb-bin.000010", 4) < at("mariadb-bin.000010", 5));
    // The sequence number counts, not the text: .1000000 follows .999999.
    assert!(at("b.999999", 4) < at("b.1000000", 4));
    assert_eq!(BinlogPosition::parse("k", "mariadb-bin.000003:1152").unwrap(), at("mariadb-bin.000003", 1152));
    for bad in ["mariadb-bin.000003", ":4", "f:x", "f:3", ""] {
        let e = BinlogPosition::parse("source.cdc.startup.specific-offset", bad).unwrap_err().to_string();
        assert!(e.contains("source.cdc.startup.specific-offset"), "{e}");
    }
}

#[test]
fn a_change_is_emitted_only_after_its_chunks_snapshot() {
    let filter = ChunkFilter::new(vec![
        Chunk { upper: Some(100), at: at("b.000001", 1000) },
        Chunk { upper: Some(200), at: at("b.000001", 3000) },
        Chunk { upper: None, at: at("b.000002", 500) },
    ]);
    // Key 50 is in the first chunk, read at 1000.
    assert!(!filter.emits(50, &at("b.000001", 999)));
    assert!(filter.emits(50, &at("b.000001", 1000)));
    // Key 100 is the first chunk's last; 101 the second's first.
    assert!(filter.emits(100, &at("b.000001", 2000)));
    assert!(!filter.emits(101, &at("b.000001", 2000)));
    assert!(filter.emits(101, &at("b.000001", 3000)));
    // Keys above every bound are the last chunk's, also negative ones are the first's.
    assert!(!filter.emits(5000, &at("b.000002", 4)));
    assert!(filter.emits(5000, &at("b.000002", 500)));
    assert!(!filter.emits(-7, &at("b.000001", 4)));
    // Past the last chunk every change goes.
    assert!(filter.passed(&at("b.000002", 500)));
    assert!(!filter.passed(&at("b.000002", 499)));
    assert!(ChunkFilter::default().emits(1, &at("b.000001", 4)));
}

#[test]
fn only_ddl_naming_the_followed_table_stops_the_job() {
    let on = |schema: &str, sql: &str| changes_table(schema, sql, "shop", "orders");
    assert!(on("shop", "ALTER TABLE orders ADD COLUMN x int"));
    assert!(on("other", "alter table `shop`.`orders` drop column x"));
    assert!(on("shop", "TRUNCATE orders"));
    assert!(on("shop", "DROP TABLE IF EXISTS `orders`"));
    assert!(on("shop", "RENAME TABLE orders TO orders_old"));
    assert!(!on("shop", "ALTER TABLE orders2 ADD COLUMN x int"));
    assert!(!on("other", "ALTER TABLE orders ADD COLUMN x int"), "another database's orders");
    assert!(!on("shop", "CREATE TABLE orders_copy LIKE orders"), "not a change of orders");
    assert!(!on("shop", "insert into orders values (1)"));
}

#[test]
fn columns_map_as_the_database_source_maps_them() {
    let kind = |d: &str, t: &str| map_column("c", d, t).unwrap().kind;
    assert_eq!(kind("tinyint", "tinyint(1)"), ColumnKind::Bool);
    assert_eq!(kind("tinyint", "tinyint(4)"), ColumnKind::I8);
    assert_eq!(kind("tinyint", "tinyint(3) unsigned"), ColumnKind::U8);
    assert_eq!(kind("mediumint", "mediumint(8) unsigned"), ColumnKind::U32);
    assert_eq!(kind("bigint", "bigint(20) unsigned"), ColumnKind::U64);
    assert_eq!(kind("decimal", "decimal(10,3)"), ColumnKind::Decimal);
    assert_eq!(kind("datetime", "datetime(3)"), ColumnKind::Timestamp);
    assert_eq!(kind("timestamp", "timestamp(3)"), ColumnKind::TimestampTz);
    assert_eq!(kind("longtext", "longtext"), ColumnKind::Text);
    assert_eq!(kind("year", "year(4)"), ColumnKind::I16);
    let unsigned = map_column("c", "mediumint", "mediumint(8) unsigned").unwrap();
    assert_eq!(unsigned.unsigned_bits, Some(24));
    let e = map_column("c", "enum", "enum('Red','it''s','a,b')").unwrap();
    assert_eq!(e.members.unwrap(), vec!["Red", "it's", "a,b"], "members keep their case and quotes");
    let s = map_column("c", "set", "set('x','y')").unwrap();
    assert!(s.is_set);
    assert!(map_column("c", "bit", "bit(3)").unwrap_err().contains("bit(3)"));
}

#[test]
fn startup_modes_are_read_by_their_flink_cdc_names() {
    assert_eq!(StartupMode::parse("initial", None, None).unwrap(), StartupMode::Initial);
    assert_eq!(StartupMode::parse("latest-offset", None, None).unwrap(), StartupMode::LatestOffset);
    assert_eq!(StartupMode::parse("earliest-offset", None, None).unwrap(), StartupMode::EarliestOffset);
    assert_eq!(StartupMode::parse("timestamp", Some(5), None).unwrap(), StartupMode::Timestamp(5));
    assert_eq!(
        StartupMode::parse("specific-offset", None, Some("b.000002:120")).unwrap(),
        StartupMode::SpecificOffset(at("b.000002", 120))
    );
    let e = StartupMode::parse("timestamp", None, None).unwrap_err().to_string();
    assert!(e.contains("source.cdc.startup.timestamp-millis"), "{e}");
    let e = StartupMode::parse("snapshot-only", None, None).unwrap_err().to_string();
    assert!(e.contains("source.cdc.startup.mode") && e.contains("snapshot-only"), "{e}");
}

#[test]
fn statements_writing_the_table_and_artificial_rotate_names() {
    assert!(writes_table("shop", "UPDATE orders SET a = 1", "shop", "orders"));
    assert!(writes_table("x", "insert into `shop`.`orders` values (1)", "shop", "orders"));
    assert!(!writes_table("shop", "update orders2 set a = 1", "shop", "orders"));
    assert!(!writes_table("shop", "SAVEPOINT orders", "shop", "orders"));
    let current = "mariadb-bin.000005";
    assert_eq!(artificial_rotate_name(b"mariadb-bin.000006", current).as_deref(), Some("mariadb-bin.000006"));
    // MariaDB may leave the checksum after the name: digits too.
    assert_eq!(artificial_rotate_name(b"mariadb-bin.0000061234", current).as_deref(), Some("mariadb-bin.000006"));
    assert_eq!(artificial_rotate_name(b"mariadb-bin.000006\x9a\x01", current).as_deref(), Some("mariadb-bin.000006"));
    assert_eq!(artificial_rotate_name(b"other.000006", current), None);
}

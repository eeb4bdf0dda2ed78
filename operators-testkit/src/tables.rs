//! Tables of every column type the database source reads, with random rows and random
//! writes (inserts, updates of some columns with NULLs, deletes, multi-row updates), for
//! the change-data-capture tests: the library's (`operators-sources/tests/*_cdc.rs`) and
//! the runner's, which follow them into PostgreSQL.
//!
//! Each table is `items` with an integer key `id` and a change counter `n` that every
//! update raises by one, so that a test can tell a change applied twice.

/// MySQL/MariaDB.
pub mod mysql {
    use rand::Rng;

    /// [`TYPES`] in PostgreSQL: the types the database sink writes the MySQL columns'
    /// Arrow types into (`tinyint` as `int2`, `bigint unsigned` as `numeric(20)`, `enum`
    /// and `set` as text, `year` as `int2`).
    pub const POSTGRES_COPY: &str = "create table items (id int8 primary key, b bool, s int2, i int4, f4 float4, \
        f8 float8, d numeric(10,3), t text, v varchar(20), day date, ts timestamp(3), tz timestamptz(3), bin bytea, \
        j text, tm time, tiny int2, big_u numeric(20), mu int8, e text, st text, yr int2, n int4 not null default 0)";

    /// Every column type the database source reads from MySQL, and a change counter.
    pub const TYPES: &str = "create table items (id bigint primary key, b boolean, s smallint, i int, f4 float, f8 double, \
        d decimal(10,3), t text, v varchar(20), day date, ts datetime(3), tz timestamp(3) null default null, \
        bin varbinary(10), j json, tm time, tiny tinyint, big_u bigint unsigned, mu mediumint unsigned, \
        e enum('red','Green','it''s'), st set('x','y','z'), yr year, n int not null default 0)";

    /// Row `id` as a `values` tuple: random values, or NULL in every nullable column
    /// (15 % of rows).
    pub fn values(id: i64, rng: &mut impl Rng) -> String {
        if rng.random_bool(0.15) {
            return format!("({id}, {})", ["NULL"; 20].join(", ") + ", 0");
        }
        format!(
            "({id}, {}, {}, {}, {}, {}, {}.{:03}, 'text {id} 北京', 'v{}', '20{:02}-0{}-1{}', '2021-03-04 05:06:{:02}.{:03}', \
             '2022-01-02 03:04:05.{:03}', x'00{:02x}ff', '{{\"a\": [{id}, null]}}', '1{}:3{}:00', {}, {}, {}, '{}', '{}', {}, 0)",
            rng.random_bool(0.5),
            rng.random_range(-30000..30000),
            rng.random_range(-2_000_000_000..2_000_000_000),
            rng.random_range(-1000..1000) as f32 / 4.0,
            rng.random_range(-1e6..1e6),
            rng.random_range(-9999..9999),
            rng.random_range(0..1000),
            rng.random_range(0..1000),
            rng.random_range(0..30),
            rng.random_range(1..10),
            rng.random_range(0..10),
            rng.random_range(0..60),
            rng.random_range(0..1000),
            rng.random_range(0..1000),
            rng.random_range(0..256),
            rng.random_range(0..10),
            rng.random_range(0..10),
            rng.random_range(-128..128),
            if rng.random_bool(0.5) { u64::MAX - rng.random_range(0..5) } else { rng.random_range(0..5) },
            rng.random_range(0..16_777_216),
            ["red", "Green", "it''s"][rng.random_range(0..3)],
            ["", "x", "y,z", "x,y,z"][rng.random_range(0..4)],
            rng.random_range(1901..2155),
        )
    }

    /// One random write statement: an insert of row `next_id` (which it advances), an
    /// update of some columns (NULLs among them) that raises `n`, a delete, or an update
    /// of several rows in one statement.
    pub fn write(rng: &mut impl Rng, next_id: &mut i64) -> String {
        // An empty table (`next_id` 1) has nothing to update or delete: insert.
        let id = rng.random_range(1..(*next_id).max(2));
        match if *next_id <= 1 { 0 } else { rng.random_range(0..10) } {
            0..=2 => {
                let row = values(*next_id, rng);
                *next_id += 1;
                format!("insert into items values {row}")
            }
            3..=7 => {
                let set = match rng.random_range(0..4) {
                    0 => "t = null, v = 'changed'".to_string(),
                    1 => format!("i = {}, tz = now(3)", rng.random_range(0..100)),
                    2 => "e = 'Green', st = 'x,z', mu = 16777215, big_u = 18446744073709551615".to_string(),
                    _ => "d = -0.5, day = '1969-12-31', ts = '1960-01-01 00:00:00.5', yr = 2155".to_string(),
                };
                format!("update items set {set}, n = n + 1 where id = {id}")
            }
            8 => format!("delete from items where id = {id}"),
            _ => {
                // Several changes in one statement: one transaction, one rows event.
                let a = rng.random_range(1..*next_id);
                format!("update items set n = n + 1, b = not b where id in ({id}, {a}, {})", id + 1)
            }
        }
    }
}

/// PostgreSQL.
pub mod postgres {
    use rand::Rng;

    /// Every column type the database source reads from PostgreSQL, and a change counter.
    pub const TYPES: &str = "create table items (id int8 primary key, b bool, s int2, i int4, f4 float4, f8 float8, \
        d numeric(10,3), t text, v varchar(20), day date, ts timestamp, tz timestamptz, bin bytea, j jsonb, u uuid, \
        tm time, n int not null default 0)";

    /// Row `id` as a `values` tuple: random values, or NULL in every nullable column
    /// (15 % of rows).
    pub fn values(id: i64, rng: &mut impl Rng) -> String {
        if rng.random_bool(0.15) {
            return format!("({id}, {}, 0)", ["null"; 15].join(", "));
        }
        format!(
            "({id}, {}, {}, {}, {}, {}, {}.{:03}, 'text {id} 北京', 'v{}', '20{:02}-0{}-1{}', '2021-03-04 05:06:{:02}.{:03}', \
             '2022-01-02 03:04:05.{:03}+02', '\\x00{:02x}ff', '{{\"a\": [{id}, null]}}', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd38{:04x}', \
             '1{}:3{}:00', 0)",
            rng.random_bool(0.5),
            rng.random_range(-30000..30000),
            rng.random_range(-2_000_000_000..2_000_000_000),
            rng.random_range(-1000..1000) as f32 / 4.0,
            rng.random_range(-1e6..1e6),
            rng.random_range(-9999..9999),
            rng.random_range(0..1000),
            rng.random_range(0..1000),
            rng.random_range(0..30),
            rng.random_range(1..10),
            rng.random_range(0..10),
            rng.random_range(0..60),
            rng.random_range(0..1000),
            rng.random_range(0..1000),
            rng.random_range(0..256),
            rng.random_range(0..65536),
            rng.random_range(0..10),
            rng.random_range(0..10),
        )
    }

    /// One random write statement: an insert of row `next_id` (which it advances), an
    /// update of some columns (NULLs among them) that raises `n`, a delete, or an update
    /// of several rows in one statement.
    pub fn write(rng: &mut impl Rng, next_id: &mut i64) -> String {
        // An empty table (`next_id` 1) has nothing to update or delete: insert.
        let id = rng.random_range(1..(*next_id).max(2));
        match if *next_id <= 1 { 0 } else { rng.random_range(0..10) } {
            0..=2 => {
                let row = values(*next_id, rng);
                *next_id += 1;
                format!("insert into items values {row}")
            }
            3..=7 => {
                let set = match rng.random_range(0..3) {
                    0 => "t = null, v = 'changed'".to_string(),
                    1 => format!("i = {}, tz = now()", rng.random_range(0..100)),
                    _ => "d = -0.5, day = '1969-12-31', ts = '1960-01-01 00:00:00.5', j = '[1, {\"b\": null}]'"
                        .to_string(),
                };
                format!("update items set {set}, n = n + 1 where id = {id}")
            }
            8 => format!("delete from items where id = {id}"),
            _ => {
                let a = rng.random_range(1..*next_id);
                format!("update items set n = n + 1, b = not b where id in ({id}, {a}, {})", id + 1)
            }
        }
    }
}

//! Per-test databases for integration tests (feature `test-util`).
//!
//! Each [`TestDb`] is a fresh PostgreSQL schema, MariaDB/MySQL database or SQLite file
//! with a random name, reached through a URL that points into it. When a server does not
//! answer, the constructor panics with the command that starts it: a test never passes
//! silently because a service is missing.

// Test support: failing loudly with a message is the point.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use sqlx::Executor;

use super::{DbConfig, DbKind, DbPool};

/// PostgreSQL of the test machines (trust authentication).
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// MariaDB of the test machines (root without password).
pub const MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";

/// A database of one test.
#[derive(Debug)]
pub struct TestDb {
    /// Which database.
    pub kind: DbKind,
    /// A URL into this test's schema, database or file.
    pub url: String,
    /// A pool on it.
    pub pool: DbPool,
    name: String,
    admin: DbPool,
    _dir: Option<tempfile::TempDir>,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{:012x}", rand::random::<u64>() & 0xFFFF_FFFF_FFFF)
}

impl TestDb {
    /// A fresh schema in the local PostgreSQL.
    pub async fn postgres() -> Self {
        let admin = connect(POSTGRES_URL, "PostgreSQL", "testing/services/postgres.sh start").await;
        let name = unique("t");
        exec(&admin, &format!("create schema {name}")).await;
        let url = format!("{POSTGRES_URL}?currentSchema={name}");
        let pool = connect(&url, "PostgreSQL", "testing/services/postgres.sh start").await;
        Self { kind: DbKind::Postgres, url, pool, name, admin, _dir: None }
    }

    /// A fresh database in the local MariaDB.
    pub async fn mysql() -> Self {
        let admin = connect(MYSQL_URL, "MariaDB", "testing/services/mariadb.sh start").await;
        let name = unique("t");
        exec(&admin, &format!("create database {name}")).await;
        let url = format!("mysql://root@127.0.0.1:3306/{name}");
        let pool = connect(&url, "MariaDB", "testing/services/mariadb.sh start").await;
        Self { kind: DbKind::MySql, url, pool, name, admin, _dir: None }
    }

    /// A fresh SQLite file.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("test.db");
        std::fs::File::create(&file).expect("creating the SQLite file");
        let url = format!("sqlite:{}", file.display());
        let pool = connect(&url, "SQLite", "nothing (it is a file)").await;
        let admin = pool.clone();
        Self { kind: DbKind::Sqlite, url, pool, name: String::new(), admin, _dir: Some(dir) }
    }

    /// All three, for tests that cover every database.
    pub async fn all() -> Vec<Self> {
        vec![Self::postgres().await, Self::mysql().await, Self::sqlite().await]
    }

    /// Runs statements separated by `;` (panics on error, naming the statement).
    pub async fn exec(&self, sql: &str) {
        for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            exec(&self.pool, stmt).await;
        }
    }

    /// One integer from a query.
    pub async fn scalar(&self, sql: &str) -> i64 {
        let r = match &self.pool {
            DbPool::Postgres(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            DbPool::MySql(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
            DbPool::Sqlite(p) => sqlx::query_scalar::<_, i64>(sql).fetch_one(p).await,
        };
        r.unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
    }

    /// Rows of a query as text, one string per value (`NULL` for null).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        use sqlx::{Row, ValueRef};
        macro_rules! read {
            ($pool:expr) => {{
                let rows = sqlx::query(sql).fetch_all($pool).await.unwrap_or_else(|e| panic!("`{sql}` failed: {e}"));
                rows.iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| {
                                if r.try_get_raw(i).map(|v| v.is_null()).unwrap_or(true) {
                                    return "NULL".to_string();
                                }
                                r.try_get::<String, _>(i)
                                    .or_else(|_| r.try_get::<i64, _>(i).map(|v| v.to_string()))
                                    .or_else(|_| r.try_get::<i32, _>(i).map(|v| v.to_string()))
                                    .or_else(|_| r.try_get::<f64, _>(i).map(|v| v.to_string()))
                                    .unwrap_or_else(|_| "?".to_string())
                            })
                            .collect()
                    })
                    .collect()
            }};
        }
        match &self.pool {
            DbPool::Postgres(p) => read!(p),
            DbPool::MySql(p) => read!(p),
            DbPool::Sqlite(p) => read!(p),
        }
    }

    /// A config for this database.
    pub fn config(&self) -> DbConfig {
        DbConfig::parse("test", &self.url, None, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Drops the schema or database.
    pub async fn cleanup(self) {
        self.pool.close().await;
        match self.kind {
            DbKind::Postgres => exec(&self.admin, &format!("drop schema {} cascade", self.name)).await,
            DbKind::MySql => exec(&self.admin, &format!("drop database {}", self.name)).await,
            DbKind::Sqlite => {}
        }
        self.admin.close().await;
    }
}

async fn connect(url: &str, what: &str, start: &str) -> DbPool {
    let cfg = DbConfig::parse("test", url, None, None).unwrap_or_else(|e| panic!("{e}"));
    match cfg.connect("test").await {
        Ok(p) => p,
        Err(e) => panic!("{what} is not answering ({e}); start it with: {start} (or run .ci/run)"),
    }
}

async fn exec(pool: &DbPool, sql: &str) {
    let r = match pool {
        DbPool::Postgres(p) => p.execute(sql).await.map(|_| ()),
        DbPool::MySql(p) => p.execute(sql).await.map(|_| ()),
        DbPool::Sqlite(p) => p.execute(sql).await.map(|_| ()),
    };
    if let Err(e) = r {
        panic!("`{sql}` failed: {e}");
    }
}

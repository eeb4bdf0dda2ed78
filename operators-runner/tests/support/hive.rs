//! The local HiveServer2 (`testing/services/hive.sh`): its settings from `HIVE_URL`,
//! `HIVE_USER`, `HIVE_PASSWORD`, and statements for fixtures.

use operators_sources::hive::{HiveConfig, HiveSession};

/// `(url, user, password)` of the local HiveServer2; panics naming the script that
/// starts it when they are not set.
pub fn settings() -> (String, String, String) {
    let var = |k: &str| {
        std::env::var(k)
            .unwrap_or_else(|_| panic!("{k} is not set: start HiveServer2 with testing/services/hive.sh start"))
    };
    (var("HIVE_URL"), var("HIVE_USER"), var("HIVE_PASSWORD"))
}

/// The URL with its database replaced by `database`.
pub fn url_of(database: &str) -> String {
    let (url, _, _) = settings();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b).to_string();
    format!("{base}/{database}")
}

/// Runs `statements` in one session.
pub fn sql(statements: &[&str]) {
    let (url, user, password) = settings();
    let config = HiveConfig::parse("HIVE_URL", &url, Some(&user), Some(&password)).unwrap();
    let mut session = HiveSession::open(&config)
        .unwrap_or_else(|e| panic!("HiveServer2 is not answering ({e}); start it with testing/services/hive.sh start"));
    for s in statements {
        if let Some(q) = session.execute(s).unwrap_or_else(|e| panic!("`{s}`: {e}")) {
            session.close_query(q).unwrap();
        }
    }
    session.close();
}

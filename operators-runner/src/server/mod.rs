//! `operator serve`: a long-running job server with Flink's job-submission REST API.
//!
//! Any number of jobs run side by side in one process, each with its own restart
//! strategy, checkpoints and metrics. Jobs are submitted with `POST /jars/operator.jar/run`
//! (the toolkit's entry class `com._4paradigm.csp.operator.Main` works as the jar id
//! too), with the toolkit's parameters in `programArgs` or `programArgsList`. Every
//! submitted job is recorded in `--state.dir`; a server started again resumes each job
//! that was running from its newest checkpoint, under the same job id. Every API path is
//! answered also under `/v1/`, the versioned paths Flink's own clients call.
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! use operators_runner::server::{ServerConfig, serve};
//! let config = ServerConfig { state_dir: "/var/lib/operator".into(), ..ServerConfig::default() };
//! serve(config, operators_runner::server::logs::Logs::default()).await
//! # }
//! ```

pub mod cli;
pub mod http;
pub mod jobs;
pub mod logs;

use std::path::PathBuf;

use logs::Logs;
use operators_core::path::store_dir;
use operators_core::secret::Secret;

/// Settings of a server (`operator serve --help`).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on. Default 127.0.0.1.
    pub address: String,
    /// Port. Default 8081, Flink's.
    pub port: u16,
    /// Bearer token every API call must carry.
    pub token: Option<Secret>,
    /// Where jobs are recorded, with their checkpoints and state. Default `operator-server`.
    pub state_dir: PathBuf,
    /// Default savepoint directory. Default `<state dir>/savepoints`.
    pub savepoints_dir: Option<PathBuf>,
    /// The form of log lines on stderr. Default text.
    pub log_format: crate::logging::LogFormat,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 8081,
            token: None,
            state_dir: PathBuf::from("operator-server"),
            savepoints_dir: None,
            log_format: crate::logging::LogFormat::Text,
        }
    }
}

/// The `operator serve` usage text.
pub const SERVE_HELP: &str = "\
operator serve: runs jobs submitted over Flink's REST API

  --rest.address ADDR          listen address (default 127.0.0.1)
  --rest.port PORT             port (default 8081)
  --rest.token TOKEN           bearer token every call must carry (or OPERATOR_REST_TOKEN)
  --state.dir DIR              job records, checkpoints and state (default operator-server)
  --state.savepoints.dir DIR   default savepoint directory (default <state.dir>/savepoints);
                               directories are local paths, file:// URLs or hdfs:// URLs
                               (s3://, gs://, ... are refused); with an hdfs:// state.dir,
                               keyed state's working copies go to the temporary directory
  --log.format text|json       log lines on stderr: text (coloured only on a terminal, not
                               with NO_COLOR set) or one JSON object per line (default text)
";

impl ServerConfig {
    /// From `operator serve` arguments (and `OPERATOR_REST_TOKEN`, which keeps the token
    /// out of the process list).
    pub fn from_args(args: &[String], token_env: Option<String>) -> Result<Self, String> {
        crate::register_file_systems().map_err(|e| e.to_string())?;
        let mut config =
            ServerConfig { token: token_env.filter(|t| !t.is_empty()).map(Secret::new), ..ServerConfig::default() };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            let mut value =
                || inline.clone().or_else(|| it.next().cloned()).ok_or_else(|| format!("`{key}` needs a value"));
            match key {
                "--rest.address" => config.address = value()?,
                "--rest.port" => {
                    let v = value()?;
                    config.port = v.parse().map_err(|_| format!("`--rest.port`: `{v}` is not a port number"))?;
                }
                "--rest.token" => config.token = Some(value()?).filter(|t| !t.is_empty()).map(Secret::new),
                // A local path, a file:// URL or hdfs://; another URL is refused, not made a
                // relative path such as `./s3:/x`.
                "--state.dir" => config.state_dir = store_dir("state.dir", &value()?).map_err(|e| e.to_string())?,
                "--state.savepoints.dir" => {
                    config.savepoints_dir =
                        Some(store_dir("state.savepoints.dir", &value()?).map_err(|e| e.to_string())?);
                }
                "--log.format" => config.log_format = value()?.parse()?,
                other => return Err(format!("`operator serve`: unknown argument `{other}`\n\n{SERVE_HELP}")),
            }
        }
        Ok(config)
    }
}

/// Runs the server until interrupted. `logs` must be the [`Logs`] whose layer the
/// process's tracing subscriber feeds.
pub async fn serve(config: ServerConfig, logs: Logs) -> Result<(), String> {
    let jobs = jobs::Jobs::new(config.state_dir.clone(), config.savepoints_dir.clone(), logs.clone())
        .map_err(|e| format!("`--state.dir`: cannot use {}: {e}", config.state_dir.display()))?;
    let listener = tokio::net::TcpListener::bind((config.address.as_str(), config.port))
        .await
        .map_err(|e| format!("`--rest.port`: cannot listen on {}:{}: {e}", config.address, config.port))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let address = format!("http://{local}");
    let api =
        operators_core::rest::routes(jobs.registry()).merge(http::routes(jobs.clone(), logs.clone(), address.clone()));
    // Every API path also under `/v1`, where Flink's own clients call; inside the token
    // check, which so guards both. The status page stays at `/` only.
    let api = http::versioned(api);
    let app = operators_core::rest::require_token(api, config.token.clone()).merge(http::page());
    let resumed = jobs.resume_all();
    tracing::info!(
        state_dir = %config.state_dir.display(),
        resumed,
        token = config.token.is_some(),
        "job server listening on {address}"
    );
    // A line for scripts and tests to wait for, on stderr like the rest.
    eprintln!("operator server listening on {address}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await.map_err(|e| e.to_string())?;
    // Interrupted: the process ends as a crash would, leaving every running job recorded
    // as running; the next start resumes each from its newest checkpoint. (Canceling them
    // would record them as canceled, and drop their checkpoints.)
    let running = jobs.running().len();
    eprintln!("interrupted: {running} running job(s) resume from their checkpoints when the server starts again");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn server_directories_with_a_scheme_are_refused_naming_the_argument() {
        let e = ServerConfig::from_args(&args(&["--state.savepoints.dir", "gs://b/sp"]), None).unwrap_err();
        assert!(e.contains("state.savepoints.dir") && e.contains("gs://b/sp") && e.contains("file://"), "{e}");
        let c = ServerConfig::from_args(&args(&["--state.savepoints.dir", "hdfs://nn:8020/sp"]), None).unwrap();
        assert_eq!(c.savepoints_dir, Some(PathBuf::from("hdfs://nn:8020/sp")));
        let e = ServerConfig::from_args(&args(&["--state.dir=s3://bucket/state"]), None).unwrap_err();
        assert!(e.contains("state.dir") && e.contains("s3://bucket/state"), "{e}");
        let c =
            ServerConfig::from_args(&args(&["--state.dir", "file:///var/op", "--state.savepoints.dir", "sp"]), None)
                .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/var/op"));
        assert_eq!(c.savepoints_dir, Some(PathBuf::from("sp")));
    }
}

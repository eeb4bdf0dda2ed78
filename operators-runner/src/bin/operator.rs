//! `operator`: runs one ingestion job from the original toolkit's parameters, or serves
//! jobs over Flink's REST API (`operator serve`), or talks to such a server (`operator
//! run|list|cancel|stop|savepoint`).
//!
//! `operator --help` lists every parameter with its default.

use std::process::ExitCode;

use operators_runner::logging::{LogFormat, env_filter, stderr_layer};
use operators_runner::runner::params::{help, resolve};
use operators_runner::runner::plan::plan;
use operators_runner::runner::{EXIT_USAGE, dry_run, run};
use operators_runner::server::{self, ServerConfig, cli, logs::Logs};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// jemalloc returns freed memory to the system in the background and fragments less
/// than glibc's per-thread arenas under keyed state that grows, evicts and shrinks.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        ExitCode::from(1)
    })
}

fn serve(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{}", server::SERVE_HELP);
        return ExitCode::SUCCESS;
    }
    let config = match ServerConfig::from_args(args, std::env::var("OPERATOR_REST_TOKEN").ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Every line goes to stderr and, sorted by job, to the logs the REST API serves.
    let logs = Logs::default();
    tracing_subscriber::registry().with(env_filter()).with(stderr_layer(config.log_format)).with(logs.layer()).init();
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(server::serve(config, logs)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => return serve(&args[1..]),
        Some(command) if cli::COMMANDS.contains(&command) => {
            if args[1..].iter().any(|a| a == "--help" || a == "-h") {
                print!("{}", cli::CLI_HELP);
                return ExitCode::SUCCESS;
            }
            return match cli::main(command, &args[1..], std::env::var("OPERATOR_REST_TOKEN").ok()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    // Variables that are not Unicode cannot hold a parameter; skip them.
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let original_args = args.clone();
    let invocation = match resolve(args, env, &cwd) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}\n(operator --help lists the parameters)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if invocation.help {
        print!("{}", help());
        println!(
            "\nAs a job server: operator serve --help; its client: operator run|list|cancel|stop|savepoint --help"
        );
        return ExitCode::SUCCESS;
    }
    if invocation.version {
        println!("operator {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    // hdfs-native takes the HDFS user from HADOOP_USER_NAME and its configuration from
    // HADOOP_CONF_DIR, else HADOOP_HOME/etc/hadoop, and a running process cannot change
    // its environment soundly: the runner starts itself again with them set.
    #[cfg(unix)]
    {
        let overrides: Vec<(&str, String)> =
            [("hadoop.user.name", "HADOOP_USER_NAME"), ("hadoop.home.dir", "HADOOP_HOME")]
                .into_iter()
                .filter_map(|(param, var)| {
                    let value = invocation.params.text(param).filter(|v| !v.trim().is_empty())?;
                    (std::env::var(var).ok().as_deref() != Some(value.as_str())).then_some((var, value))
                })
                .collect();
        if !overrides.is_empty() {
            use std::os::unix::process::CommandExt as _;
            let err = match std::env::current_exe() {
                Ok(exe) => std::process::Command::new(exe).args(&original_args).envs(overrides.clone()).exec(),
                Err(e) => e,
            };
            let vars: Vec<String> = overrides.iter().map(|(var, value)| format!("{var}={value}")).collect();
            eprintln!("error: cannot start the runner again with {}: {err}", vars.join(" "));
            return ExitCode::from(1);
        }
    }
    // Logging starts once the parameters say in which form; errors before that are
    // printed plainly.
    let log_format =
        match invocation.params.choice("log.format").map(|f| f.map_or(Ok(LogFormat::Text), |f| f.parse::<LogFormat>()))
        {
            Ok(Ok(f)) => f,
            Ok(Err(e)) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
            Err(e) => {
                eprintln!("error: {e}\n(operator --help lists the parameters)");
                return ExitCode::from(EXIT_USAGE);
            }
        };
    tracing_subscriber::registry().with(env_filter()).with(stderr_layer(log_format)).init();
    let planned = match plan(&invocation.params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}\n(operator --help lists the parameters)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if invocation.dry_run {
        print!("{}", dry_run(&planned, &invocation.params));
        return ExitCode::SUCCESS;
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(run(planned, &invocation.params))
}

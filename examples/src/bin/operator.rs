//! `operator`: runs one ingestion job from the original toolkit's parameters.
//!
//! `operator --help` lists every parameter with its default.

use std::process::ExitCode;

use operators_examples::runner::params::{help, resolve};
use operators_examples::runner::plan::plan;
use operators_examples::runner::{EXIT_USAGE, dry_run, run};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cwd = std::env::current_dir().unwrap_or_default();
    // Variables that are not Unicode cannot hold a parameter; skip them.
    let env = std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let invocation = match resolve(std::env::args().skip(1), env, &cwd) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}\n(operator --help lists the parameters)");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if invocation.help {
        print!("{}", help());
        return ExitCode::SUCCESS;
    }
    if invocation.version {
        println!("operator {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(planned, &invocation.params))
}

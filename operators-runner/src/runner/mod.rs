//! The `operator` runner: the original toolkit's parameters over this library.

pub mod params;
pub mod plan;
pub mod progress;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use operators_core::metrics::ProcessUsage;
use operators_core::rest::{JobRegistry, router};
use operators_core::{Job, JobStatus};

use params::Params;
use plan::Plan;
use progress::{ProgressMode, show_progress, summary, usage_text};

/// Exit code of a job that failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad parameters.
pub const EXIT_USAGE: u8 = 2;
/// Exit code after an interrupt.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Prints what `--dry-run` shows: the resolved parameters and the operator graph.
pub fn dry_run(plan: &Plan, params: &Params) -> String {
    let mut out = String::from("resolved parameters:\n");
    for (k, v, origin) in params.describe() {
        out.push_str(&format!("  {k} = {v}    ({origin})\n"));
    }
    for (k, v) in &plan.defaults {
        out.push_str(&format!("  {k} = {v}    (default)\n"));
    }
    if !plan.ignored.is_empty() {
        out.push_str("\nparameters with no effect in this pipeline:\n");
        for i in &plan.ignored {
            out.push_str(&format!("  warning: {i}\n"));
        }
    }
    out.push_str("\noperators:\n");
    match plan.pipeline.build(&plan.config) {
        Ok(graph) => {
            for line in graph.describe().lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        Err(e) => out.push_str(&format!("  (cannot describe: {e})\n")),
    }
    out
}

/// Serves the REST API if `rest.port` is set; returns whether it does.
async fn serve_rest(job: Arc<Job>, params: &Params) -> Result<bool, String> {
    let Some(port) = params.num::<u16>("rest.port").map_err(|e| e.to_string())? else {
        return Ok(false);
    };
    let address = params.text_or_default("rest.address").map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind((address.as_str(), port))
        .await
        .map_err(|e| format!("`rest.port`: cannot listen on {address}:{port}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let jobs = JobRegistry::default();
    jobs.add(job);
    let app = router(jobs, params.get("rest.token").map(operators_core::secret::Secret::new));
    eprintln!("REST API listening on http://{local}");
    operators_core::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "REST API stopped");
        }
    });
    Ok(true)
}

/// Runs a planned job to its end, with progress, REST API and summary.
pub async fn run(plan: Plan, params: &Params) -> ExitCode {
    let started = Instant::now();
    // The process's CPU time so far (start-up, parameters, planning) is not the job's:
    // the summary reports what was spent from here on, the same span as its duration.
    let usage_at_start = ProcessUsage::now();
    for i in &plan.ignored {
        eprintln!("warning: {i}");
    }
    let (source_id, sink_id, unit) = (plan.source_id, plan.sink_id, plan.progress);
    let job = match plan.pipeline.start(plan.config) {
        Ok(job) => Arc::new(job),
        Err(e) => {
            eprintln!("error: {}", plan::PlanError::from(e));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    eprintln!("job `{}` started (id {})", job.name(), job.id());
    let rest = match serve_rest(job.clone(), params).await {
        Ok(on) => on,
        Err(e) => {
            eprintln!("error: {e}");
            job.cancel();
            let _ = job.wait().await;
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let progress = unit.map(|unit| {
        let mode = ProgressMode::from_param(params.choice("progress").ok().flatten().as_deref());
        operators_core::spawn(show_progress(job.clone(), source_id, unit, mode))
    });
    let mut interrupted = false;
    let result = tokio::select! {
        r = job.wait() => r,
        _ = tokio::signal::ctrl_c() => {
            interrupted = true;
            eprintln!("interrupted: canceling the job (checkpoints are kept)");
            job.cancel();
            job.wait().await
        }
    };
    if let Some(p) = progress {
        let _ = p.await;
    }
    if rest && !interrupted {
        // Clients polling a stop-with-savepoint need a moment to read its location.
        // Checked when the job was planned.
        let linger = params.millis_or_default("rest.linger.ms").unwrap_or_default();
        tokio::time::sleep(linger).await;
    }
    let s = summary(&job, source_id, sink_id);
    let secs = started.elapsed().as_secs_f64();
    // Where the kernel tells: the CPU the job took and the memory it needed at most.
    let usage = usage_text(usage_at_start, ProcessUsage::now());
    eprintln!(
        "summary: rows in {}, rows out {}, dead-lettered {}, filtered {}, duration {:.3}s, {:.0} rows/s{usage}",
        s.rows_in,
        s.rows_out,
        s.dead_lettered,
        s.filtered,
        secs,
        s.rows_in as f64 / secs.max(1e-3)
    );
    match result {
        Ok(outcome) => {
            if let Some(sp) = outcome.savepoint {
                eprintln!("stopped with savepoint {}", sp.display());
            }
            match outcome.status {
                JobStatus::Canceled if interrupted => ExitCode::from(EXIT_INTERRUPTED),
                JobStatus::Canceled => {
                    eprintln!("job canceled");
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!("job finished");
                    ExitCode::SUCCESS
                }
            }
        }
        Err(e) => {
            eprintln!("error: job failed: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

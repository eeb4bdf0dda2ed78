//! How the `operator` binary writes its log to stderr: text, coloured only on a terminal,
//! or one JSON object per line for log shippers (`--log.format json`).

use std::io::IsTerminal as _;

use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// The form of log lines on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines; ANSI colours only when stderr is a terminal and `NO_COLOR`
    /// is unset or empty (<https://no-color.org>).
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `fields` (with `message`),
    /// `target`, and the `spans` the event happened in (a job's id among them).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`log.format`: `{other}` is not one of text, json")),
        }
    }
}

/// Whether text logs on stderr get colour: only on a terminal, and not when `NO_COLOR`
/// holds a value. A service manager, `nohup` or a container runtime gives stderr as a file
/// or a pipe, where escape sequences would only need stripping again.
fn stderr_wants_colour() -> bool {
    colour_for(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR"))
}

fn colour_for(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The stderr layer of the given format, for any subscriber built on a registry.
pub fn stderr_layer<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.with_ansi(stderr_wants_colour()).boxed(),
        LogFormat::Json => layer.json().with_ansi(false).with_current_span(false).with_span_list(true).boxed(),
    }
}

/// The level filter: `RUST_LOG` when it is set and valid, else `info` (`warn` for the
/// embedded state store).
pub fn env_filter() -> tracing_subscriber::EnvFilter {
    // The embedded state store reports each store it opens at info: a line per keyed
    // subtask that says nothing a user acts on.
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_for(true, None));
        assert!(colour_for(true, Some("".into())));
        assert!(!colour_for(true, Some("1".into())));
        assert!(!colour_for(false, None));
    }

    #[test]
    fn formats_by_name() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!(" Text ".parse::<LogFormat>(), Ok(LogFormat::Text));
        let err = "xml".parse::<LogFormat>().unwrap_err();
        assert!(err.contains("log.format") && err.contains("xml"), "{err}");
    }
}

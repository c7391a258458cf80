//! Logging setup shared by every role: text or JSON, level from a flag or `RUST_LOG`.
//!
//! Logs always go to stderr (or a file): in CNI mode stdout carries the CNI result.

use std::fs::OpenOptions;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// How log lines are rendered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `level` wins over `RUST_LOG` when given;
/// `file` sends logs to that file (appending) instead of stderr.
pub fn init(format: LogFormat, level: Option<&str>, file: Option<&Path>) -> anyhow::Result<()> {
    let filter = match level {
        Some(l) => EnvFilter::try_new(l)?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = match (format, file) {
        (LogFormat::Text, None) => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Json, None) => builder.json().with_writer(std::io::stderr).try_init(),
        (format, Some(path)) => {
            let f = OpenOptions::new().create(true).append(true).open(path)?;
            let w = Mutex::new(f);
            match format {
                LogFormat::Text => builder.with_ansi(false).with_writer(w).try_init(),
                LogFormat::Json => builder.json().with_writer(w).try_init(),
            }
        }
    };
    result.map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))
}

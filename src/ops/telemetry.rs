//! Tracing setup: human-readable lines by default, JSON lines with `[log] format = "json"`;
//! `[log] level`, overridden by `RUST_LOG`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Install the global subscriber, writing to stdout. Safe to call more than once (later calls
/// do nothing).
pub(crate) fn init(cfg: &LogConfig) {
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = subscriber(cfg, std::io::stdout, ansi).try_init();
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture with it).
pub fn subscriber<W>(cfg: &LogConfig, writer: W, ansi: bool) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    match cfg.format {
        LogFormat::Text => Box::new(builder.finish()),
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
    }
}

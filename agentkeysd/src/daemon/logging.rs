//! Logging through `tracing`: to the journal when started by systemd with its output on
//! the journal (`JOURNAL_STREAM`), else to stderr. No log line ever carries a secret: the
//! secret types have no `Display` and print `<secret>` under `Debug`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Environment variable that overrides `log.level`.
pub const LOG_ENV: &str = "AGENTKEYS_LOG";

pub fn init(level: &str) {
    let filter = std::env::var(LOG_ENV)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .or_else(|| EnvFilter::try_new(level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = registry.with(journald).try_init();
        return;
    }
    let _ = registry
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false),
        )
        .try_init();
}

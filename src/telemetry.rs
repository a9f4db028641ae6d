//! Tracing subscriber: human text or JSON lines, filtered by `RUST_LOG` or `log.level`.

use tracing_subscriber::EnvFilter;

/// Log output format (`log.format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for journald/Loki).
    Json,
}

/// Installs the global subscriber (once; later calls are ignored). Logs go to stderr: JSON lines
/// if `format` says so, or if it is `None` and stderr is the journal (`JOURNAL_STREAM` is set, as
/// systemd does for a service's stdout/stderr); else text, with ANSI colours only on a terminal.
pub fn init(format: Option<LogFormat>, level: &str) {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = format.unwrap_or(if std::env::var_os("JOURNAL_STREAM").is_some() {
        LogFormat::Json
    } else {
        LogFormat::Text
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Checks that `level` is a `tracing` filter (`info`, `warn,singapay_sync=debug`) whose every
/// directive ends in a level name. (`EnvFilter` alone would take a misspelt `infoo` as the name of
/// a target and log nothing.) Errors say which directive is wrong, without echoing it.
pub fn check_level(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for (i, directive) in level.split(',').map(str::trim).enumerate() {
        let name = directive.rsplit('=').next().unwrap_or("").trim();
        if !LEVELS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "directive {} does not end in a level ({})",
                i + 1,
                LEVELS.join(", ")
            ));
        }
    }
    EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|_| "not a filter".to_string())
}

/// An error with its cause chain, `outer: cause: root cause` — what reqwest and lettre errors
/// need to say "connection refused" or "reset by peer" (stored in `delivery_attempt.error`).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn levels_are_checked_directive_by_directive() {
        assert!(super::check_level("info").is_ok());
        assert!(super::check_level("warn,singapay_sync=debug,hyper=off").is_ok());
        assert!(super::check_level("infoo").is_err());
        assert!(super::check_level("info,singapay_sync=verbose").is_err());
        assert!(super::check_level("").is_err());
    }

    #[test]
    fn error_chain_lists_every_cause() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        ));
        assert_eq!(
            super::error_chain(&e),
            "error sending request: connection reset by peer"
        );
    }
}

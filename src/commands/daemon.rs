//! `run`: the daemon, until SIGTERM or SIGINT.

use std::process::ExitCode;

use crate::app::App;
use crate::config::Config;
use crate::telemetry;

/// Takes the SQLite ledger's lock, builds the app and runs it until a signal; exit 0 after a
/// clean stop. Errors: another process holds the ledger, or the app failed to build or run.
pub(super) async fn run(cfg: Config) -> anyhow::Result<ExitCode> {
    telemetry::init(cfg.log.format, &cfg.log.level);
    let stop = super::shutdown_on_signal();
    let _ledger_lock = super::lock_ledger(&cfg)?;
    App::build(cfg).await?.run_until_stopped(stop).await?;
    Ok(ExitCode::SUCCESS)
}

//! The CLI's commands, one module each; [`run`] dispatches a parsed [`Cli`]. Each returns the
//! process exit code: 0 success, 1 failure, 2 invalid configuration or arguments.

mod check_config;
mod daemon;
mod deliveries;
mod export;
mod links;
mod sandbox;
mod sync;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::telemetry::{self, LogFormat};

/// Runs the command of `cli`.
///
/// Errors: whatever the command could not do (printed by `main` with its causes, exit 1).
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Demo => {
            telemetry::init(Some(LogFormat::Text), "warn");
            crate::demo::run(&mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox {
            listen,
            links,
            history,
            recent,
        } => sandbox::run(*listen, *links, *history, *recent).await,
        Command::CheckConfig { online } => match load(&cli) {
            Ok(cfg) => check_config::run(&cfg, *online).await,
            Err(code) => Ok(code),
        },
        Command::Migrate => match load(&cli) {
            Ok(cfg) => {
                telemetry::init(cfg.log.format, &cfg.log.level);
                crate::ledger::Ledger::connect(&cfg.ledger)
                    .await?
                    .close()
                    .await;
                if cfg.ledger.postgres.is_some() {
                    println!("the PostgreSQL ledger (ledger.url) is up to date");
                } else {
                    println!("ledger {} is up to date", cfg.ledger.path.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(code) => Ok(code),
        },
        Command::Sync {
            account,
            json,
            confirm_deletions,
            full,
        } => match load(&cli) {
            Ok(cfg) => {
                let opts = crate::sync::PassOptions {
                    confirm_deletions: *confirm_deletions,
                    full_history: *full,
                };
                sync::run(cfg, account.as_deref(), *json, opts).await
            }
            Err(code) => Ok(code),
        },
        Command::Deliveries { action } => match load(&cli) {
            Ok(cfg) => deliveries::deliveries(&cfg, action).await,
            Err(code) => Ok(code),
        },
        Command::Subscribers { action } => match load(&cli) {
            Ok(cfg) => deliveries::subscribers(&cfg, action).await,
            Err(code) => Ok(code),
        },
        Command::Links { action } => match load(&cli) {
            Ok(cfg) => links::run(cfg, action).await,
            Err(code) => Ok(code),
        },
        Command::PaymentMethods { account, json } => match load(&cli) {
            Ok(cfg) => links::payment_methods(cfg, account.as_deref(), *json).await,
            Err(code) => Ok(code),
        },
        Command::Export { what } => match load(&cli) {
            Ok(cfg) => export::run(&cfg, what).await,
            Err(code) => Ok(code),
        },
        Command::Run => match load(&cli) {
            Ok(cfg) => daemon::run(cfg).await,
            Err(code) => Ok(code),
        },
    }
}

/// The configuration of `--config` (or its defaults), or exit code 2 after printing every
/// problem.
fn load(cli: &Cli) -> Result<Config, ExitCode> {
    Config::load(cli.config.as_deref()).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

/// The SQLite ledger's process lock for a command that recovers and runs passes (`run`, `sync`):
/// `None` on PostgreSQL, where instances coordinate through the database instead.
///
/// Errors: another process holds it ([`crate::ledger::lock_sqlite_ledger`]).
fn lock_ledger(cfg: &Config) -> anyhow::Result<Option<std::fs::File>> {
    if cfg.ledger.postgres.is_some() {
        return Ok(None);
    }
    crate::ledger::lock_sqlite_ledger(&cfg.ledger.path).map(Some)
}

/// A token cancelled at the first SIGTERM or SIGINT.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        t.cancel();
    });
    token
}

//! The `singapay-sync` binary: CLI parsing, telemetry, config, then the library.

use std::process::ExitCode;

use clap::Parser;
use singapay_sync::cli::{Cli, Command, DeliveriesCommand, SubscribersCommand};
use singapay_sync::config::Config;
use singapay_sync::telemetry::LogFormat;
use singapay_sync::{app, demo, ledger, sandbox, telemetry};
use tokio_util::sync::CancellationToken;

fn load(cli: &Cli) -> Result<Config, ExitCode> {
    Config::load(cli.config.as_deref()).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })
}

async fn shutdown_signal(token: CancellationToken) {
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
    token.cancel();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Demo => {
            telemetry::init(LogFormat::Text, "warn");
            demo::run(&mut std::io::stdout()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox { listen, links } => {
            telemetry::init(LogFormat::Text, "info");
            let token = CancellationToken::new();
            tokio::spawn(shutdown_signal(token.clone()));
            let sb = sandbox::Sandbox::new(sandbox::SandboxOptions {
                links: *links,
                ..Default::default()
            });
            let listener = tokio::net::TcpListener::bind(listen).await?;
            println!(
                "SingaPay sandbox on http://{} (account {}, {} links; partner_id {}, client_id {}, client_secret {})",
                listener.local_addr()?,
                sandbox::SEED_ACCOUNT,
                links,
                sandbox::SANDBOX_PARTNER_ID,
                sandbox::SANDBOX_CLIENT_ID,
                sandbox::SANDBOX_CLIENT_SECRET
            );
            sb.serve(listener, token).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { online } => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            if *online {
                let client = singapay_sync::singapay::SingapayClient::new(
                    singapay_sync::singapay::ClientConfig {
                        base_url: cfg.singapay.base_url.clone(),
                        partner_id: cfg.singapay.partner_id.clone(),
                        client_id: cfg.singapay.client_id.clone(),
                        client_secret: cfg.singapay.client_secret.clone(),
                        timeout: cfg.singapay.timeout,
                        max_retries: 0,
                        min_backoff: std::time::Duration::from_millis(200),
                        max_backoff: std::time::Duration::from_secs(1),
                    },
                )?;
                if let Err(e) = client.check_credentials().await {
                    eprintln!("SingaPay refused the credentials: {e}");
                    return Ok(ExitCode::FAILURE);
                }
                println!("SingaPay accepted the credentials.");
            }
            println!(
                "configuration OK: {} account(s), {} webhook(s), e-mail {}",
                cfg.accounts.len(),
                cfg.webhooks.len(),
                if cfg.email.is_some() { "on" } else { "off" }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            telemetry::init(cfg.log.format, &cfg.log.level);
            ledger::Ledger::open(&cfg.ledger_path).await?.close().await;
            println!("ledger {} is up to date", cfg.ledger_path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Sync { account, json } => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            telemetry::init(cfg.log.format, &cfg.log.level);
            let only = match account
                .as_deref()
                .map(singapay_sync::types::AccountId::parse)
            {
                None => None,
                Some(Ok(a)) if cfg.accounts.iter().any(|c| c.id == a) => Some(a),
                Some(Ok(a)) => {
                    eprintln!("account {a} is not in the configuration");
                    return Ok(ExitCode::from(2));
                }
                Some(Err(e)) => {
                    eprintln!("{e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let app = app::App::build_with_clock(
                cfg,
                std::sync::Arc::new(singapay_sync::time::SystemClock),
                false,
            )
            .await?;
            let results = app.sync_all(only.as_ref()).await;
            let dispatched = app.dispatcher.dispatch_due().await?;
            let mut failed = false;
            let mut out = Vec::new();
            for (acc, r) in &results {
                match r {
                    Ok(s) => {
                        if !*json {
                            println!(
                                "{acc}: run {} {} — {} pages, {} links, {} written, {} events {:?} ({} ms)",
                                s.run_id,
                                if s.baseline { "baseline" } else { "pass" },
                                s.pages,
                                s.links_seen,
                                s.links_written,
                                s.events,
                                s.events_by_type,
                                s.duration_ms
                            );
                        }
                        out.push(serde_json::json!({"account_id": acc.as_str(), "ok": true, "summary": s}));
                    }
                    Err(e) => {
                        failed = true;
                        eprintln!("{acc}: sync failed: {e}");
                        out.push(serde_json::json!({"account_id": acc.as_str(), "ok": false, "error": e.to_string()}));
                    }
                }
            }
            if *json {
                println!(
                    "{}",
                    serde_json::json!({"accounts": out, "deliveries": {
                        "attempted": dispatched.attempted, "delivered": dispatched.delivered,
                        "retrying": dispatched.retrying, "dead": dispatched.dead}})
                );
            } else {
                println!(
                    "deliveries: {} attempted, {} delivered, {} to retry, {} dead",
                    dispatched.attempted,
                    dispatched.delivered,
                    dispatched.retrying,
                    dispatched.dead
                );
            }
            app.ledger.close().await;
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Deliveries { action } => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let ledger = ledger::Ledger::open(&cfg.ledger_path).await?;
            let code = match action {
                DeliveriesCommand::List {
                    state,
                    subscriber,
                    limit,
                    json,
                } => {
                    if let Some(s) = state
                        && !matches!(s.as_str(), "pending" | "delivered" | "dead" | "disabled")
                    {
                        eprintln!("--state must be pending, delivered, dead or disabled");
                        return Ok(ExitCode::from(2));
                    }
                    let rows = ledger
                        .list_deliveries(state.as_deref(), subscriber.as_deref(), *limit)
                        .await?;
                    for r in &rows {
                        if *json {
                            println!("{}", serde_json::to_string(r)?);
                        } else {
                            println!(
                                "{:>6}  {:<9} {:<10} {:<8} attempts {:<2} {:<28} {}  {}",
                                r.id,
                                r.state,
                                r.subscriber,
                                r.channel,
                                r.attempts,
                                r.event_type.as_str(),
                                r.event_id,
                                r.last_error.as_deref().unwrap_or("")
                            );
                        }
                    }
                    ExitCode::SUCCESS
                }
                DeliveriesCommand::Retry { id } => {
                    if ledger.retry_delivery(*id, chrono::Utc::now()).await? {
                        println!("delivery {id} is due now");
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("delivery {id} does not exist or is not dead or disabled");
                        ExitCode::FAILURE
                    }
                }
            };
            ledger.close().await;
            Ok(code)
        }
        Command::Subscribers {
            action: SubscribersCommand::Enable { name },
        } => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            let ledger = ledger::Ledger::open(&cfg.ledger_path).await?;
            let n = ledger.enable_subscriber(name, chrono::Utc::now()).await?;
            println!("subscriber {name} enabled; {n} parked deliveries are due now");
            ledger.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run => {
            let cfg = match load(&cli) {
                Ok(c) => c,
                Err(code) => return Ok(code),
            };
            telemetry::init(cfg.log.format, &cfg.log.level);
            let token = CancellationToken::new();
            tokio::spawn(shutdown_signal(token.clone()));
            let app = app::App::build(cfg).await?;
            app.run_until_stopped(token).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

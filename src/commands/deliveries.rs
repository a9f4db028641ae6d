//! `deliveries list|retry` and `subscribers enable`: the outbox, worked on the ledger directly (a
//! running daemon picks retried deliveries up within its idle interval).

use std::process::ExitCode;

use crate::cli::{DeliveriesCommand, SubscribersCommand};
use crate::config::Config;
use crate::ledger::{DeliveryFilter, Ledger};

/// `deliveries …`.
pub(super) async fn deliveries(
    cfg: &Config,
    action: &DeliveriesCommand,
) -> anyhow::Result<ExitCode> {
    let ledger = Ledger::connect(&cfg.ledger).await?;
    let code = match action {
        DeliveriesCommand::List {
            state,
            subscriber,
            channel,
            limit,
            json,
        } => {
            let rows = ledger
                .list_deliveries(&DeliveryFilter {
                    state: *state,
                    subscriber: subscriber.clone(),
                    channel: *channel,
                    limit: *limit,
                })
                .await?;
            for r in &rows {
                if *json {
                    println!("{}", serde_json::to_string(r)?);
                } else {
                    println!(
                        "{:>6}  {:<9} {:<10} {:<8} attempts {:<2} {:<28} {}  {}",
                        r.id,
                        r.state.as_str(),
                        r.subscriber,
                        r.channel.as_str(),
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

/// `subscribers …`.
pub(super) async fn subscribers(
    cfg: &Config,
    action: &SubscribersCommand,
) -> anyhow::Result<ExitCode> {
    let SubscribersCommand::Enable { name } = action;
    let ledger = Ledger::connect(&cfg.ledger).await?;
    let n = ledger.enable_subscriber(name, chrono::Utc::now()).await?;
    println!("subscriber {name} enabled; {n} parked deliveries are due now");
    ledger.close().await;
    Ok(ExitCode::SUCCESS)
}

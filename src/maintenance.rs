//! The daemon's housekeeping: retention (`ledger.retention`, `ledger.event_retention`), pruned
//! at start and then hourly, in small batches with a pause between them, so that passes and the
//! dispatcher keep writing while it runs.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::LedgerConfig;
use crate::ledger::{Ledger, LedgerResult, Pruned};
use crate::time::Clock;

/// Rows of each kind one batch removes at most.
const BATCH: i64 = 1000;
/// The pause between two batches (other writers get the lock).
const PAUSE: Duration = Duration::from_millis(10);
/// How often retention runs.
const EVERY: Duration = Duration::from_secs(3600);

/// Prunes everything past retention now, batch by batch, until nothing is left or `stop`.
/// Returns the total removed.
///
/// Errors: the ledger failed (what was pruned before stays pruned).
pub(crate) async fn prune_all(
    ledger: &Ledger,
    config: &LedgerConfig,
    clock: &dyn Clock,
    stop: &CancellationToken,
) -> LedgerResult<Pruned> {
    let now = clock.now();
    let back = |d: Duration| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_sub_signed(d))
    };
    let Some(cutoff) = back(config.retention) else {
        return Ok(Pruned::default());
    };
    let event_cutoff = config.event_retention.and_then(back);
    let mut total = Pruned::default();
    while !stop.is_cancelled() {
        let p = ledger.prune_batch(cutoff, event_cutoff, BATCH).await?;
        if p.is_empty() {
            break;
        }
        total.deliveries += p.deliveries;
        total.attempts += p.attempts;
        total.runs += p.runs;
        total.events += p.events;
        total.notifications += p.notifications;
        for (table, n) in [
            ("delivery", p.deliveries),
            ("delivery_attempt", p.attempts),
            ("sync_run", p.runs),
            ("link_event", p.events),
            ("inbound_notification", p.notifications),
        ] {
            metrics::counter!("singapay_sync_pruned_rows_total", "table" => table).increment(n);
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(total)
}

/// The retention loop: [`prune_all`] at start and every hour until `stop`. A failure is logged
/// and tried again at the next hour (retention is housekeeping, not the daemon's work).
pub(crate) async fn run(
    ledger: Ledger,
    config: LedgerConfig,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    loop {
        match prune_all(&ledger, &config, clock.as_ref(), &stop).await {
            Ok(p) if !p.is_empty() => info!(
                deliveries = p.deliveries,
                attempts = p.attempts,
                runs = p.runs,
                events = p.events,
                notifications = p.notifications,
                "ledger.pruned"
            ),
            Ok(_) => {}
            Err(e) => warn!(error = %crate::telemetry::error_chain(&e), "ledger.prune_failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

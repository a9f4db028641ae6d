//! The outbox dispatcher: claims due deliveries in batches, sends them (`send`: webhooks
//! concurrently with one link's events in order per subscriber, e-mail as one digest per pass per
//! group), and records each outcome as it comes (`record`: committed in small groups, every
//! ~100 ms or 100 outcomes, and at most 200 beside those in flight sent and not yet committed,
//! so a kill re-sends at most that many).

mod give_up;
mod record;
mod send;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use lettre::message::Mailbox;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::email::Mailer;
use super::retry::RetrySchedule;
use crate::ledger::{DueDelivery, Ledger, LedgerError};
use crate::standard_webhooks::WebhookSecret;
use crate::time::Clock;
use crate::types::DeliveryState;

/// The delivery ids of a claimed batch.
fn ids_of(due: &[DueDelivery]) -> Vec<i64> {
    due.iter().map(|d| d.id).collect()
}

/// A configured webhook subscriber.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// Name (`[[webhooks]].name`).
    pub name: String,
    /// Callback URL, parsed once: every POST clones it instead of parsing a string again
    /// (~10,000 instructions saved per POST, 637.9 → 618.3 M for 2,000 deliveries, callgrind on
    /// `cargo bench --bench delivery`; reqwest's redirect policy still parses it once more).
    pub url: reqwest::Url,
    /// Signing secret.
    pub secret: WebhookSecret,
}

/// A configured e-mail recipient group.
#[derive(Debug, Clone)]
pub struct EmailGroup {
    /// Addresses.
    pub to: Vec<Mailbox>,
}

/// E-mail settings.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    /// Transport.
    pub mailer: Mailer,
    /// `From:`.
    pub from: Mailbox,
    /// Groups by name.
    pub groups: HashMap<String, EmailGroup>,
}

/// What one [`Dispatcher::dispatch_due`] call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DispatchSummary {
    /// Deliveries attempted.
    pub attempted: usize,
    /// Delivered.
    pub delivered: usize,
    /// Failed, to be retried.
    pub retrying: usize,
    /// Failed for the last time (`dead`).
    pub dead: usize,
    /// Parked because the subscriber answered 410 Gone.
    pub disabled: usize,
    /// Put off unsent, not counted as attempts: their webhook subscriber timed out twice in a
    /// row, so they wait for the timed-out attempts' retry time (the batch's, and every other
    /// pending delivery to it due before then).
    pub deferred: usize,
}

/// The dispatcher. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct Dispatcher {
    ledger: Ledger,
    http: reqwest::Client,
    webhooks: HashMap<String, WebhookTarget>,
    email: Option<EmailSettings>,
    schedule: RetrySchedule,
    clock: Arc<dyn Clock>,
    batch: i64,
    concurrency: usize,
    per_subscriber: usize,
    /// PostgreSQL ledger (several instances): how long a claim holds before another instance
    /// takes the delivery over. `None` on SQLite (claims are recovered at start).
    lease: Option<Duration>,
    /// Unix milliseconds (real time) of the last sign of progress: an outcome recorded, or a
    /// loop turn that found nothing to send. The watchdog pings systemd only while it is recent.
    progress: AtomicI64,
    /// Webhook subscribers that timed out since they last answered, carried from batch to batch
    /// (`give_up::Silence`): how many times, or given up on (twice in a row) with when their
    /// put-off deliveries are due; until then a batch puts theirs off without sending. Kept in
    /// memory only: after a restart the first batch tries them afresh.
    silent: std::sync::Mutex<HashMap<String, give_up::Silence>>,
    /// Notified after a sync commits deliveries, so they go out at once.
    pub wake: Arc<Notify>,
}

impl Dispatcher {
    /// A dispatcher. `timeout` bounds each webhook request; `concurrency` bounds requests in
    /// flight.
    ///
    /// Errors: the HTTP client cannot be built.
    pub fn new(
        ledger: Ledger,
        webhooks: Vec<WebhookTarget>,
        email: Option<EmailSettings>,
        schedule: RetrySchedule,
        timeout: Duration,
        concurrency: usize,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("singapay-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            ledger,
            http,
            webhooks: webhooks.into_iter().map(|w| (w.name.clone(), w)).collect(),
            email,
            schedule,
            clock,
            batch: 2000,
            concurrency: concurrency.max(1),
            per_subscriber: concurrency.max(1),
            lease: None,
            progress: AtomicI64::new(chrono::Utc::now().timestamp_millis()),
            silent: std::sync::Mutex::default(),
            wake: Arc::new(Notify::new()),
        })
    }

    /// Shares the ledger with other instances (PostgreSQL): every dispatch first returns the
    /// claims older than `lease` (a killed instance's) to the queue, logged as interrupted, and
    /// the loop looks for work at least every second (another instance's pass does not wake
    /// this one).
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Claims at most `n` deliveries per batch (default 2,000; at least 1).
    pub fn with_batch(mut self, n: usize) -> Self {
        self.batch = i64::try_from(n.max(1)).unwrap_or(i64::MAX);
        self
    }

    /// Bounds requests in flight to any one subscriber (default: the total bound), so that a
    /// slow receiver cannot take every slot from the others.
    pub fn with_per_subscriber_limit(mut self, n: usize) -> Self {
        self.per_subscriber = n.clamp(1, self.concurrency);
        self
    }

    /// Notes a sign of progress (now).
    fn progressed(&self) {
        self.progress
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// How long ago (real time) the dispatcher last showed progress.
    pub(crate) fn since_progress(&self) -> Duration {
        let ms = chrono::Utc::now().timestamp_millis() - self.progress.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }

    /// Sends everything due now, recording each outcome as it comes. Returns what happened.
    ///
    /// Each batch is claimed (`claimed_at`), made durable (nothing is sent that an OS crash could
    /// still roll back), sent, and its unattempted claims released; a (subscriber, link) whose
    /// earlier event failed in a batch keeps its later ones for a later call. On SQLite, while a
    /// full batch is sent, the next one is claimed (the claim query took ~20 ms of a
    /// 2,000-delivery batch's ~100 ms, `cargo bench --bench delivery`, and sending waited for
    /// it); a batch claimed that way is followed by one more claim once it is sent, for the later
    /// events its predecessor's claims held back.
    ///
    /// Errors: the ledger failed, including the durability barrier; nothing is sent after that
    /// (unrecorded attempts are simply tried again, with the same `webhook-id`).
    pub async fn dispatch_due(&self) -> Result<DispatchSummary, LedgerError> {
        let mut summary = DispatchSummary::default();
        let mut gone: BTreeSet<String> = BTreeSet::new();
        if let Some(lease) = self.lease {
            let lapsed = self.clock.now() - chrono::Duration::from_std(lease).unwrap_or_default();
            let n = self
                .ledger
                .recover_interrupted_attempts(Some(lapsed))
                .await?;
            if n > 0 {
                tracing::warn!(
                    interrupted = n,
                    "delivery.interrupted: claims whose lease lapsed (an instance stopped) are sent again"
                );
                metrics::counter!("singapay_sync_deliveries_interrupted_total").increment(n);
            }
        }
        let mut due = self.claim_batch().await?;
        // `due` was claimed while another batch was in flight: that batch's claims held back
        // the later events of its links, which may be due once it is recorded.
        let mut behind = false;
        for _ in 0..1000 {
            if due.is_empty() && !behind {
                break;
            }
            let ids = ids_of(&due);
            let batch: Vec<_> = std::mem::take(&mut due)
                .into_iter()
                .filter(|d| !gone.contains(&d.subscriber))
                .collect();
            // A full batch may have more behind it. On SQLite the next one is claimed (and made
            // durable) while this one is sent, so the queue does not wait for the claim query;
            // that query sees this batch's deliveries claimed, so it takes no later event of
            // their links. On PostgreSQL the next batch is claimed after this one is recorded:
            // the claim beside a batch in flight costs the server's CPU that the batch's outcome
            // commits need (with the claim of 9790f92: 55-70 ms instead of ~37 ms, sending 2,000
            // slower by as much; delivery 0.621 s either way; with today's claim 153 ms instead of
            // 54-60 ms, and 0.22-0.23 x the floor's rate instead of 0.32-0.35 x, `BENCH_LEDGER=
            // postgres cargo bench --bench delivery`, docs/PERFORMANCE.md), and a batch claimed
            // early would age against `ledger.lease` while the one before it is sent.
            let full = ids.len() >= self.batch as usize;
            let prefetch = full && !self.ledger.is_postgres();
            let stop = CancellationToken::new();
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let unrecorded =
                tokio::sync::Semaphore::new(record::unrecorded_limit(self.concurrency));
            let (put_off, recorded, next) = tokio::join!(
                self.send_batch(batch, tx, &stop, &unrecorded),
                self.record_stream(rx, &mut summary, &mut gone, &stop, &unrecorded),
                async {
                    if prefetch {
                        self.claim_batch().await.map(Some)
                    } else {
                        Ok(None)
                    }
                }
            );
            summary.deferred += put_off;
            // Deliveries of a group stopped behind a failure were claimed but not attempted; a
            // recorded outcome cleared its delivery's claim already, so only the others are
            // released (usually none: one statement over the whole batch's ids saved).
            let finished = match recorded {
                Ok(done) => {
                    let left: Vec<i64> = ids
                        .iter()
                        .copied()
                        .filter(|id| !done.contains(id))
                        .collect();
                    self.ledger.release_claims(&left).await
                }
                Err(e) => self.ledger.release_claims(&ids).await.and(Err(e)),
            };
            let next = match (finished, next) {
                (Ok(()), Ok(next)) => next,
                (Ok(()), Err(e)) => return Err(e),
                (Err(e), next) => {
                    // Nothing more is sent this call: the next batch's claims go back too.
                    if let Ok(Some(next)) = next {
                        self.ledger.release_claims(&ids_of(&next)).await?;
                    }
                    return Err(e);
                }
            };
            (due, behind) = match next {
                Some(next) => (next, true),
                // Not full, and claimed with nothing in flight: all that was due was in it.
                None if !full && !behind => break,
                None => (self.claim_batch().await?, false),
            };
        }
        // Empty unless the bound on batches per call was reached with one more batch claimed,
        // which goes back to the queue for the next call.
        self.ledger.release_claims(&ids_of(&due)).await?;
        Ok(summary)
    }

    /// Claims the next batch due now (at most `batch`, oldest first) and makes the ledger durable,
    /// so that nothing of it is sent that an OS crash could still roll back.
    ///
    /// Errors: the claim failed, or the durability barrier did (the claims are then released).
    async fn claim_batch(&self) -> Result<Vec<DueDelivery>, LedgerError> {
        let due = self.ledger.claim_due(self.clock.now(), self.batch).await?;
        if due.is_empty() {
            return Ok(due);
        }
        if let Err(e) = self.ledger.make_durable().await {
            self.ledger.release_claims(&ids_of(&due)).await?;
            return Err(e);
        }
        Ok(due)
    }

    /// Sets the gauges of `/metrics` from the ledger: deliveries by state and the age of the
    /// oldest pending one (so a scrape costs no query).
    async fn refresh_gauges(&self) -> Result<(), LedgerError> {
        let counts = self.ledger.delivery_state_counts().await?;
        for &state in DeliveryState::ALL {
            let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |c| c.1);
            metrics::gauge!("singapay_sync_deliveries", "state" => state.as_str()).set(n as f64);
        }
        let age = match self.ledger.oldest_pending_since().await? {
            Some(t) => (self.clock.now() - t).num_milliseconds().max(0) as f64 / 1000.0,
            None => 0.0,
        };
        metrics::gauge!("singapay_sync_oldest_pending_delivery_age_seconds").set(age);
        Ok(())
    }

    /// The dispatcher loop: dispatch what is due, then sleep until the next due time, a wake-up
    /// (a sync committed deliveries) or at most `idle`. Stops at `cancel` after the batch in
    /// flight is recorded.
    pub(crate) async fn run(&self, cancel: CancellationToken, idle: Duration) {
        info!("dispatcher.started");
        let idle = if self.lease.is_some() {
            idle.min(Duration::from_secs(1))
        } else {
            idle
        };
        let mut gauges_at = std::time::Instant::now() - Duration::from_secs(60);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let mut moved = false;
            let failed = match self.dispatch_due().await {
                Ok(s) => {
                    moved = s.attempted > 0;
                    false
                }
                Err(e) => {
                    error!(error = %crate::telemetry::error_chain(&e), "dispatcher.ledger_error");
                    true
                }
            };
            // The gauges follow deliveries that moved (at most every second), else every 10 s.
            let since = gauges_at.elapsed();
            if since >= Duration::from_secs(10) || (moved && since >= Duration::from_secs(1)) {
                if let Err(e) = self.refresh_gauges().await {
                    warn!(error = %e, "dispatcher.gauges_failed");
                }
                gauges_at = std::time::Instant::now();
            }
            let wait = match self.ledger.next_due_at().await {
                // After a ledger error, pause before trying again instead of spinning.
                _ if failed => Duration::from_secs(5),
                Ok(Some(t)) => (t - self.clock.now()).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => idle,
                Err(e) => {
                    error!(error = %e, "dispatcher.ledger_error");
                    idle
                }
            }
            .min(idle);
            if !failed {
                self.progressed();
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!("dispatcher.stopped");
    }
}

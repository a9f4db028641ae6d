//! Draining stored notifications (DESIGN §14): each pending one is resolved to the configured
//! account that holds what it names (SingaPay's numeric `account_id` in the body is its internal
//! id, not the account's ULID; link ids are global), grouped per account into one targeted pass
//! (trigger `webhook`), and marked processed, or retried with backoff when SingaPay's reads fail.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::notice::{Notice, classify};
use crate::ledger::{InboundOutcome, InboundRow, Ledger, LedgerError};
use crate::sync::{SyncError, Syncer, Targets};
use crate::time::Clock;
use crate::types::{AccountId, InboundState, LinkId, Trigger};

/// Seconds between attempts at a notification whose targeted pass failed; after the last one
/// it is `failed` (about 20 minutes in all; the sweep remains the safety net).
const RETRY_SECS: [u64; 9] = [1, 2, 5, 15, 30, 60, 120, 300, 600];
/// Notifications taken per drain.
const BATCH: i64 = 500;
/// Longest sleep when nothing is due (new notifications wake the loop at once).
const IDLE: Duration = Duration::from_secs(30);
/// How soon a notification is tried again when its account's pass was busy.
const BUSY_RETRY: chrono::Duration = chrono::Duration::milliseconds(200);

/// The notification queue's consumer.
pub(crate) struct Processor {
    /// The ledger.
    pub ledger: Ledger,
    /// Runs the targeted passes.
    pub syncer: Arc<Syncer>,
    /// The configured accounts.
    pub accounts: Vec<AccountId>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Woken when a notification is stored.
    pub wake: Arc<Notify>,
    /// How long a notification taken on PostgreSQL stays this instance's before another may
    /// take it (`ledger.lease`; unused on SQLite).
    pub lease: Duration,
}

/// One notification resolved: where and what to read.
struct Resolved {
    id: i64,
    attempts: i64,
    received_at: DateTime<Utc>,
    account: AccountId,
    targets: Targets,
}

/// The `outcome` (`singapay_sync_inbound_processed_total`) of notifications a pass took in.
const PROCESSED: &str = "processed";
/// The `outcome` of notifications whose pass failed, to be tried again.
const RETRIED: &str = "retried";
/// The `outcome` of notifications whose last try failed (given up).
const FAILED: &str = "failed";

impl Processor {
    /// Drains due notifications until `stop`; sleeps until the next is due or one arrives.
    /// First publishes the notification counts already in the ledger and registers every
    /// `singapay_sync_inbound_processed_total` outcome at 0.
    pub(crate) async fn run(self, stop: CancellationToken) {
        // The series the alert rules read exist from the start (config/alerts.yml): the
        // counts of what is in the ledger, and every outcome at 0.
        self.publish_counts().await;
        for outcome in [PROCESSED, RETRIED, FAILED] {
            metrics::counter!("singapay_sync_inbound_processed_total", "outcome" => outcome)
                .increment(0);
        }
        loop {
            if stop.is_cancelled() {
                break;
            }
            let drained = match self.drain_once().await {
                Ok(n) => n,
                Err(e) => {
                    warn!(error = %e, "inbound.drain_failed");
                    0
                }
            };
            if drained > 0 {
                continue;
            }
            let wait = match self.ledger.next_notification_due().await {
                Ok(Some(at)) => (at - self.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .min(IDLE),
                _ => IDLE,
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Processes the notifications due now (at most [`BATCH`]); returns how many were taken.
    ///
    /// Errors: the ledger failed (the notifications stay pending).
    pub(crate) async fn drain_once(&self) -> Result<usize, LedgerError> {
        let now = self.clock.now();
        let due = self
            .ledger
            .due_notifications(now, BATCH, self.lease)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let mut groups: BTreeMap<AccountId, Vec<Resolved>> = BTreeMap::new();
        for row in &due {
            match self.resolve(row).await {
                Ok(Some(r)) => groups.entry(r.account.clone()).or_default().push(r),
                Ok(None) => {
                    let why = "names nothing a configured account holds".to_string();
                    info!(id = row.id, "inbound.ignored: {why}");
                    self.ledger
                        .finish_notifications(&[row.id], &InboundOutcome::Ignored(why), now)
                        .await?;
                }
                Err(e) => {
                    self.retry(&[(row.id, row.attempts)], &e.to_string())
                        .await?;
                }
            }
        }
        let passes = groups
            .into_iter()
            .map(|(account, rows)| self.process_account(account, rows));
        for r in futures_util::future::join_all(passes).await {
            r?;
        }
        self.publish_counts().await;
        Ok(due.len())
    }

    /// One targeted pass for every notification resolved to `account`.
    async fn process_account(
        &self,
        account: AccountId,
        rows: Vec<Resolved>,
    ) -> Result<(), LedgerError> {
        let mut targets = Targets::default();
        for r in &rows {
            targets.merge(r.targets.clone());
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        match self
            .syncer
            .sync_targeted(&account, Trigger::Webhook, targets)
            .await
        {
            Ok(summary) => {
                let now = self.clock.now();
                info!(
                    account_id = %account,
                    run_id = summary.run_id,
                    notifications = ids.len(),
                    events = summary.events,
                    "inbound.processed"
                );
                self.ledger
                    .finish_notifications(
                        &ids,
                        &InboundOutcome::Processed {
                            run_id: summary.run_id,
                            account,
                        },
                        now,
                    )
                    .await?;
                for r in &rows {
                    metrics::histogram!("singapay_sync_inbound_processing_seconds").record(
                        (now - r.received_at)
                            .to_std()
                            .unwrap_or_default()
                            .as_secs_f64(),
                    );
                }
                metrics::counter!("singapay_sync_inbound_processed_total", "outcome" => PROCESSED)
                    .increment(ids.len() as u64);
                Ok(())
            }
            Err(SyncError::Busy(_)) => {
                // Another pass of the account is running: try again just after it.
                let later = InboundOutcome::Later(self.clock.now() + BUSY_RETRY);
                self.ledger
                    .finish_notifications(&ids, &later, self.clock.now())
                    .await
            }
            Err(e) => {
                warn!(account_id = %account, error = %e, "inbound.pass_failed: retried later");
                let tried: Vec<(i64, i64)> = rows.iter().map(|r| (r.id, r.attempts)).collect();
                self.retry(&tried, &e.to_string()).await
            }
        }
    }

    /// Schedules another attempt at each `(id, attempts so far)`, or gives it up.
    async fn retry(&self, rows: &[(i64, i64)], error: &str) -> Result<(), LedgerError> {
        let now = self.clock.now();
        for &(id, attempts) in rows {
            let next = RETRY_SECS
                .get(attempts.max(0) as usize)
                .map(|s| now + chrono::Duration::seconds(*s as i64));
            let outcome = if next.is_some() { RETRIED } else { FAILED };
            metrics::counter!("singapay_sync_inbound_processed_total", "outcome" => outcome)
                .increment(1);
            self.ledger
                .finish_notifications(
                    &[id],
                    &InboundOutcome::Retry {
                        error: error.to_string(),
                        next,
                    },
                    now,
                )
                .await?;
        }
        Ok(())
    }

    /// Publishes `singapay_sync_inbound_notifications{state}` for the states an operator acts on
    /// (`pending`, `failed`; 0 when none): indexed counts, so a drain does not scan the history
    /// of every webhook kept (processed ones are counted by `_inbound_processed_total`).
    async fn publish_counts(&self) {
        if let Ok(counts) = self.ledger.count_notifications().await {
            for state in [InboundState::Pending, InboundState::Failed] {
                let n = counts.iter().find(|(s, _)| *s == state).map_or(0, |c| c.1);
                metrics::gauge!("singapay_sync_inbound_notifications", "state" => state.as_str())
                    .set(n as f64);
            }
        }
    }

    /// What a stored notification asks to read, and in which configured account (`None`: no
    /// configured account holds it, or it names nothing).
    ///
    /// Errors: the ledger failed, or SingaPay failed while asking the accounts (retried).
    async fn resolve(&self, row: &InboundRow) -> Result<Option<Resolved>, ResolveError> {
        let Ok(body) = serde_json::from_str::<Value>(&row.body) else {
            return Ok(None);
        };
        let (_, notice) = classify(&body);
        // A transaction names its link: show it (its usage and status); an inquiry or an
        // expiration changes only the history row.
        let (show_link, link, link_reff, attempts): (bool, _, _, Vec<String>) = match notice {
            Notice::Transaction {
                link_id,
                link_reff_no,
                attempt_reff_no,
            } => (
                true,
                link_id,
                link_reff_no,
                attempt_reff_no.into_iter().collect(),
            ),
            Notice::Inquiry {
                attempt_reff_no,
                link_id,
                link_reff_no,
            } => (
                false,
                link_id,
                link_reff_no,
                attempt_reff_no.into_iter().collect(),
            ),
            Notice::Expiration { attempt_reff_nos } => (false, None, None, attempt_reff_nos),
            Notice::Other => return Ok(None),
        };
        if link.is_none() && link_reff.is_none() && attempts.is_empty() {
            return Ok(None);
        }
        let Some((account, link)) = self
            .account_for(link, link_reff.as_deref(), &attempts)
            .await?
        else {
            return Ok(None);
        };
        let mut targets = Targets::default();
        if show_link && let Some(l) = link {
            targets.links.insert(l);
        }
        targets.newest_history = show_link && attempts.is_empty();
        targets.attempts.extend(attempts);
        if targets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Resolved {
            id: row.id,
            attempts: row.attempts,
            received_at: row.received_at,
            account,
            targets,
        }))
    }

    /// The configured account holding what a notification names (and its link id when only the
    /// reference was given): the mirror first, then (one account) that account, then SingaPay,
    /// account by account.
    async fn account_for(
        &self,
        link: Option<LinkId>,
        link_reff: Option<&str>,
        attempts: &[String],
    ) -> Result<Option<(AccountId, Option<LinkId>)>, ResolveError> {
        let l = &self.ledger;
        if let Some(id) = link
            && let Some(a) = l.account_of_link(id, &self.accounts).await?
        {
            return Ok(Some((a, Some(id))));
        }
        if let Some(r) = link_reff
            && let Some((a, id)) = l.account_of_link_reff(r, &self.accounts).await?
        {
            return Ok(Some((a, Some(id))));
        }
        for r in attempts {
            if let Some((a, id)) = l.account_of_attempt(r, &self.accounts).await? {
                return Ok(Some((a, link.or(id))));
            }
        }
        if let [only] = self.accounts.as_slice() {
            return Ok(Some((only.clone(), link)));
        }
        // Not mirrored yet (e.g. a link made in the dashboard since the last sweep): ask.
        let client = &self.syncer.context().client;
        for a in &self.accounts {
            if let Some(id) = link {
                if client.show(a, id).await?.is_some() {
                    return Ok(Some((a.clone(), Some(id))));
                }
            } else if let Some(r) = attempts.first() {
                let page = client
                    .history_page(a, 1, 10, &[("reff_no", r.clone())])
                    .await?;
                if !page.rows.is_empty() {
                    return Ok(Some((a.clone(), link)));
                }
            }
        }
        Ok(None)
    }
}

/// Why a notification could not be resolved (it is retried).
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("asking SingaPay which account holds it: {0}")]
    Upstream(#[from] crate::singapay::SingapayError),
}

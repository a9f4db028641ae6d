//! Expiry on the clock (DESIGN §14): the ledger knows every open link's and pending history row's
//! `expired_at`, so no poll is needed to see them expire. A timer sleeps until just after the
//! soonest one, then shows those links and reads those rows in a targeted pass (recorded with
//! trigger `schedule`: the clock asked), which emits their `status_changed` / `payment.expired`
//! through the usual diff. The queue is the ledger itself: rebuilt at start, and read again after
//! every pass (a pass may add or move an expiry).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Syncer, Targets};
use crate::ledger::{Expiry, ExpiryTarget};
use crate::types::{AccountId, Trigger};

/// How long after `expired_at` the link is shown (SingaPay's clock may be a little behind ours).
pub(crate) const GRACE: chrono::Duration = chrono::Duration::seconds(1);
/// Expiries read ahead per query (of links, and of history rows).
const LOOKAHEAD: i64 = 1000;
/// Longest sleep (the ledger is read again at least this often).
const IDLE: Duration = Duration::from_secs(60);
/// How long a firing waits for the account's running sweep.
const BUSY_WAIT: Duration = Duration::from_secs(120);

/// The expiry timer.
pub(crate) struct ExpiryTimer {
    /// Runs the targeted passes (and holds the ledger and the clock).
    pub syncer: Arc<Syncer>,
    /// The configured accounts.
    pub accounts: Vec<AccountId>,
    /// Woken after every pass.
    pub wake: Arc<Notify>,
}

impl ExpiryTimer {
    /// Runs until `stop`.
    pub(crate) async fn run(self, stop: CancellationToken) {
        // Expiries up to here were handled (`None`: none yet, so the first read includes those
        // that passed while the daemon was down).
        let mut handled: Option<DateTime<Utc>> = None;
        loop {
            let ctx = self.syncer.context();
            let upcoming = match ctx
                .ledger
                .next_expiries(&self.accounts, handled, LOOKAHEAD)
                .await
            {
                Ok(u) => u,
                Err(e) => {
                    warn!(error = %e, "expiry.read_failed");
                    Vec::new()
                }
            };
            let now = ctx.clock.now();
            let due: Vec<&Expiry> = upcoming.iter().filter(|e| e.at + GRACE <= now).collect();
            if let Some(last) = due.iter().map(|e| e.at).max() {
                self.fire(&due, handled, &stop).await;
                handled = Some(last);
                continue;
            }
            let wait = upcoming
                .first()
                .and_then(|e| (e.at + GRACE - now).to_std().ok())
                .unwrap_or(IDLE)
                .min(IDLE);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One targeted pass per account for the expiries `due` (read with `since`, the expiries
    /// already handled then).
    ///
    /// When another pass of the account is running (a sweep, or on PostgreSQL another instance's
    /// timer firing for the same expiry), this waits for it, at most [`BUSY_WAIT`], asking the
    /// ledger again what is still due before each new try ([`Self::still_due`]): what that pass
    /// saw expire is not shown again.
    async fn fire(&self, due: &[&Expiry], since: Option<DateTime<Utc>>, stop: &CancellationToken) {
        let mut per_account: BTreeMap<&AccountId, Targets> = BTreeMap::new();
        for e in due {
            let t = per_account.entry(&e.account).or_default();
            match &e.target {
                ExpiryTarget::Link(id) => {
                    t.links.insert(*id);
                }
                ExpiryTarget::Attempt(r) => {
                    t.attempts.insert(r.clone());
                }
            }
        }
        for (account, targets) in per_account {
            let (links, rows) = (targets.links.len(), targets.attempts.len());
            if stop.is_cancelled() {
                return;
            }
            match self
                .syncer
                .sync_targeted_when_free(
                    account,
                    Trigger::Schedule,
                    targets,
                    BUSY_WAIT,
                    async |t| self.still_due(account, since, t).await,
                )
                .await
            {
                Ok(Some(s)) => {
                    info!(account_id = %account, run_id = s.run_id, links, rows, events = s.events, "expiry.fired")
                }
                Ok(None) => {
                    info!(account_id = %account, links, rows, "expiry.seen_by_another_pass")
                }
                // The next sweep sees the expiry anyway.
                Err(e) => warn!(account_id = %account, error = %e, "expiry.pass_failed"),
            }
        }
    }

    /// What of `targets` the ledger still holds as open links and pending rows due to expire
    /// (after `since`, up to now): a pass that showed a link after its expiry took it out. On a
    /// ledger error, `targets` as they were (showing twice is harmless).
    async fn still_due(
        &self,
        account: &AccountId,
        since: Option<DateTime<Utc>>,
        targets: Targets,
    ) -> Targets {
        let ctx = self.syncer.context();
        let upcoming = match ctx
            .ledger
            .next_expiries(std::slice::from_ref(account), since, LOOKAHEAD)
            .await
        {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %e, "expiry.read_failed");
                return targets;
            }
        };
        let now = ctx.clock.now();
        let mut left = Targets::default();
        for e in upcoming.iter().filter(|e| e.at + GRACE <= now) {
            match &e.target {
                ExpiryTarget::Link(id) if targets.links.contains(id) => {
                    left.links.insert(*id);
                }
                ExpiryTarget::Attempt(r) if targets.attempts.contains(r) => {
                    left.attempts.insert(r.clone());
                }
                _ => {}
            }
        }
        left
    }
}

//! Recording outcomes as they come: committed in small groups (every [`GROUP_WINDOW`] or half of
//! [`GROUP_MAX`] outcomes), and never more than [`GROUP_MAX`] plus the requests in flight sent
//! and not yet committed ([`unrecorded_limit`] permits), so that after a kill the only deliveries
//! sent again are at most those. Counts them, disables subscribers that answered 410 Gone, and
//! tells finance so.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use lettre::message::Mailbox;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::{DispatchSummary, Dispatcher};
use crate::ledger::{AttemptOutcome, AttemptResult, DueDelivery, LedgerError};
use crate::types::Channel;

/// The longest an outcome waits to be committed.
pub(super) const GROUP_WINDOW: Duration = Duration::from_millis(100);
/// The most outcomes sent and not yet committed, beside the requests in flight (a group is
/// committed at half of it, so the next half is sent during the commit).
pub(super) const GROUP_MAX: usize = 200;

/// One attempt's outcome, with what the recorder reports it by.
#[derive(Debug)]
pub(super) struct Sent {
    /// The outcome.
    pub outcome: AttemptOutcome,
    /// The delivery's subscriber.
    pub subscriber: String,
    /// Its channel.
    pub channel: Channel,
    /// It took one of the batch's unrecorded-send permits (a webhook POST was made), returned
    /// once it is committed.
    pub permit: bool,
}

impl Sent {
    /// The outcome of an attempt of `d` that sent nothing.
    pub(super) fn new(outcome: AttemptOutcome, d: &DueDelivery) -> Self {
        Self {
            outcome,
            subscriber: d.subscriber.clone(),
            channel: d.channel,
            permit: false,
        }
    }

    /// The outcome of a webhook POST of `d` (made with a permit).
    pub(super) fn posted(outcome: AttemptOutcome, d: &DueDelivery) -> Self {
        Self {
            permit: true,
            ..Self::new(outcome, d)
        }
    }
}

/// How many webhook POSTs of a batch may be made and not yet committed: one group, plus the
/// requests in flight (`concurrency`). A sender waits for a permit, the recorder returns them
/// when it commits, so a kill re-sends at most this many whatever the ledger's speed (a slow
/// commit holds the senders back instead of letting unrecorded attempts pile up).
pub(super) fn unrecorded_limit(concurrency: usize) -> usize {
    GROUP_MAX + concurrency
}

impl Dispatcher {
    /// Records the outcomes of one batch as they arrive on `rx`, in groups; returns when the
    /// batch is sent (the channel closes) and everything is recorded, with the ids of the
    /// deliveries whose outcome it recorded (their claims are cleared). On a ledger error, fires
    /// `stop` (nothing more is sent) and returns it.
    pub(super) async fn record_stream(
        &self,
        mut rx: UnboundedReceiver<Sent>,
        summary: &mut DispatchSummary,
        gone: &mut BTreeSet<String>,
        stop: &CancellationToken,
        unrecorded: &Semaphore,
    ) -> Result<HashSet<i64>, LedgerError> {
        let r = self
            .record_all(&mut rx, summary, gone, stop, unrecorded)
            .await;
        if r.is_err() {
            // Nothing more is sent: senders waiting for a permit give up.
            unrecorded.close();
        }
        r
    }

    async fn record_all(
        &self,
        rx: &mut UnboundedReceiver<Sent>,
        summary: &mut DispatchSummary,
        gone: &mut BTreeSet<String>,
        stop: &CancellationToken,
        unrecorded: &Semaphore,
    ) -> Result<HashSet<i64>, LedgerError> {
        let mut group: Vec<Sent> = Vec::with_capacity(GROUP_MAX);
        let mut seen: HashSet<i64> = HashSet::new();
        let mut deadline = tokio::time::Instant::now();
        loop {
            let next = if group.is_empty() {
                rx.recv().await
            } else {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(next) => next,
                    Err(_) => {
                        self.flush(&mut group, summary, gone, stop, unrecorded)
                            .await?;
                        continue;
                    }
                }
            };
            match next {
                Some(sent) => {
                    // One outcome per delivery and batch (a panicked group may report some twice).
                    if !seen.insert(sent.outcome.delivery_id) {
                        continue;
                    }
                    if group.is_empty() {
                        deadline = tokio::time::Instant::now() + GROUP_WINDOW;
                    }
                    group.push(sent);
                    // Half a group: the next half is sent while this one commits, within the
                    // permits (a full group's worth) instead of waiting for the commit.
                    if group.len() >= GROUP_MAX / 2 {
                        self.flush(&mut group, summary, gone, stop, unrecorded)
                            .await?;
                    }
                }
                None => {
                    self.flush(&mut group, summary, gone, stop, unrecorded)
                        .await?;
                    return Ok(seen);
                }
            }
        }
    }

    /// Commits one group of outcomes, counts them and acts on 410s.
    async fn flush(
        &self,
        group: &mut Vec<Sent>,
        summary: &mut DispatchSummary,
        gone: &mut BTreeSet<String>,
        stop: &CancellationToken,
        unrecorded: &Semaphore,
    ) -> Result<(), LedgerError> {
        if group.is_empty() {
            return Ok(());
        }
        let outcomes: Vec<&AttemptOutcome> = group.iter().map(|s| &s.outcome).collect();
        if let Err(e) = self.ledger.record_attempts(&outcomes).await {
            stop.cancel();
            return Err(e);
        }
        self.progressed();
        unrecorded.add_permits(group.iter().filter(|s| s.permit).count());
        let mut newly_gone = BTreeSet::new();
        for s in group.drain(..) {
            let o = &s.outcome;
            summary.attempted += 1;
            let label = match &o.result {
                AttemptResult::Delivered => {
                    summary.delivered += 1;
                    "delivered"
                }
                AttemptResult::Retry(at) => {
                    summary.retrying += 1;
                    warn!(delivery_id = o.delivery_id, subscriber = %s.subscriber, status = o.status,
                          next_attempt_at = %at, error = o.error.as_deref().unwrap_or(""),
                          "delivery.failed");
                    "failed"
                }
                AttemptResult::Dead => {
                    summary.dead += 1;
                    error!(delivery_id = o.delivery_id, subscriber = %s.subscriber,
                           status = o.status, error = o.error.as_deref().unwrap_or(""),
                           "delivery.dead");
                    "dead"
                }
                AttemptResult::Disabled => {
                    summary.disabled += 1;
                    if gone.insert(s.subscriber.clone()) {
                        newly_gone.insert(s.subscriber.clone());
                    }
                    "disabled"
                }
            };
            metrics::counter!("singapay_sync_delivery_attempts_total",
                "channel" => s.channel.as_str(), "outcome" => label)
            .increment(1);
            metrics::histogram!("singapay_sync_delivery_duration_seconds",
                "channel" => s.channel.as_str())
            .record(o.duration_ms as f64 / 1000.0);
        }
        for name in newly_gone {
            let now = self.clock.now();
            let parked = self
                .ledger
                .disable_subscriber(&name, "receiver answered 410 Gone", now)
                .await?;
            error!(subscriber = %name, parked, "delivery.subscriber_disabled");
            self.tell_finance_disabled(&name, parked).await;
        }
        Ok(())
    }

    /// E-mails every recipient group that a webhook subscriber was disabled (410 Gone), if
    /// e-mail is configured. Best effort: a failure is logged (the disable itself is recorded).
    async fn tell_finance_disabled(&self, name: &str, parked: u64) {
        let Some(settings) = &self.email else {
            return;
        };
        let to: Vec<Mailbox> = settings
            .groups
            .values()
            .flat_map(|g| g.to.iter().cloned())
            .collect();
        if to.is_empty() {
            return;
        }
        let text = format!(
            "The webhook subscriber \"{name}\" answered 410 Gone, so singapay-sync stopped sending to it.\n\
             {parked} pending deliveries are parked as \"disabled\"; new events for it are parked too.\n\
             Nothing is lost: re-enable it with `singapay-sync subscribers enable {name}` or\n\
             POST /subscribers/{name}/enable, and every parked delivery is sent.\n"
        );
        let mut b = lettre::Message::builder()
            .from(settings.from.clone())
            .subject(format!(
                "SingaPay: webhook subscriber {name} disabled (410 Gone)"
            ));
        for t in to {
            b = b.to(t);
        }
        match b.body(text) {
            Ok(msg) => {
                if let Err(e) = settings.mailer.send(msg).await {
                    warn!(subscriber = %name, error = %e.message, "delivery.disable_notice_failed");
                }
            }
            Err(e) => warn!(subscriber = %name, error = %e, "delivery.disable_notice_failed"),
        }
    }
}

//! The outbox dispatcher: claims due deliveries in batches, sends them (webhooks concurrently with
//! one link's events in order per subscriber, e-mail as one digest per pass per group), and
//! records every attempt and its outcome in one ledger transaction per batch.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lettre::message::Mailbox;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::event::Event;
use crate::ledger::{AttemptOutcome, AttemptResult, DueDelivery, Ledger, LedgerError};
use crate::time::Clock;
use crate::types::Channel;

use super::email::{Mailer, build_message, render_digest};
use super::retry::{FailureKind, RetrySchedule};
use super::webhook::send;
use crate::standard_webhooks::WebhookSecret;

/// A configured webhook subscriber.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    /// Name (`[[webhooks]].name`).
    pub name: String,
    /// Callback URL.
    pub url: String,
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
    /// Notified after a sync commits deliveries, so they go out at once.
    pub wake: Arc<Notify>,
}

/// The ordering unit: one subscriber's deliveries of one link.
fn link_key(d: &DueDelivery) -> (String, String, i64) {
    (d.subscriber.clone(), d.account_id.clone(), d.link_id)
}

enum Group {
    Webhook(Vec<DueDelivery>),
    Email(Vec<DueDelivery>),
}

impl Dispatcher {
    /// A dispatcher. `timeout` bounds each webhook request; `concurrency` bounds requests in
    /// flight.
    ///
    /// Errors: the HTTP client cannot be built.
    #[allow(clippy::too_many_arguments)]
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
            wake: Arc::new(Notify::new()),
        })
    }

    fn outcome_for(
        &self,
        d: &DueDelivery,
        at: chrono::DateTime<chrono::Utc>,
        duration: Duration,
        status: Option<i64>,
        failure: Option<(FailureKind, String)>,
        gone: bool,
    ) -> AttemptOutcome {
        let (result, error) = match failure {
            None => (AttemptResult::Delivered, None),
            Some((_, msg)) if gone => (AttemptResult::Disabled, Some(msg)),
            Some((kind, msg)) => {
                let made = usize::try_from(d.attempts).unwrap_or(0) + 1;
                match self.schedule.next_delay(made, kind) {
                    Some(delay) => (
                        AttemptResult::Retry(
                            at + chrono::Duration::from_std(delay)
                                .unwrap_or_else(|_| chrono::Duration::hours(1)),
                        ),
                        Some(msg),
                    ),
                    None => (AttemptResult::Dead, Some(msg)),
                }
            }
        };
        AttemptOutcome {
            delivery_id: d.id,
            attempted_at: at,
            duration_ms: duration.as_millis() as i64,
            status,
            error,
            result,
        }
    }

    /// Sends one (subscriber, link) group in sequence order; returns the outcomes and the
    /// subscriber's name if it answered 410 Gone.
    async fn run_webhook_group(
        &self,
        group: Vec<DueDelivery>,
    ) -> (Vec<AttemptOutcome>, Option<String>) {
        let mut out = Vec::with_capacity(group.len());
        let mut gone = None;
        for d in group {
            let at = self.clock.now();
            let Some(target) = self.webhooks.get(&d.subscriber) else {
                out.push(AttemptOutcome {
                    delivery_id: d.id,
                    attempted_at: at,
                    duration_ms: 0,
                    status: None,
                    error: Some(format!(
                        "webhook {:?} is no longer configured",
                        d.subscriber
                    )),
                    result: AttemptResult::Dead,
                });
                continue;
            };
            // `webhook-timestamp` is the real send time: receivers check it against their own
            // clock (replay window), whatever clock schedules the retries.
            let r = send(
                &self.http,
                &target.url,
                &target.secret,
                &d.event_id,
                chrono::Utc::now().timestamp(),
                &d.envelope,
            )
            .await;
            let failed = r.failure.is_some();
            if r.gone {
                gone = Some(d.subscriber.clone());
            }
            let o = self.outcome_for(
                &d,
                at,
                r.duration,
                r.status.map(i64::from),
                r.failure,
                r.gone,
            );
            out.push(o);
            // Keep this link's later events behind the failed one (sequence order).
            if failed {
                break;
            }
        }
        (out, gone)
    }

    async fn run_email_group(&self, group: Vec<DueDelivery>) -> Vec<AttemptOutcome> {
        let at = self.clock.now();
        let started = std::time::Instant::now();
        let fail_all = |msg: String, code: Option<i64>| -> Vec<AttemptOutcome> {
            group
                .iter()
                .map(|d| {
                    self.outcome_for(
                        d,
                        at,
                        started.elapsed(),
                        code,
                        Some((FailureKind::Other(None), msg.clone())),
                        false,
                    )
                })
                .collect()
        };
        let Some(settings) = &self.email else {
            return fail_all("e-mail is not configured".into(), None);
        };
        let Some(first) = group.first() else {
            return Vec::new();
        };
        let Some(g) = settings.groups.get(&first.subscriber) else {
            return fail_all(
                format!(
                    "recipient group {:?} is no longer configured",
                    first.subscriber
                ),
                None,
            );
        };
        let events: Result<Vec<Event>, _> = group
            .iter()
            .map(|d| serde_json::from_str::<Event>(&d.envelope))
            .collect();
        let events = match events {
            Ok(e) => e,
            Err(e) => return fail_all(format!("an event envelope is unreadable: {e}"), None),
        };
        let digest = match render_digest(&events) {
            Ok(d) => d,
            Err(e) => return fail_all(e, None),
        };
        let msg = match build_message(&settings.from, &g.to, &digest) {
            Ok(m) => m,
            Err(e) => return fail_all(e, None),
        };
        match settings.mailer.send(msg).await {
            Ok(code) => group
                .iter()
                .map(|d| {
                    self.outcome_for(d, at, started.elapsed(), code.map(i64::from), None, false)
                })
                .collect(),
            Err(e) => fail_all(e.message, e.code.map(i64::from)),
        }
    }

    /// Bounds requests in flight to any one subscriber (default: the total bound), so that a
    /// slow receiver cannot take every slot from the others.
    pub fn with_per_subscriber_limit(mut self, n: usize) -> Self {
        self.per_subscriber = n.clamp(1, self.concurrency);
        self
    }

    /// Sends everything due now and records the attempts. Returns what happened.
    ///
    /// Errors: the ledger failed (nothing is lost: unrecorded attempts are simply tried again,
    /// with the same `webhook-id`).
    pub async fn dispatch_due(&self) -> Result<DispatchSummary, LedgerError> {
        let mut summary = DispatchSummary::default();
        // Batches are claimed in delivery-id order past a cursor, so the next batch can be sent
        // while the previous one's outcomes are being recorded. A (subscriber, link) sent in one
        // batch is left out of the next (its earlier event's outcome is not recorded yet); it is
        // picked up by the next call, which starts from the beginning again.
        let mut cursor = 0i64;
        let mut last_keys: HashSet<(String, String, i64)> = HashSet::new();
        let mut gone_all: BTreeSet<String> = BTreeSet::new();
        let mut unrecorded: Vec<AttemptOutcome> = Vec::new();
        let mut unrecorded_gone: BTreeSet<String> = BTreeSet::new();
        for _ in 0..1000 {
            let now = self.clock.now();
            let due = self.ledger.due_deliveries(now, cursor, self.batch).await?;
            let claimed = due.len();
            let Some(last) = due.last() else {
                break;
            };
            cursor = last.id;
            let due: Vec<DueDelivery> = due
                .into_iter()
                .filter(|d| {
                    let gone = gone_all.contains(&d.subscriber);
                    let behind = d.channel == Channel::Webhook && last_keys.contains(&link_key(d));
                    !(gone || behind)
                })
                .collect();
            last_keys = due
                .iter()
                .filter(|d| d.channel == Channel::Webhook)
                .map(link_key)
                .collect();
            // Never announce an event that an OS crash could still roll back.
            self.ledger.make_durable().await?;
            let previous = std::mem::take(&mut unrecorded);
            let previous_gone = std::mem::take(&mut unrecorded_gone);
            let (sent, recorded) = tokio::join!(
                self.send_batch(due),
                self.record(&previous, &previous_gone, &mut summary, now)
            );
            recorded?;
            let (outcomes, gone) = sent;
            gone_all.extend(gone.iter().cloned());
            unrecorded = outcomes;
            unrecorded_gone = gone;
            if claimed < self.batch as usize {
                break;
            }
        }
        let now = self.clock.now();
        self.record(&unrecorded, &unrecorded_gone, &mut summary, now)
            .await?;
        Ok(summary)
    }

    /// Sends one claimed batch: webhooks grouped per (subscriber, link) in sequence order, e-mail
    /// as one digest per (group, pass); bounded in total and per subscriber. Returns the outcomes
    /// and the subscribers that answered 410 Gone.
    async fn send_batch(&self, due: Vec<DueDelivery>) -> (Vec<AttemptOutcome>, BTreeSet<String>) {
        let n = due.len();
        let mut hooks: BTreeMap<(String, String, i64), Vec<DueDelivery>> = BTreeMap::new();
        let mut mails: BTreeMap<(String, Option<i64>), Vec<DueDelivery>> = BTreeMap::new();
        for d in due {
            if d.channel == Channel::Email {
                mails
                    .entry((d.subscriber.clone(), d.run_id))
                    .or_default()
                    .push(d);
            } else {
                hooks.entry(link_key(&d)).or_default().push(d);
            }
        }
        let limits: HashMap<String, Arc<tokio::sync::Semaphore>> = hooks
            .keys()
            .map(|(sub, ..)| {
                (
                    sub.clone(),
                    Arc::new(tokio::sync::Semaphore::new(self.per_subscriber)),
                )
            })
            .collect();
        let groups = hooks
            .into_values()
            .map(Group::Webhook)
            .chain(mails.into_values().map(Group::Email));
        let results: Vec<(Vec<AttemptOutcome>, Option<String>)> =
            futures_util::stream::iter(groups)
                .map(|g| {
                    let limits = &limits;
                    async move {
                        match g {
                            Group::Webhook(v) => {
                                let sem = v.first().and_then(|d| limits.get(&d.subscriber));
                                let _permit = match sem {
                                    Some(s) => s.acquire().await.ok(),
                                    None => None,
                                };
                                self.run_webhook_group(v).await
                            }
                            Group::Email(v) => (self.run_email_group(v).await, None),
                        }
                    }
                })
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
        let mut gone = BTreeSet::new();
        let mut outcomes = Vec::with_capacity(n);
        for (o, g) in results {
            outcomes.extend(o);
            gone.extend(g);
        }
        (outcomes, gone)
    }

    /// Records a sent batch's attempts (one transaction), counts them, and disables the
    /// subscribers that answered 410 Gone.
    async fn record(
        &self,
        outcomes: &[AttemptOutcome],
        gone: &BTreeSet<String>,
        summary: &mut DispatchSummary,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), LedgerError> {
        self.ledger.record_attempts(outcomes).await?;
        for o in outcomes {
            summary.attempted += 1;
            let label = match &o.result {
                AttemptResult::Delivered => {
                    summary.delivered += 1;
                    "delivered"
                }
                AttemptResult::Retry(at) => {
                    summary.retrying += 1;
                    warn!(delivery_id = o.delivery_id, status = o.status, next_attempt_at = %at,
                          error = o.error.as_deref().unwrap_or(""), "delivery.failed");
                    "failed"
                }
                AttemptResult::Dead => {
                    summary.dead += 1;
                    error!(
                        delivery_id = o.delivery_id,
                        status = o.status,
                        error = o.error.as_deref().unwrap_or(""),
                        "delivery.dead"
                    );
                    "dead"
                }
                AttemptResult::Disabled => {
                    summary.disabled += 1;
                    "disabled"
                }
            };
            metrics::counter!("singapay_sync_delivery_attempts_total", "outcome" => label)
                .increment(1);
        }
        for name in gone {
            let parked = self
                .ledger
                .disable_subscriber(name, "receiver answered 410 Gone", now)
                .await?;
            error!(subscriber = %name, parked, "delivery.subscriber_disabled");
            self.tell_finance_disabled(name, parked).await;
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

    /// The dispatcher loop: dispatch what is due, then sleep until the next due time, a wake-up
    /// (a sync committed deliveries) or at most `idle`. Stops at `cancel` after the batch in
    /// flight is recorded.
    pub(crate) async fn run(&self, cancel: CancellationToken, idle: Duration) {
        info!("dispatcher.started");
        loop {
            if cancel.is_cancelled() {
                break;
            }
            let failed = match self.dispatch_due().await {
                Ok(_) => false,
                Err(e) => {
                    error!(error = %e, "dispatcher.ledger_error");
                    true
                }
            };
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
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        info!("dispatcher.stopped");
    }
}

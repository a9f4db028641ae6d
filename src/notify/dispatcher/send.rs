//! Sending a claimed batch: webhooks grouped per (subscriber, link) in sequence order, e-mail as
//! one digest per (recipient group, pass), bounded in total and per subscriber. Each outcome goes
//! to the recorder the moment it is known. A webhook subscriber that times out twice in a row (in
//! this batch, or counting an earlier batch's timeout) gets nothing more in the batch: what it has
//! left is put off, so that the batch (and the next one, which waits for it) is not held for a
//! `delivery.timeout` per delivery (`give_up`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::Dispatcher;
use super::give_up::{Ended, Lane};
use super::record::Sent;
use crate::event::Event;
use crate::ledger::{AttemptOutcome, AttemptResult, DueDelivery};
use crate::notify::email::{build_message, render_digest};
use crate::notify::retry::{FailureKind, SLOW_DOWN_FLOOR};
use crate::notify::webhook::send;
use crate::types::Channel;

/// The ordering unit: one subscriber's deliveries of one link, or of one payment.
fn link_key(d: &DueDelivery) -> (String, String, i64, Option<i64>) {
    (
        d.subscriber.clone(),
        d.account_id.clone(),
        d.link_id,
        d.payment_id,
    )
}

enum Group {
    Webhook(Vec<DueDelivery>),
    Email(Vec<DueDelivery>),
}

/// One subscriber's part of a batch ([`lanes`]).
struct Queue {
    channel: Channel,
    subscriber: String,
    /// Oldest first.
    groups: Vec<Group>,
}

impl Group {
    fn deliveries(&self) -> &[DueDelivery] {
        match self {
            Group::Webhook(v) | Group::Email(v) => v,
        }
    }
}

impl Dispatcher {
    /// What becomes of a delivery whose attempt number `attempts + 1`, started at `at`, failed
    /// this way: retried on the schedule, or dead when it is exhausted.
    fn after_failure(
        &self,
        attempts: i64,
        at: chrono::DateTime<chrono::Utc>,
        kind: FailureKind,
    ) -> AttemptResult {
        let made = usize::try_from(attempts).unwrap_or(0) + 1;
        match self.schedule.next_delay(made, kind) {
            Some(delay) => AttemptResult::Retry(
                chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| at.checked_add_signed(d))
                    .unwrap_or(at + chrono::Duration::hours(1)),
            ),
            None => AttemptResult::Dead,
        }
    }

    /// The outcome of an attempt of `d` started at `at`: delivered, disabled (410 Gone), or
    /// [`Self::after_failure`].
    pub(super) fn outcome_for(
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
            Some((kind, msg)) => (self.after_failure(d.attempts, at, kind), Some(msg)),
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

    /// A failed attempt of delivery `id` (`attempts` made before) that never reached the peer.
    fn failure_outcome(
        &self,
        id: i64,
        attempts: i64,
        at: chrono::DateTime<chrono::Utc>,
        msg: String,
    ) -> AttemptOutcome {
        AttemptOutcome {
            delivery_id: id,
            attempted_at: at,
            duration_ms: 0,
            status: None,
            error: Some(msg),
            result: self.after_failure(attempts, at, FailureKind::Other(None)),
        }
    }

    /// Sends one (subscriber, link) group in sequence order, each outcome to `out` as it comes;
    /// stops after a failure (later events wait behind it) or when `stop` fires. Once the lane
    /// gave up on the subscriber (`Lane`: it timed out), the rest of the group is put off, unsent.
    async fn run_webhook_group(
        &self,
        group: Vec<DueDelivery>,
        out: &UnboundedSender<Sent>,
        stop: &CancellationToken,
        unrecorded: &Semaphore,
        lane: &Lane,
    ) {
        let mut group = group.into_iter();
        while let Some(mut d) = group.next() {
            if stop.is_cancelled() {
                return;
            }
            if lane.puts_off(std::iter::once(d.id).chain(group.by_ref().map(|d| d.id))) {
                return;
            }
            let at = self.clock.now();
            let Some(target) = self.webhooks.get(&d.subscriber) else {
                let o = AttemptOutcome {
                    delivery_id: d.id,
                    attempted_at: at,
                    duration_ms: 0,
                    status: None,
                    error: Some(format!(
                        "webhook {:?} is no longer configured",
                        d.subscriber
                    )),
                    result: AttemptResult::Dead,
                };
                let _ = out.send(Sent::new(o, &d));
                continue;
            };
            // At most one group of POSTs made and not yet committed (the recorder returns them).
            match unrecorded.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return, // the recorder failed: nothing more is sent
            }
            // `webhook-timestamp` is the real send time: receivers check it against their own
            // clock (replay window), whatever clock schedules the retries.
            let r = send(
                &self.http,
                &target.url,
                &target.secret,
                &d.event_id,
                chrono::Utc::now().timestamp(),
                std::mem::take(&mut d.envelope),
            )
            .await;
            let failed = r.failure.is_some();
            let timed_out = matches!(r.failure, Some((FailureKind::Timeout, _)));
            let o = self.outcome_for(
                &d,
                at,
                r.duration,
                r.status.map(i64::from),
                r.failure,
                r.gone,
            );
            lane.ended(
                o.status.is_some(),
                timed_out.then(|| match o.result {
                    AttemptResult::Retry(until) => until,
                    _ => at + SLOW_DOWN_FLOOR,
                }),
            );
            let _ = out.send(Sent::posted(o, &d));
            if failed {
                return;
            }
        }
    }

    /// One digest for the group's deliveries (one recipient group, one pass): every delivery
    /// gets the mail's outcome. A digest that cannot be rendered fails them all (retried).
    async fn run_email_group(&self, group: Vec<DueDelivery>, out: &UnboundedSender<Sent>) {
        let at = self.clock.now();
        let started = std::time::Instant::now();
        let send_all = |result: Result<Option<i64>, (String, Option<i64>)>| {
            for d in &group {
                let o = match &result {
                    Ok(code) => self.outcome_for(d, at, started.elapsed(), *code, None, false),
                    Err((msg, code)) => self.outcome_for(
                        d,
                        at,
                        started.elapsed(),
                        *code,
                        Some((FailureKind::Other(None), msg.clone())),
                        false,
                    ),
                };
                let _ = out.send(Sent::new(o, d));
            }
        };
        send_all(self.mail_digest(&group).await);
    }

    /// Renders and sends one digest: the SMTP reply code, or why it failed.
    async fn mail_digest(
        &self,
        group: &[DueDelivery],
    ) -> Result<Option<i64>, (String, Option<i64>)> {
        let fail = |msg: String| (msg, None);
        let settings = self
            .email
            .as_ref()
            .ok_or_else(|| fail("e-mail is not configured".into()))?;
        let first = group.first().ok_or_else(|| fail("empty group".into()))?;
        let g = settings.groups.get(&first.subscriber).ok_or_else(|| {
            fail(format!(
                "recipient group {:?} is no longer configured",
                first.subscriber
            ))
        })?;
        let events = group
            .iter()
            .map(|d| serde_json::from_str::<Event>(&d.envelope))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(format!("an event envelope is unreadable: {e}")))?;
        let digest = render_digest(&events).map_err(fail)?;
        let msg = build_message(&settings.from, &g.to, &digest).map_err(fail)?;
        settings
            .mailer
            .send(msg)
            .await
            .map(|code| code.map(i64::from))
            .map_err(|e| (e.message, e.code.map(i64::from)))
    }

    /// Sends one claimed batch, bounded in total and per subscriber; outcomes go to `out`; returns
    /// how many deliveries were put off (below). A group that panics (a defect) fails its
    /// deliveries (retried) and leaves the others alone.
    ///
    /// Each subscriber is a lane of its own: its groups start oldest first (by their first
    /// delivery's id, the claim's order), at most `per_subscriber` of them at once for a webhook,
    /// and each group takes one of the batch's `concurrency` slots only once its lane let it
    /// start. Slots are handed out in the order they were asked for (tokio's fair semaphore), so
    /// a slow subscriber holds at most its own share of the slots, and groups waiting for that
    /// share never sit in the others'. The batch ends when its slowest lane does, but a webhook
    /// lane whose subscriber timed out twice in a row (`give_up::TIMEOUTS_IN_A_ROW`; a timeout
    /// of an earlier batch with no answer since counts) sends nothing more: its groups not yet
    /// sent are put off until the timed-out attempts' retry time
    /// ([`Ledger::defer_deliveries`]), with every other pending delivery to it due before then,
    /// and the dispatcher remembers the subscriber as given up on until then, so later batches
    /// put off what is new for it without sending. A subscriber that hangs thus holds at most
    /// two batches for one `delivery.timeout` each per retry time, not one per `per_subscriber`
    /// of its deliveries in every batch.
    ///
    /// [`Ledger::defer_deliveries`]: crate::ledger::Ledger
    pub(super) async fn send_batch(
        &self,
        due: Vec<DueDelivery>,
        out: UnboundedSender<Sent>,
        stop: &CancellationToken,
        unrecorded: &Semaphore,
    ) -> usize {
        let slots = Semaphore::new(self.concurrency);
        let lanes = lanes(due)
            .into_iter()
            .map(|q| self.run_lane(q, &slots, &out, stop, unrecorded));
        futures_util::future::join_all(lanes)
            .await
            .into_iter()
            .sum()
    }

    /// One subscriber's lane of [`Self::send_batch`]: its groups in order, at most
    /// `per_subscriber` at once for a webhook (e-mail: the batch's `concurrency`), each sending
    /// once it holds one of the batch's `slots`; once the lane gave up on its webhook subscriber,
    /// the groups not yet sent are put off without taking a slot (an e-mail lane never gives up).
    async fn run_lane(
        &self,
        queue: Queue,
        slots: &Semaphore,
        out: &UnboundedSender<Sent>,
        stop: &CancellationToken,
        unrecorded: &Semaphore,
    ) -> usize {
        let Queue {
            channel,
            subscriber,
            groups,
        } = queue;
        let (limit, lane) = match channel {
            Channel::Webhook => (self.per_subscriber, Lane::after(self.silence(&subscriber))),
            Channel::Email => (self.concurrency, Lane::default()),
        };
        let lane_ref = &lane;
        futures_util::stream::iter(groups)
            .for_each_concurrent(limit, |g| async move {
                if lane_ref.puts_off(g.deliveries().iter().map(|d| d.id)) {
                    return;
                }
                let Ok(_slot) = slots.acquire().await else {
                    return;
                };
                if stop.is_cancelled() {
                    return;
                }
                self.run_group(g, out, stop, unrecorded, lane_ref).await;
            })
            .await;
        match lane.finish() {
            Ended::GivenUp(g) => self.put_off(&subscriber, g).await,
            Ended::Going(silence) => {
                if channel == Channel::Webhook {
                    self.carry(&subscriber, silence);
                }
                0
            }
        }
    }

    /// Runs one group; a panic (a defect) fails the group's deliveries (retried) and leaves the
    /// others alone.
    async fn run_group(
        &self,
        g: Group,
        out: &UnboundedSender<Sent>,
        stop: &CancellationToken,
        unrecorded: &Semaphore,
        lane: &Lane,
    ) {
        // What a panic fails: (id, attempts) of each delivery, and their subscriber.
        let doomed: Vec<(i64, i64)> = g.deliveries().iter().map(|d| (d.id, d.attempts)).collect();
        let (subscriber, channel) = g
            .deliveries()
            .first()
            .map(|d| (d.subscriber.clone(), d.channel))
            .unwrap_or((String::new(), Channel::Webhook));
        let run = async {
            match g {
                Group::Webhook(v) => self.run_webhook_group(v, out, stop, unrecorded, lane).await,
                Group::Email(v) => self.run_email_group(v, out).await,
            }
        };
        if let Err(panic) = std::panic::AssertUnwindSafe(run).catch_unwind().await {
            let msg = format!(
                "sending panicked: {}",
                crate::sync::pass::panic_message(&*panic)
            );
            tracing::error!(error = %msg, "delivery.panicked");
            let at = self.clock.now();
            for &(id, attempts) in &doomed {
                let o = self.failure_outcome(id, attempts, at, msg.clone());
                let _ = out.send(Sent {
                    outcome: o,
                    subscriber: subscriber.clone(),
                    channel,
                    // Whether the group had taken a permit for it is not known:
                    // give one back (a looser bound after a defect, never a hang).
                    permit: true,
                });
            }
        }
    }
}

/// A batch in lanes, one per (channel, subscriber): webhook groups per [`link_key`] (in sequence
/// order, the claim's), e-mail groups per (recipient group, pass); each lane's groups oldest
/// first, by their first delivery's id.
fn lanes(due: Vec<DueDelivery>) -> Vec<Queue> {
    let mut hooks: HashMap<(String, String, i64, Option<i64>), Vec<DueDelivery>> = HashMap::new();
    let mut mails: HashMap<(String, Option<i64>), Vec<DueDelivery>> = HashMap::new();
    for d in due {
        match d.channel {
            Channel::Email => mails
                .entry((d.subscriber.clone(), d.run_id))
                .or_default()
                .push(d),
            Channel::Webhook => hooks.entry(link_key(&d)).or_default().push(d),
        }
    }
    let mut lanes: BTreeMap<(Channel, String), Vec<Group>> = BTreeMap::new();
    let groups = hooks
        .into_values()
        .map(Group::Webhook)
        .chain(mails.into_values().map(Group::Email));
    for g in groups {
        if let Some(d) = g.deliveries().first() {
            lanes
                .entry((d.channel, d.subscriber.clone()))
                .or_default()
                .push(g);
        }
    }
    lanes
        .into_iter()
        .map(|((channel, subscriber), mut groups)| {
            groups.sort_by_key(|g| g.deliveries().first().map_or(i64::MAX, |d| d.id));
            Queue {
                channel,
                subscriber,
                groups,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(id: i64, subscriber: &str, channel: Channel, link_id: i64, run_id: i64) -> DueDelivery {
        DueDelivery {
            id,
            event_id: format!("evt_{id}"),
            subscriber: subscriber.into(),
            channel,
            attempts: 0,
            envelope: String::new(),
            run_id: Some(run_id),
            link_id,
            payment_id: None,
            account_id: "acc".into(),
        }
    }

    /// (channel, subscriber, each group's delivery ids) of every lane.
    fn shape(lanes: Vec<Queue>) -> Vec<(Channel, String, Vec<Vec<i64>>)> {
        lanes
            .into_iter()
            .map(
                |Queue {
                     channel,
                     subscriber,
                     groups,
                 }| {
                    assert!(
                        groups.iter().all(|g| g
                            .deliveries()
                            .iter()
                            .all(|d| d.subscriber == subscriber && d.channel == channel)),
                        "a lane holds its own subscriber's deliveries only"
                    );
                    let ids = groups
                        .iter()
                        .map(|g| g.deliveries().iter().map(|d| d.id).collect())
                        .collect();
                    (channel, subscriber, ids)
                },
            )
            .collect()
    }

    #[test]
    fn lanes_are_per_subscriber_with_each_links_group_in_order_and_the_oldest_group_first() {
        use Channel::{Email, Webhook};
        // Link 9's first delivery is older than link 1's: its group starts first in the lane.
        let batch = vec![
            due(1, "erp", Webhook, 9, 1),
            due(2, "a-slow", Webhook, 9, 1),
            due(3, "erp", Webhook, 1, 1),
            due(4, "erp", Webhook, 9, 2),
            due(5, "finance", Email, 9, 1),
            due(6, "finance", Email, 1, 1),
            due(7, "finance", Email, 1, 2),
            due(8, "erp", Webhook, 1, 2),
        ];
        assert_eq!(
            shape(lanes(batch)),
            vec![
                (Webhook, "a-slow".into(), vec![vec![2]]),
                (Webhook, "erp".into(), vec![vec![1, 4], vec![3, 8]]),
                (Email, "finance".into(), vec![vec![5, 6], vec![7]]),
            ]
        );
        assert!(lanes(Vec::new()).is_empty());
    }
}

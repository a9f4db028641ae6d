//! Giving up on a webhook subscriber that hangs: a lane of a batch (`send::Dispatcher::send_batch`)
//! whose subscriber has timed out twice with no answer between (in this batch, or the first time
//! in an earlier one: the dispatcher carries the count from batch to batch) sends it nothing
//! more, and its deliveries are put off to the timed-out attempts' retry time, not counted as
//! attempts (`Ledger::defer_deliveries`); the dispatcher remembers the subscriber as given up on
//! until then, so later batches put off what they claimed for it without a POST.

use std::sync::Mutex;

use chrono::{DateTime, Utc};

use super::Dispatcher;

/// Timeouts in a row (no answer from the subscriber between them, in one batch or across
/// batches) after which a lane sends nothing more. One alone is not enough: a receiver that is
/// slow on one request in a hundred still gets the others. A hung one reaches two at once when
/// it is owed several deliveries, since its first `per_subscriber` requests were all in flight
/// together; owed one per batch, at the second batch.
pub(super) const TIMEOUTS_IN_A_ROW: u32 = 2;

/// What the dispatcher remembers of a webhook subscriber between batches (in memory only:
/// after a restart the first batch starts afresh).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Silence {
    /// It timed out `timeouts` times (fewer than [`TIMEOUTS_IN_A_ROW`]) since it last answered;
    /// `latest` is the latest retry time of those attempts.
    TimedOut {
        timeouts: u32,
        latest: DateTime<Utc>,
    },
    /// Given up on: its deliveries are put off until then.
    GivenUp(DateTime<Utc>),
}

/// How a lane ended ([`Lane::finish`]).
#[derive(Debug, PartialEq)]
pub(super) enum Ended {
    /// Not given up on: what to carry to the next batch (`None`: it answered last, or never
    /// timed out).
    Going(Option<Silence>),
    /// Given up on (in this batch or an earlier one).
    GivenUp(GivenUp),
}

/// One webhook subscriber's state while its lane of a batch is sent: once it timed out
/// [`TIMEOUTS_IN_A_ROW`] times with no answer between (counting from an earlier batch's
/// timeouts, [`Lane::after`]), or an earlier batch gave up on it and its retry time has not come,
/// its deliveries not yet sent are put off instead of each waiting out `delivery.timeout` in
/// turn.
#[derive(Default)]
pub(super) struct Lane {
    state: Mutex<LaneState>,
    /// The lane started given up on (an earlier batch gave up on its subscriber).
    known: bool,
}

#[derive(Default)]
struct LaneState {
    /// The subscriber's timeouts since it last answered (`None`: none), or given up on: what
    /// the lane carries to the next batch.
    silence: Option<Silence>,
    /// The deliveries put off so far.
    put_off: Vec<i64>,
}

impl Silence {
    /// Whether `this` is a give-up.
    fn given_up(this: Option<Self>) -> bool {
        matches!(this, Some(Silence::GivenUp(_)))
    }

    /// After one more timed-out attempt that retries at `retry`: given up on at the
    /// [`TIMEOUTS_IN_A_ROW`]th, until the latest retry time of them all (a timeout after giving
    /// up moves it later still).
    fn timed_out(this: Option<Self>, retry: DateTime<Utc>) -> Self {
        let (timeouts, latest) = match this {
            None => (1, retry),
            Some(Silence::TimedOut { timeouts, latest }) => (timeouts + 1, latest.max(retry)),
            Some(Silence::GivenUp(until)) => return Silence::GivenUp(until.max(retry)),
        };
        if timeouts >= TIMEOUTS_IN_A_ROW {
            Silence::GivenUp(latest)
        } else {
            Silence::TimedOut { timeouts, latest }
        }
    }
}

impl Lane {
    /// A lane for a subscriber as earlier batches left it: nothing known (a fresh lane), timed
    /// out fewer than [`TIMEOUTS_IN_A_ROW`] times since its last answer (the count goes on from
    /// there), or given up on until a time not yet come (everything of it is put off to then,
    /// nothing sent).
    pub(super) fn after(silence: Option<Silence>) -> Self {
        Self {
            state: Mutex::new(LaneState {
                silence,
                put_off: Vec::new(),
            }),
            known: Silence::given_up(silence),
        }
    }

    /// Notes how a POST ended: `answered` (any status), or `timed_out`, with the attempt's retry
    /// time. An answer clears the count, unless the lane already gave up.
    pub(super) fn ended(&self, answered: bool, timed_out: Option<DateTime<Utc>>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if answered && !Silence::given_up(s.silence) {
            s.silence = None;
        }
        if let Some(retry) = timed_out {
            s.silence = Some(Silence::timed_out(s.silence, retry));
        }
    }

    /// Whether the lane gave up on its subscriber; if so, `ids` are put off (not sent).
    pub(super) fn puts_off(&self, ids: impl IntoIterator<Item = i64>) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if !Silence::given_up(s.silence) {
            return false;
        }
        s.put_off.extend(ids);
        true
    }

    /// How the lane ended: given up on (when the put-off deliveries are due, their ids, and
    /// whether this batch gave up, not an earlier one), or going on with what the next batch
    /// carries.
    pub(super) fn finish(self) -> Ended {
        let Ok(s) = self.state.into_inner() else {
            return Ended::Going(None);
        };
        match s.silence {
            Some(Silence::GivenUp(until)) => Ended::GivenUp(GivenUp {
                until,
                ids: s.put_off,
                now: !self.known,
            }),
            going => Ended::Going(going),
        }
    }
}

/// What a lane gave up ([`Lane::finish`]).
#[derive(Debug, PartialEq)]
pub(super) struct GivenUp {
    /// When the put-off deliveries are due.
    until: DateTime<Utc>,
    /// The batch's deliveries put off.
    ids: Vec<i64>,
    /// This batch gave up on the subscriber (else an earlier one had).
    now: bool,
}

impl Dispatcher {
    /// What earlier batches left of `subscriber` ([`Silence`]); a give-up whose retry time has
    /// come is forgotten (the subscriber is tried afresh).
    pub(super) fn silence(&self, subscriber: &str) -> Option<Silence> {
        let now = self.clock.now();
        let mut known = self.silent.lock().ok()?;
        known.retain(|_, s| !matches!(s, Silence::GivenUp(until) if *until <= now));
        known.get(subscriber).copied()
    }

    /// Carries what a lane leaves of `subscriber` to the next batch: its timeouts since its
    /// last answer, a give-up, or nothing once it answered.
    pub(super) fn carry(&self, subscriber: &str, silence: Option<Silence>) {
        let Ok(mut known) = self.silent.lock() else {
            return;
        };
        match silence {
            Some(s) => {
                known.insert(subscriber.to_owned(), s);
            }
            None => {
                known.remove(subscriber);
            }
        }
    }

    /// Records what a lane gave up on `subscriber`: its deliveries put off until the retry
    /// time (not counted as attempts), and, when this batch gave up, the subscriber as given up
    /// on until then, with every other pending delivery to it due before then put off too (so
    /// the next batches neither try it nor wait for it). Returns how many were put off. A ledger
    /// error is logged and counts none: the batch's release of its claims then makes the
    /// batch's due at once.
    pub(super) async fn put_off(&self, subscriber: &str, g: GivenUp) -> usize {
        if g.now {
            // At the ledger's precision (microseconds, truncated): the put-off deliveries come
            // due at that instant, and must not meet a lane still giving up on them then. (The
            // lane started without a give-up in force, so none is replaced.)
            let at = chrono::SubsecRound::trunc_subsecs(g.until, 6);
            self.carry(subscriber, Some(Silence::GivenUp(at)));
        }
        if g.ids.is_empty() && !g.now {
            return 0;
        }
        let why = "not sent: the subscriber timed out twice in a row on other deliveries; put \
                   off to their retry time (not counted as an attempt)";
        let everything = g.now.then_some(subscriber);
        match self
            .ledger
            .defer_deliveries(&g.ids, everything, g.until, why)
            .await
        {
            Ok(n) => {
                if g.now {
                    tracing::warn!(subscriber, put_off = n, until = %g.until,
                        "delivery.subscriber_timed_out: its deliveries wait until then");
                } else {
                    tracing::debug!(subscriber, put_off = n, until = %g.until,
                        "delivery.subscriber_given_up: put off without sending");
                }
                metrics::counter!("singapay_sync_deliveries_deferred_total").increment(n);
                usize::try_from(n).unwrap_or(usize::MAX)
            }
            Err(e) => {
                tracing::error!(subscriber, error = %e, "delivery.defer_failed");
                0
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_765_000_000 + s, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn a_lane_gives_up_after_two_timeouts_with_no_answer_between_until_the_latest_retry() {
        // A receiver slow on one request in a hundred: a timeout, answers, a timeout.
        let lane = Lane::default();
        lane.ended(false, Some(t(60)));
        assert!(!lane.puts_off([1]));
        lane.ended(true, None);
        lane.ended(false, Some(t(61)));
        assert!(!lane.puts_off([2]));
        let carried = Silence::TimedOut {
            timeouts: 1,
            latest: t(61),
        };
        assert_eq!(lane.finish(), Ended::Going(Some(carried)));
        // A hung one: two in a row; the later of their retry times decides, and a timeout after
        // that moves it later still.
        let lane = Lane::default();
        lane.ended(false, Some(t(62)));
        lane.ended(false, None); // no answer, no timeout (refused): the streak stands
        lane.ended(false, Some(t(61)));
        assert!(lane.puts_off([3, 4]));
        let state = lane.state.lock().expect("lane");
        assert_eq!(state.silence, Some(Silence::GivenUp(t(62))));
        drop(state);
        lane.ended(false, Some(t(65)));
        lane.ended(true, None); // an answer after giving up does not take it back
        assert!(lane.puts_off([5]));
        let given_up = GivenUp {
            until: t(65),
            ids: vec![3, 4, 5],
            now: true,
        };
        assert_eq!(lane.finish(), Ended::GivenUp(given_up));
        // Given up on with nothing of the batch left to put off (the rest of the subscriber's
        // queue still is).
        let lane = Lane::default();
        lane.ended(false, Some(t(60)));
        lane.ended(false, Some(t(60)));
        let given_up = GivenUp {
            until: t(60),
            ids: vec![],
            now: true,
        };
        assert_eq!(lane.finish(), Ended::GivenUp(given_up));
        // Given up on by an earlier batch: everything put off, nothing new to record.
        let lane = Lane::after(Some(Silence::GivenUp(t(70))));
        assert!(lane.puts_off([6]));
        let given_up = GivenUp {
            until: t(70),
            ids: vec![6],
            now: false,
        };
        assert_eq!(lane.finish(), Ended::GivenUp(given_up));
        // Answers only: nothing to carry.
        let lane = Lane::default();
        lane.ended(true, None);
        assert_eq!(lane.finish(), Ended::Going(None));
    }

    #[test]
    fn a_timeout_in_an_earlier_batch_counts_until_the_subscriber_answers() {
        let earlier = Silence::TimedOut {
            timeouts: 1,
            latest: t(60),
        };
        // Hung, owed one delivery per batch: the second batch's timeout is the second in a
        // row; the put-off deliveries wait for the later of the two retry times.
        let lane = Lane::after(Some(earlier));
        assert!(!lane.puts_off([1]));
        lane.ended(false, Some(t(90)));
        assert!(lane.puts_off([2]));
        let given_up = GivenUp {
            until: t(90),
            ids: vec![2],
            now: true,
        };
        assert_eq!(lane.finish(), Ended::GivenUp(given_up));
        // It answered in between: the count starts again.
        let lane = Lane::after(Some(earlier));
        lane.ended(true, None);
        lane.ended(false, Some(t(90)));
        assert!(!lane.puts_off([3]));
        let carried = Silence::TimedOut {
            timeouts: 1,
            latest: t(90),
        };
        assert_eq!(lane.finish(), Ended::Going(Some(carried)));
        // Nothing sent in the batch: the earlier timeout is carried on as it was.
        assert_eq!(
            Lane::after(Some(earlier)).finish(),
            Ended::Going(Some(earlier))
        );
    }
}

//! What is due: the due query's text (its conditions, shared with PostgreSQL's claim in
//! `claims`), a due delivery as the dispatcher gets it, and when the next one comes due.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::backend::{LedgerRow, on_pool, sql};
use super::{Ledger, LedgerError, LedgerResult, parse_opt_ts};
use crate::time::ledger_ts;
use crate::types::Channel;

/// A due delivery with what the dispatcher needs to send it.
#[derive(Debug, Clone)]
pub(crate) struct DueDelivery {
    /// Delivery id.
    pub id: i64,
    /// Event id (the `webhook-id`).
    pub event_id: String,
    /// Subscriber name.
    pub subscriber: String,
    /// Channel.
    pub channel: Channel,
    /// Attempts made so far.
    pub attempts: i64,
    /// Envelope JSON to send.
    pub envelope: String,
    /// Pass that produced the event (e-mail digests group by it).
    pub run_id: Option<i64>,
    /// Link id (the dispatcher keeps one link's deliveries in order).
    pub link_id: i64,
    /// The payment of a `payment.*` event.
    pub payment_id: Option<i64>,
    /// Account id.
    pub account_id: String,
}

/// [`due_own_conditions!`] but the time: a pending delivery `d` (of event `e`) not claimed, and
/// an e-mail's pass finished. Also [`NEXT_DUE_SQL`]'s.
macro_rules! unclaimed_and_ready {
    () => {
        "d.state = 'pending' AND d.claimed_at IS NULL \
         AND (d.channel <> 'email' OR e.run_id IS NULL \
              OR EXISTS (SELECT 1 FROM sync_run r WHERE r.id = e.run_id AND r.finished_at IS NOT NULL))"
    };
}
pub(super) use unclaimed_and_ready;

/// The conditions on a pending delivery `d` (of event `e`) itself to be due at `$1`: not
/// claimed, its attempt time reached, and an e-mail's pass finished. [`due_conditions!`] adds
/// the ordering condition.
macro_rules! due_own_conditions {
    () => {
        concat!(
            $crate::ledger::due::unclaimed_and_ready!(),
            " AND d.next_attempt_at <= $1"
        )
    };
}
pub(super) use due_own_conditions;

/// Whether delivery `d2` holds back the later events of its link (or payment) for its
/// subscriber at `$1`: pending, and retrying later or claimed by a batch in flight (this
/// instance's or another's).
macro_rules! holds_back {
    () => {
        "d2.state = 'pending' AND (d2.next_attempt_at > $1 OR d2.claimed_at IS NOT NULL)"
    };
}
pub(super) use holds_back;

/// When a pending delivery `d` (of event `e`) is due at `$1`: [`due_own_conditions!`], and no
/// earlier event of its link (or payment) for the same subscriber pending a retry or claimed by
/// a batch in flight. The text of [`Ledger::due_deliveries`] and of both backends' claims
/// (`Ledger::claim_due`). The earlier events' deliveries are found by the ordering key each
/// delivery carries (account, link, payment or -1, sequence: SQLite's migration 8, PostgreSQL's
/// 4) in the partial index of pending deliveries `delivery_held` (PostgreSQL's migration 5): only
/// the pending deliveries of that subscriber and key are read, however long the link's history
/// (reading its earlier events in `link_event` took 13 s per claim for a link with 10,000 of
/// them) or the backlog of retries (PostgreSQL's claim gathered every held delivery's key into
/// one JSON object per claim before it had the index: 431-604 ms with 100,000 retrying, against
/// 61-72 ms; docs/PERFORMANCE.md).
macro_rules! due_conditions {
    () => {
        concat!(
            $crate::ledger::due::due_own_conditions!(),
            " AND ",
            $crate::ledger::due::none_earlier_of_its_key!($crate::ledger::due::holds_back!())
        )
    };
}
pub(super) use due_conditions;

/// The ordering check on a delivery `d`: `NOT EXISTS` a delivery `d2` for the same subscriber
/// of an earlier event of `d`'s link (or payment), by the ordering key both carry (SQLite's
/// migration 8, PostgreSQL's 4), that meets the condition `$held` on `d2`. One probe of
/// `delivery_held`, on all five of its columns. [`due_conditions!`]'s with [`holds_back!`];
/// [`NEXT_DUE_SQL`]'s with any pending `d2`.
macro_rules! none_earlier_of_its_key {
    ($($held:tt)+) => {
        concat!(
            "NOT EXISTS (SELECT 1 FROM delivery d2 INDEXED BY delivery_held \
             WHERE d2.subscriber = d.subscriber AND ",
            $($held)+,
            " AND d2.account_id = d.account_id AND d2.link_id = d.link_id \
             AND IFNULL(d2.payment_id, -1) = IFNULL(d.payment_id, -1) AND d2.sequence < d.sequence)"
        )
    };
}
pub(super) use none_earlier_of_its_key;

/// The query of [`Ledger::due_deliveries`] (SQLite's text): `$1` now, `$2` the limit. Each row
/// is `id`, `envelope` and `meta`, the other eight values packed into one JSON array (see
/// [`due_of`]); `json_array` is `json_build_array` on PostgreSQL
/// ([`super::backend::to_postgres`]), whose `json` the `CAST` makes a text (on SQLite it is one
/// already).
pub(super) const DUE_SQL: &str = concat!(
    "SELECT d.id, e.envelope, CAST(json_array(d.event_id, d.subscriber, d.channel, d.attempts, \
     e.run_id, e.link_id, e.payment_id, e.account_id) AS TEXT) AS meta \
     FROM delivery d INDEXED BY delivery_pending \
     JOIN link_event e ON e.id = d.event_id WHERE ",
    due_conditions!(),
    " ORDER BY d.id LIMIT $2"
);

/// The query of [`Ledger::next_due_at`] (SQLite's text; PostgreSQL's the same through
/// [`super::backend::to_postgres`]): the earliest `next_attempt_at` (set, as `MIN` would skip
/// NULLs) among pending, unclaimed deliveries (an e-mail's pass finished) with no pending delivery
/// of an earlier event of their key for the same subscriber, due or not. The scan walks
/// `delivery_due` in time order and stops at the first delivery that passes; each check is one probe of `delivery_held` by the key the
/// delivery carries (SQLite's migration 8, PostgreSQL's 5), as [`due_conditions!`]'s. Through
/// `link_event` it read a link's whole history for every delivery held behind one retrying (6.6 s
/// a call on SQLite for 2,000 held on a link with 10,000 delivered events, now 1.5 ms), and
/// PostgreSQL compared every pair of one key's pending deliveries (206 ms for 2,000, now 19-22
/// ms; docs/PERFORMANCE.md). The dispatcher asks after every turn of its loop.
pub(super) const NEXT_DUE_SQL: &str = concat!(
    "SELECT d.next_attempt_at FROM delivery d JOIN link_event e ON e.id = d.event_id \
     WHERE d.next_attempt_at IS NOT NULL AND ",
    unclaimed_and_ready!(),
    " AND ",
    none_earlier_of_its_key!("d2.state = 'pending'"),
    " ORDER BY d.next_attempt_at LIMIT 1"
);

/// A due delivery from a row of [`DUE_SQL`] or of PostgreSQL's claim: `id`, `envelope`, and
/// `meta`, the JSON array `[event_id, subscriber, channel, attempts, run_id, link_id,
/// payment_id, account_id]`. Three values per row instead of ten: sqlx copies every value out of
/// SQLite on its own (`sqlite3_value_dup`, then a decode and two frees), which cost about as much
/// as the due query itself.
///
/// Errors: a column is missing, or `meta` is not that array (`Corrupt`).
pub(super) fn due_of(r: &impl LedgerRow) -> LedgerResult<DueDelivery> {
    type Meta = (
        String,
        String,
        String,
        i64,
        Option<i64>,
        i64,
        Option<i64>,
        String,
    );
    let meta: String = r.col("meta")?;
    let (event_id, subscriber, channel, attempts, run_id, link_id, payment_id, account_id): Meta =
        serde_json::from_str(&meta)
            .map_err(|e| LedgerError::Corrupt(format!("due delivery: {e}")))?;
    Ok(DueDelivery {
        id: r.col("id")?,
        event_id,
        subscriber,
        channel: channel
            .parse()
            .map_err(|e| LedgerError::Corrupt(format!("delivery.channel: {e}")))?,
        attempts,
        envelope: r.col("envelope")?,
        run_id,
        link_id,
        payment_id,
        account_id,
    })
}

impl Ledger {
    /// Pending deliveries due at `now` with an id above `after_id`, oldest first (delivery ids
    /// follow event commit order), at most `limit`. A delivery waits while
    /// an earlier event of the same link (or payment) for the same subscriber is pending a retry
    /// or claimed by a batch in flight (another dispatcher's, such as a CLI command's beside the
    /// daemon), so each subscriber receives a link's (a payment's) events in `sequence` order. E-mail deliveries wait for their
    /// pass to finish, so that each pass makes one digest per recipient group. The scan walks the
    /// partial index of pending deliveries in id order and stops at `limit` (without
    /// `INDEXED BY`, SQLite picks the `(state, next_attempt_at)` index and sorts every due row).
    pub(crate) async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> LedgerResult<Vec<DueDelivery>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(sql!(PG, DUE_SQL))
                .bind(ledger_ts(now))
                .bind(limit)
                .fetch_all(p)
                .await?;
            rows.iter().map(due_of).collect()
        })
    }

    /// When the dispatcher next has something it may send: the earliest `next_attempt_at` of a
    /// pending delivery that is not held back (behind an earlier event of its link for the same
    /// subscriber, or an e-mail whose pass is still running). `None` if nothing is pending.
    /// See [`NEXT_DUE_SQL`].
    pub async fn next_due_at(&self) -> LedgerResult<Option<DateTime<Utc>>> {
        on_pool!(self.pool, |p| {
            let r = sqlx::query(sql!(PG, NEXT_DUE_SQL))
                .fetch_optional(p)
                .await?;
            let Some(r) = r else {
                return Ok(None);
            };
            parse_opt_ts(r.try_get(0)?)
        })
    }
}

//! `delivery`, `delivery_attempt` and `subscriber_state`: the outbox and its log.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use crate::time::ledger_ts;
use crate::types::{Channel, DeliveryState, EventType};

use super::backend::{LedgerRow, Tx, on_pool, on_tx, sql};
use super::{Ledger, LedgerError, LedgerResult, parse_name, parse_opt_ts, parse_ts};

/// A delivery owed, enqueued with its event.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// Event delivered.
    pub event_id: String,
    /// Subscriber name (`[[webhooks]]` or `[[email.recipients]]`).
    pub subscriber: String,
    /// Channel.
    pub channel: Channel,
    /// First attempt time (normally the commit time).
    pub next_attempt_at: DateTime<Utc>,
}

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

/// How an attempt ended, and what becomes of the delivery.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AttemptResult {
    /// 2xx / SMTP accepted: done.
    Delivered,
    /// Failed; try again at this time.
    Retry(DateTime<Utc>),
    /// Failed and the schedule is exhausted.
    Dead,
    /// The subscriber answered 410 Gone: it and its pending deliveries are disabled.
    Disabled,
}

/// One attempt to record.
#[derive(Debug, Clone)]
pub(crate) struct AttemptOutcome {
    /// Delivery id.
    pub delivery_id: i64,
    /// Start of the attempt, UTC.
    pub attempted_at: DateTime<Utc>,
    /// How long it took, milliseconds.
    pub duration_ms: i64,
    /// HTTP status or SMTP reply code.
    pub status: Option<i64>,
    /// Error text (response body truncated), `None` on success.
    pub error: Option<String>,
    /// Outcome.
    pub result: AttemptResult,
}

/// A delivery as listed by `GET /deliveries`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryRow {
    /// Delivery id.
    pub id: i64,
    /// Event id.
    pub event_id: String,
    /// Event type.
    pub event_type: EventType,
    /// Subscriber name.
    pub subscriber: String,
    /// Channel.
    pub channel: Channel,
    /// State.
    pub state: DeliveryState,
    /// Attempts made.
    pub attempts: i64,
    /// Next attempt (pending only), UTC.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Last HTTP status or SMTP code.
    pub last_status: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
    /// When it was delivered, UTC.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Filters of [`Ledger::list_deliveries`] (`GET /deliveries`, `deliveries list`).
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    /// Only this state.
    pub state: Option<DeliveryState>,
    /// Only this subscriber.
    pub subscriber: Option<String>,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// At most this many.
    pub limit: i64,
}

/// One logged attempt.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeliveryAttemptRow {
    /// When, UTC.
    pub attempted_at: DateTime<Utc>,
    /// Duration, milliseconds.
    pub duration_ms: i64,
    /// HTTP status or SMTP code.
    pub status: Option<i64>,
    /// Error text.
    pub error: Option<String>,
}

/// The conditions on a pending delivery `d` (of event `e`) itself to be due at `$1`: not
/// claimed, its attempt time reached, and an e-mail's pass finished. [`due_conditions!`] adds
/// the ordering condition for SQLite; PostgreSQL's claim adds it with [`held_keys!`] and
/// [`in_order!`].
macro_rules! due_own_conditions {
    () => {
        "d.state = 'pending' AND d.claimed_at IS NULL AND d.next_attempt_at <= $1 \
         AND (d.channel <> 'email' OR e.run_id IS NULL \
              OR EXISTS (SELECT 1 FROM sync_run r WHERE r.id = e.run_id AND r.finished_at IS NOT NULL))"
    };
}
pub(super) use due_own_conditions;

/// Whether delivery `d2` holds back the later events of its link (or payment) for its
/// subscriber at `$1`: pending, and retrying later or claimed by a batch in flight. Shared by
/// SQLite's [`due_conditions!`] and PostgreSQL's [`held_keys!`].
macro_rules! holds_back {
    () => {
        "d2.state = 'pending' AND (d2.next_attempt_at > $1 OR d2.claimed_at IS NOT NULL)"
    };
}
pub(super) use holds_back;

/// When a pending delivery `d` (of event `e`) is due at `$1`: [`due_own_conditions!`], and no
/// earlier event of its link (or payment) for the same subscriber pending a retry or claimed by
/// a batch in flight. The text of [`Ledger::due_deliveries`] and of SQLite's claim
/// (`Ledger::claim_due`). The earlier events are looked up with the `link_event_sequence` index's
/// expression (`IFNULL(payment_id, -1)`, then `sequence <`): only that link's (payment's) are read.
macro_rules! due_conditions {
    () => {
        concat!(
            due_own_conditions!(),
            " AND NOT EXISTS (SELECT 1 FROM delivery d2 JOIN link_event e2 ON e2.id = d2.event_id \
             WHERE d2.subscriber = d.subscriber AND ",
            holds_back!(),
            " AND e2.account_id = e.account_id AND e2.link_id = e.link_id \
             AND IFNULL(e2.payment_id, -1) = IFNULL(e.payment_id, -1) AND e2.sequence < e.sequence)"
        )
    };
}

/// PostgreSQL's form of the ordering condition of [`due_conditions!`], in two parts. This CTE,
/// `held`, is one JSON object computed once per statement: for each [`order_key!`] with a
/// delivery that [`holds_back!`], the lowest event `sequence`; [`in_order!`] looks a due
/// delivery's key up in it. PostgreSQL planned a correlated `NOT EXISTS` as a nested loop over
/// every held delivery for each due one (1,168 ms against 73 ms, docs/PERFORMANCE.md).
macro_rules! held_keys {
    () => {
        concat!(
            "held AS MATERIALIZED (SELECT COALESCE(jsonb_object_agg(k, s), '{}'::jsonb) AS keys \
             FROM (SELECT ",
            order_key!(d2, e2),
            " AS k, MIN(e2.sequence) AS s \
             FROM delivery d2 JOIN link_event e2 ON e2.id = d2.event_id WHERE ",
            holds_back!(),
            " GROUP BY 1) g)"
        )
    };
}
pub(super) use held_keys;

/// Delivery `$d`'s ordering key (subscriber, account, link, payment or -1; `$e` its event).
macro_rules! order_key {
    ($d:ident, $e:ident) => {
        concat!(
            "jsonb_build_array(",
            stringify!($d),
            ".subscriber, ",
            stringify!($e),
            ".account_id, ",
            stringify!($e),
            ".link_id, COALESCE(",
            stringify!($e),
            ".payment_id, -1))::text"
        )
    };
}
pub(super) use order_key;

/// Whether delivery `d` of event `e` is next in its order: its key in [`held_keys!`]'s CTE
/// `held` (read once, as a scalar subquery) is absent, or its lowest held sequence is not below
/// `e.sequence`.
macro_rules! in_order {
    () => {
        concat!(
            "COALESCE(((SELECT keys FROM held) ->> ",
            order_key!(d, e),
            ")::bigint, e.sequence) >= e.sequence"
        )
    };
}
pub(super) use in_order;

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

/// Outcomes per statement of [`Ledger::record_attempts`]: the dispatcher's usual group (half
/// of its `GROUP_MAX`), so a full group is one INSERT and one UPDATE.
const OUTCOMES_PER_STATEMENT: usize = 100;

/// Rows per delivery INSERT (6 parameters each).
const DELIVERIES_PER_STATEMENT: usize = 1000;

/// Enqueues deliveries in the given order (their ids follow it), many rows per statement. A
/// subscriber disabled by a 410 gets its new deliveries parked as `disabled` (no attempt time).
pub(super) async fn insert_many(tx: &mut Tx<'_>, deliveries: &[&NewDelivery]) -> LedgerResult<()> {
    on_tx!(tx, |c| {
        if deliveries.is_empty() {
            return Ok(());
        }
        let disabled: HashSet<String> =
            sqlx::query_scalar("SELECT name FROM subscriber_state WHERE disabled_at IS NOT NULL")
                .fetch_all(&mut *c)
                .await?
                .into_iter()
                .collect();
        for chunk in super::statement_chunks(deliveries, DELIVERIES_PER_STATEMENT) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(
                "INSERT INTO delivery (event_id, subscriber, channel, state, next_attempt_at, created_at) ",
            );
            qb.push_values(chunk, |mut b, d| {
                let parked = disabled.contains(&d.subscriber);
                let state = if parked {
                    DeliveryState::Disabled
                } else {
                    DeliveryState::Pending
                };
                b.push_bind(d.event_id.as_str())
                    .push_bind(d.subscriber.as_str())
                    .push_bind(d.channel.as_str())
                    .push_bind(state.as_str())
                    .push_bind((!parked).then(|| ledger_ts(d.next_attempt_at)))
                    .push_bind(ledger_ts(d.next_attempt_at));
            });
            qb.build().execute(&mut *c).await?;
        }
        Ok(())
    })
}

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

fn row_to_delivery(r: &impl LedgerRow) -> LedgerResult<DeliveryRow> {
    Ok(DeliveryRow {
        id: r.col("id")?,
        event_id: r.col("event_id")?,
        event_type: parse_name::<EventType>(r, "type")?,
        subscriber: r.col("subscriber")?,
        channel: parse_name(r, "channel")?,
        state: parse_name(r, "state")?,
        attempts: r.col("attempts")?,
        next_attempt_at: parse_opt_ts(r.col("next_attempt_at")?)?,
        last_status: r.col("last_status")?,
        last_error: r.col("last_error")?,
        delivered_at: parse_opt_ts(r.col("delivered_at")?)?,
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
    pub async fn next_due_at(&self) -> LedgerResult<Option<DateTime<Utc>>> {
        on_pool!(self.pool, |p| {
            let r = sqlx::query(sql!(
                PG,
                "SELECT MIN(d.next_attempt_at) FROM delivery d JOIN link_event e ON e.id = d.event_id \
                 WHERE d.state = 'pending' AND d.claimed_at IS NULL \
                 AND (d.channel <> 'email' OR e.run_id IS NULL \
                      OR EXISTS (SELECT 1 FROM sync_run r WHERE r.id = e.run_id AND r.finished_at IS NOT NULL)) \
                 AND NOT EXISTS (SELECT 1 FROM delivery d2 JOIN link_event e2 ON e2.id = d2.event_id \
                     WHERE d2.subscriber = d.subscriber AND d2.state = 'pending' \
                     AND e2.account_id = e.account_id AND e2.link_id = e.link_id \
                     AND IFNULL(e2.payment_id, -1) = IFNULL(e.payment_id, -1) AND e2.sequence < e.sequence)"
            ))
            .fetch_one(p)
            .await?;
            parse_opt_ts(r.try_get(0)?)
        })
    }

    /// Records a batch of attempts and their outcomes in one transaction, two statements per
    /// [`OUTCOMES_PER_STATEMENT`] attempts (one multi-row INSERT into `delivery_attempt`, one
    /// `UPDATE … FROM (VALUES …)`), a remainder in power-of-two sets
    /// ([`super::statement_chunks`]).
    pub(crate) async fn record_attempts(&self, outcomes: &[&AttemptOutcome]) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            if outcomes.is_empty() {
                return Ok(());
            }
            let mut tx = p.begin().await?;
            for chunk in super::statement_chunks(outcomes, OUTCOMES_PER_STATEMENT) {
                let mut ins: QueryBuilder<Db> = QueryBuilder::new(
                    "INSERT INTO delivery_attempt (delivery_id, attempted_at, duration_ms, status, error) ",
                );
                ins.push_values(chunk, |mut b, o| {
                    b.push_bind(o.delivery_id)
                        .push_bind(ledger_ts(o.attempted_at))
                        .push_bind(o.duration_ms)
                        .push_bind(o.status)
                        .push_bind(o.error.clone());
                });
                ins.build().execute(&mut *tx).await?;

                let mut upd: QueryBuilder<Db> = QueryBuilder::new(
                    "WITH v(id, state, next_attempt_at, last_status, last_error, delivered_at) AS (",
                );
                upd.push_values(chunk, |mut b, o| {
                    let (state, next, delivered) = match &o.result {
                        AttemptResult::Delivered => (
                            DeliveryState::Delivered,
                            None,
                            Some(ledger_ts(o.attempted_at)),
                        ),
                        AttemptResult::Retry(at) => {
                            (DeliveryState::Pending, Some(ledger_ts(*at)), None)
                        }
                        AttemptResult::Dead => (DeliveryState::Dead, None, None),
                        AttemptResult::Disabled => (DeliveryState::Disabled, None, None),
                    };
                    b.push_bind(o.delivery_id)
                        .push_bind(state.as_str())
                        .push_bind(next)
                        .push_bind(o.status)
                        .push_bind(o.error.clone())
                        .push_bind(delivered);
                });
                upd.push(
                    ") UPDATE delivery SET state = v.state, attempts = attempts + 1, \
                     next_attempt_at = v.next_attempt_at, last_status = v.last_status, \
                     last_error = v.last_error, claimed_at = NULL, \
                     delivered_at = COALESCE(v.delivered_at, delivery.delivered_at) \
                     FROM v WHERE delivery.id = v.id",
                );
                upd.build().execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// When the oldest pending delivery was enqueued, if any (for the `/metrics` gauge).
    pub(crate) async fn oldest_pending_since(&self) -> LedgerResult<Option<DateTime<Utc>>> {
        on_pool!(self.pool, |p| {
            let row = sqlx::query(sql!(
                PG,
                "SELECT created_at FROM delivery INDEXED BY delivery_pending \
                 WHERE state = 'pending' ORDER BY id LIMIT 1"
            ))
            .fetch_optional(p)
            .await?;
            match row {
                Some(r) => Ok(Some(parse_ts(&r.try_get::<String, _>(0)?)?)),
                None => Ok(None),
            }
        })
    }

    /// Disables a subscriber (410 Gone): its pending deliveries become `disabled`. Returns how
    /// many were parked.
    pub(crate) async fn disable_subscriber(
        &self,
        name: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> LedgerResult<u64> {
        on_pool!(self.pool, |p| {
            let mut tx = p.begin().await?;
            sqlx::query(
                "INSERT INTO subscriber_state (name, disabled_at, disabled_reason) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET disabled_at = $2, disabled_reason = $3",
            )
            .bind(name)
            .bind(ledger_ts(now))
            .bind(reason)
            .execute(&mut *tx)
            .await?;
            let r = sqlx::query(
                "UPDATE delivery SET state = 'disabled', next_attempt_at = NULL \
                 WHERE subscriber = $1 AND state = 'pending'",
            )
            .bind(name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(r.rows_affected())
        })
    }

    /// Re-enables a subscriber: its `disabled` deliveries become due now. Returns how many.
    pub async fn enable_subscriber(&self, name: &str, now: DateTime<Utc>) -> LedgerResult<u64> {
        on_pool!(self.pool, |p| {
            let mut tx = p.begin().await?;
            sqlx::query("DELETE FROM subscriber_state WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            let r = sqlx::query(
                "UPDATE delivery SET state = 'pending', next_attempt_at = $1 \
                 WHERE subscriber = $2 AND state = 'disabled'",
            )
            .bind(ledger_ts(now))
            .bind(name)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(r.rows_affected())
        })
    }

    /// Names of disabled subscribers.
    pub async fn disabled_subscribers(&self) -> LedgerResult<Vec<String>> {
        on_pool!(self.pool, |p| {
            let rows =
                sqlx::query("SELECT name FROM subscriber_state WHERE disabled_at IS NOT NULL")
                    .fetch_all(p)
                    .await?;
            rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
        })
    }

    /// Makes a `dead` or `disabled` delivery due now. `false` if no such delivery in those states.
    pub async fn retry_delivery(&self, id: i64, now: DateTime<Utc>) -> LedgerResult<bool> {
        on_pool!(self.pool, |p| {
            let r = sqlx::query(
                "UPDATE delivery SET state = 'pending', next_attempt_at = $1 \
                 WHERE id = $2 AND state IN ('dead', 'disabled')",
            )
            .bind(ledger_ts(now))
            .bind(id)
            .execute(p)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Deliveries matching `f`, newest first.
    pub async fn list_deliveries(&self, f: &DeliveryFilter) -> LedgerResult<Vec<DeliveryRow>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(
                "SELECT d.id, d.event_id, e.type, d.subscriber, d.channel, d.state, d.attempts, \
                 d.next_attempt_at, d.last_status, d.last_error, d.delivered_at \
                 FROM delivery d JOIN link_event e ON e.id = d.event_id \
                 WHERE ($1 IS NULL OR d.state = $1) AND ($2 IS NULL OR d.subscriber = $2) \
                 AND ($3 IS NULL OR d.channel = $3) \
                 ORDER BY d.id DESC LIMIT $4",
            )
            .bind(f.state.map(DeliveryState::as_str))
            .bind(f.subscriber.as_deref())
            .bind(f.channel.map(Channel::as_str))
            .bind(f.limit)
            .fetch_all(p)
            .await?;
            rows.iter().map(row_to_delivery).collect()
        })
    }

    /// The attempts of one delivery, oldest first.
    pub async fn delivery_attempts(
        &self,
        delivery_id: i64,
    ) -> LedgerResult<Vec<DeliveryAttemptRow>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(
                "SELECT attempted_at, duration_ms, status, error FROM delivery_attempt \
                 WHERE delivery_id = $1 ORDER BY id",
            )
            .bind(delivery_id)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(DeliveryAttemptRow {
                        attempted_at: parse_ts(&r.try_get::<String, _>(0)?)?,
                        duration_ms: r.try_get(1)?,
                        status: r.try_get(2)?,
                        error: r.try_get(3)?,
                    })
                })
                .collect()
        })
    }

    /// Count of deliveries per state, for `/metrics`.
    pub(crate) async fn delivery_state_counts(&self) -> LedgerResult<Vec<(DeliveryState, i64)>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM delivery GROUP BY state")
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Ok((parse_name(r, "state")?, r.try_get("n")?)))
                .collect()
        })
    }
}

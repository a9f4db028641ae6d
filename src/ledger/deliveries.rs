//! `delivery`, `delivery_attempt` and `subscriber_state`: the outbox and its log.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{QueryBuilder, Row};

use crate::time::ledger_ts;
use crate::types::{Channel, DeliveryState, EventType};

use super::backend::{LedgerRow, Tx, on_pool, on_tx, sql};
use super::events::NewEvent;
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

/// Outcomes per statement of [`Ledger::record_attempts`] on SQLite: the dispatcher's usual
/// group (half of its `GROUP_MAX`), so a full group is one INSERT and one UPDATE. (PostgreSQL
/// takes any number in one statement, [`RECORD_PG`].)
const OUTCOMES_PER_STATEMENT: usize = 100;

/// Rows per delivery INSERT (10 parameters each).
const DELIVERIES_PER_STATEMENT: usize = 1000;

/// Enqueues deliveries in the given order (their ids follow it), many rows per statement, each
/// with its event's ordering key (account, link, payment, sequence) taken from `events`, the
/// events of the same commit. A subscriber disabled by a 410 gets its new deliveries parked as
/// `disabled` (no attempt time).
///
/// Errors: a delivery's event is not among `events` ([`LedgerError::Corrupt`]: the outbox
/// writes an event and its deliveries together); the statements fail.
pub(super) async fn insert_many(
    tx: &mut Tx<'_>,
    deliveries: &[&NewDelivery],
    events: &[&NewEvent],
) -> LedgerResult<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let by_id: HashMap<&str, &NewEvent> =
        events.iter().map(|e| (e.event.id.0.as_str(), *e)).collect();
    let keyed = deliveries
        .iter()
        .map(|d| {
            by_id
                .get(d.event_id.as_str())
                .map(|e| (*d, *e))
                .ok_or_else(|| {
                    LedgerError::Corrupt(format!(
                        "a delivery of event {} without the event in its commit",
                        d.event_id
                    ))
                })
        })
        .collect::<LedgerResult<Vec<(&NewDelivery, &NewEvent)>>>()?;
    on_tx!(tx, |c| {
        let disabled: HashSet<String> =
            sqlx::query_scalar("SELECT name FROM subscriber_state WHERE disabled_at IS NOT NULL")
                .fetch_all(&mut *c)
                .await?
                .into_iter()
                .collect();
        for chunk in super::statement_chunks(&keyed, DELIVERIES_PER_STATEMENT) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(
                "INSERT INTO delivery (event_id, subscriber, channel, state, next_attempt_at, \
                 created_at, account_id, link_id, payment_id, sequence) ",
            );
            qb.push_values(chunk, |mut b, (d, e)| {
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
                    .push_bind(ledger_ts(d.next_attempt_at))
                    .push_bind(e.event.account_id.as_str())
                    .push_bind(e.link_id.0)
                    .push_bind(e.payment_id.map(|p| p.0))
                    .push_bind(e.event.sequence);
            });
            qb.build().execute(&mut *c).await?;
        }
        Ok(())
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

/// What an outcome makes of its delivery: its state, its next attempt time (a retry's) and
/// its delivery time (the attempt's start, when delivered), as ledger timestamps.
fn new_state(o: &AttemptOutcome) -> (DeliveryState, Option<String>, Option<String>) {
    match &o.result {
        AttemptResult::Delivered => (
            DeliveryState::Delivered,
            None,
            Some(ledger_ts(o.attempted_at)),
        ),
        AttemptResult::Retry(at) => (DeliveryState::Pending, Some(ledger_ts(*at)), None),
        AttemptResult::Dead => (DeliveryState::Dead, None, None),
        AttemptResult::Disabled => (DeliveryState::Disabled, None, None),
    }
}

/// [`Ledger::record_attempts`] on PostgreSQL: one statement, whose parameters are eight arrays
/// of the same length, one element per outcome in order (`$1` delivery ids, `$2` attempt
/// starts, `$3` durations in milliseconds, `$4` statuses, `$5` errors, `$6` new states, `$7`
/// next attempt times, `$8` delivery times). The UPDATE of `delivery` and the INSERT into
/// `delivery_attempt` (in the outcomes' order, so attempt ids follow it) commit together, as one
/// statement does without a transaction around it: one round trip per group of outcomes instead
/// of four (`BEGIN`, INSERT, UPDATE, `COMMIT`), and one small text planned instead of two with
/// 500 and 600 parameters each (the ledger's connections plan every statement for its own
/// arguments, `plan_cache_mode`). The UPDATE runs although nothing reads its output: "data-
/// modifying statements in WITH are executed exactly once, and always to completion"
/// (PostgreSQL manual, 7.8.4). The attempt rows' foreign-key checks run at the statement's end
/// and see the deliveries it updated. Measured (`BENCH_LEDGER=postgres cargo bench --bench
/// delivery`, server statement times logged): 4.0-4.3 ms of server time per group of 100
/// against 5.2 ms for the four statements, 0.34 x the floor's rate against 0.31 x in three
/// alternating pairs (docs/PERFORMANCE.md).
const RECORD_PG: &str = "WITH v AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], \
     $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[]) WITH ORDINALITY \
     AS v(id, attempted_at, duration_ms, status, error, state, next_attempt_at, delivered_at, n)), \
     upd AS (UPDATE delivery SET state = v.state, attempts = delivery.attempts + 1, \
     next_attempt_at = v.next_attempt_at, last_status = v.status, last_error = v.error, \
     claimed_at = NULL, delivered_at = COALESCE(v.delivered_at, delivery.delivered_at) \
     FROM v WHERE delivery.id = v.id) \
     INSERT INTO delivery_attempt (delivery_id, attempted_at, duration_ms, status, error) \
     SELECT id, attempted_at, duration_ms, status, error FROM v ORDER BY n";

/// Runs [`RECORD_PG`] for `outcomes`.
async fn record_attempts_pg(p: &sqlx::PgPool, outcomes: &[&AttemptOutcome]) -> LedgerResult<()> {
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut started = Vec::with_capacity(n);
    let mut durations = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut nexts = Vec::with_capacity(n);
    let mut delivered = Vec::with_capacity(n);
    for o in outcomes {
        let (state, next, at) = new_state(o);
        ids.push(o.delivery_id);
        started.push(ledger_ts(o.attempted_at));
        durations.push(o.duration_ms);
        statuses.push(o.status);
        errors.push(o.error.as_deref());
        states.push(state.as_str());
        nexts.push(next);
        delivered.push(at);
    }
    sqlx::query(RECORD_PG)
        .bind(ids)
        .bind(started)
        .bind(durations)
        .bind(statuses)
        .bind(errors)
        .bind(states)
        .bind(nexts)
        .bind(delivered)
        .execute(p)
        .await?;
    Ok(())
}

impl Ledger {
    /// Records a batch of attempts and their outcomes atomically: each attempt's row in
    /// `delivery_attempt`, and its delivery's new state (`state`, `attempts + 1`,
    /// `next_attempt_at`, `last_status`, `last_error`, `delivered_at` when delivered; its claim
    /// cleared).
    ///
    /// On SQLite: one transaction, two statements per [`OUTCOMES_PER_STATEMENT`] attempts (one
    /// multi-row INSERT into `delivery_attempt`, one `UPDATE … FROM (VALUES …)`), a remainder
    /// in power-of-two sets ([`super::statement_chunks`]). On PostgreSQL: [`RECORD_PG`], one
    /// statement (atomic on its own) with the outcomes as eight arrays, however many.
    ///
    /// Errors: the statements fail (nothing is recorded).
    pub(crate) async fn record_attempts(&self, outcomes: &[&AttemptOutcome]) -> LedgerResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let p = match &self.pool {
            super::backend::Pool::Postgres(p) => return record_attempts_pg(p, outcomes).await,
            super::backend::Pool::Sqlite(p) => p,
        };
        let mut tx = p.begin().await?;
        for chunk in super::statement_chunks(outcomes, OUTCOMES_PER_STATEMENT) {
            let mut ins: QueryBuilder<sqlx::Sqlite> = QueryBuilder::new(
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

            let mut upd: QueryBuilder<sqlx::Sqlite> = QueryBuilder::new(
                "WITH v(id, state, next_attempt_at, last_status, last_error, delivered_at) AS (",
            );
            upd.push_values(chunk, |mut b, o| {
                let (state, next, delivered) = new_state(o);
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

//! `link_event`: the append-only change log.

use sqlx::{QueryBuilder, Row};

use crate::event::Event;
use crate::time::ledger_ts;
use crate::types::{AccountId, EventType, LinkId, PaymentId};

use super::backend::{LedgerRow, Tx, on_pool, on_tx};
use super::{Ledger, LedgerError, LedgerResult};

/// An event to append: the envelope and where it belongs. The envelope text is written once,
/// by [`NewEvent::new`], in the pass's task (not on the ledger writer).
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The envelope.
    pub event: Event,
    /// The link it is about (of a payment event: the payment's link, 0 while unknown).
    pub link_id: LinkId,
    /// The payment of a `payment.*` event.
    pub payment_id: Option<PaymentId>,
    /// The pass that detected it.
    pub run_id: i64,
    /// `event` as JSON, exactly as it will be delivered.
    envelope: String,
}

impl NewEvent {
    /// An event of `link_id` detected by run `run_id`.
    ///
    /// Errors: [`LedgerError::Corrupt`] if the envelope cannot be written as JSON.
    pub fn new(event: Event, link_id: LinkId, run_id: i64) -> LedgerResult<Self> {
        let envelope = event
            .to_json()
            .map_err(|e| LedgerError::Corrupt(format!("event {} not encodable: {e}", event.id)))?;
        Ok(Self {
            event,
            link_id,
            payment_id: None,
            run_id,
            envelope,
        })
    }

    /// Sets `data.payments` (of a `payment_link.paid`) and re-encodes the envelope.
    ///
    /// Errors: as [`NewEvent::new`].
    pub fn set_payments(&mut self, payments: Vec<serde_json::Value>) -> LedgerResult<()> {
        self.event.data.payments = Some(payments);
        self.envelope = self
            .event
            .to_json()
            .map_err(|e| LedgerError::Corrupt(format!("event does not serialise: {e}")))?;
        Ok(())
    }

    /// An event of payment `payment_id` (whose link is `link_id`, 0 while unknown).
    ///
    /// Errors: as [`NewEvent::new`].
    pub fn for_payment(
        event: Event,
        link_id: LinkId,
        payment_id: PaymentId,
        run_id: i64,
    ) -> LedgerResult<Self> {
        let mut e = Self::new(event, link_id, run_id)?;
        e.payment_id = Some(payment_id);
        Ok(e)
    }
}

/// A stored event: the envelope and the ledger's bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Commit order (the pull feed's internal cursor).
    pub seq: i64,
    /// The link it is about (of a payment event: the payment's link, 0 while unknown).
    pub link_id: LinkId,
    /// The payment of a `payment.*` event.
    pub payment_id: Option<PaymentId>,
    /// The pass that detected it.
    pub run_id: Option<i64>,
    /// The envelope as delivered.
    pub event: Event,
}

/// Filters of the pull feed (`GET /events`).
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events committed after this event id.
    pub after: Option<String>,
    /// Only this type.
    pub event_type: Option<EventType>,
    /// Only this account.
    pub account_id: Option<AccountId>,
    /// Only this link.
    pub link_id: Option<LinkId>,
    /// Only this run.
    pub run_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// Rows per event INSERT (9 parameters each, well under SQLite's 32,766).
const EVENTS_PER_STATEMENT: usize = 500;

/// Appends events in the given order (their `seq` follows it), many rows per statement. On
/// PostgreSQL the transaction first takes the feed lock (`cluster::FEED_KEY`), so `seq`s are
/// handed out in commit order across instances.
pub(super) async fn insert_many(tx: &mut Tx<'_>, events: &[&NewEvent]) -> LedgerResult<()> {
    on_tx!(tx, |c| {
        if PG && !events.is_empty() {
            sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
                .bind(super::cluster::LOCK_CLASS)
                .bind(super::cluster::FEED_KEY)
                .execute(&mut *c)
                .await?;
        }
        for chunk in super::statement_chunks(events, EVENTS_PER_STATEMENT) {
            let mut qb: QueryBuilder<Db> = QueryBuilder::new(
                "INSERT INTO link_event (id, account_id, link_id, payment_id, type, sequence, run_id, \
             created_at, usage_delta, envelope) ",
            );
            qb.push_values(chunk, |mut b, e| {
                let ev = &e.event;
                b.push_bind(ev.id.0.as_str())
                    .push_bind(ev.account_id.as_str())
                    .push_bind(e.link_id.0)
                    .push_bind(e.payment_id.map(|p| p.0))
                    .push_bind(ev.event_type.as_str())
                    .push_bind(ev.sequence)
                    .push_bind(e.run_id)
                    .push_bind(ledger_ts(ev.created_at))
                    .push_bind(ev.data.usage_delta)
                    .push_bind(e.envelope.as_str());
            });
            qb.build().execute(&mut *c).await?;
        }
        Ok(())
    })
}

fn row_to_event(r: &impl LedgerRow) -> LedgerResult<EventRow> {
    let env: String = r.col("envelope")?;
    Ok(EventRow {
        seq: r.col("seq")?,
        link_id: LinkId(r.col("link_id")?),
        payment_id: r.col::<Option<i64>>("payment_id")?.map(PaymentId),
        run_id: r.col("run_id")?,
        event: serde_json::from_str(&env)
            .map_err(|e| LedgerError::Corrupt(format!("link_event.envelope: {e}")))?,
    })
}

impl Ledger {
    /// Events in commit order matching `f`. `f.after` names an event id; an unknown id is an
    /// error (`Ok(None)`), so a client never silently restarts from the beginning.
    pub async fn events(&self, f: &EventFilter) -> LedgerResult<Option<Vec<EventRow>>> {
        on_pool!(self.pool, |p| {
            let after_seq = match &f.after {
                None => 0,
                Some(id) => {
                    match sqlx::query("SELECT seq FROM link_event WHERE id = $1")
                        .bind(id)
                        .fetch_optional(p)
                        .await?
                    {
                        Some(r) => r.try_get::<i64, _>(0)?,
                        None => return Ok(None),
                    }
                }
            };
            let rows = sqlx::query(
                "SELECT seq, link_id, payment_id, run_id, envelope \
                 FROM link_event WHERE seq > $1 \
                 AND ($2 IS NULL OR type = $2) AND ($3 IS NULL OR account_id = $3) \
                 AND ($4 IS NULL OR link_id = $4) AND ($5 IS NULL OR run_id = $5) \
                 ORDER BY seq LIMIT $6",
            )
            .bind(after_seq)
            .bind(f.event_type.map(|t| t.as_str()))
            .bind(f.account_id.as_ref().map(|a| a.as_str().to_string()))
            .bind(f.link_id.map(|l| l.0))
            .bind(f.run_id)
            .bind(f.limit.max(0))
            .fetch_all(p)
            .await?;
            Ok(Some(
                rows.iter().map(row_to_event).collect::<LedgerResult<_>>()?,
            ))
        })
    }

    /// Number of events recorded.
    pub async fn count_events(&self) -> LedgerResult<i64> {
        on_pool!(self.pool, |p| {
            Ok(sqlx::query("SELECT COUNT(*) FROM link_event")
                .fetch_one(p)
                .await?
                .try_get(0)?)
        })
    }
}

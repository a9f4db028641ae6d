//! `payment`: the mirror of SingaPay's Payment Link History, one row per payment attempt, and
//! the accounting export of it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::Row;

use super::backend::{LedgerRow, Tx, on_pool, sql};
use super::sqlite_rows::{Value, execute_rows};
use super::{Ledger, LedgerError, LedgerResult, parse_opt_ts};
use crate::event::LinkRef;
use crate::singapay::PaymentRecord;
use crate::time::ledger_ts;
use crate::types::{AccountId, LinkId, PaymentId};

/// What a pass needs of a stored payment to decide whether it changed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PaymentState {
    /// Sequence of the payment's last event (0 = none yet).
    pub sequence: i64,
    /// SingaPay's verbatim JSON when last written, hashed (`sync::pass::commit::ContentHash`: 32 hex
    /// digits, or the full SHA-256's 64 in a row written before 2026-12-07).
    pub raw_hash: String,
}

/// A payment row as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPayment {
    /// The mirrored record.
    pub payment: PaymentRecord,
    /// Its parent link, when known.
    pub link_id: Option<LinkId>,
    /// Sequence of its last event.
    pub sequence: i64,
}

/// A payment row to insert or update.
#[derive(Debug, Clone)]
pub(crate) struct PaymentWrite {
    /// Account owning it.
    pub account_id: AccountId,
    /// The record.
    pub record: PaymentRecord,
    /// Its parent link, when known.
    pub link_id: Option<LinkId>,
    /// SingaPay's JSON, verbatim.
    pub raw_json: String,
    /// `raw_json` hashed (`sync::pass::commit::ContentHash`, 32 hex digits).
    pub raw_hash: String,
    /// Sequence after this pass's events.
    pub sequence: i64,
    /// Time of the write.
    pub now: DateTime<Utc>,
}

/// Columns of `payment`, in insert order.
const COLUMNS: &str = "account_id, payment_id, link_id, reff_no, payment_link_reff_no, \
    payment_method_name, payment_method_value, payment_method_additional, amount, status, \
    status_computed, is_expired, payment_date, processed_timestamp, has_settle, settle_at, \
    customer_name, customer_email, customer_phone, created_at, raw_json, raw_hash, \
    first_seen_at, last_seen_at, sequence, expired_at";

/// Number of [`COLUMNS`].
const COLUMN_COUNT: usize = 26;

/// The PostgreSQL type of each of [`COLUMNS`], in order (the `payment` table of
/// `migrations/postgres/0001_init.sql`): [`push_values`] gives a `bigint` column a
/// [`Value::Int`] and a `text` one a [`Value::Text`].
const PG_TYPES: [&str; COLUMN_COUNT] = [
    "text", "bigint", "bigint", "text", "text", "text", "text", "text", "text", "text", "text",
    "bigint", "text", "text", "bigint", "text", "text", "text", "text", "text", "text", "text",
    "text", "text", "bigint", "text",
];

/// What an upsert does with a payment already stored: every column but the key and
/// `first_seen_at` takes the new row's value, except `link_id`, which a row without one (its
/// link not known to that pass) does not clear.
fn on_conflict() -> String {
    format!(
        "ON CONFLICT (account_id, payment_id) DO UPDATE SET \
         link_id = COALESCE(excluded.link_id, payment.link_id), {}",
        super::backend::set_excluded(
            COLUMNS,
            &["account_id", "payment_id", "link_id", "first_seen_at"]
        )
    )
}

/// `w`'s [`COLUMNS`] values, in order, appended to `out`: its texts borrowed from `w`.
fn push_values<'a>(out: &mut Vec<Value<'a>>, w: &'a PaymentWrite) {
    let r = &w.record;
    let now = ledger_ts(w.now);
    let text = |v: &'a str| Value::text(Some(v));
    out.extend([
        text(w.account_id.as_str()),
        Value::Int(Some(r.id.0)),
        Value::Int(w.link_id.map(|l| l.0)),
        text(&r.reff_no),
        text(&r.payment_link_reff_no),
        Value::text(r.payment_method_name.as_deref()),
        Value::text(r.payment_method_value.as_deref()),
        Value::text(r.payment_method_additional.as_deref()),
        Value::text(Some(r.amount.to_string())),
        text(&r.status),
        Value::text(r.status_computed.as_deref()),
        Value::Int(Some(r.is_expired as i64)),
        Value::text(r.payment_date.map(ledger_ts)),
        Value::text(r.processed_timestamp.map(ledger_ts)),
        Value::Int(Some(r.has_settle as i64)),
        Value::text(r.settle_at.map(ledger_ts)),
        text(&r.customer_name),
        text(&r.customer_email),
        text(&r.customer_phone),
        Value::text(r.created_at.map(ledger_ts)),
        text(&w.raw_json),
        text(&w.raw_hash),
        Value::text(Some(now.clone())),
        Value::text(Some(now)),
        Value::Int(Some(w.sequence)),
        Value::text(r.expired_at.map(ledger_ts)),
    ]);
}

/// Inserts or updates `rows`: on SQLite one prepared single-row statement stepped per row, its
/// values bound in place ([`execute_rows`]); on PostgreSQL one statement of column arrays
/// (`pg_arrays`) per run of distinct payments, the texts borrowed from `rows`.
pub(super) async fn upsert_many(tx: &mut Tx<'_>, rows: &[PaymentWrite]) -> LedgerResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    match tx {
        Tx::Sqlite(t) => {
            static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let sql = SQL.get_or_init(|| {
                super::sqlite_rows::insert_text("payment", COLUMNS, COLUMN_COUNT, &on_conflict())
            });
            let mut values = Vec::with_capacity(rows.len() * COLUMN_COUNT);
            for w in rows {
                push_values(&mut values, w);
            }
            execute_rows(t, sql, COLUMN_COUNT, &[&values]).await
        }
        Tx::Postgres(t) => {
            static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
            let sql = SQL.get_or_init(|| {
                super::pg_arrays::insert_text("payment", COLUMNS, &PG_TYPES, &on_conflict())
            });
            // PostgreSQL refuses an upsert that touches a row twice, and the pages a writer
            // commits together could hold one payment twice if the history shifted between
            // them: a repeat starts another statement.
            for run in super::pg_arrays::distinct_runs(rows.iter().map(key)) {
                let run = &rows[run];
                let mut values = Vec::with_capacity(run.len() * COLUMN_COUNT);
                for w in run {
                    push_values(&mut values, w);
                }
                super::pg_arrays::execute(t, sql, "payment", &values, &PG_TYPES).await?;
            }
            Ok(())
        }
    }
}

/// What identifies a stored payment: its account and SingaPay's id (`payment`'s primary key).
fn key(w: &PaymentWrite) -> (&str, i64) {
    (w.account_id.as_str(), w.record.id.0)
}

fn stored_from_row(r: &impl LedgerRow) -> LedgerResult<StoredPayment> {
    let raw: String = r.col("raw_json")?;
    let payment = PaymentRecord::decode(&raw)
        .map_err(|e| LedgerError::Corrupt(format!("payment.raw_json: {e}")))?;
    Ok(StoredPayment {
        payment,
        link_id: r.col::<Option<i64>>("link_id")?.map(LinkId),
        sequence: r.col("sequence")?,
    })
}

/// Filters of the export (`export payments`, `GET /payments`).
#[derive(Debug, Clone, Default)]
pub struct PaymentFilter {
    /// Only this account.
    pub account_id: Option<AccountId>,
    /// Only payments paid (an unpaid attempt: created) at or after this instant, UTC (the
    /// start of a Jakarta day).
    pub from: Option<DateTime<Utc>>,
    /// Only payments paid (created) before this instant, UTC (the start of the Jakarta day
    /// after the last one asked).
    pub to: Option<DateTime<Utc>>,
    /// Only this status.
    pub status: Option<String>,
}

/// One payment as the accounting export lists it (columns: docs/ARCHITECTURE.md, "Export").
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    /// Account.
    pub account_id: String,
    /// The history row's id.
    pub payment_id: i64,
    /// The attempt's reference.
    pub attempt_reff_no: String,
    /// The parent link, when known.
    pub link_id: Option<i64>,
    /// The parent link's reference.
    pub link_reff_no: String,
    /// The parent link's title, when known.
    pub link_title: Option<String>,
    /// Method name.
    pub method: Option<String>,
    /// Method value (VA number, pay code).
    pub method_value: Option<String>,
    /// Amount, Rupiah.
    pub amount: Decimal,
    /// Status as received.
    pub status: String,
    /// When it was paid, UTC (`None` for an unpaid attempt).
    pub payment_date: Option<DateTime<Utc>>,
    /// Whether it is settled.
    pub settled: bool,
    /// When it was settled, UTC.
    pub settle_at: Option<DateTime<Utc>>,
    /// Payer's name.
    pub customer_name: String,
    /// Payer's e-mail.
    pub customer_email: String,
}

fn export_row(r: &impl LedgerRow) -> LedgerResult<ExportRow> {
    let amount: String = r.col("amount")?;
    Ok(ExportRow {
        account_id: r.col("account_id")?,
        payment_id: r.col("payment_id")?,
        attempt_reff_no: r.col("reff_no")?,
        link_id: r.col("link_id")?,
        link_reff_no: r.col("payment_link_reff_no")?,
        link_title: r.col("title")?,
        method: r.col("payment_method_name")?,
        method_value: r.col("payment_method_value")?,
        amount: amount
            .parse()
            .map_err(|e| LedgerError::Corrupt(format!("payment.amount: {e}")))?,
        status: r.col("status")?,
        payment_date: parse_opt_ts(r.col("payment_date")?)?,
        settled: r.col::<i64>("has_settle")? != 0
            || r.col::<Option<String>>("settle_at")?.is_some(),
        settle_at: parse_opt_ts(r.col("settle_at")?)?,
        customer_name: r.col("customer_name")?,
        customer_email: r.col("customer_email")?,
    })
}

impl Ledger {
    /// The stored states of `ids` in `account`.
    pub(crate) async fn load_payment_states(
        &self,
        account: &AccountId,
        ids: &[PaymentId],
    ) -> LedgerResult<HashMap<PaymentId, PaymentState>> {
        on_pool!(self.pool, |p| {
            if ids.is_empty() {
                return Ok(HashMap::new());
            }
            let rows = sqlx::query(sql!(
                PG,
                "SELECT payment_id, sequence, raw_hash FROM payment INDEXED BY payment_state \
                 WHERE account_id = $1 AND payment_id IN (SELECT value FROM json_each($2))"
            ))
            .bind(account.as_str())
            .bind(super::ids_json(ids.iter().map(|i| i.0))?)
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok((
                        PaymentId(r.try_get("payment_id")?),
                        PaymentState {
                            sequence: r.try_get("sequence")?,
                            raw_hash: r.try_get("raw_hash")?,
                        },
                    ))
                })
                .collect()
        })
    }

    /// The stored rows of `ids` in `account`.
    pub(crate) async fn load_payments(
        &self,
        account: &AccountId,
        ids: &[PaymentId],
    ) -> LedgerResult<HashMap<PaymentId, StoredPayment>> {
        on_pool!(self.pool, |p| {
            if ids.is_empty() {
                return Ok(HashMap::new());
            }
            let rows = sqlx::query(sql!(
                PG,
                "SELECT payment_id, link_id, sequence, raw_json FROM payment \
                 WHERE account_id = $1 AND payment_id IN (SELECT value FROM json_each($2))"
            ))
            .bind(account.as_str())
            .bind(super::ids_json(ids.iter().map(|i| i.0))?)
            .fetch_all(p)
            .await?;
            let mut out = HashMap::with_capacity(rows.len());
            for r in &rows {
                out.insert(PaymentId(r.try_get("payment_id")?), stored_from_row(r)?);
            }
            Ok(out)
        })
    }

    /// Every mirrored payment of `account`, by id (tests and small accounts).
    pub async fn list_payments(&self, account: &AccountId) -> LedgerResult<Vec<StoredPayment>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(
                "SELECT payment_id, link_id, sequence, raw_json FROM payment WHERE account_id = $1 \
                 ORDER BY payment_id",
            )
            .bind(account.as_str())
            .fetch_all(p)
            .await?;
            rows.iter().map(stored_from_row).collect()
        })
    }

    /// The links of `account` with these `reff_no`s (the parents of payments).
    pub(crate) async fn links_by_reff(
        &self,
        account: &AccountId,
        reffs: &[&str],
    ) -> LedgerResult<HashMap<String, LinkRef>> {
        on_pool!(self.pool, |p| {
            if reffs.is_empty() {
                return Ok(HashMap::new());
            }
            let list =
                serde_json::to_string(reffs).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
            let rows = sqlx::query(sql!(
                PG,
                "SELECT link_id, reff_no, title FROM payment_link INDEXED BY payment_link_reff \
                 WHERE account_id = $1 AND reff_no IN (SELECT value FROM json_each($2)) \
                 ORDER BY link_id"
            ))
            .bind(account.as_str())
            .bind(list)
            .fetch_all(p)
            .await?;
            let mut out = HashMap::new();
            for r in &rows {
                let reff: String = r.try_get("reff_no")?;
                out.insert(
                    reff.clone(),
                    LinkRef {
                        id: LinkId(r.try_get("link_id")?),
                        reff_no: reff,
                        title: r.try_get("title")?,
                    },
                );
            }
            Ok(out)
        })
    }

    /// Streams the payments matching `f`, oldest first (by payment date, else creation: the
    /// date the filters apply to), in a bounded channel: a year of payments never sits in memory. The query runs on a task of its
    /// own; dropping the receiver stops it.
    pub fn export_payments(
        &self,
        f: PaymentFilter,
    ) -> tokio::sync::mpsc::Receiver<LedgerResult<ExportRow>> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            on_pool!(pool, |p| {
                let mut rows = sqlx::query(
                "SELECT p.account_id, p.payment_id, p.reff_no, p.payment_link_reff_no, \
                 COALESCE(p.link_id, (SELECT l.link_id FROM payment_link l WHERE \
                   l.account_id = p.account_id AND l.reff_no = p.payment_link_reff_no \
                   ORDER BY l.link_id DESC LIMIT 1)) AS link_id, \
                 (SELECT l.title FROM payment_link l WHERE l.account_id = p.account_id \
                   AND l.reff_no = p.payment_link_reff_no ORDER BY l.link_id DESC LIMIT 1) AS title, \
                 p.payment_method_name, p.payment_method_value, p.amount, p.status, \
                 p.payment_date, COALESCE(p.payment_date, p.created_at) AS day, p.has_settle, \
                 p.settle_at, \
                 p.customer_name, p.customer_email \
                 FROM payment p \
                 WHERE ($1 IS NULL OR p.account_id = $1) AND ($4 IS NULL OR p.status = $4) \
                 AND ($2 IS NULL OR COALESCE(p.payment_date, p.created_at) >= $2) \
                 AND ($3 IS NULL OR COALESCE(p.payment_date, p.created_at) < $3) \
                 ORDER BY day, p.account_id, p.payment_id",
            )
            .bind(f.account_id.as_ref().map(|a| a.as_str().to_string()))
            .bind(f.from.map(ledger_ts))
            .bind(f.to.map(ledger_ts))
            .bind(f.status.clone())
            .fetch(p);
                while let Some(r) = rows.next().await {
                    let item = r.map_err(LedgerError::from).and_then(|r| export_row(&r));
                    let failed = item.is_err();
                    if tx.send(item).await.is_err() || failed {
                        break;
                    }
                }
            })
        });
        rx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `singapay`'s sample history row (every field the docs list) as payment `id`.
    fn write(id: i64) -> PaymentWrite {
        let mut record =
            PaymentRecord::decode(crate::singapay::HISTORY_SAMPLE).expect("sample history row");
        record.id = PaymentId(id);
        PaymentWrite {
            account_id: AccountId::parse("01K7P073Q8RE2A9PQT8Q7MXPN4").expect("account"),
            record,
            link_id: Some(LinkId(103)),
            raw_json: crate::singapay::HISTORY_SAMPLE.to_owned(),
            raw_hash: "00".repeat(16),
            sequence: 1,
            now: Utc::now(),
        }
    }

    #[test]
    fn a_payment_is_written_once_per_run_by_its_account_and_id() {
        // How runs are cut is `pg_arrays::distinct_runs`' test; this one checks what a repeat
        // is: the same id in another account is another payment, the same (account, id) again
        // is a repeat.
        let elsewhere = |id| PaymentWrite {
            account_id: AccountId::parse("01K7P0B2V4GQ8W3ZJ5N6M7R8T9").expect("account"),
            ..write(id)
        };
        let rows = [write(1), elsewhere(1), write(2), elsewhere(2), write(1)];
        assert_eq!(
            super::super::pg_arrays::distinct_runs(rows.iter().map(key)),
            vec![0..4, 4..5]
        );
    }

    #[test]
    fn a_stored_payment_takes_every_new_value_but_its_key_first_seen_at_and_a_missing_link() {
        let set = on_conflict();
        let kept = ["account_id", "payment_id", "link_id", "first_seen_at"];
        super::super::backend::assert_sets_all_but(&set, COLUMNS, &kept);
        assert!(set.contains(" link_id = COALESCE(excluded.link_id, payment.link_id), "));
    }

    #[test]
    fn a_payments_values_are_of_their_postgres_columns_kinds() {
        let w = write(129);
        let mut values = Vec::new();
        push_values(&mut values, &w);
        assert_eq!(values.len(), COLUMN_COUNT);
        assert_eq!(COLUMNS.split(',').count(), COLUMN_COUNT);
        super::super::pg_arrays::assert_binds(&values, &PG_TYPES);
    }
}

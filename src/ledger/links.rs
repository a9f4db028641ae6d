//! `payment_link`: the mirror.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::singapay::PaymentLink;
use crate::time::ledger_ts;
use crate::types::{AccountId, LinkId};

use super::backend::{LedgerRow, Tx, on_pool, sql};
use super::sqlite_rows::{Value, execute_rows};
use super::{Ledger, LedgerError, LedgerResult, parse_opt_ts};

/// A link row as stored: the canonical object and the bookkeeping the diff needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLink {
    /// The mirrored link.
    pub link: PaymentLink,
    /// Sequence of the link's last event (0 = none yet).
    pub sequence: i64,
    /// When it was confirmed deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What a pass needs to know of a stored row to decide whether it changed (the stored object is
/// loaded separately, only for rows whose hash differs).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LinkState {
    /// Sequence of the link's last event.
    pub sequence: i64,
    /// When it was confirmed deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
    /// SingaPay's verbatim JSON when last written, hashed (`sync::pass::commit::ContentHash`: 32 hex
    /// digits, or the full SHA-256's 64 in a row written before 2026-12-07).
    pub raw_hash: String,
}

/// A row to insert or update.
#[derive(Debug, Clone)]
pub(crate) struct LinkWrite {
    /// Account owning the link.
    pub account_id: AccountId,
    /// The canonical link.
    pub link: PaymentLink,
    /// SingaPay's JSON, verbatim.
    pub raw_json: String,
    /// `raw_json` hashed (`sync::pass::commit::ContentHash`, 32 hex digits).
    pub raw_hash: String,
    /// Sequence after this pass's events.
    pub sequence: i64,
    /// `Some` when the link is being marked deleted.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Time of the write (first_seen_at for a new row, last_seen_at always).
    pub now: DateTime<Utc>,
}

fn json_opt<T: serde::Serialize>(v: &Option<T>) -> Option<String> {
    v.as_ref().and_then(|x| serde_json::to_string(x).ok())
}

/// Columns of `payment_link`, in insert order.
const COLUMNS: &str = "account_id, link_id, reff_no, title, payment_url, status, status_computed, \
    is_expired, required_customer_detail, max_usage, current_usage, expired_at, total_amount, \
    items_json, whitelisted_payment_method, redirect_url, payment_date, created_at, updated_at, \
    raw_json, first_seen_at, last_seen_at, deleted_at, sequence, raw_hash";

/// The PostgreSQL type of each of [`COLUMNS`], in order: its array's element type in
/// [`upsert_pg_text`] (the `payment_link` table of `migrations/postgres/0001_init.sql`).
/// [`LinkRows::push`] gives a `bigint` column a [`Value::Int`] and a `text` one a
/// [`Value::Text`].
const PG_TYPES: [&str; COLUMN_COUNT] = [
    "text", "bigint", "text", "text", "text", "text", "text", "bigint", "bigint", "bigint",
    "bigint", "text", "text", "text", "text", "text", "text", "text", "text", "text", "text",
    "text", "text", "bigint", "text",
];

/// What an upsert of [`COLUMNS`] does to a link already stored: every column but the key and
/// `first_seen_at` takes the new row's value.
fn upsert_conflict() -> String {
    format!(
        "ON CONFLICT (account_id, link_id) DO UPDATE SET {}",
        super::backend::set_excluded(COLUMNS, &["account_id", "link_id", "first_seen_at"])
    )
}

/// SQLite's upsert of one row of [`COLUMNS`] (`sqlite_rows::insert_text`: anonymous
/// parameters, bound by position). Built once.
fn upsert_sqlite_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        super::sqlite_rows::insert_text("payment_link", COLUMNS, COLUMN_COUNT, &upsert_conflict())
    })
}

/// PostgreSQL's upsert of any number of rows of [`COLUMNS`]: one array parameter per column
/// (`$1::text[]` … `$25::text[]`, [`PG_TYPES`]), the rows made by `unnest`. One text for every
/// row count, planned in less time. Before, the rows went as 25 parameters
/// each in statements of up to 400 rows: 774 statements for a baseline import of 100,000 links,
/// each planned again at every execution (`plan_cache_mode`) in 0.92 ms of the server's time
/// (`bind` in the server's statement log) beside 2.37 ms of execution; as arrays, 535
/// statements bound in 0.52 ms each (docs/PERFORMANCE.md). Built once.
fn upsert_pg_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        super::pg_arrays::insert_text("payment_link", COLUMNS, &PG_TYPES, &upsert_conflict())
    })
}

/// Number of [`COLUMNS`].
const COLUMN_COUNT: usize = 25;

/// Link rows to insert or update, encoded into column values as they are added: the pass
/// encodes a page while the ledger writer is still committing earlier ones, and the writer only
/// binds and executes: on SQLite in place, row by row ([`super::sqlite_rows`]); on PostgreSQL
/// the rows of the pages committed together go in one statement of column arrays
/// ([`upsert_pg_text`]). Memory: the rows' texts (moved, not copied) until the commit.
#[derive(Debug, Default)]
pub(crate) struct LinkRows {
    /// [`COLUMN_COUNT`] values per row, in [`COLUMNS`] order.
    values: Vec<Value<'static>>,
    /// Each row's link id (one statement cannot upsert a row twice).
    ids: Vec<i64>,
}

impl LinkRows {
    /// Makes room for `rows` more rows, so that adding a page's rows does not grow the values
    /// by doubling (each growth a copy of what is there, and at tens of KB a large allocation).
    /// Measured when SQLite's rows still went through sqlx, with its arguments reserved too: a
    /// baseline import of 10,000 links 1,842.8–1,844.7 M → 1,828.1–1,830.0 M instructions
    /// (−0.8%; callgrind in `cargo bench --bench sync`).
    pub(crate) fn reserve(&mut self, rows: usize) {
        self.values.reserve(rows * COLUMN_COUNT);
        self.ids.reserve(rows);
    }

    /// Adds one row (its link id must not already be in this set: one statement cannot upsert
    /// a row twice). Values are bound at commit, where a text the database refuses fails the
    /// commit.
    pub(crate) fn push(&mut self, w: LinkWrite) {
        let args = &mut self.values;
        let l = w.link;
        self.ids.push(l.id.0);
        let now = ledger_ts(w.now);
        let text = |v: String| Value::text(Some(v));
        args.extend([
            text(w.account_id.as_str().to_owned()),
            Value::Int(Some(l.id.0)),
            text(l.reff_no),
            Value::text(l.title),
            Value::text(l.payment_url),
            text(l.status),
            text(l.status_computed),
            Value::Int(Some(l.is_expired as i64)),
            Value::Int(l.required_customer_detail.map(|b| b as i64)),
            Value::Int(l.max_usage),
            Value::Int(Some(l.current_usage)),
            Value::text(l.expired_at.map(ledger_ts)),
            Value::text(l.total_amount.map(|d| d.to_string())),
            Value::text(json_opt(&l.items)),
            Value::text(json_opt(&l.whitelisted_payment_method)),
            Value::text(l.redirect_url),
            Value::text(l.payment_date.map(ledger_ts)),
            Value::text(l.created_at.map(ledger_ts)),
            Value::text(l.updated_at.map(ledger_ts)),
            text(w.raw_json),
            text(now.clone()),
            text(now),
            Value::text(w.deleted_at.map(ledger_ts)),
            Value::Int(Some(w.sequence)),
            text(w.raw_hash),
        ]);
    }

    /// Whether there are no rows.
    pub(crate) fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Number of rows.
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }
}

/// The rows of `sets` for PostgreSQL: all their values, in order, and the ranges of those
/// values that go in one statement each. Usually one; a link id that repeats (a pass does not
/// write a link twice, so this is a defence) starts the next ([`super::pg_arrays::distinct_runs`]).
fn pg_statements(sets: Vec<LinkRows>) -> (Vec<Value<'static>>, Vec<std::ops::Range<usize>>) {
    let ids: Vec<i64> = sets.iter().flat_map(|s| s.ids.iter().copied()).collect();
    let mut values = Vec::with_capacity(ids.len() * COLUMN_COUNT);
    for set in sets {
        values.extend(set.values);
    }
    let runs = super::pg_arrays::distinct_runs(ids)
        .into_iter()
        .map(|r| r.start * COLUMN_COUNT..r.end * COLUMN_COUNT)
        .collect();
    (values, runs)
}

/// Executes the encoded upserts of `rows` (consumed, in order) inside `tx`: on SQLite one
/// prepared single-row statement stepped per row ([`execute_rows`]), on PostgreSQL one
/// statement of column arrays per run of [`pg_statements`] ([`upsert_pg_text`]).
pub(super) async fn upsert_many(
    tx: &mut Tx<'_>,
    rows: impl IntoIterator<Item = LinkRows>,
) -> LedgerResult<()> {
    let sets: Vec<LinkRows> = rows.into_iter().collect();
    match tx {
        Tx::Sqlite(t) => {
            // One single-row statement stepped per row, its values bound in place
            // (`sqlite_rows`); a link written twice is simply written twice, in order.
            let sets: Vec<&[Value<'_>]> = sets.iter().map(|s| s.values.as_slice()).collect();
            execute_rows(t, upsert_sqlite_text(), COLUMN_COUNT, &sets).await?;
        }
        Tx::Postgres(t) => {
            let (values, runs) = pg_statements(sets);
            for run in runs {
                super::pg_arrays::execute(
                    t,
                    upsert_pg_text(),
                    "payment_link",
                    &values[run],
                    &PG_TYPES,
                )
                .await?;
            }
        }
    }
    Ok(())
}

fn stored_from_row(r: &impl LedgerRow) -> LedgerResult<StoredLink> {
    let raw: String = r.col("raw_json")?;
    let link = PaymentLink::decode(&raw)
        .map_err(|e| LedgerError::Corrupt(format!("payment_link.raw_json: {e}")))?;
    Ok(StoredLink {
        link,
        sequence: r.col("sequence")?,
        deleted_at: parse_opt_ts(r.col("deleted_at")?)?,
    })
}

/// The link states of a query packed into one JSON text, `[[link_id, sequence, raw_hash,
/// deleted_at], …]` (NULL when no row matched). One row per query instead of one per link: sqlx
/// hands every row from its SQLite thread to the caller separately, which cost more than the
/// scan itself on a no-change pass (`cargo bench --bench sync`).
const STATES_JSON: &str = "json_group_array(json_array(link_id, sequence, raw_hash, deleted_at))";

/// [`STATES_JSON`] on PostgreSQL.
const STATES_JSON_PG: &str =
    "json_agg(json_build_array(link_id, sequence, raw_hash, deleted_at))::text";

/// Decodes [`STATES_JSON`].
fn unpack_states(packed: Option<String>) -> LedgerResult<Vec<(LinkId, LinkState)>> {
    let Some(packed) = packed else {
        return Ok(Vec::new());
    };
    let rows: Vec<(i64, i64, String, Option<String>)> = serde_json::from_str(&packed)
        .map_err(|e| LedgerError::Corrupt(format!("payment_link states: {e}")))?;
    rows.into_iter()
        .map(|(id, sequence, raw_hash, deleted_at)| {
            Ok((
                LinkId(id),
                LinkState {
                    sequence,
                    deleted_at: parse_opt_ts(deleted_at)?,
                    raw_hash,
                },
            ))
        })
        .collect()
}

impl Ledger {
    /// The stored rows of `ids` in `account` (deleted ones included), keyed by link id.
    pub(crate) async fn load_links(
        &self,
        account: &AccountId,
        ids: &[LinkId],
    ) -> LedgerResult<HashMap<LinkId, StoredLink>> {
        on_pool!(self.pool, |p| {
            if ids.is_empty() {
                // A page where nothing changed asks for nothing: no round trip.
                return Ok(HashMap::new());
            }
            let rows = sqlx::query(sql!(
                PG,
                "SELECT link_id, raw_json, sequence, deleted_at FROM payment_link \
                 WHERE account_id = $1 AND link_id IN (SELECT value FROM json_each($2))"
            ))
            .bind(account.as_str())
            .bind(super::ids_json(ids.iter().map(|i| i.0))?)
            .fetch_all(p)
            .await?;
            let mut out = HashMap::with_capacity(rows.len());
            for r in &rows {
                out.insert(LinkId(r.try_get("link_id")?), stored_from_row(r)?);
            }
            Ok(out)
        })
    }

    /// The stored state of the links with ids in `[min, max]` of `ids` in `account` (deleted
    /// ones included): raw hash, sequence, deletion. A list page is a contiguous id range
    /// (newest first), so this is one range scan of the `payment_link_state` covering index.
    pub(crate) async fn load_link_states(
        &self,
        account: &AccountId,
        ids: &[LinkId],
    ) -> LedgerResult<HashMap<LinkId, LinkState>> {
        on_pool!(self.pool, |p| {
            let (Some(min), Some(max)) = (ids.iter().min(), ids.iter().max()) else {
                return Ok(HashMap::new());
            };
            let packed: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM payment_link \
                 WHERE account_id = $1 AND link_id BETWEEN $2 AND $3",
                if PG { STATES_JSON_PG } else { STATES_JSON }
            )))
            .bind(account.as_str())
            .bind(min.0)
            .bind(max.0)
            .fetch_one(p)
            .await?;
            Ok(unpack_states(packed)?.into_iter().collect())
        })
    }

    /// The stored state of up to `limit` links of `account` with ids ≤ `max_id` (the highest
    /// ones; deleted ones included), in no particular order. A pass reads pages newest id first,
    /// so one call covers the next several pages.
    pub(crate) async fn load_link_states_below(
        &self,
        account: &AccountId,
        max_id: LinkId,
        limit: i64,
    ) -> LedgerResult<Vec<(LinkId, LinkState)>> {
        on_pool!(self.pool, |p| {
            let packed: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT {} FROM (SELECT link_id, sequence, raw_hash, deleted_at \
                 FROM payment_link WHERE account_id = $1 AND link_id <= $2 \
                 ORDER BY link_id DESC LIMIT $3) AS s",
                if PG { STATES_JSON_PG } else { STATES_JSON }
            )))
            .bind(account.as_str())
            .bind(max_id.0)
            .bind(limit)
            .fetch_one(p)
            .await?;
            unpack_states(packed)
        })
    }

    /// Ids of the account's links not marked deleted, ascending.
    pub(crate) async fn live_link_ids(&self, account: &AccountId) -> LedgerResult<Vec<LinkId>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(
                "SELECT link_id FROM payment_link WHERE account_id = $1 AND deleted_at IS NULL ORDER BY link_id",
            )
            .bind(account.as_str())
            .fetch_all(p)
            .await?;
            rows.iter().map(|r| Ok(LinkId(r.try_get(0)?))).collect()
        })
    }

    /// One stored link.
    pub async fn get_link(
        &self,
        account: &AccountId,
        id: LinkId,
    ) -> LedgerResult<Option<StoredLink>> {
        Ok(self.load_links(account, &[id]).await?.remove(&id))
    }

    /// A page of an account's mirrored links, newest id first: `(links, total)`.
    pub async fn list_links(
        &self,
        account: &AccountId,
        limit: i64,
        offset: i64,
    ) -> LedgerResult<(Vec<StoredLink>, i64)> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(
                "SELECT link_id, raw_json, sequence, deleted_at FROM payment_link \
                 WHERE account_id = $1 ORDER BY link_id DESC LIMIT $2 OFFSET $3",
            )
            .bind(account.as_str())
            .bind(limit)
            .bind(offset)
            .fetch_all(p)
            .await?;
            let total: i64 = sqlx::query("SELECT COUNT(*) FROM payment_link WHERE account_id = $1")
                .bind(account.as_str())
                .fetch_one(p)
                .await?
                .try_get(0)?;
            Ok((
                rows.iter()
                    .map(stored_from_row)
                    .collect::<LedgerResult<_>>()?,
                total,
            ))
        })
    }

    /// Number of mirrored links of an account that are not deleted.
    pub async fn count_live_links(&self, account: &AccountId) -> LedgerResult<i64> {
        on_pool!(self.pool, |p| {
            Ok(sqlx::query(
                "SELECT COUNT(*) FROM payment_link WHERE account_id = $1 AND deleted_at IS NULL",
            )
            .bind(account.as_str())
            .fetch_one(p)
            .await?
            .try_get(0)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_sharing_a_link_id_go_in_statements_of_their_own_and_others_share_one() {
        let set = |ids: &[i64]| LinkRows {
            values: ids
                .iter()
                .flat_map(|&id| (0..COLUMN_COUNT).map(move |_| Value::Int(Some(id))))
                .collect(),
            ids: ids.to_vec(),
        };
        let w = COLUMN_COUNT;
        let (values, runs) = pg_statements(vec![set(&[1, 2, 3]), set(&[4, 5])]);
        assert_eq!(
            (values.len(), runs.len(), runs[0].clone()),
            (5 * w, 1, 0..5 * w)
        );
        let (values, runs) = pg_statements(vec![set(&[1, 2, 3]), set(&[3, 9])]);
        assert_eq!(runs, vec![0..3 * w, 3 * w..5 * w]);
        let first_ids: Vec<Option<i64>> = values[runs[1].clone()]
            .iter()
            .step_by(w)
            .map(|v| match v {
                Value::Int(i) => *i,
                Value::Text(_) => None,
            })
            .collect();
        assert_eq!(first_ids, vec![Some(3), Some(9)]);
        let (values, runs) = pg_statements(Vec::new());
        assert!(values.is_empty() && runs.is_empty());
    }

    #[test]
    fn upsert_texts_take_one_row_on_sqlite_and_one_array_per_column_on_postgres() {
        assert_eq!(COLUMNS.split(',').count(), COLUMN_COUNT);
        let row = format!("({})", vec!["?"; COLUMN_COUNT].join(", "));
        let lite = upsert_sqlite_text();
        assert_eq!(lite.matches('?').count(), COLUMN_COUNT);
        assert!(
            lite.contains(&format!("VALUES {row} ON CONFLICT")),
            "{lite}"
        );
        let pg = upsert_pg_text();
        assert!(
            pg.contains(
                "unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
                 $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], \
                 $11::bigint[], $12::text[], $13::text[], $14::text[], $15::text[], \
                 $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], $21::text[], \
                 $22::text[], $23::text[], $24::bigint[], $25::text[]) ON CONFLICT"
            ),
            "{pg}"
        );
    }

    #[test]
    fn a_stored_link_takes_every_new_value_but_its_key_and_first_seen_at() {
        let set = upsert_conflict();
        let kept = ["account_id", "link_id", "first_seen_at"];
        super::super::backend::assert_sets_all_but(&set, COLUMNS, &kept);
        assert!(set.starts_with("ON CONFLICT (account_id, link_id) DO UPDATE SET reff_no"));
    }

    #[test]
    fn a_pushed_rows_values_are_of_their_postgres_columns_kinds() {
        let mut rows = LinkRows::default();
        rows.push(super::super::tests::write(7));
        assert_eq!(rows.values.len(), COLUMN_COUNT);
        super::super::pg_arrays::assert_binds(&rows.values, &PG_TYPES);
    }
}

//! `payment_link`: the mirror.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, Transaction};

use crate::singapay::PaymentLink;
use crate::time::ledger_ts;
use crate::types::{AccountId, LinkId};

use super::{Ledger, LedgerError, LedgerResult, parse_opt_ts};

/// A link row as stored: the canonical object and the bookkeeping the diff needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLink {
    /// The mirrored link.
    pub link: PaymentLink,
    /// SHA-256 (hex) of the canonical object JSON.
    pub content_hash: String,
    /// Sequence of the link's last event (0 = none yet).
    pub sequence: i64,
    /// When it was confirmed deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
}

/// What a pass needs to know of a stored row to decide whether it changed: the hash, and the
/// canonical object only to be parsed when the hash differs.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkState {
    /// SHA-256 (hex) of the canonical object JSON.
    pub content_hash: String,
    /// Sequence of the link's last event.
    pub sequence: i64,
    /// When it was confirmed deleted, if it was.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The canonical object JSON.
    pub object_json: String,
}

impl LinkState {
    /// Parses the stored object. Errors if the ledger row is corrupt.
    pub fn link(&self) -> LedgerResult<PaymentLink> {
        serde_json::from_str(&self.object_json)
            .map_err(|e| LedgerError::Corrupt(format!("payment_link.object_json: {e}")))
    }
}

/// A row to insert or update.
#[derive(Debug, Clone)]
pub struct LinkWrite {
    /// Account owning the link.
    pub account_id: AccountId,
    /// The canonical link.
    pub link: PaymentLink,
    /// Canonical JSON of `link` (also the events' `data.object`).
    pub object_json: String,
    /// SHA-256 (hex) of `object_json`.
    pub content_hash: String,
    /// SingaPay's JSON, verbatim.
    pub raw_json: String,
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

pub(super) async fn upsert(tx: &mut Transaction<'_, Sqlite>, w: &LinkWrite) -> LedgerResult<()> {
    let l = &w.link;
    sqlx::query(
        "INSERT INTO payment_link (account_id, link_id, reff_no, title, payment_url, status, \
         status_computed, is_expired, required_customer_detail, max_usage, current_usage, expired_at, \
         total_amount, items_json, whitelisted_payment_method, redirect_url, payment_date, created_at, \
         updated_at, object_json, content_hash, raw_json, first_seen_at, last_seen_at, deleted_at, sequence) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, \
         ?21, ?22, ?23, ?23, ?24, ?25) \
         ON CONFLICT (account_id, link_id) DO UPDATE SET reff_no = excluded.reff_no, title = excluded.title, \
         payment_url = excluded.payment_url, status = excluded.status, status_computed = excluded.status_computed, \
         is_expired = excluded.is_expired, required_customer_detail = excluded.required_customer_detail, \
         max_usage = excluded.max_usage, current_usage = excluded.current_usage, expired_at = excluded.expired_at, \
         total_amount = excluded.total_amount, items_json = excluded.items_json, \
         whitelisted_payment_method = excluded.whitelisted_payment_method, redirect_url = excluded.redirect_url, \
         payment_date = excluded.payment_date, created_at = excluded.created_at, updated_at = excluded.updated_at, \
         object_json = excluded.object_json, content_hash = excluded.content_hash, raw_json = excluded.raw_json, \
         last_seen_at = excluded.last_seen_at, deleted_at = excluded.deleted_at, sequence = excluded.sequence",
    )
    .bind(w.account_id.as_str())
    .bind(l.id.0)
    .bind(&l.reff_no)
    .bind(&l.title)
    .bind(&l.payment_url)
    .bind(&l.status)
    .bind(&l.status_computed)
    .bind(l.is_expired as i64)
    .bind(l.required_customer_detail.map(|b| b as i64))
    .bind(l.max_usage)
    .bind(l.current_usage)
    .bind(l.expired_at.map(ledger_ts))
    .bind(l.total_amount.map(|d| d.to_string()))
    .bind(json_opt(&l.items))
    .bind(json_opt(&l.whitelisted_payment_method))
    .bind(&l.redirect_url)
    .bind(l.payment_date.map(ledger_ts))
    .bind(l.created_at.map(ledger_ts))
    .bind(l.updated_at.map(ledger_ts))
    .bind(&w.object_json)
    .bind(&w.content_hash)
    .bind(&w.raw_json)
    .bind(ledger_ts(w.now))
    .bind(w.deleted_at.map(ledger_ts))
    .bind(w.sequence)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn stored_from_row(r: &sqlx::sqlite::SqliteRow) -> LedgerResult<StoredLink> {
    let object: String = r.try_get("object_json")?;
    let link: PaymentLink = serde_json::from_str(&object)
        .map_err(|e| LedgerError::Corrupt(format!("payment_link.object_json: {e}")))?;
    Ok(StoredLink {
        link,
        content_hash: r.try_get("content_hash")?,
        sequence: r.try_get("sequence")?,
        deleted_at: parse_opt_ts(r.try_get("deleted_at")?)?,
    })
}

impl Ledger {
    /// The stored rows of `ids` in `account` (deleted ones included), keyed by link id.
    pub async fn load_links(
        &self,
        account: &AccountId,
        ids: &[LinkId],
    ) -> LedgerResult<HashMap<LinkId, StoredLink>> {
        let ids_json = serde_json::to_string(&ids.iter().map(|i| i.0).collect::<Vec<_>>())
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT link_id, object_json, content_hash, sequence, deleted_at FROM payment_link \
             WHERE account_id = ? AND link_id IN (SELECT value FROM json_each(?))",
        )
        .bind(account.as_str())
        .bind(ids_json)
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            out.insert(LinkId(r.try_get("link_id")?), stored_from_row(r)?);
        }
        Ok(out)
    }

    /// The stored state of `ids` in `account` (deleted ones included), without parsing objects.
    pub async fn load_link_states(
        &self,
        account: &AccountId,
        ids: &[LinkId],
    ) -> LedgerResult<HashMap<LinkId, LinkState>> {
        let ids_json = serde_json::to_string(&ids.iter().map(|i| i.0).collect::<Vec<_>>())
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let rows = sqlx::query(
            "SELECT link_id, object_json, content_hash, sequence, deleted_at FROM payment_link \
             WHERE account_id = ? AND link_id IN (SELECT value FROM json_each(?))",
        )
        .bind(account.as_str())
        .bind(ids_json)
        .fetch_all(&self.pool)
        .await?;
        let mut out = HashMap::with_capacity(rows.len());
        for r in &rows {
            out.insert(
                LinkId(r.try_get("link_id")?),
                LinkState {
                    content_hash: r.try_get("content_hash")?,
                    sequence: r.try_get("sequence")?,
                    deleted_at: parse_opt_ts(r.try_get("deleted_at")?)?,
                    object_json: r.try_get("object_json")?,
                },
            );
        }
        Ok(out)
    }

    /// Ids of the account's links not marked deleted, ascending.
    pub async fn live_link_ids(&self, account: &AccountId) -> LedgerResult<Vec<LinkId>> {
        let rows = sqlx::query(
            "SELECT link_id FROM payment_link WHERE account_id = ? AND deleted_at IS NULL ORDER BY link_id",
        )
        .bind(account.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(LinkId(r.try_get(0)?))).collect()
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
        let rows = sqlx::query(
            "SELECT link_id, object_json, content_hash, sequence, deleted_at FROM payment_link \
             WHERE account_id = ? ORDER BY link_id DESC LIMIT ? OFFSET ?",
        )
        .bind(account.as_str())
        .bind(limit)
        .bind(offset)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) FROM payment_link WHERE account_id = ?")
            .bind(account.as_str())
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok((
            rows.iter()
                .map(stored_from_row)
                .collect::<LedgerResult<_>>()?,
            total,
        ))
    }

    /// Number of mirrored links of an account that are not deleted.
    pub async fn count_live_links(&self, account: &AccountId) -> LedgerResult<i64> {
        Ok(sqlx::query(
            "SELECT COUNT(*) FROM payment_link WHERE account_id = ? AND deleted_at IS NULL",
        )
        .bind(account.as_str())
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?)
    }
}

//! `link_intent` and `idempotency_key`: what makes a create through the daemon happen once
//! (DESIGN §15), and the mirror's answers the management API needs.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::time::ledger_ts;
use crate::types::{AccountId, LinkId};

use super::backend::on_pool;
use super::{Ledger, LedgerResult};

/// What [`Ledger::begin_intent`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Recorded now: go ahead and create.
    New,
    /// An earlier create of this reff_no has not finished (since this time: still in flight
    /// elsewhere, or lost to a crash): resolve it first.
    Pending(DateTime<Utc>),
    /// The link was created (its id).
    Created(LinkId),
}

/// A stored answer to an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    /// SHA-256 of the body it answered.
    pub request_hash: String,
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub response: String,
}

impl Ledger {
    /// Records the intent to create `reff_no` in `account` (request hash `hash`), unless one is
    /// recorded: then says what it is.
    pub(crate) async fn begin_intent(
        &self,
        account: &AccountId,
        reff_no: &str,
        hash: &str,
        now: DateTime<Utc>,
    ) -> LedgerResult<Intent> {
        on_pool!(self.pool, |p| {
            let inserted = sqlx::query(
                "INSERT INTO link_intent (account_id, reff_no, request_hash, state, created_at, \
                 updated_at) VALUES ($1, $2, $3, 'pending', $4, $4) ON CONFLICT DO NOTHING",
            )
            .bind(account.as_str())
            .bind(reff_no)
            .bind(hash)
            .bind(ledger_ts(now))
            .execute(p)
            .await?
            .rows_affected();
            if inserted == 1 {
                return Ok(Intent::New);
            }
            let r = sqlx::query(
                "SELECT state, link_id, updated_at FROM link_intent \
                 WHERE account_id = $1 AND reff_no = $2",
            )
            .bind(account.as_str())
            .bind(reff_no)
            .fetch_one(p)
            .await?;
            let state: String = r.try_get(0)?;
            let link: Option<i64> = r.try_get(1)?;
            Ok(match (state.as_str(), link) {
                ("created", Some(id)) => Intent::Created(LinkId(id)),
                _ => Intent::Pending(super::parse_ts(&r.try_get::<String, _>(2)?)?),
            })
        })
    }

    /// Marks the intent for `reff_no` created as link `id`.
    pub(crate) async fn intent_created(
        &self,
        account: &AccountId,
        reff_no: &str,
        id: LinkId,
        now: DateTime<Utc>,
    ) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            sqlx::query(
                "UPDATE link_intent SET state = 'created', link_id = $3, updated_at = $4 \
                 WHERE account_id = $1 AND reff_no = $2",
            )
            .bind(account.as_str())
            .bind(reff_no)
            .bind(id.0)
            .bind(ledger_ts(now))
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Forgets the intent for `reff_no` (SingaPay refused the create, or it proved not to exist).
    pub(crate) async fn drop_intent(&self, account: &AccountId, reff_no: &str) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            sqlx::query("DELETE FROM link_intent WHERE account_id = $1 AND reff_no = $2")
                .bind(account.as_str())
                .bind(reff_no)
                .execute(p)
                .await?;
            Ok(())
        })
    }

    /// The answer stored for `key` in `account`, if younger than `since`.
    pub(crate) async fn idempotent_answer(
        &self,
        account: &AccountId,
        key: &str,
        since: DateTime<Utc>,
    ) -> LedgerResult<Option<StoredAnswer>> {
        on_pool!(self.pool, |p| {
            let r = sqlx::query(
                "SELECT request_hash, status, response FROM idempotency_key \
                 WHERE account_id = $1 AND key = $2 AND created_at >= $3",
            )
            .bind(account.as_str())
            .bind(key)
            .bind(ledger_ts(since))
            .fetch_optional(p)
            .await?;
            r.map(|r| {
                Ok(StoredAnswer {
                    request_hash: r.try_get(0)?,
                    status: r.try_get::<i64, _>(1)? as u16,
                    response: r.try_get(2)?,
                })
            })
            .transpose()
        })
    }

    /// Stores the answer to `key` (replacing an expired one).
    pub(crate) async fn store_answer(
        &self,
        account: &AccountId,
        key: &str,
        answer: &StoredAnswer,
        now: DateTime<Utc>,
    ) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            sqlx::query(
                "INSERT INTO idempotency_key (account_id, key, request_hash, status, response, \
                 created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (account_id, key) DO UPDATE \
                 SET request_hash = excluded.request_hash, status = excluded.status, \
                 response = excluded.response, created_at = excluded.created_at",
            )
            .bind(account.as_str())
            .bind(key)
            .bind(&answer.request_hash)
            .bind(answer.status as i64)
            .bind(&answer.response)
            .bind(ledger_ts(now))
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// The live mirrored link of `account` with merchant reference `reff_no`.
    pub(crate) async fn live_link_by_reff(
        &self,
        account: &AccountId,
        reff_no: &str,
    ) -> LedgerResult<Option<LinkId>> {
        on_pool!(self.pool, |p| {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT link_id FROM payment_link WHERE account_id = $1 AND reff_no = $2 \
                 AND deleted_at IS NULL ORDER BY link_id DESC LIMIT 1",
            )
            .bind(account.as_str())
            .bind(reff_no)
            .fetch_optional(p)
            .await?;
            Ok(id.map(LinkId))
        })
    }

    /// Whether link `id` of `account` has any mirrored payment (history row).
    pub(crate) async fn link_has_payments(
        &self,
        account: &AccountId,
        id: LinkId,
    ) -> LedgerResult<bool> {
        on_pool!(self.pool, |p| {
            // Two indexed probes (by link id, by the link's reff_no), not a scan.
            let n: i64 = sqlx::query_scalar(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM payment WHERE account_id = $1 AND link_id = $2) \
                 OR EXISTS (SELECT 1 FROM payment WHERE account_id = $1 AND payment_link_reff_no = \
                 (SELECT reff_no FROM payment_link WHERE account_id = $1 AND link_id = $2)) \
                 THEN CAST(1 AS BIGINT) ELSE CAST(0 AS BIGINT) END",
            )
            .bind(account.as_str())
            .bind(id.0)
            .fetch_one(p)
            .await?;
            Ok(n > 0)
        })
    }
}

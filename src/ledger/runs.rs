//! `sync_run` and `account_state`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::time::ledger_ts;
use crate::types::{AccountId, Trigger};

use super::{Ledger, LedgerResult, parse_opt_ts, parse_ts};

/// One pass as recorded (`GET /sync-runs/{id}`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SyncRunRow {
    /// Run id.
    pub id: i64,
    /// Account synced.
    pub account_id: String,
    /// `schedule`, `manual` or `webhook`.
    pub trigger: String,
    /// Start, UTC.
    pub started_at: DateTime<Utc>,
    /// End, UTC; `None` while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether this pass was the account's baseline.
    pub baseline: bool,
    /// Pages committed.
    pub pages: i64,
    /// Distinct links read.
    pub links_seen: i64,
    /// `payment_link` rows inserted or updated.
    pub links_written: i64,
    /// Events emitted.
    pub changes: i64,
    /// `running`, `succeeded` or `failed`.
    pub outcome: String,
    /// Why it failed.
    pub error: Option<String>,
}

impl Ledger {
    /// Whether the account's baseline (first complete pass) is done.
    pub(crate) async fn baseline_done(&self, account: &AccountId) -> LedgerResult<bool> {
        let row =
            sqlx::query("SELECT baseline_completed_at FROM account_state WHERE account_id = ?")
                .bind(account.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match row {
            Some(r) => r.try_get::<Option<String>, _>(0)?.is_some(),
            None => false,
        })
    }

    /// Records the start of a pass; returns its run id.
    pub async fn start_run(
        &self,
        account: &AccountId,
        trigger: Trigger,
        baseline: bool,
        now: DateTime<Utc>,
    ) -> LedgerResult<i64> {
        let r = sqlx::query(
            "INSERT INTO sync_run (account_id, trigger, started_at, baseline) VALUES (?, ?, ?, ?)",
        )
        .bind(account.as_str())
        .bind(trigger.as_str())
        .bind(ledger_ts(now))
        .bind(baseline as i64)
        .execute(&self.pool)
        .await?;
        Ok(r.last_insert_rowid())
    }

    /// Records the end of a pass with its page and link counts. On success also marks the account's
    /// baseline done (if this was it) and its last success time.
    pub(crate) async fn finish_run(
        &self,
        run_id: i64,
        account: &AccountId,
        result: Result<(), String>,
        (pages, links_seen): (i64, i64),
        now: DateTime<Utc>,
    ) -> LedgerResult<()> {
        let mut tx = self.pool.begin().await?;
        let (outcome, error) = match &result {
            Ok(()) => ("succeeded", None),
            Err(e) => ("failed", Some(e.clone())),
        };
        sqlx::query(
            "UPDATE sync_run SET finished_at = ?, outcome = ?, error = ?, pages = ?, links_seen = ? \
             WHERE id = ?",
        )
        .bind(ledger_ts(now))
        .bind(outcome)
        .bind(error)
        .bind(pages)
        .bind(links_seen)
        .bind(run_id)
            .execute(&mut *tx)
            .await?;
        if result.is_ok() {
            sqlx::query(
                "INSERT INTO account_state (account_id, baseline_completed_at, last_success_at) \
                 VALUES (?1, ?2, ?2) ON CONFLICT (account_id) DO UPDATE SET \
                 baseline_completed_at = COALESCE(baseline_completed_at, ?2), last_success_at = ?2",
            )
            .bind(account.as_str())
            .bind(ledger_ts(now))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Marks runs left `running` by a crash as failed (called at start).
    pub(crate) async fn fail_abandoned_runs(&self, now: DateTime<Utc>) -> LedgerResult<u64> {
        let r = sqlx::query(
            "UPDATE sync_run SET outcome = 'failed', finished_at = ?, \
             error = 'interrupted: the daemon stopped during the pass' WHERE outcome = 'running'",
        )
        .bind(ledger_ts(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// The account's last successful pass end, if any (for `/readyz`).
    pub(crate) async fn last_success(
        &self,
        account: &AccountId,
    ) -> LedgerResult<Option<DateTime<Utc>>> {
        let row = sqlx::query("SELECT last_success_at FROM account_state WHERE account_id = ?")
            .bind(account.as_str())
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => parse_opt_ts(r.try_get(0)?),
            None => Ok(None),
        }
    }

    /// One run by id.
    pub async fn get_run(&self, id: i64) -> LedgerResult<Option<SyncRunRow>> {
        let row = sqlx::query(
            "SELECT id, account_id, trigger, started_at, finished_at, baseline, pages, links_seen, \
             links_written, changes, outcome, error FROM sync_run WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| -> LedgerResult<SyncRunRow> {
            Ok(SyncRunRow {
                id: r.try_get(0)?,
                account_id: r.try_get(1)?,
                trigger: r.try_get(2)?,
                started_at: parse_ts(&r.try_get::<String, _>(3)?)?,
                finished_at: parse_opt_ts(r.try_get(4)?)?,
                baseline: r.try_get::<i64, _>(5)? != 0,
                pages: r.try_get(6)?,
                links_seen: r.try_get(7)?,
                links_written: r.try_get(8)?,
                changes: r.try_get(9)?,
                outcome: r.try_get(10)?,
                error: r.try_get(11)?,
            })
        })
        .transpose()
    }
}

//! `sync_run` and `account_state`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::time::ledger_ts;
use crate::types::{AccountId, Trigger};

use super::backend::on_pool;
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
    /// Links found missing whose deletion this pass held back (more than `sync.max_deletions`,
    /// or an empty list); 0 when none was held.
    pub deletions_held: i64,
    /// Payment Link History pages read.
    pub history_pages: i64,
    /// Distinct history rows read.
    pub payments_seen: i64,
    /// `payment` rows inserted or updated.
    pub payments_written: i64,
}

/// How a pass ended, as [`Ledger::finish_run`] records it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunEnd {
    /// `Ok` or why it failed.
    pub result: Result<(), String>,
    /// Pages read.
    pub pages: i64,
    /// Distinct links read.
    pub links_seen: i64,
    /// Deletions held back.
    pub deletions_held: i64,
    /// History pages read.
    pub history_pages: i64,
    /// Distinct history rows read.
    pub payments_seen: i64,
    /// Whether the pass read the whole history (it then completes the history baseline).
    pub history_complete: bool,
    /// Whether it was a sweep of the whole account (a targeted pass is not: it leaves the
    /// account's last success and held deletions as they were).
    pub complete: bool,
}

/// Which baselines of an account are done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Baselines {
    /// The links' (the first complete pass).
    pub links: bool,
    /// The history's (the first complete read of Payment Link History).
    pub history: bool,
}

/// An account's state for `/readyz`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct AccountStatus {
    /// End of the last successful pass.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Deletions the last successful pass held back.
    pub deletions_held: i64,
}

impl Ledger {
    /// Whether the account's baseline (first complete pass) is done.
    pub(crate) async fn baselines(&self, account: &AccountId) -> LedgerResult<Baselines> {
        on_pool!(self.pool, |p| {
            let row = sqlx::query(
                "SELECT baseline_completed_at, history_baseline_at FROM account_state \
                 WHERE account_id = $1",
            )
            .bind(account.as_str())
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(r) => Baselines {
                    links: r.try_get::<Option<String>, _>(0)?.is_some(),
                    history: r.try_get::<Option<String>, _>(1)?.is_some(),
                },
                None => Baselines::default(),
            })
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
        on_pool!(self.pool, |p| {
            let r = sqlx::query(
                "INSERT INTO sync_run (account_id, trigger, started_at, baseline) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(account.as_str())
            .bind(trigger.as_str())
            .bind(ledger_ts(now))
            .bind(baseline as i64)
            .fetch_one(p)
            .await?;
            Ok(r.try_get::<i64, _>(0)?)
        })
    }

    /// Records the end of a pass: its outcome and counts. On success also marks the account's
    /// baseline done (if this was it), its last success time and the deletions this pass held.
    pub(crate) async fn finish_run(
        &self,
        run_id: i64,
        account: &AccountId,
        end: &RunEnd,
        now: DateTime<Utc>,
    ) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            let mut tx = p.begin().await?;
            let (outcome, error) = match &end.result {
                Ok(()) => ("succeeded", None),
                Err(e) => ("failed", Some(e.as_str())),
            };
            sqlx::query(
                "UPDATE sync_run SET finished_at = $1, outcome = $2, error = $3, pages = $4, links_seen = $5, \
                 deletions_held = $6, history_pages = $7, payments_seen = $8 WHERE id = $9",
            )
            .bind(ledger_ts(now))
            .bind(outcome)
            .bind(error)
            .bind(end.pages)
            .bind(end.links_seen)
            .bind(end.deletions_held)
            .bind(end.history_pages)
            .bind(end.payments_seen)
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            if end.result.is_ok() && end.complete {
                sqlx::query(
                    "INSERT INTO account_state (account_id, baseline_completed_at, last_success_at, \
                     deletions_held, history_baseline_at) \
                     VALUES ($1, $2, $2, $3, CASE WHEN $4 THEN $2 END) \
                     ON CONFLICT (account_id) DO UPDATE SET \
                     baseline_completed_at = COALESCE(account_state.baseline_completed_at, $2), last_success_at = $2, \
                     deletions_held = $3, \
                     history_baseline_at = COALESCE(account_state.history_baseline_at, CASE WHEN $4 THEN $2 END)",
                )
                .bind(account.as_str())
                .bind(ledger_ts(now))
                .bind(end.deletions_held)
                .bind(end.history_complete)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Marks runs left `running` by a crash as failed (called at start).
    pub(crate) async fn fail_abandoned_runs(&self, now: DateTime<Utc>) -> LedgerResult<u64> {
        on_pool!(self.pool, |p| {
            let r = sqlx::query(
                "UPDATE sync_run SET outcome = 'failed', finished_at = $1, \
                 error = 'interrupted: the daemon stopped during the pass' WHERE outcome = 'running'",
            )
            .bind(ledger_ts(now))
            .execute(p)
            .await?;
            Ok(r.rows_affected())
        })
    }

    /// What `/readyz` needs of an account: its last successful pass and the deletions it held.
    pub(crate) async fn account_status(&self, account: &AccountId) -> LedgerResult<AccountStatus> {
        on_pool!(self.pool, |p| {
            let row = sqlx::query(
                "SELECT last_success_at, deletions_held FROM account_state WHERE account_id = $1",
            )
            .bind(account.as_str())
            .fetch_optional(p)
            .await?;
            match row {
                Some(r) => Ok(AccountStatus {
                    last_success_at: parse_opt_ts(r.try_get("last_success_at")?)?,
                    deletions_held: r.try_get("deletions_held")?,
                }),
                None => Ok(AccountStatus::default()),
            }
        })
    }

    /// One run by id.
    pub async fn get_run(&self, id: i64) -> LedgerResult<Option<SyncRunRow>> {
        on_pool!(self.pool, |p| {
            let row = sqlx::query(
                "SELECT id, account_id, trigger, started_at, finished_at, baseline, pages, links_seen, \
                 links_written, changes, outcome, error, deletions_held, history_pages, payments_seen, \
                 payments_written FROM sync_run WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(p)
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
                    deletions_held: r.try_get(12)?,
                    history_pages: r.try_get(13)?,
                    payments_seen: r.try_get(14)?,
                    payments_written: r.try_get(15)?,
                })
            })
            .transpose()
        })
    }

    /// The latest scheduled run of `account` started at or after `since`, if any (several
    /// instances fire the same cron slot: the later ones skip an account the first one took).
    pub(crate) async fn scheduled_run_since(
        &self,
        account: &AccountId,
        since: DateTime<Utc>,
    ) -> LedgerResult<Option<i64>> {
        on_pool!(self.pool, |p| {
            Ok(sqlx::query_scalar(
                "SELECT max(id) FROM sync_run WHERE account_id = $1 AND trigger = 'schedule' \
                 AND started_at >= $2",
            )
            .bind(account.as_str())
            .bind(ledger_ts(since))
            .fetch_one(p)
            .await?)
        })
    }
}

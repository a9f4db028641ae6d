//! Coordination of several instances sharing one PostgreSQL ledger (DESIGN §16), through
//! PostgreSQL alone: advisory locks. On SQLite (one instance per file) every lock here is
//! granted at once and costs nothing.
//!
//! Locks (PostgreSQL's two-key advisory locks, class [`LOCK_CLASS`]):
//! - per account, a session lock held for a whole pass ([`AccountLock`]): one pass per account
//!   cluster-wide. An instance holds all its account locks on one connection of its own (the lock
//!   session, not a pooled one), so fifty passes cost one connection; when the instance dies, the
//!   server ends that session and drops its locks;
//! - [`FEED_KEY`], a transaction lock taken before a transaction appends events: event `seq`s are
//!   then handed out in commit order, so a reader of the pull feed that has seen `seq` n can never
//!   later find a smaller one committed (ids stay monotonic per reader);
//! - [`CLAIM_KEY`], a transaction lock around a dispatcher's claim of due deliveries: two
//!   instances never claim two events of one link at once (per-link order across instances).
//! - [`PRUNE_KEY`], a transaction lock tried by each retention batch: one instance prunes at a
//!   time, the others skip the round (their deletes of the same rows would only wait on each
//!   other, or deadlock).

use chrono::{DateTime, Utc};
use sqlx::Connection;

use super::backend::Pool;
use super::{Ledger, LedgerResult};
use crate::time::ledger_ts;
use crate::types::AccountId;

/// First key of every advisory lock this daemon takes ("SPSY").
pub(crate) const LOCK_CLASS: i32 = 0x5350_5359;

/// Second key of the lock serialising event appends.
pub(crate) const FEED_KEY: i32 = 1;

/// Second key of the lock serialising delivery claims.
pub(crate) const CLAIM_KEY: i32 = 2;

/// Second key of the lock one retention batch holds at a time.
pub(crate) const PRUNE_KEY: i32 = 3;

/// The lock session: one connection kept apart from the pool, opened at the first lock.
pub(crate) type LockSession = std::sync::Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>;

/// A pass's hold on its account; dropping it releases the lock (PostgreSQL: an unlock on the
/// lock session, run on a task of its own).
#[derive(Debug)]
pub(crate) struct AccountLock {
    held: Option<(LockSession, AccountId)>,
}

impl Drop for AccountLock {
    fn drop(&mut self) {
        let Some((session, account)) = self.held.take() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return; // The process is ending: its session, and the lock, end with it.
        };
        rt.spawn(async move {
            let mut guard = session.lock().await;
            let Some(c) = guard.as_mut() else {
                return; // The session was lost, and its locks with it.
            };
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1, hashtext($2))")
                .bind(LOCK_CLASS)
                .bind(account.as_str())
                .execute(&mut *c)
                .await;
            if let Err(e) = unlocked {
                // Closing the session releases every lock it holds: the passes still running
                // here lose theirs, which only lets another instance start one early.
                tracing::warn!(error = %e, "ledger.account_unlock_failed: the lock session is reopened");
                *guard = None;
            }
        });
    }
}

impl Ledger {
    /// Takes `account`'s cluster-wide pass lock without waiting: `Ok(lock)`, or `Err(run)` when
    /// another instance holds it (`run`: the id of its running pass, or of the one it finished
    /// in the last 5 s and is about to unlock; looked for during up to half a second, since the
    /// holder records its run just after locking; 0 if none). Taking it also
    /// ends the runs of `account` left `running` by an instance that died (whoever holds the
    /// lock is the only one that can be running a pass), failed as interrupted.
    ///
    /// Errors: the ledger cannot be reached.
    pub(crate) async fn lock_account(
        &self,
        account: &AccountId,
        now: DateTime<Utc>,
    ) -> LedgerResult<Result<AccountLock, i64>> {
        let (Pool::Postgres(pool), Some(session)) = (&self.pool, &self.lock_session) else {
            return Ok(Ok(AccountLock { held: None }));
        };
        let got = {
            let mut guard = session.lock().await;
            if guard.is_none() {
                *guard = Some(pool.acquire().await?.detach());
            }
            let Some(c) = guard.as_mut() else {
                return Ok(Err(0));
            };
            let got =
                sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1, hashtext($2))")
                    .bind(LOCK_CLASS)
                    .bind(account.as_str())
                    .fetch_one(&mut *c)
                    .await;
            match got {
                Ok(got) => got,
                Err(e) => {
                    if let Some(c) = guard.take() {
                        let _ = c.close().await;
                    }
                    return Err(e.into());
                }
            }
        };
        if !got {
            // The holder records its run just after locking, and unlocks just after finishing:
            // its running run, else the one it finished a moment ago, else (rarely) wait a little.
            for _ in 0..5 {
                let seen: Option<i64> = sqlx::query_scalar(
                    "SELECT max(id) FROM sync_run WHERE account_id = $1 \
                     AND (outcome = 'running' OR finished_at >= $2)",
                )
                .bind(account.as_str())
                .bind(ledger_ts(now - chrono::Duration::seconds(5)))
                .fetch_one(pool)
                .await?;
                if let Some(run) = seen {
                    return Ok(Err(run));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            return Ok(Err(0));
        }
        let lock = AccountLock {
            held: Some((session.clone(), account.clone())),
        };
        sqlx::query(
            "UPDATE sync_run SET outcome = 'failed', finished_at = $2, \
             error = 'interrupted: the instance running the pass stopped' \
             WHERE account_id = $1 AND outcome = 'running'",
        )
        .bind(account.as_str())
        .bind(ledger_ts(now))
        .execute(pool)
        .await?;
        Ok(Ok(lock))
    }
}

/// Creates an empty database named `{prefix}<ulid>` on the PostgreSQL server that `server_url`
/// reaches (a URL naming any database of it, e.g. `postgres://postgres@127.0.0.1:5432/test`) and
/// returns its URL; first drops the databases of an earlier run named `{prefix}<ulid>` with a ULID
/// over an hour old (ignoring those still in use). For the test suite and the benches, which give
/// every ledger a database of its own; an operator creates the daemon's database by hand.
///
/// Errors: the server cannot be reached or refuses `CREATE DATABASE`.
pub async fn create_postgres_database(server_url: &str, prefix: &str) -> LedgerResult<String> {
    use sqlx::Executor;
    let mut c = sqlx::PgConnection::connect(server_url).await?;
    let like = format!("{}%", prefix.replace('_', "\\_"));
    let old: Vec<String> =
        sqlx::query_scalar("SELECT datname::text FROM pg_database WHERE datname LIKE $1")
            .bind(like)
            .fetch_all(&mut c)
            .await?;
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for db in old {
        let stale = db
            .strip_prefix(prefix)
            .and_then(|u| ulid::Ulid::from_string(&u.to_uppercase()).ok())
            .is_some_and(|u| u.datetime() < hour_ago);
        if stale {
            let _ = c
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{db}\""
                )))
                .await;
        }
    }
    let name = format!("{prefix}{}", ulid::Ulid::new().to_string().to_lowercase());
    c.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .await?;
    let _ = c.close().await;
    let base = server_url
        .split('?')
        .next()
        .and_then(|u| u.rsplit_once('/'))
        .map_or(server_url, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

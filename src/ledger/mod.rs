//! The SQLite ledger: the only module that writes SQL.
//!
//! One file in WAL mode with `synchronous = NORMAL`: a commit survives a crash of the process at
//! once, and survives an OS crash or power loss once the WAL is synced. Nothing is announced before
//! that: `Ledger::make_durable` syncs the WAL before the dispatcher sends a batch and before the
//! pull feed answers, so an event that a receiver has seen can never be rolled back (and then
//! re-detected under another id). Migrations are embedded (`migrations/`) and applied at open.
//!
//! A sync page's link rows, events and deliveries commit in one transaction (the transactional
//! outbox: docs/ARCHITECTURE.md, "Invariants"), so a notification is owed exactly when a change is
//! recorded; pages queued behind a busy writer may share one transaction (`Ledger::commit_pages`),
//! each still whole.

pub(crate) mod backend;
mod claims;
mod cluster;
mod deliveries;
mod due;
mod events;
mod inbound;
mod links;
mod manage;
mod payments;
mod pg_arrays;
mod retention;
mod runs;
mod sqlite_rows;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use backend::{LedgerRow, Pool, on_pool, on_tx};

pub use crate::types::InboundState;
pub(crate) use cluster::AccountLock;
pub use cluster::create_postgres_database;
pub(crate) use deliveries::{AttemptOutcome, AttemptResult};
pub use deliveries::{DeliveryAttemptRow, DeliveryFilter, DeliveryRow, NewDelivery};
pub(crate) use due::DueDelivery;
pub use events::{EventFilter, EventRow, NewEvent};
pub(crate) use inbound::{Expiry, ExpiryTarget, InboundOutcome};
pub use inbound::{InboundRow, NewNotification, Stored};
pub use links::StoredLink;
pub(crate) use links::{LinkRows, LinkState, LinkWrite};
pub(crate) use manage::{Intent, StoredAnswer};
pub(crate) use payments::PaymentWrite;
pub use payments::{ExportRow, PaymentFilter, StoredPayment};
pub use retention::Pruned;
pub(crate) use runs::RunEnd;
pub use runs::SyncRunRow;

/// A ledger error: SQLite or a row that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// SQLite refused or failed.
    #[error("ledger: {0}")]
    Sql(#[from] sqlx::Error),
    /// SQLite refused or failed a statement run on its handle directly (`sqlite_rows`).
    #[error("ledger: {message} (SQLite code {code})")]
    Sqlite {
        /// SQLite's extended result code.
        code: i32,
        /// SQLite's message.
        message: String,
    },
    /// Migrations could not be applied.
    #[error("ledger migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not parse (the ledger was edited by hand or is corrupt).
    #[error("ledger row unreadable: {0}")]
    Corrupt(String),
    /// The WAL could not be synced: committed changes may not be on disk yet.
    #[error("ledger durability barrier failed (the WAL could not be synced): {0}")]
    Durability(#[source] std::io::Error),
    /// The ledger file belongs to another user (a command run as root or as the wrong user
    /// would leave files the daemon cannot open).
    #[error(
        "the ledger {path} belongs to uid {owner}, this command runs as uid {me}: run it as the \
         ledger's owner (e.g. `sudo -u <that user> singapay-sync …`), or use the admin API"
    )]
    NotOwner {
        /// The file.
        path: String,
        /// Its owner.
        owner: u32,
        /// The effective user of this process.
        me: u32,
    },
}

/// Creates the ledger file mode 0600 if it does not exist (SQLite then gives its `-wal` and
/// `-shm` files the same mode), and refuses a file owned by another user than this process's.
fn prepare_file(path: &Path) -> LedgerResult<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        match std::fs::metadata(path) {
            Ok(meta) => {
                // SAFETY: geteuid has no preconditions and cannot fail.
                let me = unsafe { libc::geteuid() };
                if meta.uid() != me {
                    return Err(LedgerError::NotOwner {
                        path: path.display().to_string(),
                        owner: meta.uid(),
                        me,
                    });
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| LedgerError::Sql(sqlx::Error::Io(e)))?;
                }
            }
            Err(_) => {
                std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| LedgerError::Sql(sqlx::Error::Io(e)))?;
            }
        }
    }
    Ok(())
}

/// Result alias for ledger operations.
pub type LedgerResult<T> = Result<T, LedgerError>;

/// Rows written before the first refresh of PostgreSQL's planner statistics ([`Ledger::wrote_rows`]).
const ANALYZE_ROWS_FIRST: usize = 5_000;
/// The most rows written between two refreshes.
const ANALYZE_ROWS_MAX: usize = 1_000_000;

/// Handle to the ledger (a small connection pool). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: Pool,
    /// Held while a background checkpoint (SQLite) or statistics refresh (PostgreSQL) runs (at
    /// most one at a time).
    checkpointing: Arc<tokio::sync::Mutex<()>>,
    /// PostgreSQL: rows written since the planner statistics were last refreshed, and how many
    /// the next refresh waits for ([`Ledger::wrote_rows`]).
    analyze: Arc<std::sync::Mutex<(usize, usize)>>,
    /// The WAL file (`<path>-wal`), synced by [`Ledger::make_durable`]; `None` on PostgreSQL
    /// (a commit there is durable when it returns).
    wal: Option<Arc<std::path::PathBuf>>,
    /// PostgreSQL: the connection holding this instance's account locks (`cluster`).
    lock_session: Option<cluster::LockSession>,
}

/// The embedded SQLite migrations (`migrations/sqlite/*.sql`).
pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The embedded PostgreSQL migrations (`migrations/postgres/*.sql`): the same schema, written
/// for PostgreSQL (identity columns, `BIGINT`, PL/pgSQL where SQLite had triggers).
pub(crate) static PG_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Everything one sync page commits atomically.
#[derive(Debug, Default)]
pub struct PageCommit {
    /// Link rows to insert or update (only changed ones), already encoded.
    pub(crate) writes: LinkRows,
    /// Payment rows to insert or update (only changed ones).
    pub(crate) payments: Vec<PaymentWrite>,
    /// Events, in emission order.
    pub events: Vec<NewEvent>,
    /// Deliveries owed for those events: each one's event must be among `events` (the delivery
    /// takes its ordering key from it; a commit with one that is not fails as `Corrupt`).
    pub deliveries: Vec<NewDelivery>,
    /// Links confirmed deleted: `(account, link, sequence after the deleted event, time)`.
    pub(crate) deletions: Vec<(
        crate::types::AccountId,
        crate::types::LinkId,
        i64,
        chrono::DateTime<chrono::Utc>,
    )>,
}

/// Page size of a new SQLite ledger, bytes (SQLite's default is 4,096). A link row is ~1 KB
/// (`raw_json` beside its decoded columns), ~1.3 KB of the file with its index entries (`dbstat`
/// on a bench ledger of 100,000 links, 2026-12-07: 134 MB, `payment_link` 104 MB of pages): a
/// 4 KB page holds three, and a baseline import of 100,000 links made ~191,000 `pwrite`s (WAL
/// frames, checkpoint copies, statement journals; measured 2026-12-04, with larger rows).
/// With 16 KB pages: ~71,000, and the import's wall time 2.2-2.4 s → 1.6-1.7 s, its CPU
/// 2.4-2.7 s → 1.9-2.0 s (`SYNC_BENCH_PROFILE=baseline`, docs/PERFORMANCE.md); 8 KB and 64 KB
/// were slower than 16 KB; deliveries did not change. A ledger's page size is fixed when its
/// file is first written: an existing ledger keeps its own (the pragma does nothing in WAL mode).
const PAGE_SIZE: u32 = 16_384;

/// The size, bytes, that SQLite cuts the WAL file back to when it starts it over after a
/// checkpoint (`PRAGMA journal_size_limit`, SQLITE-JSL; without it the file stays at the
/// largest size it ever reached until the ledger is closed). One transaction writes all it
/// changes to the WAL before any of it is checkpointed, so a migration that rewrites a table
/// leaves a WAL that large (778 MB for 100,000 links and 300,000 payments rebuilt,
/// docs/PERFORMANCE.md). A pass's writes stay far below it (the WAL of a baseline import of
/// 100,000 links peaked at 19.5 MB, checkpointed every 1,000 rows), so it is never cut and
/// grown again in the daemon's usual work.
const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, in WAL mode, and applies migrations. A
    /// new file gets [`PAGE_SIZE`]-byte pages; an existing one keeps its own.
    ///
    /// Errors: the file cannot be created or opened, or a migration fails.
    pub async fn open(path: &Path) -> LedgerResult<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        prepare_file(path)?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            // A local file does not go away: sqlx's default ping before every acquire is one
            // more hop to the connection's thread per transaction (a page commit has 4 already).
            .test_before_acquire(false)
            .connect_with(opts)
            .await?;
        MIGRATOR.run(&pool).await?;
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        Ok(Self {
            pool: Pool::Sqlite(pool),
            checkpointing: Arc::default(),
            analyze: Arc::new(std::sync::Mutex::new((0, ANALYZE_ROWS_FIRST))),
            wal: Some(Arc::new(wal.into())),
            lock_session: None,
        })
    }

    /// Connects to a PostgreSQL ledger (`postgres://user@host/db`) and applies its migrations
    /// (sqlx holds an advisory lock while migrating, so instances starting together apply them
    /// once). The pool has up to `max_connections` connections; each is checked before use (a
    /// server can restart under a long-running daemon).
    ///
    /// Errors: the server refuses or cannot be reached, or a migration fails. The URL is never
    /// part of the error (it may hold a password).
    pub async fn open_postgres(url: &str, max_connections: u32) -> LedgerResult<Self> {
        use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| LedgerError::Corrupt("ledger.url is not a valid PostgreSQL URL".into()))?
            .application_name("singapay-sync")
            // Every statement planned for its own arguments and the tables as they are now. A
            // ledger starts empty and a baseline import fills it within one pass: with the
            // default (`auto`), a prepared lookup switches to a generic plan after five runs,
            // costed on the empty table, and keeps it (a walk of the account's whole index per
            // lookup; nothing re-plans it until the table is analysed, and autovacuum may be
            // off or behind). A history import of 20,000 links + 100,004 payments took 53.5 s
            // with `auto`, 21.8 s with this (docs/PERFORMANCE.md).
            .options([("plan_cache_mode", "force_custom_plan")]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(opts)
            .await?;
        PG_MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool: Pool::Postgres(pool),
            checkpointing: Arc::default(),
            analyze: Arc::new(std::sync::Mutex::new((0, ANALYZE_ROWS_FIRST))),
            wal: None,
            lock_session: Some(cluster::LockSession::default()),
        })
    }

    /// Opens the ledger `[ledger]` names: the SQLite file, or the PostgreSQL database of its
    /// `url`.
    ///
    /// Errors: as [`Ledger::open`] or [`Ledger::open_postgres`].
    pub async fn connect(cfg: &crate::config::LedgerConfig) -> LedgerResult<Self> {
        use secrecy::ExposeSecret;
        match &cfg.postgres {
            Some(url) => Self::open_postgres(url.expose_secret(), 8).await,
            None => Self::open(&cfg.path).await,
        }
    }

    /// The SQLite pool (unit tests of the SQLite schema).
    #[cfg(test)]
    pub(crate) fn sqlite_pool(&self) -> &sqlx::SqlitePool {
        match &self.pool {
            Pool::Sqlite(p) => p,
            Pool::Postgres(_) => panic!("an SQLite ledger was expected"),
        }
    }

    /// Whether the ledger is PostgreSQL (several instances may share it).
    pub fn is_postgres(&self) -> bool {
        self.pool.is_postgres()
    }

    /// Makes every committed transaction durable by syncing the WAL file itself
    /// (`fsync`): in WAL mode a commit is on disk once its frames are (SQLITE, WAL). With
    /// `synchronous = NORMAL` commits do not sync, so this is the barrier before anything is
    /// announced (a delivery sent, the pull feed answered).
    ///
    /// Not a checkpoint: a passive checkpoint syncs the WAL only when it has frames to copy, and
    /// a reader pinning an old snapshot can leave it nothing to copy, so its success would not
    /// prove durability. The `fsync`'s own result does.
    ///
    /// Errors: [`LedgerError::Durability`] when the WAL cannot be opened or synced; the caller
    /// must not announce.
    pub(crate) async fn make_durable(&self) -> LedgerResult<()> {
        let Some(wal) = self.wal.clone() else {
            return Ok(());
        };
        let synced = tokio::task::spawn_blocking(move || {
            std::fs::File::open(wal.as_path()).and_then(|f| f.sync_data())
        })
        .await
        .map_err(|e| LedgerError::Durability(std::io::Error::other(e.to_string())))?;
        synced.map_err(LedgerError::Durability)
    }

    /// A passive checkpoint now (copies WAL frames into the database file beside the writers).
    async fn checkpoint(&self) -> LedgerResult<()> {
        if let Pool::Sqlite(p) = &self.pool {
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(p)
                .await?;
        }
        Ok(())
    }

    /// Starts a passive checkpoint on another connection and returns at once (nothing happens if
    /// one is already running). A bulk writer calls it every few megabytes of WAL so that the
    /// copy into the database file runs beside its next commits instead of inside one of them
    /// (SQLite's automatic checkpoint runs in the committing connection). Errors are logged.
    pub(crate) fn checkpoint_in_background(&self) {
        if self.wal.is_none() {
            return;
        }
        let Ok(guard) = self.checkpointing.clone().try_lock_owned() else {
            return;
        };
        let ledger = self.clone();
        tokio::spawn(async move {
            if let Err(e) = ledger.checkpoint().await {
                tracing::warn!(error = %e, "ledger.checkpoint_failed");
            }
            drop(guard);
        });
    }

    /// Counts `rows` (links, payments, events, deliveries) a commit of pages wrote; on
    /// PostgreSQL, once the count since the last refresh reaches the next threshold, starts
    /// refreshing the planner statistics of those tables (`ANALYZE payment_link, payment,
    /// link_event, delivery`) on another connection and returns at once. The first threshold is 5,000 rows, each next one twice the last (up to 1,000,000):
    /// a baseline import of 100,000 links and 300,000 payments refreshes them six times, and
    /// 200 accounts of 500 links imported one after another four times. A fresh ledger fills up
    /// long before autovacuum (if it is on) samples it, and until then the planner believes the
    /// tables tiny and reads a whole account's rows where an index range would do (the no-change
    /// pass after an import of 100,000 links: 2.67 × its floor's wall time without this). Nothing
    /// happens on SQLite. Errors are logged.
    fn wrote_rows(&self, rows: usize) {
        if !self.is_postgres() || rows == 0 {
            return;
        }
        let due = {
            let Ok(mut c) = self.analyze.lock() else {
                return;
            };
            c.0 += rows;
            if c.0 >= c.1 {
                *c = (0, (c.1 * 2).min(ANALYZE_ROWS_MAX));
                true
            } else {
                false
            }
        };
        if due {
            self.analyze_in_background();
        }
    }

    /// Starts the `ANALYZE` on another connection (nothing while a refresh
    /// runs); see [`Ledger::wrote_rows`].
    fn analyze_in_background(&self) {
        let Ok(guard) = self.checkpointing.clone().try_lock_owned() else {
            return;
        };
        let ledger = self.clone();
        tokio::spawn(async move {
            let done = on_pool!(ledger.pool, |p| sqlx::query(
                "ANALYZE payment_link, payment, link_event, delivery"
            )
            .execute(p)
            .await
            .map(drop));
            if let Err(e) = done {
                tracing::warn!(error = %e, "ledger.analyze_failed");
            }
            drop(guard);
        });
    }

    /// Checks the ledger answers (`SELECT 1`), for `/healthz`.
    pub(crate) async fn ping(&self) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }

    /// Closes the pool (waits for connections to return).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Commits one page: upserts the changed link rows, appends the events, enqueues the
    /// deliveries and bumps the run's counters, all in one transaction. Nothing is written if
    /// any statement fails, and nothing at all (no transaction) if the page changed nothing.
    pub async fn commit_page(&self, run_id: i64, commit: PageCommit) -> LedgerResult<()> {
        self.commit_pages(run_id, vec![commit]).await
    }

    /// Commits consecutive pages of one pass in one transaction (a writer that fell behind
    /// catches up with one commit instead of one per page): each page is written whole or not
    /// at all, like [`Ledger::commit_page`], and in order (events keep their commit order).
    /// Rows, events and deliveries go in a few multi-row statements.
    pub(crate) async fn commit_pages(
        &self,
        run_id: i64,
        mut commits: Vec<PageCommit>,
    ) -> LedgerResult<()> {
        let written: usize = commits
            .iter()
            .map(|c| c.writes.len() + c.deletions.len())
            .sum();
        let rows: Vec<LinkRows> = commits
            .iter_mut()
            .map(|c| std::mem::take(&mut c.writes))
            .collect();
        let payments: Vec<PaymentWrite> = commits
            .iter_mut()
            .flat_map(|c| std::mem::take(&mut c.payments))
            .collect();
        let deletions: Vec<_> = commits.iter().flat_map(|c| &c.deletions).collect();
        let events: Vec<&NewEvent> = commits.iter().flat_map(|c| &c.events).collect();
        let deliveries: Vec<&NewDelivery> = commits.iter().flat_map(|c| &c.deliveries).collect();
        if written == 0 && payments.is_empty() && events.is_empty() && deliveries.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        links::upsert_many(&mut tx, rows).await?;
        payments::upsert_many(&mut tx, &payments).await?;
        on_tx!(&mut tx, |c| {
            for (account, link, sequence, at) in &deletions {
                sqlx::query(
                    "UPDATE payment_link SET deleted_at = $1, sequence = $2, last_seen_at = $3 \
                     WHERE account_id = $4 AND link_id = $5",
                )
                .bind(crate::time::ledger_ts(*at))
                .bind(sequence)
                .bind(crate::time::ledger_ts(*at))
                .bind(account.as_str())
                .bind(link.0)
                .execute(&mut *c)
                .await?;
            }
        });
        events::insert_many(&mut tx, &events).await?;
        deliveries::insert_many(&mut tx, &deliveries, &events).await?;
        on_tx!(&mut tx, |c| sqlx::query(
            "UPDATE sync_run SET links_written = links_written + $1, changes = changes + $2, \
             payments_written = payments_written + $3 WHERE id = $4",
        )
        .bind(written as i64)
        .bind(events.len() as i64)
        .bind(payments.len() as i64)
        .bind(run_id)
        .execute(c)
        .await
        .map(drop)?);
        tx.commit().await?;
        self.wrote_rows(written + payments.len() + events.len() + deliveries.len());
        Ok(())
    }
}

/// Takes the exclusive lock of the SQLite ledger at `path`: an OS file lock (`flock`) on
/// `<path>.lock`, created if missing, held as long as the returned file is open and released by
/// the OS when the process dies (a SIGKILL leaves nothing to clean up). The daemon and the `sync`
/// command hold it: one process at a time marks interrupted runs failed, re-sends interrupted
/// deliveries and runs passes on one SQLite ledger (several instances need PostgreSQL, DESIGN
/// §16). Commands that only read or act beside a daemon do not take it.
///
/// Errors: another process holds it (the message says which kinds of process and what to do
/// instead), or the lock file cannot be created or locked.
pub fn lock_sqlite_ledger(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("creating the ledger's lock file {}", lock_path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "the ledger {} is in use by another singapay-sync process (a running daemon or a \
             `sync` command; lock file {}): one process at a time syncs an SQLite ledger. Ask a \
             running daemon for a pass with POST /resync; several instances need the \
             PostgreSQL ledger (ledger.url)",
            path.display(),
            lock_path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", lock_path.display()))
        }
    }
}

/// The row counts of the multi-row statements that write `rows` rows: as many of `max` as fit,
/// then the largest multiple of `step` (when `step` < `max`), then decreasing powers of two
/// (`max` 400, `step` 100, 1,150 rows: 400, 400, 300, 32, 16, 2; `step` = `max` 100, 237 rows:
/// 100, 100, 32, 4, 1). A statement's text depends only on its number of rows, and each
/// distinct text is compiled once per connection (sqlx caches prepared statements by text, 100
/// per connection): with remainders of any size, every new size of the dispatcher's outcome
/// groups was a new compilation (~1.1 M instructions for a 100-row text; 24.6 M, 3.8% of the
/// dispatcher's instructions for 2,000 deliveries, callgrind on `cargo bench --bench delivery`;
/// 17.7 M after) and a new cache entry, without bound over a daemon's life. With these sizes a
/// statement kind has at most `max / step + log2(step)` texts. `max` or `step` 0 is taken as 1.
pub(super) fn statement_sizes(rows: usize, max: usize, step: usize) -> impl Iterator<Item = usize> {
    let (max, step) = (max.max(1), step.max(1));
    let mut rest = rows;
    std::iter::from_fn(move || {
        let n = if rest >= max {
            max
        } else if rest >= step {
            rest / step * step
        } else if rest > 0 {
            1 << rest.ilog2()
        } else {
            return None;
        };
        rest -= n;
        Some(n)
    })
}

/// Splits `items` into the row sets of one multi-row statement each, as [`statement_sizes`]
/// with `step` = `max`: as many sets of `max` rows as fit, then decreasing powers of two.
pub(super) fn statement_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    statement_sizes(items.len(), max, max).map(move |n| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    })
}

/// Ids as one JSON array, bound to `json_each(?)`: one parameter whatever their number.
pub(super) fn ids_json(ids: impl IntoIterator<Item = i64>) -> LedgerResult<String> {
    serde_json::to_string(&ids.into_iter().collect::<Vec<_>>())
        .map_err(|e| LedgerError::Corrupt(e.to_string()))
}

pub(crate) fn parse_ts(s: &str) -> LedgerResult<chrono::DateTime<chrono::Utc>> {
    crate::time::parse_ledger_ts(s).ok_or_else(|| LedgerError::Corrupt(format!("bad time {s:?}")))
}

pub(crate) fn parse_opt_ts(
    s: Option<String>,
) -> LedgerResult<Option<chrono::DateTime<chrono::Utc>>> {
    s.as_deref().map(parse_ts).transpose()
}

/// A stored name (`type`, `state`, `channel`…) of column `col` parsed into its enum.
pub(crate) fn parse_name<T: FromStr<Err = String>>(
    r: &impl LedgerRow,
    col: &str,
) -> LedgerResult<T> {
    let text: String = r.col(col)?;
    T::from_str(&text).map_err(|e| LedgerError::Corrupt(format!("{col}: {e}")))
}

#[cfg(test)]
mod tests;

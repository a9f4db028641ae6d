//! Sync: page through an account's links, diff each against the ledger, commit per page.
//!
//! `diff` is pure; `pass` runs one pass (`pass::start_run`, then `pass::run_and_record`)
//! with a background writer (`writer`) and a window of stored states (`window`); `Syncer` makes
//! sure one account never has two passes at once (a trigger during a pass coalesces into it) and
//! `schedule` calls it on each account's cron schedule.

pub(crate) mod diff;
pub(crate) mod expiry;
pub(crate) mod pass;
pub(crate) mod schedule;
mod window;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::types::{AccountId, Trigger};

pub(crate) use pass::SyncContext;
pub use pass::{PageHook, SyncError, SyncSummary};

/// Starts passes, one at a time per account, in the background.
#[derive(Debug)]
pub(crate) struct Syncer {
    ctx: Arc<SyncContext>,
    /// Serialises the start of passes (checking `running`, recording the run).
    starting: tokio::sync::Mutex<()>,
    /// The run of each account whose pass is under way. Entries are removed by a
    /// [`RunningGuard`], so a pass that panics or is aborted never leaves its account "running".
    running: Arc<Mutex<HashMap<AccountId, i64>>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// What a trigger asks of its pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassOptions {
    /// Delete links found missing even beyond `sync.max_deletions` (a human looked).
    pub confirm_deletions: bool,
    /// Read the whole Payment Link History, not only `sync.history_window` (`resync?full=true`).
    pub full_history: bool,
}

impl PassOptions {
    /// Whether a trigger asking this joins a pass already running: only a plain one does (a
    /// pass that confirms deletions or reads the whole history must start on its own).
    fn joins_running(self) -> bool {
        !self.confirm_deletions && !self.full_history
    }
}

/// What a targeted pass reads (the doorbell and the expiry timers, DESIGN §14): these links by
/// show, these history rows by their attempt `reff_no` (the list filtered by `reff_no`), through
/// the same diff and commit as a sweep. When an attempt named is not found by the filter, or
/// `newest_history` asks, the newest history page is read too.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Links to show.
    pub links: std::collections::BTreeSet<crate::types::LinkId>,
    /// Attempt `reff_no`s (history rows) to read.
    pub attempts: std::collections::BTreeSet<String>,
    /// Links the daemon itself deleted at SingaPay: SingaPay's 404 on show marks them deleted
    /// (any other target SingaPay does not know is left to the sweep's guarded check).
    pub deleted: std::collections::BTreeSet<crate::types::LinkId>,
    /// Read the newest history page (a payment webhook that names no attempt).
    pub newest_history: bool,
}

impl Targets {
    /// Whether nothing is named.
    pub fn is_empty(&self) -> bool {
        self.links.is_empty() && self.attempts.is_empty()
    }

    /// Adds what `other` names.
    pub fn merge(&mut self, other: Targets) {
        self.links.extend(other.links);
        self.attempts.extend(other.attempts);
        self.deleted.extend(other.deleted);
        self.newest_history |= other.newest_history;
    }
}

/// The answer to a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Triggered {
    /// The run that will cover the trigger.
    pub run_id: i64,
    /// `true` if a pass was already running and the trigger joined it.
    pub coalesced: bool,
}

/// Removes an account's entry from `running` when dropped: after the pass, and also if it
/// panics or its task is aborted.
/// How close two scheduled passes of one account must start to be the same cron slot fired by
/// two instances (PostgreSQL ledger): the later one is skipped. Schedules are at least a minute
/// apart in practice (the default is every 5 minutes).
const SLOT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

struct RunningGuard {
    running: Arc<Mutex<HashMap<AccountId, i64>>>,
    account: AccountId,
    /// The account's cluster-wide lock (PostgreSQL), released with the guard.
    _lock: crate::ledger::AccountLock,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.account);
    }
}

impl Syncer {
    /// A syncer; passes stop at their next page boundary when `cancel` fires.
    pub fn new(ctx: Arc<SyncContext>, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            starting: tokio::sync::Mutex::new(()),
            running: Arc::default(),
            tasks: TaskTracker::new(),
            cancel,
        })
    }

    /// The shared context.
    pub fn context(&self) -> &SyncContext {
        &self.ctx
    }

    fn running_run(&self, account: &AccountId) -> Option<i64> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account)
            .copied()
    }

    /// Records a new run of `account` and marks it running (under `starting`): the run and the
    /// guard that unmarks it. `Err(Busy)` if a pass is running.
    async fn begin(
        &self,
        account: &AccountId,
        trigger: Trigger,
        opts: PassOptions,
        targets: Option<Targets>,
    ) -> Result<(pass::StartedRun, RunningGuard), SyncError> {
        let _serial = self.starting.lock().await;
        if let Some(id) = self.running_run(account) {
            return Err(SyncError::Busy(id));
        }
        // Several instances on one PostgreSQL ledger: one pass per account cluster-wide.
        let lock = match self
            .ctx
            .ledger
            .lock_account(account, self.ctx.clock.now())
            .await?
        {
            Ok(lock) => lock,
            Err(run) => return Err(SyncError::Busy(run)),
        };
        // Instances sharing a ledger fire the same cron slots: the first to take the account
        // runs the slot's pass, the others skip it (as if they had joined it).
        if trigger == Trigger::Schedule && self.ctx.ledger.is_postgres() {
            let since =
                self.ctx.clock.now() - chrono::Duration::from_std(SLOT_WINDOW).unwrap_or_default();
            if let Some(run) = self.ctx.ledger.scheduled_run_since(account, since).await? {
                return Err(SyncError::Busy(run));
            }
        }
        let run = pass::start_run(&self.ctx, account, trigger, opts, targets).await?;
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(account.clone(), run.run_id);
        let guard = RunningGuard {
            running: Arc::clone(&self.running),
            account: account.clone(),
            _lock: lock,
        };
        Ok((run, guard))
    }

    /// Starts a pass of `account` in the background, or joins the one running (a trigger that
    /// asks to confirm deletions or a full history read does not join: [`SyncError::Busy`]). Returns
    /// its run id.
    ///
    /// Errors: the ledger cannot record the run; `Busy` as above.
    pub async fn trigger(
        self: &Arc<Self>,
        account: &AccountId,
        trigger: Trigger,
        opts: PassOptions,
    ) -> Result<Triggered, SyncError> {
        let (run, guard) = match self.begin(account, trigger, opts, None).await {
            Ok(started) => started,
            Err(SyncError::Busy(run_id)) if opts.joins_running() && run_id > 0 => {
                return Ok(Triggered {
                    run_id,
                    coalesced: true,
                });
            }
            Err(e) => return Err(e),
        };
        let run_id = run.run_id;
        let me = Arc::clone(self);
        let account = account.clone();
        self.tasks.spawn(async move {
            let _guard = guard;
            match pass::run_and_record(&me.ctx, &run, &me.cancel).await {
                Ok(s) => {
                    info!(account_id = %account, run_id, events = s.events, "sync.pass_succeeded")
                }
                Err(e) => error!(account_id = %account, run_id, error = %e, "sync.pass_failed"),
            }
        });
        Ok(Triggered {
            run_id,
            coalesced: false,
        })
    }

    /// Runs a pass now and waits for it (the `sync` command).
    ///
    /// Errors: [`SyncError::Busy`] if a pass of the account is running; the pass's error.
    pub async fn sync_now(
        &self,
        account: &AccountId,
        trigger: Trigger,
        opts: PassOptions,
    ) -> Result<SyncSummary, SyncError> {
        let (run, _guard) = self.begin(account, trigger, opts, None).await?;
        pass::run_and_record(&self.ctx, &run, &self.cancel).await
    }

    /// Runs a targeted pass of `account` now and waits for it: `targets` shown and read, diffed
    /// and committed like a sweep (events, deliveries), recorded in `sync_run` with `trigger`.
    /// On an account whose baseline is not done yet, a full pass runs instead (a targeted read
    /// cannot tell new links from the baseline's).
    ///
    /// Errors: [`SyncError::Busy`] while another pass of the account runs (the caller retries
    /// after it); the pass's error.
    pub async fn sync_targeted(
        &self,
        account: &AccountId,
        trigger: Trigger,
        targets: Targets,
    ) -> Result<SyncSummary, SyncError> {
        let done = self.ctx.ledger.baselines(account).await?;
        let targets = done.links.then_some(targets);
        let (run, _guard) = self
            .begin(account, trigger, PassOptions::default(), targets)
            .await?;
        pass::run_and_record(&self.ctx, &run, &self.cancel).await
    }

    /// [`Syncer::sync_targeted`], waiting (at most `wait`, checking every 100 ms) while another
    /// pass of the account runs: the expiry timer and link management, which must not drop
    /// their reads (the doorbell's queue defers instead). Before each new try `still_due` is
    /// asked what of the targets is left to read (the pass that ran meanwhile may have read
    /// them: a sweep, or on PostgreSQL another instance); `Ok(None)` when nothing is.
    ///
    /// Errors: [`SyncError::Busy`] after `wait`; [`SyncError::Interrupted`] when the daemon
    /// stops meanwhile; the pass's error.
    pub async fn sync_targeted_when_free<F: std::future::Future<Output = Targets>>(
        &self,
        account: &AccountId,
        trigger: Trigger,
        mut targets: Targets,
        wait: std::time::Duration,
        still_due: impl Fn(Targets) -> F,
    ) -> Result<Option<SyncSummary>, SyncError> {
        let until = tokio::time::Instant::now() + wait;
        loop {
            match self.sync_targeted(account, trigger, targets.clone()).await {
                Err(SyncError::Busy(run)) => {
                    if tokio::time::Instant::now() >= until {
                        return Err(SyncError::Busy(run));
                    }
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(SyncError::Interrupted),
                        _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
                    }
                    targets = still_due(targets).await;
                    if targets.is_empty() {
                        return Ok(None);
                    }
                }
                other => return other.map(Some),
            }
        }
    }

    /// Waits for background passes to end (after `cancel`, at their next page boundary).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

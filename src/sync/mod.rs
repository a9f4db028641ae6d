//! Sync: page through an account's links, diff each against the ledger, commit per page.
//!
//! `diff` is pure; `pass` runs one pass (`pass::start_run`, then `pass::run_and_record`)
//! with a background writer (`writer`) and a window of stored states (`window`); `Syncer` makes
//! sure one account never has two passes at once (a trigger during a pass coalesces into it) and
//! `schedule` calls it on each account's cron schedule.

pub(crate) mod diff;
pub(crate) mod pass;
pub(crate) mod schedule;
mod window;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info};

use crate::types::{AccountId, Trigger};

pub(crate) use pass::SyncContext;
pub use pass::{SyncError, SyncSummary};

/// Starts passes, one at a time per account, in the background.
#[derive(Debug)]
pub(crate) struct Syncer {
    ctx: Arc<SyncContext>,
    running: Mutex<HashMap<AccountId, i64>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

/// The answer to a trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Triggered {
    /// The run that will cover the trigger.
    pub run_id: i64,
    /// `true` if a pass was already running and the trigger joined it.
    pub coalesced: bool,
}

impl Syncer {
    /// A syncer; passes stop at their next page boundary when `cancel` fires.
    pub fn new(ctx: Arc<SyncContext>, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            ctx,
            running: Mutex::new(HashMap::new()),
            tasks: TaskTracker::new(),
            cancel,
        })
    }

    /// Starts a pass of `account` in the background, or joins the one running. Returns its run id.
    ///
    /// Errors: the ledger cannot record the run.
    pub async fn trigger(
        self: &Arc<Self>,
        account: &AccountId,
        trigger: Trigger,
    ) -> Result<Triggered, SyncError> {
        let mut running = self.running.lock().await;
        if let Some(id) = running.get(account) {
            return Ok(Triggered {
                run_id: *id,
                coalesced: true,
            });
        }
        let run = pass::start_run(&self.ctx, account, trigger).await?;
        let run_id = run.run_id;
        running.insert(account.clone(), run_id);
        drop(running);
        let me = Arc::clone(self);
        let account = account.clone();
        self.tasks.spawn(async move {
            let r = pass::run_and_record(&me.ctx, &run, &me.cancel).await;
            match r {
                Ok(s) => {
                    info!(account_id = %account, run_id, events = s.events, "sync.pass_succeeded")
                }
                Err(e) => error!(account_id = %account, run_id, error = %e, "sync.pass_failed"),
            }
            me.running.lock().await.remove(&account);
        });
        Ok(Triggered {
            run_id,
            coalesced: false,
        })
    }

    /// Runs a pass now and waits for it (the `sync` command). If a pass of the account is running,
    /// fails with [`SyncError::Busy`].
    pub async fn sync_now(
        &self,
        account: &AccountId,
        trigger: Trigger,
    ) -> Result<SyncSummary, SyncError> {
        let run = {
            let mut running = self.running.lock().await;
            if let Some(id) = running.get(account) {
                return Err(SyncError::Busy(*id));
            }
            let run = pass::start_run(&self.ctx, account, trigger).await?;
            running.insert(account.clone(), run.run_id);
            run
        };
        let r = pass::run_and_record(&self.ctx, &run, &self.cancel).await;
        self.running.lock().await.remove(account);
        r
    }

    /// Waits for background passes to end (after `cancel`, at their next page boundary).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

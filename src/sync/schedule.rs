//! Cron pollers: one tokio-cron-scheduler job per account (6-field cron, seconds first, UTC;
//! [`crate::cron`] validates and normalises the expressions).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{info, warn};

use crate::types::{AccountId, Trigger};

use super::Syncer;

/// The scheduler's heartbeat: a job every [`HEARTBEAT_EVERY`] stores the time (Unix
/// milliseconds, real time), so the daemon can tell its ticks still run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Heartbeat(Arc<AtomicI64>);

/// How often the heartbeat job runs.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);

impl Heartbeat {
    fn beat(&self) {
        self.0
            .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    }

    /// How long ago the scheduler last ticked.
    pub(crate) fn since(&self) -> Duration {
        let ms = chrono::Utc::now().timestamp_millis() - self.0.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }
}

/// Builds and starts the scheduler with one job per `(account, cron)`; each tick triggers a
/// pass (coalescing into a running one). Returns it with its heartbeat.
///
/// Errors: the scheduler cannot start or an expression does not parse.
pub async fn start(
    syncer: Arc<Syncer>,
    accounts: Vec<(AccountId, String)>,
) -> Result<(JobScheduler, Heartbeat), String> {
    let sched = JobScheduler::new()
        .await
        .map_err(|e| format!("cron scheduler: {e}"))?;
    let heartbeat = Heartbeat::default();
    heartbeat.beat();
    let beat = heartbeat.clone();
    let job = Job::new_repeated(HEARTBEAT_EVERY, move |_, _| beat.beat())
        .map_err(|e| format!("cron scheduler: {e}"))?;
    sched
        .add(job)
        .await
        .map_err(|e| format!("cron scheduler: {e}"))?;
    for (account, expr) in accounts {
        let cron = crate::cron::normalize(&expr);
        let s = Arc::clone(&syncer);
        let acc = account.clone();
        let job = Job::new_async(cron.as_str(), move |_, _| {
            let s = Arc::clone(&s);
            let acc = acc.clone();
            Box::pin(async move {
                match s.trigger(&acc, Trigger::Schedule, Default::default()).await {
                    Ok(t) => info!(account_id = %acc, run_id = t.run_id, coalesced = t.coalesced, "sync.scheduled"),
                    Err(e) => warn!(account_id = %acc, error = %e, "sync.schedule_failed"),
                }
            })
        })
        .map_err(|e| format!("account {account}: schedule {expr:?}: {e}"))?;
        sched
            .add(job)
            .await
            .map_err(|e| format!("cron scheduler: {e}"))?;
        info!(account_id = %account, schedule = %cron, "sync.schedule_added");
    }
    sched
        .start()
        .await
        .map_err(|e| format!("cron scheduler: {e}"))?;
    Ok((sched, heartbeat))
}

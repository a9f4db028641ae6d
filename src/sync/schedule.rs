//! Cron pollers: one tokio-cron-scheduler job per account (6-field cron, seconds first, UTC).

use std::sync::Arc;

use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::{info, warn};

use crate::types::{AccountId, Trigger};

use super::Syncer;

/// Normalises a cron expression: 5-field (`*/5 * * * *`) gets a leading `0` seconds field.
pub fn normalize_cron(expr: &str) -> String {
    let fields = expr.split_whitespace().count();
    if fields == 5 {
        format!("0 {}", expr.trim())
    } else {
        expr.trim().to_string()
    }
}

/// Checks that `expr` parses as a schedule. Errors with the parser's message.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    Job::new_async(normalize_cron(expr).as_str(), |_, _| Box::pin(async {}))
        .map(|_| ())
        .map_err(|e| format!("{e}"))
}

/// Builds and starts the scheduler with one job per `(account, cron)`; each tick triggers a
/// pass (coalescing into a running one).
///
/// Errors: the scheduler cannot start or an expression does not parse.
pub async fn start(
    syncer: Arc<Syncer>,
    accounts: Vec<(AccountId, String)>,
) -> Result<JobScheduler, String> {
    let sched = JobScheduler::new()
        .await
        .map_err(|e| format!("cron scheduler: {e}"))?;
    for (account, expr) in accounts {
        let cron = normalize_cron(&expr);
        let s = Arc::clone(&syncer);
        let acc = account.clone();
        let job = Job::new_async(cron.as_str(), move |_, _| {
            let s = Arc::clone(&s);
            let acc = acc.clone();
            Box::pin(async move {
                match s.trigger(&acc, Trigger::Schedule).await {
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
    Ok(sched)
}

/// The interval between the next two firings of `expr` after `now` (for `/readyz`), or `None`
/// if the expression does not parse or never fires again.
pub fn interval(expr: &str, now: chrono::DateTime<chrono::Utc>) -> Option<std::time::Duration> {
    let cron: croner::Cron = normalize_cron(expr).parse().ok()?;
    let mut it = cron.iter_after(now);
    let a = it.next()?;
    let b = it.next()?;
    (b - a).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_gets_seconds_and_bad_cron_is_refused() {
        assert_eq!(normalize_cron("*/5 * * * *"), "0 */5 * * * *");
        assert_eq!(normalize_cron("0 */5 * * * *"), "0 */5 * * * *");
        assert!(validate_cron("0 */5 * * * *").is_ok());
        assert!(validate_cron("*/5 * * * *").is_ok());
        assert!(validate_cron("every five minutes").is_err());
        let now = chrono::Utc::now();
        assert_eq!(
            interval("0 */5 * * * *", now),
            Some(std::time::Duration::from_secs(300))
        );
        assert_eq!(
            interval("*/5 * * * *", now),
            Some(std::time::Duration::from_secs(300))
        );
    }
}

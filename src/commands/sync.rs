//! `sync [--account ID] [--json] [--confirm-deletions] [--full]`: one pass per account now, then deliver what is due.

use std::process::ExitCode;

use serde_json::json;

use crate::app::App;
use crate::config::Config;
use crate::telemetry;
use crate::types::AccountId;

/// Runs the passes and one dispatch; prints a summary per account (or JSON); exit 1 if a pass
/// failed, 2 if `--account` is not a configured account.
pub(super) async fn run(
    cfg: Config,
    account: Option<&str>,
    as_json: bool,
    opts: crate::sync::PassOptions,
) -> anyhow::Result<ExitCode> {
    telemetry::init(cfg.log.format, &cfg.log.level);
    let only = match account.map(AccountId::parse) {
        None => None,
        Some(Ok(a)) if cfg.accounts.iter().any(|c| c.id == a) => Some(a),
        Some(Ok(a)) => {
            eprintln!("account {a} is not in the configuration");
            return Ok(ExitCode::from(2));
        }
        Some(Err(e)) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let _ledger_lock = super::lock_ledger(&cfg)?;
    let app =
        App::build_with_clock(cfg, std::sync::Arc::new(crate::time::SystemClock), false).await?;
    let results = app.sync_all_with(only.as_ref(), opts).await;
    let dispatched = app.dispatcher.dispatch_due().await?;
    let mut failed = false;
    let mut out = Vec::new();
    for (acc, r) in &results {
        match r {
            Ok(s) => {
                if !as_json {
                    println!(
                        "{acc}: run {} {} — {} pages, {} links, {} written; history {} pages{}, \
                         {} payments, {} written; {} events {:?} ({} ms)",
                        s.run_id,
                        if s.baseline { "baseline" } else { "pass" },
                        s.pages,
                        s.links_seen,
                        s.links_written,
                        s.history_pages,
                        if s.history_full { " (all of it)" } else { "" },
                        s.payments_seen,
                        s.payments_written,
                        s.events,
                        s.events_by_type,
                        s.duration_ms
                    );
                    if s.deletions_held > 0 {
                        println!(
                            "{acc}: {} links are missing, more than sync.max_deletions allows: none \
                             was deleted. If SingaPay really lost them, run `sync --account {acc} \
                             --confirm-deletions`.",
                            s.deletions_held
                        );
                    }
                }
                out.push(json!({"account_id": acc.as_str(), "ok": true, "summary": s}));
            }
            Err(e) => {
                failed = true;
                eprintln!("{acc}: sync failed: {e}");
                out.push(json!({"account_id": acc.as_str(), "ok": false, "error": e.to_string()}));
            }
        }
    }
    if as_json {
        println!(
            "{}",
            json!({"accounts": out, "deliveries": {
                "attempted": dispatched.attempted, "delivered": dispatched.delivered,
                "retrying": dispatched.retrying, "dead": dispatched.dead,
                "deferred": dispatched.deferred}})
        );
    } else {
        let put_off = match dispatched.deferred {
            0 => String::new(),
            n => format!(", {n} put off (their subscriber timed out)"),
        };
        println!(
            "deliveries: {} attempted, {} delivered, {} to retry, {} dead{put_off}",
            dispatched.attempted, dispatched.delivered, dispatched.retrying, dispatched.dead
        );
    }
    app.ledger.close().await;
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

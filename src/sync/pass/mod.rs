//! One sync pass of one account: page through the list, dedupe by id, diff each link against the
//! ledger, and commit link rows + events + deliveries of a page in one transaction (pages queued
//! behind a busy writer share one: group commit). Links missing from a complete pass are checked
//! with show and reported deleted only on 404. Then the Payment Link History is read newest first
//! (`history`): rows in `sync.history_window` every pass, older ones until a page of them is
//! unchanged, everything on the history baseline or a full resync. A link whose usage rose is
//! committed after the history, so that its `payment_link.paid` carries the payments behind it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info_span};

use crate::config::DeletionLimit;
use crate::event::LinkRef;
use crate::ledger::{Ledger, LedgerError, PageCommit, RunEnd};
use crate::notify::Routing;
use crate::singapay::{SingapayClient, SingapayError};
use crate::time::Clock;
use crate::types::{AccountId, LinkId, PaymentId, Trigger};

use super::diff::NewLink;
use super::{PassOptions, Targets};

mod commit;
mod history;
mod sweep;
mod targeted;

#[cfg(test)]
pub(crate) use commit::content_hash;

/// Everything a pass needs.
#[derive(Debug)]
pub(crate) struct SyncContext {
    /// The ledger.
    pub ledger: Ledger,
    /// SingaPay.
    pub client: SingapayClient,
    /// Who gets which event.
    pub routing: Routing,
    /// Links per list page to ask for (`singapay.per_page`, SingaPay caps it at 100).
    pub per_page: u64,
    /// List pages fetched at once after page 1 (`singapay.concurrency`).
    pub concurrency: usize,
    /// `sync.notify_on_baseline`: emit `payment_link.created` for baseline links.
    pub notify_on_baseline: bool,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Woken after a commit that enqueued deliveries (the dispatcher).
    pub wake: Option<Arc<Notify>>,
    /// Woken after every pass (the expiry timer: a pass may add or move an expiry).
    pub passed: Arc<Notify>,
    /// `sync.max_deletions`.
    pub max_deletions: DeletionLimit,
    /// `sync.history_window`.
    pub history_window: std::time::Duration,
    /// A test's hook, called with the account and page number before each page is diffed (a
    /// panic in it is a panic in the pass). Set at most once.
    pub page_hook: std::sync::OnceLock<PageHook>,
}

/// A hook called before each page is diffed (tests inject faults with it).
#[derive(Clone)]
pub struct PageHook(pub Arc<PageHookFn>);

/// The function of a [`PageHook`]: the account and the page number.
pub type PageHookFn = dyn Fn(&AccountId, u64) + Send + Sync;

impl std::fmt::Debug for PageHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PageHook")
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// SingaPay failed (after the client's retries) or sent something unreadable.
    #[error("page {page}: {source}")]
    Upstream {
        /// Page being read (0 for the deletion check).
        page: u64,
        /// The classified error.
        #[source]
        source: SingapayError,
    },
    /// SingaPay failed on a Payment Link History page (after the client's retries) or sent one
    /// that cannot be read; the links of the pass are committed, the history from that page on is
    /// not.
    #[error("history page {page}: {source}")]
    History {
        /// Page being read (from 1).
        page: u64,
        /// The classified error.
        #[source]
        source: SingapayError,
    },
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The daemon is stopping; committed pages stay.
    #[error("interrupted: the daemon is stopping")]
    Interrupted,
    /// A pass of this account is already running (its run id).
    #[error("a pass of this account is already running (run {0})")]
    Busy(i64),
    /// A link's numbers cannot be compared (an overflow), or SingaPay sent something else that
    /// cannot be mirrored; the pass stops before committing that page.
    #[error("link {link}: {message}")]
    Data {
        /// The link.
        link: LinkId,
        /// What is wrong with it.
        message: String,
    },
    /// The pass panicked (a defect); recorded as its failure.
    #[error("the pass panicked: {0}")]
    Panicked(String),
    /// SingaPay's pagination never ended.
    #[error("pagination did not end after {0} pages")]
    Runaway(u64),
}

/// What a pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SyncSummary {
    /// Run id.
    pub run_id: i64,
    /// Account.
    pub account_id: String,
    /// Whether it was the baseline.
    pub baseline: bool,
    /// Pages read.
    pub pages: u64,
    /// Distinct links read.
    pub links_seen: u64,
    /// `payment_link` rows written.
    pub links_written: u64,
    /// Events emitted.
    pub events: u64,
    /// Events by type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Deliveries enqueued.
    pub deliveries: u64,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// Links found missing whose deletion was held back (see `sync.max_deletions`).
    pub deletions_held: u64,
    /// Whether this pass read the whole Payment Link History (its baseline, or a full resync).
    pub history_full: bool,
    /// History pages read.
    pub history_pages: u64,
    /// Distinct history rows read.
    pub payments_seen: u64,
    /// `payment` rows written.
    pub payments_written: u64,
    /// Wall time of the history part, milliseconds.
    pub history_ms: u64,
}

const MAX_PAGES: u64 = 100_000;

/// A pass recorded in `sync_run` as started, not yet run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartedRun {
    /// Its `sync_run.id`.
    pub run_id: i64,
    /// The account it syncs.
    pub account: AccountId,
    /// Whether it is the account's baseline (first complete pass).
    pub baseline: bool,
    /// Whether the account's history baseline is done (else this pass records it silently).
    pub history_baseline_done: bool,
    /// What the trigger asked.
    pub opts: PassOptions,
    /// `Some`: a targeted pass (these links and history rows only), else a sweep.
    pub targets: Option<Targets>,
}

/// Records the start of a pass of `account`.
///
/// Errors: the ledger cannot record it.
pub(crate) async fn start_run(
    ctx: &SyncContext,
    account: &AccountId,
    trigger: Trigger,
    opts: PassOptions,
    targets: Option<Targets>,
) -> Result<StartedRun, SyncError> {
    let done = ctx.ledger.baselines(account).await?;
    let baseline = !done.links;
    let run_id = ctx
        .ledger
        .start_run(account, trigger, baseline, ctx.clock.now())
        .await?;
    Ok(StartedRun {
        run_id,
        account: account.clone(),
        baseline,
        history_baseline_done: done.history,
        opts,
        targets,
    })
}

/// Runs a started pass to its end (or its first error, or `cancel` at a page boundary) and
/// records its outcome and counts in `sync_run`; wakes the dispatcher (e-mail digests wait for the
/// end of their pass).
///
/// Errors: [`SyncError`]; on failure the pages already committed stay consistent (a page is
/// never split across transactions) and the `sync_run` row says why.
pub(crate) async fn run_and_record(
    ctx: &SyncContext,
    run: &StartedRun,
    cancel: &CancellationToken,
) -> Result<SyncSummary, SyncError> {
    let StartedRun {
        run_id,
        ref account,
        baseline,
        history_baseline_done,
        opts,
        ref targets,
    } = *run;
    let span = info_span!("sync_pass", account_id = %account, run_id, baseline);
    let started = Instant::now();
    let mut pass = Pass {
        ctx,
        account,
        run_id,
        mode: if !baseline {
            NewLink::Full
        } else if ctx.notify_on_baseline {
            NewLink::CreatedOnly
        } else {
            NewLink::Silent
        },
        cancel,
        confirm_deletions: opts.confirm_deletions,
        seen: HashSet::new(),
        history_mode: if history_baseline_done {
            NewLink::Full
        } else {
            NewLink::Silent
        },
        payments_seen: HashSet::new(),
        deferred: PageCommit::default(),
        deferred_links: HashMap::new(),
        deferred_new: 0,
        newly_paid: HashMap::new(),
        summary: SyncSummary {
            run_id,
            account_id: account.to_string(),
            baseline,
            history_full: targets.is_none() && (opts.full_history || !history_baseline_done),
            ..Default::default()
        },
    };
    // A panic in the pass (a defect) is this run's failure, not the end of the account's
    // passes: the run is recorded and the next trigger starts a new one.
    let result = match std::panic::AssertUnwindSafe(pass.run(targets.as_ref()).instrument(span))
        .catch_unwind()
        .await
    {
        Ok(r) => r,
        Err(panic) => Err(SyncError::Panicked(panic_message(&*panic))),
    };
    let mut summary = pass.summary;
    let end = RunEnd {
        result: result.as_ref().map(|_| ()).map_err(|e| e.to_string()),
        pages: summary.pages as i64,
        links_seen: summary.links_seen as i64,
        deletions_held: summary.deletions_held as i64,
        history_pages: summary.history_pages as i64,
        payments_seen: summary.payments_seen as i64,
        history_complete: result.is_ok() && summary.history_full,
        complete: targets.is_none(),
    };
    ctx.ledger
        .finish_run(run_id, account, &end, ctx.clock.now())
        .await?;
    metrics::gauge!("singapay_sync_deletions_held", "account_id" => account.to_string())
        .set(summary.deletions_held as f64);
    if result.is_ok() && targets.is_none() {
        metrics::gauge!("singapay_sync_last_success_timestamp_seconds", "account_id" => account.to_string())
            .set(ctx.clock.now().timestamp() as f64);
    }
    if let Some(w) = &ctx.wake {
        w.notify_one();
    }
    ctx.passed.notify_one();
    let label = if result.is_ok() {
        "succeeded"
    } else {
        "failed"
    };
    // Targeted passes (the doorbell, expiry) are counted apart: their many short runs would
    // hide a slow or failing sweep.
    if targets.is_some() {
        metrics::counter!("singapay_sync_targeted_passes_total", "outcome" => label).increment(1);
    } else {
        metrics::counter!("singapay_sync_passes_total", "outcome" => label).increment(1);
        metrics::histogram!("singapay_sync_pass_duration_seconds")
            .record(started.elapsed().as_secs_f64());
    }
    result.map(|()| {
        summary.duration_ms = started.elapsed().as_millis() as u64;
        summary
    })
}

/// One pass in progress: what every step of it needs.
struct Pass<'a> {
    ctx: &'a SyncContext,
    account: &'a AccountId,
    run_id: i64,
    /// How links the ledger has never seen are treated (baseline or not).
    mode: NewLink,
    cancel: &'a CancellationToken,
    /// Deletions beyond `sync.max_deletions` were confirmed by a human.
    confirm_deletions: bool,
    /// Ids read so far in this pass (dedupe, and the deletion check).
    seen: HashSet<LinkId>,
    /// How history rows the ledger has never seen are treated (history baseline or not).
    history_mode: NewLink,
    /// History ids read so far in this pass (dedupe).
    payments_seen: HashSet<PaymentId>,
    /// Links whose usage rose, held until the history is read (their `payment_link.paid` then
    /// gets `data.payments`).
    deferred: PageCommit,
    /// The deferred links by `reff_no` (payments name their link before it is committed).
    deferred_links: HashMap<String, LinkRef>,
    /// How many deferred links the ledger does not have live yet (seen, not yet committed).
    deferred_new: usize,
    /// Payments that became paid in this pass, by their link's `reff_no` (serialised objects).
    newly_paid: HashMap<String, Vec<serde_json::Value>>,
    summary: SyncSummary,
}

impl Pass<'_> {
    /// The links, then the history (all of a sweep, or only `targets`); the deferred links are
    /// committed whatever happened (without `data.payments` if the history could not be read),
    /// then the first error is returned.
    async fn run(&mut self, targets: Option<&Targets>) -> Result<(), SyncError> {
        let links = match targets {
            None => self.sync_links().await,
            Some(t) => self.show_targets(t).await,
        };
        let started = Instant::now();
        let history = match (links, targets) {
            (Ok(()), None) => self.sync_history().await,
            (Ok(()), Some(t)) => self.read_target_history(t).await,
            (Err(e), _) => Err(e),
        };
        self.summary.history_ms = started.elapsed().as_millis() as u64;
        let flushed = self.flush_deferred().await;
        history?;
        flushed
    }
}

/// The message of a panic payload (a `&str` or a `String`; anything else is unnamed).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

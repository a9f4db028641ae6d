//! One sync pass of one account: page through the list, dedupe by id, diff each link against the
//! ledger, and commit link rows + events + deliveries in one transaction per page. Links missing
//! from a complete pass are checked with show and reported deleted only on 404.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::ledger::{Ledger, LedgerError, LinkState, LinkWrite, NewDelivery, NewEvent, PageCommit};
use crate::notify::Routing;
use crate::singapay::{PaymentLink, SingapayClient, SingapayError};
use crate::time::{Clock, rfc3339_utc};
use crate::types::{AccountId, EventId, EventType, LinkId, Trigger};

use super::diff::{Change, NewLink, deletion, diff};

/// Everything a pass needs.
#[derive(Debug)]
pub struct SyncContext {
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
    /// The ledger failed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The daemon is stopping; committed pages stay.
    #[error("interrupted: the daemon is stopping")]
    Interrupted,
    /// A pass of this account is already running (its run id).
    #[error("a pass of this account is already running (run {0})")]
    Busy(i64),
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
}

const MAX_PAGES: u64 = 100_000;

/// Records the start of a pass: `(run id, is baseline)`.
pub async fn start_run(
    ctx: &SyncContext,
    account: &AccountId,
    trigger: Trigger,
) -> Result<(i64, bool), SyncError> {
    let baseline = !ctx.ledger.baseline_done(account).await?;
    let run_id = ctx
        .ledger
        .start_run(account, trigger, baseline, ctx.clock.now())
        .await?;
    Ok((run_id, baseline))
}

/// Runs a started pass to its end and records the outcome in `sync_run`.
pub async fn finish(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    baseline: bool,
    cancel: &CancellationToken,
) -> Result<SyncSummary, SyncError> {
    let span = info_span!("sync_pass", account_id = %account, run_id, baseline);
    let started = Instant::now();
    let mut summary = SyncSummary {
        run_id,
        account_id: account.to_string(),
        baseline,
        ..Default::default()
    };
    let result = run_pass(ctx, account, run_id, baseline, cancel, &mut summary)
        .instrument(span)
        .await;
    let outcome = match &result {
        Ok(()) => Ok(()),
        Err(e) => Err(e.to_string()),
    };
    ctx.ledger
        .finish_run(
            run_id,
            account,
            outcome,
            (summary.pages as i64, summary.links_seen as i64),
            ctx.clock.now(),
        )
        .await?;
    // E-mail digests wait for the end of their pass: let the dispatcher know.
    if let Some(w) = &ctx.wake {
        w.notify_one();
    }
    let label = if result.is_ok() {
        "succeeded"
    } else {
        "failed"
    };
    metrics::counter!("singapay_sync_passes_total", "outcome" => label).increment(1);
    metrics::histogram!("singapay_sync_pass_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    result.map(|()| {
        summary.duration_ms = started.elapsed().as_millis() as u64;
        summary
    })
}

/// One complete pass of `account` now: records the run, pages through, returns the summary.
///
/// Errors: [`SyncError`]; on failure the pages already committed stay consistent (each page is
/// one transaction) and the `sync_run` row says why.
pub async fn sync_once(
    ctx: &SyncContext,
    account: &AccountId,
    trigger: Trigger,
    cancel: &CancellationToken,
) -> Result<SyncSummary, SyncError> {
    let (run_id, baseline) = start_run(ctx, account, trigger).await?;
    finish(ctx, account, run_id, baseline, cancel).await
}

async fn run_pass(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    baseline: bool,
    cancel: &CancellationToken,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let mut seen: HashSet<LinkId> = HashSet::new();
    // A sweep reads every page; a second sweep (only links not yet seen) runs when the list
    // shifted under the first one: its total changed between pages, or fewer links were read
    // than it reports (a deletion pulls items to earlier pages, so one can be skipped).
    for sweep in 0..2 {
        let (first_total, last_total) =
            sweep_pages(ctx, account, run_id, baseline, cancel, &mut seen, summary).await?;
        let drifted =
            first_total != last_total || last_total.is_some_and(|t| (seen.len() as u64) < t);
        if !drifted {
            break;
        }
        warn!(
            sweep,
            seen = seen.len(),
            first_total,
            last_total,
            "sync.drift_detected: the list shifted during the pass; reading it again for skipped links"
        );
    }
    // Links the ledger has that this complete pass did not see: confirm each with show. Every
    // link seen is live in the ledger now, so equal counts mean nothing is missing (the usual
    // case, which then costs one COUNT instead of reading every id).
    let live = ctx.ledger.count_live_links(account).await?;
    let missing: Vec<LinkId> = if live as usize > seen.len() {
        ctx.ledger
            .live_link_ids(account)
            .await?
            .into_iter()
            .filter(|id| !seen.contains(id))
            .collect()
    } else {
        Vec::new()
    };
    for id in missing {
        if cancel.is_cancelled() {
            return Err(SyncError::Interrupted);
        }
        match ctx.client.show(account, id).await {
            Ok(Some((link, raw))) => {
                // Skipped by a shifting page but still there: diff it like any other.
                info!(link_id = %id, "sync.skipped_link_recovered");
                seen.insert(id);
                let commit = prepare_links(
                    ctx,
                    account,
                    run_id,
                    baseline,
                    vec![(link, raw)],
                    summary,
                    None,
                )
                .await?;
                commit_now(ctx, run_id, commit).await?;
            }
            Ok(None) => commit_deletion(ctx, account, run_id, id, summary).await?,
            Err(source) => return Err(SyncError::Upstream { page: 0, source }),
        }
    }
    summary.links_seen = seen.len() as u64;
    Ok(())
}

/// Reads every page once, committing links not in `seen`, in page order. Page 1 is read first;
/// once it reveals the page count, pages 2… are fetched up to `ctx.concurrency` at a time (memory
/// stays bounded by page size × concurrency) and committed in order. Without a page count, pages
/// are read one by one until an empty page (a short page does not prove the end). Returns the
/// `total` SingaPay reported on the first and on the last page.
async fn sweep_pages(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    baseline: bool,
    cancel: &CancellationToken,
    seen: &mut HashSet<LinkId>,
    summary: &mut SyncSummary,
) -> Result<(Option<u64>, Option<u64>), SyncError> {
    let mut writer = PageWriter::start(ctx, run_id);
    let read = read_pages(
        ctx,
        account,
        run_id,
        baseline,
        cancel,
        seen,
        summary,
        &mut writer,
    )
    .await;
    // Whatever happened, let the pages already queued reach the ledger before returning.
    let written = writer.finish().await;
    let totals = read?;
    written?;
    Ok(totals)
}

#[allow(clippy::too_many_arguments)]
async fn read_pages(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    baseline: bool,
    cancel: &CancellationToken,
    seen: &mut HashSet<LinkId>,
    summary: &mut SyncSummary,
    writer: &mut PageWriter,
) -> Result<(Option<u64>, Option<u64>), SyncError> {
    let first = ctx
        .client
        .list_page(account, 1, ctx.per_page)
        .await
        .map_err(|source| SyncError::Upstream { page: 1, source })?;
    let first_total = first.pagination.total;
    let mut last_total = first_total;
    let total_pages = first.pagination.total_pages;
    let mut more = !first.links.is_empty();
    commit_page(
        ctx, account, run_id, baseline, 1, first, seen, summary, writer,
    )
    .await?;
    match total_pages {
        Some(tp) if more && tp > 1 => {
            // A fetcher task keeps up to `concurrency` pages in flight while this task commits,
            // so network and ledger work overlap; pages arrive in order.
            let conc = ctx.concurrency.max(1);
            let (tx, mut rx) = tokio::sync::mpsc::channel(conc);
            let client = ctx.client.clone();
            let acc = account.clone();
            let per_page = ctx.per_page;
            let stop = cancel.child_token();
            let fetcher = tokio::spawn({
                let stop = stop.clone();
                async move {
                    let mut pages = futures_util::stream::iter(2..=tp.min(MAX_PAGES))
                        .map(|page| {
                            let client = client.clone();
                            let acc = acc.clone();
                            async move {
                                let r = client.list_page(&acc, page, per_page).await;
                                (page, r)
                            }
                        })
                        .buffered(conc);
                    while let Some(item) = pages.next().await {
                        let failed = item.1.is_err();
                        if stop.is_cancelled() || tx.send(item).await.is_err() || failed {
                            break;
                        }
                    }
                }
            });
            let _abort = AbortOnDrop(fetcher);
            while let Some((page, r)) = rx.recv().await {
                if cancel.is_cancelled() {
                    return Err(SyncError::Interrupted);
                }
                let p = r.map_err(|source| SyncError::Upstream { page, source })?;
                last_total = p.pagination.total.or(last_total);
                commit_page(
                    ctx, account, run_id, baseline, page, p, seen, summary, writer,
                )
                .await?;
            }
            stop.cancel();
        }
        _ => {
            let mut page = 1;
            while more {
                page += 1;
                if page > MAX_PAGES {
                    return Err(SyncError::Runaway(MAX_PAGES));
                }
                if cancel.is_cancelled() {
                    return Err(SyncError::Interrupted);
                }
                let p = ctx
                    .client
                    .list_page(account, page, ctx.per_page)
                    .await
                    .map_err(|source| SyncError::Upstream { page, source })?;
                last_total = p.pagination.total.or(last_total);
                more = !p.links.is_empty();
                commit_page(
                    ctx, account, run_id, baseline, page, p, seen, summary, writer,
                )
                .await?;
            }
        }
    }
    Ok((first_total, last_total))
}

/// Aborts the page fetcher if the pass ends early (error or shutdown).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Dedupes one fetched page against `seen`, diffs it and queues it on the writer.
#[allow(clippy::too_many_arguments)]
async fn commit_page(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    baseline: bool,
    page: u64,
    p: crate::singapay::ListPage,
    seen: &mut HashSet<LinkId>,
    summary: &mut SyncSummary,
    writer: &mut PageWriter,
) -> Result<(), SyncError> {
    summary.pages += 1;
    let n = p.links.len();
    let fresh: Vec<(PaymentLink, String)> = p
        .links
        .into_iter()
        .filter(|(l, _)| seen.insert(l.id))
        .collect();
    if fresh.len() < n {
        info!(
            page,
            duplicates = n - fresh.len(),
            "sync.page_duplicates_skipped"
        );
    }
    summary.links_seen = seen.len() as u64;
    let commit = prepare_links(
        ctx,
        account,
        run_id,
        baseline,
        fresh,
        summary,
        Some(&mut writer.window),
    )
    .await?;
    writer.send(commit).await?;
    info!(page, links = n, "sync.page_prepared");
    Ok(())
}

/// SHA-256 (hex) of a text (a link's verbatim JSON).
pub fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn envelope(
    id: &EventId,
    t: EventType,
    at: chrono::DateTime<chrono::Utc>,
    account: &AccountId,
    sequence: i64,
    object: &Value,
    change: &Change,
) -> String {
    let mut data = Map::new();
    data.insert("object".into(), object.clone());
    if let Some(p) = &change.previous_attributes {
        data.insert("previous_attributes".into(), Value::Object(p.clone()));
    }
    if let Some(d) = change.usage_delta {
        data.insert("usage_delta".into(), Value::from(d));
    }
    let env = serde_json::json!({
        "id": id.0,
        "type": t.as_str(),
        "created_at": rfc3339_utc(at),
        "account_id": account.as_str(),
        "sequence": sequence,
        "data": Value::Object(data),
    });
    env.to_string()
}

#[allow(clippy::too_many_arguments)]
fn push_events(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    link_id: LinkId,
    object: &Value,
    changes: &[Change],
    mut sequence: i64,
    commit: &mut PageCommit,
    summary: &mut SyncSummary,
) -> i64 {
    let now = ctx.clock.now();
    for c in changes {
        sequence += 1;
        let id = EventId::generate();
        for r in ctx.routing.targets(c.event_type) {
            commit.deliveries.push(NewDelivery {
                event_id: id.0.clone(),
                subscriber: r.name.clone(),
                channel: r.channel.as_str(),
                next_attempt_at: now,
            });
        }
        commit.events.push(NewEvent {
            envelope: envelope(&id, c.event_type, now, account, sequence, object, c),
            id,
            account_id: account.clone(),
            link_id,
            event_type: c.event_type,
            sequence,
            run_id,
            created_at: now,
            usage_delta: c.usage_delta,
        });
        *summary
            .events_by_type
            .entry(c.event_type.as_str().to_string())
            .or_default() += 1;
        metrics::counter!("singapay_sync_events_total", "type" => c.event_type.as_str())
            .increment(1);
    }
    sequence
}

/// Diffs fresh links against the ledger and prepares what to commit (rows, events, deliveries);
/// counts them in `summary`.
#[allow(clippy::too_many_arguments)]
async fn prepare_links(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    baseline: bool,
    links: Vec<(PaymentLink, String)>,
    summary: &mut SyncSummary,
    window: Option<&mut StateWindow>,
) -> Result<PageCommit, SyncError> {
    if links.is_empty() {
        return Ok(PageCommit::default());
    }
    let ids: Vec<LinkId> = links.iter().map(|(l, _)| l.id).collect();
    let stored = match window {
        Some(w) => w.states(ctx, account, &ids).await?,
        None => ctx.ledger.load_link_states(account, &ids).await?,
    };
    let mode = if !baseline {
        NewLink::Full
    } else if ctx.notify_on_baseline {
        NewLink::CreatedOnly
    } else {
        NewLink::Silent
    };
    let mut commit = PageCommit::default();
    let now = ctx.clock.now();
    // Keep only the links whose verbatim JSON differs from the stored read (or that are new).
    let mut changed = Vec::new();
    for (link, raw) in links {
        let raw_hash = content_hash(&raw);
        let state = stored.get(&link.id).filter(|o| o.deleted_at.is_none());
        if state.is_some_and(|o| o.raw_hash == raw_hash) {
            continue; // byte-identical to the stored read: unchanged, nothing to do
        }
        changed.push((link, raw, raw_hash));
    }
    // The stored objects are read (and decoded) only for those.
    let previous_ids: Vec<LinkId> = changed
        .iter()
        .filter(|(l, ..)| stored.get(&l.id).is_some_and(|o| o.deleted_at.is_none()))
        .map(|(l, ..)| l.id)
        .collect();
    let previous_objects = ctx.ledger.load_objects(account, &previous_ids).await?;
    for (link, raw, raw_hash) in changed {
        let old: Option<&LinkState> = stored.get(&link.id);
        let previous = previous_objects.get(&link.id);
        if previous == Some(&link) {
            // Same content in another encoding (e.g. `20000` vs "20000.00"): no event, no write;
            // the stored read stays the reference.
            continue;
        }
        let changes = diff(previous, &link, mode);
        let sequence = if changes.is_empty() {
            old.map(|o| o.sequence).unwrap_or(0)
        } else {
            let object = serde_json::to_value(&link).map_err(|e| {
                LedgerError::Corrupt(format!("link {} does not serialise: {e}", link.id))
            })?;
            push_events(
                ctx,
                account,
                run_id,
                link.id,
                &object,
                &changes,
                old.map(|o| o.sequence).unwrap_or(0),
                &mut commit,
                summary,
            )
        };
        commit.writes.push(LinkWrite {
            account_id: account.clone(),
            link,
            raw_json: raw,
            raw_hash,
            sequence,
            deleted_at: None,
            now,
        });
    }
    summary.links_written += commit.writes.len() as u64;
    summary.events += commit.events.len() as u64;
    summary.deliveries += commit.deliveries.len() as u64;
    Ok(commit)
}

/// Commits one prepared page now and wakes the dispatcher if it owes deliveries.
async fn commit_now(ctx: &SyncContext, run_id: i64, commit: PageCommit) -> Result<(), SyncError> {
    ctx.ledger.commit_page(run_id, &commit).await?;
    if !commit.deliveries.is_empty()
        && let Some(w) = &ctx.wake
    {
        w.notify_one();
    }
    Ok(())
}

/// The stored state of a window of ids just below the pages being read: one ledger query serves
/// about ten pages (memory: `WINDOW` small rows, whatever the number of links).
#[derive(Default)]
struct StateWindow {
    /// Lowest id covered (`i64::MIN` once the ledger has nothing lower).
    low: i64,
    /// Highest id covered.
    high: i64,
    rows: std::collections::HashMap<LinkId, LinkState>,
}

const WINDOW: i64 = 1000;

impl StateWindow {
    async fn states(
        &mut self,
        ctx: &SyncContext,
        account: &AccountId,
        ids: &[LinkId],
    ) -> Result<std::collections::HashMap<LinkId, LinkState>, SyncError> {
        let (Some(min), Some(max)) = (ids.iter().min(), ids.iter().max()) else {
            return Ok(Default::default());
        };
        if self.rows.is_empty() && self.high == 0 || min.0 < self.low || max.0 > self.high {
            let rows = ctx
                .ledger
                .load_link_states_below(account, *max, WINDOW)
                .await?;
            self.high = max.0;
            self.low = if (rows.len() as i64) < WINDOW {
                i64::MIN
            } else {
                rows.last().map(|(id, _)| id.0).unwrap_or(i64::MIN)
            };
            self.rows = rows.into_iter().collect();
            if min.0 < self.low {
                // A page wider than the window: ask for exactly its ids.
                return Ok(ctx.ledger.load_link_states(account, ids).await?);
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| self.rows.remove(id).map(|s| (*id, s)))
            .collect())
    }
}

/// Commits prepared pages in order on a background task, so that the next page is decoded and
/// diffed while the previous one is written. A failed commit stops it: later pages are not
/// written (each page is its own transaction, so the ledger stays consistent).
struct PageWriter {
    tx: Option<tokio::sync::mpsc::Sender<PageCommit>>,
    handle: tokio::task::JoinHandle<Result<(), LedgerError>>,
    /// Stored states of the ids the next pages will bring.
    window: StateWindow,
}

impl PageWriter {
    fn start(ctx: &SyncContext, run_id: i64) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PageCommit>(2);
        let ledger = ctx.ledger.clone();
        let wake = ctx.wake.clone();
        let handle = tokio::spawn(async move {
            while let Some(commit) = rx.recv().await {
                ledger.commit_page(run_id, &commit).await?;
                if !commit.deliveries.is_empty()
                    && let Some(w) = &wake
                {
                    w.notify_one();
                }
            }
            Ok(())
        });
        Self {
            tx: Some(tx),
            handle,
            window: StateWindow::default(),
        }
    }

    /// Queues a page; if the writer already failed, returns its error.
    async fn send(&mut self, commit: PageCommit) -> Result<(), SyncError> {
        let sent = match &self.tx {
            Some(tx) => tx.send(commit).await.is_ok(),
            None => false,
        };
        if sent {
            Ok(())
        } else {
            self.tx = None;
            self.wait().await
        }
    }

    /// Waits until every queued page is committed.
    async fn finish(mut self) -> Result<(), SyncError> {
        self.tx = None;
        self.wait().await
    }

    async fn wait(&mut self) -> Result<(), SyncError> {
        match (&mut self.handle).await {
            Ok(r) => r.map_err(SyncError::from),
            Err(e) => Err(SyncError::Ledger(LedgerError::Corrupt(format!(
                "ledger writer stopped: {e}"
            )))),
        }
    }
}

async fn commit_deletion(
    ctx: &SyncContext,
    account: &AccountId,
    run_id: i64,
    id: LinkId,
    summary: &mut SyncSummary,
) -> Result<(), SyncError> {
    let Some(stored) = ctx.ledger.get_link(account, id).await? else {
        return Ok(());
    };
    let object = serde_json::to_value(&stored.link)
        .map_err(|e| LedgerError::Corrupt(format!("link {id} does not serialise: {e}")))?;
    let mut commit = PageCommit::default();
    let sequence = push_events(
        ctx,
        account,
        run_id,
        id,
        &object,
        &[deletion()],
        stored.sequence,
        &mut commit,
        summary,
    );
    commit
        .deletions
        .push((account.clone(), id, sequence, ctx.clock.now()));
    ctx.ledger.commit_page(run_id, &commit).await?;
    info!(link_id = %id, "sync.link_deleted");
    summary.links_written += 1;
    summary.events += commit.events.len() as u64;
    summary.deliveries += commit.deliveries.len() as u64;
    if let Some(w) = &ctx.wake {
        w.notify_one();
    }
    Ok(())
}

//! One sync pass of one account: page through the list, dedupe by id, diff each link against the
//! ledger, and commit link rows + events + deliveries of a page in one transaction (pages queued
//! behind a busy writer share one: group commit). Links missing from a complete pass are checked
//! with show and reported deleted only on 404.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

use crate::event::{Event, EventData};
use crate::ledger::{Ledger, LedgerError, LinkState, LinkWrite, NewDelivery, NewEvent, PageCommit};
use crate::notify::Routing;
use crate::singapay::{PaymentLink, SingapayClient, SingapayError};
use crate::time::Clock;
use crate::types::{AccountId, EventId, LinkId, Trigger};

use super::diff::{Change, NewLink, deletion, diff};
use super::window::StateWindow;
use super::writer::PageWriter;

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

/// A pass recorded in `sync_run` as started, not yet run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StartedRun {
    /// Its `sync_run.id`.
    pub run_id: i64,
    /// The account it syncs.
    pub account: AccountId,
    /// Whether it is the account's baseline (first complete pass).
    pub baseline: bool,
}

/// Records the start of a pass of `account`.
///
/// Errors: the ledger cannot record it.
pub(crate) async fn start_run(
    ctx: &SyncContext,
    account: &AccountId,
    trigger: Trigger,
) -> Result<StartedRun, SyncError> {
    let baseline = !ctx.ledger.baseline_done(account).await?;
    let run_id = ctx
        .ledger
        .start_run(account, trigger, baseline, ctx.clock.now())
        .await?;
    Ok(StartedRun {
        run_id,
        account: account.clone(),
        baseline,
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
        seen: HashSet::new(),
        summary: SyncSummary {
            run_id,
            account_id: account.to_string(),
            baseline,
            ..Default::default()
        },
    };
    let result = pass.run().instrument(span).await;
    let mut summary = pass.summary;
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

/// One pass in progress: what every step of it needs.
struct Pass<'a> {
    ctx: &'a SyncContext,
    account: &'a AccountId,
    run_id: i64,
    /// How links the ledger has never seen are treated (baseline or not).
    mode: NewLink,
    cancel: &'a CancellationToken,
    /// Ids read so far in this pass (dedupe, and the deletion check).
    seen: HashSet<LinkId>,
    summary: SyncSummary,
}

impl Pass<'_> {
    async fn run(&mut self) -> Result<(), SyncError> {
        // A sweep reads every page; a second sweep (only links not yet seen) runs when the list
        // shifted under the first one: its total changed between pages, or fewer links were read
        // than it reports (a deletion pulls items to earlier pages, so one can be skipped).
        for sweep in 0..2 {
            let (first_total, last_total) = self.sweep().await?;
            let seen = self.seen.len();
            let drifted =
                first_total != last_total || last_total.is_some_and(|t| (seen as u64) < t);
            if !drifted {
                break;
            }
            warn!(
                sweep,
                seen,
                first_total,
                last_total,
                "sync.drift_detected: the list shifted during the pass; reading it again for skipped links"
            );
        }
        self.confirm_missing().await?;
        self.summary.links_seen = self.seen.len() as u64;
        Ok(())
    }

    /// Links the ledger has that this complete pass did not see: each is checked with show and
    /// reported deleted only on a 404 (one skipped by a shifting page is diffed instead). Every
    /// link seen is live in the ledger now, so equal counts mean nothing is missing (the usual
    /// case, which then costs one COUNT instead of reading every id).
    async fn confirm_missing(&mut self) -> Result<(), SyncError> {
        let (ctx, account) = (self.ctx, self.account);
        let live = ctx.ledger.count_live_links(account).await?;
        if live as usize <= self.seen.len() {
            return Ok(());
        }
        let missing: Vec<LinkId> = ctx
            .ledger
            .live_link_ids(account)
            .await?
            .into_iter()
            .filter(|id| !self.seen.contains(id))
            .collect();
        for id in missing {
            if self.cancel.is_cancelled() {
                return Err(SyncError::Interrupted);
            }
            let commit = match ctx.client.show(account, id).await {
                Ok(Some((link, raw))) => {
                    info!(link_id = %id, "sync.skipped_link_recovered");
                    self.seen.insert(id);
                    self.prepare(vec![(link, raw)], None).await?
                }
                Ok(None) => self.prepare_deletion(id).await?,
                Err(source) => return Err(SyncError::Upstream { page: 0, source }),
            };
            commit_now(ctx, self.run_id, commit).await?;
        }
        Ok(())
    }

    /// Reads every page once, committing links not yet seen, in page order, through a
    /// [`PageWriter`]. Returns the `total` SingaPay reported on the first and on the last page.
    async fn sweep(&mut self) -> Result<(Option<u64>, Option<u64>), SyncError> {
        let mut writer = PageWriter::start(self.ctx, self.run_id);
        let read = self.read_pages(&mut writer).await;
        // Whatever happened, let the pages already queued reach the ledger before returning.
        let written = writer.finish().await;
        let totals = read?;
        written?;
        Ok(totals)
    }

    async fn fetch(&self, page: u64) -> Result<crate::singapay::ListPage, SyncError> {
        self.ctx
            .client
            .list_page(self.account, page, self.ctx.per_page)
            .await
            .map_err(|source| SyncError::Upstream { page, source })
    }

    /// Page 1 is read first; once it reveals the page count, pages 2… are fetched up to
    /// `ctx.concurrency` at a time by a fetcher task (memory stays bounded by page size ×
    /// concurrency) while this task diffs; pages arrive in order. Without a page count, pages are
    /// read one by one until an empty page (a short page does not prove the end).
    async fn read_pages(
        &mut self,
        writer: &mut PageWriter,
    ) -> Result<(Option<u64>, Option<u64>), SyncError> {
        let first = self.fetch(1).await?;
        let first_total = first.pagination.total;
        let mut last_total = first_total;
        let total_pages = first.pagination.total_pages;
        let mut more = !first.links.is_empty();
        self.accept_page(1, first, writer).await?;
        match total_pages {
            Some(tp) if more && tp > 1 => {
                let conc = self.ctx.concurrency.max(1);
                let (tx, mut rx) = tokio::sync::mpsc::channel(conc);
                let client = self.ctx.client.clone();
                let acc = self.account.clone();
                let per_page = self.ctx.per_page;
                let stop = self.cancel.child_token();
                let fetcher = tokio::spawn({
                    let stop = stop.clone();
                    async move {
                        let mut pages = futures_util::stream::iter(2..=tp.min(MAX_PAGES))
                            .map(|page| {
                                let client = client.clone();
                                let acc = acc.clone();
                                async move { (page, client.list_page(&acc, page, per_page).await) }
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
                    if self.cancel.is_cancelled() {
                        return Err(SyncError::Interrupted);
                    }
                    let p = r.map_err(|source| SyncError::Upstream { page, source })?;
                    last_total = p.pagination.total.or(last_total);
                    self.accept_page(page, p, writer).await?;
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
                    if self.cancel.is_cancelled() {
                        return Err(SyncError::Interrupted);
                    }
                    let p = self.fetch(page).await?;
                    last_total = p.pagination.total.or(last_total);
                    more = !p.links.is_empty();
                    self.accept_page(page, p, writer).await?;
                }
            }
        }
        Ok((first_total, last_total))
    }

    /// Dedupes one fetched page against `seen`, diffs it and queues it on the writer.
    async fn accept_page(
        &mut self,
        page: u64,
        p: crate::singapay::ListPage,
        writer: &mut PageWriter,
    ) -> Result<(), SyncError> {
        self.summary.pages += 1;
        let n = p.links.len();
        let seen = &mut self.seen;
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
        self.summary.links_seen = self.seen.len() as u64;
        let commit = self.prepare(fresh, Some(&mut writer.window)).await?;
        writer.send(commit).await?;
        info!(page, links = n, "sync.page_prepared");
        Ok(())
    }

    /// Appends the events of `changes` for one link (with their deliveries) to `commit`; returns
    /// the link's sequence after them.
    fn push_events(
        &mut self,
        link_id: LinkId,
        object: &Value,
        changes: &[Change],
        mut sequence: i64,
        commit: &mut PageCommit,
    ) -> Result<i64, SyncError> {
        let now = self.ctx.clock.now();
        for c in changes {
            sequence += 1;
            let event = Event {
                account_id: self.account.clone(),
                created_at: now,
                data: EventData {
                    object: object.clone(),
                    previous_attributes: c.previous_attributes.clone(),
                    usage_delta: c.usage_delta,
                },
                id: EventId::generate(),
                sequence,
                event_type: c.event_type,
            };
            for r in self.ctx.routing.targets(c.event_type) {
                commit.deliveries.push(NewDelivery {
                    event_id: event.id.0.clone(),
                    subscriber: r.name.clone(),
                    channel: r.channel,
                    next_attempt_at: now,
                });
            }
            commit
                .events
                .push(NewEvent::new(event, link_id, self.run_id)?);
            *self
                .summary
                .events_by_type
                .entry(c.event_type.as_str().to_string())
                .or_default() += 1;
            metrics::counter!("singapay_sync_events_total", "type" => c.event_type.as_str())
                .increment(1);
        }
        Ok(sequence)
    }

    /// Counts a prepared commit in the summary.
    fn count(&mut self, commit: &PageCommit) {
        self.summary.links_written += (commit.writes.len() + commit.deletions.len()) as u64;
        self.summary.events += commit.events.len() as u64;
        self.summary.deliveries += commit.deliveries.len() as u64;
    }

    /// Diffs fresh links against the ledger and prepares what to commit (rows, events,
    /// deliveries). `window` serves the stored states of a page being swept.
    async fn prepare(
        &mut self,
        links: Vec<(PaymentLink, String)>,
        window: Option<&mut StateWindow>,
    ) -> Result<PageCommit, SyncError> {
        if links.is_empty() {
            return Ok(PageCommit::default());
        }
        let (ctx, account) = (self.ctx, self.account);
        let ids: Vec<LinkId> = links.iter().map(|(l, _)| l.id).collect();
        let stored = match window {
            Some(w) => w.states(ctx, account, &ids).await?,
            None => ctx.ledger.load_link_states(account, &ids).await?,
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
        // The stored links are read (and decoded) only for those.
        let previous_ids: Vec<LinkId> = changed
            .iter()
            .filter(|(l, ..)| stored.get(&l.id).is_some_and(|o| o.deleted_at.is_none()))
            .map(|(l, ..)| l.id)
            .collect();
        let previous_links = ctx.ledger.load_links(account, &previous_ids).await?;
        for (link, raw, raw_hash) in changed {
            let old: Option<&LinkState> = stored.get(&link.id);
            let previous = previous_links.get(&link.id).map(|s| &s.link);
            if previous == Some(&link) {
                // Same content in another encoding (e.g. `20000` vs "20000.00"): no event, no
                // write; the stored read stays the reference.
                continue;
            }
            let changes = diff(previous, &link, self.mode);
            let mut sequence = old.map(|o| o.sequence).unwrap_or(0);
            if !changes.is_empty() {
                let object = serde_json::to_value(&link).map_err(|e| {
                    LedgerError::Corrupt(format!("link {} does not serialise: {e}", link.id))
                })?;
                sequence = self.push_events(link.id, &object, &changes, sequence, &mut commit)?;
            }
            commit.writes.push(LinkWrite {
                account_id: account.clone(),
                link,
                raw_json: raw,
                raw_hash,
                sequence,
                deleted_at: None,
                now,
            })?;
        }
        self.count(&commit);
        Ok(commit)
    }

    /// Prepares the `deleted` event of a link confirmed gone (404 on show) and its mark.
    async fn prepare_deletion(&mut self, id: LinkId) -> Result<PageCommit, SyncError> {
        let mut commit = PageCommit::default();
        let Some(stored) = self.ctx.ledger.get_link(self.account, id).await? else {
            return Ok(commit);
        };
        let object = serde_json::to_value(&stored.link)
            .map_err(|e| LedgerError::Corrupt(format!("link {id} does not serialise: {e}")))?;
        let sequence =
            self.push_events(id, &object, &[deletion()], stored.sequence, &mut commit)?;
        commit
            .deletions
            .push((self.account.clone(), id, sequence, self.ctx.clock.now()));
        info!(link_id = %id, "sync.link_deleted");
        self.count(&commit);
        Ok(commit)
    }
}

/// Aborts the page fetcher if the pass ends early (error or shutdown).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// SHA-256 (hex) of a text (a link's verbatim JSON).
pub(crate) fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Commits one prepared page now and wakes the dispatcher if it owes deliveries.
async fn commit_now(ctx: &SyncContext, run_id: i64, commit: PageCommit) -> Result<(), SyncError> {
    let wake = !commit.deliveries.is_empty();
    ctx.ledger.commit_page(run_id, commit).await?;
    if wake && let Some(w) = &ctx.wake {
        w.notify_one();
    }
    Ok(())
}

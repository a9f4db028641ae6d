//! A sweep: every list page read (page 1, then the rest a few at a time, in order), each page
//! prepared and queued on the ledger writer, a second sweep when the list shifted, then the
//! links the ledger has that the sweep did not see confirmed missing (show → 404) under the
//! deletion guard.

use futures_util::StreamExt;
use tracing::{info, warn};

use super::commit::{Read, commit_now};
use super::{MAX_PAGES, Pass, SyncError};
use crate::sync::writer::PageWriter;
use crate::types::LinkId;

impl Pass<'_> {
    pub(super) async fn sync_links(&mut self) -> Result<(), SyncError> {
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
    /// reported deleted only on SingaPay's own 404 (one skipped by a shifting page is diffed
    /// instead). Every link seen is live in the ledger now, so equal counts mean nothing is
    /// missing (the usual case, which then costs one COUNT instead of reading every id).
    ///
    /// The deletion guard: when more links are missing than `sync.max_deletions` allows, or the
    /// list came back empty, nothing is checked or deleted (a list that lost its links is likelier
    /// than a merchant who deleted them all); the pass records the count as `deletions_held`
    /// until a pass with `confirm_deletions` runs.
    async fn confirm_missing(&mut self) -> Result<(), SyncError> {
        let (ctx, account) = (self.ctx, self.account);
        let live = ctx.ledger.count_live_links(account).await?;
        // Deferred new links are seen but not in the ledger yet.
        if live as usize <= self.seen.len().saturating_sub(self.deferred_new) {
            return Ok(());
        }
        let missing: Vec<LinkId> = ctx
            .ledger
            .live_link_ids(account)
            .await?
            .into_iter()
            .filter(|id| !self.seen.contains(id))
            .collect();
        let allowed = ctx.max_deletions.allowed(live.max(0) as u64);
        let empty_list = self.seen.is_empty();
        if !self.confirm_deletions && (empty_list || missing.len() as u64 > allowed) {
            self.summary.deletions_held = missing.len() as u64;
            warn!(
                account_id = %account,
                missing = missing.len(),
                allowed,
                empty_list,
                "sync.deletions_held: more links are missing than sync.max_deletions allows; \
                 none is deleted until a resync with confirm_deletions"
            );
            return Ok(());
        }
        for id in missing {
            if self.cancel.is_cancelled() {
                return Err(SyncError::Interrupted);
            }
            let commit = match ctx.client.show(account, id).await {
                Ok(Some((link, raw))) => {
                    info!(link_id = %id, "sync.skipped_link_recovered");
                    self.seen.insert(id);
                    self.prepare(0, vec![Read::decoded(link, raw)], None)
                        .await?
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

    async fn fetch(&self, page: u64) -> Result<crate::singapay::RawListPage, SyncError> {
        self.ctx
            .client
            .list_page_raw(self.account, page, self.ctx.per_page)
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
                        let mut pages =
                            futures_util::stream::iter(2..=tp.min(MAX_PAGES))
                                .map(|page| {
                                    let client = client.clone();
                                    let acc = acc.clone();
                                    async move {
                                        (page, client.list_page_raw(&acc, page, per_page).await)
                                    }
                                })
                                .buffered(conc);
                        while let Some(item) = pages.next().await {
                            // A failed or an empty page is the last one worth fetching.
                            let last = item.1.as_ref().is_ok_and(|p| p.links.is_empty())
                                || item.1.is_err();
                            if stop.is_cancelled() || tx.send(item).await.is_err() || last {
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
                    // An empty page ends the list, whatever page count SingaPay claimed.
                    let empty = p.links.is_empty();
                    self.accept_page(page, p, writer).await?;
                    if empty {
                        break;
                    }
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
        p: crate::singapay::RawListPage,
        writer: &mut PageWriter,
    ) -> Result<(), SyncError> {
        if let Some(hook) = self.ctx.page_hook.get() {
            (hook.0)(self.account, page);
        }
        self.summary.pages += 1;
        let n = p.links.len();
        let seen = &mut self.seen;
        let fresh: Vec<Read> = p
            .links
            .into_iter()
            .filter(|l| seen.insert(l.id))
            .map(Read::from)
            .collect();
        if fresh.len() < n {
            info!(
                page,
                duplicates = n - fresh.len(),
                "sync.page_duplicates_skipped"
            );
        }
        self.summary.links_seen = self.seen.len() as u64;
        let commit = self.prepare(page, fresh, Some(&mut writer.window)).await?;
        writer.send(commit).await?;
        info!(page, links = n, "sync.page_prepared");
        Ok(())
    }
}

/// Aborts the page fetcher if the pass ends early (error or shutdown).
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

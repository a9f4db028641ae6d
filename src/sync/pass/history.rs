//! The history part of a pass: Payment Link History read newest first (DESIGN §13), each
//! changed row diffed against its mirror (`diff_payment`) and committed with its events.
//!
//! Cost tracks the window, not the year: a pass stops at the first page whose rows are all older
//! than `sync.history_window` (by `created_at`) and mirrored unchanged. The history baseline and
//! a full resync read every page, several at a time.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tracing::info;

use super::commit::ContentHash;
use super::sweep::AbortOnDrop;
use super::{MAX_PAGES, Pass, SyncError};
use crate::event::{LinkRef, PaymentObject};
use crate::ledger::{LedgerError, PageCommit, PaymentWrite};
use crate::singapay::{HistoryPage, PaymentRecord};
use crate::sync::diff::diff_payment;
use crate::sync::writer::PageWriter;
use crate::types::{EventType, LinkId};

impl Pass<'_> {
    /// Reads the history and commits its changes page by page.
    ///
    /// Errors: SingaPay failed on a page ([`SyncError::History`], the page numbered from 1), a
    /// row cannot be mirrored, the ledger failed, or the daemon is stopping; the pages already
    /// committed stay.
    pub(super) async fn sync_history(&mut self) -> Result<(), SyncError> {
        let mut writer = PageWriter::start(self.ctx, self.run_id);
        let read = self.read_history(&mut writer).await;
        let written = writer.finish().await;
        read?;
        written?;
        self.summary.payments_seen = self.payments_seen.len() as u64;
        Ok(())
    }

    /// The start of the window: rows created before it are re-read only until a page of them is
    /// unchanged.
    pub(super) fn window_start(&self) -> DateTime<Utc> {
        let window =
            chrono::Duration::from_std(self.ctx.history_window).unwrap_or(chrono::Duration::MAX);
        self.ctx
            .clock
            .now()
            .checked_sub_signed(window)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    async fn read_history(&mut self, writer: &mut PageWriter) -> Result<(), SyncError> {
        let full = self.summary.history_full;
        let since = self.window_start();
        let upstream = |page| move |source| SyncError::History { page, source };
        let first = self
            .ctx
            .client
            .history_page(self.account, 1, self.ctx.per_page, &[])
            .await
            .map_err(upstream(1))?;
        let total_pages = first.pagination.total_pages;
        let last_page = total_pages.unwrap_or(MAX_PAGES).min(MAX_PAGES);
        let empty = first.rows.is_empty();
        let settled = self.accept_history_page(1, first, since, writer).await?;
        if empty || (settled && !full) || last_page < 2 {
            return Ok(());
        }
        // Pages 2… are fetched ahead while this task diffs: several at a time for a full read,
        // one ahead for a windowed one (which usually stops after a few pages, having fetched
        // the page after the one it stopped at: one request more than the pages it read).
        let ahead = if full { self.ctx.concurrency.max(1) } else { 1 };
        let (tx, mut rx) = tokio::sync::mpsc::channel(ahead);
        let client = self.ctx.client.clone();
        let account = self.account.clone();
        let per_page = self.ctx.per_page;
        let fetcher = tokio::spawn(async move {
            let mut pages = futures_util::stream::iter(2..=last_page)
                .map(|page| {
                    let client = client.clone();
                    let account = account.clone();
                    async move {
                        let r = client.history_page(&account, page, per_page, &[]).await;
                        (page, r)
                    }
                })
                .buffered(ahead);
            while let Some(item) = pages.next().await {
                let last = item.1.as_ref().map_or(true, |p| p.rows.is_empty());
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        let _abort = AbortOnDrop(fetcher);
        let mut read = 1;
        while let Some((page, r)) = rx.recv().await {
            if self.cancel.is_cancelled() {
                return Err(SyncError::Interrupted);
            }
            let p = r.map_err(upstream(page))?;
            read = page;
            if p.rows.is_empty() {
                return Ok(());
            }
            let settled = self.accept_history_page(page, p, since, writer).await?;
            if settled && !full {
                return Ok(());
            }
        }
        if total_pages.is_none() && read >= MAX_PAGES {
            return Err(SyncError::Runaway(MAX_PAGES));
        }
        Ok(())
    }

    /// Diffs one history page and queues what changed. Returns whether the page is all rows
    /// older than the window and mirrored unchanged (a windowed read stops there).
    pub(super) async fn accept_history_page(
        &mut self,
        page: u64,
        p: HistoryPage,
        since: DateTime<Utc>,
        writer: &mut PageWriter,
    ) -> Result<bool, SyncError> {
        let (ctx, account) = (self.ctx, self.account);
        self.summary.history_pages += 1;
        let n = p.rows.len();
        let seen = &mut self.payments_seen;
        let fresh: Vec<(PaymentRecord, String)> = p
            .rows
            .into_iter()
            .filter(|(r, _)| seen.insert(r.id))
            .collect();
        let ids: Vec<_> = fresh.iter().map(|(r, _)| r.id).collect();
        let states = ctx.ledger.load_payment_states(account, &ids).await?;
        // A page of rows already read in this pass (new attempts pushed them down a page) says
        // nothing about the pages after it: read on.
        let mut settled = !fresh.is_empty();
        let mut changed = Vec::new();
        for (row, raw) in fresh {
            let hash = ContentHash::of(&raw);
            let old_window = row.created_at.is_none_or(|c| c < since);
            let same = states
                .get(&row.id)
                .is_some_and(|s| hash.matches(&s.raw_hash));
            settled &= old_window;
            if !same {
                changed.push((row, raw, hash));
            }
        }
        let previous_ids: Vec<_> = changed
            .iter()
            .filter(|(r, ..)| states.contains_key(&r.id))
            .map(|(r, ..)| r.id)
            .collect();
        let previous = ctx.ledger.load_payments(account, &previous_ids).await?;
        let mut links = self.links_of(&changed).await?;
        let mut commit = PageCommit::default();
        let now = ctx.clock.now();
        for (row, raw, raw_hash) in changed {
            let old = previous.get(&row.id);
            if old.is_some_and(|o| o.payment == row) {
                // Same content in another encoding: nothing to do, and it counts as unchanged.
                continue;
            }
            settled = false;
            let changes = diff_payment(old.map(|o| &o.payment), &row, self.history_mode);
            let link = links
                .entry(row.payment_link_reff_no.clone())
                .or_insert_with(|| LinkRef {
                    id: row.payment_link_id.unwrap_or(LinkId(0)),
                    reff_no: row.payment_link_reff_no.clone(),
                    title: None,
                })
                .clone();
            let mut sequence = old.map_or(0, |o| o.sequence);
            if !changes.is_empty() {
                let object = PaymentObject {
                    payment: row.clone(),
                    payment_link: link.clone(),
                }
                .to_value()
                .map_err(|e| {
                    LedgerError::Corrupt(format!("payment {} does not serialise: {e}", row.id))
                })?;
                if changes
                    .iter()
                    .any(|c| c.event_type == EventType::PaymentPaid)
                {
                    self.newly_paid
                        .entry(row.payment_link_reff_no.clone())
                        .or_default()
                        .push(object.clone());
                }
                sequence = self.push_events(
                    link.id,
                    Some(row.id),
                    &object,
                    &changes,
                    sequence,
                    &mut commit,
                )?;
            }
            commit.payments.push(PaymentWrite {
                account_id: account.clone(),
                link_id: (link.id.0 != 0).then_some(link.id),
                record: row,
                raw_json: raw,
                raw_hash: raw_hash.to_hex(),
                sequence,
                now,
            });
        }
        info!(
            page,
            rows = n,
            written = commit.payments.len(),
            settled,
            "sync.history_page_prepared"
        );
        self.summary.payments_written += commit.payments.len() as u64;
        self.count(&commit);
        writer.send(commit).await?;
        Ok(settled)
    }

    /// The links of the changed rows, by `reff_no`: the ledger's, overlaid with the links of
    /// this pass not committed yet (deferred).
    async fn links_of(
        &self,
        rows: &[(PaymentRecord, String, ContentHash)],
    ) -> Result<HashMap<String, LinkRef>, SyncError> {
        let mut reffs: Vec<&str> = rows
            .iter()
            .map(|(r, ..)| r.payment_link_reff_no.as_str())
            .collect();
        reffs.sort_unstable();
        reffs.dedup();
        let mut links = self.ctx.ledger.links_by_reff(self.account, &reffs).await?;
        for r in reffs {
            if let Some(l) = self.deferred_links.get(r) {
                links.insert(r.to_string(), l.clone());
            }
        }
        Ok(links)
    }
}

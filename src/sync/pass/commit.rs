//! Turning fresh links into what a page commits: the diff against the stored rows, the events
//! and their deliveries, the rows to write (`PageCommit`).

use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::info;

use super::{Pass, SyncContext, SyncError};
use crate::event::{Event, EventData, LinkRef};
use crate::ledger::{LedgerError, LinkState, LinkWrite, NewDelivery, NewEvent, PageCommit};
use crate::singapay::PaymentLink;
use crate::sync::diff::{Change, deletion, diff};
use crate::sync::window::StateWindow;
use crate::types::{EventId, EventType, LinkId, PaymentId};

impl Pass<'_> {
    /// Appends the events of `changes` for one link, or for one payment of that link (with their
    /// deliveries), to `commit`; returns the link's (the payment's) sequence after them.
    pub(super) fn push_events(
        &mut self,
        link_id: LinkId,
        payment: Option<PaymentId>,
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
                    payments: None,
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
            commit.events.push(match payment {
                Some(p) => NewEvent::for_payment(event, link_id, p, self.run_id)?,
                None => NewEvent::new(event, link_id, self.run_id)?,
            });
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
    pub(super) fn count(&mut self, commit: &PageCommit) {
        self.summary.links_written += (commit.writes.len() + commit.deletions.len()) as u64;
        self.summary.events += commit.events.len() as u64;
        self.summary.deliveries += commit.deliveries.len() as u64;
    }

    /// Diffs fresh links against the ledger and prepares what to commit (rows, events,
    /// deliveries). `window` serves the stored states of a page being swept. A link whose usage
    /// rose (after the baseline) goes to the deferred commit instead, committed after the
    /// history (`flush_deferred`).
    pub(super) async fn prepare(
        &mut self,
        links: Vec<(PaymentLink, String)>,
        window: Option<&mut StateWindow>,
    ) -> Result<PageCommit, SyncError> {
        let mut deferred = std::mem::take(&mut self.deferred);
        let r = self.prepare_into(links, window, &mut deferred).await;
        self.deferred = deferred;
        r
    }

    async fn prepare_into(
        &mut self,
        links: Vec<(PaymentLink, String)>,
        window: Option<&mut StateWindow>,
        deferred: &mut PageCommit,
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
            let changes = diff(previous, &link, self.mode).map_err(|message| SyncError::Data {
                link: link.id,
                message,
            })?;
            let mut sequence = old.map(|o| o.sequence).unwrap_or(0);
            let defer = self.mode == crate::sync::diff::NewLink::Full
                && changes.iter().any(|c| c.event_type == EventType::Paid);
            let target = if defer {
                if old.is_none_or(|o| o.deleted_at.is_some()) {
                    self.deferred_new += 1;
                }
                self.deferred_links.insert(
                    link.reff_no.clone(),
                    LinkRef {
                        id: link.id,
                        reff_no: link.reff_no.clone(),
                        title: link.title.clone(),
                    },
                );
                &mut *deferred
            } else {
                &mut commit
            };
            if !changes.is_empty() {
                let object = serde_json::to_value(&link).map_err(|e| {
                    LedgerError::Corrupt(format!("link {} does not serialise: {e}", link.id))
                })?;
                sequence = self.push_events(link.id, None, &object, &changes, sequence, target)?;
            }
            target.writes.push(LinkWrite {
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
    pub(super) async fn prepare_deletion(&mut self, id: LinkId) -> Result<PageCommit, SyncError> {
        let mut commit = PageCommit::default();
        let Some(stored) = self.ctx.ledger.get_link(self.account, id).await? else {
            return Ok(commit);
        };
        let object = serde_json::to_value(&stored.link)
            .map_err(|e| LedgerError::Corrupt(format!("link {id} does not serialise: {e}")))?;
        let sequence = self.push_events(
            id,
            None,
            &object,
            &[deletion()],
            stored.sequence,
            &mut commit,
        )?;
        commit
            .deletions
            .push((self.account.clone(), id, sequence, self.ctx.clock.now()));
        info!(link_id = %id, "sync.link_deleted");
        self.count(&commit);
        Ok(commit)
    }
}

impl Pass<'_> {
    /// Commits the deferred links (those whose usage rose), each `payment_link.paid` with
    /// `data.payments`: the payments of that link that became paid in this pass.
    pub(super) async fn flush_deferred(&mut self) -> Result<(), SyncError> {
        let mut commit = std::mem::take(&mut self.deferred);
        if commit.events.is_empty() && commit.writes.is_empty() {
            return Ok(());
        }
        for e in &mut commit.events {
            if e.event.event_type != EventType::Paid {
                continue;
            }
            let reff = e.event.data.object.get("reff_no").and_then(Value::as_str);
            if let Some(paid) = reff.and_then(|r| self.newly_paid.get(r)) {
                e.set_payments(paid.clone())?;
            }
        }
        self.count(&commit);
        commit_now(self.ctx, self.run_id, commit).await
    }
}

/// SHA-256 (hex) of a text (a link's verbatim JSON).
pub(crate) fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Commits one prepared page now and wakes the dispatcher if it owes deliveries.
pub(super) async fn commit_now(
    ctx: &SyncContext,
    run_id: i64,
    commit: PageCommit,
) -> Result<(), SyncError> {
    let wake = !commit.deliveries.is_empty();
    ctx.ledger.commit_page(run_id, commit).await?;
    if wake && let Some(w) = &ctx.wake {
        w.notify_one();
    }
    Ok(())
}

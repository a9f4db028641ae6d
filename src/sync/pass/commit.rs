//! Turning fresh links into what a page commits: the diff against the stored rows, the events
//! and their deliveries, the rows to write (`PageCommit`).

use serde_json::Value;
use sha2::{Digest, Sha256};
use tracing::info;

use super::{Pass, SyncContext, SyncError};
use crate::event::{Event, EventData, LinkRef};
use crate::ledger::{LedgerError, LinkState, LinkWrite, NewDelivery, NewEvent, PageCommit};
use crate::singapay::{PaymentLink, RawLink, SingapayError};
use crate::sync::diff::{Change, deletion, diff};
use crate::sync::window::StateWindow;
use crate::types::{EventId, EventType, LinkId, PaymentId};

/// A link as a pass read it: its id and verbatim JSON, already decoded (a show) or not yet (a
/// list page: decoded by [`Pass::prepare`] only if its bytes differ from the stored read).
pub(super) struct Read {
    id: LinkId,
    raw: String,
    link: Option<PaymentLink>,
}

impl Read {
    /// A decoded link (a show) with its verbatim JSON.
    pub(super) fn decoded(link: PaymentLink, raw: String) -> Self {
        Self {
            id: link.id,
            raw,
            link: Some(link),
        }
    }
}

impl From<RawLink> for Read {
    fn from(r: RawLink) -> Self {
        Self {
            id: r.id,
            raw: r.raw,
            link: None,
        }
    }
}

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
        page: u64,
        links: Vec<Read>,
        window: Option<&mut StateWindow>,
    ) -> Result<PageCommit, SyncError> {
        let mut deferred = std::mem::take(&mut self.deferred);
        let r = self.prepare_into(page, links, window, &mut deferred).await;
        self.deferred = deferred;
        r
    }

    /// Errors: a changed link of list page `page` that cannot be decoded fails the page
    /// ([`SyncError::Upstream`] with [`SingapayError::Malformed`]: nothing of it is committed);
    /// the ledger failed; a diff failed.
    async fn prepare_into(
        &mut self,
        page: u64,
        links: Vec<Read>,
        window: Option<&mut StateWindow>,
        deferred: &mut PageCommit,
    ) -> Result<PageCommit, SyncError> {
        if links.is_empty() {
            return Ok(PageCommit::default());
        }
        let (ctx, account) = (self.ctx, self.account);
        let ids: Vec<LinkId> = links.iter().map(|r| r.id).collect();
        let stored = match window {
            Some(w) => w.states(ctx, account, &ids).await?,
            None => ctx.ledger.load_link_states(account, &ids).await?,
        };
        let mut commit = PageCommit::default();
        let now = ctx.clock.now();
        // Keep only the links whose verbatim JSON differs from the stored read (or that are new),
        // and decode those.
        let (mut changed, page_len) = (Vec::new(), links.len());
        for read in links {
            let raw_hash = ContentHash::of(&read.raw);
            let state = stored.get(&read.id).filter(|o| o.deleted_at.is_none());
            if state.is_some_and(|o| raw_hash.matches(&o.raw_hash)) {
                continue; // byte-identical to the stored read: unchanged, nothing to do
            }
            let link = match read.link {
                Some(link) => link,
                None => PaymentLink::decode(&read.raw).map_err(|m| SyncError::Upstream {
                    page,
                    source: SingapayError::Malformed(m),
                })?,
            };
            if changed.is_empty() {
                // Room for the page at the first change (none allocated when nothing changed).
                changed.reserve(page_len);
            }
            changed.push((link, read.raw, raw_hash));
        }
        // The stored links are read (and decoded) only for those.
        let previous_ids: Vec<LinkId> = changed
            .iter()
            .filter(|(l, ..)| stored.get(&l.id).is_some_and(|o| o.deleted_at.is_none()))
            .map(|(l, ..)| l.id)
            .collect();
        let previous_links = ctx.ledger.load_links(account, &previous_ids).await?;
        commit.writes.reserve(changed.len());
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
                raw_hash: raw_hash.to_hex(),
                sequence,
                deleted_at: None,
                now,
            });
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

/// The `raw_hash` of a text (a link's or a history row's verbatim JSON), as a new row stores it
/// (the ledger's tests build rows with it).
#[cfg(test)]
pub(crate) fn content_hash(text: &str) -> String {
    ContentHash::of(text).to_hex()
}

/// The first 128 bits of the SHA-256 of a verbatim JSON text, compared with a stored `raw_hash`
/// without encoding it: a pass that finds nothing changed allocates no hash text. Two versions of
/// one link or payment match by accident with probability 2^-128, so an equal hash still proves
/// equal bytes for change detection.
///
/// A new row stores 32 lowercase hex digits. Rows written before 2026-12-07 hold all 64 digits
/// of the SHA-256; their first 32 are compared, so an existing ledger sees no change where there
/// was none. Half the digits keep `payment_link`'s and `payment`'s rows and their state indexes
/// (`payment_link_state`, `payment_state`) 64 bytes per row smaller: the baseline import of
/// 100,000 links 2.8% faster (the median of nine alternating pairs of
/// `SYNC_BENCH_PROFILE=baseline`, −5.3% to +1.7%), its client CPU lower in all nine
/// (docs/PERFORMANCE.md).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct ContentHash([u8; 16]);

impl ContentHash {
    /// The hash of `text`.
    pub(crate) fn of(text: &str) -> Self {
        let digest = Sha256::digest(text.as_bytes());
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest[..16]);
        Self(first)
    }

    /// Whether `stored` (hex, as the ledger holds it: 32 digits, or the full SHA-256's 64) is
    /// this hash; anything else (another length, upper case, not hex) is not.
    pub(crate) fn matches(&self, stored: &str) -> bool {
        fn nibble(c: u8) -> Option<u8> {
            match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'a'..=b'f' => Some(c - b'a' + 10),
                _ => None,
            }
        }
        let s = stored.as_bytes();
        (s.len() == 32 || s.len() == 64)
            && self.0.iter().zip(s.chunks_exact(2)).all(|(b, pair)| {
                matches!((nibble(pair[0]), nibble(pair[1])), (Some(h), Some(l)) if (h << 4 | l) == *b)
            })
    }

    /// The 32 lowercase hex digits a new row stores.
    pub(crate) fn to_hex(self) -> String {
        hex::encode(self.0)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_matches_its_own_hex_and_nothing_else() {
        let h = ContentHash::of(r#"{"id":103}"#);
        let hex = h.to_hex();
        assert_eq!(hex, content_hash(r#"{"id":103}"#));
        // The first 128 bits of SHA-256 (`printf '{"id":103}' | sha256sum`).
        assert_eq!(hex, "c8d7672ebaf100c612a2d2776b68fbe8");
        assert!(h.matches(&hex));
        assert!(!h.matches(&hex.to_uppercase()));
        assert!(!h.matches(&hex[..30]));
        assert!(!h.matches(""));
        let mut other = hex.clone().into_bytes();
        other[31] = if other[31] == b'0' { b'1' } else { b'0' };
        assert!(!h.matches(std::str::from_utf8(&other).unwrap()));
        assert!(!h.matches(&"z".repeat(32)));
        assert!(!ContentHash::of(r#"{"id":104}"#).matches(&hex));
    }

    #[test]
    fn a_full_sha256_stored_before_the_short_hash_still_matches_on_its_first_half() {
        let text = r#"{"id":103}"#;
        let full = hex::encode(Sha256::digest(text.as_bytes()));
        assert_eq!(full.len(), 64);
        assert!(ContentHash::of(text).matches(&full));
        assert!(!ContentHash::of(r#"{"id":104}"#).matches(&full));
        // Only the first half is compared: a full hash is proof enough in its first 128 bits.
        let mut tail = full.clone().into_bytes();
        tail[63] = if tail[63] == b'0' { b'1' } else { b'0' };
        assert!(ContentHash::of(text).matches(std::str::from_utf8(&tail).unwrap()));
        assert!(!ContentHash::of(text).matches(&full[..48]));
    }
}

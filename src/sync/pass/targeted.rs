//! The targeted part of a pass (DESIGN §14): the links a SingaPay webhook or an expiry timer
//! names, read by show, and their history rows, read by the list filtered by the attempt's
//! `reff_no` (DOC2 payment-link-history: that filter matches the row's own `reff_no`), each diffed and
//! committed exactly as a sweep would.

use tracing::info;

use super::commit::{Read, commit_now};
use super::{Pass, SyncError, Targets};
use crate::sync::writer::PageWriter;

impl Pass<'_> {
    /// Shows each target link and commits what changed (a link whose usage rose is deferred to
    /// the end of the pass, as in a sweep). A link SingaPay does not know is left to the sweep
    /// (only a sweep's deletion check, with its guard, marks links deleted).
    ///
    /// Errors: SingaPay failed ([`SyncError::Upstream`], page 0), the ledger failed, or the
    /// daemon is stopping; links already committed stay.
    pub(super) async fn show_targets(&mut self, t: &Targets) -> Result<(), SyncError> {
        for &id in &t.links {
            if self.cancel.is_cancelled() {
                return Err(SyncError::Interrupted);
            }
            match self.ctx.client.show(self.account, id).await {
                Ok(Some((link, raw))) => {
                    self.seen.insert(id);
                    let commit = self
                        .prepare(0, vec![Read::decoded(link, raw)], None)
                        .await?;
                    commit_now(self.ctx, self.run_id, commit).await?;
                }
                Ok(None) if t.deleted.contains(&id) => {
                    let commit = self.prepare_deletion(id).await?;
                    commit_now(self.ctx, self.run_id, commit).await?;
                }
                Ok(None) => info!(link_id = %id, "sync.target_not_found: left to the sweep"),
                Err(source) => return Err(SyncError::Upstream { page: 0, source }),
            }
        }
        self.summary.links_seen = self.seen.len() as u64;
        Ok(())
    }

    /// Reads the target history rows (one list request filtered by `reff_no` per attempt named,
    /// then the newest page if one of them was not found) and commits their changes.
    ///
    /// Errors: as [`Pass::sync_history`].
    pub(super) async fn read_target_history(&mut self, t: &Targets) -> Result<(), SyncError> {
        let mut writer = PageWriter::start(self.ctx, self.run_id);
        let read = self.read_targets(t, &mut writer).await;
        let written = writer.finish().await;
        read?;
        written?;
        self.summary.payments_seen = self.payments_seen.len() as u64;
        Ok(())
    }

    async fn read_targets(
        &mut self,
        t: &Targets,
        writer: &mut PageWriter,
    ) -> Result<(), SyncError> {
        let since = self.window_start();
        let mut missing = false;
        let mut page = 0;
        for attempt in &t.attempts {
            if self.cancel.is_cancelled() {
                return Err(SyncError::Interrupted);
            }
            page += 1;
            let p = self
                .ctx
                .client
                .history_page(
                    self.account,
                    1,
                    self.ctx.per_page,
                    &[("reff_no", attempt.clone())],
                )
                .await
                .map_err(|source| SyncError::History { page, source })?;
            missing |= !p.rows.iter().any(|(r, _)| &r.reff_no == attempt);
            self.accept_history_page(page, p, since, writer).await?;
        }
        // An attempt the filter did not find (or a link paid without one named): the newest
        // page, where a payment of the last seconds is.
        if missing || t.newest_history {
            page += 1;
            let p = self
                .ctx
                .client
                .history_page(self.account, 1, self.ctx.per_page, &[])
                .await
                .map_err(|source| SyncError::History { page, source })?;
            self.accept_history_page(page, p, since, writer).await?;
        }
        Ok(())
    }
}

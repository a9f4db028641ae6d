//! The pass's background ledger writer: pages committed in order while the next ones are diffed.

use crate::ledger::{LedgerError, PageCommit};

use super::window::StateWindow;
use super::{SyncContext, SyncError};

/// Pages a [`PageWriter`] holds queued, and commits at most at once (memory: this many prepared
/// pages, whatever the number of links).
const WRITER_QUEUE: usize = 8;

/// Link rows a [`PageWriter`] commits between two background checkpoints (≈ 1.3 KB of the file
/// each with their index entries, so ≈ 1.3 MB, ~80 of a new ledger's 16 KB pages and ~330 of an
/// older 4 KB one's: below SQLite's automatic checkpoint at 1,000 WAL pages, which would
/// otherwise run inside a commit). 10,000 made no measurable difference
/// (`SYNC_BENCH_PROFILE=baseline`, 2026-12-04).
const CHECKPOINT_ROWS: usize = 1000;

/// Commits prepared pages in order on a background task, so that the next page is decoded and
/// diffed while the previous one is written. When pages arrive faster than they commit, the
/// queued ones share one transaction (group commit: one BEGIN/COMMIT and one WAL append for
/// several pages); each page is still written whole or not at all. A failed commit stops it:
/// later pages are not written, so the ledger holds a prefix of the pass.
pub(super) struct PageWriter {
    tx: Option<tokio::sync::mpsc::Sender<PageCommit>>,
    handle: tokio::task::JoinHandle<Result<(), LedgerError>>,
    /// Stored states of the ids the next pages will bring.
    pub(super) window: StateWindow,
}

impl PageWriter {
    /// Starts the writer task of run `run_id`.
    pub(super) fn start(ctx: &SyncContext, run_id: i64) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<PageCommit>(WRITER_QUEUE);
        let ledger = ctx.ledger.clone();
        let wake = ctx.wake.clone();
        let handle = tokio::spawn(async move {
            let mut group = Vec::with_capacity(WRITER_QUEUE);
            let mut rows_since_checkpoint = 0;
            while rx.recv_many(&mut group, WRITER_QUEUE).await > 0 {
                let rows = group.iter().map(|c| c.writes.len()).sum::<usize>();
                let wake_dispatcher = group.iter().any(|c| !c.deliveries.is_empty());
                ledger
                    .commit_pages(run_id, std::mem::take(&mut group))
                    .await?;
                rows_since_checkpoint += rows;
                if rows_since_checkpoint >= CHECKPOINT_ROWS {
                    ledger.checkpoint_in_background();
                    rows_since_checkpoint = 0;
                }
                if wake_dispatcher && let Some(w) = &wake {
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
    pub(super) async fn send(&mut self, commit: PageCommit) -> Result<(), SyncError> {
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
    pub(super) async fn finish(mut self) -> Result<(), SyncError> {
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

//! The stored states of the ids a sweep is about to read, one ledger query per window.

use std::collections::HashMap;

use crate::ledger::LinkState;
use crate::types::{AccountId, LinkId};

use super::{SyncContext, SyncError};

/// The stored state of a window of ids just below the pages being read: one ledger query serves
/// about ten pages (memory: `WINDOW` small rows, whatever the number of links).
#[derive(Default)]
pub(super) struct StateWindow {
    /// Lowest id covered (`i64::MIN` once the ledger has nothing lower).
    low: i64,
    /// Highest id covered.
    high: i64,
    rows: HashMap<LinkId, LinkState>,
}

const WINDOW: i64 = 1000;

impl StateWindow {
    /// The stored states of `ids` (a page, newest id first): from the window, refilled with the
    /// next `WINDOW` ids below the page when the page leaves it.
    pub(super) async fn states(
        &mut self,
        ctx: &SyncContext,
        account: &AccountId,
        ids: &[LinkId],
    ) -> Result<HashMap<LinkId, LinkState>, SyncError> {
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
                rows.iter().map(|(id, _)| id.0).min().unwrap_or(i64::MIN)
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

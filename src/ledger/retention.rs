//! Retention: pruning what the audit trail does not need, in small transactions so that the
//! writers (passes, the dispatcher) never wait long behind it.

use chrono::{DateTime, Utc};

use super::backend::{on_pool, sql};
use super::{Ledger, LedgerResult};
use crate::time::ledger_ts;

/// Rows one [`Ledger::prune_batch`] call removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Delivered deliveries (and, for `event_cutoff`, the dead and disabled ones of old events).
    pub deliveries: u64,
    /// Their attempts.
    pub attempts: u64,
    /// Finished sync runs no event refers to.
    pub runs: u64,
    /// Events older than the event cutoff with no delivery pending.
    pub events: u64,
    /// SingaPay webhooks received before the cutoff and no longer pending.
    pub notifications: u64,
}

impl Pruned {
    /// Whether nothing was removed (the pruning is done for now).
    pub fn is_empty(&self) -> bool {
        *self == Pruned::default()
    }
}

impl Ledger {
    /// One small pruning step, at most `limit` rows of each kind, in one transaction:
    /// deliveries delivered before `cutoff` with their attempts; SingaPay webhooks received before
    /// `cutoff` and no longer pending; sync runs finished before `cutoff` that no event or
    /// webhook refers to; and, when `event_cutoff` is given, events created
    /// before it that no pending delivery still owes, with their deliveries and attempts.
    /// Call it again until it returns [`Pruned::is_empty`].
    ///
    /// On PostgreSQL a batch first tries the cluster's pruning lock (`cluster::PRUNE_KEY`): while
    /// another instance prunes, this one removes nothing and the empty answer ends its round.
    pub async fn prune_batch(
        &self,
        cutoff: DateTime<Utc>,
        event_cutoff: Option<DateTime<Utc>>,
        limit: i64,
    ) -> LedgerResult<Pruned> {
        on_pool!(self.pool, |p| {
            let mut tx = p.begin().await?;
            let mut out = Pruned::default();
            if PG {
                let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
                    .bind(super::cluster::LOCK_CLASS)
                    .bind(super::cluster::PRUNE_KEY)
                    .fetch_one(&mut *tx)
                    .await?;
                if !ours {
                    return Ok(out);
                }
            }
            let cut = ledger_ts(cutoff);
            out.attempts += sqlx::query(sql!(
                PG,
                "DELETE FROM delivery_attempt WHERE delivery_id IN (SELECT id FROM delivery \
                 INDEXED BY delivery_delivered WHERE state = 'delivered' AND delivered_at < $1 \
                 ORDER BY delivered_at LIMIT $2)"
            ))
            .bind(&cut)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            out.deliveries += sqlx::query(sql!(
                PG,
                "DELETE FROM delivery WHERE id IN (SELECT id FROM delivery \
                 INDEXED BY delivery_delivered WHERE state = 'delivered' AND delivered_at < $1 \
                 ORDER BY delivered_at LIMIT $2)"
            ))
            .bind(&cut)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if let Some(event_cut) = event_cutoff.map(ledger_ts) {
                let owed = "SELECT e.id FROM link_event e WHERE e.created_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM delivery d WHERE d.event_id = e.id AND d.state = 'pending') \
                     ORDER BY e.seq LIMIT $2";
                out.attempts += sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM delivery_attempt WHERE delivery_id IN \
                     (SELECT id FROM delivery WHERE event_id IN ({owed}))"
                )))
                .bind(&event_cut)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                out.deliveries += sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM delivery WHERE event_id IN ({owed})"
                )))
                .bind(&event_cut)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                out.events += sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DELETE FROM link_event WHERE id IN ({owed})"
                )))
                .bind(&event_cut)
                .bind(limit)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            out.notifications += sqlx::query(
                "DELETE FROM inbound_notification WHERE id IN (SELECT id FROM inbound_notification \
                 WHERE state <> 'pending' AND received_at < $1 ORDER BY id LIMIT $2)",
            )
            .bind(&cut)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            out.runs += sqlx::query(
                "DELETE FROM sync_run WHERE id IN (SELECT r.id FROM sync_run r \
                 WHERE r.finished_at < $1 AND NOT EXISTS \
                 (SELECT 1 FROM link_event e WHERE e.run_id = r.id) AND NOT EXISTS \
                 (SELECT 1 FROM inbound_notification n WHERE n.run_id = r.id) ORDER BY r.id LIMIT $2)",
            )
            .bind(&cut)
            .bind(limit)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(out)
        })
    }
}

//! Claims on deliveries: a dispatcher marks what it is sending (`claimed_at`), so that a batch
//! cut short by a crash or a kill is known and sent again, and so that on PostgreSQL several
//! instances never send the same delivery at once (`FOR UPDATE SKIP LOCKED`, a lease).

use chrono::{DateTime, Utc};

use super::backend::{on_pool, sql};
use super::due::{DueDelivery, due_conditions, due_of};
use super::{Ledger, LedgerResult};
use crate::time::ledger_ts;

impl Ledger {
    /// Claims what is due at `now` (as [`Ledger::due_deliveries`] selects it, at most `limit`,
    /// oldest first) for sending: `claimed_at = now`, so that a batch cut short by a crash is
    /// known. On SQLite (one instance) the selection and the claim are two statements. On
    /// PostgreSQL they are one (`UPDATE … FROM (SELECT … FOR UPDATE OF d SKIP LOCKED)
    /// RETURNING`), inside a transaction holding the claim lock (`cluster::CLAIM_KEY`): two
    /// instances never claim the same delivery, nor two events of one link for one subscriber at
    /// once (the second claim sees the first one's rows claimed and holds the later event back).
    pub(crate) async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> LedgerResult<Vec<DueDelivery>> {
        let pool = match &self.pool {
            super::backend::Pool::Sqlite(_) => {
                let due = self.due_deliveries(now, limit).await?;
                let ids: Vec<i64> = due.iter().map(|d| d.id).collect();
                self.claim_deliveries(&ids, now).await?;
                return Ok(due);
            }
            super::backend::Pool::Postgres(p) => p,
        };
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(super::cluster::LOCK_CLASS)
            .bind(super::cluster::CLAIM_KEY)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(sql!(
            true,
            concat!(
                "UPDATE delivery SET claimed_at = $1 FROM (SELECT d.id FROM delivery d \
                 JOIN link_event e ON e.id = d.event_id WHERE ",
                due_conditions!(),
                " ORDER BY d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED) due, link_event e \
                 WHERE delivery.id = due.id AND e.id = delivery.event_id \
                 RETURNING delivery.id, e.envelope, CAST(json_build_array(delivery.event_id, \
                 delivery.subscriber, delivery.channel, delivery.attempts, e.run_id, e.link_id, \
                 e.payment_id, e.account_id) AS TEXT) AS meta"
            )
        ))
        .bind(ledger_ts(now))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut due = rows
            .iter()
            .map(due_of)
            .collect::<LedgerResult<Vec<DueDelivery>>>()?;
        due.sort_by_key(|d| d.id);
        Ok(due)
    }

    /// Marks `ids` as claimed by an attempt in flight (`claimed_at`), so that one cut short by a
    /// crash is known at the next start.
    pub(crate) async fn claim_deliveries(
        &self,
        ids: &[i64],
        now: DateTime<Utc>,
    ) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            if ids.is_empty() {
                return Ok(());
            }
            sqlx::query(sql!(
                PG,
                "UPDATE delivery SET claimed_at = $1 WHERE id IN (SELECT value FROM json_each($2))"
            ))
            .bind(ledger_ts(now))
            .bind(super::ids_json(ids.iter().copied())?)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Clears the claims of `ids` whose outcome was not recorded (a group stopped behind a
    /// failure did not attempt its later deliveries).
    pub(crate) async fn release_claims(&self, ids: &[i64]) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            if ids.is_empty() {
                return Ok(());
            }
            sqlx::query(sql!(
                PG,
                "UPDATE delivery SET claimed_at = NULL \
                 WHERE claimed_at IS NOT NULL AND id IN (SELECT value FROM json_each($1))"
            ))
            .bind(super::ids_json(ids.iter().copied())?)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Puts off pending deliveries until `until` without attempting them, because their
    /// webhook subscriber timed out (`Dispatcher::send_batch`): those among `ids` (claimed by the
    /// batch, which does not send them), and, with `subscriber`, every other pending webhook
    /// delivery to it that no batch has claimed and that is due before `until` (so that the next
    /// batches do not try it again before then). Their claim is cleared, `next_attempt_at`
    /// becomes `until` (so, while they wait, they hold back the later events of their links like
    /// any delivery retrying; none is moved earlier), and `last_error` says why; `attempts`,
    /// `last_status` and the attempt log are left as they are, since nothing was sent. One
    /// transaction. Returns how many were put off.
    ///
    /// Errors: the update failed (the caller's release of the batch's claims then makes them due
    /// at once, as before this existed).
    pub(crate) async fn defer_deliveries(
        &self,
        ids: &[i64],
        subscriber: Option<&str>,
        until: DateTime<Utc>,
        why: &str,
    ) -> LedgerResult<u64> {
        let until = ledger_ts(until);
        on_pool!(self.pool, |p| {
            let mut tx = p.begin().await?;
            let mut n = 0;
            if !ids.is_empty() {
                n += sqlx::query(sql!(
                    PG,
                    "UPDATE delivery SET next_attempt_at = $1, last_error = $2, claimed_at = NULL \
                     WHERE state = 'pending' AND id IN (SELECT value FROM json_each($3))"
                ))
                .bind(&until)
                .bind(why)
                .bind(super::ids_json(ids.iter().copied())?)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            if let Some(subscriber) = subscriber {
                n += sqlx::query(
                    "UPDATE delivery SET next_attempt_at = $1, last_error = $2 \
                     WHERE state = 'pending' AND next_attempt_at < $1 AND subscriber = $3 \
                     AND channel = 'webhook' AND claimed_at IS NULL",
                )
                .bind(&until)
                .bind(why)
                .bind(subscriber)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            Ok(n)
        })
    }

    /// The deliveries a crash or a kill left claimed (their batch was being sent: some were in
    /// flight, some perhaps delivered): each gets an attempt row saying so (without counting
    /// against its retry schedule) and is due again. Returns how many.
    ///
    /// `claimed_before`: only claims taken before it (PostgreSQL: claims whose lease lapsed; the
    /// others belong to instances still sending them); `None`: every claim (SQLite at start,
    /// where no other dispatcher can hold one). On PostgreSQL one statement takes the lapsed
    /// claims under `FOR UPDATE SKIP LOCKED`, so two instances recovering at once log each once.
    pub(crate) async fn recover_interrupted_attempts(
        &self,
        claimed_before: Option<DateTime<Utc>>,
    ) -> LedgerResult<u64> {
        const WHY: &str = "interrupted: the daemon stopped with this delivery claimed for \
                           sending (it may have been delivered); it is sent again";
        let before = claimed_before.map(ledger_ts);
        match &self.pool {
            super::backend::Pool::Postgres(p) => {
                let r = sqlx::query(
                    "WITH lapsed AS (UPDATE delivery SET claimed_at = NULL \
                     FROM (SELECT id, claimed_at FROM delivery WHERE claimed_at IS NOT NULL \
                           AND ($1::text IS NULL OR claimed_at < $1) \
                           ORDER BY id FOR UPDATE SKIP LOCKED) old \
                     WHERE delivery.id = old.id RETURNING delivery.id, old.claimed_at AS was) \
                     INSERT INTO delivery_attempt (delivery_id, attempted_at, duration_ms, status, error) \
                     SELECT id, was, 0, NULL, $2 FROM lapsed ORDER BY id",
                )
                .bind(before)
                .bind(WHY)
                .execute(p)
                .await?;
                Ok(r.rows_affected())
            }
            super::backend::Pool::Sqlite(p) => {
                let mut tx = p.begin().await?;
                sqlx::query(
                    "INSERT INTO delivery_attempt (delivery_id, attempted_at, duration_ms, status, error) \
                     SELECT id, claimed_at, 0, NULL, $2 FROM delivery \
                     WHERE claimed_at IS NOT NULL AND ($1 IS NULL OR claimed_at < $1) ORDER BY id",
                )
                .bind(&before)
                .bind(WHY)
                .execute(&mut *tx)
                .await?;
                let r = sqlx::query(
                    "UPDATE delivery SET claimed_at = NULL \
                     WHERE claimed_at IS NOT NULL AND ($1 IS NULL OR claimed_at < $1)",
                )
                .bind(&before)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(r.rows_affected())
            }
        }
    }
}

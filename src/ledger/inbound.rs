//! `inbound_notification` (SingaPay's webhooks, DESIGN §14) and what the doorbell and the expiry
//! timers ask of the mirror: which account holds a link, which links and history rows expire next.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

use crate::time::ledger_ts;
use crate::types::{AccountId, InboundState, LinkId};

use super::backend::{LedgerRow, on_pool};
use super::{Ledger, LedgerResult, parse_opt_ts, parse_ts};

/// A verified webhook to store.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// SHA-256 (hex) of the normalised body (of the raw body if it is not JSON).
    pub dedupe_key: String,
    /// The body's `event`, or the kind recognised from its fields.
    pub event: Option<String>,
    /// `X-PARTNER-ID` as received.
    pub partner_id: Option<String>,
    /// `X-Timestamp` as received.
    pub x_timestamp: Option<String>,
    /// The raw body.
    pub body: String,
    /// When it arrived, UTC.
    pub received_at: DateTime<Utc>,
    /// `pending` (to process) or `ignored` (nothing to read).
    pub state: InboundState,
    /// The link it names, if any.
    pub link_id: Option<LinkId>,
}

/// Whether a stored notification is new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// First delivery of this body (its row id).
    New(i64),
    /// The body was stored before (its row id); counted in `duplicates`, not processed again.
    Duplicate(i64),
}

/// One notification as stored (`GET /inbound`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct InboundRow {
    /// Row id.
    pub id: i64,
    /// The body's event.
    pub event: Option<String>,
    /// State.
    pub state: String,
    /// Arrival, UTC.
    pub received_at: DateTime<Utc>,
    /// Further deliveries of the same body.
    pub duplicates: i64,
    /// Processing attempts so far.
    pub attempts: i64,
    /// When a pending one is due, UTC.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// The configured account it resolved to.
    pub account_id: Option<String>,
    /// The link it names.
    pub link_id: Option<i64>,
    /// The targeted pass that processed it.
    pub run_id: Option<i64>,
    /// When it was processed, UTC.
    pub processed_at: Option<DateTime<Utc>>,
    /// `X-PARTNER-ID`.
    pub partner_id: Option<String>,
    /// The raw body (not in `GET /inbound` answers).
    #[serde(skip)]
    pub body: String,
}

/// What became of a processing attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum InboundOutcome {
    /// Processed by run `run_id` of `account`.
    Processed {
        /// The targeted pass.
        run_id: i64,
        /// The account.
        account: AccountId,
    },
    /// Nothing to read (and why).
    Ignored(String),
    /// Failed; try again at `next` (`None`: give up, state `failed`).
    Retry {
        /// Why.
        error: String,
        /// When to try again.
        next: Option<DateTime<Utc>>,
    },
    /// Not attempted (another pass of the account was running): due again at this time, the
    /// attempt not counted.
    Later(DateTime<Utc>),
}

/// An open link or a pending history row with an expiry (the expiry timer's queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Account.
    pub account: AccountId,
    /// When it expires, UTC.
    pub at: DateTime<Utc>,
    /// The link, or the history row by its attempt `reff_no`.
    pub target: ExpiryTarget,
}

/// What expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryTarget {
    /// A link (shown).
    Link(LinkId),
    /// A history row (read by its attempt `reff_no`).
    Attempt(String),
}

/// The key [`Ledger::first_holder`] looks for.
#[derive(Clone, Copy)]
enum Key<'a> {
    Id(i64),
    Text(&'a str),
}

const COLUMNS: &str = "id, event, state, received_at, duplicates, attempts, next_attempt_at, \
                       last_error, account_id, link_id, run_id, processed_at, partner_id, body";

fn row_of(r: &impl LedgerRow) -> LedgerResult<InboundRow> {
    Ok(InboundRow {
        id: r.col("id")?,
        event: r.col("event")?,
        state: r.col("state")?,
        received_at: parse_ts(&r.col::<String>("received_at")?)?,
        duplicates: r.col("duplicates")?,
        attempts: r.col("attempts")?,
        next_attempt_at: parse_opt_ts(r.col("next_attempt_at")?)?,
        last_error: r.col("last_error")?,
        account_id: r.col("account_id")?,
        link_id: r.col("link_id")?,
        run_id: r.col("run_id")?,
        processed_at: parse_opt_ts(r.col("processed_at")?)?,
        partner_id: r.col("partner_id")?,
        body: r.col("body")?,
    })
}

impl Ledger {
    /// Stores a verified notification, or counts a duplicate of one stored before, and makes it
    /// durable ([`Ledger::make_durable`]) before returning: the caller answers SingaPay 200 only
    /// after this, so an acknowledged webhook survives a crash.
    ///
    /// Errors: the insert or the durability barrier failed (answer 5xx: SingaPay retries).
    pub async fn store_notification(&self, n: &NewNotification) -> LedgerResult<Stored> {
        on_pool!(self.pool, |p| {
            let row = sqlx::query(
                "INSERT INTO inbound_notification (dedupe_key, event, partner_id, x_timestamp, body, \
                 received_at, state, next_attempt_at, link_id) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                 CASE WHEN $7 = 'pending' THEN $6 END, $8) \
                 ON CONFLICT (dedupe_key) DO UPDATE SET duplicates = inbound_notification.duplicates + 1 \
                 RETURNING id, duplicates",
            )
            .bind(&n.dedupe_key)
            .bind(n.event.as_deref())
            .bind(n.partner_id.as_deref())
            .bind(n.x_timestamp.as_deref())
            .bind(&n.body)
            .bind(ledger_ts(n.received_at))
            .bind(n.state.as_str())
            .bind(n.link_id.map(|l| l.0))
            .fetch_one(p)
            .await?;
            let id: i64 = row.try_get(0)?;
            let duplicates: i64 = row.try_get(1)?;
            self.make_durable().await?;
            Ok(if duplicates == 0 {
                Stored::New(id)
            } else {
                Stored::Duplicate(id)
            })
        })
    }

    /// Pending notifications due at `now`, oldest first, at most `limit`, taken for processing.
    ///
    /// On SQLite (one daemon per ledger) they are only read. On PostgreSQL, where several
    /// instances drain one queue, they are claimed in the same statement (`FOR UPDATE SKIP
    /// LOCKED`): each one's `next_attempt_at` moves to `now + lease`, so no other instance takes
    /// it while this one processes it, and it is due again, for any instance, if this one dies
    /// before [`Ledger::finish_notifications`] records the outcome (DESIGN §16).
    pub(crate) async fn due_notifications(
        &self,
        now: DateTime<Utc>,
        limit: i64,
        lease: std::time::Duration,
    ) -> LedgerResult<Vec<InboundRow>> {
        on_pool!(self.pool, |p| {
            let text = if PG {
                format!(
                    "UPDATE inbound_notification SET next_attempt_at = $3 WHERE id IN \
                     (SELECT id FROM inbound_notification WHERE state = 'pending' \
                     AND next_attempt_at <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
                     RETURNING {COLUMNS}"
                )
            } else {
                format!(
                    "SELECT {COLUMNS} FROM inbound_notification WHERE state = 'pending' \
                     AND next_attempt_at <= $1 ORDER BY id LIMIT $2"
                )
            };
            let until = chrono::Duration::from_std(lease)
                .ok()
                .and_then(|l| now.checked_add_signed(l))
                .unwrap_or(now);
            let mut q = sqlx::query(sqlx::AssertSqlSafe(text))
                .bind(ledger_ts(now))
                .bind(limit);
            if PG {
                q = q.bind(ledger_ts(until));
            }
            let rows = q.fetch_all(p).await?;
            let mut out: Vec<InboundRow> = rows.iter().map(row_of).collect::<LedgerResult<_>>()?;
            // RETURNING keeps no order.
            out.sort_by_key(|r| r.id);
            Ok(out)
        })
    }

    /// When the next pending notification is due (`None`: none pending).
    pub(crate) async fn next_notification_due(&self) -> LedgerResult<Option<DateTime<Utc>>> {
        on_pool!(self.pool, |p| {
            let at: Option<String> = sqlx::query_scalar(
                "SELECT MIN(next_attempt_at) FROM inbound_notification WHERE state = 'pending'",
            )
            .fetch_one(p)
            .await?;
            parse_opt_ts(at)
        })
    }

    /// Records the outcome of an attempt at notifications `ids`.
    pub(crate) async fn finish_notifications(
        &self,
        ids: &[i64],
        outcome: &InboundOutcome,
        now: DateTime<Utc>,
    ) -> LedgerResult<()> {
        on_pool!(self.pool, |p| {
            let mut tx = p.begin().await?;
            for &id in ids {
                let q = match outcome {
                    InboundOutcome::Processed { run_id, account } => sqlx::query(
                        "UPDATE inbound_notification SET state = 'processed', attempts = attempts + 1, \
                         next_attempt_at = NULL, last_error = NULL, run_id = $1, account_id = $2, \
                         processed_at = $3 WHERE id = $4",
                    )
                    .bind(run_id)
                    .bind(account.as_str())
                    .bind(ledger_ts(now))
                    .bind(id),
                    InboundOutcome::Ignored(why) => sqlx::query(
                        "UPDATE inbound_notification SET state = 'ignored', next_attempt_at = NULL, \
                         last_error = $1, processed_at = $2 WHERE id = $3",
                    )
                    .bind(why)
                    .bind(ledger_ts(now))
                    .bind(id),
                    InboundOutcome::Retry { error, next } => sqlx::query(
                        "UPDATE inbound_notification SET attempts = attempts + 1, last_error = $1, \
                         state = CASE WHEN $2 IS NULL THEN 'failed' ELSE 'pending' END, \
                         next_attempt_at = $2 WHERE id = $3",
                    )
                    .bind(error)
                    .bind(next.map(ledger_ts))
                    .bind(id),
                    InboundOutcome::Later(at) => {
                        sqlx::query("UPDATE inbound_notification SET next_attempt_at = $1 WHERE id = $2")
                            .bind(ledger_ts(*at))
                            .bind(id)
                    }
                };
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Notifications, newest first, optionally in one state, at most `limit`, with ids below
    /// `before` (paging).
    pub async fn list_notifications(
        &self,
        state: Option<InboundState>,
        before: Option<i64>,
        limit: i64,
    ) -> LedgerResult<Vec<InboundRow>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM inbound_notification WHERE ($1 IS NULL OR state = $1) \
                 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
            )))
            .bind(state.map(|s| s.as_str()))
            .bind(before)
            .bind(limit)
            .fetch_all(p)
            .await?;
            rows.iter().map(row_of).collect()
        })
    }

    /// How many notifications are `pending` and `failed` (states with none are left out).
    pub(crate) async fn count_notifications(&self) -> LedgerResult<Vec<(InboundState, i64)>> {
        on_pool!(self.pool, |p| {
            let rows = sqlx::query(
                "SELECT state, COUNT(*) AS n FROM inbound_notification \
                 WHERE state IN ('pending', 'failed') GROUP BY state",
            )
            .fetch_all(p)
            .await?;
            rows.iter()
                .map(|r| Ok((super::parse_name(r, "state")?, r.try_get("n")?)))
                .collect()
        })
    }

    /// The first of `accounts` (in order) where `sql` (`?1` the account, `?2` the key; one row
    /// of `link_id`, maybe NULL) finds a row, and that row's link. One indexed query per
    /// configured account, rather than a scan of every account's rows.
    async fn first_holder(
        &self,
        accounts: &[AccountId],
        sql: &'static str,
        key: Key<'_>,
    ) -> LedgerResult<Option<(AccountId, Option<LinkId>)>> {
        on_pool!(self.pool, |p| {
            for a in accounts {
                let q = sqlx::query_scalar::<_, Option<i64>>(sql).bind(a.as_str());
                let q = match key {
                    Key::Id(id) => q.bind(id),
                    Key::Text(t) => q.bind(t),
                };
                if let Some(link) = q.fetch_optional(p).await? {
                    return Ok(Some((a.clone(), link.map(LinkId))));
                }
            }
            Ok(None)
        })
    }

    /// Which of `accounts` holds link `id` in the mirror (link ids are global at SingaPay).
    pub(crate) async fn account_of_link(
        &self,
        id: LinkId,
        accounts: &[AccountId],
    ) -> LedgerResult<Option<AccountId>> {
        let sql = "SELECT link_id FROM payment_link WHERE account_id = $1 AND link_id = $2";
        Ok(self
            .first_holder(accounts, sql, Key::Id(id.0))
            .await?
            .map(|(a, _)| a))
    }

    /// Which of `accounts` holds the link with merchant reference `reff_no`, and its id (a live
    /// one before a deleted one).
    pub(crate) async fn account_of_link_reff(
        &self,
        reff_no: &str,
        accounts: &[AccountId],
    ) -> LedgerResult<Option<(AccountId, LinkId)>> {
        let sql = "SELECT link_id FROM payment_link WHERE account_id = $1 AND reff_no = $2 \
                   ORDER BY deleted_at IS NOT NULL, link_id DESC LIMIT 1";
        Ok(self
            .first_holder(accounts, sql, Key::Text(reff_no))
            .await?
            .and_then(|(a, l)| Some((a, l?))))
    }

    /// Which of `accounts` holds the history row with attempt reference `reff_no`, and its link.
    pub(crate) async fn account_of_attempt(
        &self,
        reff_no: &str,
        accounts: &[AccountId],
    ) -> LedgerResult<Option<(AccountId, Option<LinkId>)>> {
        let sql = "SELECT link_id FROM payment WHERE account_id = $1 AND reff_no = $2 LIMIT 1";
        self.first_holder(accounts, sql, Key::Text(reff_no)).await
    }

    /// Open links and pending history rows of `accounts` whose expiry is after `after` (all of
    /// them when `None`), soonest first, at most `limit` of each kind.
    pub(crate) async fn next_expiries(
        &self,
        accounts: &[AccountId],
        after: Option<DateTime<Utc>>,
        limit: i64,
    ) -> LedgerResult<Vec<Expiry>> {
        on_pool!(self.pool, |p| {
            let after = after.map(ledger_ts);
            let links = sqlx::query(
                "SELECT account_id, link_id, expired_at FROM payment_link \
                 WHERE deleted_at IS NULL AND status_computed = 'open' AND expired_at IS NOT NULL \
                 AND ($1 IS NULL OR expired_at > $1) ORDER BY expired_at LIMIT $2",
            )
            .bind(after.as_deref())
            .bind(limit)
            .fetch_all(p)
            .await?;
            let rows = sqlx::query(
                "SELECT account_id, reff_no, expired_at FROM payment \
                 WHERE status = 'pending' AND is_expired = 0 AND expired_at IS NOT NULL \
                 AND status_computed IS DISTINCT FROM 'expired' \
                 AND ($1 IS NULL OR expired_at > $1) ORDER BY expired_at LIMIT $2",
            )
            .bind(after.as_deref())
            .bind(limit)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(links.len() + rows.len());
            for (r, link) in links
                .iter()
                .map(|r| (r, true))
                .chain(rows.iter().map(|r| (r, false)))
            {
                let account: String = r.try_get(0)?;
                let Some(account) = accounts.iter().find(|a| a.as_str() == account) else {
                    continue;
                };
                let at = parse_ts(&r.try_get::<String, _>(2)?)?;
                let target = if link {
                    ExpiryTarget::Link(LinkId(r.try_get(1)?))
                } else {
                    ExpiryTarget::Attempt(r.try_get(1)?)
                };
                out.push(Expiry {
                    account: account.clone(),
                    at,
                    target,
                });
            }
            out.sort_by_key(|e| e.at);
            Ok(out)
        })
    }
}

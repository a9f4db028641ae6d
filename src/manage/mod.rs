//! Managing payment links through the daemon (DESIGN §15): validated locally ([`validate`]),
//! created exactly once per `reff_no` although SingaPay has no idempotency, and mirrored at once
//! through the same diff and commit as a pass (a targeted pass shows the link after the write),
//! so `payment_link.created` / `.updated` / `.status_changed` / `.deleted` reach subscribers
//! without waiting for a sweep, and the next sweep finds nothing new.
//!
//! Exactly once: creates of one `(account, reff_no)` are serialised in the process; the intent is
//! recorded in the ledger before the POST; an answer lost to a timeout, a reset or a 5xx is
//! resolved by looking for the `reff_no` in SingaPay's list before anything is sent again; a
//! second create of a known `reff_no` is `duplicate_reff_no` with the existing link, unless it
//! carries the same `Idempotency-Key` and body, which replays the first answer (24 hours).

pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::ledger::{Intent, LedgerError, StoredAnswer};
use crate::singapay::{PaymentMethod, SingapayError};
use crate::sync::{SyncError, Syncer, Targets};
use crate::types::{AccountId, LinkId, Trigger};
use validate::FieldErrors;

/// How long the payment methods are cached (DESIGN §15: refreshed hourly).
const METHODS_TTL: Duration = Duration::from_secs(3600);
/// How long an `Idempotency-Key`'s answer is replayed.
const KEY_TTL: chrono::Duration = chrono::Duration::hours(24);

/// Why a write was refused or failed (the admin API's error codes).
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The request is invalid (`422 invalid_request` with `fields`); nothing was sent.
    #[error("the request is invalid")]
    Invalid(FieldErrors),
    /// SingaPay refused it as invalid (422 with SingaPay's messages by field).
    #[error("SingaPay refused the request: {message}")]
    Refused {
        /// SingaPay's message.
        message: String,
        /// SingaPay's field errors.
        fields: Value,
    },
    /// The account already has a link with this `reff_no` (409 `duplicate_reff_no`).
    #[error("a link with this reff_no exists")]
    Duplicate(Box<Value>),
    /// Another create of this `reff_no` is in flight (409 `create_in_progress`: try again in a
    /// few seconds).
    #[error("another create of this reff_no is in flight")]
    InProgress,
    /// The `Idempotency-Key` was used with another body (422 `idempotency_key_reused`).
    #[error("this Idempotency-Key was used with another body")]
    KeyReused,
    /// The link has payments: SingaPay does not delete those (409 `link_has_payments`).
    #[error("the link has payments and cannot be deleted")]
    HasPayments,
    /// No such link (404 `not_found`).
    #[error("no such link")]
    NotFound,
    /// SingaPay could not be reached or failed, and no link was made (502
    /// `upstream_unavailable`; the caller may try again).
    #[error("SingaPay failed: {0}")]
    Upstream(String),
    /// The ledger failed (500).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// One lock per `(account, reff_no)` being created.
type CreateLocks = Mutex<HashMap<(AccountId, String), Arc<tokio::sync::Mutex<()>>>>;

/// The link management service: one per daemon.
pub struct Manager {
    syncer: Arc<Syncer>,
    locks: CreateLocks,
    /// Payment methods per credential name (a merchant's methods are per credential).
    methods: tokio::sync::Mutex<HashMap<String, (Instant, Vec<PaymentMethod>)>>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Manager")
    }
}

fn sha256_json(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

fn upstream(e: SingapayError) -> ManageError {
    match e {
        SingapayError::Invalid { message, fields } => ManageError::Refused { message, fields },
        SingapayError::NotFound { .. } => ManageError::NotFound,
        other => ManageError::Upstream(other.to_string()),
    }
}

impl Manager {
    /// The service over `syncer`'s ledger and client.
    pub(crate) fn new(syncer: Arc<Syncer>) -> Self {
        Self {
            syncer,
            locks: Mutex::default(),
            methods: tokio::sync::Mutex::default(),
        }
    }

    /// The payment methods of `account`'s merchant (its credential's; the default
    /// credential's for `None`), cached an hour per credential.
    ///
    /// Errors: SingaPay failed.
    pub async fn payment_methods(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<PaymentMethod>, ManageError> {
        let client = &self.syncer.context().client;
        let name = client
            .credential_name(account)
            .unwrap_or("default")
            .to_string();
        let mut cached = self.methods.lock().await;
        if let Some((at, list)) = cached.get(&name)
            && at.elapsed() < METHODS_TTL
        {
            return Ok(list.clone());
        }
        let list = client.payment_methods(account).await.map_err(upstream)?;
        cached.insert(name, (Instant::now(), list.clone()));
        Ok(list)
    }

    /// The codes to check `account`'s whitelist against (`None` when SingaPay cannot say: left
    /// to it).
    async fn known_codes(&self, account: &AccountId) -> Option<Vec<String>> {
        match self.payment_methods(Some(account)).await {
            Ok(m) => Some(m.into_iter().map(|m| m.code).collect()),
            Err(e) => {
                warn!(error = %e, "manage.methods_unavailable: the whitelist is left to SingaPay");
                None
            }
        }
    }

    fn lock_of(&self, account: &AccountId, reff_no: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if locks.len() > 10_000 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        Arc::clone(
            locks
                .entry((account.clone(), reff_no.to_string()))
                .or_default(),
        )
    }

    /// Shows link `id` (marked deleted on SingaPay's 404 when `deleted`) in a targeted pass,
    /// the commit path of a sweep, waiting up to a minute for a pass of the account that runs.
    async fn mirror(
        &self,
        account: &AccountId,
        id: LinkId,
        deleted: bool,
    ) -> Result<(), ManageError> {
        let targets = Targets {
            links: [id].into(),
            deleted: if deleted {
                [id].into()
            } else {
                Default::default()
            },
            ..Default::default()
        };
        match self
            .syncer
            .sync_targeted_when_free(
                account,
                Trigger::Manual,
                targets,
                Duration::from_secs(60),
                std::future::ready,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(SyncError::Ledger(e)) => Err(ManageError::Ledger(e)),
            Err(e) => Err(ManageError::Upstream(e.to_string())),
        }
    }

    /// The mirrored link as events carry it.
    async fn mirrored(&self, account: &AccountId, id: LinkId) -> Result<Value, ManageError> {
        let l = self
            .syncer
            .context()
            .ledger
            .get_link(account, id)
            .await?
            .ok_or(ManageError::NotFound)?;
        serde_json::to_value(&l.link)
            .map_err(|e| ManageError::Ledger(LedgerError::Corrupt(e.to_string())))
    }

    /// Creates a link: `(201, {"link": …})`, or the replayed first answer of `key`.
    ///
    /// Errors: [`ManageError`] (nothing is sent upstream for an invalid request).
    pub async fn create(
        &self,
        account: &AccountId,
        body: &Value,
        key: Option<&str>,
    ) -> Result<(u16, Value), ManageError> {
        let ctx = self.syncer.context();
        let now = ctx.clock.now();
        let known = self.known_codes(account).await;
        let req = validate::create(body, known.as_deref(), now).map_err(ManageError::Invalid)?;
        let caller_hash = sha256_json(body);
        let lock = self.lock_of(account, &req.reff_no);
        let _serial = lock.lock().await;
        if let Some(k) = key
            && let Some(a) = ctx
                .ledger
                .idempotent_answer(account, k, now - KEY_TTL)
                .await?
        {
            if a.request_hash != caller_hash {
                return Err(ManageError::KeyReused);
            }
            let v = serde_json::from_str(&a.response)
                .map_err(|e| ManageError::Ledger(LedgerError::Corrupt(e.to_string())))?;
            return Ok((a.status, v));
        }
        let answer = self.create_once(account, &req).await;
        if let (Some(k), Ok((status, v))) = (key, &answer) {
            let stored = StoredAnswer {
                request_hash: caller_hash,
                status: *status,
                response: v.to_string(),
            };
            ctx.ledger.store_answer(account, k, &stored, now).await?;
        }
        answer
    }

    async fn create_once(
        &self,
        account: &AccountId,
        req: &validate::CreateRequest,
    ) -> Result<(u16, Value), ManageError> {
        let ctx = self.syncer.context();
        let (ledger, client) = (&ctx.ledger, &ctx.client);
        if let Some(id) = ledger.live_link_by_reff(account, &req.reff_no).await? {
            return Err(ManageError::Duplicate(Box::new(
                self.mirrored(account, id).await?,
            )));
        }
        let hash = sha256_json(&req.body);
        match ledger
            .begin_intent(account, &req.reff_no, &hash, ctx.clock.now())
            .await?
        {
            Intent::Created(id) => {
                return Err(ManageError::Duplicate(Box::new(
                    self.mirrored(account, id).await?,
                )));
            }
            Intent::Pending(since) => {
                // Another process may be creating it right now (this one serialises its own):
                // never send a second create while the first can still be answered.
                let in_flight = chrono::Duration::from_std(ctx.client.timeout() * 2)
                    .unwrap_or(chrono::Duration::MAX)
                    + chrono::Duration::seconds(5);
                if ctx.clock.now() - since < in_flight {
                    return Err(ManageError::InProgress);
                }
                // An earlier create's answer was lost: SingaPay may have the link.
                if let Some(found) = self.resolve_lost(account, &req.reff_no).await? {
                    return Err(ManageError::Duplicate(Box::new(found)));
                }
            }
            Intent::New => {}
        }
        let created = client.create_link(account, &req.body).await;
        let id = match created {
            Ok((link, _)) => link.id,
            Err(e) if e.is_retryable() => {
                warn!(account_id = %account, reff_no = %req.reff_no, error = %e,
                      "manage.create_unanswered: looking for the reff_no before anything else");
                match self.resolve_lost(account, &req.reff_no).await? {
                    Some(found) => {
                        info!(reff_no = %req.reff_no, "manage.create_found: SingaPay had made it");
                        return Ok((201, json!({ "link": found })));
                    }
                    None => {
                        ledger.drop_intent(account, &req.reff_no).await?;
                        return Err(ManageError::Upstream(e.to_string()));
                    }
                }
            }
            Err(e) => {
                ledger.drop_intent(account, &req.reff_no).await?;
                return Err(upstream(e));
            }
        };
        ledger
            .intent_created(account, &req.reff_no, id, ctx.clock.now())
            .await?;
        self.mirror(account, id, false).await?;
        info!(account_id = %account, link_id = %id, reff_no = %req.reff_no, "manage.created");
        Ok((201, json!({ "link": self.mirrored(account, id).await? })))
    }

    /// After a lost answer: the link with `reff_no` if SingaPay has it (then mirrored and the
    /// intent marked created), else `None` (the intent stays for the caller to drop).
    async fn resolve_lost(
        &self,
        account: &AccountId,
        reff_no: &str,
    ) -> Result<Option<Value>, ManageError> {
        let ctx = self.syncer.context();
        let found = ctx
            .client
            .find_by_reff(account, reff_no, ctx.per_page)
            .await
            .map_err(|e| ManageError::Upstream(e.to_string()))?;
        let Some((link, _)) = found else {
            return Ok(None);
        };
        ctx.ledger
            .intent_created(account, reff_no, link.id, ctx.clock.now())
            .await?;
        self.mirror(account, link.id, false).await?;
        Ok(Some(self.mirrored(account, link.id).await?))
    }

    /// Updates link `id` (only the fields given; the current ones are sent for SingaPay's
    /// required fields): `{"link": …}` as mirrored after it.
    ///
    /// Errors: [`ManageError`].
    pub async fn update(
        &self,
        account: &AccountId,
        id: LinkId,
        body: &Value,
    ) -> Result<Value, ManageError> {
        let ctx = self.syncer.context();
        let current = match ctx.ledger.get_link(account, id).await? {
            Some(l) if l.deleted_at.is_none() => serde_json::to_value(&l.link)
                .map_err(|e| ManageError::Ledger(LedgerError::Corrupt(e.to_string())))?,
            _ => return Err(ManageError::NotFound),
        };
        let known = if body.get("whitelisted_payment_method").is_some() {
            self.known_codes(account).await
        } else {
            None
        };
        let send = validate::update(body, &current, known.as_deref(), ctx.clock.now())
            .map_err(ManageError::Invalid)?;
        ctx.client
            .update_link(account, id, &send)
            .await
            .map_err(upstream)?;
        self.mirror(account, id, false).await?;
        Ok(json!({ "link": self.mirrored(account, id).await? }))
    }

    /// Deletes link `id`: `{"link": …}` as it was, now marked deleted.
    ///
    /// Errors: [`ManageError::HasPayments`] (from the mirror, before any upstream call, or
    /// SingaPay's 403), [`ManageError::NotFound`], others.
    pub async fn delete(&self, account: &AccountId, id: LinkId) -> Result<Value, ManageError> {
        let ctx = self.syncer.context();
        match ctx.ledger.get_link(account, id).await? {
            Some(l) if l.deleted_at.is_none() => {}
            _ => return Err(ManageError::NotFound),
        }
        if ctx.ledger.link_has_payments(account, id).await? {
            return Err(ManageError::HasPayments);
        }
        match ctx.client.delete_link(account, id).await {
            Ok(()) => {}
            Err(SingapayError::Fatal { status: 403, .. }) => return Err(ManageError::HasPayments),
            Err(e) => return Err(upstream(e)),
        }
        self.mirror(account, id, true).await?;
        Ok(json!({ "link": self.mirrored(account, id).await?, "deleted": true }))
    }
}

//! The token-protected routes: resync, sync runs, mirrored links, the pull feed, deliveries and
//! subscribers.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, ApiError, ApiPath, ApiQuery};
use crate::ledger::{DeliveryFilter, EventFilter};
use crate::sync::{PassOptions, SyncError};
use crate::time::rfc3339_utc;
use crate::types::{AccountId, Channel, DeliveryState, EventType, LinkId, Trigger};

/// `POST /resync?account_id=&confirm_deletions=`.
#[derive(Debug, Deserialize)]
pub(super) struct ResyncQuery {
    account_id: Option<String>,
    #[serde(default)]
    confirm_deletions: bool,
    /// Read the whole Payment Link History (DESIGN §13).
    #[serde(default)]
    full: bool,
}

/// `GET /links?account_id=&limit=&offset=`.
#[derive(Debug, Deserialize)]
pub(super) struct LinksQuery {
    account_id: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// `GET /events?after=&limit=&type=&account_id=`.
#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    after: Option<String>,
    limit: Option<i64>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    account_id: Option<String>,
}

/// `GET /deliveries?state=&subscriber=&channel=&limit=`.
#[derive(Debug, Deserialize)]
pub(super) struct DeliveriesQuery {
    state: Option<String>,
    subscriber: Option<String>,
    channel: Option<Channel>,
    limit: Option<i64>,
}

impl AdminState {
    /// A configured account from `?account_id=`: 400 `bad_account_id` if it is not a ULID, 404
    /// `unknown_account` if it is not configured.
    pub(super) fn account(&self, given: Option<&str>) -> Result<Option<AccountId>, ApiError> {
        let Some(a) = given else {
            return Ok(None);
        };
        let id = AccountId::parse(a).map_err(|e| ApiError::bad_request("bad_account_id", e))?;
        if !self.accounts.iter().any(|c| c.id == id) {
            return Err(ApiError::not_found(
                "unknown_account",
                format!("account {id} is not configured"),
            ));
        }
        Ok(Some(id))
    }
}

/// A bounded integer parameter (`default` when absent): 400 `bad_parameter` outside `0..=max`.
fn bounded(name: &str, v: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match v.unwrap_or(default) {
        n if (0..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            "bad_parameter",
            format!("{name} must be an integer from 0 to {max}"),
        )),
    }
}

pub(super) async fn resync(
    State(st): State<AdminState>,
    ApiQuery(q): ApiQuery<ResyncQuery>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let only = st.account(q.account_id.as_deref())?;
    if q.confirm_deletions && only.is_none() {
        return Err(ApiError::bad_request(
            "bad_parameter",
            "confirm_deletions needs the account_id whose deletions were looked at",
        ));
    }
    let opts = PassOptions {
        confirm_deletions: q.confirm_deletions,
        full_history: q.full,
    };
    let mut runs = Vec::new();
    for a in st
        .accounts
        .iter()
        .filter(|a| only.as_ref().is_none_or(|o| *o == a.id))
    {
        let t = match st.syncer.trigger(&a.id, Trigger::Manual, opts).await {
            Ok(t) => t,
            Err(SyncError::Busy(run)) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "pass_running",
                    format!(
                        "a pass of this account is running (run {run}); ask again after it ends"
                    ),
                ));
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(account_id = %a.id, run_id = t.run_id, confirm_deletions = q.confirm_deletions, "http.resync");
        runs.push(
            json!({"account_id": a.id.as_str(), "run_id": t.run_id, "coalesced": t.coalesced}),
        );
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"runs": runs}))))
}

pub(super) async fn sync_run(
    State(st): State<AdminState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<crate::ledger::SyncRunRow>, ApiError> {
    st.ledger
        .get_run(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("not_found", format!("no sync run {id}")))
}

pub(super) async fn links(
    State(st): State<AdminState>,
    ApiQuery(q): ApiQuery<LinksQuery>,
) -> Result<Json<Value>, ApiError> {
    let account = match st.account(q.account_id.as_deref())? {
        Some(a) => a,
        None => match st.accounts.as_slice() {
            [only] => only.id.clone(),
            _ => {
                return Err(ApiError::bad_request(
                    "missing_account_id",
                    "account_id is required",
                ));
            }
        },
    };
    let limit = bounded("limit", q.limit, 100, 1000)?;
    let offset = bounded("offset", q.offset, 0, i64::MAX)?;
    let (rows, total) = st.ledger.list_links(&account, limit, offset).await?;
    Ok(Json(json!({
        "account_id": account.as_str(),
        "total": total,
        "links": rows.iter().map(|r| json!({
            "link": r.link, "sequence": r.sequence,
            "deleted_at": r.deleted_at.map(rfc3339_utc),
        })).collect::<Vec<_>>(),
    })))
}

pub(super) async fn link(
    State(st): State<AdminState>,
    ApiPath((account, id)): ApiPath<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let account =
        AccountId::parse(&account).map_err(|e| ApiError::bad_request("bad_account_id", e))?;
    let stored = st
        .ledger
        .get_link(&account, LinkId(id))
        .await?
        .ok_or_else(|| {
            ApiError::not_found("not_found", format!("no link {id} in account {account}"))
        })?;
    let f = EventFilter {
        account_id: Some(account),
        link_id: Some(LinkId(id)),
        limit: 10_000,
        ..Default::default()
    };
    let events = st.ledger.events(&f).await?.unwrap_or_default();
    Ok(Json(json!({
        "link": stored.link,
        "sequence": stored.sequence,
        "deleted_at": stored.deleted_at.map(rfc3339_utc),
        "events": events.into_iter().map(|e| e.event).collect::<Vec<_>>(),
    })))
}

pub(super) async fn events(
    State(st): State<AdminState>,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let account_id = st.account(q.account_id.as_deref())?;
    let limit = bounded("limit", q.limit, 100, 1000)?;
    let event_type = q
        .event_type
        .as_deref()
        .map(str::parse::<EventType>)
        .transpose()
        .map_err(|e| ApiError::bad_request("bad_type", e))?;
    let f = EventFilter {
        after: q.after,
        event_type,
        account_id,
        limit,
        ..Default::default()
    };
    // Never hand out an event that an OS crash could still roll back.
    st.ledger.make_durable().await?;
    let rows = st.ledger.events(&f).await?.ok_or_else(|| {
        ApiError::not_found("unknown_cursor", "no event with the id given in `after`")
    })?;
    let next = rows
        .last()
        .map(|r| r.event.id.0.clone())
        .or_else(|| f.after.clone());
    Ok(Json(json!({
        "events": rows.into_iter().map(|r| r.event).collect::<Vec<_>>(),
        "next_after": next,
    })))
}

pub(super) async fn deliveries(
    State(st): State<AdminState>,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = q
        .state
        .as_deref()
        .map(str::parse::<DeliveryState>)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "bad_state",
                "state must be pending, delivered, dead or disabled",
            )
        })?;
    let f = DeliveryFilter {
        state,
        subscriber: q.subscriber,
        channel: q.channel,
        limit: bounded("limit", q.limit, 100, 1000)?,
    };
    let rows = st.ledger.list_deliveries(&f).await?;
    Ok(Json(json!({"deliveries": rows})))
}

/// `GET /inbound?state=&limit=&before=`.
#[derive(Debug, Deserialize)]
pub(super) struct InboundQuery {
    state: Option<String>,
    limit: Option<i64>,
    before: Option<i64>,
}

/// `GET /inbound`: SingaPay's webhooks as stored (DESIGN §14), newest first, without bodies.
pub(super) async fn inbound(
    State(st): State<AdminState>,
    ApiQuery(q): ApiQuery<InboundQuery>,
) -> Result<Json<Value>, ApiError> {
    let state = q
        .state
        .as_deref()
        .map(str::parse::<crate::ledger::InboundState>)
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "bad_state",
                "state must be pending, processed, ignored or failed",
            )
        })?;
    let limit = bounded("limit", q.limit, 100, 1000)?;
    let rows = st.ledger.list_notifications(state, q.before, limit).await?;
    Ok(Json(json!({"notifications": rows})))
}

pub(super) async fn retry_delivery(
    State(st): State<AdminState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !st.ledger.retry_delivery(id, st.clock.now()).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_retryable",
            format!("delivery {id} does not exist or is not dead or disabled"),
        ));
    }
    st.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "state": DeliveryState::Pending})),
    ))
}

pub(super) async fn enable_subscriber(
    State(st): State<AdminState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let n = st.ledger.enable_subscriber(&name, st.clock.now()).await?;
    st.wake.notify_one();
    Ok(Json(json!({"subscriber": name, "requeued": n})))
}

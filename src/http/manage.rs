//! Link management routes (DESIGN §15): `POST /links/{account_id}`, `PUT` and `DELETE
//! /links/{account_id}/{id}`, `GET /payment-methods`. Bodies use the seeds' field names.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::{AdminState, ApiError, ApiPath, ApiQuery};
use crate::types::{AccountId, LinkId};

fn json_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("bad_json", format!("the body is not JSON: {e}")))
}

impl AdminState {
    /// A configured account from the path: 404 `unknown_account` otherwise.
    fn path_account(&self, account: &str) -> Result<AccountId, ApiError> {
        self.account(Some(account))?
            .ok_or_else(|| ApiError::not_found("unknown_account", "no such account"))
    }
}

/// `POST /links/{account_id}` (`Idempotency-Key` optional): 201 `{"link": …}`.
pub(super) async fn create(
    State(st): State<AdminState>,
    ApiPath(account): ApiPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let account = st.path_account(&account)?;
    let body = json_body(&body)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= 255);
    let (status, v) = st.manager.create(&account, &body, key).await?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
    Ok((status, Json(v)))
}

/// `PUT /links/{account_id}/{id}`: `{"link": …}` after the update.
pub(super) async fn update(
    State(st): State<AdminState>,
    ApiPath((account, id)): ApiPath<(String, i64)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let account = st.path_account(&account)?;
    let body = json_body(&body)?;
    Ok(Json(st.manager.update(&account, LinkId(id), &body).await?))
}

/// `DELETE /links/{account_id}/{id}`: `{"link": …, "deleted": true}`.
pub(super) async fn delete(
    State(st): State<AdminState>,
    ApiPath((account, id)): ApiPath<(String, i64)>,
) -> Result<Json<Value>, ApiError> {
    let account = st.path_account(&account)?;
    Ok(Json(st.manager.delete(&account, LinkId(id)).await?))
}

/// `GET /payment-methods[?account_id=]`: `{"payment_methods": [{code, name, group, desc}]}`,
/// those of the account's credential (without `account_id`: the first configured account's, as
/// the CLI's `payment-methods` without `--account`).
pub(super) async fn payment_methods(
    State(st): State<AdminState>,
    ApiQuery(q): ApiQuery<MethodsQuery>,
) -> Result<Json<Value>, ApiError> {
    let account = match st.account(q.account_id.as_deref())? {
        Some(a) => Some(a),
        None => st.accounts.first().map(|a| a.id.clone()),
    };
    let m = st.manager.payment_methods(account.as_ref()).await?;
    Ok(Json(json!({ "payment_methods": m })))
}

/// `GET /payment-methods` parameters.
#[derive(serde::Deserialize)]
pub(super) struct MethodsQuery {
    account_id: Option<String>,
}

//! `GET /payments?account_id=&from=&to=&status=`: the accounting export over HTTP (DESIGN §13):
//! JSON `{"payments":[…]}`, or CSV with `Accept: text/csv` (the same bytes as `singapay-sync
//! export payments`). Streamed from the ledger row by row; a ledger failure midway ends the body
//! early (the client sees a truncated answer, the log says why).

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{AdminState, ApiError, ApiQuery};
use crate::export::{Encoder, Format, filter};

/// The query of `GET /payments`.
#[derive(Debug, Deserialize)]
pub(super) struct PaymentsQuery {
    account_id: Option<String>,
    /// First Jakarta day, `YYYY-MM-DD`.
    from: Option<String>,
    /// Last Jakarta day, included.
    to: Option<String>,
    status: Option<String>,
}

/// Whether the client asked for CSV (`Accept: text/csv`).
fn wants_csv(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/csv"))
}

pub(super) async fn payments(
    State(st): State<AdminState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<PaymentsQuery>,
) -> Result<Response, ApiError> {
    let account = st.account(q.account_id.as_deref())?;
    let f = filter(
        account.as_ref().map(|a| a.as_str()),
        q.from.as_deref(),
        q.to.as_deref(),
        q.status.as_deref(),
    )
    .map_err(|problems| ApiError::bad_request("bad_parameter", problems.join("; ")))?;
    let csv = wants_csv(&headers);
    let mut enc = Encoder::new(if csv {
        Format::Csv
    } else {
        Format::JsonDocument
    });
    let head = enc
        .head()
        .map_err(|e| ApiError::bad_request("bad_parameter", e))?;
    let rows = st.ledger.export_payments(f);
    let state = (Some(head), rows, enc, false);
    let body = futures_util::stream::unfold(state, |(head, mut rows, mut enc, done)| async move {
        if let Some(h) = head {
            return Some((Ok(Bytes::from(h)), (None, rows, enc, done)));
        }
        if done {
            return None;
        }
        match rows.recv().await {
            Some(Ok(r)) => match enc.row(&r) {
                Ok(b) => Some((Ok(Bytes::from(b)), (None, rows, enc, false))),
                Err(e) => Some((Err(std::io::Error::other(e)), (None, rows, enc, true))),
            },
            Some(Err(e)) => {
                tracing::error!(error = %e, "http.payments_export_failed");
                Some((Err(std::io::Error::other(e)), (None, rows, enc, true)))
            }
            None => {
                let tail = enc.tail();
                Some((Ok(Bytes::from(tail)), (None, rows, enc, true)))
            }
        }
    });
    let content_type = if csv {
        "text/csv; charset=utf-8"
    } else {
        "application/json"
    };
    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if csv {
        resp.headers_mut().insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"payments.csv\""),
        );
    }
    Ok(resp)
}

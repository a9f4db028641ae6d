//! Fault injection and the request log: a middleware in front of SingaPay's routes that logs each
//! request on arrival and, when a fault posted to `/_sandbox/faults` matches, delays, answers an
//! error or a raw body, cuts the answer in half, expires the tokens or mutates the links first.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;

use super::state::{Fault, LoggedRequest, SandboxLink, v1_error};
use super::{SEED_ACCOUNT, Sandbox};

fn route_kind(method: &str, path: &str) -> &'static str {
    let manage =
        path.starts_with("/api/v1.0/payment-link-manage/") && !path.ends_with("/payment-methods");
    match method {
        "POST" if manage => return "create",
        "PUT" if manage => return "update",
        "DELETE" if manage => return "delete",
        _ => {}
    }
    if path.starts_with("/api/v1.1/access-token") {
        "token"
    } else if path.ends_with("/payment-methods") {
        "methods"
    } else if path.starts_with("/api/v1.0/payment-link-histories/") {
        if path.trim_end_matches('/').matches('/').count() >= 5 {
            "history_show"
        } else {
            "history"
        }
    } else if path.starts_with("/api/v1.0/payment-link-manage/") {
        if path.trim_end_matches('/').matches('/').count() >= 5 {
            "show"
        } else {
            "list"
        }
    } else {
        "other"
    }
}

fn query_page(q: Option<&str>) -> Option<u64> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix("page="))
        .and_then(|v| v.parse().ok())
}

/// The middleware: logs the request, then applies the first matching fault, if any.
pub(super) async fn faults_and_log(
    State(sb): State<Sandbox>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let matched_path = path.clone();
    let for_account = |f: &Fault| {
        f.account
            .as_ref()
            .is_none_or(|a| matched_path.contains(a.as_str()))
    };
    let query = req.uri().query().map(str::to_owned);
    let kind = route_kind(&method, &path);
    let page = query_page(query.as_deref());
    // Logged on arrival (status 0 until answered: a request whose client gave up stays 0).
    let slot = {
        let mut st = sb.lock();
        st.log.push(LoggedRequest {
            method,
            path,
            query,
            status: 0,
            partner_id: req
                .headers()
                .get("x-partner-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
        st.log.len() - 1
    };
    let fault = {
        let mut st = sb.lock();
        let pos = st.faults.iter().position(|f| {
            (f.route == "any" || f.route == kind)
                && for_account(f)
                && (f.page.is_none()
                    || (matches!(kind, "list" | "history") && f.page == Some(page.unwrap_or(1))))
        });
        pos.map(|i| {
            let f = st.faults[i].clone();
            if st.faults[i].count <= 1 {
                st.faults.remove(i);
            } else {
                st.faults[i].count -= 1;
            }
            f
        })
    };
    let resp = match fault {
        Some(f) => {
            if f.expire_tokens || f.add_links > 0 || !f.delete_links.is_empty() {
                let mut st = sb.lock();
                if f.expire_tokens {
                    st.tokens.clear();
                }
                let now = st.now();
                for _ in 0..f.add_links {
                    let id = st.next_link_id;
                    st.next_link_id += 1;
                    let link = SandboxLink::new_open(
                        id,
                        format!("PLMIDPASS{id:08}"),
                        format!("Created mid-pass #{id}"),
                        Decimal::from(25_000),
                        1,
                        now,
                    );
                    st.accounts
                        .entry(SEED_ACCOUNT.to_string())
                        .or_default()
                        .insert(id, link);
                }
                if let Some(a) = st.accounts.get_mut(SEED_ACCOUNT) {
                    for id in &f.delete_links {
                        a.remove(id);
                    }
                }
            }
            if f.after {
                // The request takes effect; then the answer is late, or replaced.
                let done = next.run(req).await;
                if let Some(ms) = f.delay_ms {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                let resp = match f.status {
                    None => done,
                    Some(status) => {
                        let code = StatusCode::from_u16(status)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                        v1_error(code, code.canonical_reason().unwrap_or("error"), None)
                    }
                };
                if let Some(entry) = sb.lock().log.get_mut(slot) {
                    entry.status = resp.status().as_u16();
                }
                return resp;
            }
            if let Some(ms) = f.delay_ms {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            match (f.status, f.body) {
                (None, None) if f.reset => cut_in_half(next.run(req).await).await,
                (None, None) => next.run(req).await,
                (status, Some(body)) => {
                    let code =
                        StatusCode::from_u16(status.unwrap_or(200)).unwrap_or(StatusCode::OK);
                    let mut r = (code, body).into_response();
                    if let Some(ra) = f.retry_after.and_then(|v| v.parse().ok()) {
                        r.headers_mut().insert("retry-after", ra);
                    }
                    r
                }
                (Some(status), None) => {
                    let code =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    let msg = if status == 403 {
                        "Your IP address (127.0.0.1) is not registered".to_string()
                    } else {
                        code.canonical_reason().unwrap_or("error").to_string()
                    };
                    let mut r = v1_error(code, &msg, None);
                    if let Some(ra) = f.retry_after.and_then(|v| v.parse().ok()) {
                        r.headers_mut().insert("retry-after", ra);
                    }
                    r
                }
            }
        }
        None => next.run(req).await,
    };
    if let Some(entry) = sb.lock().log.get_mut(slot) {
        entry.status = resp.status().as_u16();
    }
    resp
}

/// The `reset` fault: `resp` with its body cut after half of it by an I/O error (hyper then
/// aborts the connection; the client sees an incomplete body).
async fn cut_in_half(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let full = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    parts
        .headers
        .insert(axum::http::header::CONTENT_LENGTH, full.len().into());
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
        Ok(full.slice(..full.len() / 2)),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection reset",
        )),
    ];
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

//! The write side of Payment Link management (seeds 000, 001, 003; SingaPay docs "Payment Link ·
//! Create / Update / Delete / Get available payment method"): create, update and delete a link,
//! the merchant's payment methods, and finding a link by its `reff_no` (SingaPay has no
//! idempotency: after a create whose answer was lost, the list is the only way to know).
//!
//! Writes are sent once, never retried here: a create that timed out may have created the link,
//! so the caller decides (`manage` looks for the `reff_no` before any re-send).

use serde::Serialize;
use serde_json::Value;

use super::SingapayClient;
use super::envelope::Envelope;
use super::error::SingapayError;
use super::link::{PaymentLink, decode_show};
use crate::types::{AccountId, LinkId};

/// One payment method (`data.payment_methods[]`: `{code, name, group, desc}`, SP-METHODS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PaymentMethod {
    /// The code to whitelist, e.g. `VA_BRI`.
    pub code: String,
    /// Its label, e.g. `VA BRI`.
    pub name: String,
    /// `va`, `qris`, `ewallet`, `offline_store`, `card`…
    pub group: Option<String>,
    /// Description, often null.
    pub desc: Option<String>,
}

impl SingapayClient {
    /// Creates a link (`POST /api/v1.0/payment-link-manage/{account_id}`, seeds 000/001) with
    /// `body` as SingaPay takes it (v1: `expired_at` in 13-digit milliseconds). Sent once.
    ///
    /// Errors: [`SingapayError::Invalid`] (422 with SingaPay's field errors), a transport error or
    /// 5xx ([`SingapayError::Retryable`]: the link may or may not exist now), others classified.
    pub async fn create_link(
        &self,
        account: &AccountId,
        body: &Value,
    ) -> Result<(PaymentLink, String), SingapayError> {
        let path = format!("/api/v1.0/payment-link-manage/{}", account.as_str());
        let (status, text) = self
            .request_once(account, reqwest::Method::POST, "create", &path, Some(body))
            .await?;
        decode_show(status, &text)
    }

    /// Updates link `id` (`PUT …/{account_id}/{id}`, seed 003: `status` is required). Sent once.
    ///
    /// Errors: as [`Self::create_link`]; [`SingapayError::NotFound`] for an unknown link.
    pub async fn update_link(
        &self,
        account: &AccountId,
        id: LinkId,
        body: &Value,
    ) -> Result<(PaymentLink, String), SingapayError> {
        let path = format!(
            "/api/v1.0/payment-link-manage/{}/{}",
            account.as_str(),
            id.0
        );
        let (status, text) = self
            .request_once(account, reqwest::Method::PUT, "update", &path, Some(body))
            .await?;
        decode_show(status, &text)
    }

    /// Deletes link `id` (`DELETE …/{account_id}/{id}`). Sent once.
    ///
    /// Errors: a 403 ([`SingapayError::Fatal`] with status 403) when the link has payment
    /// history (SingaPay refuses those deletes); [`SingapayError::NotFound`]; others classified.
    pub async fn delete_link(&self, account: &AccountId, id: LinkId) -> Result<(), SingapayError> {
        let path = format!(
            "/api/v1.0/payment-link-manage/{}/{}",
            account.as_str(),
            id.0
        );
        self.request_once(account, reqwest::Method::DELETE, "delete", &path, None)
            .await
            .map(|_| ())
    }

    /// The merchant's payment methods (`GET /api/v1.0/payment-link-manage/payment-methods`,
    /// SP-METHODS), with retries: those of `account`'s credential (a merchant's methods are per
    /// credential, not per account), the default credential's for `None`.
    ///
    /// Errors: classified [`SingapayError`]; [`SingapayError::Malformed`].
    pub async fn payment_methods(
        &self,
        account: Option<&AccountId>,
    ) -> Result<Vec<PaymentMethod>, SingapayError> {
        let (_, text) = self
            .get(
                account,
                "methods",
                "/api/v1.0/payment-link-manage/payment-methods",
                &[],
            )
            .await?;
        let env = Envelope::parse(&text).map_err(SingapayError::Malformed)?;
        let data: Value = env
            .data
            .and_then(|d| serde_json::from_str(d.get()).ok())
            .ok_or_else(|| SingapayError::Malformed("payment methods without `data`".into()))?;
        let list = data
            .get("payment_methods")
            .and_then(Value::as_array)
            .ok_or_else(|| SingapayError::Malformed("no `data.payment_methods`".into()))?;
        let text_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Ok(list
            .iter()
            .filter_map(|m| {
                Some(PaymentMethod {
                    code: text_of(m, "code")?,
                    name: text_of(m, "name").unwrap_or_default(),
                    group: text_of(m, "group"),
                    desc: text_of(m, "desc"),
                })
            })
            .collect())
    }

    /// The account's link with merchant reference `reff_no`, looked for page by page in the list
    /// (no `reff_no` filter exists on it: reference of SingaPay's list, seed 004), newest first.
    ///
    /// Errors: as [`Self::list_page`].
    pub async fn find_by_reff(
        &self,
        account: &AccountId,
        reff_no: &str,
        per_page: u64,
    ) -> Result<Option<(PaymentLink, String)>, SingapayError> {
        let mut page = 1;
        loop {
            let p = self.list_page(account, page, per_page).await?;
            if p.links.is_empty() {
                return Ok(None);
            }
            if let Some(found) = p.links.into_iter().find(|(l, _)| l.reff_no == reff_no) {
                return Ok(Some(found));
            }
            if p.pagination.total_pages.is_some_and(|tp| page >= tp) || page >= 100_000 {
                return Ok(None);
            }
            page += 1;
        }
    }
}

//! The read endpoints: list pages of links (decoded, or split for a sweep), one link, pages of
//! Payment Link History and one history row, each through [`SingapayClient::get`] (token,
//! retries, classification).

use super::SingapayClient;
use super::error::SingapayError;
use super::history::{HistoryPage, PaymentRecord, decode_history_list, decode_history_show};
use super::link::{PaymentLink, decode_show};
use super::list::{ListPage, RawListPage, decode_list, split_list};
use crate::types::{AccountId, LinkId, PaymentId};

impl SingapayClient {
    /// One page of an account's links (`GET /api/v1.0/payment-link-manage/{account_id}`, newest id
    /// first; seed 004), every link decoded. `page` is 1-based.
    ///
    /// Errors: classified [`SingapayError`]; [`SingapayError::Malformed`] if any link on the page
    /// cannot be decoded (the page is all or nothing).
    pub async fn list_page(
        &self,
        account: &AccountId,
        page: u64,
        per_page: u64,
    ) -> Result<ListPage, SingapayError> {
        let (status, body) = self.list_body(account, page, per_page).await?;
        decode_list(status, &body)
    }

    /// One page of an account's links split into [`RawLink`](super::RawLink)s (id and verbatim
    /// JSON), none decoded: what a sweep reads, decoding only what changed.
    ///
    /// Errors: classified [`SingapayError`]; [`SingapayError::Malformed`] if the page is not a list
    /// answer or a link has no id.
    pub async fn list_page_raw(
        &self,
        account: &AccountId,
        page: u64,
        per_page: u64,
    ) -> Result<RawListPage, SingapayError> {
        let (status, body) = self.list_body(account, page, per_page).await?;
        split_list(status, &body)
    }

    async fn list_body(
        &self,
        account: &AccountId,
        page: u64,
        per_page: u64,
    ) -> Result<(u16, String), SingapayError> {
        let path = format!("/api/v1.0/payment-link-manage/{}", account.as_str());
        self.get(
            Some(account),
            "list",
            &path,
            &[
                ("page", page.to_string()),
                ("per_page", per_page.to_string()),
            ],
        )
        .await
    }

    /// One link (`GET /api/v1.0/payment-link-manage/{account_id}/{id}`, seed 000): `Ok(None)` when
    /// SingaPay answers 404 (the link is gone).
    pub(crate) async fn show(
        &self,
        account: &AccountId,
        id: LinkId,
    ) -> Result<Option<(PaymentLink, String)>, SingapayError> {
        let path = format!(
            "/api/v1.0/payment-link-manage/{}/{}",
            account.as_str(),
            id.0
        );
        match self.get(Some(account), "show", &path, &[]).await {
            Ok((status, body)) => decode_show(status, &body).map(Some),
            Err(SingapayError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of an account's Payment Link History (`GET /api/v1.0/payment-link-histories/
    /// {account_id}`, DOC2 payment-link-history), newest first (`sort_by=id&sort_order=desc` unless `filters`
    /// name another order); `page` is 1-based. `filters` are passed as sent (`status`,
    /// `created_at_from`, … in ISO 8601).
    ///
    /// Errors: classified [`SingapayError`]; [`SingapayError::Malformed`] if any row on the page
    /// cannot be decoded (the page is all or nothing).
    pub async fn history_page(
        &self,
        account: &AccountId,
        page: u64,
        per_page: u64,
        filters: &[(&str, String)],
    ) -> Result<HistoryPage, SingapayError> {
        let path = format!("/api/v1.0/payment-link-histories/{}", account.as_str());
        let mut query = vec![
            ("page", page.to_string()),
            ("per_page", per_page.to_string()),
        ];
        for (k, v) in [("sort_by", "id"), ("sort_order", "desc")] {
            if !filters.iter().any(|(f, _)| *f == k) {
                query.push((k, v.to_string()));
            }
        }
        query.extend(filters.iter().cloned());
        let (status, body) = self.get(Some(account), "history", &path, &query).await?;
        decode_history_list(status, &body)
    }

    /// One history row by its numeric id (`GET …/payment-link-histories/{account_id}/
    /// {history_id}`, DOC2 payment-link-history): `Ok(None)` on SingaPay's 404.
    ///
    /// Errors: classified [`SingapayError`]; [`SingapayError::Malformed`].
    pub async fn history_show(
        &self,
        account: &AccountId,
        id: PaymentId,
    ) -> Result<Option<(PaymentRecord, String)>, SingapayError> {
        let path = format!(
            "/api/v1.0/payment-link-histories/{}/{}",
            account.as_str(),
            id.0
        );
        match self.get(Some(account), "history_show", &path, &[]).await {
            Ok((status, body)) => decode_history_show(status, &body).map(Some),
            Err(SingapayError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

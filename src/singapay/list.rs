//! A list answer (`GET /api/v1.0/payment-link-manage/{account_id}`, seed 004): split into its
//! links, each with its id and verbatim JSON ([`RawLink`]), or decoded whole ([`ListPage`]).

use serde::Deserialize;
use serde_json::value::RawValue;

use super::SingapayError;
use super::envelope::{Envelope, envelope_error};
use super::fields::{bad, i64_of, is_null};
use super::link::PaymentLink;
use super::pagination::Pagination;
use crate::types::LinkId;

/// One decoded list page: the links in SingaPay's order (newest id first), each with its verbatim
/// JSON, and the pagination block.
#[derive(Debug, Clone)]
pub struct ListPage {
    /// `(link, verbatim JSON of that link)`.
    pub links: Vec<(PaymentLink, String)>,
    /// Pagination metadata (all `None` when absent).
    pub pagination: Pagination,
}

/// One link of a list page as SingaPay sent it: its id, read first, and its verbatim JSON,
/// decoded only when asked ([`RawLink::decode`]). A sweep decodes only the links whose bytes
/// differ from the stored read: an unchanged link was decoded when it was stored, and the same
/// bytes decode the same way.
#[derive(Debug, Clone)]
pub struct RawLink {
    /// `id` (read as [`PaymentLink::decode`] reads it: the last `id` key, any numeric encoding).
    pub id: LinkId,
    /// The link object's JSON text, verbatim.
    pub raw: String,
}

impl RawLink {
    /// Reads the id of one link object's JSON text, skipping every other field without
    /// building anything.
    ///
    /// Errors: the text is not a JSON object, or its `id` is missing or not a whole number.
    pub fn new(raw: &str) -> Result<Self, String> {
        struct IdOf<'a>(Option<&'a RawValue>);
        impl<'de: 'a, 'a> Deserialize<'de> for IdOf<'a> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> serde::de::Visitor<'de> for V {
                    type Value = IdOf<'de>;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("a link object")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<Self::Value, A::Error> {
                        let mut id = None;
                        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                            if key == "id" {
                                id = Some(map.next_value::<&'de RawValue>()?);
                            } else {
                                map.next_value::<serde::de::IgnoredAny>()?;
                            }
                        }
                        Ok(IdOf(id))
                    }
                }
                d.deserialize_map(V)
            }
        }
        let IdOf(id) = serde_json::from_str::<IdOf<'_>>(raw)
            .map_err(|e| format!("link is not a JSON object: {e}"))?;
        let id = i64_of("id", id)?.ok_or_else(|| bad("id", "missing"))?;
        Ok(Self {
            id: LinkId(id),
            raw: raw.to_string(),
        })
    }

    /// The link decoded.
    ///
    /// Errors: [`SingapayError::Malformed`] as [`PaymentLink::decode`] words it.
    pub fn decode(&self) -> Result<PaymentLink, SingapayError> {
        PaymentLink::decode(&self.raw).map_err(SingapayError::Malformed)
    }
}

/// One list page split into its links, each still its verbatim JSON ([`RawLink`]), and the
/// pagination block: what a sweep reads.
#[derive(Debug, Clone)]
pub struct RawListPage {
    /// The links in SingaPay's order (newest id first).
    pub links: Vec<RawLink>,
    /// Pagination metadata (all `None` when absent).
    pub pagination: Pagination,
}

/// Decodes a list answer (`GET /api/v1.0/payment-link-manage/{account_id}`, seed 004).
///
/// Errors: [`SingapayError::Malformed`] when the body or any link cannot be decoded (the whole
/// page fails; nothing is half-read), or the classified error of a non-success envelope.
pub(crate) fn decode_list(http_status: u16, body: &str) -> Result<ListPage, SingapayError> {
    let page = split_list(http_status, body)?;
    let mut links = Vec::with_capacity(page.links.len());
    for r in page.links {
        let link = r.decode()?;
        links.push((link, r.raw));
    }
    Ok(ListPage {
        links,
        pagination: page.pagination,
    })
}

/// Splits a list answer into its links (each with its id) without decoding them, and its
/// pagination.
///
/// Errors: [`SingapayError::Malformed`] when the body is not a list answer or a link is not an
/// object with an id (the whole page fails), or the classified error of a non-success envelope.
pub(crate) fn split_list(http_status: u16, body: &str) -> Result<RawListPage, SingapayError> {
    let env = Envelope::parse(body).map_err(SingapayError::Malformed)?;
    if !env.is_success() {
        return Err(envelope_error(http_status, &env));
    }
    let data = env
        .data
        .ok_or_else(|| SingapayError::Malformed("list answer has no `data`".into()))?;
    let raws: Vec<&RawValue> = if is_null(data) {
        Vec::new()
    } else {
        serde_json::from_str(data.get()).map_err(|e| {
            SingapayError::Malformed(format!("list `data` is not an array of links: {e}"))
        })?
    };
    let mut links = Vec::with_capacity(raws.len());
    for r in raws {
        links.push(RawLink::new(r.get()).map_err(SingapayError::Malformed)?);
    }
    Ok(RawListPage {
        links,
        pagination: env
            .pagination
            .as_ref()
            .map(Pagination::from_value)
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::str::FromStr;

    use chrono::{DateTime, Utc};
    use rust_decimal::Decimal;

    const SEED_004: &str = include_str!("../../tests/fixtures/seed_004_list_page1.json");

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_split_page_reads_the_ids_decode_reads_and_keeps_each_link_verbatim() {
        let split = split_list(200, SEED_004).unwrap();
        let decoded = decode_list(200, SEED_004).unwrap();
        assert_eq!(split.links.len(), 25);
        for (r, (l, raw)) in split.links.iter().zip(&decoded.links) {
            assert_eq!(r.id, l.id);
            assert_eq!(&r.raw, raw);
            assert_eq!(&r.decode().unwrap(), l);
        }
        assert_eq!(split.pagination, decoded.pagination);
        // Any numeric encoding; the last `id` key wins, as in the full decode.
        for (raw, id) in [
            (r#"{"id":"103","x":{"id":1}}"#, 103),
            (r#"{"id":7.0}"#, 7),
            (r#"{"id":1,"title":"a","id":2}"#, 2),
        ] {
            assert_eq!(RawLink::new(raw).unwrap().id, LinkId(id), "{raw}");
        }
        assert_eq!(
            PaymentLink::decode(
                r#"{"id":1,"reff_no":"R","status":"open","current_usage":0,"id":2}"#
            )
            .unwrap()
            .id,
            LinkId(2)
        );
        for bad in [
            r#"{"title":"no id"}"#,
            r#"{"id":null}"#,
            r#"{"id":1.5}"#,
            "[1]",
            "7",
        ] {
            assert!(RawLink::new(bad).is_err(), "{bad}");
        }
        // A page whose link has no id fails whole, before anything is decoded.
        let no_id = r#"{"status":200,"success":true,"data":[{"id":1},{"title":"x"}]}"#;
        assert!(matches!(
            split_list(200, no_id),
            Err(SingapayError::Malformed(_))
        ));
    }

    #[test]
    fn seed_004_list_page_decodes_with_every_field() {
        let page = decode_list(200, SEED_004).unwrap();
        assert_eq!(page.links.len(), 25);
        assert_eq!(
            page.pagination,
            Pagination {
                total: Some(103),
                count: Some(25),
                per_page: Some(25),
                current_page: Some(1),
                total_pages: Some(5),
                next: Some("https://pg-b2b.singapay.test/api/v1.0/payment-link-manage/01K7P073Q8RE2A9PQT8Q7MXPN4?page=2".into()),
            }
        );
        let by_id = |id: i64| &page.links.iter().find(|(l, _)| l.id.0 == id).unwrap().0;

        let l103 = by_id(103);
        assert_eq!(l103.reff_no, "PL2025102113590968f72f3df34e5");
        assert_eq!(l103.total_amount, Some(d("20000.00")));
        assert_eq!(l103.total_amount.unwrap().to_string(), "20000.00");
        let items = l103.items.as_ref().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].quantity, d("1"));
        assert_eq!(items[0].unit_price, d("20000"));
        assert_eq!(items[0].subtotal, Some(d("20000")));
        assert_eq!(l103.max_usage, Some(1000));
        assert_eq!(l103.current_usage, 2);
        assert_eq!(l103.expired_at, None);
        assert_eq!(
            l103.whitelisted_payment_method.as_deref().unwrap(),
            ["QRIS", "VA_BRI", "VA_DANAMON", "VA_MAYBANK"]
        );
        assert_eq!(l103.payment_date, Some(utc("2025-10-21T06:59:40Z")));
        assert_eq!(l103.updated_at, Some(utc("2025-10-21T08:16:05Z")));
        assert_eq!(l103.redirect_url, None);
        assert_eq!(
            l103.account.as_ref().unwrap()["id"],
            "01K7P073Q8RE2A9PQT8Q7MXPN4"
        );

        let l100 = by_id(100);
        assert_eq!(l100.items, None);
        assert_eq!(l100.whitelisted_payment_method, None);
        assert_eq!(l100.expired_at, Some(utc("2025-10-17T07:54:40Z")));
        assert_eq!(l100.status, "open");
        assert_eq!(l100.status_computed, "expired");
        assert!(l100.is_expired);
        assert_eq!(l100.total_amount, Some(d("980000")));

        let l95 = by_id(95);
        assert_eq!(l95.status, "closed");
        assert_eq!(l95.status_computed, "closed");

        let l102 = by_id(102);
        assert!(l102.is_exhausted());
        assert!(!l103.is_exhausted());
        // Link 102 has no `redirect_url` key at all: absent and null decode alike.
        assert_eq!(l102.redirect_url, None);
        // The verbatim JSON is kept.
        let raw103 = &page.links[0].1;
        assert!(raw103.contains("\"total_amount\": \"20000.00\""));
    }

    #[test]
    fn error_envelopes_v1_and_v2_are_classified_with_singapay_words() {
        let v1 = r#"{"status":403,"success":false,"error":{"code":403,"message":"Your IP address (1.2.3.4) is not registered"}}"#;
        match decode_list(403, v1).unwrap_err() {
            SingapayError::Fatal {
                status, message, ..
            } => {
                assert_eq!(status, 403);
                assert!(message.contains("not registered"));
            }
            e => panic!("{e:?}"),
        }
        let v2 = r#"{"response_code":"SP013","response_message":"Unauthorized"}"#;
        assert!(decode_list(200, v2).unwrap_err().is_auth());
        assert!(matches!(
            decode_list(200, "<html>").unwrap_err(),
            SingapayError::Malformed(_)
        ));
    }
}

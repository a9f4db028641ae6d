//! The sandbox's seeded data, modelled on SingaPay's list example
//! (`tests/fixtures/seed_004_list_page1.json`): account `01K7P073Q8RE2A9PQT8Q7MXPN4` with 103 links
//! whose newest 25 are that page verbatim (ids 103…79; seed 004 in docs/ARCHITECTURE.md).

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use super::state::{SandboxItem, SandboxLink, decimal_from_json};
use crate::time::parse_singapay_time;

/// The seeded account.
pub const SEED_ACCOUNT: &str = "01K7P073Q8RE2A9PQT8Q7MXPN4";

const SEED_004: &str = include_str!("../../tests/fixtures/seed_004_list_page1.json");

fn dec(v: &Value) -> Decimal {
    decimal_from_json(v).unwrap_or_default()
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(|s| parse_singapay_time(s).ok())
}

/// The 25 links of the list example (seed 004), as sandbox links.
fn seed_page() -> Vec<SandboxLink> {
    let v: Value = serde_json::from_str(SEED_004).unwrap_or(Value::Null);
    let Some(list) = v["data"].as_array() else {
        return Vec::new();
    };
    list.iter()
        .map(|l| SandboxLink {
            id: l["id"].as_i64().unwrap_or(0),
            reff_no: l["reff_no"].as_str().unwrap_or_default().to_string(),
            title: l["title"].as_str().unwrap_or_default().to_string(),
            status: l["status"].as_str().unwrap_or("open").to_string(),
            required_customer_detail: l["required_customer_detail"].as_bool().unwrap_or(false),
            max_usage: l["max_usage"].as_i64().unwrap_or(1),
            current_usage: l["current_usage"].as_i64().unwrap_or(0),
            expired_at: time(&l["expired_at"]),
            total_amount: dec(&l["total_amount"]),
            items: l["items"].as_array().map(|items| {
                items
                    .iter()
                    .map(|i| SandboxItem {
                        name: i["name"].as_str().unwrap_or_default().to_string(),
                        quantity: dec(&i["quantity"]),
                        unit_price: dec(&i["unit_price"]),
                    })
                    .collect()
            }),
            whitelisted_payment_method: l["whitelisted_payment_method"].as_array().map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            }),
            redirect_url: l["redirect_url"].as_str().map(str::to_owned),
            payment_date: time(&l["payment_date"]),
            created_at: time(&l["created_at"]).unwrap_or_default(),
            updated_at: time(&l["updated_at"]).unwrap_or_default(),
            optional_metadata: None,
            has_history: l["current_usage"].as_i64().unwrap_or(0) > 0,
        })
        .collect()
}

/// `n` links for the seeded account, ids `1..=n`, newest first in the API. The top 25 are seed
/// 004's page (renumbered if `n` ≠ 103). Older ones follow its "Payment for Order #N" pattern:
/// most expired on 2025-10-17 (some closed); every tenth has no expiry; every tenth + 5 expires
/// in 30 days; and the newest generated one (id `n - 25`) expires 24 hours after `start`, so
/// advancing the clock by a day expires exactly one open link.
pub fn seed_links(n: usize, start: DateTime<Utc>) -> Vec<SandboxLink> {
    let page = seed_page();
    let mut out = Vec::with_capacity(n);
    let top = page.len().min(n);
    let generated = n - top;
    for (k, mut l) in page.into_iter().take(top).enumerate() {
        let id = (n - k) as i64;
        if id != l.id {
            l.reff_no = format!("{}{:x}", &l.reff_no[..l.reff_no.len().min(20)], id);
        }
        l.id = id;
        out.push(l);
    }
    let created = parse_singapay_time("2025-10-16T14:54:40+07:00").unwrap_or(start);
    let old_expiry = parse_singapay_time("2025-10-17T14:54:40+07:00").unwrap_or(start);
    for id in (1..=generated as i64).rev() {
        let (expired_at, status, max_usage) = if id == generated as i64 {
            (Some(start + Duration::hours(24)), "open", 3)
        } else if id % 10 == 0 {
            (None, "open", 10)
        } else if id % 10 == 5 {
            (Some(start + Duration::days(30)), "open", 5)
        } else if id % 7 == 0 {
            (Some(old_expiry), "closed", 2)
        } else {
            (Some(old_expiry), "open", 1 + id % 5)
        };
        let amount = Decimal::from(10_000 * (1 + (id * 37) % 98));
        let mut link = SandboxLink::new_open(
            id,
            format!("PL2025101614544068f0a4c{id:06x}"),
            format!("Payment for Order #{id}"),
            amount,
            max_usage,
            created,
        );
        link.status = status.to_string();
        link.required_customer_detail = id % 3 == 0;
        link.expired_at = expired_at;
        out.push(link);
    }
    out
}

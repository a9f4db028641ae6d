//! Pagination metadata of a list page: `pagination` or `meta`, camelCase or snake_case, possibly
//! nested one level (`meta.pagination`) (LV observed both spellings; docs/ARCHITECTURE.md,
//! "Sources").

use serde::Serialize;
use serde_json::Value;

/// Pagination metadata of a list page, from `pagination` or `meta`, camelCase or snake_case
/// (seed 004 and LV). Every field is optional: SingaPay may send `meta: {}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pagination {
    /// Items across all pages.
    pub total: Option<u64>,
    /// Items on this page.
    pub count: Option<u64>,
    /// Page size the server used (it may cap what was asked).
    pub per_page: Option<u64>,
    /// This page's number, 1-based.
    pub current_page: Option<u64>,
    /// Number of pages.
    pub total_pages: Option<u64>,
    /// URL of the next page, `None` on the last one.
    pub next: Option<String>,
}

fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl Pagination {
    /// Reads a `pagination`/`meta` block in either spelling; also looks one level down
    /// (`meta.pagination`, as some Laravel "fractal" responses nest it).
    pub fn from_value(v: &Value) -> Pagination {
        let obj = match v {
            Value::Object(o) => o,
            _ => return Pagination::default(),
        };
        if let Some(inner @ Value::Object(_)) = obj.get("pagination") {
            return Pagination::from_value(inner);
        }
        let get = |a: &str, b: &str| num(obj.get(a).or_else(|| obj.get(b)));
        let next = obj
            .get("links")
            .and_then(|l| l.get("next"))
            .or_else(|| obj.get("next_page_url"))
            .and_then(|n| n.as_str().map(str::to_owned));
        Pagination {
            total: get("total", "total_count"),
            count: get("count", "count"),
            per_page: get("perPage", "per_page"),
            current_page: get("currentPage", "current_page"),
            total_pages: get("totalPages", "total_pages").or_else(|| get("lastPage", "last_page")),
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_reads_every_spelling() {
        let snake = serde_json::json!({"total":"47","count":25,"per_page":25,"current_page":1,"total_pages":2});
        let p = Pagination::from_value(&snake);
        assert_eq!(
            (p.total, p.total_pages, p.per_page),
            (Some(47), Some(2), Some(25))
        );
        let nested = serde_json::json!({"pagination":{"totalPages":3}});
        assert_eq!(Pagination::from_value(&nested).total_pages, Some(3));
        assert_eq!(
            Pagination::from_value(&serde_json::json!({})),
            Pagination::default()
        );
    }
}

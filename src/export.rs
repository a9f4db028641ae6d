//! The accounting export of payments (DESIGN §13): `singapay-sync export payments` and
//! `GET /payments` write the same bytes, CSV per RFC 4180 (the `csv` crate) or JSON.
//!
//! Columns, in order: `account_id, payment_id, attempt_reff_no, link_id, link_reff_no,
//! link_title, method, method_value, amount, currency, status, payment_date_wib,
//! payment_date_utc, settled, settle_at_wib, customer_name, customer_email`. Amounts are plain
//! decimals in Rupiah (`150000.00`), currency `IDR`; WIB times are RFC 3339 with `+07:00` (as
//! SingaPay writes them), UTC times with `Z`; `settled` is `true`/`false`; an unknown value is an
//! empty field (CSV) or `null` (JSON). Rows are encoded one by one as the ledger streams them.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use serde::Serialize;

use crate::ledger::{ExportRow, PaymentFilter};
use crate::time::{jakarta, rfc3339_utc};
use crate::types::AccountId;

/// The CSV header, in order.
pub const COLUMNS: [&str; 17] = [
    "account_id",
    "payment_id",
    "attempt_reff_no",
    "link_id",
    "link_reff_no",
    "link_title",
    "method",
    "method_value",
    "amount",
    "currency",
    "status",
    "payment_date_wib",
    "payment_date_utc",
    "settled",
    "settle_at_wib",
    "customer_name",
    "customer_email",
];

/// How the export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// CSV with a header line (RFC 4180, CRLF line ends).
    Csv,
    /// One JSON object per line (the CLI's `--format json`).
    JsonLines,
    /// `{"payments":[…]}` (the admin API's JSON).
    JsonDocument,
}

/// One row as the export writes it (the columns, in order).
#[derive(Debug, Serialize)]
struct Line<'a> {
    account_id: &'a str,
    payment_id: i64,
    attempt_reff_no: &'a str,
    link_id: Option<i64>,
    link_reff_no: &'a str,
    link_title: Option<&'a str>,
    method: Option<&'a str>,
    method_value: Option<&'a str>,
    amount: String,
    currency: &'static str,
    status: &'a str,
    payment_date_wib: Option<String>,
    payment_date_utc: Option<String>,
    settled: bool,
    settle_at_wib: Option<String>,
    customer_name: &'a str,
    customer_email: &'a str,
}

fn wib(t: DateTime<Utc>) -> String {
    t.with_timezone(&jakarta())
        .to_rfc3339_opts(SecondsFormat::AutoSi, false)
}

impl<'a> From<&'a ExportRow> for Line<'a> {
    fn from(r: &'a ExportRow) -> Self {
        Line {
            account_id: &r.account_id,
            payment_id: r.payment_id,
            attempt_reff_no: &r.attempt_reff_no,
            link_id: r.link_id,
            link_reff_no: &r.link_reff_no,
            link_title: r.link_title.as_deref(),
            method: r.method.as_deref(),
            method_value: r.method_value.as_deref(),
            amount: r.amount.to_string(),
            currency: "IDR",
            status: &r.status,
            payment_date_wib: r.payment_date.map(wib),
            payment_date_utc: r.payment_date.map(rfc3339_utc),
            settled: r.settled,
            settle_at_wib: r.settle_at.map(wib),
            customer_name: &r.customer_name,
            customer_email: &r.customer_email,
        }
    }
}

/// Writes export rows one at a time as bytes: the head, each row, then the tail.
pub struct Encoder {
    format: Format,
    rows: u64,
}

impl Encoder {
    /// An encoder for `format`.
    pub fn new(format: Format) -> Self {
        Self { format, rows: 0 }
    }

    /// The bytes before the first row (the CSV header, the JSON document's opening).
    ///
    /// Errors: only the CSV writer's own (an I/O error into memory cannot happen).
    pub fn head(&mut self) -> Result<Vec<u8>, String> {
        match self.format {
            Format::Csv => {
                let mut w = csv_writer();
                w.write_record(COLUMNS).map_err(|e| e.to_string())?;
                w.into_inner().map_err(|e| e.to_string())
            }
            Format::JsonLines => Ok(Vec::new()),
            Format::JsonDocument => Ok(br#"{"payments":["#.to_vec()),
        }
    }

    /// The bytes of one row.
    ///
    /// Errors: a value the CSV or JSON writer refuses (none is expected).
    pub fn row(&mut self, r: &ExportRow) -> Result<Vec<u8>, String> {
        let line = Line::from(r);
        self.rows += 1;
        match self.format {
            Format::Csv => {
                let mut w = csv_writer();
                w.serialize(&line).map_err(|e| e.to_string())?;
                w.into_inner().map_err(|e| e.to_string())
            }
            Format::JsonLines => {
                let mut out = serde_json::to_vec(&line).map_err(|e| e.to_string())?;
                out.push(b'\n');
                Ok(out)
            }
            Format::JsonDocument => {
                let mut out = if self.rows > 1 {
                    vec![b',']
                } else {
                    Vec::new()
                };
                serde_json::to_writer(&mut out, &line).map_err(|e| e.to_string())?;
                Ok(out)
            }
        }
    }

    /// The bytes after the last row.
    pub fn tail(&mut self) -> Vec<u8> {
        match self.format {
            Format::JsonDocument => b"]}\n".to_vec(),
            Format::Csv | Format::JsonLines => Vec::new(),
        }
    }
}

/// A CSV writer of one record into memory (RFC 4180: CRLF, quotes doubled).
fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new())
}

/// A Jakarta calendar day (`2026-11-21`) as the instant it starts, UTC.
///
/// Errors: a message naming `what` when the text is not a `YYYY-MM-DD` date.
pub fn jakarta_day_start(what: &str, day: &str) -> Result<DateTime<Utc>, String> {
    let d = NaiveDate::parse_from_str(day.trim(), "%Y-%m-%d")
        .map_err(|_| format!("{what} must be a date like 2026-11-21 (a Jakarta calendar day)"))?;
    d.and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(jakarta()).single())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| format!("{what} is out of range"))
}

/// The export filter from its textual form: `from` and `to` are Jakarta calendar days, both
/// included; `account` a ULID.
///
/// Errors: every problem, one message each.
pub fn filter(
    account: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    status: Option<&str>,
) -> Result<PaymentFilter, Vec<String>> {
    let mut problems = Vec::new();
    let account_id = match account.map(AccountId::parse) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            problems.push(e);
            None
        }
    };
    let mut day = |what: &str, v: Option<&str>, next: bool| match v.map(|d| {
        jakarta_day_start(what, d).and_then(|t| {
            if next {
                t.checked_add_signed(chrono::Duration::days(1))
                    .ok_or_else(|| format!("{what} is out of range"))
            } else {
                Ok(t)
            }
        })
    }) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            problems.push(e);
            None
        }
    };
    let from = day("from", from, false);
    let to = day("to", to, true);
    if let (Some(f), Some(t)) = (from, to)
        && f >= t
    {
        problems.push("from must not be after to".into());
    }
    let status = status
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if problems.is_empty() {
        Ok(PaymentFilter {
            account_id,
            from,
            to,
            status,
        })
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    fn row() -> ExportRow {
        ExportRow {
            account_id: "01K7P073Q8RE2A9PQT8Q7MXPN4".into(),
            payment_id: 129,
            attempt_reff_no: "12917720251024134439474".into(),
            link_id: Some(103),
            link_reff_no: "PL2025102113590968f72f3df34e5".into(),
            link_title: Some("Invoice, \"Toko\" Maju".into()),
            method: Some("VA BRI".into()),
            method_value: Some("827700000000129".into()),
            amount: "150000.00".parse::<Decimal>().unwrap(),
            status: "paid".into(),
            payment_date: Some("2026-11-21T03:00:00Z".parse().unwrap()),
            settled: true,
            settle_at: Some("2026-11-22T02:30:00Z".parse().unwrap()),
            customer_name: String::new(),
            customer_email: "budi@example.com".into(),
        }
    }

    #[test]
    fn csv_rows_quote_per_rfc_4180_and_json_has_the_same_fields() {
        let mut e = Encoder::new(Format::Csv);
        let mut out = e.head().unwrap();
        out.extend(e.row(&row()).unwrap());
        out.extend(e.tail());
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "account_id,payment_id,attempt_reff_no,link_id,link_reff_no,link_title,method,\
             method_value,amount,currency,status,payment_date_wib,payment_date_utc,settled,\
             settle_at_wib,customer_name,customer_email\r\n\
             01K7P073Q8RE2A9PQT8Q7MXPN4,129,12917720251024134439474,103,\
             PL2025102113590968f72f3df34e5,\"Invoice, \"\"Toko\"\" Maju\",VA BRI,827700000000129,\
             150000.00,IDR,paid,2026-11-21T10:00:00+07:00,2026-11-21T03:00:00Z,true,\
             2026-11-22T09:30:00+07:00,,budi@example.com\r\n"
        );
        let mut j = Encoder::new(Format::JsonDocument);
        let mut doc = j.head().unwrap();
        doc.extend(j.row(&row()).unwrap());
        doc.extend(j.row(&row()).unwrap());
        doc.extend(j.tail());
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        let first = v["payments"][0].as_object().unwrap();
        assert_eq!(first.keys().count(), COLUMNS.len());
        assert_eq!(first["amount"], "150000.00");
        assert_eq!(first["link_id"], 103);
        assert_eq!(first["customer_name"], "");
        assert_eq!(v["payments"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn filters_are_jakarta_days_and_every_problem_is_named() {
        let f = filter(None, Some("2026-11-21"), Some("2026-11-21"), Some("paid")).unwrap();
        assert_eq!(f.from.unwrap().to_rfc3339(), "2026-11-20T17:00:00+00:00");
        assert_eq!(f.to.unwrap().to_rfc3339(), "2026-11-21T17:00:00+00:00");
        assert_eq!(f.status.as_deref(), Some("paid"));
        let e = filter(Some("nope"), Some("21/11/2026"), Some("2026-11-20"), None).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[1].contains("from must be a date"), "{e:?}");
        let e = filter(None, Some("2026-11-22"), Some("2026-11-21"), None).unwrap_err();
        assert_eq!(e, ["from must not be after to"]);
    }
}

//! Time: UTC internally, Asia/Jakarta (WIB) at SingaPay's edge.
//!
//! WIB is UTC+7 with no daylight saving (Indonesia has kept UTC+7 for western Indonesia since
//! 1964), so a fixed offset is exact for every date SingaPay can send.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};

/// Asia/Jakarta, UTC+7 (WIB).
pub(crate) fn jakarta() -> FixedOffset {
    // 25,200 s is a constant well inside chrono's ±86,400 s range.
    FixedOffset::east_opt(7 * 3600).expect("UTC+7 is a valid offset")
}

/// Where "now" comes from. Production uses [`SystemClock`]; tests use [`ManualClock`], so that
/// retry schedules of hours run in milliseconds.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant, UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (tests: run a 27-hour retry schedule in milliseconds).
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock reading `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            now: std::sync::Mutex::new(at),
        }
    }

    /// Sets the time (never backwards: an earlier `at` is ignored).
    pub fn set(&self, at: DateTime<Utc>) {
        let mut n = self.now.lock().unwrap_or_else(|p| p.into_inner());
        if at > *n {
            *n = at;
        }
    }

    /// Moves the time forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut n = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *n += chrono::Duration::from_std(by).unwrap_or_else(|_| chrono::Duration::zero());
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The Asia/Jakarta calendar day of an instant as `YYYYMMDD`, as SingaPay's token signature wants
/// it (SP-TOKEN; LV saw a UTC date rejected between 00:00 and 07:00 WIB; docs/ARCHITECTURE.md,
/// "Sources").
pub(crate) fn jakarta_yyyymmdd(at: DateTime<Utc>) -> String {
    at.with_timezone(&jakarta()).format("%Y%m%d").to_string()
}

/// Formats an instant for the ledger: RFC 3339 UTC with exactly six fractional digits and `Z`, so
/// that stored times sort lexically (`2026-11-21T03:04:05.000000Z`).
pub(crate) fn ledger_ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Parses a ledger timestamp written by [`ledger_ts`] (or any RFC 3339 text).
pub(crate) fn parse_ledger_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// Formats an instant for the outside world (event envelopes, API answers): RFC 3339 UTC with `Z`,
/// fractional seconds only when present.
pub(crate) fn rfc3339_utc(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Formats an instant in WIB for people, e.g. `21 Nov 2026 10:04 WIB`.
pub(crate) fn format_wib(at: DateTime<Utc>) -> String {
    at.with_timezone(&jakarta())
        .format("%d %b %Y %H:%M WIB")
        .to_string()
}

/// A `Retry-After` value as a wait: delay-seconds or an HTTP date (RFC 9110 §10.2.3); a date in
/// the past is zero. `None` if it is neither.
pub(crate) fn parse_retry_after(v: &str) -> Option<std::time::Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(s));
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (at.with_timezone(&Utc) - Utc::now()).num_seconds().max(0);
    Some(std::time::Duration::from_secs(secs as u64))
}

/// Parses every timestamp form SingaPay sends (seeds 000, 001, 004 and LV's observations):
/// RFC 3339 with an offset (`2025-10-17T14:54:40+07:00`), `Z`, microseconds
/// (`2025-11-05T09:09:49.000000Z`); offset-less `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS`
/// (read as WIB); `d M Y H:i:s` text (`26 Dec 2025 13:35:45`, WIB); a bare date (WIB midnight); and
/// 13-digit Unix milliseconds or 10-digit seconds, as a number or a string.
pub(crate) fn parse_singapay_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let s = raw.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = s.parse().map_err(|e| format!("time {raw:?}: {e}"))?;
        let dt = if s.len() >= 13 {
            Utc.timestamp_millis_opt(n).single()
        } else {
            Utc.timestamp_opt(n, 0).single()
        };
        return dt.ok_or_else(|| format!("time {raw:?} is out of range"));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%d %b %Y %H:%M:%S",
        "%e %b %Y %H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return wib_to_utc(n, raw);
        }
    }
    if let Ok(d) = DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f%:z") {
        return Ok(d.with_timezone(&Utc));
    }
    if let Ok(date) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return wib_to_utc(date.and_hms_opt(0, 0, 0).unwrap_or_default(), raw);
    }
    Err(format!("unrecognised time {raw:?}"))
}

fn wib_to_utc(n: NaiveDateTime, raw: &str) -> Result<DateTime<Utc>, String> {
    jakarta()
        .from_local_datetime(&n)
        .single()
        .map(|d| d.with_timezone(&Utc))
        .ok_or_else(|| format!("time {raw:?} is not a valid WIB time"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn every_singapay_time_form_parses_to_the_same_instant() {
        let want = utc("2025-10-17T07:54:40Z");
        for s in [
            "2025-10-17T14:54:40+07:00",
            "2025-10-17T07:54:40Z",
            "2025-10-17T07:54:40.000000Z",
            "2025-10-17 14:54:40",
            "2025-10-17T14:54:40",
            "17 Oct 2025 14:54:40",
            "1760687680000",
            "1760687680",
        ] {
            assert_eq!(parse_singapay_time(s).unwrap(), want, "{s}");
        }
        assert!(parse_singapay_time("yesterday").is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(
            parse_retry_after("7200"),
            Some(std::time::Duration::from_secs(7200))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(std::time::Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn jakarta_date_turns_over_at_17_utc() {
        assert_eq!(jakarta_yyyymmdd(utc("2025-10-20T16:59:59Z")), "20251020");
        assert_eq!(jakarta_yyyymmdd(utc("2025-10-20T17:00:00Z")), "20251021");
        assert_eq!(jakarta_yyyymmdd(utc("2025-10-21T00:30:00Z")), "20251021");
    }

    #[test]
    fn ledger_timestamps_are_fixed_width_and_round_trip() {
        let t = utc("2026-11-21T03:04:05Z");
        assert_eq!(ledger_ts(t), "2026-11-21T03:04:05.000000Z");
        assert_eq!(parse_ledger_ts(&ledger_ts(t)).unwrap(), t);
        assert_eq!(rfc3339_utc(t), "2026-11-21T03:04:05Z");
        assert_eq!(format_wib(t), "21 Nov 2026 10:04 WIB");
    }
}

//! Cron expressions of `sync.schedule`: 6 fields, seconds first, UTC; a 5-field expression gets a
//! leading `0` seconds field. Parsed by `croner` with the options tokio-cron-scheduler 0.15 uses
//! (seconds required, day-of-month AND day-of-week), so an expression that passes [`validate`] is
//! one the scheduler accepts, and [`interval`] agrees with when it fires.

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Normalises an expression: 5-field (`*/5 * * * *`) gets a leading `0` seconds field.
pub fn normalize(expr: &str) -> String {
    let fields = expr.split_whitespace().count();
    if fields == 5 {
        format!("0 {}", expr.trim())
    } else {
        expr.trim().to_string()
    }
}

/// Parses a (normalised) expression. Errors with croner's message.
fn parse(expr: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(&normalize(expr))
        .map_err(|e| e.to_string())
}

/// Checks that `expr` is a schedule the daemon can run. Errors with the parser's message.
pub fn validate(expr: &str) -> Result<(), String> {
    parse(expr).map(|_| ())
}

/// The interval between the next two firings of `expr` after `now` (for `/readyz`), or `None`
/// if the expression does not parse or never fires again.
pub fn interval(expr: &str, now: DateTime<Utc>) -> Option<std::time::Duration> {
    let cron = parse(expr).ok()?;
    let mut it = cron.iter_after(now);
    let a = it.next()?;
    let b = it.next()?;
    (b - a).to_std().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_field_cron_gets_seconds_and_bad_cron_is_refused() {
        assert_eq!(normalize("*/5 * * * *"), "0 */5 * * * *");
        assert_eq!(normalize("0 */5 * * * *"), "0 */5 * * * *");
        assert!(validate("0 */5 * * * *").is_ok());
        assert!(validate("*/5 * * * *").is_ok());
        assert!(validate("every five minutes").is_err());
        assert!(validate("0 61 * * * *").is_err());
        let now = chrono::Utc::now();
        let five = Some(std::time::Duration::from_secs(300));
        assert_eq!(interval("0 */5 * * * *", now), five);
        assert_eq!(interval("*/5 * * * *", now), five);
    }

    #[test]
    fn what_validates_is_what_the_scheduler_accepts() {
        for expr in [
            "0 */5 * * * *",
            "*/5 * * * *",
            "0 0 0 1 1 *",
            "nonsense",
            "0 0 25 * * *",
        ] {
            let scheduler =
                tokio_cron_scheduler::Job::new_async(normalize(expr).as_str(), |_, _| {
                    Box::pin(async {})
                });
            assert_eq!(validate(expr).is_ok(), scheduler.is_ok(), "{expr}");
        }
    }
}

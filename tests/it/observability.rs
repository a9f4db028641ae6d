//! What an operator sees and relies on: the metric families on `/metrics` (and the alert rules
//! that use them), a listener that sheds slow and idle clients, and a durability barrier that
//! stops announcements when it fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::Method;
use singapay_sync::time::SystemClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

/// One sample: its labels and value.
type Sample = (BTreeMap<String, String>, f64);

/// The Prometheus text format's samples by metric name, and the declared `# TYPE`s.
fn parse_metrics(text: &str) -> (BTreeMap<String, Vec<Sample>>, BTreeMap<String, String>) {
    let mut samples: BTreeMap<String, Vec<Sample>> = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (it.next(), it.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        samples
            .entry(name.to_string())
            .or_default()
            .push((labels, value.parse().unwrap()));
    }
    (samples, types)
}

/// The value of `name` whose labels include all of `want`.
fn value(
    samples: &BTreeMap<String, Vec<Sample>>,
    name: &str,
    want: &[(&str, &str)],
) -> Option<f64> {
    samples.get(name)?.iter().find_map(|(labels, v)| {
        want.iter()
            .all(|(k, w)| labels.get(*k).is_some_and(|l| l == w))
            .then_some(*v)
    })
}

#[tokio::test]
async fn metrics_carry_every_family_an_operator_alerts_on() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![500; 5]).await;
    let mut config = test_config(&dir, &sandbox);
    subscribe(&mut config, "erp", &erp, Some(LINK_EVENTS));
    config.doorbell("/singapay/webhook");
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    admin.resync_and_wait().await;
    sandbox.pay(103).await;
    sandbox.pay(78).await;
    admin.resync_and_wait().await;
    // The webhook fails; wait for the attempt to be recorded and the gauges to follow.
    let mut text = String::new();
    for _ in 0..200 {
        text = admin
            .http
            .get(format!("{}/metrics", admin.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let (s, _) = parse_metrics(&text);
        if value(
            &s,
            "singapay_sync_delivery_attempts_total",
            &[("outcome", "failed")],
        )
        .is_some_and(|n| n >= 2.0)
            && value(&s, "singapay_sync_deliveries", &[("state", "pending")]).is_some()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, types) = parse_metrics(&text);
    // Durations are histograms with buckets, not summaries.
    for h in [
        "singapay_sync_pass_duration_seconds",
        "singapay_sync_delivery_duration_seconds",
    ] {
        assert_eq!(types.get(h).map(String::as_str), Some("histogram"), "{h}");
        assert!(s.contains_key(&format!("{h}_bucket")), "{h} has buckets");
    }
    assert!(value(&s, "singapay_sync_pass_duration_seconds_count", &[]).unwrap() >= 2.0);
    assert!(
        value(
            &s,
            "singapay_sync_delivery_duration_seconds_bucket",
            &[("channel", "webhook"), ("le", "+Inf")]
        )
        .unwrap()
            >= 2.0
    );
    // Upstream requests by route and status: two passes of 5 pages, a token.
    assert!(
        value(
            &s,
            "singapay_sync_upstream_requests_total",
            &[("route", "list"), ("status", "200")]
        )
        .unwrap()
            >= 10.0
    );
    assert!(
        value(
            &s,
            "singapay_sync_upstream_requests_total",
            &[("route", "token"), ("status", "200")]
        )
        .unwrap()
            >= 1.0
    );
    // Events by type, passes by outcome, attempts by channel and outcome.
    assert!(
        value(
            &s,
            "singapay_sync_events_total",
            &[("type", "payment_link.paid")]
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        value(
            &s,
            "singapay_sync_passes_total",
            &[("outcome", "succeeded")]
        )
        .unwrap()
            >= 2.0
    );
    assert!(
        value(
            &s,
            "singapay_sync_delivery_attempts_total",
            &[("channel", "webhook"), ("outcome", "failed")]
        )
        .unwrap()
            >= 2.0
    );
    // Gauges: the account's last success (Unix seconds, just now), its held deletions, the
    // deliveries by state and the oldest pending one's age.
    let now = chrono::Utc::now().timestamp() as f64;
    let last = value(
        &s,
        "singapay_sync_last_success_timestamp_seconds",
        &[("account_id", ACCOUNT)],
    )
    .unwrap();
    assert!((now - 120.0..=now + 1.0).contains(&last), "{last} vs {now}");
    assert_eq!(
        value(
            &s,
            "singapay_sync_deletions_held",
            &[("account_id", ACCOUNT)]
        ),
        Some(0.0)
    );
    for state in ["pending", "delivered", "dead", "disabled"] {
        assert!(
            value(&s, "singapay_sync_deliveries", &[("state", state)]).is_some(),
            "{state}"
        );
    }
    let age = value(&s, "singapay_sync_oldest_pending_delivery_age_seconds", &[]).unwrap();
    assert!((0.0..3600.0).contains(&age), "{age}");
    // The doorbell's request counts exist before any request (at 0 in a process of their own:
    // an alert on "none accepted" needs the series; tests in one process share the recorder).
    for outcome in [
        "accepted",
        "duplicate",
        "error",
        "unsigned",
        "bad_signature",
        "stale",
        "no_token",
    ] {
        assert!(
            value(
                &s,
                "singapay_sync_inbound_requests_total",
                &[("outcome", outcome)]
            )
            .is_some(),
            "{outcome}"
        );
    }
    // And the processor's: what it did with the stored notifications, and how many wait
    // (config/alerts.yml, `SingapaySyncInboundBacklog`).
    for outcome in ["processed", "retried", "failed"] {
        assert!(
            value(
                &s,
                "singapay_sync_inbound_processed_total",
                &[("outcome", outcome)]
            )
            .is_some(),
            "{outcome}"
        );
    }
    assert_eq!(
        value(
            &s,
            "singapay_sync_inbound_notifications",
            &[("state", "pending")]
        ),
        Some(0.0)
    );

    // Every metric the example alert rules use is one of these families.
    let rules = include_str!("../../config/alerts.yml");
    let mut used = 0;
    for expr_line in rules.lines().filter(|l| l.contains("singapay_sync_")) {
        for (i, _) in expr_line.match_indices("singapay_sync_") {
            let name: String = expr_line[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name)
                .to_string();
            assert!(
                types.contains_key(&family),
                "alert rule uses {name}, not exported"
            );
            used += 1;
        }
    }
    assert!(used >= 9, "{used}");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_slow_header_client_is_cut_and_2000_idle_connections_do_not_stop_healthz() {
    raise_fd_limit();
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let mut config = test_config(&dir, &sandbox);
    config.header_timeout = Some("300ms".into());
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let addr = daemon.admin.base.trim_start_matches("http://").to_string();

    // A client that trickles its headers is disconnected after the header timeout.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf))
        .await
        .expect("the server never closed the slow connection")
        .unwrap_or(0);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // 2,000 connections that send nothing; /healthz still answers promptly.
    let mut idle = Vec::with_capacity(2000);
    for _ in 0..2000 {
        idle.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = Instant::now();
    let ok = reqwest::get(format!("{}/healthz", daemon.admin.base))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop(idle);
    daemon.shutdown().await;
}

/// Raises this process's open-file limit to its hard limit (2,000 client and 2,000 server
/// sockets live here at once).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

#[tokio::test]
async fn nothing_is_announced_when_the_durability_barrier_fails() {
    let dir = tempfile::tempdir().unwrap();
    if on_postgres() {
        eprintln!(
            "SKIPPED on PostgreSQL: the WAL-sync barrier is SQLite's (a PostgreSQL commit is \
             durable when it returns)"
        );
        return;
    }
    let sandbox = TestSandbox::start().await;
    let erp = Receiver::start(vec![]).await;
    let mut config = test_config(&dir, &sandbox);
    subscribe(&mut config, "erp", &erp, Some(LINK_EVENTS));
    let daemon = serve(&config, Arc::new(SystemClock)).await;
    let admin = &daemon.admin;
    admin.resync_and_wait().await;
    // The WAL file disappears (SQLite keeps writing to its open descriptor): committed events
    // can no longer be proven on disk, so none may be sent or handed out.
    let mut wal = config.ledger.clone().into_os_string();
    wal.push("-wal");
    std::fs::remove_file(&wal).unwrap();
    sandbox.pay(103).await;
    let run = admin.resync_and_wait().await;
    assert_eq!(
        run["changes"], 3,
        "paid, and its history row created and paid"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        erp.hits().is_empty(),
        "a delivery went out past a failed barrier"
    );
    let (status, body) = admin.call(Method::GET, "/events").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (500, Some("internal"))
    );
    let pending = admin.get("/deliveries?state=pending").await;
    assert_eq!(pending["deliveries"].as_array().map(Vec::len), Some(1));
    assert_eq!(pending["deliveries"][0]["attempts"], 0);
    daemon.shutdown().await;
}

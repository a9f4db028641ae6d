//! `singapay-sync run` as a real child process: health, auth on /resync, clean SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

#[tokio::test]
async fn the_daemon_answers_health_guards_resync_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let mut config = test_config(&dir, &sandbox);
    let port = free_port();
    config.listen = format!("127.0.0.1:{port}");
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config.toml()).unwrap();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg)
        .arg("run")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut healthy = None;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            healthy = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let healthy = healthy.expect("daemon never answered /healthz");
    assert_eq!(healthy.status(), 200);
    assert_eq!(
        healthy.json::<serde_json::Value>().await.unwrap()["status"],
        "ok"
    );

    // Not ready before the first successful pass.
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    let denied = http.post(format!("{base}/resync")).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let body: serde_json::Value = denied.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let wrong = http
        .post(format!("{base}/resync"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let ok = http
        .post(format!("{base}/resync"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    let runs: serde_json::Value = ok.json().await.unwrap();
    let run_id = runs["runs"][0]["run_id"].as_i64().unwrap();
    let outcome = Admin::new(base.clone()).wait_run(run_id).await;
    assert_eq!(outcome["outcome"], "succeeded", "{outcome}");
    assert_eq!(outcome["links_seen"], 103);
    assert_eq!(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Bad requests get JSON errors.
    let bad = http
        .get(format!("{base}/events?limit=abc"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<serde_json::Value>().await.unwrap()["error"]["code"],
        "bad_parameter"
    );

    let pid = child.id().unwrap();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("daemon did not stop within 20 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
}

#[tokio::test]
async fn check_config_exits_2_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[singapay]\nper_page = 0\n[[accounts]]\nid = \"nope\"\n[http]\nadmin_token = \"x\"\n",
    )
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg)
        .arg("check-config")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "singapay.partner_id is required",
        "singapay.client_secret is required",
        "singapay.per_page",
        "accounts[0].id",
        "http.admin_token must be at least 16",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
}

#[tokio::test]
async fn a_fatal_403_stops_sync_after_one_request_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, test_config(&dir, &sandbox).toml()).unwrap();
    sandbox
        .fault(serde_json::json!({"route": "token", "status": 403, "count": 100}))
        .await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&cfg)
        .arg("sync")
        .env("RUST_LOG", "off")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not registered") && err.contains("403"),
        "{err}"
    );
    assert_eq!(sandbox.requests().await.len(), 1, "no retry storm");
}

#[tokio::test]
async fn the_cli_lists_dead_deliveries_and_retries_them() {
    let erp = Receiver::start(vec![500, 500]).await;
    let t = TestApp::spawn_with(|c| {
        subscribe(c, "erp", &erp, Some(LINK_EVENTS));
        c.retry_schedule = Some(singapay_sync::sandbox::strings(&["10ms"]));
    })
    .await;
    let cfg = t.dir.path().join("config.toml");
    std::fs::write(&cfg, t.config.toml()).unwrap();
    t.sync_ok().await;
    t.sandbox.pay(103).await;
    t.sync_ok().await;
    t.dispatch().await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(t.dispatch().await.dead, 1);

    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"));
        c.arg("--config").arg(&cfg).args(args);
        c.output().unwrap()
    };
    let out = cli(&["deliveries", "list", "--state", "dead", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["state"], "dead");
    assert_eq!(lines[0]["channel"], "webhook");
    let refused = cli(&["deliveries", "list", "--state", "lost"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "clap refuses an unknown state"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pending"));
    let by_channel = cli(&["deliveries", "list", "--channel", "email", "--json"]);
    assert_eq!(by_channel.status.code(), Some(0));
    assert!(by_channel.stdout.is_empty(), "no e-mail deliveries");
    assert_eq!(lines[0]["last_status"], 500);
    let id = lines[0]["id"].as_i64().unwrap();
    assert_eq!(
        cli(&["deliveries", "retry", &id.to_string()]).status.code(),
        Some(0)
    );
    assert_eq!(
        cli(&["deliveries", "retry", "999999"]).status.code(),
        Some(1)
    );
    let d = t.dispatch().await;
    assert_eq!(d.delivered, 1);
    let log = t.app.ledger.delivery_attempts(id).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.status).collect::<Vec<_>>(),
        [Some(500), Some(500), Some(200)],
        "the manual retry is logged like any attempt"
    );
}

#[tokio::test]
async fn check_config_refuses_each_unsafe_setup_with_exit_2_naming_the_key() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let short_key = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 16])
    );
    type Edit = Box<dyn Fn(&mut singapay_sync::sandbox::DaemonConfig)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "SMTP credentials without TLS",
            Box::new(|c| {
                c.email = Some(singapay_sync::sandbox::EmailEntry {
                    smtp_url: "smtp://user:secret@mail.example.com:587".into(),
                    from: "Sync <sync@example.com>".into(),
                    to: singapay_sync::sandbox::strings(&["finance@example.com"]),
                    events: None,
                    timeout: None,
                })
            }),
            "email.smtp_url",
        ),
        (
            "http:// to SingaPay",
            Box::new(|c| c.sandbox_url = "http://payment-b2b.singapay.id".into()),
            "singapay.base_url",
        ),
        (
            "http:// to a webhook",
            Box::new(|c| {
                c.webhook(
                    "erp",
                    "http://erp.example.com/hooks",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                    None,
                );
            }),
            "webhooks[0].url",
        ),
        (
            "a 16-byte webhook key",
            Box::new(move |c| {
                c.webhook("erp", "https://erp.example.com/hooks", &short_key, None);
            }),
            "webhooks[0].secret",
        ),
    ];
    for (what, edit, key) in cases {
        let mut c = test_config(&dir, &sandbox);
        edit(&mut c);
        check_refused(&dir, &c.toml(), what, key).await;
    }
    let level = format!(
        "{}[log]\nlevel = \"verbose\"\n",
        test_config(&dir, &sandbox).toml()
    );
    check_refused(&dir, &level, "an unknown log.level", "log.level").await;
}

async fn check_refused(dir: &tempfile::TempDir, toml: &str, what: &str, key: &str) {
    let path = dir.path().join("refused.toml");
    std::fs::write(&path, toml).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
        .arg("--config")
        .arg(&path)
        .arg("check-config")
        .output()
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: {err}");
    assert!(err.contains(key), "{what}: {key} not named in {err}");
    assert!(!err.contains("secret@"), "{what}: a value is echoed: {err}");
}

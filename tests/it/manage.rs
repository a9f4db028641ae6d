//! Managing payment links through the daemon (DESIGN §15): validation before any upstream call,
//! one link per reff_no (Idempotency-Key, duplicates, concurrent creates, lost answers), and the
//! write mirrored at once with its callback.

use std::sync::Arc;

use serde_json::{Value, json};
use singapay_sync::app::App;
use singapay_sync::sandbox::DaemonConfig;
use singapay_sync::time::SystemClock;

use crate::harness::*;

struct Managed {
    sandbox: TestSandbox,
    rx: Receiver,
    served: Served,
    _dir: tempfile::TempDir,
}

impl Managed {
    async fn start(edit: impl FnOnce(&mut DaemonConfig)) -> Managed {
        let sandbox = TestSandbox::start().await;
        let rx = Receiver::start(vec![]).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir, &sandbox);
        subscribe(&mut config, "erp", &rx, Some(LINK_EVENTS));
        edit(&mut config);
        let app = App::build_with_clock(config.build().unwrap(), Arc::new(SystemClock), true)
            .await
            .unwrap();
        let served = serve_app(app);
        served.admin.wait_healthy().await;
        let run = served.admin.resync_and_wait().await;
        assert_eq!(run["outcome"], "succeeded", "{run}");
        sandbox.clear_requests().await;
        Managed {
            sandbox,
            rx,
            served,
            _dir: dir,
        }
    }

    /// An admin call with a JSON body and headers: `(status, body)`.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        key: Option<&str>,
    ) -> (u16, Value) {
        let a = &self.served.admin;
        let mut req = a
            .http
            .request(method, format!("{}{path}", a.base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn create(&self, body: Value, key: Option<&str>) -> (u16, Value) {
        self.send(
            reqwest::Method::POST,
            &format!("/links/{ACCOUNT}"),
            Some(body),
            key,
        )
        .await
    }

    /// SingaPay's write requests since the baseline: `(method, path)`.
    async fn writes(&self) -> Vec<(String, String)> {
        self.sandbox
            .requests()
            .await
            .into_iter()
            .filter(|r| ["POST", "PUT", "DELETE"].contains(&r.method.as_str()))
            .filter(|r| !r.path.contains("access-token"))
            .map(|r| (r.method, r.path))
            .collect()
    }

    /// Waits (at most 10 s) for a verified callback of `event` about link `id`.
    async fn hit(&self, event: &str, id: i64) -> Hit {
        self.rx
            .wait_for(event, |b| b["data"]["object"]["id"] == id)
            .await
    }
}

fn invoice(reff: &str) -> Value {
    json!({"reff_no": reff, "title": format!("Invoice {reff}"), "total_amount": 150000,
           "whitelisted_payment_method": ["VA_BRI", "QRIS"]})
}

#[tokio::test]
async fn each_validation_rule_is_a_422_naming_the_field_with_no_upstream_write() {
    let m = Managed::start(|_| {}).await;
    let past = chrono::Utc::now().timestamp_millis() - 60_000;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"title": "x", "total_amount": 20000}), "reff_no"),
        (
            json!({"reff_no": "A B", "title": "x", "total_amount": 20000}),
            "reff_no",
        ),
        (
            json!({"reff_no": "A/B", "title": "x", "total_amount": 20000}),
            "reff_no",
        ),
        (
            json!({"reff_no": "X".repeat(41), "title": "x", "total_amount": 20000}),
            "reff_no",
        ),
        (json!({"reff_no": "R1", "total_amount": 20000}), "title"),
        (
            json!({"reff_no": "R1", "title": "t".repeat(256), "total_amount": 20000}),
            "title",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 9999}),
            "total_amount",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 30000,
                "items": [{"name": "A", "quantity": 2, "unit_price": 10000}]}),
            "total_amount",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 20000, "max_usage": 0}),
            "max_usage",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 20000, "max_usage": 1_000_001}),
            "max_usage",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 20000, "expired_at": past}),
            "expired_at",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 20000,
                "redirect_url": "http://shop.example"}),
            "redirect_url",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 20000,
                "redirect_url": format!("https://shop.example/{}", "a".repeat(2048))}),
            "redirect_url",
        ),
        (
            json!({"reff_no": "R1", "title": "x", "total_amount": 20000,
                "whitelisted_payment_method": ["VA_BRI", "BITCOIN"]}),
            "whitelisted_payment_method",
        ),
    ];
    for (body, field) in cases {
        let (status, v) = m.create(body.clone(), None).await;
        assert_eq!(status, 422, "{body} → {v}");
        assert_eq!(v["error"]["code"], "invalid_request", "{v}");
        assert!(v["error"]["fields"][field].is_array(), "{body} → {v}");
    }
    // Every problem at once.
    let (_, v) = m
        .create(json!({"reff_no": "", "title": "", "total_amount": 1}), None)
        .await;
    let fields = v["error"]["fields"].as_object().unwrap();
    assert!(
        ["reff_no", "title", "total_amount"]
            .iter()
            .all(|f| fields.contains_key(*f)),
        "{v}"
    );
    assert_eq!(m.writes().await, Vec::<(String, String)>::new());
    m.served.shutdown().await;
}

#[tokio::test]
async fn a_create_is_mirrored_at_once_and_exactly_once_per_reff_no() {
    let m = Managed::start(|_| {}).await;
    let (status, v) = m.create(invoice("INV-001"), Some("key-1")).await;
    assert_eq!(status, 201, "{v}");
    let id = v["link"]["id"].as_i64().unwrap();
    assert_eq!(v["link"]["reff_no"], "INV-001");
    assert_eq!(v["link"]["total_amount"], "150000.00");
    let created = m.hit("payment_link.created", id).await;
    assert_eq!(created.body["data"]["object"]["reff_no"], "INV-001");
    let mirrored = m.served.admin.get(&format!("/links/{ACCOUNT}/{id}")).await;
    assert_eq!(mirrored["link"]["reff_no"], "INV-001", "{mirrored}");
    // The same key and body: the first answer again, no second create.
    let (again, v2) = m.create(invoice("INV-001"), Some("key-1")).await;
    assert_eq!((again, &v2), (201, &v));
    // The same key, another body.
    let mut other = invoice("INV-001");
    other["total_amount"] = json!(160000);
    let (s, e) = m.create(other, Some("key-1")).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // The same reff_no without a key: a duplicate, with the existing link.
    let (s, e) = m.create(invoice("INV-001"), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("duplicate_reff_no"))
    );
    assert_eq!(e["link"]["id"], id);
    let posts: Vec<_> = m.writes().await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    // A reff_no SingaPay has but the mirror does not (made in the dashboard since the last
    // sweep): SingaPay's own 422, its messages by field.
    m.sandbox
        .add(json!({"reff_no": "INV-DASHBOARD", "total_amount": 20000}))
        .await;
    let (s, e) = m.create(invoice("INV-DASHBOARD"), None).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("invalid_request")),
        "{e}"
    );
    assert!(
        e["error"]["fields"]["reff_no"][0]
            .as_str()
            .unwrap()
            .contains("taken"),
        "{e}"
    );
    // The next sweep finds nothing new but the dashboard's link.
    let run = m.served.admin.resync_and_wait().await;
    assert_eq!(run["changes"], 1, "{run}");
    let created_hits =
        m.rx.hits()
            .iter()
            .filter(|h| {
                h.body["type"] == "payment_link.created" && h.body["data"]["object"]["id"] == id
            })
            .count();
    assert_eq!(created_hits, 1);
    m.served.shutdown().await;
}

#[tokio::test]
async fn twenty_concurrent_creates_of_one_reff_no_make_one_link() {
    let m = Arc::new(Managed::start(|_| {}).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let m = Arc::clone(&m);
            tokio::spawn(async move { m.create(invoice("INV-RACE"), None).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap().0);
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        19,
        "{statuses:?}"
    );
    assert_eq!(m.writes().await.len(), 1);
    let links = m
        .served
        .admin
        .get(&format!("/links?account_id={ACCOUNT}&limit=1000"))
        .await;
    let same = links["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["link"]["reff_no"] == "INV-RACE")
        .count();
    assert_eq!(same, 1);
}

#[tokio::test]
async fn a_create_whose_answer_is_lost_gives_the_caller_the_one_link() {
    let m = Managed::start(|c| c.singapay_timeout = Some("1s".into())).await;
    // SingaPay makes the link, the answer never arrives in time.
    m.sandbox
        .fault(json!({"route": "create", "after": true, "delay_ms": 1500}))
        .await;
    let (status, v) = m.create(invoice("INV-LOST"), None).await;
    assert_eq!(status, 201, "{v}");
    let id = v["link"]["id"].as_i64().unwrap();
    m.hit("payment_link.created", id).await;
    // It made it, then answered 503.
    m.sandbox
        .fault(json!({"route": "create", "after": true, "status": 503}))
        .await;
    let (status, v) = m.create(invoice("INV-503"), None).await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["link"]["reff_no"], "INV-503");
    // One POST each, never a re-send.
    let posts = m.writes().await;
    assert_eq!(posts.len(), 2, "{posts:?}");
    m.served.shutdown().await;
}

#[tokio::test]
async fn updates_and_deletes_are_delivered_at_once_and_payments_block_a_delete() {
    let m = Managed::start(|_| {}).await;
    let (_, v) = m.create(invoice("INV-UPD"), None).await;
    let id = v["link"]["id"].as_i64().unwrap();
    let path = format!("/links/{ACCOUNT}/{id}");
    let (s, u) = m
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"max_usage": 3})),
            None,
        )
        .await;
    assert_eq!(s, 200, "{u}");
    assert_eq!(u["link"]["max_usage"], 3);
    let updated = m.hit("payment_link.updated", id).await;
    assert_eq!(updated.body["data"]["previous_attributes"]["max_usage"], 1);
    let (s, _) = m
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"status": "closed"})),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let closed = m.hit("payment_link.status_changed", id).await;
    assert_eq!(closed.body["data"]["object"]["status"], "closed");
    let (s, e) = m
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"max_usage": 0})),
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (422, Some("invalid_request"))
    );
    // Link 103 has payment history: refused before SingaPay is asked.
    let before = m.writes().await.len();
    let (s, e) = m
        .send(
            reqwest::Method::DELETE,
            &format!("/links/{ACCOUNT}/103"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("link_has_payments"))
    );
    assert_eq!(m.writes().await.len(), before);
    let (s, d) = m.send(reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(s, 200, "{d}");
    m.hit("payment_link.deleted", id).await;
    let (s, _) = m.send(reqwest::Method::DELETE, &path, None, None).await;
    assert_eq!(s, 404);
    let (s, _) = m
        .send(
            reqwest::Method::PUT,
            &format!("/links/{ACCOUNT}/999999"),
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(s, 404);
    // Without the token.
    let r = reqwest::Client::new()
        .post(format!("{}/links/{ACCOUNT}", m.served.admin.base))
        .json(&invoice("INV-NOAUTH"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let methods = m.served.admin.get("/payment-methods").await;
    let codes: Vec<&str> = methods["payment_methods"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"VA_BRI") && codes.contains(&"QRIS"),
        "{methods}"
    );
    m.served.shutdown().await;
}

#[tokio::test]
async fn the_cli_creates_a_link_as_json_and_lists_payment_methods() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = TestSandbox::start().await;
    let rx = Receiver::start(vec![]).await;
    let mut config = test_config(&dir, &sandbox);
    subscribe(&mut config, "erp", &rx, Some(LINK_EVENTS));
    let cfg = dir.path().join("config.toml");
    std::fs::write(&cfg, config.toml()).unwrap();
    let (code, _, err) = cli(&cfg, &["sync"]).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, out, err) = cli(
        &cfg,
        &[
            "links",
            "create",
            "--reff-no",
            "INV-CLI-1",
            "--title",
            "Invoice from the CLI",
            "--item",
            "Kopi Gayo 250g:2:75000",
            "--methods",
            "VA_BRI,QRIS",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["link"]["reff_no"], "INV-CLI-1");
    assert_eq!(v["link"]["total_amount"], "150000.00");
    assert_eq!(v["link"]["items"][0]["name"], "Kopi Gayo 250g");
    let id = v["link"]["id"].as_i64().unwrap();
    // Delivered before the command returned, signature verified.
    let hits = rx.hits();
    assert!(
        hits.iter().any(|h| h.verified
            && h.body["type"] == "payment_link.created"
            && h.body["data"]["object"]["id"] == id),
        "{hits:?}"
    );
    // The same reff_no again: refused with the existing link, exit 1.
    let (code, out, _) = cli(
        &cfg,
        &[
            "links",
            "create",
            "--reff-no",
            "INV-CLI-1",
            "--title",
            "again",
            "--amount",
            "20000",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"]["code"], "duplicate_reff_no");
    assert_eq!(v["link"]["id"], id);
    // Invalid: exit 2, every field named.
    let (code, out, _) = cli(
        &cfg,
        &[
            "links",
            "create",
            "--reff-no",
            "BAD REF",
            "--amount",
            "5000",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(2));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let fields = v["error"]["fields"].as_object().unwrap();
    assert!(
        ["reff_no", "title", "total_amount"]
            .iter()
            .all(|f| fields.contains_key(*f)),
        "{v}"
    );
    let (code, out, err) = cli(&cfg, &["payment-methods", "--json"]).await;
    assert_eq!(code, Some(0), "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["payment_methods"].as_array().unwrap().len(), 20);
    let (code, out, _) = cli(&cfg, &["payment-methods"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.lines()
            .any(|l| l.starts_with("VA_BRI") && l.contains("VA BRI")),
        "{out}"
    );
    let (code, out, _) = cli(&cfg, &["links", "show", &id.to_string()]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("INV-CLI-1"), "{out}");
    let (code, out, _) = cli(
        &cfg,
        &[
            "links",
            "update",
            &id.to_string(),
            "--status",
            "closed",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["link"]["status"], "closed");
}

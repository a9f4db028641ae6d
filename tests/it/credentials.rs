//! Several merchants in one daemon (DESIGN §16): three `[[credentials]]`, six accounts. Each
//! account's requests carry its own credential (the sandbox's request log shows `X-PARTNER-ID`,
//! and it refuses another merchant's account with 403), tokens are fetched once per credential,
//! link management and payment methods use the account's credential, and a webhook signed with
//! any merchant's secret rings the doorbell.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};
use singapay_sync::app::App;
use singapay_sync::sandbox::{AccountEntry, CredentialEntry, SANDBOX_PARTNER_ID};
use singapay_sync::time::SystemClock;

use crate::harness::*;

/// `(account, credential, links)`: two accounts per credential; the seeded account is alpha's.
const ACCOUNTS: [(&str, &str, usize); 6] = [
    (ACCOUNT, "alpha", 103),
    ("01K946KF851RK7FX075GJHBVA2", "alpha", 4),
    ("01K946KF851RK7FX075GJHBVB1", "beta", 5),
    ("01K946KF851RK7FX075GJHBVB2", "beta", 6),
    ("01K946KF851RK7FX075GJHBVC1", "gamma", 7),
    ("01K946KF851RK7FX075GJHBVC2", "gamma", 8),
];

const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

fn partner(name: &str) -> String {
    format!("partner-{name}")
}

fn secret(name: &str) -> String {
    format!("secret-of-{name}-0123456789")
}

/// The account a SingaPay API path names (`…/payment-link-manage/{account}[/…]` or
/// `…/payment-link-histories/{account}[/…]`).
fn account_of(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/api/v1.0/payment-link-manage/")
        .or_else(|| path.strip_prefix("/api/v1.0/payment-link-histories/"))?;
    let a = rest.split('/').next()?;
    (a.len() == 26).then_some(a)
}

#[tokio::test]
async fn each_account_uses_its_own_credential_and_any_merchant_rings_the_doorbell() {
    let sandbox = TestSandbox::start().await;
    for (account, _, links) in &ACCOUNTS[1..] {
        sandbox
            .ctl(
                reqwest::Method::POST,
                format!("{}/_sandbox/accounts/{account}", sandbox.base),
                json!({ "links": links }),
            )
            .await;
    }
    for name in NAMES {
        let owned: Vec<&str> = ACCOUNTS
            .iter()
            .filter(|(_, c, _)| *c == name)
            .map(|(a, _, _)| *a)
            .collect();
        let (status, v) = sandbox
            .try_ctl(
                reqwest::Method::POST,
                format!("{}/_sandbox/credentials", sandbox.base),
                json!({"partner_id": partner(name), "client_id": format!("client-{name}"),
                       "client_secret": secret(name), "accounts": owned}),
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    let rx = Receiver::start(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir, &sandbox);
    config.doorbell("/singapay/webhook");
    subscribe(&mut config, "erp", &rx, None);
    config.accounts = ACCOUNTS
        .iter()
        .map(|(a, c, _)| AccountEntry {
            credential: Some(c.to_string()),
            ..AccountEntry::new(*a)
        })
        .collect();
    config.credentials = NAMES
        .iter()
        .map(|n| CredentialEntry {
            name: n.to_string(),
            partner_id: partner(n),
            client_id: format!("client-{n}"),
            client_secret: secret(n),
        })
        .collect();
    let app = App::build_with_clock(config.build().unwrap(), Arc::new(SystemClock), true)
        .await
        .unwrap();
    let inbound = format!("http://{}/singapay/webhook", app.inbound_addr().unwrap());
    let served = serve_app(app);
    served.admin.wait_healthy().await;

    // One pass per account, each complete with its own links.
    let runs = served.admin.resync_runs().await;
    assert_eq!(runs.len(), 6);
    let mut seen = BTreeMap::new();
    for r in &runs {
        let run = served.admin.wait_run(r["run_id"].as_i64().unwrap()).await;
        seen.insert(
            run["account_id"].as_str().unwrap().to_string(),
            run["links_seen"].as_u64().unwrap(),
        );
    }
    let want: BTreeMap<String, u64> = ACCOUNTS
        .iter()
        .map(|(a, _, n)| (a.to_string(), *n as u64))
        .collect();
    assert_eq!(seen, want);

    // Every request carried the credential of the account it names; one token per credential.
    let owner: BTreeMap<&str, String> = ACCOUNTS.iter().map(|(a, c, _)| (*a, partner(c))).collect();
    let log = sandbox.requests().await;
    let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
    let mut tokens: BTreeMap<String, usize> = BTreeMap::new();
    for r in &log {
        let carried = r.partner_id.clone().unwrap_or_default();
        if r.path.contains("access-token") {
            *tokens.entry(carried).or_default() += 1;
            continue;
        }
        let account = account_of(&r.path).unwrap_or_else(|| panic!("{r:?}"));
        assert_eq!(carried, owner[account], "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
        *per_account.entry(account.to_string()).or_default() += 1;
    }
    assert_eq!(per_account.len(), 6, "{per_account:?}");
    let want_tokens: BTreeMap<String, usize> = NAMES.iter().map(|n| (partner(n), 1)).collect();
    assert_eq!(tokens, want_tokens, "tokens are cached per credential");
    assert!(!tokens.contains_key(SANDBOX_PARTNER_ID));

    // Link management and payment methods go out with the account's credential.
    let (beta2, gamma1) = (ACCOUNTS[3].0, ACCOUNTS[4].0);
    sandbox.clear_requests().await;
    let a = &served.admin;
    let (status, v) = a
        .call(
            reqwest::Method::GET,
            &format!("/payment-methods?account_id={beta2}"),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["payment_methods"].as_array().unwrap().len(), 20);
    let r = a
        .http
        .post(format!("{}/links/{gamma1}", a.base))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"reff_no": "GAMMA-0001", "title": "Gamma invoice", "total_amount": 75000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    assert_eq!(created["link"]["reff_no"], "GAMMA-0001", "{created}");
    let carried: Vec<(String, String, Option<String>)> = sandbox
        .requests()
        .await
        .into_iter()
        .filter(|r| r.path.ends_with("payment-methods") || r.method == "POST")
        .map(|r| (r.method, r.path, r.partner_id))
        .collect();
    assert_eq!(
        carried,
        vec![
            (
                "GET".to_string(),
                "/api/v1.0/payment-link-manage/payment-methods".to_string(),
                Some(partner("beta"))
            ),
            (
                "GET".to_string(),
                "/api/v1.0/payment-link-manage/payment-methods".to_string(),
                Some(partner("gamma"))
            ),
            (
                "POST".to_string(),
                format!("/api/v1.0/payment-link-manage/{gamma1}"),
                Some(partner("gamma"))
            ),
        ]
    );

    // A payment on the link just created: the sandbox signs its webhook with gamma's secret, the
    // daemon verifies it (every credential's secret is a candidate key) and mirrors it. (The
    // sandbox numbers a new account's seeded links from 1, so a new link's id is the unique one.)
    let r = sandbox
        .http
        .post(format!("{}/_sandbox/webhooks", sandbox.base))
        .json(&json!({ "url": inbound }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let id = created["link"]["id"].as_i64().unwrap();
    sandbox
        .ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/accounts/{gamma1}/links/{id}/pay", sandbox.base),
            json!({"method": "QRIS"}),
        )
        .await;
    let paid = rx
        .wait_for("payment_link.paid", |b| {
            b["data"]["object"]["id"] == id && b["account_id"] == gamma1
        })
        .await;
    assert_eq!(paid.body["data"]["usage_delta"], 1, "{}", paid.body);
    let posted = json_of(
        sandbox
            .http
            .get(format!("{}/_sandbox/webhooks", sandbox.base)),
    )
    .await;
    let answers: Vec<Option<u64>> = posted["posted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["status"].as_u64())
        .collect();
    assert!(
        !answers.is_empty() && answers.iter().all(|s| *s == Some(200)),
        "{posted}"
    );
    served.shutdown().await;
}

#[tokio::test]
async fn the_sandbox_refuses_another_merchants_account() {
    let sandbox = TestSandbox::start().await;
    let (status, _) = sandbox
        .try_ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/credentials", sandbox.base),
            json!({"partner_id": "partner-alpha", "client_id": "client-alpha",
                   "client_secret": "secret-alpha", "accounts": [ACCOUNT]}),
        )
        .await;
    assert_eq!(status, 201);
    // The default credential may no longer read the seeded account: a sync fails with 403.
    let t = TestApp::start(sandbox, Arc::new(SystemClock), |_| {}).await;
    let err = t.sync_err().await;
    assert!(err.contains("403"), "{err}");
}

#[tokio::test]
async fn check_config_online_fetches_a_token_per_credential_and_names_a_refused_one() {
    let sandbox = TestSandbox::start().await;
    let (status, _) = sandbox
        .try_ctl(
            reqwest::Method::POST,
            format!("{}/_sandbox/credentials", sandbox.base),
            json!({"partner_id": partner("beta"), "client_id": "client-beta",
                   "client_secret": secret("beta"), "accounts": [ACCOUNTS[2].0]}),
        )
        .await;
    assert_eq!(status, 201);
    let dir = tempfile::tempdir().unwrap();
    let run = |client_secret: String| {
        let mut config = test_config(&dir, &sandbox);
        config.accounts.push(AccountEntry {
            credential: Some("beta".into()),
            ..AccountEntry::new(ACCOUNTS[2].0)
        });
        config.credentials = vec![CredentialEntry {
            name: "beta".into(),
            partner_id: partner("beta"),
            client_id: "client-beta".into(),
            client_secret,
        }];
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config.toml()).unwrap();
        async move { cli(&path, &["check-config", "--online"]).await }
    };
    let (code, stdout, stderr) = run(secret("beta")).await;
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("SingaPay accepted credential default.")
            && stdout.contains("SingaPay accepted credential beta.")
            && stdout.contains("2 account(s), 2 credential(s)"),
        "{stdout}"
    );
    let tokens: Vec<Option<String>> = sandbox
        .requests()
        .await
        .into_iter()
        .filter(|r| r.path.contains("access-token"))
        .map(|r| r.partner_id)
        .collect();
    assert_eq!(
        tokens,
        vec![Some(SANDBOX_PARTNER_ID.to_string()), Some(partner("beta"))]
    );
    let (code, stdout, stderr) = run("not-the-secret".into()).await;
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("SingaPay accepted credential default."),
        "{stdout}"
    );
    assert!(
        stderr.contains("SingaPay refused credential beta"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
}

//! Property tests of the webhook normaliser, classifier and verifier: arbitrary bytes and headers
//! never panic; the normalised form of any JSON body is JSON, is its own normal form, does not
//! depend on how the sender escaped slashes, and a body signed over it verifies.

use proptest::prelude::*;

use super::notice::classify;
use super::signature::{SignedRequest, Verifier, normalize, sha256_hex, sign, string_to_sign};
use crate::singapay::fuzz::json_value_with;

/// Keys of webhook bodies (DOC2 webhooks), the keys PHP turns into lists, and keys whose byte
/// order differs from other orders.
const KEYS: &[&str] = &[
    "event",
    "data",
    "transaction",
    "payment",
    "additional_info",
    "payment_link",
    "payment_link_history",
    "payment_link_histories",
    "reff_no",
    "id",
    "amount",
    "locations",
    "0",
    "1",
    "2",
    "3",
    "00",
    "-1",
    "10",
    "A",
    "_",
    "a",
    "url/path",
    "é",
    "",
];

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    json_value_with(KEYS)
}

fn verifier() -> Verifier {
    Verifier::new(
        "/hook?a=1".into(),
        vec![secrecy::SecretString::from("k".to_string())],
        std::time::Duration::from_secs(300),
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_requests_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..2048),
        sig in ".{0,140}",
        ts in "-?[0-9]{0,25}|.{0,12}",
        auth in "(Bearer |bearer |Basic )?.{0,40}",
    ) {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
            let _ = classify(&v);
        }
        let _ = normalize(&body);
        let req = SignedRequest {
            signature: Some(&sig),
            timestamp: Some(&ts),
            authorization: Some(&auth),
            body: &body,
        };
        let r = verifier().verify(req, chrono::Utc::now());
        prop_assert!(r.is_err());
    }

    #[test]
    fn the_normal_form_is_stable_escape_blind_and_verifies(v in json_value()) {
        let raw = v.to_string();
        let n = normalize(raw.as_bytes()).expect("a JSON body has a normal form");
        let parsed: serde_json::Value = serde_json::from_str(&n).expect("the normal form is JSON");
        let _ = classify(&parsed);
        prop_assert_eq!(normalize(n.as_bytes()), Some(n.clone()));
        let escaped = raw.replace('/', "\\/");
        prop_assert_eq!(normalize(escaped.as_bytes()), Some(n.clone()));
        let now = chrono::Utc::now();
        let ts = now.timestamp().to_string();
        let sig = sign("k", &string_to_sign("/hook?a=1", "tok", &sha256_hex(n.as_bytes()), &ts));
        let req = SignedRequest {
            signature: Some(&sig),
            timestamp: Some(&ts),
            authorization: Some("Bearer tok"),
            body: escaped.as_bytes(),
        };
        prop_assert!(verifier().verify(req, now).is_ok());
    }
}

/// Differential check against PHP itself, when `php` (8.1+) is on the PATH: 400 generated bodies
/// normalised by `tests/fixtures/php_normalize.php` (the PHP sample's steps) and by
/// [`normalize`] must agree byte for byte. Without PHP it says so and checks nothing.
#[test]
fn the_normal_form_is_what_php_writes() {
    use proptest::strategy::ValueTree;
    use std::io::Write;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/php_normalize.php"
    );
    let child = std::process::Command::new("php")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        eprintln!("SKIPPED the_normal_form_is_what_php_writes: no `php` on the PATH");
        return;
    };
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let bodies: Vec<String> = (0..400)
        .map(|_| {
            json_value()
                .new_tree(&mut runner)
                .expect("a value")
                .current()
                .to_string()
        })
        .collect();
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for b in &bodies {
            writeln!(stdin, "{b}").expect("write to php");
        }
    }
    let out = child.wait_with_output().expect("php output");
    let php = String::from_utf8(out.stdout).expect("php writes UTF-8");
    let php: Vec<&str> = php.lines().collect();
    assert_eq!(php.len(), bodies.len(), "php answered every line");
    for (body, want) in bodies.iter().zip(php) {
        assert_eq!(
            normalize(body.as_bytes()).as_deref(),
            Some(want),
            "body {body}"
        );
    }
}

//! Verifying SingaPay's webhook signature (DOC2 webhooks "Security and signature"; SingaPay docs "How to validate the
//! signature" and "Security and signature", DOC1/DOC2 in docs/ARCHITECTURE.md's Sources):
//!
//! ```text
//! StringToSign = "POST:" + ENDPOINT + ":" + TOKEN + ":" + sha256_hex(normalized body) + ":" + X-Timestamp
//! X-Signature  = hex(HMAC-SHA512(key, StringToSign))
//! ```
//!
//! ENDPOINT is the path and query string as registered in SingaPay's dashboard, TOKEN the
//! `Authorization` header without `Bearer ` (a random string SingaPay makes, not an access
//! token), X-Timestamp the header as sent (Unix seconds). The body is normalised the way
//! SingaPay's PHP sample does ([`normalize`]); the hash of the raw bytes is a second candidate
//! (as LV's and JS's verifiers accept). Every configured key is tried (which key SingaPay signs
//! with is not settled: DOC2 webhooks "Security and signature").

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

/// Why an inbound request is refused (answered 401; the reason is logged, never the body or
/// the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No `X-Signature` header (e.g. the dashboard's unsigned Test button, DOC2 webhooks, LV #21).
    #[error("unsigned: no X-Signature header")]
    Unsigned,
    /// `X-Signature` is not 128 hex characters.
    #[error("X-Signature is not 128 hex characters")]
    MalformedSignature,
    /// No `X-Timestamp`, or not Unix seconds.
    #[error("X-Timestamp is missing or not Unix seconds")]
    BadTimestamp,
    /// `X-Timestamp` is further from now than the tolerance (seconds off, signed: negative is
    /// in the past).
    #[error("stale: X-Timestamp is {0} s from now, beyond inbound.tolerance")]
    Stale(i64),
    /// No `Authorization: Bearer …` token.
    #[error("no Authorization bearer token")]
    NoToken,
    /// No candidate key and body hash reproduce the signature.
    #[error("signature mismatch: no configured key signs this request")]
    Mismatch,
}

impl Rejection {
    /// Every [`Rejection::label`], once each.
    pub const LABELS: [&'static str; 4] = ["unsigned", "bad_signature", "stale", "no_token"];

    /// A short label for metrics (`singapay_sync_inbound_requests_total{outcome}`), one of
    /// [`Rejection::LABELS`].
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::Unsigned => "unsigned",
            Rejection::MalformedSignature | Rejection::Mismatch => "bad_signature",
            Rejection::BadTimestamp | Rejection::Stale(_) => "stale",
            Rejection::NoToken => "no_token",
        }
    }
}

/// The signed request's parts, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `X-Signature` (hex; compared case-insensitively, as LV does).
    pub signature: Option<&'a str>,
    /// `X-Timestamp`.
    pub timestamp: Option<&'a str>,
    /// `Authorization`.
    pub authorization: Option<&'a str>,
    /// The raw body.
    pub body: &'a [u8],
}

/// Checks SingaPay's signatures for one registered ENDPOINT against candidate keys.
pub struct Verifier {
    endpoint: String,
    keys: Vec<SecretString>,
    tolerance: chrono::Duration,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("endpoint", &self.endpoint)
            .field("keys", &self.keys.len())
            .field("tolerance", &self.tolerance)
            .finish()
    }
}

/// A verified request: which candidate matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// Index of the key that signed it (in the order given to [`Verifier::new`]).
    pub key: usize,
    /// Whether the normalised body's hash matched (else the raw body's).
    pub normalized: bool,
}

impl Verifier {
    /// A verifier for `endpoint` (path and query exactly as registered), trying `keys` in order,
    /// accepting timestamps within `tolerance` of now either way.
    pub fn new(endpoint: String, keys: Vec<SecretString>, tolerance: std::time::Duration) -> Self {
        Self {
            endpoint,
            keys,
            tolerance: chrono::Duration::from_std(tolerance).unwrap_or(chrono::Duration::MAX),
        }
    }

    /// Verifies `req` at `now`.
    ///
    /// Errors: the [`Rejection`] that applies first (signature header, timestamp, token, then
    /// the HMAC against every key and both body hashes, compared in constant time).
    pub fn verify(
        &self,
        req: SignedRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<Verified, Rejection> {
        let given = req
            .signature
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(Rejection::Unsigned)?;
        let given = hex::decode(given.to_ascii_lowercase())
            .ok()
            .filter(|b| b.len() == 64)
            .ok_or(Rejection::MalformedSignature)?;
        let ts_text = req
            .timestamp
            .map(str::trim)
            .ok_or(Rejection::BadTimestamp)?;
        let ts: i64 = ts_text.parse().map_err(|_| Rejection::BadTimestamp)?;
        let at = DateTime::<Utc>::from_timestamp(ts, 0).ok_or(Rejection::BadTimestamp)?;
        let skew = at.signed_duration_since(now);
        if skew.abs() > self.tolerance {
            return Err(Rejection::Stale(skew.num_seconds()));
        }
        let token = bearer(req.authorization).ok_or(Rejection::NoToken)?;
        let mut hashes = Vec::with_capacity(2);
        if let Some(n) = normalize(req.body) {
            hashes.push((true, sha256_hex(n.as_bytes())));
        }
        let raw = sha256_hex(req.body);
        if hashes.first().is_none_or(|(_, h)| *h != raw) {
            hashes.push((false, raw));
        }
        for (normalized, hash) in &hashes {
            let to_sign = string_to_sign(&self.endpoint, token, hash, ts_text);
            for (i, key) in self.keys.iter().enumerate() {
                let Ok(mut mac) = Hmac::<Sha512>::new_from_slice(key.expose_secret().as_bytes())
                else {
                    continue;
                };
                mac.update(to_sign.as_bytes());
                // `verify_slice` compares in constant time.
                if mac.verify_slice(&given).is_ok() {
                    return Ok(Verified {
                        key: i,
                        normalized: *normalized,
                    });
                }
            }
        }
        Err(Rejection::Mismatch)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(authorization: Option<&str>) -> Option<&str> {
    let (scheme, token) = authorization?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// `"POST:" + endpoint + ":" + token + ":" + body_hash + ":" + timestamp` (DOC2 webhooks "Security and signature").
pub fn string_to_sign(endpoint: &str, token: &str, body_hash: &str, timestamp: &str) -> String {
    format!("POST:{endpoint}:{token}:{body_hash}:{timestamp}")
}

/// `hex(HMAC-SHA512(key, string_to_sign))`: what SingaPay puts in `X-Signature` (the sandbox
/// signs with it).
pub fn sign(key: &str, string_to_sign: &str) -> String {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha512>::new_from_slice(key.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The body as SingaPay's PHP sample re-encodes it before hashing: `json_decode($raw, true)`,
/// keys sorted recursively in byte order (`ksort SORT_STRING`), `json_encode` with
/// `JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES` and no whitespace. PHP's array model adds
/// two quirks reproduced here (DOC2 webhooks "Security and signature", JS verify.ts `normalizeWebhookBody`): an empty
/// object encodes as `[]`, and an object whose keys are exactly `"0".."n-1"` encodes as a list
/// (in index order). Lists keep their order. U+2028 and U+2029 stay escaped (`\u2028`), as PHP
/// escapes them without `JSON_UNESCAPED_LINE_TERMINATORS`. `None` if the body is not JSON.
///
/// Numbers as PHP has them: integers within `i64` verbatim; anything else (a fraction, an
/// exponent, an integer beyond `i64`) is a PHP float, written as `json_encode` writes it with
/// `serialize_precision = -1` ([`php_float`]).
pub fn normalize(raw: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(raw).ok()?;
    let mut out = String::with_capacity(raw.len());
    write_php(&value, &mut out);
    Some(out)
}

fn write_php(v: &Value, out: &mut String) {
    match v {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => out.push_str(&i.to_string()),
            (None, Some(f)) => out.push_str(&php_float(f)),
            (None, None) => out.push_str(&n.to_string()),
        },
        Value::Null | Value::Bool(_) => out.push_str(&v.to_string()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => write_list(items.iter(), out),
        Value::Object(map) => {
            if let Some(list) = as_php_list(map) {
                write_list(list.into_iter(), out);
                return;
            }
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_php(&map[k.as_str()], out);
            }
            out.push('}');
        }
    }
}

/// A float as PHP's `json_encode` writes it (`php_gcvt` with `serialize_precision = -1`): the
/// shortest digits that round-trip; positional unless the decimal exponent is below -4 or above
/// 17, else `d.ddde+N` (`1.0e+25`, `1.0e-5`); no `.0` on integral values (`10.0` → `10`, as
/// without `JSON_PRESERVE_ZERO_FRACTION`).
pub fn php_float(f: f64) -> String {
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.into();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.5e3".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let decpt = exp + 1;
    let exponential = if decpt < 0 { decpt < -3 } else { decpt > 17 };
    if exponential {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() { "0" } else { rest };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{first}.{rest}e{esign}{}", exp.abs());
    }
    let n = digits.len() as i32;
    if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt >= n {
        format!("{sign}{digits}{}", "0".repeat((decpt - n) as usize))
    } else {
        let (int, frac) = digits.split_at(decpt as usize);
        format!("{sign}{int}.{frac}")
    }
}

fn write_list<'a>(items: impl Iterator<Item = &'a Value>, out: &mut String) {
    out.push('[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_php(item, out);
    }
    out.push(']');
}

/// The values of an object PHP would encode as a list: `{}`, or keys exactly `"0".."n-1"` (in
/// decimal without leading zeros, in any order), in index order.
fn as_php_list(map: &serde_json::Map<String, Value>) -> Option<Vec<&Value>> {
    let mut slots: Vec<Option<&Value>> = vec![None; map.len()];
    for (k, v) in map {
        let canonical = k == "0" || (!k.starts_with('0') && k.bytes().all(|b| b.is_ascii_digit()));
        let i: usize = k.parse().ok().filter(|_| canonical && !k.is_empty())?;
        *slots.get_mut(i)? = Some(v);
    }
    slots.into_iter().collect()
}

/// A JSON string as PHP writes it with `JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES`: `"`,
/// `\` and control characters escaped (`\b \f \n \r \t`, else `\u00xx`), U+2028/U+2029 as
/// `\u2028`/`\u2029`, everything else verbatim.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    //! Vectors derived by hand from the PHP sample's steps (DOC2 webhooks "Security and signature"): each expected
    //! normalisation is what `json_encode(ksort_recursive(json_decode($raw, true)),
    //! JSON_UNESCAPED_UNICODE|JSON_UNESCAPED_SLASHES)` gives, written out key by key; each
    //! signature is HMAC-SHA512 computed over the string to sign built from the formula.
    use super::*;

    #[test]
    fn every_rejection_has_a_label_among_the_labels() {
        use Rejection::*;
        let all = [
            Unsigned,
            MalformedSignature,
            BadTimestamp,
            Stale(-400),
            NoToken,
            Mismatch,
        ];
        let used: std::collections::BTreeSet<&str> = all.iter().map(Rejection::label).collect();
        let listed: std::collections::BTreeSet<&str> = Rejection::LABELS.into_iter().collect();
        assert_eq!(used, listed);
    }

    #[test]
    fn keys_sort_in_byte_order_recursively_and_lists_keep_their_order() {
        let raw = br#"{"b":1,"a":{"z":true,"B":null,"a":[3,1,2]},"A":"x","_":0}"#;
        // Byte order: "A" (0x41) < "_" (0x5f) < "a" < "b"; inside: "B" < "a" < "z".
        assert_eq!(
            normalize(raw).unwrap(),
            r#"{"A":"x","_":0,"a":{"B":null,"a":[3,1,2],"z":true},"b":1}"#
        );
    }

    #[test]
    fn empty_objects_become_empty_lists() {
        let raw = br#"{"locations": {}, "tip": null, "items": []}"#;
        assert_eq!(
            normalize(raw).unwrap(),
            r#"{"items":[],"locations":[],"tip":null}"#
        );
    }

    #[test]
    fn objects_keyed_zero_to_n_become_lists_in_index_order() {
        let raw =
            br#"{"m":{"1":"b","0":"a","2":"c"},"n":{"0":"a","2":"c"},"o":{"00":1},"p":{"1":1}}"#;
        // m: keys 0..2 → list by index; n: a gap → object; o: "00" is not an index; p: no "0".
        assert_eq!(
            normalize(raw).unwrap(),
            r#"{"m":["a","b","c"],"n":{"0":"a","2":"c"},"o":{"00":1},"p":{"1":1}}"#
        );
    }

    #[test]
    fn slashes_and_unicode_are_not_escaped() {
        let raw = br#"{"url":"https:\/\/sandbox-paymentlink.singapay.id\/pay","name":"Caf\u00e9 \ud83d\ude00","q":"a\"b\\c\n"}"#;
        assert_eq!(
            normalize(raw).unwrap(),
            "{\"name\":\"Café 😀\",\"q\":\"a\\\"b\\\\c\\n\",\"url\":\"https://sandbox-paymentlink.singapay.id/pay\"}"
        );
    }

    #[test]
    fn control_characters_and_line_separators_stay_escaped() {
        let raw = br#"{"s":"\u0001\t\u2028"}"#;
        assert_eq!(normalize(raw).unwrap(), r#"{"s":"\u0001\t\u2028"}"#);
    }

    #[test]
    fn numbers_keep_their_text_for_integers_and_amount_strings() {
        let raw =
            br#"{"amount":{"value":"10000.00","currency":"IDR"},"account_id":35,"max_usage":1}"#;
        assert_eq!(
            normalize(raw).unwrap(),
            r#"{"account_id":35,"amount":{"currency":"IDR","value":"10000.00"},"max_usage":1}"#
        );
    }

    #[test]
    fn floats_are_written_as_php_writes_them() {
        // What PHP 8.2 printed for this body through tests/fixtures/php_normalize.php.
        let raw = br#"[10.0,1.5,0.1,1e25,1e-5,0.0001,1e15,1e16,1e17,1e18,-2.5e-7,12345678901234567890,-1.958338163258906e+241,-0.0,0.00012,123456789.125]"#;
        assert_eq!(
            normalize(raw).unwrap(),
            "[10,1.5,0.1,1.0e+25,1.0e-5,0.0001,1000000000000000,10000000000000000,1.0e+17,1.0e+18,\
             -2.5e-7,1.2345678901234567e+19,-1.958338163258906e+241,-0,0.00012,123456789.125]"
        );
        assert_eq!(php_float(-0.0), "-0");
        assert_eq!(php_float(125000.5), "125000.5");
    }

    #[test]
    fn not_json_has_no_normalised_form() {
        assert_eq!(normalize(b"VA Payment Notification testing"), None);
        assert_eq!(normalize(b""), None);
    }

    fn verifier(keys: &[&str]) -> Verifier {
        Verifier::new(
            "/singapay/webhook?src=pl".into(),
            keys.iter()
                .map(|k| SecretString::from(k.to_string()))
                .collect(),
            std::time::Duration::from_secs(300),
        )
    }

    const NOW: i64 = 1_762_742_798; // 2025-11-10T02:46:38Z = "10 Nov 2025 09:46:38" WIB

    /// The signature over `hashed` (the normalised or the raw body) at `ts`.
    fn signed(key: &str, ts: i64, hashed: &[u8]) -> String {
        sign(
            key,
            &string_to_sign(
                "/singapay/webhook?src=pl",
                "random-token-from-singapay",
                &sha256_hex(hashed),
                &ts.to_string(),
            ),
        )
    }

    fn request<'a>(sig: &'a str, ts: &'a str, body: &'a [u8]) -> SignedRequest<'a> {
        SignedRequest {
            signature: Some(sig),
            timestamp: Some(ts),
            authorization: Some("Bearer random-token-from-singapay"),
            body,
        }
    }

    #[test]
    fn the_string_to_sign_follows_the_formula() {
        assert_eq!(
            string_to_sign("/hook?a=1", "tok", "ab12", "1700000000"),
            "POST:/hook?a=1:tok:ab12:1700000000"
        );
        // HMAC-SHA512 is 64 bytes: 128 hex characters.
        assert_eq!(sign("k", "m").len(), 128);
    }

    #[test]
    fn a_body_signed_over_its_normalised_form_verifies_with_any_candidate_key() {
        let body = br#"{"event":"payment-link-transaction","data":{"locations":{},"url":"a\/b"}}"#;
        let norm = normalize(body).unwrap();
        assert_eq!(
            norm,
            r#"{"data":{"locations":[],"url":"a/b"},"event":"payment-link-transaction"}"#
        );
        let sig = signed("second-secret", NOW, norm.as_bytes());
        let now = DateTime::from_timestamp(NOW + 10, 0).unwrap();
        let v = verifier(&["first-secret", "second-secret"]);
        let ok = v
            .verify(request(&sig, &NOW.to_string(), body), now)
            .unwrap();
        assert_eq!(
            ok,
            Verified {
                key: 1,
                normalized: true
            }
        );
        // Upper-case hex is accepted too (LV lowercases first).
        let upper = sig.to_ascii_uppercase();
        assert!(
            v.verify(request(&upper, &NOW.to_string(), body), now)
                .is_ok()
        );
    }

    #[test]
    fn a_body_signed_over_its_raw_bytes_verifies_as_the_second_candidate() {
        let body = br#"{"b":1,"a":2}"#;
        let sig = signed("k", NOW, body);
        let now = DateTime::from_timestamp(NOW, 0).unwrap();
        let ok = verifier(&["k"])
            .verify(request(&sig, &NOW.to_string(), body), now)
            .unwrap();
        assert!(!ok.normalized);
    }

    #[test]
    fn every_failure_is_its_own_rejection() {
        let body = br#"{"a":1}"#;
        let sig = signed("k", NOW, normalize(body).unwrap().as_bytes());
        let ts = NOW.to_string();
        let now = DateTime::from_timestamp(NOW, 0).unwrap();
        let v = verifier(&["k"]);
        let mut unsigned = request(&sig, &ts, body);
        unsigned.signature = None;
        assert_eq!(v.verify(unsigned, now), Err(Rejection::Unsigned));
        assert_eq!(
            v.verify(request("abc", &ts, body), now),
            Err(Rejection::MalformedSignature)
        );
        assert_eq!(
            v.verify(request(&sig, "10 Nov 2025", body), now),
            Err(Rejection::BadTimestamp)
        );
        let late = DateTime::from_timestamp(NOW + 301, 0).unwrap();
        assert_eq!(
            v.verify(request(&sig, &ts, body), late),
            Err(Rejection::Stale(-301))
        );
        let mut no_token = request(&sig, &ts, body);
        no_token.authorization = Some("Basic abc");
        assert_eq!(v.verify(no_token, now), Err(Rejection::NoToken));
        assert_eq!(
            v.verify(request(&sig, &ts, br#"{"a":2}"#), now),
            Err(Rejection::Mismatch)
        );
        assert_eq!(
            verifier(&["other"]).verify(request(&sig, &ts, body), now),
            Err(Rejection::Mismatch)
        );
        // Another endpoint (a proxy that rewrote the path) does not verify.
        let moved = Verifier::new(
            "/singapay/webhook".into(),
            vec![SecretString::from("k".to_string())],
            std::time::Duration::from_secs(300),
        );
        assert_eq!(
            moved.verify(request(&sig, &ts, body), now),
            Err(Rejection::Mismatch)
        );
    }
}

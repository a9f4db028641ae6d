//! Standard Webhooks signing and verification (<https://www.standardwebhooks.com/>, spec
//! "Signature scheme"): headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` = `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; the secret is
//! `whsec_<base64 key>`. A leaf: the config parses secrets with it, the dispatcher signs with it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;

/// A webhook signing secret: the key bytes of a `whsec_<base64>` string. Never printed.
pub struct WebhookSecret(SecretBox<Vec<u8>>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret([REDACTED])")
    }
}

impl Clone for WebhookSecret {
    fn clone(&self) -> Self {
        Self(SecretBox::new(Box::new(self.0.expose_secret().clone())))
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>` (the prefix is optional, as the spec's libraries accept).
    /// Errors when the rest is not base64 or the key is empty.
    pub fn parse(s: &str) -> Result<Self, String> {
        let b64 = s.trim().strip_prefix("whsec_").unwrap_or(s.trim());
        let key = B64
            .decode(b64)
            .map_err(|e| format!("webhook secret is not whsec_<base64>: {e}"))?;
        if key.is_empty() {
            return Err("webhook secret is empty".into());
        }
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    /// The key's length in bytes.
    pub fn key_len(&self) -> usize {
        self.0.expose_secret().len()
    }

    /// A random 32-byte secret in `whsec_` form (for the demo and tests).
    pub fn generate() -> (Self, String) {
        let key: [u8; 32] = rand::random();
        let text = format!("whsec_{}", B64.encode(key));
        (Self(SecretBox::new(Box::new(key.to_vec()))), text)
    }

    /// The HMAC over the spec's signed content, `{id}.{timestamp}.{body}`.
    fn mac_of(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.0.expose_secret()) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// `v1,<base64 signature>` for one message.
pub fn sign(secret: &WebhookSecret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = secret.mac_of(msg_id, timestamp, body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header is missing or unreadable.
    #[error("missing or invalid header {0}")]
    Header(&'static str),
    /// The timestamp is outside the tolerance.
    #[error("timestamp too far from now")]
    Stale,
    /// No `v1` signature matches.
    #[error("no matching signature")]
    Mismatch,
}

/// Verifies a delivery as a receiver would: the timestamp within `tolerance_secs` of `now_unix`,
/// and one of the space-separated `v1,` signatures matching (constant-time comparison).
pub fn verify(
    secret: &WebhookSecret,
    msg_id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now_unix: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let id = msg_id.ok_or(VerifyError::Header("webhook-id"))?;
    let ts: i64 = timestamp
        .and_then(|t| t.trim().parse().ok())
        .ok_or(VerifyError::Header("webhook-timestamp"))?;
    let sigs = signatures.ok_or(VerifyError::Header("webhook-signature"))?;
    if (now_unix - ts).abs() > tolerance_secs {
        return Err(VerifyError::Stale);
    }
    for sig in sigs.split(' ') {
        let Some(b64) = sig.strip_prefix("v1,") else {
            continue;
        };
        let Ok(given) = B64.decode(b64) else {
            continue;
        };
        if secret.mac_of(id, ts, body).verify_slice(&given).is_ok() {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_spec_vector() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn verify_accepts_the_vector_and_refuses_tampering() {
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let ok = verify(
            &secret,
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some("v1,bm9ldmVu v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            body,
            1614265330 + 10,
            300,
        );
        assert_eq!(ok, Ok(()));
        let tampered = verify(
            &secret,
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            br#"{"test": 2432232315}"#,
            1614265330,
            300,
        );
        assert_eq!(tampered, Err(VerifyError::Mismatch));
        let stale = verify(
            &secret,
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek"),
            Some("1614265330"),
            Some("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="),
            body,
            1614265330 + 301,
            300,
        );
        assert_eq!(stale, Err(VerifyError::Stale));
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert_eq!(format!("{secret:?}"), "WebhookSecret([REDACTED])");
    }
}

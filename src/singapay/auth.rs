//! SingaPay access token: the v1.1 signature and a cache refreshed before expiry.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha512;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::time::jakarta_yyyymmdd;

/// The `X-Signature` of the token request: lowercase hex HMAC-SHA512 keyed with `client_secret`
/// over `{client_id}_{client_secret}_{YYYYMMDD}`, where the date is the **Asia/Jakarta** calendar
/// day of `now` (SP-TOKEN; LV and LG use the Jakarta day, and LV saw a UTC date refused between
/// 00:00 and 07:00 WIB; tags: docs/ARCHITECTURE.md, "Sources").
pub fn token_signature(
    client_id: &str,
    client_secret: &SecretString,
    now: DateTime<Utc>,
) -> String {
    token_signature_for_date(client_id, client_secret, &jakarta_yyyymmdd(now))
}

/// [`token_signature`] for an explicit `YYYYMMDD` date (the sandbox checks with it).
pub fn token_signature_for_date(
    client_id: &str,
    client_secret: &SecretString,
    yyyymmdd: &str,
) -> String {
    let secret = client_secret.expose_secret();
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha512>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(format!("{client_id}_{secret}_{yyyymmdd}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// How long to trust a token that SingaPay says lives `expires_in` seconds: until 5 minutes
/// before expiry (as LG does), or 10% early for short tokens, never less than 10 s. An absent
/// or nonsensical `expires_in` is treated as one hour (LG's fallback).
///
/// A lifetime over 30 days is taken as 30 days (SingaPay's are 60 hours; a number that large is a
/// defect, and the deadline must stay representable).
pub fn usable_lifetime(expires_in: Option<u64>) -> Duration {
    let secs = match expires_in {
        Some(s) if s > 0 => s.min(30 * 86_400),
        _ => 3600,
    };
    let margin = (secs / 10).min(300);
    Duration::from_secs(secs.saturating_sub(margin).max(10))
}

/// A cached access token.
#[derive(Clone)]
pub struct CachedToken {
    /// The bearer token.
    pub token: SecretString,
    /// When to fetch a new one (monotonic clock).
    pub refresh_at: Instant,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &"[REDACTED]")
            .field("refresh_at", &self.refresh_at)
            .finish()
    }
}

/// The token cache: one token shared by every request of a client; a single fetch at a time.
#[derive(Debug, Default)]
pub struct TokenCache {
    inner: Mutex<Option<CachedToken>>,
}

impl TokenCache {
    /// The cached token if still fresh, else the result of `fetch` (which is then cached).
    /// `stale` is a token the caller saw refused (401/`SP013`): if it is still the cached one it is
    /// dropped, so that concurrent callers refresh once, not once each.
    pub async fn get_or_fetch<F, Fut, E>(
        &self,
        stale: Option<&SecretString>,
        fetch: F,
    ) -> Result<SecretString, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken, E>>,
    {
        let mut guard = self.inner.lock().await;
        if let (Some(bad), Some(cur)) = (stale, guard.as_ref())
            && bad.expose_secret() == cur.token.expose_secret()
        {
            *guard = None;
        }
        if let Some(cur) = guard.as_ref()
            && Instant::now() < cur.refresh_at
        {
            return Ok(cur.token.clone());
        }
        let fresh = fetch().await?;
        let token = fresh.token.clone();
        *guard = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token.
    pub async fn clear(&self) {
        *self.inner.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        SecretString::from("sandbox-client-secret")
    }
    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    const VECTOR: &str = "f899c2d0657641928cdf91f2fc460547329b73223a4000b642416a0b4f226c1d978b5b38c1647e7c9705761d697af29a9dc8aa05bc00bfd99ba2a5c76aa88b4b";

    #[test]
    fn signature_matches_the_design_test_vector() {
        assert_eq!(
            token_signature_for_date("sandbox-client-id", &secret(), "20251021"),
            VECTOR
        );
    }

    #[test]
    fn signature_uses_the_jakarta_date_around_midnight_wib() {
        // 2025-10-20 17:00 UTC is 2025-10-21 00:00 WIB: already the 21st in Jakarta.
        assert_eq!(
            token_signature("sandbox-client-id", &secret(), utc("2025-10-20T17:00:00Z")),
            VECTOR
        );
        // 2025-10-21 06:59 UTC is still the 21st in Jakarta (and in UTC).
        assert_eq!(
            token_signature("sandbox-client-id", &secret(), utc("2025-10-21T06:59:00Z")),
            VECTOR
        );
        // 2025-10-20 16:59:59 UTC is 23:59:59 WIB on the 20th: the 20th's signature.
        assert_ne!(
            token_signature("sandbox-client-id", &secret(), utc("2025-10-20T16:59:59Z")),
            VECTOR
        );
        // 2025-10-21 17:00 UTC is the 22nd in Jakarta although UTC still says the 21st.
        assert_ne!(
            token_signature("sandbox-client-id", &secret(), utc("2025-10-21T17:00:00Z")),
            VECTOR
        );
        assert_eq!(VECTOR.len(), 128);
    }

    #[test]
    fn lifetime_refreshes_early_and_falls_back_to_an_hour() {
        assert_eq!(usable_lifetime(Some(216_000)), Duration::from_secs(215_700));
        assert_eq!(usable_lifetime(Some(3600)), Duration::from_secs(3300));
        assert_eq!(usable_lifetime(Some(60)), Duration::from_secs(54));
        assert_eq!(usable_lifetime(None), Duration::from_secs(3300));
        assert_eq!(usable_lifetime(Some(0)), Duration::from_secs(3300));
        assert_eq!(
            usable_lifetime(Some(u64::MAX)),
            Duration::from_secs(30 * 86_400 - 300)
        );
        assert!(
            Instant::now()
                .checked_add(usable_lifetime(Some(u64::MAX)))
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_refetched_once() {
        let cache = TokenCache::default();
        let mk = |t: &str| CachedToken {
            token: SecretString::from(t.to_string()),
            refresh_at: Instant::now() + Duration::from_secs(60),
        };
        let a = cache
            .get_or_fetch(None, || async { Ok::<_, ()>(mk("a")) })
            .await
            .unwrap();
        assert_eq!(a.expose_secret(), "a");
        let again = cache
            .get_or_fetch(None, || async { Ok::<_, ()>(mk("never")) })
            .await
            .unwrap();
        assert_eq!(again.expose_secret(), "a");
        let b = cache
            .get_or_fetch(Some(&a), || async { Ok::<_, ()>(mk("b")) })
            .await
            .unwrap();
        assert_eq!(b.expose_secret(), "b");
        // A second caller still holding "a" does not throw "b" away.
        let still_b = cache
            .get_or_fetch(Some(&a), || async { Ok::<_, ()>(mk("c")) })
            .await
            .unwrap();
        assert_eq!(still_b.expose_secret(), "b");
    }
}

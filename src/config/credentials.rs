//! `[[credentials]]`: several merchants' SingaPay credentials in one daemon (DESIGN §16), beside
//! the default `[singapay]` one; an `[[accounts]]` entry names its `credential`.

use secrecy::SecretString;
use url::Url;

use super::fields::{Problems, http_url, required, secret};
use super::raw::RawCredential;
use super::{AccountConfig, SingapayConfig};
use crate::singapay::{ClientConfig, SingapayClient, SingapayError};

/// One `[[credentials]]` entry: a merchant's SingaPay API credential.
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    /// Unique name, named by `accounts[].credential` (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// API host (default: `singapay.base_url`).
    pub base_url: Url,
    /// `X-PARTNER-ID`.
    pub partner_id: String,
    /// `X-CLIENT-ID`.
    pub client_id: String,
    /// Client secret (`client_secret` or `client_secret_file`).
    pub client_secret: SecretString,
}

impl CredentialConfig {
    /// The client settings of this credential: its own host and keys, `[singapay]`'s timeout and
    /// retries.
    pub fn client_config(&self, s: &SingapayConfig) -> ClientConfig {
        ClientConfig {
            base_url: self.base_url.clone(),
            partner_id: self.partner_id.clone(),
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            ..ClientConfig::from(s)
        }
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Validates `[[credentials]]`; `default_base_url` is `singapay.base_url`.
pub(super) fn validate(
    p: &mut Problems,
    raw: Vec<RawCredential>,
    default_base_url: &Url,
) -> Vec<CredentialConfig> {
    let mut out: Vec<CredentialConfig> = Vec::new();
    for (i, c) in raw.into_iter().enumerate() {
        let key = format!("credentials[{i}]");
        let name = required(p, &format!("{key}.name"), c.name);
        if !name.is_empty() && !valid_name(&name) {
            p.push(format!(
                "{key}.name must be 1 to 64 letters, digits, '-', '_' or '.'"
            ));
        } else if name == "default" {
            p.push(format!(
                "{key}.name \"default\" is the [singapay] credential's: choose another"
            ));
        } else if out.iter().any(|o| o.name == name) {
            p.push(format!("{key}.name is used twice"));
        }
        let base_url = match c.base_url {
            None => Some(default_base_url.clone()),
            Some(u) => http_url(
                p,
                &format!("{key}.base_url"),
                Some(&u),
                c.allow_insecure_http.unwrap_or(false),
            ),
        };
        let partner_id = required(p, &format!("{key}.partner_id"), c.partner_id);
        let client_id = required(p, &format!("{key}.client_id"), c.client_id);
        let client_secret = secret(
            p,
            &format!("{key}.client_secret"),
            c.client_secret,
            c.client_secret_file,
            true,
        );
        if let (Some(base_url), Some(client_secret)) = (base_url, client_secret) {
            out.push(CredentialConfig {
                name,
                base_url,
                partner_id,
                client_id,
                client_secret,
            });
        }
    }
    out
}

/// Checks that every `accounts[].credential` names an entry.
pub(super) fn check_accounts(
    p: &mut Problems,
    accounts: &[AccountConfig],
    credentials: &[CredentialConfig],
) {
    for (i, a) in accounts.iter().enumerate() {
        if let Some(c) = &a.credential
            && !credentials.iter().any(|k| &k.name == c)
        {
            let known: Vec<&str> = credentials.iter().map(|k| k.name.as_str()).collect();
            p.push(format!(
                "accounts[{i}].credential {c:?} is not a [[credentials]] name (known: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        }
    }
}

impl super::Config {
    /// The SingaPay client of this configuration: `[singapay]`'s credential for the accounts
    /// that name none (when given), each `[[credentials]]` entry for the accounts that name it;
    /// tokens cached per credential.
    ///
    /// Errors: the TLS stack cannot be initialised ([`SingapayError::Fatal`]).
    pub fn singapay_client(&self) -> Result<SingapayClient, SingapayError> {
        let default = self
            .singapay
            .has_credential()
            .then(|| ClientConfig::from(&self.singapay));
        let named = self
            .credentials
            .iter()
            .map(|c| (c.name.clone(), c.client_config(&self.singapay)))
            .collect();
        let accounts: Vec<_> = self
            .accounts
            .iter()
            .filter_map(|a| Some((a.id.clone(), a.credential.clone()?)))
            .collect();
        SingapayClient::with_credentials(default, named, &accounts)
    }

    /// Every client secret configured (`[singapay]`'s first, then each credential's): the
    /// candidate keys of SingaPay's webhook signatures beside `inbound.keys`.
    pub fn client_secrets(&self) -> Vec<SecretString> {
        let mut keys = Vec::new();
        if self.singapay.has_credential() {
            keys.push(self.singapay.client_secret.clone());
        }
        keys.extend(self.credentials.iter().map(|c| c.client_secret.clone()));
        keys
    }
}

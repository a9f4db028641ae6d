//! The envelope of every SingaPay answer: v1 `{"status","success","data","error":{code,message,
//! errors}}` and v2 `{"response_code","response_message"}` (SingaPay's response-code page:
//! docs/ARCHITECTURE.md, "Sources"), and the classified error of a non-success one.

use std::collections::BTreeMap;

use serde_json::Value;
use serde_json::value::RawValue;

use super::SingapayError;

/// The envelope fields of a v1 or v2 answer (SP-CODES).
#[derive(Debug, Default)]
pub(crate) struct Envelope<'a> {
    pub success: Option<bool>,
    pub response_code: Option<String>,
    pub message: Option<String>,
    pub code: Option<String>,
    pub data: Option<&'a RawValue>,
    pub pagination: Option<Value>,
    /// `error.errors` (v1 validation refusals: `{"field": ["why"]}`).
    pub fields: Option<Value>,
}

impl<'a> Envelope<'a> {
    /// Splits a body into envelope fields. Errors when the body is not a JSON object.
    pub(crate) fn parse(body: &'a str) -> Result<Envelope<'a>, String> {
        let m: BTreeMap<String, &'a RawValue> =
            serde_json::from_str(body).map_err(|e| format!("body is not a JSON object: {e}"))?;
        let mut env = Envelope {
            data: m.get("data").copied(),
            ..Default::default()
        };
        if let Some(r) = m.get("success") {
            env.success = serde_json::from_str::<bool>(r.get()).ok();
        }
        if let Some(r) = m.get("response_code") {
            env.response_code = serde_json::from_str::<String>(r.get()).ok();
        }
        if let Some(r) = m.get("response_message") {
            env.message = serde_json::from_str::<String>(r.get()).ok();
        }
        if let Some(r) = m.get("error")
            && let Ok(Value::Object(e)) = serde_json::from_str::<Value>(r.get())
        {
            env.message = e
                .get("message")
                .and_then(|v| v.as_str().map(str::to_owned))
                .or(env.message);
            env.code = e.get("code").map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            if let Some(errs) = e.get("errors") {
                env.fields = Some(errs.clone());
                let detail = errs.to_string();
                env.message = Some(match env.message {
                    Some(m) => format!("{m} {detail}"),
                    None => detail,
                });
            }
        }
        if let Some(r) = m.get("message")
            && env.message.is_none()
        {
            env.message = serde_json::from_str::<String>(r.get()).ok();
        }
        for key in ["pagination", "meta"] {
            if env.pagination.is_none()
                && let Some(r) = m.get(key)
            {
                env.pagination = serde_json::from_str::<Value>(r.get()).ok();
            }
        }
        Ok(env)
    }

    /// Whether the envelope reports success: `success == true`, or `response_code == "SP000"`, or
    /// neither key present (SP-CODES; LV saw both envelopes).
    pub(crate) fn is_success(&self) -> bool {
        match (&self.success, &self.response_code) {
            (Some(s), _) => *s,
            (None, Some(code)) => code == "SP000",
            (None, None) => true,
        }
    }

    /// Whether this is SingaPay's own refusal (`success: false`, or a v2 `response_code`), as
    /// opposed to some JSON a proxy or gateway answered with.
    pub(crate) fn is_refusal(&self) -> bool {
        self.success == Some(false) || self.response_code.is_some()
    }

    /// The SingaPay code to report: `response_code`, else the v1 `error.code`.
    pub(crate) fn sp_code(&self) -> Option<String> {
        self.response_code.clone().or_else(|| self.code.clone())
    }
}

/// The classified error for a non-success envelope (HTTP status wins over a 200 with an error
/// code).
pub(crate) fn envelope_error(http_status: u16, env: &Envelope<'_>) -> SingapayError {
    let code = env.sp_code();
    let status = if (200..300).contains(&http_status) {
        code.as_deref()
            .and_then(|c| c.parse::<u16>().ok())
            .filter(|s| (400..600).contains(s))
            .unwrap_or(http_status)
    } else {
        http_status
    };
    let message = env
        .message
        .clone()
        .unwrap_or_else(|| "no message".to_string());
    if status == 422
        && let Some(fields) = &env.fields
    {
        return SingapayError::Invalid {
            message,
            fields: fields.clone(),
        };
    }
    SingapayError::classify(status, code, message, None)
}

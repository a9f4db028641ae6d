//! The merchant's payment methods, `GET /api/v1.0/payment-link-manage/payment-methods`
//! (SingaPay's "get available payment method" page: docs/ARCHITECTURE.md, "Sources").

use serde::{Deserialize, Serialize};

use super::SingapayError;
use super::envelope::{Envelope, envelope_error};

/// A payment method from `GET /api/v1.0/payment-link-manage/payment-methods` (reference §3.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// Case-sensitive code, e.g. `VA_BRI`.
    pub code: String,
    /// Label, e.g. `VA BRI`.
    #[serde(default)]
    pub name: Option<String>,
    /// Group: `va`, `qris`, `ewallet`, `offline_store`, `card`.
    #[serde(default)]
    pub group: Option<String>,
}

/// Decodes the payment methods answer: `data.payment_methods[]` (reference §3.6).
pub fn decode_payment_methods(
    http_status: u16,
    body: &str,
) -> Result<Vec<PaymentMethod>, SingapayError> {
    let env = Envelope::parse(body).map_err(SingapayError::Malformed)?;
    if !env.is_success() {
        return Err(envelope_error(http_status, &env));
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(default)]
        payment_methods: Vec<PaymentMethod>,
    }
    let data = env
        .data
        .ok_or_else(|| SingapayError::Malformed("payment methods answer has no `data`".into()))?;
    serde_json::from_str::<Data>(data.get())
        .map(|d| d.payment_methods)
        .map_err(|e| SingapayError::Malformed(format!("payment methods: {e}")))
}

//! Payment webhooks signed the way the Standard Webhooks specification
//! signs (<https://www.standardwebhooks.com>): the provider sends
//! `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (space-separated `v1,<base64 HMAC-SHA256>` entries)
//! over `<id>.<timestamp>.<raw body>`, keyed by the secret's bytes (a
//! secret is written `whsec_<base64 bytes>`). Up to two secrets are
//! accepted at once, so a provider's secret can be rotated without a
//! window where deliveries fail.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of a secret's text form.
const SECRET_PREFIX: &str = "whsec_";

/// Most secrets accepted at once (the current one and the next).
pub const MAX_SECRETS: usize = 2;

/// A webhook signing secret: the key bytes behind `whsec_<base64>`.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`; the key must be 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("a webhook secret starts with {SECRET_PREFIX}"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "a webhook secret is whsec_ followed by base64".to_owned())?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!(
                "a webhook secret's key is 24 to 64 bytes, this one is {}",
                key.len()
            ));
        }
        Ok(Self(key))
    }

    /// The secret's text form, `whsec_<base64>`.
    pub fn to_text(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` value for this delivery (what a provider
    /// sends; the development payment path and the tests sign with it).
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// The three headers of one delivery, as received.
#[derive(Debug, Clone, Copy)]
pub struct SignedDelivery<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A header is missing or unreadable (400).
    #[error("{0}")]
    Malformed(&'static str),
    /// The timestamp is further from now than the tolerance (400): a
    /// replay of an old delivery, or a clock far off.
    #[error("webhook-timestamp is more than {tolerance_secs} s from the server's clock")]
    Stale { tolerance_secs: i64 },
    /// No signature matches any accepted secret (401).
    #[error("no webhook-signature matches a configured secret")]
    Mismatch,
}

/// Checks a delivery against the accepted secrets: its timestamp within
/// `tolerance_secs` of `now`, and one of its `v1` signatures the HMAC of
/// one secret (compared in constant time). Returns the event id.
pub fn verify<'a>(
    secrets: &[WebhookSecret],
    delivery: SignedDelivery<'a>,
    body: &[u8],
    now: DateTime<Utc>,
    tolerance_secs: i64,
) -> Result<&'a str, SignatureError> {
    let id = delivery
        .id
        .filter(|id| !id.is_empty() && id.len() <= 200)
        .ok_or(SignatureError::Malformed(
            "webhook-id is required (1 to 200 characters)",
        ))?;
    let timestamp: i64 = delivery
        .timestamp
        .and_then(|value| value.parse().ok())
        .ok_or(SignatureError::Malformed(
            "webhook-timestamp is required, in Unix seconds",
        ))?;
    if (now.timestamp() - timestamp).abs() > tolerance_secs {
        return Err(SignatureError::Stale { tolerance_secs });
    }
    let signatures = delivery.signature.ok_or(SignatureError::Malformed(
        "webhook-signature is required (v1,<base64>)",
    ))?;
    let tags: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|encoded| STANDARD.decode(encoded).ok())
        .collect();
    let matches = secrets.iter().any(|secret| {
        let mac = secret.mac(id, timestamp, body);
        tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok())
    });
    if matches {
        Ok(id)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(byte: u8) -> WebhookSecret {
        WebhookSecret(vec![byte; 32])
    }

    fn delivery<'a>(id: &'a str, timestamp: &'a str, signature: &'a str) -> SignedDelivery<'a> {
        SignedDelivery {
            id: Some(id),
            timestamp: Some(timestamp),
            signature: Some(signature),
        }
    }

    #[test]
    fn the_specifications_example_verifies() {
        // The worked example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            signature
        );
        let now = DateTime::from_timestamp(1614265330, 0).unwrap();
        let delivered = delivery("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", signature);
        assert_eq!(
            verify(&[secret], delivered, body, now, 300),
            Ok("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
    }

    #[test]
    fn the_worked_example_of_docs_api_md_verifies() {
        let secret =
            WebhookSecret::parse("whsec_Zmxhc2hzYWxlLXRlc3Qtd2ViaG9vay1zZWNyZXQtMDE=").unwrap();
        let body = br#"{"type":"payment.succeeded","data":{"order_id":"01936f4e-8c1a-7d2e-9b41-3f6a2c8d5e70","amount":4999,"currency":"EUR"}}"#;
        let signature = "v1,OlYtNPif6vM+7PDZ0Hj24PRg3VQDu4S5bNIeuGPcqFM=";
        assert_eq!(secret.sign("evt_2J5uQmZ", 1796150000, body), signature);
        let docs = include_str!("../../docs/api.md");
        assert!(docs.contains(signature) && docs.contains("evt_2J5uQmZ.1796150000."));
    }

    #[test]
    fn a_tampered_body_a_wrong_secret_or_a_stale_timestamp_is_refused() {
        let now = Utc::now();
        let stamp = now.timestamp().to_string();
        let signature = secret(1).sign("evt_1", now.timestamp(), b"{}");
        let signed = delivery("evt_1", &stamp, &signature);
        assert!(verify(&[secret(1)], signed, b"{}", now, 300).is_ok());
        assert_eq!(
            verify(&[secret(1)], signed, b"{ }", now, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(&[secret(2)], signed, b"{}", now, 300),
            Err(SignatureError::Mismatch)
        );
        let other_id = delivery("evt_2", &stamp, &signature);
        assert_eq!(
            verify(&[secret(1)], other_id, b"{}", now, 300),
            Err(SignatureError::Mismatch)
        );
        let later = now + chrono::Duration::seconds(301);
        assert_eq!(
            verify(&[secret(1)], signed, b"{}", later, 300),
            Err(SignatureError::Stale {
                tolerance_secs: 300
            })
        );
    }

    #[test]
    fn either_of_two_secrets_verifies_during_a_rotation() {
        let now = Utc::now();
        let stamp = now.timestamp().to_string();
        let old = secret(1).sign("evt_1", now.timestamp(), b"{}");
        let new = secret(2).sign("evt_1", now.timestamp(), b"{}");
        let both = [secret(1), secret(2)];
        assert!(verify(&both, delivery("evt_1", &stamp, &old), b"{}", now, 300).is_ok());
        assert!(verify(&both, delivery("evt_1", &stamp, &new), b"{}", now, 300).is_ok());
        // A provider mid-rotation sends both signatures; one match is enough.
        let pair = format!("v1,bm90IGl0 {new}");
        assert!(
            verify(
                &[secret(2)],
                delivery("evt_1", &stamp, &pair),
                b"{}",
                now,
                300
            )
            .is_ok()
        );
    }

    #[test]
    fn missing_or_unreadable_headers_are_malformed() {
        let now = Utc::now();
        let stamp = now.timestamp().to_string();
        let none = SignedDelivery {
            id: None,
            timestamp: Some(&stamp),
            signature: Some("v1,x"),
        };
        assert!(matches!(
            verify(&[secret(1)], none, b"", now, 300),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(
                &[secret(1)],
                delivery("evt", "yesterday", "v1,x"),
                b"",
                now,
                300
            ),
            Err(SignatureError::Malformed(_))
        ));
        assert_eq!(
            verify(
                &[secret(1)],
                delivery("evt", &stamp, "v2,abc"),
                b"",
                now,
                300
            ),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn secrets_parse_only_in_their_text_form() {
        let text = secret(7).to_text();
        assert_eq!(WebhookSecret::parse(&text).unwrap().0, vec![7; 32]);
        assert!(WebhookSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(
            WebhookSecret::parse("whsec_c2hvcnQ=").is_err(),
            "a 5-byte key"
        );
    }
}

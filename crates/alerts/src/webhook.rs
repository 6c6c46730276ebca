//! Outbound webhooks: which alert changes go to which endpoint, how a delivery is signed,
//! and how long to wait before trying a failed one again.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::routing::{category_matches, check_category_pattern};

/// Attempts after which a delivery is given up (it stays listed, and can be replayed).
pub const MAX_ATTEMPTS: u32 = 10;

/// An endpoint told of alert changes, for a unit's alerts or a category's, or both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Set when stored.
    #[serde(default)]
    pub id: String,
    /// `https://…` (or `http://…`) endpoint that receives a JSON POST per change.
    pub url: String,
    /// Shared secret for the `X-Cityward-Signature` HMAC; never shown back.
    #[serde(default, skip_serializing)]
    pub secret: String,
    /// Only alerts this unit has (owner, candidate, escalated to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Only alerts of this category (`fire.smoke`, `fire.*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Off: changes are not queued for it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who set it up (set by the server).
    #[serde(default)]
    pub owner: String,
}

fn yes() -> bool {
    true
}

impl Webhook {
    /// Checks a new webhook; the message says what to fix.
    pub fn check(&self, unit_exists: impl Fn(&str) -> bool) -> Result<(), String> {
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or_else(|| format!("url `{}` must start with https:// or http://", self.url))?;
        if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
            return Err(format!("url `{}` has no host", self.url));
        }
        if self.secret.len() < 16 {
            return Err("`secret` must be at least 16 characters; the receiver checks each delivery's signature with it".into());
        }
        if self.unit.is_none() && self.category.is_none() {
            return Err("a webhook needs a `unit` or a `category` (or both) to say which alerts it gets".into());
        }
        if let Some(u) = &self.unit {
            if !unit_exists(u) {
                return Err(format!("unit `{u}` is not in the city's units.csv"));
            }
        }
        if let Some(c) = &self.category {
            check_category_pattern(c)?;
        }
        Ok(())
    }

    /// Whether a change of an alert of `category` that `units` have concerns this webhook.
    pub fn wants(&self, category: &str, units: &[&str]) -> bool {
        self.enabled
            && self.unit.as_deref().is_none_or(|u| units.contains(&u))
            && self.category.as_deref().is_none_or(|c| category_matches(c, category).is_some())
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

/// The `X-Cityward-Signature` of a delivery: `sha256=` and the hex HMAC-SHA256, under the
/// webhook's secret, of `{timestamp}.{body}` (`timestamp` is `X-Cityward-Timestamp`, Unix
/// seconds; a receiver refuses old timestamps to stop replays).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut message = format!("{timestamp}.").into_bytes();
    message.extend_from_slice(body);
    let mac = hmac_sha256(secret.as_bytes(), &message);
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// How long to wait after the `attempts`-th failed attempt: 2, 4, 8 … seconds, at most an
/// hour.
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(2u64.saturating_pow(attempts.min(12)).min(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test case 2 and test case 6 (a key longer than the block).
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac_sha256(&[0xaa; 131], b"Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        assert_eq!(signature("Jefe", 1, b"x"), format!("sha256={}", hex(&hmac_sha256(b"Jefe", b"1.x"))));
    }

    #[test]
    fn webhooks_take_the_changes_of_their_unit_and_category() {
        let mut w = Webhook {
            id: "w".into(),
            url: "http://127.0.0.1:9/hook".into(),
            secret: "0123456789abcdef".into(),
            unit: Some("unit-c1".into()),
            category: Some("fire.*".into()),
            enabled: true,
            owner: "admin".into(),
        };
        assert!(w.check(|u| u == "unit-c1").is_ok());
        assert!(w.wants("fire.smoke", &["unit-c1", "unit-s1"]));
        assert!(!w.wants("water.leak", &["unit-c1"]));
        assert!(!w.wants("fire.smoke", &["unit-c2"]));
        w.enabled = false;
        assert!(!w.wants("fire.smoke", &["unit-c1"]));
        let bad = |f: &dyn Fn(&mut Webhook)| {
            let mut b = w.clone();
            f(&mut b);
            b.check(|u| u == "unit-c1").unwrap_err()
        };
        assert!(bad(&|b| b.url = "ftp://x".into()).contains("https://"));
        assert!(bad(&|b| b.url = "https://".into()).contains("no host"));
        assert!(bad(&|b| b.url = "http:///x".into()).contains("no host"));
        assert!(bad(&|b| b.secret = "short".into()).contains("16 characters"));
        assert!(bad(&|b| b.unit = Some("unit-x".into())).contains("unit-x"));
        assert!(bad(&|b| {
            b.unit = None;
            b.category = None
        })
        .contains("needs a `unit` or a `category`"));
        assert_eq!((backoff(1), backoff(5), backoff(40)), (Duration::from_secs(2), Duration::from_secs(32), Duration::from_secs(3600)));
    }
}

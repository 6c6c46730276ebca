//! The webhook sender: posts queued deliveries (one alert change for one endpoint, queued
//! in the state store by the desk), signed with the webhook's secret, retrying failures
//! with backoff, recording every attempt. It runs apart from detection and the desk, so a
//! slow or dead endpoint only delays its own deliveries.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cityward_store::{Delivery, DeliveryAttempt};

use crate::desk::Desk;
use crate::NodeError;

/// Deliveries posted at once.
const PARALLEL: usize = 8;
/// How long an endpoint has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The HTTP client deliveries go out with: statuses are answers (not errors), every request
/// has [`TIMEOUT`], and `https://` certificates are checked against the built-in Mozilla
/// roots, or only the CAs of `alerts.webhook_ca_file` when it is set.
pub(crate) fn agent(ca_file: Option<&Path>) -> Result<ureq::Agent, NodeError> {
    let mut config = ureq::config::Config::builder().http_status_as_error(false).timeout_global(Some(TIMEOUT));
    if let Some(path) = ca_file {
        let fail = |why: String| {
            NodeError::Invalid(format!("alerts.webhook_ca_file `{}` {why}; give a PEM file of CA certificates", path.display()))
        };
        let pem = std::fs::read(path).map_err(|e| fail(format!("cannot be read ({e})")))?;
        let mut roots = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            // A private key next to the certificates is not a root: skipped.
            if let ureq::tls::PemItem::Certificate(cert) = item.map_err(|e| fail(format!("is not valid PEM ({e})")))? {
                roots.push(cert);
            }
        }
        if roots.is_empty() {
            return Err(fail("holds no certificate".into()));
        }
        let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&roots)).build();
        config = config.tls_config(tls);
    }
    Ok(ureq::Agent::new_with_config(config.build()))
}

/// Runs the sender until the node stops.
pub(crate) async fn run(desk: Arc<Desk>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let d = desk.clone();
        let due = match tokio::task::spawn_blocking(move || d.state().due_deliveries(Utc::now(), PARALLEL * 4)).await {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "Due webhook deliveries could not be read.");
                continue;
            }
            Err(_) => continue,
        };
        for chunk in due.chunks(PARALLEL) {
            let mut set = tokio::task::JoinSet::new();
            for delivery in chunk.iter().cloned() {
                let desk = desk.clone();
                set.spawn_blocking(move || deliver(&desk, delivery));
            }
            while set.join_next().await.is_some() {}
        }
    }
}

/// One attempt at one delivery, recorded.
fn deliver(desk: &Desk, delivery: Delivery) {
    let now = Utc::now();
    let attempt = match desk.webhook(&delivery.webhook) {
        None => DeliveryAttempt {
            at: now,
            delivered: false,
            status: None,
            error: Some("the webhook was removed".into()),
            retry_at: None,
        },
        Some(hook) => {
            let body = serde_json::to_vec(&delivery.payload).unwrap_or_default();
            let timestamp = now.timestamp();
            let result = desk
                .webhook_agent()
                .post(&hook.url)
                .header("Content-Type", "application/json")
                .header("User-Agent", "cityward-webhooks")
                .header("X-Cityward-Delivery", delivery.id.to_string())
                .header("X-Cityward-Timestamp", timestamp.to_string())
                .header("X-Cityward-Signature", cityward_alerts::signature(&hook.secret, timestamp, &body))
                .send(&body[..]);
            let (status, error) = match result {
                Ok(r) if r.status().is_success() => (Some(r.status().as_u16()), None),
                Ok(r) => (Some(r.status().as_u16()), Some(format!("the endpoint answered {}", r.status()))),
                Err(e) => (None, Some(format!("no answer: {e}"))),
            };
            let attempts = delivery.attempts + 1;
            let retry_at = (error.is_some() && attempts < cityward_alerts::MAX_ATTEMPTS)
                .then(|| now + chrono::Duration::from_std(cityward_alerts::backoff(attempts)).unwrap_or_default());
            if let Some(e) = &error {
                tracing::warn!(delivery = delivery.id, webhook = %hook.id, attempts, error = %e, given_up = retry_at.is_none(), "Webhook delivery failed.");
            }
            DeliveryAttempt { at: now, delivered: error.is_none(), status, error, retry_at }
        }
    };
    let outcome = if attempt.delivered { "delivered" } else if attempt.retry_at.is_some() { "retry" } else { "failed" };
    desk.metrics().add("cityward_alerts_webhook_attempts_total", &[("outcome", outcome)], 1.0);
    if let Err(e) = desk.state().record_delivery_attempt(delivery.id, &attempt) {
        tracing::error!(delivery = delivery.id, error = %e, "Webhook delivery attempt could not be recorded.");
    }
}

//! The MQTT subscriber: subscribes to the configured topics, maps each payload with its
//! topic's [`TopicMapping`], and feeds the records into the same pipeline as HTTP.
//!
//! QoS 1 messages are acknowledged to the broker only after their batch is in the fsync'd
//! WAL (manual acks), so a node killed mid-flow gets them again from the broker; ids make
//! the redelivery harmless. The session is persistent (`clean_session = false`) so messages
//! published while the node restarts are kept by the broker.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cityward_ingest::{topic_matches, MqttConfig};
use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

use crate::node::{Channel, Node};

/// Runs the subscriber until the process stops. Connection failures are logged and retried.
pub async fn run(node: Arc<Node>, config: MqttConfig) {
    let mut options = MqttOptions::new(&config.client_id, &config.host, config.port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_clean_session(false);
    options.set_manual_acks(true);
    options.set_max_packet_size(1 << 20, 1 << 20);
    if let (Some(user), Some(pass)) = (&config.username, &config.password) {
        options.set_credentials(user, pass);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    let (tx, rx) = mpsc::channel::<Publish>(8192);
    tokio::spawn(process(node.clone(), config.clone(), client.clone(), rx));
    let metrics = node.metrics().clone();
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::ConnAck(ack))) => {
                metrics.set("cityward_mqtt_connected", &[], 1.0);
                tracing::info!(host = %config.host, port = config.port, session_present = ack.session_present, "Connected to the MQTT broker.");
                for topic in &config.topics {
                    let qos = if topic.qos == 0 {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    if let Err(e) = client.subscribe(&topic.filter, qos).await {
                        tracing::error!(filter = %topic.filter, error = %e, "Could not subscribe.");
                    }
                }
            }
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) => {
                if tx.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics.set("cityward_mqtt_connected", &[], 0.0);
                tracing::warn!(host = %config.host, port = config.port, error = %e,
                    "MQTT connection lost; retrying in 1 s. Check that the broker is running and mqtt.host/port are right.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Takes messages in batches (whatever has arrived), stores them, then acknowledges them.
async fn process(
    node: Arc<Node>,
    config: MqttConfig,
    client: AsyncClient,
    mut rx: mpsc::Receiver<Publish>,
) {
    let mut batch: Vec<Publish> = Vec::with_capacity(1024);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 4096 {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        node.metrics()
            .add("cityward_mqtt_messages_total", &[], batch.len() as f64);
        let now = Utc::now();
        let mut records = Vec::with_capacity(batch.len());
        for (i, publish) in batch.iter().enumerate() {
            let line = i as u64 + 1;
            match config
                .topics
                .iter()
                .find(|t| topic_matches(&t.filter, &publish.topic))
            {
                Some(mapping) => {
                    for record in mapping.map(&publish.topic, &publish.payload, now) {
                        records.push((line, record.map_err(|reason| (reason, raw(publish)))));
                    }
                }
                None => records.push((
                    line,
                    Err((
                        format!("no mapping matches topic `{}`", publish.topic),
                        raw(publish),
                    )),
                )),
            }
        }
        let origin = batch.first().map(|p| p.topic.clone()).unwrap_or_default();
        match node.ingest_values(records, Channel::Mqtt, &origin).await {
            Ok(outcome) => {
                if !outcome.rejected.is_empty() {
                    tracing::warn!(rejected = outcome.rejected.len(), first = %outcome.rejected[0].reason, "MQTT records refused; see GET /api/v1/deadletter.");
                }
                for publish in batch.drain(..) {
                    if let Err(e) = client.ack(&publish).await {
                        tracing::warn!(error = %e, "Could not acknowledge an MQTT message; the broker will send it again.");
                    }
                }
            }
            Err(e) => {
                // Not stored: do not acknowledge, so the broker redelivers after reconnecting.
                tracing::error!(error = %e, messages = batch.len(), "MQTT batch not stored; it will be redelivered.");
                batch.clear();
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

fn raw(publish: &Publish) -> String {
    String::from_utf8_lossy(&publish.payload[..publish.payload.len().min(64 * 1024)]).into_owned()
}

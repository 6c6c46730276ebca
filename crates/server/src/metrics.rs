//! The node's counters and gauges, rendered in the Prometheus text format at `/metrics`.
//!
//! Names follow `cityward_<subsystem>_<name>_<unit>` (`_total` for counters). Label values
//! come from small fixed sets (channels, declared kinds, reject codes), so the number of
//! series stays bounded whatever the input. Hot paths add per batch, not per event.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

/// One metric family: its help text and type.
struct Family {
    help: &'static str,
    kind: &'static str,
}

const FAMILIES: &[(&str, Family)] = &[
    (
        "cityward_ingest_events_received_total",
        Family {
            help: "Records received, by channel.",
            kind: "counter",
        },
    ),
    (
        "cityward_ingest_events_accepted_total",
        Family {
            help: "Events written to the WAL, by channel and kind.",
            kind: "counter",
        },
    ),
    (
        "cityward_ingest_events_rejected_total",
        Family {
            help: "Records refused, by channel and reason.",
            kind: "counter",
        },
    ),
    (
        "cityward_ingest_events_duplicate_total",
        Family {
            help: "Events whose id was already stored, by channel.",
            kind: "counter",
        },
    ),
    (
        "cityward_ingest_batches_total",
        Family {
            help: "Batches handled, by channel.",
            kind: "counter",
        },
    ),
    (
        "cityward_deadletter_records_total",
        Family {
            help: "Records written to the dead-letter store.",
            kind: "counter",
        },
    ),
    (
        "cityward_http_requests_total",
        Family {
            help: "HTTP requests, by route and status class.",
            kind: "counter",
        },
    ),
    (
        "cityward_mqtt_messages_total",
        Family {
            help: "MQTT messages received.",
            kind: "counter",
        },
    ),
    (
        "cityward_mqtt_connected",
        Family {
            help: "1 while the MQTT subscriber is connected.",
            kind: "gauge",
        },
    ),
    (
        "cityward_wal_written_bytes_total",
        Family {
            help: "Bytes appended to the WAL.",
            kind: "counter",
        },
    ),
    (
        "cityward_wal_records_total",
        Family {
            help: "Records appended to the WAL.",
            kind: "counter",
        },
    ),
    (
        "cityward_wal_fsyncs_total",
        Family {
            help: "fsync calls of the WAL writer.",
            kind: "counter",
        },
    ),
    (
        "cityward_wal_fsync_latency_last_microseconds",
        Family {
            help: "Latency of the last WAL fsync.",
            kind: "gauge",
        },
    ),
    (
        "cityward_wal_fsync_latency_max_microseconds",
        Family {
            help: "Largest WAL fsync latency since start.",
            kind: "gauge",
        },
    ),
    (
        "cityward_wal_fsync_latency_avg_microseconds",
        Family {
            help: "Mean WAL fsync latency since start.",
            kind: "gauge",
        },
    ),
    (
        "cityward_wal_disk_bytes",
        Family {
            help: "Bytes of WAL segments on disk.",
            kind: "gauge",
        },
    ),
    (
        "cityward_wal_segments",
        Family {
            help: "WAL segment files on disk.",
            kind: "gauge",
        },
    ),
    (
        "cityward_lake_files",
        Family {
            help: "Parquet files in the lake, by kind.",
            kind: "gauge",
        },
    ),
    (
        "cityward_lake_rows",
        Family {
            help: "Rows in the lake, by kind.",
            kind: "gauge",
        },
    ),
    (
        "cityward_lake_bytes",
        Family {
            help: "Bytes of Parquet in the lake, by kind.",
            kind: "gauge",
        },
    ),
    (
        "cityward_lake_compactions_total",
        Family {
            help: "WAL segments compacted into the lake.",
            kind: "counter",
        },
    ),
    (
        "cityward_lake_compaction_errors_total",
        Family {
            help: "Compaction attempts that failed.",
            kind: "counter",
        },
    ),
    (
        "cityward_lake_lag_records",
        Family {
            help: "Records in the WAL not yet compacted into the lake.",
            kind: "gauge",
        },
    ),
    (
        "cityward_lake_retention_deleted_rows_total",
        Family {
            help: "Rows deleted by retention.",
            kind: "counter",
        },
    ),
    (
        "cityward_state_retention_deleted_total",
        Family {
            help: "Alerts and audit entries deleted from the state store by retention, by table.",
            kind: "counter",
        },
    ),
    (
        "cityward_dedup_ids",
        Family {
            help: "Event ids remembered for duplicate detection.",
            kind: "gauge",
        },
    ),
    (
        "cityward_tier_queued_up_total",
        Family {
            help: "Alert changes and summaries stored in the outbox for the tier above.",
            kind: "counter",
        },
    ),
    (
        "cityward_tier_forwarded_up_total",
        Family {
            help: "Alert changes and summaries the tier above acknowledged.",
            kind: "counter",
        },
    ),
    (
        "cityward_tier_uplink_failures_total",
        Family {
            help: "Failed attempts to reach the tier above (each retried).",
            kind: "counter",
        },
    ),
    (
        "cityward_tier_outbox_failures_total",
        Family {
            help: "Appends to the outbox that failed (outbox full, or this node's NATS server unreachable).",
            kind: "counter",
        },
    ),
    (
        "cityward_tier_applied_from_below_total",
        Family {
            help: "Alert changes and summaries applied from the tiers below.",
            kind: "counter",
        },
    ),
    (
        "cityward_tier_applied_from_above_total",
        Family {
            help: "Rules, hotlists and alert changes applied from the tier above.",
            kind: "counter",
        },
    ),
    (
        "cityward_tier_lost_total",
        Family {
            help: "Changes that never reached the outbox or the downlink because the node's pipe to them was full.",
            kind: "counter",
        },
    ),
    (
        "cityward_tier_uplink_up",
        Family {
            help: "1 when the last attempt to reach the tier above succeeded.",
            kind: "gauge",
        },
    ),
    (
        "cityward_scale_partitions_held",
        Family {
            help: "Partitions of the node's event stream this process detects on ([scale]).",
            kind: "gauge",
        },
    ),
    (
        "cityward_scale_published_total",
        Family {
            help: "Events this process published to the node's partitioned event stream ([scale]).",
            kind: "counter",
        },
    ),
    (
        "cityward_scale_publish_failures_total",
        Family {
            help: "Failed attempts to publish to the node's event stream (the events wait in the WAL and are retried).",
            kind: "counter",
        },
    ),
    (
        "cityward_alerts_routed_total",
        Family {
            help: "New alerts routed to an owning unit and stored.",
            kind: "counter",
        },
    ),
    (
        "cityward_alerts_actions_total",
        Family {
            help: "Actions people took on alerts, by action.",
            kind: "counter",
        },
    ),
    (
        "cityward_alerts_deadline_missed_total",
        Family {
            help: "Missed alert deadlines, by what followed (escalate or retrigger).",
            kind: "counter",
        },
    ),
    (
        "cityward_alerts_webhook_attempts_total",
        Family {
            help: "Webhook delivery attempts, by outcome (delivered, retry, failed).",
            kind: "counter",
        },
    ),
    (
        "cityward_audit_failures_total",
        Family {
            help: "Audit entries that could not be written.",
            kind: "counter",
        },
    ),
    (
        "cityward_alerts_stream_clients_total",
        Family {
            help: "Live alert stream connections opened.",
            kind: "counter",
        },
    ),
    (
        "cityward_dispatch_positions_total",
        Family {
            help: "Responder positions taken from their devices' gps events.",
            kind: "counter",
        },
    ),
    (
        "cityward_dispatch_recommendations_total",
        Family {
            help: "Dispatch recommendations answered, by how the alert's place was measured (road or straight_line).",
            kind: "counter",
        },
    ),
    (
        "cityward_open311_requests_total",
        Family {
            help: "Open311 service requests posted, by outcome (created or refused).",
            kind: "counter",
        },
    ),
    (
        "cityward_detect_events_total",
        Family {
            help: "Events the rule engine applied (from the bus or read back from the WAL).",
            kind: "counter",
        },
    ),
    (
        "cityward_detect_alerts_raised_total",
        Family {
            help: "Alerts the rule engine raised and stored.",
            kind: "counter",
        },
    ),
    (
        "cityward_detect_late_events",
        Family {
            help: "Events that arrived behind the watermark (counted, reported, not applied to windows or keyed state).",
            kind: "gauge",
        },
    ),
    (
        "cityward_detect_timers",
        Family {
            help: "Timers pending in the rule engine (absence, dwell, not-followed, threshold durations).",
            kind: "gauge",
        },
    ),
    (
        "cityward_detect_checkpoint_pause_seconds",
        Family {
            help: "How long taking the last checkpoint held the rule engine (writing it happens on another thread).",
            kind: "gauge",
        },
    ),
    (
        "cityward_detect_watermark_lag_seconds",
        Family {
            help: "How far the engine's watermark is behind the clock.",
            kind: "gauge",
        },
    ),
];

/// All metrics of a node.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<BTreeMap<(&'static str, String), f64>>,
}

impl Metrics {
    /// Adds `by` to a counter with the given labels (`[("kind", "gps")]`).
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], by: f64) {
        debug_assert!(
            FAMILIES.iter().any(|(n, _)| *n == name),
            "undeclared metric {name}"
        );
        let key = (name, render_labels(labels));
        *self
            .series
            .lock()
            .expect("metrics lock")
            .entry(key)
            .or_insert(0.0) += by;
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, labels: &[(&str, &str)], value: f64) {
        debug_assert!(
            FAMILIES.iter().any(|(n, _)| *n == name),
            "undeclared metric {name}"
        );
        self.series
            .lock()
            .expect("metrics lock")
            .insert((name, render_labels(labels)), value);
    }

    /// The current value of one series (for tests and the status page).
    pub fn get(&self, name: &'static str, labels: &[(&str, &str)]) -> f64 {
        let key = (name, render_labels(labels));
        self.series
            .lock()
            .expect("metrics lock")
            .get(&key)
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum over all series of a family.
    pub fn sum(&self, name: &'static str) -> f64 {
        // Folded from +0.0: an empty f64 sum would be -0.0 and print as such.
        self.series
            .lock()
            .expect("metrics lock")
            .iter()
            .filter(|((n, _), _)| *n == name)
            .fold(0.0, |acc, (_, v)| acc + v)
    }

    /// Renders every series in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let series = self.series.lock().expect("metrics lock");
        let mut out = String::with_capacity(8192);
        for (name, family) in FAMILIES {
            let _ = writeln!(out, "# HELP {name} {}", family.help);
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            let mut any = false;
            for ((_, labels), value) in series
                .range((*name, String::new())..)
                .take_while(|((n, _), _)| n == name)
            {
                any = true;
                let _ = writeln!(out, "{name}{labels} {value}");
            }
            if !any && family.kind == "counter" && !name.contains("_by_") {
                let _ = writeln!(out, "{name} 0");
            }
        }
        out
    }
}

fn render_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut out = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let escaped = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{escaped}\"");
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.add(
            "cityward_ingest_events_accepted_total",
            &[("channel", "http"), ("kind", "gps")],
            3.0,
        );
        m.add(
            "cityward_ingest_events_accepted_total",
            &[("channel", "http"), ("kind", "gps")],
            2.0,
        );
        m.set("cityward_wal_disk_bytes", &[], 1024.0);
        let text = m.render();
        assert!(text.contains("# TYPE cityward_ingest_events_accepted_total counter"));
        assert!(
            text.contains(
                "cityward_ingest_events_accepted_total{channel=\"http\",kind=\"gps\"} 5\n"
            ),
            "{text}"
        );
        assert!(text.contains("cityward_wal_disk_bytes 1024\n"));
        assert_eq!(m.sum("cityward_ingest_events_accepted_total"), 5.0);
    }
}

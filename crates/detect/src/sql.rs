//! `sql` rules: each row of the scheduled query's answer becomes an alert.

use chrono::{DateTime, Utc};
use cityward_model::parse_time;
use serde_json::{Map, Value};

use crate::alert::Alert;
use crate::rule::{fnv1a, Rule};

/// Turns the rows of a `sql` rule's query into alerts, one per row, the row as evidence.
///
/// Columns used when present: `key` (else the first column), `time` (else `now`), `lon`,
/// `lat`, `grid`, `zone`, and `id` or `evidence` (event ids). The whole row goes into the
/// alert's `detail`. Ids depend on the rule and the row, so a re-run over unchanged data
/// gives the same alerts (and a store that has them recognises them).
pub fn sql_alerts(rule: &Rule, columns: &[String], rows: &[Vec<Value>], now: DateTime<Utc>) -> Vec<Alert> {
    let col = |name: &str| columns.iter().position(|c| c.eq_ignore_ascii_case(name));
    let (key_c, time_c, lon_c, lat_c, grid_c, zone_c) =
        (col("key"), col("time"), col("lon"), col("lat"), col("grid"), col("zone"));
    let ev_c = col("evidence").or(col("id"));
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    rows.iter()
        .map(|row| {
            let get = |c: Option<usize>| c.and_then(|i| row.get(i));
            let key = get(key_c.or(if columns.is_empty() { None } else { Some(0) }))
                .map(text)
                .unwrap_or_default();
            let time = get(time_c)
                .and_then(Value::as_str)
                .and_then(|s| parse_time(s).or_else(|| parse_time(&format!("{}Z", s.replace(' ', "T")))))
                .unwrap_or(now);
            let evidence: Vec<String> = match get(ev_c) {
                Some(Value::Array(ids)) => ids.iter().map(text).collect(),
                Some(Value::Null) | None => Vec::new(),
                Some(v) => vec![text(v)],
            };
            let detail: Map<String, Value> = columns.iter().cloned().zip(row.iter().cloned()).collect();
            let row_text = serde_json::to_string(row).unwrap_or_default();
            Alert {
                id: format!("a{:016x}", fnv1a(&[rule.spec.id.as_bytes(), row_text.as_bytes()])),
                rule: rule.spec.id.clone(),
                key,
                time,
                fired_at: now,
                severity: rule.spec.severity,
                category: rule.spec.category.clone(),
                title: rule.spec.title.clone().unwrap_or_else(|| rule.spec.id.clone()),
                lon: get(lon_c).and_then(Value::as_f64),
                lat: get(lat_c).and_then(Value::as_f64),
                grid: get(grid_c).and_then(Value::as_str).map(str::to_string),
                zone: get(zone_c).and_then(Value::as_str).map(str::to_string),
                evidence,
                count: 1,
                detail,
                cleared_at: None,
            }
        })
        .collect()
}

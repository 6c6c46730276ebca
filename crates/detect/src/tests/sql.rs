//! `sql` rules: rows of the scheduled query become alerts.

use super::*;
use crate::sql_alerts;

const SQL: &str = r#"
rules:
  - id: repeat-offenders
    kind: sql
    query: SELECT plate AS key, max(time) AS time, lon, lat, grid, ids AS evidence, count(*) AS n FROM anpr GROUP BY plate
    every: 1h
    severity: high
    title: Repeat offenders
    category: traffic.repeat
"#;

fn cols(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn sql_rows_become_alerts_with_key_time_place_and_evidence() {
    let rule = &rules(SQL)[0];
    let now = at(12 * HOUR);
    let columns = cols(&["key", "time", "lon", "lat", "grid", "zone", "evidence", "n"]);
    let rows = vec![
        vec![
            json!("AB123"),
            json!("2026-03-02T10:00:00Z"),
            json!(121.4),
            json!(31.2),
            json!("g1"),
            json!("school-a"),
            json!(["e1", "e2", "e3"]),
            json!(3),
        ],
        vec![json!("CD456"), json!("2026-03-02 11:30:00"), json!(null), json!(null), json!(null), json!(null), json!("e9"), json!(1)],
        vec![json!(789), json!(null), json!(121.5), json!(31.3), json!("g2"), json!(null), json!(null), json!(2)],
    ];
    let alerts = sql_alerts(rule, &columns, &rows, now);
    assert_eq!(alerts.len(), 3);
    let a = &alerts[0];
    assert_eq!(a.rule, "repeat-offenders");
    assert_eq!(a.key, "AB123");
    assert_eq!(a.time, at(10 * HOUR));
    assert_eq!(a.fired_at, now);
    assert_eq!((a.lon, a.lat), (Some(121.4), Some(31.2)));
    assert_eq!(a.grid.as_deref(), Some("g1"));
    assert_eq!(a.zone.as_deref(), Some("school-a"));
    assert_eq!(ids(a), ["e1", "e2", "e3"]);
    assert_eq!(a.severity, crate::Severity::High);
    assert_eq!(a.title, "Repeat offenders");
    assert_eq!(a.category, "traffic.repeat");
    assert_eq!(a.count, 1);
    assert_eq!(a.detail["n"], 3);
    assert_eq!(a.detail["key"], "AB123");
    assert!(a.id.starts_with('a') && a.id.len() == 17, "{}", a.id);

    let b = &alerts[1];
    assert_eq!(b.time, at(11 * HOUR + 30 * MIN), "a SQL timestamp without zone is UTC");
    assert_eq!((b.lon, b.lat, b.grid.clone()), (None, None, None));
    assert_eq!(ids(b), ["e9"]);

    let c = &alerts[2];
    assert_eq!(c.key, "789", "non-string keys are written as text");
    assert_eq!(c.time, now, "no time: the run's time");
    assert!(c.evidence.is_empty());

    let set: std::collections::BTreeSet<&str> = alerts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(set.len(), 3, "one id per row");
}

#[test]
fn sql_alert_ids_are_stable_across_runs_and_depend_on_the_row() {
    let rule = &rules(SQL)[0];
    let columns = cols(&["key", "n"]);
    let rows = vec![vec![json!("AB123"), json!(3)]];
    let first = sql_alerts(rule, &columns, &rows, at(0));
    let again = sql_alerts(rule, &columns, &rows, at(HOUR));
    assert_eq!(first[0].id, again[0].id, "a re-run over the same data gives the same id");
    let changed = sql_alerts(rule, &columns, &[vec![json!("AB123"), json!(4)]], at(0));
    assert_ne!(changed[0].id, first[0].id);
    // Another rule, same row: another id.
    let other = rules(&SQL.replace("repeat-offenders", "other-rule"));
    assert_ne!(sql_alerts(&other[0], &columns, &rows, at(0))[0].id, first[0].id);
}

#[test]
fn sql_without_key_column_uses_the_first_and_id_column_as_evidence() {
    let rule = &rules(SQL)[0];
    let columns = cols(&["plate", "ID", "TIME"]);
    let rows = vec![vec![json!("ZZ1"), json!("ev-7"), json!("2026-03-02T01:00:00+08:00")]];
    let alerts = sql_alerts(rule, &columns, &rows, at(HOUR));
    assert_eq!(alerts[0].key, "ZZ1");
    assert_eq!(ids(&alerts[0]), ["ev-7"]);
    assert_eq!(alerts[0].time, at(-7 * HOUR), "columns match case-insensitively; offsets are honoured");
}

#[test]
fn sql_rules_do_not_run_on_events() {
    let mut e = engine(SQL);
    let out = feed(&mut e, &[ev("e1", "cam", "anpr", 0)]);
    assert!(out.is_empty());
    assert_eq!(e.stats().rules["repeat-offenders"].matched, 0);
}

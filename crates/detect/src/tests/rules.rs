//! Rule files: parsing, validation against the city, and where errors point.

use std::path::Path;

use super::*;
use crate::{load_rules, parse_rule, parse_rules, RuleError, RuleKind};

fn compile_err(yaml: &str) -> RuleError {
    match compile_rules(yaml, None, &city()) {
        Ok(rules) => panic!("expected an error, got {} rules", rules.len()),
        Err(e) => e,
    }
}

/// Compiles one rule given as the YAML lines of its body (without `- `).
fn one(body: &str) -> Result<Vec<Rule>, RuleError> {
    let mut yaml = String::from("rules:\n  - id: r1\n    category: test.cat\n");
    for line in body.trim().lines() {
        yaml.push_str("    ");
        yaml.push_str(line.trim_start());
        yaml.push('\n');
    }
    compile_rules(&yaml, None, &city())
}

fn one_err(body: &str) -> RuleError {
    match one(body) {
        Ok(_) => panic!("expected an error for:\n{body}"),
        Err(e) => e,
    }
}

#[test]
fn every_kind_compiles_in_its_minimal_form() {
    let cases = [
        ("kind: match", RuleKind::Match),
        ("kind: threshold\nattr: t\nabove: 1", RuleKind::Threshold),
        ("kind: geofence\nzones: [school-a]\non: enter", RuleKind::Geofence),
        ("kind: speed\nlimit_kmh: 50", RuleKind::Speed),
        ("kind: corridor\ncorridor: route-1", RuleKind::Corridor),
        ("kind: fatigue", RuleKind::Fatigue),
        ("kind: count\ncount: 3\nwindow: 1m", RuleKind::Count),
        ("kind: absence\nfor: 5m", RuleKind::Absence),
        ("kind: sequence\nfirst: event.kind == \"a\"\nthen: event.kind == \"b\"\nwithin: 1m", RuleKind::Sequence),
        ("kind: hotlist\nlist: wanted\nattr: plate", RuleKind::Hotlist),
        ("kind: sql\nquery: SELECT 1", RuleKind::Sql),
    ];
    for (body, kind) in cases {
        let rules = one(body).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(rules[0].spec.kind, kind);
        assert_eq!(rules[0].spec.severity, crate::Severity::Medium, "default severity");
        assert_eq!(rules[0].spec.suppress_period(), crate::DEFAULT_SUPPRESS);
    }
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let yaml = "rules:
  - id: ok
    kind: match
    category: a.b
  - id: typo
    kind: speed
    category: a.b
    limt_kmh: 60
";
    let err = compile_err(yaml);
    assert!(err.message.contains("limt_kmh"), "{err}");
    assert_eq!(err.line, Some(8), "{err:?}");
    assert!(err.to_string().contains("line 8"), "{err}");
}

#[test]
fn wrong_type_is_refused_with_its_line() {
    let yaml = "rules:
  - id: t
    kind: threshold
    category: a.b
    attr: t
    above: lots
";
    let err = compile_err(yaml);
    assert_eq!(err.line, Some(6), "{err:?}");
    assert!(err.message.contains("above"), "{err}");
    let err = compile_err("rules:\n  - id: t\n    kind: teleport\n    category: a.b\n");
    assert_eq!(err.line, Some(3), "{err:?}");
    assert!(err.message.contains("teleport"), "{err}");
}

/// A bad duration is a wrong value like any other: the error points at its line.
#[test]
fn bad_duration_is_refused_with_its_line() {
    let yaml = "rules:\n  - id: a\n    kind: absence\n    for: 5m\n    category: a.b\n  - id: t\n    kind: absence\n    category: a.b\n    for: soon\n";
    let err = compile_err(yaml);
    assert!(err.message.contains("soon"), "{err}");
    assert!(err.message.contains("rules[1]"), "the rule is named by position: {err}");
    assert_eq!(err.line, Some(9), "{err:?}");
}

#[test]
fn missing_required_keys_are_named_per_kind() {
    let cases = [
        ("kind: speed", "limit_kmh"),
        ("kind: speed\nlimit_from: zone", "zones"),
        ("kind: threshold\nabove: 3", "attr"),
        ("kind: threshold\nattr: t", "above"),
        ("kind: threshold\nattr: t\nabove: 3\nbelow: 1", "above"),
        ("kind: geofence\non: enter", "zones"),
        ("kind: geofence\nzones: [school-a]", "on"),
        ("kind: geofence\nzones: [school-a]\non: dwell", "dwell"),
        ("kind: corridor", "corridor"),
        ("kind: count\nwindow: 1m", "count"),
        ("kind: count\ncount: 0\nwindow: 1m", "count"),
        ("kind: count\ncount: 2", "window"),
        ("kind: count\ncount: 2\nwindow: 1m\ngroup: zone", "zones"),
        ("kind: absence", "for"),
        ("kind: sequence\nthen: 'true'\nwithin: 1m", "first"),
        ("kind: sequence\nfirst: 'true'\nwithin: 1m", "then"),
        ("kind: sequence\nfirst: 'true'\nthen: 'true'", "within"),
        ("kind: hotlist\nattr: plate", "list"),
        ("kind: hotlist\nlist: wanted", "attr"),
        ("kind: sql", "query"),
    ];
    for (body, key) in cases {
        let err = one_err(body);
        assert_eq!(err.key.as_deref(), Some(key), "{body}: {err}");
        assert_eq!(err.rule.as_deref(), Some("r1"), "{body}: {err}");
        assert!(err.message.contains(&format!("`{key}`")), "{body}: {err}");
        assert!(err.line.is_some(), "{body}: {err:?}");
    }
}

#[test]
fn keys_of_another_kind_are_refused() {
    for (body, key) in [
        ("kind: match\nlimit_kmh: 3", "limit_kmh"),
        ("kind: absence\nfor: 1m\nwindow: 1m", "window"),
        ("kind: geofence\nzones: [school-a]\non: enter\ndwell: 5m", "dwell"),
        ("kind: geofence\nzones: [school-a]\non: enter\nbetween: '22:00-06:00'", "between"),
        ("kind: count\ncount: 2\nwindow: 1m\nzones: [school-a]", "zones"),
    ] {
        let err = one_err(body);
        assert_eq!(err.key.as_deref(), Some(key), "{body}: {err}");
        assert!(err.message.contains(key), "{body}: {err}");
    }
}

#[test]
fn bad_values_are_refused() {
    for (body, key, needle) in [
        ("kind: threshold\nattr: t\nabove: 10\nclear: 12", "clear", "clear"),
        ("kind: threshold\nattr: t\nbelow: 10\nclear: 8", "clear", "clear"),
        ("kind: threshold\nattr: t\nabove: 10\ncount: 0", "count", "at least 1"),
        ("kind: absence\nfor: 0s", "for", "longer than 0s"),
        ("kind: geofence\nzones: [school-a]\non: inside\nbetween: '25:00-06:00'", "between", "HH:MM-HH:MM"),
        ("kind: geofence\nzones: [school-a]\non: inside\nbetween: '06:00-06:00'", "between", "empty"),
        ("kind: geofence\nzones: [school-a]\non: inside\nutc_offset: '8h'", "utc_offset", "+08:00"),
        ("kind: geofence\nzone_kinds: [castle]\non: enter", "zone_kinds", "castle"),
        ("kind: corridor\ncorridor: school-a", "corridor", "not a corridor"),
        ("kind: corridor\ncorridor: nowhere", "corridor", "nowhere"),
        ("kind: speed\nlimit_from: zone\nzones: [school-a]", "zones", "speed_limit_kmh"),
        ("kind: count\ncount: 2\nwindow: 1m\ngroup: h3\nh3_resolution: 16", "h3_resolution", "0 to 15"),
        ("kind: fatigue\nlimit: 1h\nrest: 2h", "rest", "shorter"),
    ] {
        let err = one_err(body);
        assert_eq!(err.key.as_deref(), Some(key), "{body}: {err}");
        assert!(err.message.contains(needle), "{body}: {err}");
    }
}

#[test]
fn unknown_zone_is_named() {
    let err = one_err("kind: geofence\nzones: [school-a, atlantis]\non: enter");
    assert_eq!(err.key.as_deref(), Some("zones"));
    assert!(err.message.contains("`atlantis`"), "{err}");
    assert_eq!(err.line, Some(5), "{err:?}");
}

#[test]
fn road_limits_need_roads() {
    let empty = City::from_parts(vec![], vec![], vec![], vec![], vec![], vec![]).unwrap();
    let yaml = "rules:\n  - id: r\n    kind: speed\n    limit_from: road\n    category: a.b\n";
    let err = compile_rules(yaml, None, &empty).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("limit_from"));
    assert!(compile_rules(yaml, None, &city()).is_ok());
}

#[test]
fn bad_cel_reports_its_position() {
    let yaml = "rules:
  - id: fine
    kind: match
    when: event.kind == \"smoke\"
    category: a.b
  - id: broken
    kind: match
    category: a.b
    when: event.kind == && true
";
    let err = compile_err(yaml);
    assert_eq!(err.rule.as_deref(), Some("broken"));
    assert_eq!(err.key.as_deref(), Some("when"));
    assert_eq!(err.line, Some(9), "{err:?}");
    assert!(err.message.contains("line 1, column"), "{err}");
    assert!(err.message.contains("event.kind == && true"), "{err}");

    for (body, key) in [
        ("kind: match\nkey: event.attrs.", "key"),
        ("kind: sequence\nfirst: event.kind == 'a'\nthen: event.kind = 'b'\nwithin: 1m", "then"),
        ("kind: sequence\nfirst: (event.kind\nthen: event.kind == 'b'\nwithin: 1m", "first"),
    ] {
        let err = one_err(body);
        assert_eq!(err.key.as_deref(), Some(key), "{body}: {err}");
        assert!(err.message.contains("column"), "{body}: {err}");
    }
}

#[test]
fn compile_errors_carry_the_line_of_the_offending_key() {
    let yaml = "rules:
  - id: a
    kind: match
    category: x.y
  - id: b
    kind: geofence
    category: x.y
    on: enter
    zones:
      - school-a
      - nowhere
  - id: c
    kind: speed
    category: x.y
    limit_kmh: 50
";
    let err = compile_err(yaml);
    assert_eq!(err.rule.as_deref(), Some("b"));
    assert_eq!(err.line, Some(9), "{err:?}");

    // The key is found in its own rule, not in an earlier rule that has the same key.
    let yaml = "rules:
  - id: a
    kind: absence
    for: 5m
    category: x.y
  - id: b
    kind: absence
    category: x.y
    for: 0s
";
    let err = compile_err(yaml);
    assert_eq!(err.rule.as_deref(), Some("b"));
    assert_eq!(err.line, Some(9), "{err:?}");

    // A key that is missing points at the rule's id line.
    let yaml = "rules:
  - id: a
    kind: match
    category: x.y

  - id: b
    kind: speed
    category: x.y
";
    let err = compile_err(yaml);
    assert_eq!(err.key.as_deref(), Some("limit_kmh"));
    assert_eq!(err.line, Some(6), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("line 6") && text.contains("rule `b`") && text.contains("key `limit_kmh`"), "{text}");
}

#[test]
fn duplicate_ids_are_refused() {
    let yaml = "rules:
  - id: same
    kind: match
    category: x.y
  - id: other
    kind: match
    category: x.y
  - id: same
    kind: match
    category: x.y
";
    let err = parse_rules(yaml, None).unwrap_err();
    assert_eq!(err.key.as_deref(), Some("id"));
    assert_eq!(err.rule.as_deref(), Some("same"));
    assert!(err.message.contains("`same`") && err.message.contains("twice"), "{err}");
    assert!(matches!(err.line, Some(2) | Some(8)), "{err:?}");
    assert_eq!(compile_err(yaml), err);
}

#[test]
fn invalid_ids_and_empty_categories_are_refused() {
    let err = compile_err("rules:\n  - id: has space\n    kind: match\n    category: x.y\n");
    assert_eq!(err.key.as_deref(), Some("id"));
    let err = compile_err("rules:\n  - id: ok\n    kind: match\n    category: ' '\n");
    assert_eq!(err.key.as_deref(), Some("category"));
    assert_eq!(err.line, Some(4));
}

#[test]
fn load_rules_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(&path, "rules:\n  - id: a\n    kind: absence\n    category: x.y\n").unwrap();
    let err = load_rules(&path, &city()).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(path.as_path()));
    assert_eq!(err.line, Some(2));
    assert!(err.to_string().starts_with(&path.display().to_string()), "{err}");
    let missing = load_rules(Path::new("/nonexistent/rules.yaml"), &city()).unwrap_err();
    assert!(missing.message.contains("cannot read"), "{missing}");
    std::fs::write(&path, "rules:\n  - id: a\n    kind: absence\n    for: 1m\n    category: x.y\n").unwrap();
    assert_eq!(load_rules(&path, &city()).unwrap().len(), 1);
}

#[test]
fn parse_rule_reads_json_and_yaml() {
    let spec = parse_rule(r#"{"id":"j","kind":"absence","for":"5m","category":"x.y"}"#, false).unwrap();
    assert_eq!(spec.for_, Some(Duration::from_secs(300)));
    let spec = parse_rule("id: y\nkind: match\ncategory: x.y\nseverity: critical\n", true).unwrap();
    assert_eq!(spec.severity, crate::Severity::Critical);
    let err = parse_rule("{\"id\":\"j\",\n\"kind\":\"match\",\n\"nope\":1}", false).unwrap_err();
    assert_eq!(err.line, Some(3));
    assert!(err.message.contains("nope"));
}

#[test]
fn rule_spec_round_trips_and_fingerprints_follow_the_spec() {
    let yaml = "rules:
  - id: a
    kind: geofence
    zones: [school-a]
    on: dwell
    dwell: 90s
    category: x.y
";
    let a = rules(yaml);
    let json = serde_json::to_string(&a[0].spec).unwrap();
    let back: crate::RuleSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, a[0].spec);
    assert_eq!(rules(yaml)[0].fingerprint, a[0].fingerprint, "fingerprints are stable");
    assert_ne!(rules(&yaml.replace("90s", "91s"))[0].fingerprint, a[0].fingerprint);
}

#[test]
fn when_kinds_are_indexed() {
    let r = rules(
        "rules:
  - id: a
    kind: match
    when: event.kind == 'smoke' || event.kind == 'gas'
    category: x.y
  - id: b
    kind: sequence
    first: event.kind == 'door_forced'
    then: event.kind == 'motion'
    within: 1m
    category: x.y
  - id: c
    kind: match
    when: event.attrs.level > 3.0
    category: x.y
",
    );
    assert_eq!(r[0].kinds, Some(vec!["gas".to_string(), "smoke".to_string()]));
    assert_eq!(r[1].kinds, Some(vec!["door_forced".to_string(), "motion".to_string()]));
    assert_eq!(r[2].kinds, None);
}

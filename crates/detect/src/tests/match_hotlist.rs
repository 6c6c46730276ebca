//! `match` and `hotlist`: the stateless rules, and repeat suppression.

use super::*;
use crate::{HotlistEntry, Hotlists, Output};

const SMOKE: &str = r#"
rules:
  - id: smoke
    kind: match
    when: event.kind == "smoke" && event.attrs.level > 3.0
    category: fire.smoke
    severity: high
    title: Smoke detected
"#;

#[test]
fn match_fires_once_per_matching_event_of_distinct_keys() {
    let mut e = engine(SMOKE);
    let out = feed(
        &mut e,
        &[
            ev("e1", "s1", "smoke", 0).with("level", 5.0).at(121.405, 31.205),
            ev("e2", "s2", "smoke", 1).with("level", 4.5),
            ev("e3", "s3", "smoke", 2).with("level", 9),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 3, "{out:?}");
    assert_eq!(alerts.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["s1", "s2", "s3"]);
    let a = &alerts[0];
    assert_eq!(a.rule, "smoke");
    assert_eq!(a.title, "Smoke detected");
    assert_eq!(a.category, "fire.smoke");
    assert_eq!(a.severity, crate::Severity::High);
    assert_eq!(ids(a), ["e1"]);
    assert_eq!(a.time, at(0));
    assert_eq!(a.fired_at, at(0));
    assert_eq!((a.lon, a.lat), (Some(121.405), Some(31.205)));
    assert_eq!(a.count, 1);
    assert!(a.id.starts_with('a') && a.id.len() == 28, "{}", a.id);
    assert_eq!(alerts[1].lon, None, "an event without a place gives an alert without one");
}

#[test]
fn match_when_filters_kind_and_attributes() {
    let mut e = engine(SMOKE);
    let out = feed(
        &mut e,
        &[
            ev("e1", "s1", "smoke", 0).with("level", 2.0), // too low
            ev("e2", "s2", "gas", 1).with("level", 9.0),   // wrong kind
            ev("e3", "s3", "smoke", 2),                    // no level: evaluation error → no match
            ev("e4", "s4", "smoke", 3).with("level", "high"), // wrong type
            ev("e5", "s5", "smoke", 4).with("level", 3.5),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:?}");
    assert_eq!(ids(&alerts[0]), ["e5"]);
    let st = e.stats();
    assert_eq!(st.events, 5);
    assert_eq!(st.rules["smoke"].matched, 1);
    assert_eq!(st.rules["smoke"].raised, 1);
}

#[test]
fn match_repeat_within_suppress_is_counted_then_a_new_alert_after_it() {
    let yaml = r#"
rules:
  - id: door
    kind: match
    when: event.kind == "door"
    category: security.door
    suppress: 10m
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            ev("d1", "door-1", "door", 0),
            ev("d2", "door-1", "door", 2 * MIN),
            ev("d3", "door-1", "door", 4 * MIN),
            ev("x1", "door-2", "door", 5 * MIN), // another key: its own alert
            // 4m + 10m = 14m: at 14m 30s the period since the last firing is over.
            ev("d4", "door-1", "door", 14 * MIN + 30),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 3, "{out:#?}");
    let first = &alerts[0];
    assert_eq!(ids(first), ["d1"]);
    let reps = repeated(&out);
    assert_eq!(
        reps,
        vec![
            (first.id.clone(), 2, vec!["d2".to_string()]),
            (first.id.clone(), 3, vec!["d3".to_string()]),
        ]
    );
    assert_eq!(alerts[1].key, "door-2");
    assert_eq!(ids(&alerts[2]), ["d4"]);
    assert_ne!(alerts[2].id, first.id);
    // Repeated at the right times.
    let times: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Repeated { time, .. } => Some(*time),
            _ => None,
        })
        .collect();
    assert_eq!(times, [at(2 * MIN), at(4 * MIN)]);
    // The book folds repeats into the alert.
    let b = book(out);
    let first_final = b.iter().find(|a| a.id == first.id).unwrap();
    assert_eq!(first_final.count, 3);
    assert_eq!(ids(first_final), ["d1", "d2", "d3"]);
    let st = e.stats();
    assert_eq!((st.rules["door"].raised, st.rules["door"].repeated), (3, 2));
}

#[test]
fn match_suppression_boundary_is_exclusive() {
    let yaml = r#"
rules:
  - id: door
    kind: match
    category: security.door
    suppress: 60s
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            ev("d1", "door-1", "door", 0),
            ev("d2", "door-1", "door", 59),
            ev("d3", "door-1", "door", 59 + 60), // exactly a period after the last firing
        ],
    );
    assert_eq!(raised(&out).len(), 2, "{out:#?}");
    assert_eq!(repeated(&out).len(), 1);
}

#[test]
fn match_alert_ids_are_stable_across_engines() {
    let events = [ev("e1", "s1", "smoke", 0).with("level", 5.0), ev("e2", "s2", "smoke", 0).with("level", 5.0)];
    let a = raised(&feed(&mut engine(SMOKE), &events));
    let b = raised(&feed(&mut engine(SMOKE), &events));
    assert_eq!(a, b);
    assert_ne!(a[0].id, a[1].id);
}

#[test]
fn match_key_expression_groups_suppression() {
    let yaml = r#"
rules:
  - id: by-grid
    kind: match
    when: event.kind == "fight"
    key: event.grid
    category: police.fight
"#;
    let mut e = engine(yaml);
    let mut no_grid = ev("e4", "cam-4", "fight", 3);
    no_grid.grid = None;
    let out = feed(
        &mut e,
        &[
            ev_grid("e1", "cam-1", "fight", 0, "g1"),
            ev_grid("e2", "cam-2", "fight", 1, "g1"), // same grid: a repeat
            ev_grid("e3", "cam-3", "fight", 2, "g2"),
            no_grid, // key does not evaluate
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["g1", "g2"]);
    assert_eq!(repeated(&out).len(), 1);
    assert_eq!(e.stats().rules["by-grid"].eval_errors, 1);
}

fn entry(value: &str, expires: Option<DateTime<Utc>>) -> HotlistEntry {
    HotlistEntry {
        value: value.to_string(),
        reason: "case 2026-0117".to_string(),
        owner: "unit-traffic".to_string(),
        added: at(-HOUR),
        expires,
    }
}

const PLATES: &str = r#"
rules:
  - id: wanted
    kind: hotlist
    when: event.kind == "anpr"
    list: wanted
    attr: plate
    key: event.attrs.plate
    category: police.wanted
"#;

#[test]
fn hotlist_matches_normalised_values_and_details_reason_and_owner() {
    let mut lists = Hotlists::new();
    lists.put("wanted", entry("沪A·12345", None)).unwrap();
    lists.put("wanted", entry("AB 987", None)).unwrap();
    let mut e = engine(PLATES);
    e.set_hotlists(lists);
    let out = feed(
        &mut e,
        &[
            ev("p1", "cam-1", "anpr", 0).with("plate", "沪a 12345"),
            ev("p2", "cam-1", "anpr", 1).with("plate", "ab-987"),
            ev("p3", "cam-1", "anpr", 2).with("plate", "AB987"),
            ev("p4", "cam-1", "anpr", 3).with("plate", "XY111"), // not listed
            ev("p5", "cam-1", "gps", 4).with("plate", "AB987"),  // not an anpr event
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 3, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a), ["p1"]);
    assert_eq!(a.key, "沪a 12345");
    assert_eq!(a.detail["list"], "wanted");
    assert_eq!(a.detail["value"], "沪a 12345");
    assert_eq!(a.detail["listed_value"], "沪A·12345");
    assert_eq!(a.detail["reason"], "case 2026-0117");
    assert_eq!(a.detail["owner"], "unit-traffic");
    // `ab-987` and `AB987` are one listed plate, but the rule's key is the raw attribute,
    // so they are two keys and two alerts.
    assert_eq!(ids(&alerts[1]), ["p2"]);
    assert_eq!(ids(&alerts[2]), ["p3"]);
    assert_eq!(alerts[1].detail["listed_value"], "AB 987");
    assert_eq!(alerts[2].detail["listed_value"], "AB 987");
    assert_eq!(repeated(&out).len(), 0);
}

#[test]
fn hotlist_fast_path_for_normalised_values() {
    let mut lists = Hotlists::new();
    lists.put("wanted", entry("ab 987", None)).unwrap();
    let mut e = engine(PLATES);
    e.set_hotlists(lists);
    let out = feed(&mut e, &[ev("p1", "cam-1", "anpr", 0).with("plate", "AB987")]);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].detail["listed_value"], "ab 987");
}

#[test]
fn hotlist_expired_entries_do_not_match() {
    let mut lists = Hotlists::new();
    lists.put("wanted", entry("OLD111", Some(at(10)))).unwrap();
    lists.put("wanted", entry("NEW222", Some(at(1000)))).unwrap();
    let mut e = engine(PLATES);
    e.set_hotlists(lists);
    let out = feed(
        &mut e,
        &[
            ev("p1", "cam-1", "anpr", 9).with("plate", "OLD111"),  // before expiry: matches
            ev("p2", "cam-2", "anpr", 10).with("plate", "old111"), // at expiry: no longer
            ev("p3", "cam-3", "anpr", 20).with("plate", "NEW222"),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.iter().map(|a| ids(a)[0]).collect::<Vec<_>>(), ["p1", "p3"], "{out:#?}");
}

#[test]
fn hotlist_without_the_list_or_attribute_does_not_fire() {
    let mut e = engine(PLATES);
    let out = feed(
        &mut e,
        &[ev("p1", "cam-1", "anpr", 0).with("plate", "AB987"), ev("p2", "cam-1", "anpr", 1).with("plate", 12)],
    );
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn match_rules_restricted_to_sources() {
    let yaml = r#"
rules:
  - id: vip-door
    kind: match
    when: event.source == "door-9" || event.source == "door-7"
    category: security.vip
  - id: any-door
    kind: match
    when: event.kind == "door"
    category: security.door
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[ev("d1", "door-1", "door", 0), ev("d9", "door-9", "door", 1), ev("d7", "door-7", "window", 2)],
    );
    let got: Vec<(String, String)> = raised(&out).into_iter().map(|a| (a.rule, a.key)).collect();
    let want: Vec<(String, String)> = [("any-door", "door-1"), ("any-door", "door-9"), ("vip-door", "door-9"), ("vip-door", "door-7")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let (mut g, mut w) = (got.clone(), want);
    g.sort();
    w.sort();
    assert_eq!(g, w, "{got:?}");
    assert_eq!(e.stats().rules["vip-door"].matched, 2);
}

/// Keys of stateless rules (here, every plate an ANPR camera reads) must not pile up in
/// the engine forever.
#[test]
fn stateless_rules_do_not_keep_every_key_forever() {
    let mut lists = Hotlists::new();
    lists.put("wanted", entry("AB987", None)).unwrap();
    let mut e = engine(PLATES);
    e.set_hotlists(lists);
    let events: Vec<Event> =
        (0..5000).map(|i| ev(&format!("p{i}"), "cam-1", "anpr", i / 10).with("plate", format!("X{i:05}"))).collect();
    let _ = feed(&mut e, &events);
    e.advance_to(at(2 * HOUR));
    let debug = format!("{e:?}");
    let keys: usize = debug
        .split("keys: ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no key count in {debug}"));
    assert!(keys < 100, "{keys} keys interned for a stateless rule that never fired");
}

#[test]
fn rules_with_different_keys_each_get_their_own_key() {
    let yaml = r#"
rules:
  - id: by-source
    kind: match
    category: x.y
  - id: by-grid
    kind: match
    key: event.grid
    category: x.y
  - id: by-source-again
    kind: match
    key: event.source
    category: x.y
  - id: by-plate
    kind: match
    key: event.attrs.plate
    category: x.y
  - id: by-source-and-kind
    kind: match
    key: event.source + "/" + event.kind
    category: x.y
"#;
    let mut e = engine(yaml);
    let out = feed(&mut e, &[ev_grid("e1", "cam-1", "anpr", 0, "g2")]);
    let got: Vec<(String, String)> = raised(&out).into_iter().map(|a| (a.rule, a.key)).collect();
    let want: Vec<(String, String)> = [
        ("by-source", "cam-1"),
        ("by-grid", "g2"),
        ("by-source-again", "cam-1"),
        ("by-source-and-kind", "cam-1/anpr"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(e.stats().rules["by-plate"].eval_errors, 1);
}

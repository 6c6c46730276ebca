//! `count`: N events per group in a tumbling or sliding window.

use super::*;

#[test]
fn count_tumbling_by_grid() {
    let yaml = r#"
rules:
  - id: crowd
    kind: count
    when: event.kind == "fight"
    group: grid
    count: 3
    window: 5m
    suppress: 1s
    category: police.crowd
"#;
    let f = |id: &str, src: &str, s: i64, g: &str| ev_grid(id, src, "fight", s, g);
    let events = vec![
        f("a1", "cam-1", 10, "g1"),
        f("b1", "cam-2", 20, "g2"),
        f("a2", "cam-2", 70, "g1"), // from another camera, same grid
        f("b2", "cam-2", 80, "g2"),
        f("a3", "cam-3", 130, "g1"), // third in g1's window [0, 5m): fires
        f("a4", "cam-1", 290, "g1"), // fourth: no second alert for the window
        f("a5", "cam-1", 310, "g1"), // next window [5m, 10m): two only
        f("a6", "cam-1", 320, "g1"),
        f("a7", "cam-1", 610, "g1"), // window [10m, 15m): three
        f("a8", "cam-1", 620, "g1"),
        f("a9", "cam-1", 630, "g1"),
    ];
    let mut e = engine(yaml);
    let mut out = feed(&mut e, &events[..5]);
    assert!(e.stats().buffered > 0, "count rules hold events until the watermark");
    out.extend(run_all(&mut e, &events[5..], 60));
    assert_eq!(e.stats().buffered, 0);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 2, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(a.key, "g1");
    assert_eq!(a.grid.as_deref(), Some("g1"));
    assert_eq!(ids(a), ["a1", "a2", "a3"]);
    assert_eq!(a.time, at(10));
    assert_eq!(a.fired_at, at(130));
    assert_eq!(a.detail["count"], 3);
    assert_eq!(a.detail["threshold"], 3);
    assert_eq!(a.detail["window_s"], 300);
    assert_eq!(a.detail["group"], "g1");
    assert_eq!(a.detail["window_start"], at(0).to_rfc3339());
    let b = &alerts[1];
    assert_eq!(ids(b), ["a7", "a8", "a9"]);
    assert_eq!(b.detail["window_start"], at(600).to_rfc3339());
    assert_ne!(a.id, b.id);
    assert!(repeated(&out).is_empty());
}

#[test]
fn count_next_window_within_suppress_is_a_repeat() {
    let yaml = r#"
rules:
  - id: crowd
    kind: count
    group: grid
    count: 2
    window: 1m
    category: police.crowd
"#;
    let events: Vec<Event> = [0, 10, 60, 70]
        .iter()
        .enumerate()
        .map(|(i, s)| ev_grid(&format!("e{i}"), "cam", "fight", *s, "g1"))
        .collect();
    let out = run_all(&mut engine(yaml), &events, 60);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(repeated(&out), vec![(alerts[0].id.clone(), 2, vec!["e2".to_string(), "e3".to_string()])]);
}

#[test]
fn count_sliding_by_key() {
    let yaml = r#"
rules:
  - id: burst
    kind: count
    when: event.kind == "anpr"
    key: event.attrs.plate
    count: 3
    window: 5m
    sliding: true
    category: traffic.burst
"#;
    let p = |id: &str, s: i64, plate: &str| ev(id, &format!("cam-{id}"), "anpr", s).with("plate", plate);
    let events = vec![
        p("p1", 0, "AB1"),
        p("q1", 30, "ZZ9"),
        p("p2", 4 * MIN + 30, "AB1"),
        p("p3", 8 * MIN, "AB1"), // 0 has left the window: two in (3m, 8m]
        p("q2", 8 * MIN + 30, "ZZ9"),
        p("p4", 9 * MIN, "AB1"),  // 4m30, 8m, 9m: three within 5 min
        p("p5", 10 * MIN, "AB1"), // four: the burst already fired
        p("p6", 20 * MIN, "AB1"), // alone again: the burst is over
        p("p7", 21 * MIN, "AB1"),
        p("p8", 22 * MIN, "AB1"), // a new burst, 13 min after the first firing
    ];
    let out = run_all(&mut engine(yaml), &events, 60);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 2, "{out:#?}");
    assert_eq!(alerts[0].key, "AB1");
    assert_eq!(ids(&alerts[0]), ["p2", "p3", "p4"]);
    assert_eq!(alerts[0].time, at(4 * MIN + 30));
    assert_eq!(alerts[0].fired_at, at(9 * MIN));
    assert_eq!(alerts[0].detail["count"], 3);
    assert!(alerts[0].detail.get("window_start").is_none());
    assert_eq!(ids(&alerts[1]), ["p6", "p7", "p8"]);
    assert!(repeated(&out).is_empty());
}

/// Three events within five minutes, of any kind and source.
const SLIDING_BURST: &str = r#"
rules:
  - id: burst
    kind: count
    count: 3
    window: 5m
    sliding: true
    category: traffic.burst
"#;

#[test]
fn count_sliding_window_excludes_an_event_exactly_a_window_old() {
    let yaml = SLIDING_BURST;
    let events: Vec<Event> = [0, 150, 300]
        .iter()
        .enumerate()
        .map(|(i, s)| ev(&format!("e{i}"), "cam", "anpr", *s))
        .collect();
    let out = run_all(&mut engine(yaml), &events, 60);
    assert!(raised(&out).is_empty(), "{out:#?}");
    let events: Vec<Event> = [0, 150, 299]
        .iter()
        .enumerate()
        .map(|(i, s)| ev(&format!("e{i}"), "cam", "anpr", *s))
        .collect();
    assert_eq!(raised(&run_all(&mut engine(yaml), &events, 60)).len(), 1);
}

#[test]
fn count_group_h3_groups_nearby_points_and_separates_far_ones() {
    let yaml = r#"
rules:
  - id: cluster
    kind: count
    group: h3
    h3_resolution: 9
    count: 2
    window: 5m
    category: police.cluster
"#;
    let res = h3o::Resolution::Nine;
    let cell = h3o::LatLng::new(31.205, 121.405).unwrap().to_cell(res);
    let center = h3o::LatLng::from(cell);
    let near_a = (center.lng(), center.lat());
    let near_b = cityward_model::geo::offset_m(near_a, 3.0, 2.0);
    let far_a = (121.5, 31.3);
    let far_b = (121.6, 31.4);
    assert_eq!(h3o::LatLng::new(near_b.1, near_b.0).unwrap().to_cell(res), cell);
    let events = vec![
        ev("n1", "cam-1", "crowd", 0).at(near_a.0, near_a.1),
        ev("f1", "cam-2", "crowd", 5).at(far_a.0, far_a.1),
        ev("n2", "cam-3", "crowd", 10).at(near_b.0, near_b.1),
        ev("f2", "cam-4", "crowd", 15).at(far_b.0, far_b.1),
        ev("x1", "cam-5", "crowd", 20), // no place: not counted
    ];
    let out = run_all(&mut engine(yaml), &events, 60);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(alerts[0].key, cell.to_string());
    assert_eq!(ids(&alerts[0]), ["n1", "n2"]);
}

#[test]
fn count_group_zone() {
    let yaml = r#"
rules:
  - id: square
    kind: count
    group: zone
    zones: [school-a, school-b]
    count: 2
    window: 5m
    category: police.crowd
"#;
    let at_p = |id: &str, s: i64, p: (f64, f64)| ev(id, &format!("cam-{id}"), "crowd", s).at(p.0, p.1);
    let events = vec![
        at_p("a1", 0, IN_SCHOOL_A),
        at_p("b1", 1, IN_SCHOOL_B),
        at_p("o1", 2, OUTSIDE),
        at_p("o2", 3, OUTSIDE),
        at_p("o3", 4, OUTSIDE),
        at_p("a2", 5, (121.401, 31.201)),
    ];
    let out = run_all(&mut engine(yaml), &events, 60);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(alerts[0].key, "school-a");
    assert_eq!(alerts[0].zone.as_deref(), Some("school-a"));
    assert_eq!(ids(&alerts[0]), ["a1", "a2"]);
}

#[test]
fn count_windows_see_events_in_time_order_whatever_the_arrival() {
    let yaml = r#"
rules:
  - id: crowd
    kind: count
    group: grid
    count: 3
    window: 1m
    category: police.crowd
"#;
    // Three events in [0, 60) arriving out of order within the 5 s lateness, interleaved
    // with one of the next window.
    let f = |id: &str, s: i64| ev_grid(id, &format!("cam-{id}"), "fight", s, "g1");
    let sorted = vec![f("a", 55), f("b", 57), f("c", 59), f("d", 61)];
    let shuffled = vec![f("b", 57), f("a", 55), f("d", 61), f("c", 59)];
    let a = run_all(&mut engine(yaml), &sorted, 60);
    let mut e = engine(yaml);
    let b = run_all(&mut e, &shuffled, 60);
    assert_eq!(e.stats().late, 0);
    assert_eq!(raised(&a).len(), 1, "{a:#?}");
    assert_eq!(raised(&a), raised(&b));
    assert_eq!(ids(&raised(&b)[0]), ["a", "b", "c"]);
}

#[test]
fn count_group_zone_counts_an_event_in_each_of_its_zones() {
    let yaml = r#"
rules:
  - id: limits
    kind: count
    group: zone
    zones: [slow, slower]
    count: 2
    window: 5m
    suppress: 1s
    category: x.y
"#;
    let in_both = (121.407, 31.257);
    let in_slow = (121.415, 31.265);
    let events = vec![
        ev("e1", "c1", "crowd", 0).at(in_both.0, in_both.1),
        ev("e2", "c2", "crowd", 1).at(in_slow.0, in_slow.1),
        ev("e3", "c3", "crowd", 2).at(in_both.0, in_both.1),
    ];
    let out = run_all(&mut engine(yaml), &events, 60);
    let got: Vec<(String, Vec<String>)> = raised(&out).into_iter().map(|a| (a.key, a.evidence)).collect();
    assert_eq!(
        got,
        vec![
            ("slow".to_string(), vec!["e1".to_string(), "e2".to_string()]),
            ("slower".to_string(), vec!["e1".to_string(), "e3".to_string()]),
        ],
        "{out:#?}"
    );
}

#[test]
fn count_sliding_busy_group_keeps_n_ids_and_restores_exactly() {
    // A burst of 600 events in one 5-minute window with count 3: the group's state holds the
    // last three events only, and a restart in the middle of the burst changes nothing.
    let yaml = SLIDING_BURST;
    let mut events: Vec<Event> = (0..600).map(|i| ev(&format!("e{i:03}"), "cam", "anpr", i / 3)).collect();
    // The burst ends (the window empties), then a new one starts: its evidence is its own.
    events.extend((0..3).map(|i| ev(&format!("n{i}"), "cam", "anpr", 1_000 + i)));
    let whole = run_all(&mut engine(yaml), &events, 60);
    let alerts = raised(&whole);
    assert_eq!(alerts.len(), 2, "{whole:#?}");
    assert_eq!(ids(&alerts[0]), ["e000", "e001", "e002"]);
    assert_eq!(ids(&alerts[1]), ["n0", "n1", "n2"]);
    assert_eq!(alerts[1].detail["count"], 3);

    let mut first = engine(yaml);
    let mut out = feed(&mut first, &events[..450]);
    let text = serde_json::to_string(&first.checkpoint()).unwrap();
    let saved: crate::Checkpoint = serde_json::from_str(&text).unwrap();
    let state = saved.rules["burst"].state.text();
    let ids_kept = state.match_indices("\"e").filter(|(i, _)| state[i + 2..].starts_with(|c: char| c.is_ascii_digit())).count();
    assert_eq!(ids_kept, 3, "a busy sliding group keeps the last n ids only: {state:.400}");
    let mut second = engine(yaml);
    second.restore(&saved).unwrap();
    out.extend(run_all(&mut second, &events[450..], 60));
    let ids_of = |out: &[Output]| raised(out).into_iter().map(|a| a.id).collect::<Vec<_>>();
    assert_eq!(ids_of(&out), ids_of(&whole));
}

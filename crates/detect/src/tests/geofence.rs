//! `geofence`: enter, exit, dwell and inside on polygons, holes and multipolygons.

use super::*;

fn fix(id: &str, source: &str, secs: i64, p: (f64, f64)) -> Event {
    ev(id, source, "gps", secs).at(p.0, p.1)
}

const ENTER_EXIT: &str = r#"
rules:
  - id: enter
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a, school-b, donut, twin]
    on: enter
    suppress: 1s
    category: zone.enter
  - id: exit
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a, school-b, donut, twin]
    on: exit
    suppress: 1s
    category: zone.exit
"#;

/// (rule, zone, evidence) of the raised alerts.
fn summary(out: &[Output]) -> Vec<(String, String, Vec<String>)> {
    raised(out)
        .into_iter()
        .map(|a| (a.rule.clone(), a.zone.clone().unwrap_or_default(), a.evidence.clone()))
        .collect()
}

fn s(rule: &str, zone: &str, evidence: &[&str]) -> (String, String, Vec<String>) {
    (rule.to_string(), zone.to_string(), evidence.iter().map(|e| e.to_string()).collect())
}

#[test]
fn geofence_enter_and_exit_on_rectangles() {
    let mut e = engine(ENTER_EXIT);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, OUTSIDE),
            fix("f2", "v1", 10, IN_SCHOOL_A),
            fix("f3", "v1", 20, IN_SCHOOL_A),
            fix("f4", "v1", 30, OUTSIDE),
            fix("f5", "v1", 40, IN_SCHOOL_B),
            fix("f6", "v1", 50, IN_SCHOOL_A), // straight from b to a: exit b, enter a
        ],
    );
    assert_eq!(
        summary(&out),
        vec![
            s("enter", "school-a", &["f2"]),
            s("exit", "school-a", &["f2", "f4"]),
            s("enter", "school-b", &["f5"]),
            // One event: rules report in rule order.
            s("enter", "school-a", &["f6"]),
            s("exit", "school-b", &["f5", "f6"]),
        ],
        "{out:#?}"
    );
    let alerts = raised(&out);
    let enter = &alerts[0];
    assert_eq!(enter.key, "v1");
    assert_eq!(enter.time, at(10));
    assert_eq!((enter.lon, enter.lat), (Some(IN_SCHOOL_A.0), Some(IN_SCHOOL_A.1)));
    let exit = &alerts[1];
    assert_eq!(exit.time, at(30));
    assert_eq!(exit.detail["inside_s"], 20);
}

#[test]
fn geofence_first_fix_inside_counts_as_entering() {
    let mut e = engine(ENTER_EXIT);
    let out = feed(&mut e, &[fix("f1", "v1", 0, IN_SCHOOL_B)]);
    assert_eq!(summary(&out), vec![s("enter", "school-b", &["f1"])]);
    // Keys never near a zone keep no state.
    let out = feed(&mut e, &[fix("g1", "v2", 1, OUTSIDE), fix("g2", "v3", 2, OUTSIDE)]);
    assert!(out.is_empty());
    assert_eq!(e.stats().rules["enter"].keys, 1);
}

#[test]
fn geofence_point_in_a_hole_is_outside() {
    let mut e = engine(ENTER_EXIT);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_DONUT_HOLE), // first fix in the hole: not inside
            fix("f2", "v1", 10, IN_DONUT_RING),
            fix("f3", "v1", 20, IN_DONUT_HOLE),
            fix("f4", "v1", 30, IN_DONUT_RING),
        ],
    );
    assert_eq!(
        summary(&out),
        vec![
            s("enter", "donut", &["f2"]),
            s("exit", "donut", &["f2", "f3"]),
            s("enter", "donut", &["f4"]),
        ],
        "{out:#?}"
    );
}

#[test]
fn geofence_multipolygon_parts_are_one_zone() {
    let mut e = engine(ENTER_EXIT);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_TWIN_1),
            fix("f2", "v1", 10, IN_TWIN_2), // other part, same zone: no exit, no enter
            fix("f3", "v1", 20, BETWEEN_TWINS),
            fix("f4", "v1", 30, IN_TWIN_2),
        ],
    );
    assert_eq!(
        summary(&out),
        vec![s("enter", "twin", &["f1"]), s("exit", "twin", &["f1", "f3"]), s("enter", "twin", &["f4"])],
        "{out:#?}"
    );
}

#[test]
fn geofence_boundary_points_agree_with_multipolygon_contains() {
    let yaml = r#"
rules:
  - id: enter
    kind: geofence
    zones: [school-a, donut, twin, tri]
    on: enter
    category: zone.enter
"#;
    let c = city();
    let area = |id: &str| c.zone(id).unwrap().geometry.to_multi_polygon().unwrap();
    // Vertices and edge midpoints of a rectangle, a hole, a multipolygon and a triangle
    // (including its sloping edge), plus clearly inside/outside controls.
    let probes: Vec<(&str, (f64, f64))> = vec![
        ("school-a", (121.40, 31.20)),
        ("school-a", (121.41, 31.20)),
        ("school-a", (121.41, 31.21)),
        ("school-a", (121.40, 31.21)),
        ("school-a", (121.405, 31.20)),
        ("school-a", (121.41, 31.205)),
        ("school-a", (121.405, 31.21)),
        ("school-a", (121.40, 31.205)),
        ("school-a", IN_SCHOOL_A),
        ("donut", (121.445, 31.205)),
        ("donut", (121.455, 31.215)),
        ("donut", (121.45, 31.205)),
        ("donut", (121.455, 31.21)),
        ("donut", (121.45, 31.215)),
        ("donut", (121.445, 31.21)),
        ("donut", (121.44, 31.21)),
        ("donut", (121.46, 31.21)),
        ("donut", IN_DONUT_HOLE),
        ("twin", (121.48, 31.205)),
        ("twin", (121.49, 31.205)),
        ("twin", (121.48, 31.21)),
        ("twin", (121.49, 31.20)),
        ("tri", (121.6, 31.2)),
        ("tri", (121.7, 31.2)),
        ("tri", (121.6, 31.3)),
        ("tri", (121.65, 31.2)),
        ("tri", (121.6, 31.25)),
        ("tri", (121.65, 31.25)),
        ("tri", (121.625, 31.275)),
        ("tri", (121.62, 31.22)),
    ];
    let mut e = engine(yaml);
    let events: Vec<Event> = probes
        .iter()
        .enumerate()
        .map(|(i, (_, p))| fix(&format!("p{i}"), &format!("probe-{i}"), i as i64, *p))
        .collect();
    let out = feed(&mut e, &events);
    let got: std::collections::BTreeSet<String> = raised(&out).into_iter().map(|a| a.key).collect();
    let mut inside = 0;
    for (i, (zone, p)) in probes.iter().enumerate() {
        let expected = area(zone).contains(p.0, p.1);
        inside += expected as usize;
        assert_eq!(
            got.contains(&format!("probe-{i}")),
            expected,
            "probe {i} at {p:?} on {zone}: MultiPolygon::contains says {expected}"
        );
        // And the alert names that zone.
        if expected {
            let a = raised(&out).into_iter().find(|a| a.key == format!("probe-{i}")).unwrap();
            assert_eq!(a.zone.as_deref(), Some(*zone));
        }
    }
    // The probes exercise both sides of the boundary rule.
    assert!(inside > 3 && inside < probes.len() - 3, "{inside} of {} inside", probes.len());
}

const DWELL: &str = r#"
rules:
  - id: loiter
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a]
    on: dwell
    dwell: 10m
    category: school.loiter
"#;

#[test]
fn geofence_dwell_fires_by_the_keys_later_fix() {
    let mut e = engine(DWELL);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, OUTSIDE),
            fix("f2", "v1", 60, IN_SCHOOL_A),
            fix("f3", "v1", 5 * MIN, IN_SCHOOL_A),
            fix("f4", "v1", 11 * MIN + 30, (121.406, 31.206)),
        ],
    );
    // The timer (due at 11m) has not fired: the watermark is at 4m55s when f4 arrives.
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a)[0], "f2", "the entering fix is the first evidence");
    assert_eq!(a.key, "v1");
    assert_eq!(a.zone.as_deref(), Some("school-a"));
    assert_eq!(a.time, at(60), "time is the entering fix");
    assert_eq!(a.fired_at, at(11 * MIN), "fired when the dwell was reached");
    assert_eq!(a.detail["dwell_s"], 600);
    // The pending timer does not fire a second time.
    e.finish(Duration::from_secs(HOUR as u64));
    assert!(e.drain().is_empty());
}

#[test]
fn geofence_dwell_fires_by_watermark() {
    let mut e = engine(DWELL);
    let out = feed(&mut e, &[fix("f1", "v1", 0, IN_SCHOOL_A), fix("f2", "v1", 4 * MIN, (121.406, 31.206))]);
    assert!(out.is_empty());
    e.advance_to(at_ms(10 * MIN * 1000 - 1));
    assert!(e.drain().is_empty());
    e.advance_to(at(10 * MIN));
    let out = e.drain();
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a), ["f1"]);
    assert_eq!(a.zone.as_deref(), Some("school-a"));
    assert_eq!(a.time, at(0));
    assert_eq!(a.fired_at, at(10 * MIN));
    let (lon, lat) = (a.lon.unwrap(), a.lat.unwrap());
    assert!(city().zone("school-a").unwrap().contains(lon, lat), "a place in the zone: {lon},{lat}");
    assert_eq!(a.grid.as_deref(), Some("g1"));
    // Staying longer does not fire again.
    let out = feed(&mut e, &[fix("f3", "v1", 20 * MIN, IN_SCHOOL_A)]);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn geofence_dwell_same_alert_id_by_fix_or_by_watermark() {
    let by_fix = {
        let mut e = engine(DWELL);
        raised(&feed(&mut e, &[fix("f1", "v1", 0, IN_SCHOOL_A), fix("f2", "v1", 10 * MIN, IN_SCHOOL_A)]))
    };
    let by_timer = {
        let mut e = engine(DWELL);
        let _ = feed(&mut e, &[fix("f1", "v1", 0, IN_SCHOOL_A)]);
        e.advance_to(at(10 * MIN));
        raised(&e.drain())
    };
    assert_eq!(by_fix.len(), 1);
    assert_eq!(by_timer.len(), 1);
    assert_eq!(by_fix[0].id, by_timer[0].id);
    assert_eq!(by_fix[0].time, by_timer[0].time);
    assert_eq!(by_fix[0].fired_at, by_timer[0].fired_at);
    assert_eq!(by_fix[0].zone, by_timer[0].zone);
}

#[test]
fn geofence_leaving_before_dwell_gives_no_alert() {
    let mut e = engine(DWELL);
    let mut out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_SCHOOL_A),
            fix("f2", "v1", 9 * MIN, IN_SCHOOL_A),
            fix("f3", "v1", 9 * MIN + 50, OUTSIDE),
        ],
    );
    e.advance_to(at(2 * HOUR));
    out.extend(e.drain());
    assert!(out.is_empty(), "{out:#?}");
    assert_eq!(e.stats().rules["loiter"].keys, 0, "no state kept for a key outside");
    assert_eq!(e.stats().timers, 0);
}

#[test]
fn geofence_dwell_restarts_when_the_key_comes_back() {
    let mut e = engine(DWELL);
    let _ = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_SCHOOL_A),
            fix("f2", "v1", 5 * MIN, OUTSIDE),
            fix("f3", "v1", 8 * MIN, IN_SCHOOL_A),
        ],
    );
    e.advance_to(at(17 * MIN));
    assert!(e.drain().is_empty(), "the first stay's timer must not fire for the second stay");
    e.advance_to(at(18 * MIN));
    let alerts = raised(&e.drain());
    assert_eq!(alerts.len(), 1);
    assert_eq!(ids(&alerts[0]), ["f3"]);
    assert_eq!(alerts[0].time, at(8 * MIN));
}

/// Whether a dwell fires must not depend on an unrelated source's event moving the
/// watermark before the key's own exit fix arrives.
#[test]
fn geofence_dwell_does_not_depend_on_other_sources() {
    let yaml = r#"
rules:
  - id: loiter
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a]
    on: dwell
    dwell: 60s
    category: school.loiter
"#;
    let mut inside: Vec<Event> = (0..=5).map(|i| fix(&format!("f{i}"), "v1", i * 10, IN_SCHOOL_A)).collect();
    let exit = fix("out", "v1", 70, OUTSIDE);
    let heartbeat = ev("hb", "other", "heartbeat", 66);
    // Run A: the exit fix arrives first. Run B: another source's event (in order, within
    // the lateness) arrives just before it and moves the watermark past 60 s.
    let mut a_events = inside.clone();
    a_events.push(exit.clone());
    a_events.push(heartbeat.clone());
    inside.push(heartbeat);
    inside.push(exit);
    let a = book(run_all(&mut engine(yaml), &a_events, 600));
    let b = book(run_all(&mut engine(yaml), &inside, 600));
    assert_eq!(essence(&a), essence(&b), "\nA: {a:#?}\nB: {b:#?}");
}

/// A dwell alert is the same alert whether the key's fix or the watermark raises it (the
/// module documentation promises so), so arrival order within the lateness does not
/// change it.
#[test]
fn geofence_dwell_alert_does_not_depend_on_arrival_order() {
    let enter = fix("f1", "v1", 0, IN_SCHOOL_A);
    let mid = fix("f2", "v1", 5 * MIN, (121.406, 31.206));
    let late_fix = fix("f3", "v1", 10 * MIN + 2, (121.407, 31.207));
    let other = ev("o1", "other", "heartbeat", 10 * MIN + 6);
    // Both orders are within the 5 s lateness.
    let a = book(run_all(&mut engine(DWELL), &[enter.clone(), mid.clone(), late_fix.clone(), other.clone()], 60));
    let b = book(run_all(&mut engine(DWELL), &[enter, mid, other, late_fix], 60));
    assert_eq!(a.len(), 1);
    assert_eq!(
        serde_json::to_value(&a).unwrap(),
        serde_json::to_value(&b).unwrap(),
        "\nfix first: {a:#?}\nwatermark first: {b:#?}"
    );
}

#[test]
fn geofence_inside_between_wraps_midnight_with_offset() {
    let yaml = r#"
rules:
  - id: night
    kind: geofence
    zones: [school-a]
    on: inside
    between: "22:00-06:00"
    utc_offset: "+08:00"
    category: school.night
"#;
    // The test epoch is 00:00Z, 08:00 at +08:00; local 22:00 is 14:00Z.
    let cases: &[(&str, i64, (f64, f64), bool)] = &[
        ("n1", 13 * HOUR + 59 * MIN, IN_SCHOOL_A, false), // 21:59 local
        ("n2", 14 * HOUR, IN_SCHOOL_A, true),             // 22:00 local
        ("n3", 14 * HOUR + 30 * MIN, OUTSIDE, false),     // in the window, not in the zone
        ("n4", 16 * HOUR, IN_SCHOOL_A, true),             // 00:00 local
        ("n5", 21 * HOUR + 59 * MIN, IN_SCHOOL_A, true),  // 05:59 local
        ("n6", 22 * HOUR, IN_SCHOOL_A, false),            // 06:00 local: the end is excluded
        ("n7", 26 * HOUR, IN_SCHOOL_A, false),            // 10:00 local next day
    ];
    let mut e = engine(yaml);
    let events: Vec<Event> = cases.iter().map(|(id, s, p, _)| fix(id, &format!("v-{id}"), *s, *p)).collect();
    let out = feed(&mut e, &events);
    let got: Vec<String> = raised(&out).into_iter().map(|a| a.evidence[0].clone()).collect();
    let want: Vec<&str> = cases.iter().filter(|c| c.3).map(|c| c.0).collect();
    assert_eq!(got, want, "{out:#?}");
    assert!(raised(&out).iter().all(|a| a.zone.as_deref() == Some("school-a")));
}

#[test]
fn geofence_inside_fires_every_fix_subject_to_suppression() {
    let yaml = r#"
rules:
  - id: inside
    kind: geofence
    zones: [school-a]
    on: inside
    suppress: 5m
    category: school.inside
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_SCHOOL_A),
            fix("f2", "v1", MIN, IN_SCHOOL_A),
            fix("f3", "v1", 2 * MIN, OUTSIDE),
            fix("f4", "v1", 10 * MIN, IN_SCHOOL_A),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.iter().map(|a| ids(a)[0]).collect::<Vec<_>>(), ["f1", "f4"], "{out:#?}");
    assert_eq!(repeated(&out).len(), 1);
}

#[test]
fn geofence_zone_kinds_select_a_zone_set() {
    let yaml = r#"
rules:
  - id: schools
    kind: geofence
    zone_kinds: [school]
    on: enter
    category: school.enter
  - id: schools-and-donut
    kind: geofence
    zones: [donut]
    zone_kinds: [school]
    on: enter
    category: zone.enter
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_SCHOOL_B),
            fix("f2", "v2", 1, IN_DONUT_RING),
            fix("f3", "v3", 2, IN_TWIN_1),
            fix("f4", "v4", 3, IN_SCHOOL_A),
        ],
    );
    let got: Vec<(String, String)> = raised(&out)
        .into_iter()
        .map(|a| (a.rule, a.zone.unwrap()))
        .collect();
    let want: Vec<(String, String)> = [
        ("schools", "school-b"),
        ("schools-and-donut", "school-b"),
        ("schools-and-donut", "donut"),
        ("schools", "school-a"),
        ("schools-and-donut", "school-a"),
    ]
    .iter()
    .map(|(r, z)| (r.to_string(), z.to_string()))
    .collect();
    assert_eq!(got, want, "{out:#?}");
}

#[test]
fn geofence_overlapping_zones_each_alert() {
    let yaml = r#"
rules:
  - id: limits
    kind: geofence
    zones: [slow, slower]
    on: enter
    category: zone.enter
"#;
    let mut e = engine(yaml);
    let out = feed(&mut e, &[fix("f1", "v1", 0, (121.407, 31.257)), fix("f2", "v1", 10, (121.415, 31.265))]);
    let zones: Vec<String> = raised(&out).into_iter().map(|a| a.zone.unwrap()).collect();
    assert_eq!(zones, ["slow", "slower"]);
    // Two scopes of one key: distinct ids.
    let alerts = raised(&out);
    assert_ne!(alerts[0].id, alerts[1].id);
}

#[test]
fn geofence_out_of_order_fix_is_ignored() {
    let mut e = engine(ENTER_EXIT);
    let out = feed(
        &mut e,
        &[fix("f1", "v1", 10, IN_SCHOOL_A), fix("f0", "v1", 5, OUTSIDE), fix("f2", "v1", 20, IN_SCHOOL_A)],
    );
    assert_eq!(summary(&out), vec![s("enter", "school-a", &["f1"])]);
    assert_eq!(e.stats().rules["exit"].out_of_order, 1);
}

#[test]
fn geofence_dwell_is_seen_from_the_exit_fix() {
    // The key's own exit fix is what moves time on: the timer has not come due when it
    // arrives, yet the key was inside from 0 until after 10 minutes.
    let mut e = engine(DWELL);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_SCHOOL_A),
            fix("f2", "v1", 5 * MIN, IN_SCHOOL_A),
            fix("f3", "v1", 11 * MIN, OUTSIDE),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["f1"]);
    assert_eq!(alerts[0].fired_at, at(10 * MIN));
    // Out before the dwell: nothing.
    let out = run_all(
        &mut engine(DWELL),
        &[fix("f1", "v1", 0, IN_SCHOOL_A), fix("f2", "v1", 10 * MIN - 1, OUTSIDE)],
        HOUR as u64,
    );
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn geofence_dwell_again_after_leaving_and_coming_back() {
    let mut e = engine(DWELL);
    let mut out = feed(&mut e, &[fix("f1", "v1", 0, IN_SCHOOL_A)]);
    e.advance_to(at(10 * MIN));
    out.extend(feed(&mut e, &[fix("f2", "v1", 12 * MIN, OUTSIDE), fix("f3", "v1", 13 * MIN, IN_SCHOOL_A)]));
    e.advance_to(at(24 * MIN));
    out.extend(e.drain());
    let alerts = raised(&out);
    assert_eq!(alerts.iter().map(|a| ids(a)[0]).collect::<Vec<_>>(), ["f1", "f3"], "{out:#?}");
    assert_ne!(alerts[0].id, alerts[1].id);
}

#[test]
fn geofence_rules_with_other_keys_track_separately() {
    let yaml = r#"
rules:
  - id: by-vehicle
    kind: geofence
    zones: [school-a]
    on: enter
    category: zone.enter
  - id: by-driver
    kind: geofence
    zones: [school-a]
    on: enter
    key: event.attrs.driver
    category: zone.enter
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            fix("f1", "v1", 0, IN_SCHOOL_A).with("driver", "d1"),
            fix("f2", "v2", 10, IN_SCHOOL_A).with("driver", "d1"), // same driver, other vehicle
            fix("f3", "v1", 20, OUTSIDE).with("driver", "d2"),
            fix("f4", "v1", 30, IN_SCHOOL_A).with("driver", "d2"),
        ],
    );
    let got: Vec<(String, String, String)> =
        raised(&out).into_iter().map(|a| (a.rule, a.key, a.evidence[0].clone())).collect();
    let want: Vec<(String, String, String)> = [
        ("by-vehicle", "v1", "f1"),
        ("by-driver", "d1", "f1"),
        ("by-vehicle", "v2", "f2"),
        ("by-driver", "d2", "f4"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    // v1 re-enters at 30 s within the default suppression: a repeat, not a new alert.
    assert_eq!(got, want, "{out:#?}");
    assert_eq!(repeated(&out).len(), 1);
}

//! `speed`, `corridor` and `fatigue`: rules over a moving key's fixes.

use cityward_model::geo::haversine_m;

use super::*;

fn gps(id: &str, source: &str, secs: i64, p: (f64, f64)) -> Event {
    ev(id, source, "gps", secs).at(p.0, p.1)
}

fn gps_v(id: &str, source: &str, secs: i64, p: (f64, f64), kmh: f64) -> Event {
    gps(id, source, secs, p).with("speed_kmh", kmh)
}

/// `metres` north of `p`.
fn north(p: (f64, f64), metres: f64) -> (f64, f64) {
    cityward_model::geo::offset_m(p, 0.0, metres)
}

const ROAD: (f64, f64) = (121.42, 31.30);

#[test]
fn speed_limit_from_rule_held_for_a_duration() {
    let yaml = r#"
rules:
  - id: speeding
    kind: speed
    when: event.kind == "gps"
    limit_kmh: 60
    for: 30s
    category: traffic.speed
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            gps_v("f1", "car", 0, ROAD, 70.0),
            gps_v("f2", "car", 10, ROAD, 75.0),
            gps_v("f3", "car", 20, ROAD, 50.0), // back under: the episode ends
            gps_v("f4", "car", 30, ROAD, 70.0),
            gps_v("f5", "car", 50, ROAD, 72.0),
            gps_v("f6", "car", 60, ROAD, 80.0), // 30 s over: fires
            gps_v("f7", "car", 70, ROAD, 90.0), // same episode: nothing more
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a), ["f4", "f6"]);
    assert_eq!(a.time, at(30));
    assert_eq!(a.fired_at, at(60));
    assert_eq!(a.detail["speed_kmh"], 80.0);
    assert_eq!(a.detail["limit_kmh"], 60.0);
    assert_eq!(a.detail["limit_from"], "rule");
    assert_eq!(a.detail["over_s"], 30);
    assert!(repeated(&out).is_empty());
}

#[test]
fn speed_derived_from_successive_fixes() {
    let yaml = r#"
rules:
  - id: speeding
    kind: speed
    limit_kmh: 60
    suppress: 1s
    category: traffic.speed
"#;
    let p1 = (121.400, 31.30);
    let p2 = (121.403, 31.30);
    let p3 = (121.4031, 31.30);
    let p4 = (121.44, 31.30);
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            gps("f1", "car", 0, p1),            // no previous fix: no speed
            gps("f2", "car", 10, p2),           // ~285 m in 10 s
            gps("f3", "car", 20, p3),           // ~10 m in 10 s: under
            gps("f4", "car", 20 + 6 * MIN, p4), // 3.5 km, but after a 6 min gap: not derived
            gps("f5", "car", 21 + 6 * MIN, p4), // no movement
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let want = haversine_m(p1, p2) / 10.0 * 3.6;
    assert!(want > 100.0 && want < 105.0, "{want}");
    assert_eq!(alerts[0].detail["speed_kmh"], ((want * 10.0).round() / 10.0));
    assert_eq!(ids(&alerts[0]), ["f2"]);
}

#[test]
fn speed_attribute_wins_over_derivation() {
    let yaml = r#"
rules:
  - id: speeding
    kind: speed
    limit_kmh: 60
    speed_attr: v
    category: traffic.speed
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            gps("f1", "car", 0, (121.40, 31.30)),
            gps("f2", "car", 10, (121.403, 31.30)).with("v", 40.0), // fast by distance, slow by attribute
            gps("f3", "car", 20, (121.4031, 31.30)).with("v", 61.0),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["f3"]);
    assert_eq!(alerts[0].detail["speed_kmh"], 61.0);
}

#[test]
fn speed_limit_from_the_nearest_road() {
    let yaml = r#"
rules:
  - id: road-speed
    kind: speed
    limit_from: road
    road_within_m: 30
    category: traffic.speed
"#;
    let fast = (121.42, 31.35);
    let slow = (121.42, 31.36);
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            gps_v("a1", "car-a", 0, north(fast, 10.0), 75.0), // under 80
            gps_v("b1", "car-b", 0, north(fast, 10.0), 85.0), // over 80
            gps_v("c1", "car-c", 0, north(slow, -20.0), 50.0), // over 40
            gps_v("d1", "car-d", 0, north(fast, 45.0), 200.0), // no road within 30 m
            gps_v("e1", "car-e", 0, north(slow, 29.0), 45.0),  // r-slow at 29 m, r-fast at ~1.1 km
        ],
    );
    let got: Vec<(String, f64, String)> = raised(&out)
        .into_iter()
        .map(|a| (a.key.clone(), a.detail["limit_kmh"].as_f64().unwrap(), a.detail["limit_from"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("car-b".to_string(), 80.0, "road r-fast".to_string()),
            ("car-c".to_string(), 40.0, "road r-slow".to_string()),
            ("car-e".to_string(), 40.0, "road r-slow".to_string()),
        ],
        "{out:#?}"
    );
}

#[test]
fn speed_limit_from_zone_property_lowest_wins() {
    let yaml = r#"
rules:
  - id: zone-speed
    kind: speed
    limit_from: zone
    zones: [slow, slower]
    category: traffic.speed
"#;
    let in_slow = (121.415, 31.265);
    let in_slower = (121.407, 31.257);
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            gps_v("a1", "car-a", 0, in_slow, 25.0),    // under 30
            gps_v("b1", "car-b", 0, in_slow, 35.0),    // over 30
            gps_v("c1", "car-c", 0, in_slower, 25.0),  // over 20 (the lower of 30 and 20)
            gps_v("d1", "car-d", 0, IN_SCHOOL_A, 99.0), // in no zone of the rule: no limit
        ],
    );
    let got: Vec<(String, f64, String)> = raised(&out)
        .into_iter()
        .map(|a| (a.key.clone(), a.detail["limit_kmh"].as_f64().unwrap(), a.detail["limit_from"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("car-b".to_string(), 30.0, "zone slow".to_string()),
            ("car-c".to_string(), 20.0, "zone slower".to_string()),
        ],
        "{out:#?}"
    );
}

#[test]
fn speed_tolerance_and_rule_limit_inside_zones_only() {
    let yaml = r#"
rules:
  - id: tolerant
    kind: speed
    limit_kmh: 60
    tolerance_kmh: 5
    category: traffic.speed
  - id: school-speed
    kind: speed
    limit_kmh: 30
    zones: [school-a]
    category: traffic.speed
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            gps_v("a1", "car-a", 0, OUTSIDE, 65.0),     // at limit + tolerance: fine
            gps_v("b1", "car-b", 0, OUTSIDE, 65.5),     // over
            gps_v("c1", "car-c", 0, IN_SCHOOL_A, 40.0), // over 30 in the school
            gps_v("d1", "car-d", 0, OUTSIDE, 40.0),     // 40 outside the school: fine for both
        ],
    );
    let got: Vec<(String, String)> = raised(&out).into_iter().map(|a| (a.rule, a.key)).collect();
    assert_eq!(
        got,
        vec![("tolerant".to_string(), "car-b".to_string()), ("school-speed".to_string(), "car-c".to_string())],
        "{out:#?}"
    );
}

const CORRIDOR: &str = r#"
rules:
  - id: off-route
    kind: corridor
    when: event.kind == "gps"
    corridor: route-1
    off_m: 50
    for: 60s
    suppress: 1s
    category: hazmat.route
"#;

#[test]
fn corridor_off_for_a_duration_fires_once_and_back_on_resets() {
    let on = ROAD;
    let near = north(ROAD, 95.0); // 45 m beyond the 50 m half-width: within off_m
    let off = north(ROAD, 200.0); // 150 m beyond
    let mut e = engine(CORRIDOR);
    let out = feed(
        &mut e,
        &[
            gps("f1", "truck", 0, on),
            gps("f2", "truck", 10, near),
            gps("f3", "truck", 20, off),
            gps("f4", "truck", 50, off),
            gps("f5", "truck", 80, off), // 60 s off: fires
            gps("f6", "truck", 90, off), // still off: nothing more
            gps("f7", "truck", 100, on), // back on: resets
            gps("f8", "truck", 110, off),
            gps("f9", "truck", 160, off), // 50 s: not yet
            gps("f10", "truck", 170, off),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 2, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a), ["f3", "f5"]);
    assert_eq!(a.zone.as_deref(), Some("route-1"));
    assert_eq!(a.time, at(20));
    assert_eq!(a.fired_at, at(80));
    let off_m = a.detail["off_corridor_m"].as_f64().unwrap();
    assert!((off_m - 150.0).abs() < 0.5, "{off_m}");
    assert_eq!(a.detail["allowed_m"], 50.0);
    assert_eq!(a.detail["off_s"], 60);
    assert_eq!(ids(&alerts[1]), ["f8", "f10"]);
    assert!(repeated(&out).is_empty());
}

#[test]
fn corridor_from_an_event_attribute() {
    let yaml = r#"
rules:
  - id: off-assigned
    kind: corridor
    corridor_attr: route
    category: hazmat.route
  - id: off-assigned-or-fixed
    kind: corridor
    corridor: route-1
    corridor_attr: route
    category: hazmat.route
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            gps("a1", "truck-a", 0, ROAD).with("route", "route-1"), // on its route
            gps("b1", "truck-b", 0, ROAD).with("route", "route-2"), // 2.2 km from route-2
            gps("c1", "truck-c", 0, north(ROAD, 500.0)),           // no route: only the fixed one applies
            gps("d1", "truck-d", 0, north(ROAD, 500.0)).with("route", "no-such-route"),
        ],
    );
    let got: Vec<(String, String, String)> =
        raised(&out).into_iter().map(|a| (a.rule, a.key, a.zone.unwrap())).collect();
    let want: Vec<(String, String, String)> = [
        ("off-assigned", "truck-b", "route-2"),
        ("off-assigned-or-fixed", "truck-b", "route-2"),
        ("off-assigned-or-fixed", "truck-c", "route-1"),
        ("off-assigned-or-fixed", "truck-d", "route-1"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want, "{out:#?}");
}

const FATIGUE: &str = r#"
rules:
  - id: tired
    kind: fatigue
    when: event.kind == "gps"
    category: traffic.fatigue
"#;

/// Fixes every 5 minutes from `from` to `to` (inclusive, in minutes) at `kmh`.
fn drive(source: &str, from: i64, to: i64, kmh: f64) -> Vec<Event> {
    (from..=to)
        .step_by(5)
        .map(|m| gps_v(&format!("{source}-{m}"), source, m * MIN, ROAD, kmh))
        .collect()
}

#[test]
fn fatigue_four_hours_with_short_stops_fires() {
    let mut events = drive("bus", 0, 55, 60.0);
    events.extend(drive("bus", 60, 70, 0.0)); // a 15 min stop: not a rest
    events.extend(drive("bus", 75, 250, 60.0));
    let mut e = engine(FATIGUE);
    let out = feed(&mut e, &events);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a), ["bus-0", "bus-240"]);
    assert_eq!(a.time, at(0));
    assert_eq!(a.fired_at, at(4 * HOUR));
    assert_eq!(a.detail["driving_min"], 240);
    assert_eq!(a.detail["limit_min"], 240);
    assert_eq!(a.detail["rest_min"], 20);
}

#[test]
fn fatigue_a_twenty_minute_rest_resets_driving_time() {
    let mut events = drive("bus", 0, 55, 60.0);
    events.extend(drive("bus", 60, 80, 0.0)); // stopped 60..80: 20 min, a rest
    events.extend(drive("bus", 85, 270, 60.0));
    let mut e = engine(FATIGUE);
    let out = feed(&mut e, &events);
    assert!(raised(&out).is_empty(), "4h30 of clock time, but only 3h05 since the rest: {out:#?}");
    let out = feed(&mut e, &drive("bus", 275, 330, 60.0));
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["bus-85", "bus-325"]);
    assert_eq!(alerts[0].time, at(85 * MIN));
}

#[test]
fn fatigue_a_gap_in_fixes_counts_as_rest() {
    // A 25 min gap (tracker asleep) at 2h.
    let mut events = drive("bus", 0, 120, 60.0);
    events.extend(drive("bus", 145, 270, 60.0));
    let mut e = engine(FATIGUE);
    let out = feed(&mut e, &events);
    assert!(raised(&out).is_empty(), "{out:#?}");
    let out = feed(&mut e, &drive("bus", 275, 390, 60.0));
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(alerts[0].time, at(145 * MIN));

    // A 15 min gap is no rest.
    let mut events = drive("van", 0, 120, 60.0);
    events.extend(drive("van", 135, 250, 60.0));
    let mut e = engine(FATIGUE);
    let alerts = raised(&feed(&mut e, &events));
    assert_eq!(alerts.len(), 1);
    assert_eq!(ids(&alerts[0]), ["van-0", "van-240"]);
}

#[test]
fn fatigue_custom_limits_and_moving_threshold() {
    let yaml = r#"
rules:
  - id: tired
    kind: fatigue
    limit: 1h
    rest: 10m
    moving_kmh: 10
    category: traffic.fatigue
"#;
    // Crawling at 8 km/h counts as stopped; 10 min of it is a rest.
    let mut events = drive("taxi", 0, 30, 50.0);
    events.extend(drive("taxi", 35, 45, 8.0));
    events.extend(drive("taxi", 50, 105, 50.0));
    let mut e = engine(yaml);
    let out = feed(&mut e, &events);
    assert!(raised(&out).is_empty(), "{out:#?}");
    let alerts = raised(&feed(&mut e, &drive("taxi", 110, 115, 50.0)));
    assert_eq!(alerts.len(), 1);
    assert_eq!(ids(&alerts[0]), ["taxi-50", "taxi-110"]);
}

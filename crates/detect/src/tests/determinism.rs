//! Time semantics (watermark, lateness, arrival order) and determinism.

use std::collections::BTreeSet;

use super::*;

/// Rules whose outcome must not depend on how events from different sources interleave
/// within the lateness allowance.
const MIXED: &str = r#"
rules:
  - id: smoke
    kind: match
    when: event.kind == "smoke"
    category: fire.smoke
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    clear: 70
    count: 2
    category: fire.heat
  - id: enter
    kind: geofence
    when: event.kind == "gps"
    zone_kinds: [school]
    on: enter
    category: school.enter
  - id: exit
    kind: geofence
    when: event.kind == "gps"
    zone_kinds: [school]
    on: exit
    category: school.exit
  - id: speeding
    kind: speed
    when: event.kind == "gps"
    limit_kmh: 60
    for: 40s
    category: traffic.speed
  - id: crowd
    kind: count
    when: event.kind == "fight"
    group: grid
    count: 3
    window: 2m
    category: police.crowd
  - id: burst
    kind: count
    when: event.kind == "fight"
    count: 2
    window: 1m
    sliding: true
    category: police.burst
  - id: break-in
    kind: sequence
    first: event.kind == "door_forced"
    then: event.kind == "motion"
    within: 90s
    key: event.grid
    category: security.intrusion
  - id: offline
    kind: absence
    when: event.kind == "heartbeat"
    for: 3m
    category: device.offline
"#;

/// Twenty minutes of a few sources, each source's events in time order.
fn scenario() -> Vec<Event> {
    let mut events = Vec::new();
    // Two buses crossing the schools along lat 31.205, with speeding stretches.
    for i in 0..60 {
        let s = i * 20;
        let lon = 121.395 + 0.0007 * i as f64;
        let kmh = if (12..20).contains(&i) || (40..44).contains(&i) { 75.0 } else { 40.0 };
        events.push(ev(&format!("b1-{i}"), "bus-1", "gps", s).at(lon, 31.205).with("speed_kmh", kmh));
        let lon2 = 121.437 - 0.0007 * i as f64;
        let kmh2 = if (25..35).contains(&i) { 90.0 } else { 30.0 };
        events.push(ev(&format!("b2-{i}"), "bus-2", "gps", s + 7).at(lon2, 31.205).with("speed_kmh", kmh2));
    }
    // A temperature sensor swinging across the threshold.
    for i in 0..40 {
        let v = [60.0, 82.0, 85.0, 75.0, 90.0, 65.0, 81.0, 50.0][i % 8];
        events.push(ev(&format!("t-{i}"), "sensor-1", "temp", 30 * i as i64 + 3).with("temperature", v));
    }
    // Fights and intrusions from two cameras in two grids.
    for i in 0..30 {
        let s = 40 * i + 11;
        events.push(ev_grid(&format!("c1-{i}"), "cam-1", "fight", s, if i % 5 < 3 { "g1" } else { "g2" }));
        if i % 6 == 0 {
            events.push(ev_grid(&format!("door-{i}"), "cam-1", "door_forced", s + 2, "g1"));
        }
    }
    for i in 0..24 {
        let s = 50 * i + 23;
        events.push(ev_grid(&format!("c2-{i}"), "cam-2", "fight", s, "g1"));
        if i % 4 == 1 {
            events.push(ev_grid(&format!("mot-{i}"), "cam-2", "motion", s + 1, "g1"));
        }
    }
    // Heartbeats: dev-1 goes quiet from 5 to 12 minutes, dev-2 is steady.
    for m in 0..20 {
        if !(5..12).contains(&m) {
            events.push(ev(&format!("h1-{m}"), "dev-1", "heartbeat", m * MIN + 5));
        }
        events.push(ev(&format!("h2-{m}"), "dev-2", "heartbeat", m * MIN + 29));
    }
    events.push(ev("sm-1", "smk-1", "smoke", 333));
    events.push(ev("sm-2", "smk-2", "smoke", 334));
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    events
}

/// The scenario as it arrives when each source has its own constant delay (0–4 s, under
/// the 5 s lateness): sources interleave differently, each source stays in order.
fn delayed_by_source(events: &[Event]) -> Vec<Event> {
    let delay = |source: &str| -> i64 {
        match source {
            "bus-1" => 0,
            "bus-2" => 3,
            "sensor-1" => 1,
            "cam-1" => 4,
            "cam-2" => 2,
            "dev-1" => 3,
            "dev-2" => 0,
            _ => 4,
        }
    };
    let mut arriving: Vec<(i64, usize, Event)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.time.timestamp_millis() + delay(&e.source) * 1000, i, e.clone()))
        .collect();
    arriving.sort_by_key(|(t, i, _)| (*t, *i));
    arriving.into_iter().map(|(_, _, e)| e).collect()
}

/// A small deterministic generator (64-bit LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Every event delayed by its own random 0–4.999 s: any order within the lateness.
fn jittered(events: &[Event], seed: u64) -> Vec<Event> {
    let mut rng = Lcg(seed);
    let mut arriving: Vec<(i64, usize, Event)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.time.timestamp_millis() + (rng.next() % 5000) as i64, i, e.clone()))
        .collect();
    arriving.sort_by_key(|(t, i, _)| (*t, *i));
    arriving.into_iter().map(|(_, _, e)| e).collect()
}

#[test]
fn scenario_exercises_every_rule() {
    let out = run_all(&mut engine(MIXED), &scenario(), HOUR as u64);
    let rules: BTreeSet<String> = raised(&out).into_iter().map(|a| a.rule).collect();
    let want: BTreeSet<String> = ["smoke", "hot", "enter", "exit", "speeding", "crowd", "burst", "break-in", "offline"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(rules, want);
    assert!(!cleared(&out).is_empty());
    assert!(!repeated(&out).is_empty());
}

#[test]
fn sorted_and_source_interleaved_arrivals_give_the_same_alerts() {
    let sorted = scenario();
    let shuffled = delayed_by_source(&sorted);
    assert_ne!(
        sorted.iter().map(|e| &e.id).collect::<Vec<_>>(),
        shuffled.iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    let mut e1 = engine(MIXED);
    let mut e2 = engine(MIXED);
    let a = book(run_all(&mut e1, &sorted, HOUR as u64));
    let b = book(run_all(&mut e2, &shuffled, HOUR as u64));
    assert_eq!(e2.stats().late, 0);
    assert_eq!(e1.stats().rules.values().map(|r| r.out_of_order).sum::<u64>(), 0);
    assert_eq!(e2.stats().rules.values().map(|r| r.out_of_order).sum::<u64>(), 0);
    assert!(a.len() > 20, "{} alerts", a.len());
    assert_eq!(essence(&a), essence(&b));
    // Not only rule/key/time/evidence/id: every field, cleared times and counts included.
    assert_eq!(serde_json::to_value(&a).unwrap(), serde_json::to_value(&b).unwrap());
}

#[test]
fn ordered_rules_give_the_same_alerts_under_any_order_within_lateness() {
    let yaml = r#"
rules:
  - id: crowd
    kind: count
    when: event.kind == "fight"
    group: grid
    count: 3
    window: 2m
    suppress: 1m
    category: police.crowd
  - id: burst
    kind: count
    when: event.kind == "fight"
    key: event.grid
    count: 4
    window: 90s
    sliding: true
    suppress: 1m
    category: police.burst
  - id: break-in
    kind: sequence
    first: event.kind == "door_forced"
    then: event.kind == "motion"
    within: 90s
    key: event.grid
    suppress: 1m
    category: security.intrusion
  - id: unanswered
    kind: sequence
    mode: not_followed
    first: event.kind == "door_forced"
    then: event.kind == "motion"
    within: 60s
    key: event.grid
    suppress: 1m
    category: security.unanswered
"#;
    let events: Vec<Event> = scenario()
        .into_iter()
        .filter(|e| matches!(e.kind.as_str(), "fight" | "door_forced" | "motion"))
        .collect();
    let reference = book(run_all(&mut engine(yaml), &events, HOUR as u64));
    assert!(reference.len() > 5, "{reference:#?}");
    for seed in 1..=8 {
        let arrival = jittered(&events, seed);
        let mut e = engine(yaml);
        let got = book(run_all(&mut e, &arrival, HOUR as u64));
        assert_eq!(e.stats().late, 0, "seed {seed}");
        assert_eq!(
            serde_json::to_value(&got).unwrap(),
            serde_json::to_value(&reference).unwrap(),
            "seed {seed}"
        );
    }
}

#[test]
fn late_events_are_counted_logged_and_reach_only_stateless_rules() {
    let yaml = r#"
rules:
  - id: smoke
    kind: match
    when: event.kind == "smoke"
    category: fire.smoke
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    category: fire.heat
  - id: crowd
    kind: count
    when: event.kind == "fight"
    group: grid
    count: 1
    window: 1m
    category: police.crowd
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            ev("t0", "s1", "temp", 100).with("temperature", 50.0), // watermark 95
            ev("late-smoke", "smk-1", "smoke", 90),
            ev("late-temp", "s2", "temp", 80).with("temperature", 99.0),
            ev_grid("late-fight", "cam-1", "fight", 94, "g1"),
            ev("on-time", "smk-2", "smoke", 95), // at the watermark: not late
        ],
    );
    assert_eq!(e.watermark(), Some(at(95)));
    let st = e.stats();
    assert_eq!(st.events, 5);
    assert_eq!(st.late, 3);
    let late: Vec<(String, DateTime<Utc>, DateTime<Utc>)> =
        e.late_events().map(|l| (l.id.clone(), l.time, l.watermark)).collect();
    assert_eq!(
        late,
        vec![
            ("late-smoke".to_string(), at(90), at(95)),
            ("late-temp".to_string(), at(80), at(95)),
            ("late-fight".to_string(), at(94), at(95)),
        ]
    );
    let l0 = e.late_events().next().unwrap();
    assert_eq!((l0.source.as_str(), l0.kind.as_str()), ("smk-1", "smoke"));
    // The match rule fired for the late smoke; the threshold and the count did not see
    // their late events.
    assert_eq!(raised(&out).iter().map(|a| ids(a)[0]).collect::<Vec<_>>(), ["late-smoke", "on-time"]);
    assert_eq!(st.rules["hot"].matched, 1);
    assert_eq!(st.rules["hot"].keys, 1);
    e.finish(Duration::from_secs(600));
    assert!(raised_by(&e.drain(), "crowd").is_empty());
}

#[test]
fn late_log_is_capped_but_late_count_is_not() {
    let cfg = EngineConfig {
        late_log: 2,
        ..config(5)
    };
    let mut e = engine_with(cfg, "rules: []");
    let mut events = vec![ev("first", "a", "x", 100)];
    for i in 0..5 {
        events.push(ev(&format!("late-{i}"), "b", "x", 10 + i));
    }
    let _ = feed(&mut e, &events);
    assert_eq!(e.stats().late, 5);
    assert_eq!(e.late_events().map(|l| l.id.as_str()).collect::<Vec<_>>(), ["late-3", "late-4"]);
}

#[test]
fn zero_lateness_releases_ordered_rules_at_once() {
    let yaml = r#"
rules:
  - id: crowd
    kind: count
    group: grid
    count: 2
    window: 1m
    category: police.crowd
"#;
    let mut e = engine_with(config(0), yaml);
    let out = feed(&mut e, &[ev_grid("a", "c1", "fight", 0, "g1"), ev_grid("b", "c2", "fight", 1, "g1")]);
    assert_eq!(raised(&out).len(), 1, "{out:#?}");
    assert_eq!(e.stats().buffered, 0);
}

#[test]
fn watermark_trails_the_newest_event_time_and_advance_to_only_moves_forward() {
    let mut e = engine("rules: []");
    assert_eq!(e.watermark(), None);
    e.process(&ev("a", "s", "x", 100));
    assert_eq!(e.watermark(), Some(at(95)));
    e.process(&ev("b", "s", "x", 50)); // older: the watermark stays
    assert_eq!(e.watermark(), Some(at(95)));
    e.advance_to(at(90));
    assert_eq!(e.watermark(), Some(at(95)));
    e.advance_to(at(200));
    assert_eq!(e.watermark(), Some(at(200)));
    e.finish(Duration::from_secs(0)); // newest event + 0: behind the watermark, no change
    assert_eq!(e.watermark(), Some(at(200)));
}

#[test]
fn max_evidence_caps_alert_evidence() {
    let yaml = r#"
rules:
  - id: crowd
    kind: count
    group: grid
    count: 5
    window: 1m
    category: police.crowd
"#;
    let cfg = EngineConfig {
        max_evidence: 3,
        ..config(5)
    };
    let events: Vec<Event> = (0..5).map(|i| ev_grid(&format!("e{i}"), "c", "fight", i, "g1")).collect();
    let out = run_all(&mut engine_with(cfg, yaml), &events, 60);
    let alerts = raised(&out);
    assert_eq!(ids(&alerts[0]), ["e0", "e1", "e2"]);
    assert_eq!(alerts[0].detail["count"], 5);
}

#[test]
fn same_input_twice_gives_identical_output() {
    let events = delayed_by_source(&scenario());
    let run = || {
        let mut e = engine(MIXED);
        let out = run_all(&mut e, &events, HOUR as u64);
        let alerts = serde_json::to_string(&raised(&out)).unwrap();
        (format!("{out:?}"), alerts, serde_json::to_string(&e.stats()).unwrap())
    };
    let (a, b) = (run(), run());
    assert_eq!(a.0, b.0);
    assert_eq!(a.1, b.1);
    assert_eq!(a.2, b.2);
}

/// The same state checkpoints to the same bytes (so checkpoints can be compared, hashed,
/// deduplicated).
#[test]
fn same_input_twice_gives_identical_checkpoints() {
    let events = scenario();
    let half = &events[..events.len() / 2];
    let cp = || {
        let mut e = engine(MIXED);
        let _ = feed(&mut e, half);
        serde_json::to_string(&e.checkpoint()).unwrap()
    };
    let first = cp();
    for _ in 0..5 {
        assert_eq!(cp(), first);
    }
}

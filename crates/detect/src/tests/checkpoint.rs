//! Checkpoint and restore, and rule changes on a running engine.

use std::collections::BTreeSet;

use super::*;
use crate::Checkpoint;

/// Rules with state of every sort: a dwell timer, absence timers, a threshold streak, a
/// count window, pending sequences (followed and not followed), a speed episode.
const STATEFUL: &str = r#"
rules:
  - id: loiter
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a]
    on: dwell
    dwell: 10m
    category: school.loiter
  - id: offline
    kind: absence
    when: event.kind == "heartbeat"
    for: 5m
    category: device.offline
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    count: 3
    category: fire.heat
  - id: crowd
    kind: count
    when: event.kind == "fight"
    group: grid
    count: 3
    window: 5m
    category: police.crowd
  - id: break-in
    kind: sequence
    first: event.kind == "door_forced"
    then: event.kind == "motion"
    within: 2m
    key: event.grid
    category: security.intrusion
  - id: unanswered
    kind: sequence
    mode: not_followed
    first: event.kind == "alarm"
    then: event.kind == "ack"
    within: 5m
    key: event.attrs.case
    category: ops.unanswered
  - id: speeding
    kind: speed
    when: event.kind == "gps"
    limit_kmh: 60
    for: 60s
    category: traffic.speed
  - id: any-smoke
    kind: match
    when: event.kind == "smoke"
    category: fire.smoke
"#;

/// A quarter hour of a small city, in time order.
fn timeline() -> Vec<Event> {
    let mut events = vec![
        // Dwell: v1 stays (fires by watermark at 11m), v2 leaves early.
        ev("v1-1", "v1", "gps", 60).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1),
        ev("v1-2", "v1", "gps", 240).at(121.406, 31.206),
        ev("v2-1", "v2", "gps", 120).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1),
        ev("v2-2", "v2", "gps", 300).at(OUTSIDE.0, OUTSIDE.1),
        // Absence: dev-1 goes silent after 2m; dev-3 is silent from 30 s to 700 s.
        ev("d1-0", "dev-1", "heartbeat", 0),
        ev("d1-1", "dev-1", "heartbeat", 60),
        ev("d1-2", "dev-1", "heartbeat", 120),
        ev("d3-0", "dev-3", "heartbeat", 30),
        ev("d3-1", "dev-3", "heartbeat", 700),
        // Threshold: three readings over, then back.
        ev("t1", "s1", "temp", 100).with("temperature", 85.0),
        ev("t2", "s1", "temp", 200).with("temperature", 86.0),
        ev("t3", "s1", "temp", 400).with("temperature", 87.0),
        ev("t4", "s1", "temp", 500).with("temperature", 60.0),
        // Count: three fights in g1's window [0, 5m), two in g2's next window.
        ev_grid("f1", "cam-1", "fight", 250, "g1"),
        ev_grid("f2", "cam-2", "fight", 280, "g1"),
        ev_grid("f3", "cam-3", "fight", 290, "g1"),
        ev_grid("f4", "cam-4", "fight", 310, "g2"),
        ev_grid("f5", "cam-4", "fight", 320, "g2"),
        // Sequence: door then motion in g1.
        ev_grid("door", "door-1", "door_forced", 270, "g1"),
        ev_grid("move", "cam-1", "motion", 330, "g1"),
        // Not followed: c1 is never acknowledged, c2 is.
        ev("al1", "panel", "alarm", 200).with("case", "c1"),
        ev("al2", "panel", "alarm", 210).with("case", "c2"),
        ev("ack2", "desk", "ack", 350).with("case", "c2"),
        // Speed: over 60 from 100 s to 160 s.
        ev("c1", "car", "gps", 100).at(121.42, 31.30).with("speed_kmh", 70.0),
        ev("c2", "car", "gps", 130).at(121.43, 31.30).with("speed_kmh", 75.0),
        ev("c3", "car", "gps", 160).at(121.44, 31.30).with("speed_kmh", 72.0),
        ev("sm1", "smk-1", "smoke", 150),
    ];
    // dev-2 beats every minute and keeps the watermark moving.
    for m in 0..=15 {
        events.push(ev(&format!("d2-{m}"), "dev-2", "heartbeat", m * MIN + 1));
    }
    events.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    events
}

const HORIZON: u64 = HOUR as u64;

fn uninterrupted() -> Vec<Output> {
    run_all(&mut engine(STATEFUL), &timeline(), HORIZON)
}

/// Runs the first `k` events, checkpoints through a JSON string, restores into a fresh
/// engine and runs the rest. Returns every output and the checkpoint.
fn interrupted(k: usize) -> (Vec<Output>, Checkpoint) {
    let events = timeline();
    let mut first = engine(STATEFUL);
    let mut out = feed(&mut first, &events[..k]);
    let text = serde_json::to_string(&first.checkpoint()).unwrap();
    drop(first);
    let cp: Checkpoint = serde_json::from_str(&text).unwrap();
    let mut second = engine(STATEFUL);
    second.restore(&cp).unwrap();
    out.extend(run_all(&mut second, &events[k..], HORIZON));
    (out, cp)
}

fn raised_ids(out: &[Output]) -> Vec<String> {
    raised(out).into_iter().map(|a| a.id).collect()
}

#[test]
fn checkpoint_scenario_raises_what_it_should() {
    let out = uninterrupted();
    let rules: BTreeSet<String> = raised(&out).into_iter().map(|a| a.rule).collect();
    let want: BTreeSet<String> = ["loiter", "offline", "hot", "crowd", "break-in", "unanswered", "speeding", "any-smoke"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(rules, want, "{out:#?}");
    // dev-1 and dev-3 absent; v2 left before the dwell; c2 was acknowledged.
    let offline: Vec<String> = raised_by(&out, "offline").into_iter().map(|a| a.key).collect();
    assert!(offline.contains(&"dev-1".to_string()) && offline.contains(&"dev-3".to_string()), "{offline:?}");
    assert_eq!(raised_by(&out, "loiter").iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["v1"]);
    assert_eq!(raised_by(&out, "unanswered").iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["c1"]);
    assert_eq!(cleared(&out).len(), 2, "hot cleared, dev-3 heard again: {out:#?}");
}

#[test]
fn checkpoint_restore_at_every_point_matches_an_uninterrupted_run() {
    let whole = uninterrupted();
    let whole_book = serde_json::to_value(book(whole.clone())).unwrap();
    let whole_ids: BTreeSet<String> = raised_ids(&whole).into_iter().collect();
    let n = timeline().len();
    for k in 0..=n {
        let (out, _) = interrupted(k);
        let ids = raised_ids(&out);
        let unique: BTreeSet<String> = ids.iter().cloned().collect();
        assert_eq!(unique.len(), ids.len(), "split at {k}: an alert raised twice: {out:#?}");
        assert_eq!(unique, whole_ids, "split at {k}: alerts missing or extra");
        assert_eq!(
            serde_json::to_value(book(out.clone())).unwrap(),
            whole_book,
            "split at {k}: final alerts differ\n{out:#?}"
        );
        assert_eq!(cleared(&out).len(), cleared(&whole).len(), "split at {k}");
        assert_eq!(repeated(&out).len(), repeated(&whole).len(), "split at {k}");
    }
}

#[test]
fn checkpoint_carries_pending_state() {
    // At 6 minutes: the dwell timer, absence timers, the alarm c1, and held events.
    let events = timeline();
    let k = events.iter().position(|e| e.time > at(6 * MIN)).unwrap();
    let (_, cp) = interrupted(k);
    assert!(!cp.held.is_empty(), "held events for the ordered rules");
    assert!(cp.held.iter().all(|h| h.rules.iter().all(|r| r == "crowd" || r == "break-in" || r == "unanswered")));
    assert_eq!(cp.watermark_ms, cp.max_time_ms - 5000);
    assert_eq!(cp.events, k as u64);
    // Where v1 is (its pending dwell) is in the checkpoint, wherever the engine keeps it.
    let text = serde_json::to_string(&cp).unwrap();
    assert!(text.contains("\"v1\"") && text.contains("\"v1-1\""), "{text}");
    assert!(cp.rules["offline"].state.value().get("dev-1").is_some());
    assert!(cp.rules["unanswered"].state.value().get("c1").is_some());
    // The restored engine has the same timers pending and says the same about itself.
    let mut e = engine(STATEFUL);
    let mut whole = engine(STATEFUL);
    let _ = feed(&mut whole, &events[..k]);
    e.restore(&cp).unwrap();
    let (a, b) = (e.stats(), whole.stats());
    // The running engine may also hold timers that are stale (v2 left before its dwell).
    assert!(a.timers > 0 && a.timers <= b.timers, "{} restored, {} running", a.timers, b.timers);
    assert_eq!(a.buffered, b.buffered);
    assert_eq!(a.events, b.events);
    assert_eq!(a.rules, b.rules);
    assert_eq!(e.watermark(), whole.watermark());
}

/// Sorts what a checkpoint holds in hash order, so checkpoints can be compared.
fn normalised(mut cp: Checkpoint) -> Checkpoint {
    for r in cp.rules.values_mut() {
        r.open.sort_by(|a, b| (&a.0, a.1, &a.2.id).cmp(&(&b.0, b.1, &b.2.id)));
    }
    cp
}

#[test]
fn checkpoint_of_a_restored_engine_is_the_same() {
    let events = timeline();
    for k in [5, events.len() / 2, events.len() - 3] {
        let mut e = engine(STATEFUL);
        let _ = feed(&mut e, &events[..k]);
        let cp = e.checkpoint();
        let mut r = engine(STATEFUL);
        r.restore(&cp).unwrap();
        assert_eq!(normalised(r.checkpoint()), normalised(cp), "split at {k}");
    }
}

#[test]
fn restore_with_a_changed_rule_starts_that_rule_empty() {
    let events = timeline();
    let k = events.iter().position(|e| e.time > at(3 * MIN)).unwrap();
    let mut e = engine(STATEFUL);
    let _ = feed(&mut e, &events[..k]);
    let cp = e.checkpoint();
    // `offline` changes (10m instead of 5m); the rest is the same.
    let changed = STATEFUL.replace("for: 5m", "for: 10m");
    let mut r = Engine::new(EngineConfig::default(), Arc::new(city()), rules(&changed));
    r.restore(&cp).unwrap();
    let st = r.stats();
    assert_eq!(st.rules["offline"].keys, 0, "changed rule starts empty");
    assert_eq!(st.rules["offline"].matched, 0);
    assert!(st.rules["loiter"].keys > 0, "unchanged rule resumes");
    let out = run_all(&mut r, &events[k..], HORIZON);
    // The dwell still fires; dev-1 (last heard before the checkpoint) is not remembered by
    // the changed rule, dev-2 and dev-3 are heard after it.
    assert_eq!(raised_by(&out, "loiter").len(), 1);
    let offline: Vec<String> = raised_by(&out, "offline").into_iter().map(|a| a.key).collect();
    assert!(!offline.contains(&"dev-1".to_string()), "{offline:?}");
}

#[test]
fn restore_rejects_state_that_does_not_load() {
    let mut e = engine(STATEFUL);
    let _ = feed(&mut e, &timeline()[..10]);
    let mut cp = e.checkpoint();
    cp.rules.get_mut("hot").unwrap().state = crate::StateJson::from_value(serde_json::json!({"s1": "not a state"}));
    let mut r = engine(STATEFUL);
    let err = r.restore(&cp).unwrap_err();
    assert!(err.contains("hot"), "{err}");
}

const TWO: &str = r#"
rules:
  - id: loiter
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a]
    on: dwell
    dwell: 10m
    category: school.loiter
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    count: 2
    category: fire.heat
"#;

#[test]
fn set_rules_keeps_unchanged_rules_state_and_starts_changed_rules_empty() {
    let mut e = engine(TWO);
    let _ = feed(
        &mut e,
        &[
            ev("f1", "v1", "gps", 0).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1),
            ev("t1", "s1", "temp", 10).with("temperature", 90.0),
        ],
    );
    // `hot` changes its value: its streak is forgotten. `loiter` is unchanged.
    let changed = TWO.replace("above: 80", "above: 85");
    e.set_rules(rules(&changed));
    assert_eq!(e.stats().rules["hot"].keys, 0);
    assert_eq!(e.stats().rules["loiter"].keys, 1);
    let out = feed(&mut e, &[ev("t2", "s1", "temp", 20).with("temperature", 90.0)]);
    assert!(raised(&out).is_empty(), "the changed rule starts a new streak: {out:#?}");
    let out = feed(&mut e, &[ev("t3", "s1", "temp", 30).with("temperature", 90.0)]);
    assert_eq!(ids(&raised(&out)[0]), ["t2", "t3"]);
    // The pending dwell of the unchanged rule still fires.
    e.advance_to(at(10 * MIN));
    let alerts = raised(&e.drain());
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0].rule, "loiter");
    assert_eq!(ids(&alerts[0]), ["f1"]);
}

#[test]
fn set_rules_keeps_open_alerts_when_rules_move() {
    let mut e = engine(TWO);
    let out = feed(
        &mut e,
        &[
            ev("t1", "s1", "temp", 0).with("temperature", 90.0),
            ev("t2", "s1", "temp", 10).with("temperature", 90.0),
        ],
    );
    let alert = raised(&out)[0].clone();
    // A new rule first, `loiter` removed: `hot` moves to another index.
    let new = r#"
rules:
  - id: smoke
    kind: match
    when: event.kind == "smoke"
    category: fire.smoke
  - id: gas
    kind: match
    when: event.kind == "gas"
    category: fire.gas
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    count: 2
    category: fire.heat
"#;
    e.set_rules(rules(new));
    assert_eq!(e.rules().map(|r| r.spec.id.as_str()).collect::<Vec<_>>(), ["smoke", "gas", "hot"]);
    let out = feed(
        &mut e,
        &[ev("t3", "s1", "temp", 20).with("temperature", 50.0), ev("s", "smk", "smoke", 21)],
    );
    assert_eq!(cleared(&out), vec![(alert.id.clone(), at(20))], "{out:#?}");
    assert_eq!(raised_by(&out, "smoke").len(), 1);
    assert_eq!(e.stats().rules["hot"].raised, 1, "stats kept");
    assert!(!e.stats().rules.contains_key("loiter"));
}

/// A removed rule drops its state: when it is added again it starts empty, and does not
/// act on where keys were before it was removed (it did not see what happened since).
#[test]
fn set_rules_removed_then_readded_rule_starts_empty() {
    let mut e = engine(TWO);
    let _ = feed(&mut e, &[ev("f1", "v1", "gps", 0).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1)]);
    let only_hot = r#"
rules:
  - id: hot
    kind: threshold
    attr: temperature
    above: 80
    category: fire.heat
"#;
    e.set_rules(rules(only_hot));
    // v1 leaves while no geofence rule runs.
    let _ = feed(&mut e, &[ev("f2", "v1", "gps", 60).at(OUTSIDE.0, OUTSIDE.1)]);
    e.set_rules(rules(TWO));
    assert_eq!(e.stats().rules["loiter"].keys, 0, "the re-added rule starts empty");
    e.advance_to(at(HOUR));
    let out = e.drain();
    assert!(out.is_empty(), "v1 left at 60 s; no dwell: {out:#?}");
}

/// Changing a geofence rule (here only its severity) must not raise again the dwell alerts
/// its previous version already raised.
#[test]
fn set_rules_changed_geofence_rule_does_not_reraise_dwells() {
    let mut e = engine(TWO);
    let _ = feed(&mut e, &[ev("f1", "v1", "gps", 0).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1)]);
    e.advance_to(at(10 * MIN));
    let first = raised(&e.drain());
    assert_eq!(first.len(), 1);
    e.set_rules(rules(&TWO.replace("category: school.loiter", "category: school.loiter\n    severity: high")));
    let mut out = feed(&mut e, &[ev("f2", "v1", "gps", 11 * MIN).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1)]);
    e.advance_to(at(12 * MIN));
    out.extend(e.drain());
    assert!(raised(&out).is_empty(), "raised again: {out:#?}");
}

#[test]
fn disabled_rules_do_not_run() {
    let yaml = r#"
rules:
  - id: smoke
    kind: match
    enabled: false
    category: fire.smoke
"#;
    let mut e = engine(yaml);
    assert!(feed(&mut e, &[ev("s", "smk", "smoke", 0)]).is_empty());
    assert!(e.stats().rules.is_empty());
}

const DWELL_ONLY: &str = r#"
rules:
  - id: loiter
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a]
    on: dwell
    dwell: 10m
    category: school.loiter
"#;

/// v1 enters school-a at 0 and its dwell fires at 10m; returns the engine's checkpoint and
/// the alert.
fn dwell_fired_checkpoint() -> (Checkpoint, Alert) {
    let mut e = engine(DWELL_ONLY);
    let _ = feed(&mut e, &[ev("f1", "v1", "gps", 0).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1)]);
    e.advance_to(at(10 * MIN));
    let alerts = raised(&e.drain());
    assert_eq!(alerts.len(), 1);
    (e.checkpoint(), alerts[0].clone())
}

/// Restoring into an engine whose geofence rule changed (only its severity here) must not
/// raise again a dwell that was raised before the checkpoint.
#[test]
fn restore_with_a_changed_geofence_rule_does_not_reraise_dwells() {
    let (cp, _) = dwell_fired_checkpoint();
    let changed = DWELL_ONLY.replace("category: school.loiter", "category: school.loiter\n    severity: high");
    let mut r = engine(&changed);
    r.restore(&cp).unwrap();
    let mut out = feed(&mut r, &[ev("f2", "v1", "gps", 11 * MIN).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1)]);
    r.advance_to(at(12 * MIN));
    out.extend(r.drain());
    assert!(raised(&out).is_empty(), "raised again: {out:#?}");
}

/// Zones named by id survive a change of the city's zone order (checkpoints say so for
/// where keys are): a dwell already raised is not raised again after a restart on a city
/// whose zones.geojson lists the zones in another order.
#[test]
fn restore_into_a_city_with_reordered_zones_keeps_dwells_fired() {
    let (cp, first) = dwell_fired_checkpoint();
    let c = city();
    let mut zones = c.zones.clone();
    zones.reverse();
    let reordered = City::from_parts(c.regions.clone(), c.grids.clone(), zones, c.roads.clone(), c.units.clone(), c.devices.clone())
        .unwrap();
    let rules = compile_rules(DWELL_ONLY, None, &reordered).unwrap();
    let mut r = Engine::new(EngineConfig::default(), Arc::new(reordered), rules);
    r.restore(&cp).unwrap();
    let mut out = feed(&mut r, &[ev("f2", "v1", "gps", 11 * MIN).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1)]);
    r.advance_to(at(12 * MIN));
    out.extend(r.drain());
    assert!(raised(&out).is_empty(), "raised again (first was {}): {out:#?}", first.id);
}

/// A dwell rule added at run time joins the keys already placed by the other geofence rules
/// on the same zones. Two keys inside since the same time must be treated alike, whatever
/// the time of their last fix.
#[test]
fn set_rules_added_dwell_rule_treats_keys_inside_alike() {
    let enter = r#"
rules:
  - id: enter
    kind: geofence
    when: event.kind == "gps"
    zones: [school-a]
    on: enter
    category: school.enter
"#;
    let mut e = engine(enter);
    let mut events = vec![
        ev("a0", "v1", "gps", 0).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1),
        ev("b0", "v2", "gps", 0).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1),
        ev("a1", "v1", "gps", 5 * MIN).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1),
        ev("b1", "v2", "gps", 15 * MIN).at(IN_SCHOOL_A.0, IN_SCHOOL_A.1),
    ];
    events.push(ev("hb", "other", "heartbeat", 30 * MIN));
    let _ = feed(&mut e, &events);
    let both = format!("{}{}", enter, &DWELL_ONLY["\nrules:\n".len()..]);
    e.set_rules(rules(&both));
    e.advance_to(at(31 * MIN));
    let keys: Vec<String> = raised_by(&e.drain(), "loiter").into_iter().map(|a| a.key).collect();
    assert!(keys.len() != 1, "v1 and v2 both inside since 0, but only {keys:?} raised");
}

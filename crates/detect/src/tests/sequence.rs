//! `sequence`: A then B within a time and distance, and A not followed by B.

use cityward_model::geo::offset_m;

use super::*;

const FOLLOWED: &str = r#"
rules:
  - id: break-in
    kind: sequence
    first: event.kind == "door_forced"
    then: event.kind == "motion"
    within: 2m
    within_m: 100
    key: event.grid
    category: security.intrusion
"#;

const P: (f64, f64) = (121.405, 31.205);

fn a(id: &str, secs: i64, p: (f64, f64)) -> Event {
    ev_grid(id, "door-1", "door_forced", secs, "g1").at(p.0, p.1)
}

fn b(id: &str, secs: i64, p: (f64, f64)) -> Event {
    ev_grid(id, "cam-1", "motion", secs, "g1").at(p.0, p.1)
}

#[test]
fn sequence_a_then_b_within_time_and_distance() {
    let out = run_all(
        &mut engine(FOLLOWED),
        &[
            ev_grid("x0", "cam-1", "motion", 0, "g1").at(P.0, P.1), // B before any A: nothing
            a("a1", 10, P),
            ev_grid("z1", "cam-9", "motion", 20, "g2").at(P.0, P.1), // other key
            b("b1", 70, offset_m(P, 50.0, 0.0)),
        ],
        60,
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let al = &alerts[0];
    assert_eq!(al.key, "g1");
    assert_eq!(ids(al), ["a1", "b1"]);
    assert_eq!(al.time, at(10));
    assert_eq!(al.fired_at, at(70));
    assert_eq!(al.detail["first"], "a1");
    assert_eq!(al.detail["gap_s"], 60);
}

#[test]
fn sequence_b_too_late_or_too_far_gives_nothing() {
    let too_late = run_all(&mut engine(FOLLOWED), &[a("a1", 0, P), b("b1", 121, P)], 600);
    assert!(raised(&too_late).is_empty(), "{too_late:#?}");
    let just_in_time = run_all(&mut engine(FOLLOWED), &[a("a1", 0, P), b("b1", 120, P)], 600);
    assert_eq!(raised(&just_in_time).len(), 1);
    let too_far = run_all(&mut engine(FOLLOWED), &[a("a1", 0, P), b("b1", 30, offset_m(P, 150.0, 0.0))], 600);
    assert!(raised(&too_far).is_empty(), "{too_far:#?}");
    let no_place = run_all(&mut engine(FOLLOWED), &[a("a1", 0, P), ev_grid("b1", "cam-1", "motion", 30, "g1")], 600);
    assert!(raised(&no_place).is_empty(), "with within_m, a B without a place cannot be near");
}

#[test]
fn sequence_each_a_pairs_with_one_b() {
    let out = run_all(
        &mut engine(FOLLOWED),
        &[a("a1", 0, P), a("a2", 10, P), b("b1", 20, P), b("b2", 30, P), b("b3", 40, P)],
        600,
    );
    let alerts = raised(&out);
    // a1+b1 raises; a2+b2 is the same key within the suppression period: a repeat.
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["a1", "b1"]);
    assert_eq!(repeated(&out), vec![(alerts[0].id.clone(), 2, vec!["a2".to_string(), "b2".to_string()])]);
}

#[test]
fn sequence_pairs_out_of_order_arrivals_from_different_sources() {
    // B (cam-1, 62 s) arrives before A (door-1, 60 s): within the 5 s lateness.
    let mut e = engine(FOLLOWED);
    let out = run_all(&mut e, &[b("b1", 62, P), a("a1", 60, P)], 60);
    assert_eq!(e.stats().late, 0);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["a1", "b1"]);
    assert_eq!(alerts[0].time, at(60));
}

const NOT_FOLLOWED: &str = r#"
rules:
  - id: unanswered
    kind: sequence
    mode: not_followed
    first: event.kind == "alarm"
    then: event.kind == "ack"
    within: 5m
    key: event.attrs.case
    category: ops.unanswered
"#;

fn alarm(id: &str, secs: i64, case: &str) -> Event {
    ev(id, "panel", "alarm", secs).with("case", case).at(P.0, P.1)
}

fn ack(id: &str, secs: i64, case: &str) -> Event {
    ev(id, "desk", "ack", secs).with("case", case)
}

#[test]
fn sequence_not_followed_fires_by_timer() {
    let mut e = engine(NOT_FOLLOWED);
    let _ = feed(&mut e, &[alarm("al1", 0, "c1")]);
    e.advance_to(at(5 * MIN));
    assert!(e.drain().is_empty(), "B may still come at exactly `within`");
    e.advance_to(at_ms(5 * MIN * 1000 + 1));
    let out = e.drain();
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let al = &alerts[0];
    assert_eq!(al.key, "c1");
    assert_eq!(ids(al), ["al1"]);
    assert_eq!(al.time, at(0));
    assert_eq!(al.fired_at, at_ms(300_001));
    assert_eq!(al.detail["waited_s"], 300);
    assert_eq!((al.lon, al.lat), (Some(P.0), Some(P.1)));
}

#[test]
fn sequence_not_followed_is_cancelled_by_b() {
    let out = run_all(
        &mut engine(NOT_FOLLOWED),
        &[
            alarm("al1", 0, "c1"),
            alarm("al2", 10, "c2"),
            ack("k1", 4 * MIN, "c1"),  // in time
            ack("k2", 5 * MIN + 11, "c2"), // 5m01s after: too late
        ],
        HOUR as u64,
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(alerts[0].key, "c2");
    assert_eq!(ids(&alerts[0]), ["al2"]);
}

#[test]
fn sequence_not_followed_b_exactly_at_within_cancels() {
    let out = run_all(&mut engine(NOT_FOLLOWED), &[alarm("al1", 0, "c1"), ack("k1", 5 * MIN, "c1")], HOUR as u64);
    assert!(raised(&out).is_empty(), "{out:#?}");
}

#[test]
fn sequence_state_is_dropped_when_done() {
    let mut e = engine(NOT_FOLLOWED);
    let out = run_all(&mut e, &[alarm("al1", 0, "c1"), alarm("al2", 1, "c2"), ack("k1", 60, "c1")], HOUR as u64);
    assert_eq!(raised(&out).len(), 1);
    let st = e.stats();
    assert_eq!(st.rules["unanswered"].keys, 0);
    assert_eq!(st.buffered, 0);
}

/// A first event that can no longer be followed is forgotten once the watermark passes its
/// deadline, even when its key is never heard of again (keys such as plates are unbounded).
#[test]
fn sequence_forgets_first_events_that_can_no_longer_be_followed() {
    let yaml = r#"
rules:
  - id: pair
    kind: sequence
    first: event.kind == "a"
    then: event.kind == "b"
    within: 1m
    key: event.attrs.plate
    category: x.y
"#;
    let mut e = engine(yaml);
    let events: Vec<Event> = (0..300).map(|i| ev(&format!("a{i}"), "cam", "a", i).with("plate", format!("P{i}"))).collect();
    let _ = feed(&mut e, &events);
    e.advance_to(at(HOUR));
    let st = e.stats();
    assert_eq!(st.buffered, 0);
    assert_eq!(st.rules["pair"].keys, 0, "stale first events kept");
}

//! `threshold`: readings beyond a value for N readings and/or a duration, with hysteresis.

use super::*;

fn temp(id: &str, source: &str, secs: i64, value: f64) -> Event {
    ev(id, source, "temp", secs).with("temperature", value).at(121.405, 31.205)
}

#[test]
fn threshold_above_needs_two_consecutive_readings() {
    let yaml = r#"
rules:
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    count: 2
    category: fire.heat
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            temp("r1", "s1", 0, 85.0),
            temp("r2", "s1", 10, 70.0), // breaks the streak
            temp("r3", "s1", 20, 85.0),
            temp("o1", "s2", 25, 99.0), // another sensor, one reading only
            temp("r4", "s1", 30, 86.5), // second in a row: fires
            temp("r5", "s1", 40, 90.0), // still above: no new alert, no repeat
            temp("r6", "s1", 50, 80.0), // at the value: not above (and clears)
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(a.key, "s1");
    assert_eq!(ids(a), ["r3", "r4"]);
    assert_eq!(a.time, at(20));
    assert_eq!(a.fired_at, at(30));
    assert_eq!(a.detail["value"], 86.5);
    assert_eq!(a.detail["threshold"], 80.0);
    assert_eq!(a.detail["readings"], 2);
    assert!(repeated(&out).is_empty());
    assert_eq!(cleared(&out), vec![(a.id.clone(), at(50))]);
}

const FOR_60S: &str = r#"
rules:
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    for: 60s
    category: fire.heat
"#;

#[test]
fn threshold_for_fires_on_a_later_reading() {
    let mut e = engine(FOR_60S);
    let out = feed(
        &mut e,
        &[temp("r1", "s1", 0, 85.0), temp("r2", "s1", 30, 85.0), temp("r3", "s1", 59, 85.0)],
    );
    assert!(raised(&out).is_empty(), "59 s is not 60 s: {out:#?}");
    let mut out = feed(&mut e, &[temp("r4", "s1", 60, 84.0)]);
    e.finish(Duration::from_secs(600)); // the timer at 60 s must not fire a second time
    out.extend(e.drain());
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["r1", "r4"]);
    assert_eq!(alerts[0].time, at(0));
    assert_eq!(alerts[0].fired_at, at(60));
    assert_eq!(alerts[0].detail["readings"], 4);
    assert!(repeated(&out).is_empty());
}

#[test]
fn threshold_for_fires_by_watermark_without_a_later_reading() {
    let mut e = engine(FOR_60S);
    let out = feed(&mut e, &[temp("r1", "s1", 0, 85.0), temp("r2", "s1", 30, 88.0)]);
    assert!(out.is_empty());
    assert_eq!(e.stats().timers, 1);
    e.advance_to(at_ms(59_999));
    assert!(e.drain().is_empty(), "the timer is due at 60 s");
    e.advance_to(at(60));
    let out = e.drain();
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a), ["r1"]);
    assert_eq!(a.time, at(0));
    assert_eq!(a.fired_at, at(60));
    assert_eq!(a.detail["value"], 88.0);
    assert_eq!(a.detail["readings"], 2);
    assert_eq!((a.lon, a.lat), (Some(121.405), Some(31.205)));
    // Still above afterwards: nothing more.
    let out = feed(&mut e, &[temp("r3", "s1", 90, 90.0)]);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn threshold_for_is_cancelled_by_a_reading_back_under() {
    let mut e = engine(FOR_60S);
    let mut out = feed(&mut e, &[temp("r1", "s1", 0, 85.0), temp("r2", "s1", 30, 75.0)]);
    e.advance_to(at(600));
    out.extend(e.drain());
    assert!(out.is_empty(), "{out:#?}");
}

/// A streak that is broken and starts again must still fire by the watermark, `for` after
/// the new streak began, even when the timer of the broken streak is still pending.
#[test]
fn threshold_for_timer_after_a_broken_streak() {
    let mut e = engine(FOR_60S);
    let mut out = feed(
        &mut e,
        &[temp("r1", "s1", 0, 85.0), temp("r2", "s1", 10, 70.0), temp("r3", "s1", 20, 85.0)],
    );
    // The new streak began at 20 s: due at 80 s.
    e.advance_to(at(80));
    out.extend(e.drain());
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["r3"]);
    assert_eq!(alerts[0].time, at(20));
    assert_eq!(alerts[0].fired_at, at(80));
}

#[test]
fn threshold_hysteresis_raises_once_and_clears_once() {
    let yaml = r#"
rules:
  - id: hot
    kind: threshold
    attr: temperature
    above: 80
    clear: 70
    category: fire.heat
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            temp("r1", "s1", 0, 85.0),  // raise
            temp("r2", "s1", 10, 75.0), // between clear and above: stays raised
            temp("r3", "s1", 20, 72.0),
            temp("r4", "s1", 30, 95.0), // above again while raised: nothing
            temp("r5", "s1", 40, 70.5),
            temp("r6", "s1", 50, 70.0), // at the clear value: clears
            temp("r7", "s1", 60, 75.0), // between: not raised again
            temp("r8", "s1", 70, 65.0),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["r1"]);
    assert!(repeated(&out).is_empty());
    assert_eq!(cleared(&out), vec![(alerts[0].id.clone(), at(50))]);
    let st = e.stats();
    assert_eq!((st.rules["hot"].raised, st.rules["hot"].cleared), (1, 1));

    // Above again after clearing: a new alert with its own id.
    let out2 = feed(&mut e, &[temp("r9", "s1", 80, 81.0)]);
    let again = raised(&out2);
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, alerts[0].id);

    // The book has the first alert cleared and the second open.
    let mut all = out;
    all.extend(out2);
    let b = book(all);
    assert_eq!(b.len(), 2);
    assert_eq!(b[0].cleared_at, Some(at(50)));
    assert_eq!(b[1].cleared_at, None);
}

#[test]
fn threshold_below_with_hysteresis() {
    let yaml = r#"
rules:
  - id: low-water
    kind: threshold
    when: event.kind == "level"
    attr: level_m
    below: 1.0
    clear: 1.5
    category: water.low
"#;
    let mut e = engine(yaml);
    let lvl = |id: &str, s: i64, v: f64| ev(id, "gauge", "level", s).with("level_m", v);
    let out = feed(
        &mut e,
        &[
            lvl("l1", 0, 1.2),
            lvl("l2", 10, 1.0), // at the value: not below
            lvl("l3", 20, 0.8), // below: raise
            lvl("l4", 30, 1.3), // between: stays
            lvl("l5", 40, 1.49),
            lvl("l6", 50, 1.5), // at the clear value: clears
            lvl("l7", 60, 1.2),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(ids(&alerts[0]), ["l3"]);
    assert_eq!(alerts[0].detail["threshold"], 1.0);
    assert_eq!(cleared(&out), vec![(alerts[0].id.clone(), at(50))]);
}

#[test]
fn threshold_without_clear_clears_at_the_value() {
    let yaml = r#"
rules:
  - id: hot
    kind: threshold
    attr: temperature
    above: 80
    category: fire.heat
"#;
    let mut e = engine(yaml);
    let out = feed(&mut e, &[temp("r1", "s1", 0, 81.0), temp("r2", "s1", 10, 80.5), temp("r3", "s1", 20, 80.0)]);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1);
    assert_eq!(cleared(&out), vec![(alerts[0].id.clone(), at(20))]);
}

#[test]
fn threshold_keys_are_independent_and_old_readings_are_ignored() {
    let yaml = r#"
rules:
  - id: hot
    kind: threshold
    attr: temperature
    above: 80
    count: 2
    category: fire.heat
"#;
    let mut e = engine(yaml);
    let out = feed(
        &mut e,
        &[
            temp("a1", "s1", 10, 85.0),
            temp("b1", "s2", 11, 85.0),
            temp("a0", "s1", 7, 85.0), // older than s1's last reading (not late): not applied
            temp("b2", "s2", 12, 85.0),
            temp("x1", "s3", 13, 85.0),
            ev("x2", "s3", "temp", 14), // no attribute: ignored, the streak stands
            temp("x3", "s3", 15, 85.0),
        ],
    );
    let alerts = raised(&out);
    assert_eq!(alerts.iter().map(|a| a.key.as_str()).collect::<Vec<_>>(), ["s2", "s3"], "{out:#?}");
    assert_eq!(ids(&alerts[1]), ["x1", "x3"]);
    let st = e.stats();
    assert_eq!(st.rules["hot"].out_of_order, 1);
    assert_eq!(st.rules["hot"].keys, 3);
}

/// A raised threshold alert clears when the value comes back, however long it was raised:
/// the clearing must not depend on the open-alert sweep of the suppression period.
#[test]
fn threshold_clears_after_a_long_time_raised() {
    let yaml = r#"
rules:
  - id: hot
    kind: threshold
    when: event.kind == "temp"
    attr: temperature
    above: 80
    category: fire.heat
"#;
    let mut e = engine(yaml);
    let mut events = vec![temp("r1", "s1", 0, 90.0)];
    // Another sensor keeps the watermark moving for 30 minutes, s1 stays hot.
    for i in 1..=30 {
        events.push(temp(&format!("o{i}"), "s2", i * MIN, 20.0));
    }
    events.push(temp("r2", "s1", 31 * MIN, 60.0));
    let out = feed(&mut e, &events);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1);
    assert_eq!(cleared(&out), vec![(alerts[0].id.clone(), at(31 * MIN))], "{out:#?}");
}

#[test]
fn threshold_count_and_for_both_needed() {
    let yaml = r#"
rules:
  - id: hot
    kind: threshold
    attr: temperature
    above: 80
    count: 3
    for: 60s
    category: fire.heat
"#;
    // Three readings in 20 s: enough readings, not long enough.
    let mut e = engine(yaml);
    let mut out = feed(&mut e, &[temp("r1", "s1", 0, 85.0), temp("r2", "s1", 10, 85.0), temp("r3", "s1", 20, 85.0)]);
    assert!(out.is_empty());
    e.advance_to(at(60));
    out.extend(e.drain());
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(alerts[0].fired_at, at(60));
    // Two readings over 70 s: long enough, not enough readings.
    let mut e = engine(yaml);
    let mut out = feed(&mut e, &[temp("r1", "s1", 0, 85.0), temp("r2", "s1", 70, 85.0)]);
    e.advance_to(at(600));
    out.extend(e.drain());
    assert!(out.is_empty(), "{out:#?}");
}

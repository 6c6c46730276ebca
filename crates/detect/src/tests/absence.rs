//! `absence`: no event from a key for longer than `for`.

use super::*;

const OFFLINE: &str = r#"
rules:
  - id: offline
    kind: absence
    when: event.kind == "heartbeat"
    for: 5m
    category: device.offline
"#;

fn hb(id: &str, source: &str, secs: i64) -> Event {
    ev(id, source, "heartbeat", secs)
}

#[test]
fn absence_fires_when_the_watermark_passes_last_plus_for() {
    let mut e = engine(OFFLINE);
    assert!(feed(&mut e, &[hb("h1", "dev-1", 0)]).is_empty());
    e.advance_to(at(5 * MIN));
    assert!(e.drain().is_empty(), "silent for exactly `for` is not yet absent");
    e.advance_to(at_ms(5 * MIN * 1000 + 1));
    let out = e.drain();
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(a.key, "dev-1");
    assert_eq!(ids(a), ["h1"]);
    assert_eq!(a.time, at(0), "time is the last event heard");
    assert_eq!(a.fired_at, at_ms(300_001));
    assert_eq!(a.detail["silent_for_s"], 300);
    assert_eq!(a.detail["limit_s"], 300);
    // The registered device's place.
    assert_eq!((a.lon, a.lat), (Some(121.405), Some(31.205)));
    assert_eq!(a.grid.as_deref(), Some("g1"));
    // Fired once: no more while it stays silent, and no timer left for it.
    e.advance_to(at(3 * HOUR));
    assert!(e.drain().is_empty());
    assert_eq!(e.stats().timers, 0);
}

#[test]
fn absence_unregistered_key_has_no_place() {
    let mut e = engine(OFFLINE);
    let _ = feed(&mut e, &[hb("h1", "not-registered", 0)]);
    e.advance_to(at(10 * MIN));
    let alerts = raised(&e.drain());
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].lon, alerts[0].lat, alerts[0].grid.clone()), (None, None, None));
}

#[test]
fn absence_does_not_fire_while_events_keep_coming() {
    let mut e = engine(OFFLINE);
    let events: Vec<Event> = (0..=30).map(|m| hb(&format!("h{m}"), "dev-1", m * MIN)).collect();
    let out = feed(&mut e, &events);
    e.advance_to(at(34 * MIN));
    assert!(out.is_empty() && e.drain().is_empty());
    assert_eq!(e.stats().timers, 1);
    e.advance_to(at(36 * MIN));
    let alerts = raised(&e.drain());
    assert_eq!(alerts.len(), 1);
    assert_eq!(ids(&alerts[0]), ["h30"]);
    assert_eq!(alerts[0].time, at(30 * MIN));
}

#[test]
fn absence_clears_when_heard_again_and_can_fire_again() {
    let mut e = engine(OFFLINE);
    let _ = feed(&mut e, &[hb("h1", "dev-1", 0)]);
    e.advance_to(at(6 * MIN));
    let first = raised(&e.drain());
    assert_eq!(first.len(), 1);
    let out = feed(&mut e, &[hb("h2", "dev-1", 7 * MIN)]);
    assert_eq!(cleared(&out), vec![(first[0].id.clone(), at(7 * MIN))], "{out:#?}");
    assert!(raised(&out).is_empty());
    assert_eq!(e.stats().timers, 1, "re-armed");
    e.advance_to(at(13 * MIN));
    let second = raised(&e.drain());
    assert_eq!(second.len(), 1);
    assert_eq!(ids(&second[0]), ["h2"]);
    assert_ne!(second[0].id, first[0].id);
    let st = e.stats();
    assert_eq!((st.rules["offline"].raised, st.rules["offline"].cleared), (2, 1));
}

#[test]
fn absence_fires_from_the_gap_when_the_next_event_shows_it() {
    // One device only: its own next event is what moves time on.
    let mut e = engine(OFFLINE);
    let out = run_all(&mut e, &[hb("h1", "dev-1", 0), hb("h2", "dev-1", 10 * MIN)], 0);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    let a = &alerts[0];
    assert_eq!(ids(a), ["h1"]);
    assert_eq!(a.time, at(0));
    assert_eq!(a.fired_at, at_ms(300_001));
    assert_eq!(cleared(&out), vec![(a.id.clone(), at(10 * MIN))]);

    // The same alert as when the watermark had passed the due time first.
    let mut e2 = engine(OFFLINE);
    let _ = feed(&mut e2, &[hb("h1", "dev-1", 0)]);
    e2.advance_to(at(6 * MIN));
    let mut out2 = e2.drain();
    out2.extend(run_all(&mut e2, &[hb("h2", "dev-1", 10 * MIN)], 0));
    let (b1, b2) = (book(out), book(out2));
    assert_eq!(serde_json::to_value(&b1).unwrap(), serde_json::to_value(&b2).unwrap());
    assert_eq!(b1[0].cleared_at, Some(at(10 * MIN)));

    // A gap of exactly `for` is no absence.
    let out = run_all(&mut engine(OFFLINE), &[hb("h1", "dev-1", 0), hb("h2", "dev-1", 5 * MIN)], 0);
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn absence_keeps_one_timer_per_key() {
    let mut e = engine(OFFLINE);
    let mut events = Vec::new();
    for round in 0..40 {
        for d in 0..50 {
            events.push(hb(&format!("h{round}-{d}"), &format!("dev-{d}"), round * 30));
        }
    }
    let out = feed(&mut e, &events);
    assert!(out.is_empty());
    let st = e.stats();
    assert_eq!(st.events, 2000);
    assert_eq!(st.rules["offline"].keys, 50);
    assert!(st.timers <= 50, "{} timers for 50 keys", st.timers);
    // They all go silent: one alert each, no timers left.
    e.advance_to(at(HOUR));
    assert_eq!(raised(&e.drain()).len(), 50);
    assert_eq!(e.stats().timers, 0);
}

/// An absence alert clears when the device is heard from again, however long it was
/// silent: the clearing must not depend on the open-alert sweep of the suppression period.
#[test]
fn absence_clears_after_a_long_silence() {
    let mut e = engine(OFFLINE);
    let mut events = vec![hb("h1", "dev-1", 0)];
    // Another device keeps the watermark moving while dev-1 is silent for 40 minutes.
    for m in 1..=40 {
        events.push(hb(&format!("o{m}"), "dev-2", m * MIN));
    }
    events.push(hb("h2", "dev-1", 41 * MIN));
    let out = feed(&mut e, &events);
    let alerts = raised(&out);
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(cleared(&out), vec![(alerts[0].id.clone(), at(41 * MIN))], "{out:#?}");
}

//! The lifecycle, routing, deadlines and jurisdictions on a small hand-built city:
//! district d1 > street s1 > communities c1 (grid g1, west) and c2 (grid g2, east), each
//! level with its administrative unit, plus a city-wide fire command.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cityward_model::geo::{BBox, MultiPolygon, Polygon};
use cityward_model::city::{Grid, Level, Region, Unit};
use cityward_model::City;

use crate::*;

fn area(min_lon: f64, max_lon: f64) -> MultiPolygon {
    MultiPolygon::new(vec![Polygon::rect(BBox::new(min_lon, 30.0, max_lon, 30.01))])
}

fn city() -> Arc<City> {
    let region = |id: &str, level, parent: Option<&str>, a| Region {
        id: id.into(),
        name: id.into(),
        level,
        parent: parent.map(Into::into),
        area: a,
    };
    let unit = |id: &str, kind: &str, region: Option<&str>, parent: Option<&str>| Unit {
        id: id.into(),
        name: id.into(),
        kind: kind.into(),
        region: region.map(Into::into),
        parent_unit: parent.map(Into::into),
    };
    let regions = vec![
        region("d1", Level::District, None, area(121.00, 121.02)),
        region("s1", Level::Street, Some("d1"), area(121.00, 121.02)),
        region("c1", Level::Community, Some("s1"), area(121.00, 121.01)),
        region("c2", Level::Community, Some("s1"), area(121.01, 121.02)),
    ];
    let grids = vec![
        Grid { id: "g1".into(), region: "c1".into(), area: area(121.00, 121.01) },
        Grid { id: "g2".into(), region: "c2".into(), area: area(121.01, 121.02) },
    ];
    let units = vec![
        unit("unit-city", "city", None, None),
        unit("fire-city", "fire", None, Some("unit-city")),
        unit("unit-d1", "district", Some("d1"), Some("unit-city")),
        unit("unit-s1", "street", Some("s1"), Some("unit-d1")),
        unit("unit-c1", "community", Some("c1"), Some("unit-s1")),
        unit("unit-c2", "community", Some("c2"), Some("unit-s1")),
    ];
    Arc::new(City::from_parts(regions, grids, vec![], vec![], units, vec![]).unwrap())
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0).unwrap() + chrono::Duration::seconds(s)
}

fn router(entries: Vec<RouteEntry>) -> Router {
    Router::new(city(), RoutingTable { version: 3, entries }, 50.0).unwrap()
}

fn entry(category: &str, region: Option<&str>, grid: Option<&str>, unit: &str) -> RouteEntry {
    RouteEntry { category: category.into(), region: region.map(Into::into), grid: grid.map(Into::into), unit: unit.into() }
}

/// Well inside g1 (about 480 m from the c1/c2 border).
const IN_G1: (f64, f64) = (121.005, 30.005);
/// 20 m west of the c1/c2 border, inside g1.
const NEAR_BORDER: (f64, f64) = (121.0098, 30.005);

fn place(category: &str, point: (f64, f64)) -> AlertPlace<'_> {
    AlertPlace { category, point: Some(point), grid: None }
}

fn user(name: &str, unit: &str) -> Actor {
    Actor { name: name.into(), unit: Some(unit.into()) }
}

fn deadlines() -> Deadlines {
    Deadlines { ack: Duration::from_secs(120), arrive: Duration::from_secs(900), progress: Duration::from_secs(600) }
}

fn open_case(category: &str, point: (f64, f64)) -> Case {
    let r = router(vec![]);
    Case::open(r.route(&place(category, point)), deadlines(), t(0))
}

#[test]
fn without_entries_an_alert_goes_to_the_administrative_unit_of_its_grid() {
    let r = router(vec![]);
    let routed = r.route(&place("fire.smoke", IN_G1));
    assert_eq!(routed.owner.as_deref(), Some("unit-c1"));
    assert_eq!(routed.grid.as_deref(), Some("g1"));
    assert!(routed.candidates.is_empty());
    assert!(routed.reason.contains("administrative unit of c1"), "{}", routed.reason);
    // No place and no grid: the top unit.
    let nowhere = r.route(&AlertPlace { category: "device.offline", point: None, grid: None });
    assert_eq!(nowhere.owner.as_deref(), Some("unit-city"));
}

#[test]
fn the_most_specific_entry_wins_grid_over_region_over_city_and_exact_over_prefix() {
    let r = router(vec![
        entry("*", None, None, "unit-city"),
        entry("fire.*", None, None, "fire-city"),
        entry("fire.*", Some("s1"), None, "unit-s1"),
        entry("fire.smoke", Some("d1"), None, "unit-d1"),
        entry("traffic.*", None, Some("g2"), "unit-c2"),
    ]);
    // The street's prefix entry is nearer than the district's exact one.
    assert_eq!(r.route(&place("fire.smoke", IN_G1)).owner.as_deref(), Some("unit-s1"));
    // Outside any region: city-wide entries.
    let outside = AlertPlace { category: "fire.smoke", point: Some((122.0, 31.0)), grid: None };
    assert_eq!(r.route(&outside).owner.as_deref(), Some("fire-city"));
    let outside = AlertPlace { category: "water.leak", point: Some((122.0, 31.0)), grid: None };
    assert_eq!(r.route(&outside).owner.as_deref(), Some("unit-city"));
    // A grid entry beats everything else for its grid.
    let g2 = AlertPlace { category: "traffic.jam", point: None, grid: Some("g2") };
    let routed = r.route(&g2);
    assert_eq!(routed.owner.as_deref(), Some("unit-c2"));
    assert_eq!(routed.table_version, 3);
    assert!(routed.reason.starts_with("routing table v3, entry 4"), "{}", routed.reason);
}

#[test]
fn a_table_naming_what_the_city_lacks_is_refused_with_the_entry() {
    let bad = |e: RouteEntry| Router::new(city(), RoutingTable { version: 1, entries: vec![entry("*", None, None, "unit-city"), e] }, 50.0).err().unwrap();
    let e = bad(entry("*", None, None, "unit-nowhere"));
    assert_eq!(e, RoutingError::UnknownUnit { entry: 1, unit: "unit-nowhere".into() });
    assert!(e.to_string().contains("routing entry 1"), "{e}");
    assert!(matches!(bad(entry("*", Some("x9"), None, "unit-c1")), RoutingError::UnknownRegion { entry: 1, .. }));
    assert!(matches!(bad(entry("*", None, Some("g9"), "unit-c1")), RoutingError::UnknownGrid { entry: 1, .. }));
    assert!(matches!(bad(entry("*", Some("c1"), Some("g1"), "unit-c1")), RoutingError::RegionAndGrid { entry: 1 }));
    assert!(matches!(bad(entry("fi*re", None, None, "unit-c1")), RoutingError::BadCategory { entry: 1, .. }));
}

#[test]
fn near_a_boundary_every_candidate_unit_is_offered_the_alert_and_one_claims_it() {
    let city = city();
    let config = AlertsConfig::default();
    let r = router(vec![]);
    let routed = r.route(&place("fire.smoke", NEAR_BORDER));
    assert_eq!(routed.owner.as_deref(), Some("unit-c1"));
    assert_eq!(routed.candidates, vec!["unit-c1", "unit-c2"]);
    // 480 m from the border is not near it.
    assert!(r.route(&place("fire.smoke", IN_G1)).candidates.is_empty());

    let mut case = Case::open(routed, deadlines(), t(0));
    case.apply(&Action::Claim, &user("li", "unit-c2"), None, t(10), &city, &config).unwrap();
    assert_eq!(case.owner.as_deref(), Some("unit-c2"));
    assert_eq!(case.claimed.as_ref().map(|c| c.by.as_str()), Some("li"));
    // The other candidate sees it claimed and cannot claim it again.
    let again = case.apply(&Action::Claim, &user("wang", "unit-c1"), None, t(11), &city, &config);
    assert!(matches!(&again, Err(ActionError::Invalid(m)) if m.contains("`unit-c2` claimed")), "{again:?}");
}

#[test]
fn an_acknowledging_candidate_takes_a_boundary_alert() {
    let city = city();
    let mut case = open_case("fire.smoke", NEAR_BORDER);
    case.apply(&Action::Ack, &user("li", "unit-c2"), None, t(5), &city, &AlertsConfig::default()).unwrap();
    assert_eq!(case.owner.as_deref(), Some("unit-c2"));
    assert_eq!(case.status, Status::Acknowledged);
}

#[test]
fn the_whole_lifecycle_is_recorded_with_actor_time_and_note() {
    let city = city();
    let config = AlertsConfig::default();
    let mut case = open_case("fire.smoke", IN_G1);
    assert_eq!(case.status, Status::Assigned);
    assert_eq!(case.ack_due, Some(t(120)));
    assert_eq!(case.arrive_due, Some(t(900)));
    let duty = user("zhang", "unit-c1");
    case.apply(&Action::Ack, &duty, Some("on it"), t(30), &city, &config).unwrap();
    assert_eq!((case.ack_due, case.progress_due), (None, Some(t(630))));
    case.apply(&Action::Dispatch { responders: vec!["resp-7".into()] }, &duty, None, t(40), &city, &config).unwrap();
    case.apply(&Action::Arrive, &user("resp7", "unit-c1"), None, t(300), &city, &config).unwrap();
    assert_eq!(case.next_due(), None);
    case.apply(&Action::Resolve, &duty, Some("kitchen smoke, aired"), t(400), &city, &config).unwrap();
    case.apply(&Action::Reopen, &duty, Some("smoke again"), t(500), &city, &config).unwrap();
    assert_eq!(case.status, Status::Assigned);
    assert_eq!(case.ack_due, Some(t(620)));
    case.apply(&Action::Resolve, &duty, None, t(600), &city, &config).unwrap();
    case.apply(&Action::Close { disposition: "confirmed_incident".into() }, &duty, Some("done"), t(700), &city, &config).unwrap();
    let walk: Vec<(&str, Status, Status, &str)> =
        case.timeline.iter().map(|s| (s.action.as_str(), s.from, s.to, s.actor.as_str())).collect();
    use Status::*;
    assert_eq!(
        walk,
        vec![
            ("routed", New, Assigned, "system"),
            ("ack", Assigned, Acknowledged, "zhang"),
            ("dispatch", Acknowledged, Dispatched, "zhang"),
            ("arrive", Dispatched, OnScene, "resp7"),
            ("resolve", OnScene, Resolved, "zhang"),
            ("reopen", Resolved, Assigned, "zhang"),
            ("resolve", Assigned, Resolved, "zhang"),
            ("close", Resolved, Closed, "zhang"),
        ]
    );
    assert_eq!(case.timeline[1].note.as_deref(), Some("on it"));
    assert_eq!(case.timeline[3].at, t(300));
    assert_eq!(case.responders, vec!["resp-7"]);
    assert_eq!(case.disposition.as_deref(), Some("confirmed_incident"));
    // Closed is final.
    let e = case.apply(&Action::Reopen, &duty, None, t(800), &city, &config).unwrap_err();
    assert!(e.to_string().contains("cannot reopen an alert that is closed"), "{e}");
}

#[test]
fn invalid_transitions_and_missing_fields_leave_the_case_unchanged() {
    let city = city();
    let config = AlertsConfig::default();
    let duty = user("zhang", "unit-c1");
    let mut case = open_case("fire.smoke", IN_G1);
    let before = case.clone();
    for (action, note, needle) in [
        (Action::Reopen, None, "only a resolved or suppressed alert can be reopened"),
        (Action::Close { disposition: "confirmed_incident".into() }, None, "needs a note"),
        (Action::Close { disposition: "boring".into() }, Some("x"), "not one of the configured codes"),
        (Action::Transfer { to: "unit-c2".into() }, None, "needs a note"),
        (Action::Transfer { to: "unit-x".into() }, Some("x"), "not in the city's units"),
        (Action::Transfer { to: "unit-c1".into() }, Some("x"), "already owned"),
        (Action::Claim, None, "acknowledge it instead"),
    ] {
        let e = case.apply(&action, &duty, note, t(1), &city, &config).unwrap_err();
        assert!(e.to_string().contains(needle), "{action:?}: {e}");
        assert_eq!(case, before);
    }
    // A unit elsewhere may not act; the units above the owner may.
    let e = case.apply(&Action::Ack, &user("li", "unit-c2"), None, t(1), &city, &config).unwrap_err();
    assert!(matches!(e, ActionError::NotResponsible { .. }), "{e}");
    assert_eq!(case, before);
    case.apply(&Action::Ack, &user("chief", "unit-s1"), None, t(2), &city, &config).unwrap();
    let e = case.apply(&Action::Ack, &duty, None, t(3), &city, &config).unwrap_err();
    assert!(e.to_string().contains("acknowledged already"), "{e}");
}

#[test]
fn a_missed_acknowledgement_escalates_up_the_chain_keeping_the_owner() {
    let city = city();
    let mut case = open_case("fire.smoke", IN_G1);
    assert!(case.on_clock(t(119), &city).is_empty());
    let steps = case.on_clock(t(120), &city);
    assert_eq!(steps.len(), 1);
    assert_eq!((steps[0].action.as_str(), steps[0].unit.as_deref()), ("escalate", Some("unit-s1")));
    assert_eq!(case.status, Status::Escalated);
    assert_eq!(case.owner.as_deref(), Some("unit-c1"));
    assert_eq!(case.ack_due, Some(t(240)));
    case.on_clock(t(240), &city);
    case.on_clock(t(360), &city);
    let told: Vec<&str> = case.escalations.iter().map(|e| e.unit.as_str()).collect();
    assert_eq!(told, vec!["unit-s1", "unit-d1", "unit-city"]);
    // The top reached: no further escalation, the clock stops asking.
    let steps = case.on_clock(t(480), &city);
    assert!(steps[0].note.as_deref().unwrap().contains("no unit above"));
    assert_eq!(case.ack_due, None);
    // The district, told, may take it; the owner still may too.
    let mut other = case.clone();
    other.apply(&Action::Ack, &user("d", "unit-d1"), None, t(500), &city, &AlertsConfig::default()).unwrap();
    case.apply(&Action::Ack, &user("z", "unit-c1"), None, t(500), &city, &AlertsConfig::default()).unwrap();
    assert_eq!(case.status, Status::Acknowledged);
    assert_eq!(case.owner.as_deref(), Some("unit-c1"));
}

#[test]
fn an_acknowledged_alert_not_progressed_is_retriggered_and_a_missed_arrival_told_upward() {
    let city = city();
    let config = AlertsConfig::default();
    let mut case = open_case("fire.smoke", IN_G1);
    case.apply(&Action::Ack, &user("z", "unit-c1"), None, t(60), &city, &config).unwrap();
    assert!(case.on_clock(t(659), &city).is_empty());
    let steps = case.on_clock(t(660), &city);
    assert_eq!(steps[0].action, "retrigger");
    assert_eq!(case.status, Status::Assigned);
    assert_eq!(case.ack_due, Some(t(780)));
    case.apply(&Action::Dispatch { responders: vec![] }, &user("z", "unit-c1"), None, t(700), &city, &config).unwrap();
    let steps = case.on_clock(t(900), &city);
    assert_eq!((steps[0].action.as_str(), steps[0].unit.as_deref()), ("escalate", Some("unit-s1")));
    assert_eq!(case.status, Status::Dispatched, "a missed arrival tells the unit above but keeps the work going");
    assert_eq!(case.escalations[0].reason, "arrival deadline missed");
}

#[test]
fn a_transfer_moves_ownership_and_restarts_the_acknowledgement_clock() {
    let city = city();
    let config = AlertsConfig::default();
    let mut case = open_case("fire.smoke", IN_G1);
    case.apply(&Action::Transfer { to: "fire-city".into() }, &user("z", "unit-c1"), Some("a fire, not ours"), t(30), &city, &config)
        .unwrap();
    assert_eq!((case.status, case.owner.as_deref()), (Status::Transferred, Some("fire-city")));
    assert_eq!(case.ack_due, Some(t(150)));
    case.apply(&Action::Ack, &user("f", "fire-city"), None, t(40), &city, &config).unwrap();
    // Both units keep seeing it.
    let scopes = alert_scopes(&city, Some("g1"), &case);
    assert_eq!(scopes, vec!["region:c1", "region:d1", "region:s1", "unit:fire-city", "unit:unit-c1"]);
}

#[test]
fn jurisdictions_see_their_region_and_what_was_routed_to_them() {
    let city = city();
    let case = open_case("fire.smoke", IN_G1);
    let scopes = alert_scopes(&city, Some("g1"), &case);
    assert!(Jurisdiction::of_unit(&city, "unit-c1").sees(&scopes));
    assert!(Jurisdiction::of_unit(&city, "unit-s1").sees(&scopes));
    assert!(Jurisdiction::of_unit(&city, "unit-city").sees(&scopes));
    assert!(!Jurisdiction::of_unit(&city, "unit-c2").sees(&scopes));
    assert!(!Jurisdiction::of_unit(&city, "unit-unknown").sees(&scopes));
    assert_eq!(Jurisdiction::of_unit(&city, "fire-city"), Jurisdiction::City);
}

#[test]
fn deadlines_come_from_the_first_matching_entry() {
    let mut config = AlertsConfig::default();
    assert_eq!(config.deadlines_for("x", "critical").ack, Duration::from_secs(120));
    assert_eq!(config.deadlines_for("x", "low").ack, Duration::from_secs(900));
    config.deadlines.insert(
        0,
        DeadlineRule { category: "fire.*".into(), severity: None, ack: Duration::from_secs(30), arrive: Duration::from_secs(300), progress: Duration::from_secs(60) },
    );
    assert_eq!(config.deadlines_for("fire.smoke", "low").ack, Duration::from_secs(30));
    // Device upkeep runs on days, not minutes, whatever its severity.
    assert_eq!(config.deadlines_for("device.offline", "critical").ack, Duration::from_secs(4 * 3600));
    assert!(config.is_maintenance("device.battery") && !config.is_maintenance("fire.smoke"));
    assert!(config.validate().is_ok());
    config.deadlines[0].severity = Some("urgent".into());
    assert!(config.validate().unwrap_err().contains("alerts.deadlines[0].severity `urgent`"));
}

#[test]
fn a_case_survives_a_round_trip_through_json() {
    let city = city();
    let mut case = open_case("fire.smoke", NEAR_BORDER);
    case.apply(&Action::Claim, &user("li", "unit-c2"), Some("ours"), t(3), &city, &AlertsConfig::default()).unwrap();
    case.on_clock(t(200), &city);
    let text = serde_json::to_string(&case).unwrap();
    assert!(text.contains("\"status\":\"escalated\""), "{text}");
    let back: Case = serde_json::from_str(&text).unwrap();
    assert_eq!(back, case);
}

fn silence(reason: &str) -> Silence {
    Silence {
        id: "s-1".into(),
        rule: None,
        category: None,
        source: None,
        region: None,
        grid: None,
        reason: reason.into(),
        owner: "zhang".into(),
        expires: t(3600),
        created_at: Some(t(0)),
    }
}

#[test]
fn a_silence_covers_alerts_matching_every_scope_it_names_while_it_runs() {
    let city = city();
    let target = SilenceTarget { rule: "smoke-alarm", category: "fire.smoke", key: "smoke-17", grid: Some("g1") };
    let mut s = silence("fire drill");
    s.category = Some("fire.*".into());
    s.region = Some("s1".into());
    assert!(s.check(&city, t(0)).is_ok());
    assert!(s.covers(&city, &target), "a prefix and an enclosing region");
    assert!(!s.covers(&city, &SilenceTarget { grid: None, ..target }), "no place, no region match");
    s.region = Some("c2".into());
    assert!(!s.covers(&city, &target), "another community");
    s.region = None;
    s.source = Some("smoke-18".into());
    assert!(!s.covers(&city, &target), "another device");
    s.source = Some("smoke-17".into());
    assert!(s.covers(&city, &target));
    assert!(s.active(t(3599)) && !s.active(t(3600)));

    // What a person must give, and what the city must have.
    let now = t(0);
    let bare = silence("works");
    assert!(bare.check(&city, now).unwrap_err().contains("needs a scope"));
    let mut bad = silence(" ");
    bad.grid = Some("g1".into());
    assert!(bad.check(&city, now).unwrap_err().contains("reason"));
    let mut bad = silence("works");
    bad.grid = Some("g9".into());
    assert!(bad.check(&city, now).unwrap_err().contains("grid `g9`"));
    bad.grid = Some("g1".into());
    bad.expires = t(-1);
    assert!(bad.check(&city, now).unwrap_err().contains("not in the future"));
    bad.expires = t(31 * 86_400);
    assert!(bad.check(&city, now).unwrap_err().contains("30 days"));
}

#[test]
fn a_suppressed_alert_keeps_no_deadlines_and_can_be_reopened_or_closed() {
    let city = city();
    let config = AlertsConfig::default();
    let duty = user("zhang", "unit-c1");
    let mut case = open_case("fire.smoke", IN_G1);
    case.suppress("s-1", "fire drill", t(0));
    assert_eq!((case.status, case.next_due()), (Status::Suppressed, None));
    assert_eq!(case.suppressed_by.as_deref(), Some("s-1"));
    assert_eq!(case.timeline.last().unwrap().note.as_deref(), Some("silence s-1: fire drill"));
    assert!(case.on_clock(t(100_000), &city).is_empty(), "the clock leaves it alone");
    let e = case.apply(&Action::Ack, &duty, None, t(5), &city, &config).unwrap_err();
    assert!(e.to_string().contains("reopen it to handle it"), "{e}");
    let mut closed = case.clone();
    closed.apply(&Action::Close { disposition: "test".into() }, &duty, Some("drill"), t(6), &city, &config).unwrap();
    assert_eq!(closed.status, Status::Closed);
    case.apply(&Action::Reopen, &duty, Some("not the drill"), t(10), &city, &config).unwrap();
    assert_eq!((case.status, case.ack_due), (Status::Assigned, Some(t(130))));
}

//! The conformance suite: the behaviour every [`StateStore`] backend must show.
//!
//! It is written against the trait only, so every backend runs the very same checks, each
//! section on a new, empty store (`state/tests.rs` and `state/postgres_tests.rs`):
//!
//! ```ignore
//! conformance_suite(&|options| Box::new(SqliteState::in_memory_with(options).unwrap()));
//! conformance_suite(&|options| Box::new(PgState::connect(&url, &fresh_schema(), options).unwrap()));
//! ```

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use crate::Status;

use super::{
    AlertFilter, AlertRow, DeliveryAttempt, NewAuditEntry, NewDelivery, DeadLetterChannel, DeadLetterFilter, DeviceRow, FeatureRow, Layer, NewDeadLetter,
    Page, PageRequest, RulePut, SearchApproval, StateError, StateOptions, StateStore, UnitRow, MAX_PAGE_LIMIT,
};

/// Runs every check against stores made by `new_store`.
///
/// `new_store` must return a new, empty store honouring the options it is given; each
/// section of the suite gets its own store, so the sections do not depend on each other.
/// Panics, naming the check, at the first behaviour that differs from the contract of
/// [`StateStore`].
pub fn conformance_suite(new_store: &dyn Fn(StateOptions) -> Box<dyn StateStore>) {
    let fresh = || new_store(StateOptions::default());
    check_meta(&*fresh());
    check_layers(&*fresh());
    check_devices(&*fresh());
    check_devices_bulk(&*fresh());
    check_device_order_and_paging(&*fresh());
    check_units(&*fresh());
    check_rules(&*fresh());
    check_alerts(&*fresh());
    check_alert_scopes(&*fresh());
    check_alerts_updated_since(&*fresh());
    check_routing(&*fresh());
    check_deliveries(&*fresh());
    check_audit(&*fresh());
    check_audit_retention(&*fresh());
    check_alert_retention(&*fresh());
    check_dead_letters(&*fresh());
    check_dead_letter_limit(&*new_store(StateOptions {
        dead_letter_max_rows: 10,
    }));
    check_users_and_sessions(&*fresh());
    check_search_approvals(&*fresh());
    check_page_requests(&*fresh());
    check_concurrent_use(&*fresh());
}

// ---------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------

/// A fixed, whole-second instant `secs` after a base time (no sub-microsecond parts, so
/// round trips compare equal).
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_795_000_000 + secs, 0).expect("time in range")
}

#[track_caller]
fn expect_kind<T: std::fmt::Debug>(result: Result<T, StateError>, kind: Status) -> StateError {
    match result {
        Ok(value) => panic!("expected a {kind:?} error, got Ok({value:?})"),
        Err(e) => {
            assert_eq!(e.status(), kind, "wrong error status for: {e}");
            e
        }
    }
}

/// Reads every page of a list with page size `limit`, checking that every page but the
/// last is full, that `next` is given only when more items follow, and that the walk ends.
#[track_caller]
fn walk<T>(limit: usize, mut fetch: impl FnMut(&PageRequest) -> Page<T>) -> Vec<T> {
    let mut out = Vec::new();
    let mut request = PageRequest::first(limit);
    for _ in 0..1_000_000 {
        let page = fetch(&request);
        assert!(
            page.items.len() <= limit,
            "a page holds {} items, more than {limit}",
            page.items.len()
        );
        if request.after.is_some() {
            assert!(
                !page.items.is_empty(),
                "`next` was given although no item followed"
            );
        }
        let last = page.next.is_none();
        if !last {
            assert_eq!(
                page.items.len(),
                limit,
                "a page that has a next one must be full"
            );
        }
        out.extend(page.items);
        match page.next {
            Some(next) => request = PageRequest::after(next, limit),
            None => return out,
        }
    }
    panic!("paging did not end after a million pages");
}

fn device(id: &str, i: usize) -> DeviceRow {
    DeviceRow {
        id: id.to_string(),
        kind: if i.is_multiple_of(3) {
            "camera"
        } else {
            "smoke_detector"
        }
        .into(),
        lon: 121.0 + (i % 1000) as f64 * 0.0001,
        lat: 31.0 + (i / 1000) as f64 * 0.001,
        grid: if i.is_multiple_of(5) {
            None
        } else {
            Some(format!("g-{}", i % 40))
        },
        owner_unit: if i.is_multiple_of(7) {
            None
        } else {
            Some(format!("u-{}", i % 12))
        },
        attrs: json!({ "model": format!("m{}", i % 4), "floor": i % 20 }),
        registered_at: t(i as i64),
    }
}

fn dead(channel: DeadLetterChannel, at: i64, n: usize) -> NewDeadLetter {
    NewDeadLetter {
        received_at: t(at),
        channel,
        origin: format!("origin-{n}"),
        line: if n.is_multiple_of(2) {
            Some(n as u64 + 1)
        } else {
            None
        },
        field: if n.is_multiple_of(3) {
            Some("time".into())
        } else {
            None
        },
        reason: format!("reason {n}: `time` is not RFC 3339"),
        raw: format!("{{\"n\":{n},\"time\":\"yesterday\"}}"),
    }
}

fn alert(id: &str, time: i64, status: &str) -> AlertRow {
    AlertRow {
        id: id.into(),
        rule: "hazmat-speeding".into(),
        key: format!("truck-{id}"),
        status: status.into(),
        severity: "high".into(),
        category: "traffic.hazmat".into(),
        time: t(time),
        grid: Some("g-1".into()),
        body: json!({ "evidence": [format!("ev-{id}")], "lon": 121.1, "lat": 31.2 }),
        updated_at: t(time + 1),
        scopes: vec!["region:c-1".into(), format!("unit:u-{}", time % 2)],
        class: if time % 3 == 0 { "maintenance".into() } else { "incident".into() },
        incident: Some(format!("inc-{}", time % 4)),
    }
}

fn with_status(status: &str) -> AlertFilter {
    AlertFilter { statuses: vec![status.into()], ..AlertFilter::default() }
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

// ---------------------------------------------------------------------------------------
// Sections.
// ---------------------------------------------------------------------------------------

fn check_meta(store: &dyn StateStore) {
    assert!(
        store.schema_version().unwrap() >= 1,
        "a new store is at schema version 1 or later"
    );
    assert_eq!(store.meta_get("node.name").unwrap(), None);
    store.meta_set("node.name", "district-7").unwrap();
    assert_eq!(
        store.meta_get("node.name").unwrap().as_deref(),
        Some("district-7")
    );
    store.meta_set("node.name", "街道 7").unwrap();
    assert_eq!(
        store.meta_get("node.name").unwrap().as_deref(),
        Some("街道 7")
    );
    store.meta_set("empty", "").unwrap();
    assert_eq!(store.meta_get("empty").unwrap().as_deref(), Some(""));
    let version = store.schema_version().unwrap();
    expect_kind(store.meta_set("schema_version", "99"), Status::InvalidInput);
    expect_kind(store.meta_set("", "x"), Status::InvalidInput);
    assert_eq!(
        store.schema_version().unwrap(),
        version,
        "schema_version is not writable"
    );
}

fn feature(layer: Layer, id: &str, n: i64) -> FeatureRow {
    FeatureRow {
        layer,
        id: id.into(),
        properties: json!({ "id": id, "name": format!("{id} name"), "level": n }),
        geometry: json!({ "type": "Point", "coordinates": [121.0 + n as f64 / 100.0, 31.0] }),
    }
}

fn check_layers(store: &dyn StateStore) {
    for layer in Layer::ALL {
        assert!(
            store.list_layer(layer).unwrap().is_empty(),
            "a new store has no {layer}"
        );
        assert_eq!(layer.as_str().parse::<Layer>().unwrap(), layer);
    }
    expect_kind("parks".parse::<Layer>(), Status::InvalidInput);

    let regions = vec![
        feature(Layer::Regions, "r-b", 1),
        feature(Layer::Regions, "r-a", 2),
        feature(Layer::Regions, "r-c", 3),
    ];
    assert_eq!(store.replace_layer(Layer::Regions, &regions).unwrap(), 3);
    assert_eq!(
        store.list_layer(Layer::Regions).unwrap(),
        regions,
        "listed in the given order"
    );

    let mut grids = vec![
        feature(Layer::Grids, "g-1", 1),
        feature(Layer::Grids, "g-2", 2),
    ];
    grids[1].geometry = serde_json::Value::Null;
    store.replace_layer(Layer::Grids, &grids).unwrap();
    assert_eq!(
        store.list_layer(Layer::Grids).unwrap(),
        grids,
        "null geometry is kept"
    );
    assert_eq!(
        store.list_layer(Layer::Regions).unwrap(),
        regions,
        "other layers untouched"
    );

    let replaced = vec![feature(Layer::Regions, "r-z", 9)];
    store.replace_layer(Layer::Regions, &replaced).unwrap();
    assert_eq!(
        store.list_layer(Layer::Regions).unwrap(),
        replaced,
        "old features are gone"
    );

    // Refused batches leave the layer as it was.
    let wrong_layer = vec![
        feature(Layer::Regions, "r-1", 1),
        feature(Layer::Zones, "z-1", 1),
    ];
    let e = expect_kind(
        store.replace_layer(Layer::Regions, &wrong_layer),
        Status::InvalidInput,
    );
    assert!(
        e.to_string().contains("z-1"),
        "the error names the feature: {e}"
    );
    let duplicate = vec![
        feature(Layer::Regions, "r-1", 1),
        feature(Layer::Regions, "r-1", 2),
    ];
    expect_kind(
        store.replace_layer(Layer::Regions, &duplicate),
        Status::InvalidInput,
    );
    let mut bad_props = feature(Layer::Regions, "r-1", 1);
    bad_props.properties = json!([1, 2]);
    expect_kind(
        store.replace_layer(Layer::Regions, &[bad_props]),
        Status::InvalidInput,
    );
    expect_kind(
        store.replace_layer(Layer::Regions, &[feature(Layer::Regions, "", 1)]),
        Status::InvalidInput,
    );
    assert_eq!(
        store.list_layer(Layer::Regions).unwrap(),
        replaced,
        "refused batches change nothing"
    );

    assert_eq!(store.replace_layer(Layer::Regions, &[]).unwrap(), 0);
    assert!(
        store.list_layer(Layer::Regions).unwrap().is_empty(),
        "an empty replace clears"
    );
    assert_eq!(store.list_layer(Layer::Grids).unwrap(), grids);
}

fn check_devices(store: &dyn StateStore) {
    assert_eq!(store.device_count().unwrap(), 0);
    assert_eq!(store.device("cam-1").unwrap(), None);
    let rows = vec![device("cam-1", 1), device("cam-2", 5), device("smk-1", 7)];
    assert_eq!(store.upsert_devices(&rows).unwrap(), 3);
    assert_eq!(store.device_count().unwrap(), 3);
    for row in &rows {
        assert_eq!(
            store.device(&row.id).unwrap().as_ref(),
            Some(row),
            "round trip of {}",
            row.id
        );
    }

    // An update replaces the fields but keeps the first registration time.
    let mut moved = device("cam-1", 2);
    moved.lon = 121.5;
    moved.grid = Some("g-new".into());
    moved.attrs = json!({});
    moved.registered_at = t(10_000);
    store.upsert_devices(&[moved.clone()]).unwrap();
    let stored = store.device("cam-1").unwrap().unwrap();
    assert_eq!(
        stored.registered_at, rows[0].registered_at,
        "registered_at is kept"
    );
    assert_eq!(
        stored,
        DeviceRow {
            registered_at: rows[0].registered_at,
            ..moved.clone()
        },
        "other fields are replaced"
    );

    // A later duplicate in the same batch wins.
    let mut first = device("dup", 3);
    first.kind = "first".into();
    let mut second = device("dup", 3);
    second.kind = "second".into();
    store.upsert_devices(&[first, second]).unwrap();
    assert_eq!(store.device("dup").unwrap().unwrap().kind, "second");
    assert_eq!(store.device_count().unwrap(), 4);

    // One bad row refuses the whole batch, and the error names it.
    let mut bad = device("bad-lon", 4);
    bad.lon = 200.0;
    let e = expect_kind(
        store.upsert_devices(&[device("new-ok", 1), bad]),
        Status::InvalidInput,
    );
    let message = e.to_string();
    assert!(
        message.contains("bad-lon") && message.contains("lon"),
        "names row and field: {message}"
    );
    assert!(
        message.contains("item 2 of 2"),
        "names the position: {message}"
    );
    assert_eq!(
        store.device("new-ok").unwrap(),
        None,
        "nothing of a refused batch is written"
    );
    for broken in [
        DeviceRow {
            lat: f64::NAN,
            ..device("nan", 1)
        },
        DeviceRow {
            lat: 91.0,
            ..device("lat", 1)
        },
        DeviceRow {
            id: String::new(),
            ..device("x", 1)
        },
        DeviceRow {
            id: " padded".into(),
            ..device("x", 1)
        },
        DeviceRow {
            kind: " ".into(),
            ..device("kind", 1)
        },
        DeviceRow {
            attrs: json!("text"),
            ..device("attrs", 1)
        },
        DeviceRow {
            grid: Some(String::new()),
            ..device("grid", 1)
        },
    ] {
        expect_kind(store.upsert_devices(&[broken]), Status::InvalidInput);
    }
    assert_eq!(store.device_count().unwrap(), 4);
    assert_eq!(store.upsert_devices(&[]).unwrap(), 0);

    store.delete_device("cam-2").unwrap();
    assert_eq!(store.device("cam-2").unwrap(), None);
    let e = expect_kind(store.delete_device("cam-2"), Status::NotFound);
    assert!(e.to_string().contains("cam-2"), "names the id: {e}");
    assert_eq!(store.device_count().unwrap(), 3);
}

fn check_devices_bulk(store: &dyn StateStore) {
    const N: usize = 20_000;
    let rows: Vec<DeviceRow> = (0..N).map(|i| device(&format!("dev-{i:05}"), i)).collect();
    assert_eq!(store.upsert_devices(&rows).unwrap(), N);
    assert_eq!(store.device_count().unwrap(), N as u64);
    for i in [0, 1, 4_999, 12_345, N - 1] {
        assert_eq!(store.device(&rows[i].id).unwrap().as_ref(), Some(&rows[i]));
    }

    let listed = walk(997, |p| store.list_devices(p).unwrap());
    assert_eq!(listed.len(), N, "paging returns every device once");
    assert_eq!(
        listed, rows,
        "paging returns the rows in id order, unchanged"
    );

    // A second upsert of the same ids updates in place.
    let updated: Vec<DeviceRow> = rows
        .iter()
        .map(|d| DeviceRow {
            kind: "gateway".into(),
            registered_at: t(99_999),
            ..d.clone()
        })
        .collect();
    assert_eq!(store.upsert_devices(&updated).unwrap(), N);
    assert_eq!(store.device_count().unwrap(), N as u64);
    for i in [0, 7_777, N - 1] {
        let got = store.device(&rows[i].id).unwrap().unwrap();
        assert_eq!(got.kind, "gateway");
        assert_eq!(got.registered_at, rows[i].registered_at);
    }

    // An oversized page is lowered to the maximum.
    let page = store
        .list_devices(&PageRequest::first(MAX_PAGE_LIMIT * 5))
        .unwrap();
    assert_eq!(page.items.len(), MAX_PAGE_LIMIT);
    assert!(page.next.is_some());
}

fn check_device_order_and_paging(store: &dyn StateStore) {
    // Ids are ordered by their bytes (UTF-8), like Rust's `str` ordering.
    let ids = [
        "b", "a", "B", "Alpha", "alpha", "Ünit", "zeta", "z-1", "z_1", "0", "10", "9", "街道",
    ];
    let rows: Vec<DeviceRow> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| device(id, i))
        .collect();
    store.upsert_devices(&rows).unwrap();
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    for limit in [1, 2, 3, 5, 12, 13, 14, 100] {
        let listed: Vec<String> = walk(limit, |p| store.list_devices(p).unwrap())
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(listed, expected, "devices with page size {limit}");
    }
    // A cursor stays valid when the row it points at is deleted meanwhile.
    let page = store.list_devices(&PageRequest::first(4)).unwrap();
    let last = page.items.last().unwrap().id.clone();
    store.delete_device(&last).unwrap();
    let rest = store
        .list_devices(&PageRequest::after(page.next.unwrap(), 100))
        .unwrap();
    assert_eq!(rest.items.len(), expected.len() - 4);
    assert!(rest.items.iter().all(|d| d.id > last));
}

fn check_units(store: &dyn StateStore) {
    assert!(store.list_units().unwrap().is_empty());
    let unit = |id: &str, parent: Option<&str>| UnitRow {
        id: id.into(),
        name: format!("{id} station"),
        kind: "police".into(),
        region: Some("r-1".into()),
        parent_unit: parent.map(str::to_string),
    };
    let units = vec![
        unit("u-2", Some("u-1")),
        unit("u-1", None),
        unit("u-3", Some("u-1")),
    ];
    assert_eq!(store.replace_units(&units).unwrap(), 3);
    let mut sorted = units.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(store.list_units().unwrap(), sorted);
    assert_eq!(store.unit("u-2").unwrap(), Some(units[0].clone()));
    assert_eq!(store.unit("u-9").unwrap(), None);

    expect_kind(
        store.replace_units(&[unit("u-5", None), unit("u-5", None)]),
        Status::InvalidInput,
    );
    expect_kind(
        store.replace_units(&[UnitRow {
            name: String::new(),
            ..unit("u-5", None)
        }]),
        Status::InvalidInput,
    );
    assert_eq!(
        store.list_units().unwrap(),
        sorted,
        "refused batches change nothing"
    );

    store.replace_units(&[unit("u-9", None)]).unwrap();
    assert_eq!(store.list_units().unwrap(), vec![unit("u-9", None)]);
    assert_eq!(store.unit("u-1").unwrap(), None);
}

fn check_rules(store: &dyn StateStore) {
    let put = |id: &str, body: &str, expected: Option<i64>| RulePut {
        id: id.into(),
        body: body.into(),
        enabled: true,
        updated_by: "admin".into(),
        expected_version: expected,
    };
    assert!(store.list_rules().unwrap().is_empty());
    let before = Utc::now() - Duration::seconds(5);
    let created = store
        .put_rule(&put("speeding", "kind: speed\nlimit_kmh: 60\n", None))
        .unwrap();
    let after = Utc::now() + Duration::seconds(5);
    assert_eq!(created.version, 1);
    assert!(
        created.updated_at > before && created.updated_at < after,
        "updated_at is now"
    );
    assert_eq!(created.updated_by, "admin");
    assert_eq!(
        store.rule("speeding").unwrap(),
        Some(created.clone()),
        "put returns the stored row"
    );

    let second = store
        .put_rule(&RulePut {
            enabled: false,
            ..put("speeding", "kind: speed\nlimit_kmh: 50\n", None)
        })
        .unwrap();
    assert_eq!(second.version, 2);
    assert!(!second.enabled);
    let third = store
        .put_rule(&put("speeding", "kind: speed\nlimit_kmh: 40\n", Some(2)))
        .unwrap();
    assert_eq!(third.version, 3);

    // Stale or wrong expectations fail and change nothing.
    let e = expect_kind(
        store.put_rule(&put("speeding", "stale", Some(2))),
        Status::Conflict,
    );
    assert!(
        e.to_string().contains('3') && e.to_string().contains("speeding"),
        "names versions: {e}"
    );
    expect_kind(
        store.put_rule(&put("speeding", "create", Some(0))),
        Status::Conflict,
    );
    expect_kind(
        store.put_rule(&put("ghost", "x", Some(4))),
        Status::Conflict,
    );
    assert_eq!(store.rule("ghost").unwrap(), None);
    assert_eq!(store.rule("speeding").unwrap(), Some(third.clone()));

    let created_new = store
        .put_rule(&put("offline", "{\"kind\":\"absence\"}", Some(0)))
        .unwrap();
    assert_eq!(created_new.version, 1);
    for bad in [
        put("", "x", None),
        put("x", "  ", None),
        put("x", "b", Some(-1)),
    ] {
        expect_kind(store.put_rule(&bad), Status::InvalidInput);
    }

    let ids: Vec<String> = store
        .list_rules()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["offline", "speeding"]);

    expect_kind(store.delete_rule("speeding", Some(1)), Status::Conflict);
    assert!(store.rule("speeding").unwrap().is_some());
    store.delete_rule("speeding", Some(3)).unwrap();
    assert_eq!(store.rule("speeding").unwrap(), None);
    expect_kind(store.delete_rule("speeding", None), Status::NotFound);
    store.delete_rule("offline", None).unwrap();
    assert!(store.list_rules().unwrap().is_empty());
}

fn check_alert_scopes(store: &dyn StateStore) {
    // Even times are unit u-0's, odd ones u-1's; all are in region c-1.
    let alerts: Vec<AlertRow> = (0..12).map(|i| alert(&format!("s-{i:02}"), i, ["new", "assigned"][i as usize % 2])).collect();
    let (first, rest) = alerts.split_at(5);
    for a in first {
        store.insert_alert(a).unwrap();
    }
    store.write_alerts(rest, &[]).unwrap();
    let ids = |filter: AlertFilter| -> Vec<String> {
        let mut out: Vec<String> = walk(4, |p| store.list_alerts(&filter, p).unwrap()).into_iter().map(|a| a.id).collect();
        out.sort();
        out
    };
    let scoped = |scopes: &[&str]| AlertFilter { scopes: Some(scopes.iter().map(|s| s.to_string()).collect()), ..AlertFilter::default() };
    let even: Vec<String> = (0..12).step_by(2).map(|i| format!("s-{i:02}")).collect();
    assert_eq!(ids(scoped(&["unit:u-0"])), even);
    assert_eq!(ids(scoped(&["unit:u-1", "unit:u-0"])).len(), 12);
    assert_eq!(ids(scoped(&["region:c-1"])).len(), 12);
    assert!(ids(scoped(&["region:c-2"])).is_empty());
    assert!(ids(scoped(&[])).is_empty(), "no scopes sees nothing");
    // Statuses and scopes together; several statuses at once.
    let both = AlertFilter { statuses: vec!["new".into()], scopes: Some(vec!["unit:u-1".into()]), ..AlertFilter::default() };
    assert!(ids(both).is_empty(), "odd times are all `assigned`");
    let any = AlertFilter { statuses: vec!["new".into(), "assigned".into()], ..AlertFilter::default() };
    assert_eq!(ids(any).len(), 12);
    // Maintenance tickets apart from incidents (times 0, 3, 6, 9 are tickets).
    let tickets = AlertFilter { class: Some("maintenance".into()), ..AlertFilter::default() };
    assert_eq!(ids(tickets), ["s-00", "s-03", "s-06", "s-09"]);
    let incidents = AlertFilter { class: Some("incident".into()), scopes: Some(vec!["unit:u-0".into()]), ..AlertFilter::default() };
    assert_eq!(ids(incidents), ["s-02", "s-04", "s-08", "s-10"]);
    let grouped = AlertFilter { incident: Some("inc-1".into()), ..AlertFilter::default() };
    assert_eq!(ids(grouped), ["s-01", "s-05", "s-09"]);
    // Severity, category, a scope within the caller's, and a time range.
    let mut critical = alerts[7].clone();
    critical.severity = "critical".into();
    critical.category = "fire.smoke".into();
    store.update_alert(&critical).unwrap();
    let severe = AlertFilter { severities: vec!["critical".into(), "low".into()], ..AlertFilter::default() };
    assert_eq!(ids(severe), ["s-07"]);
    let fires = AlertFilter { categories: vec!["fire.smoke".into()], ..AlertFilter::default() };
    assert_eq!(ids(fires), ["s-07"]);
    let in_region = AlertFilter { within: Some("region:c-1".into()), scopes: Some(vec!["unit:u-1".into()]), ..AlertFilter::default() };
    assert_eq!(ids(in_region).len(), 6);
    assert!(ids(AlertFilter { within: Some("region:c-2".into()), ..AlertFilter::default() }).is_empty());
    let window = AlertFilter { since: Some(t(3)), until: Some(t(6)), ..AlertFilter::default() };
    assert_eq!(ids(window), ["s-03", "s-04", "s-05"]);
    // An update adds scopes (a transfer to another unit) and keeps the old ones.
    let mut moved = alerts[0].clone();
    moved.scopes.push("unit:u-9".into());
    store.update_alert(&moved).unwrap();
    assert_eq!(ids(scoped(&["unit:u-9"])), ["s-00"]);
    assert!(ids(scoped(&["unit:u-0"])).contains(&"s-00".to_string()));
    let mut again = moved.clone();
    again.scopes.push("unit:u-8".into());
    store.write_alerts(&[], &[again.clone()]).unwrap();
    assert_eq!(ids(scoped(&["unit:u-8"])), ["s-00"]);
    assert_eq!(store.alert("s-00").unwrap().unwrap().scopes, again.scopes, "the row reads back its scopes");
}

fn check_alerts_updated_since(store: &dyn StateStore) {
    // Twelve alerts last written in another order than their event times (even times are
    // `new` and unit u-0's, odd ones `acked` and u-1's; times 0, 3, 6, 9 are maintenance).
    let mark = t(1_006);
    let mut alerts: Vec<AlertRow> = (0..12)
        .map(|i| AlertRow {
            updated_at: t(1_000 + (i * 5) % 12),
            ..alert(&format!("u-{i:02}"), i, ["new", "acked"][i as usize % 2])
        })
        .collect();
    // One written a microsecond before the mark; u-06 is written exactly at it.
    alerts[0].updated_at = mark - Duration::microseconds(1);
    let (first, rest) = alerts.split_at(6);
    for a in first {
        store.insert_alert(a).unwrap();
    }
    store.write_alerts(rest, &[]).unwrap();

    let ids = |rows: &[AlertRow]| -> Vec<String> { rows.iter().map(|a| a.id.clone()).collect() };
    let expect = |alerts: &[AlertRow], keep: &dyn Fn(&AlertRow) -> bool| -> Vec<AlertRow> {
        let mut rows: Vec<AlertRow> = alerts.iter().filter(|a| keep(a)).cloned().collect();
        rows.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
        rows
    };
    let changed = |since: DateTime<Utc>| AlertFilter { updated_since: Some(since), ..AlertFilter::default() };
    let expected = expect(&alerts, &|a| a.updated_at >= mark);
    assert_eq!(
        ids(&expected),
        ["u-11", "u-09", "u-07", "u-06", "u-04", "u-02"],
        "the model: written at or after the mark, newest event time first"
    );
    for limit in [1, 2, 4, 6, 7] {
        let listed = walk(limit, |p| store.list_alerts(&changed(mark), p).unwrap());
        assert_eq!(listed, expected, "alerts written since the mark, page size {limit}");
    }

    // Together with every other kind of filter, paged.
    type Keep = dyn Fn(&AlertRow) -> bool;
    let combined: [(AlertFilter, &Keep); 5] = [
        (AlertFilter { statuses: vec!["new".into()], ..changed(mark) }, &|a| a.status == "new"),
        (AlertFilter { scopes: Some(vec!["unit:u-1".into()]), ..changed(mark) }, &|a| a.time.timestamp() % 2 == 1),
        (AlertFilter { class: Some("maintenance".into()), ..changed(mark) }, &|a| a.class == "maintenance"),
        (AlertFilter { since: Some(t(4)), until: Some(t(10)), ..changed(mark) }, &|a| a.time >= t(4) && a.time < t(10)),
        (AlertFilter { within: Some("region:c-1".into()), incident: Some("inc-3".into()), ..changed(mark) }, &|a| {
            a.incident.as_deref() == Some("inc-3")
        }),
    ];
    for (filter, keep) in combined {
        let wanted = expect(&alerts, &|a| a.updated_at >= mark && keep(a));
        assert!(!wanted.is_empty(), "the model selects something for {filter:?}");
        let listed = walk(2, |p| store.list_alerts(&filter, p).unwrap());
        assert_eq!(ids(&listed), ids(&wanted), "{filter:?}");
    }

    // An update, alone or in a batch, brings an alert into the window; an insert skipped
    // because its id is stored does not.
    alerts[1].status = "closed".into();
    alerts[1].updated_at = t(2_000);
    store.update_alert(&alerts[1]).unwrap();
    alerts[3].updated_at = t(2_001);
    store.write_alerts(&[AlertRow { updated_at: t(5_000), ..alerts[5].clone() }], &[alerts[3].clone()]).unwrap();
    let later = walk(1, |p| store.list_alerts(&changed(t(2_000)), p).unwrap());
    assert_eq!(ids(&later), ["u-03", "u-01"], "written since t(2000), newest event time first");
    assert_eq!(later, expect(&alerts, &|a| a.updated_at >= t(2_000)));
    assert_eq!(
        walk(3, |p| store.list_alerts(&changed(mark), p).unwrap()),
        expect(&alerts, &|a| a.updated_at >= mark),
        "the window from the mark now holds the updated alerts too"
    );
    assert!(walk(3, |p| store.list_alerts(&changed(t(2_002)), p).unwrap()).is_empty());
    assert_eq!(walk(5, |p| store.list_alerts(&changed(t(0)), p).unwrap()).len(), 12);
}

fn check_deliveries(store: &dyn StateStore) {
    let new = |n: i64, webhook: &str| NewDelivery {
        webhook: webhook.into(),
        alert: format!("a-{n}"),
        change: "raised".into(),
        payload: json!({"n": n}),
        created_at: t(n),
    };
    store.insert_deliveries(&[new(1, "w-1"), new(2, "w-2"), new(3, "w-1")]).unwrap();
    store.insert_deliveries(&[]).unwrap();
    let due = store.due_deliveries(t(2), 10).unwrap();
    assert_eq!(due.iter().map(|d| d.alert.as_str()).collect::<Vec<_>>(), ["a-1", "a-2"], "due by time, oldest first");
    assert_eq!((due[0].status.as_str(), due[0].attempts, &due[0].payload), ("pending", 0, &json!({"n": 1})));
    let (first, second) = (due[0].id, due[1].id);
    // Delivered; failed and retried later; failed for good.
    store.record_delivery_attempt(first, &DeliveryAttempt { at: t(5), delivered: true, status: Some(204), error: None, retry_at: None }).unwrap();
    let failed = |retry_at| DeliveryAttempt { at: t(5), delivered: false, status: Some(503), error: Some("unavailable".into()), retry_at };
    store.record_delivery_attempt(second, &failed(Some(t(100)))).unwrap();
    let due = store.due_deliveries(t(50), 10).unwrap();
    assert_eq!(due.iter().map(|d| d.alert.as_str()).collect::<Vec<_>>(), ["a-3"], "the retry waits");
    assert_eq!(store.due_deliveries(t(100), 10).unwrap().len(), 2);
    store.record_delivery_attempt(second, &failed(None)).unwrap();
    expect_kind(store.record_delivery_attempt(9_999, &failed(None)), Status::NotFound);
    let all = walk(2, |p| store.list_deliveries(None, None, p).unwrap());
    assert_eq!(all.iter().map(|d| d.alert.as_str()).collect::<Vec<_>>(), ["a-3", "a-2", "a-1"], "newest first");
    let gave_up = store.list_deliveries(None, Some("failed"), &PageRequest::default()).unwrap().items;
    assert_eq!((gave_up.len(), gave_up[0].attempts, gave_up[0].last_status, gave_up[0].last_error.as_deref()), (1, 2, Some(503), Some("unavailable")));
    assert_eq!(store.list_deliveries(Some("w-1"), None, &PageRequest::default()).unwrap().items.len(), 2);
    assert_eq!(store.list_deliveries(Some("w-1"), Some("delivered"), &PageRequest::default()).unwrap().items[0].last_status, Some(204));
    // A replay queues it again, attempts kept.
    let replayed = store.replay_delivery(second, t(200)).unwrap();
    assert_eq!((replayed.status.as_str(), replayed.attempts, replayed.next_attempt), ("pending", 2, t(200)));
    assert!(store.due_deliveries(t(200), 10).unwrap().iter().any(|d| d.id == second));
    expect_kind(store.replay_delivery(9_999, t(0)), Status::NotFound);
}

fn check_audit(store: &dyn StateStore) {
    let entry = |actor: &str, action: &str, n: i64| NewAuditEntry {
        actor: actor.into(),
        action: action.into(),
        target: format!("a-{n}"),
        detail: json!({"n": n}),
    };
    let first = store.append_audit(&entry("duty", "alert.ack", 1), t(1)).unwrap();
    assert_eq!((first.seq, first.prev_hash.as_str()), (1, "0".repeat(64).as_str()));
    assert_eq!(first.hash, first.expected_hash());
    let second = store.append_audit(&entry("admin", "routing.put", 2), t(2)).unwrap();
    store.append_audit(&entry("duty", "alert.close", 3), t(3)).unwrap();
    assert_eq!(second.prev_hash, first.hash, "each entry commits to the one before");
    let all = walk(2, |p| store.list_audit(None, None, p).unwrap());
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2, 1], "newest first");
    assert!(all.iter().all(|e| e.hash == e.expected_hash()), "read back, every hash checks out");
    assert_eq!(all[1], second);
    let duty = store.list_audit(Some("duty"), None, &PageRequest::default()).unwrap().items;
    assert_eq!(duty.len(), 2);
    let alerts = store.list_audit(None, Some("alert."), &PageRequest::default()).unwrap().items;
    assert_eq!(alerts.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 1]);
    // A changed field no longer matches its hash.
    let mut forged = second.clone();
    forged.target = "a-99".into();
    assert_ne!(forged.expected_hash(), forged.hash);
    expect_kind(store.append_audit(&entry(" ", "x", 4), t(4)), Status::InvalidInput);
    // In order, from a position, for the chain check.
    let tail = store.audit_after(1, 10).unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(tail[0], second);
    let verdict = crate::verify_audit(store, None).unwrap();
    assert_eq!((verdict.entries, verdict.broken.clone()), (3, None));
    let head = verdict.head.unwrap();
    assert_eq!(head.seq, 3);
    assert_eq!(crate::verify_audit(store, Some(&head)).unwrap().broken, None, "the head it gave checks out");
    // An anchor beyond the end: entries were cut off.
    let cut = crate::AuditHead { seq: 4, ..head.clone() };
    let broken = crate::verify_audit(store, Some(&cut)).unwrap().broken.unwrap();
    assert!(broken.reason.contains("cut from its end"), "{}", broken.reason);
    let forged = crate::AuditHead { hash: "f".repeat(64), ..head };
    assert_eq!(crate::verify_audit(store, Some(&forged)).unwrap().broken.unwrap().seq, 3);
}

fn check_audit_retention(store: &dyn StateStore) {
    let entry = |n: i64| NewAuditEntry { actor: "duty".into(), action: "alert.ack".into(), target: format!("a-{n}"), detail: json!({"n": n}) };
    for n in 1..=5 {
        store.append_audit(&entry(n), t(n * 10)).unwrap();
    }
    assert_eq!(store.prune_audit(t(5), "retention", t(100)).unwrap(), None, "nothing that old");
    assert_eq!(store.audit_start().unwrap(), None);
    // Entries 1–3 were written before t(35).
    let start = store.prune_audit(t(35), "retention", t(100)).unwrap().unwrap();
    assert_eq!((start.seq, start.deleted, start.before), (4, 3, t(35)));
    assert_eq!(store.audit_start().unwrap().as_ref(), Some(&start));
    let left = store.audit_after(0, 10).unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 5, 6]);
    assert_eq!(left[0].prev_hash, start.prev_hash, "the first kept entry commits to the last deleted");
    assert_eq!((left[2].action.as_str(), left[2].actor.as_str()), (crate::AUDIT_PRUNE_ACTION, "retention"));
    assert_eq!(left[2].detail["first_seq"], 4);
    let verdict = crate::verify_audit(store, None).unwrap();
    assert_eq!((verdict.entries, verdict.broken.clone(), verdict.start.clone()), (3, None, Some(start.clone())));
    // The newest entry always stays: the next one chains to it.
    let again = store.prune_audit(t(1_000), "retention", t(1_000)).unwrap().unwrap();
    assert_eq!((again.seq, again.deleted), (6, 5));
    assert_eq!(store.audit_after(0, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7]);
    assert_eq!(crate::verify_audit(store, None).unwrap().broken, None);
    store.append_audit(&entry(8), t(1_001)).unwrap();
    assert_eq!(crate::verify_audit(store, None).unwrap().broken, None, "and the chain goes on from there");
    // A start edited by hand no longer matches the log, nor its pruning record.
    let moved = crate::AuditStart { seq: 7, ..again.clone() };
    store.meta_set(crate::state::AUDIT_START_KEY, &serde_json::to_string(&moved).unwrap()).unwrap();
    let broken = crate::verify_audit(store, None).unwrap().broken.unwrap();
    assert!(broken.reason.contains("missing"), "{}", broken.reason);
    let forged = crate::AuditStart { prev_hash: "0".repeat(64), ..again.clone() };
    store.meta_set(crate::state::AUDIT_START_KEY, &serde_json::to_string(&forged).unwrap()).unwrap();
    let broken = crate::verify_audit(store, None).unwrap().broken.unwrap();
    assert!(broken.reason.contains("does not commit"), "{}", broken.reason);
}

fn check_alert_retention(store: &dyn StateStore) {
    // Alert i was last changed at t(i + 1).
    for (i, status) in ["closed", "new", "closed", "resolved", "closed"].iter().enumerate() {
        store.insert_alert(&alert(&format!("r-{i}"), i as i64 * 10, status)).unwrap();
    }
    let pruned = store.prune_alerts(t(25), &["closed", "resolved", "suppressed"]).unwrap();
    assert_eq!(pruned, 2, "r-0 and r-2 (closed, old); r-1 is still open");
    let mut left: Vec<String> = walk(10, |p| store.list_alerts(&AlertFilter::default(), p).unwrap()).into_iter().map(|a| a.id).collect();
    left.sort();
    assert_eq!(left, ["r-1", "r-3", "r-4"]);
    let scoped = AlertFilter { scopes: Some(vec!["region:c-1".into()]), ..AlertFilter::default() };
    assert_eq!(walk(10, |p| store.list_alerts(&scoped, p).unwrap()).len(), 3, "their scope rows went with them");
    assert_eq!(store.prune_alerts(t(25), &["closed"]).unwrap(), 0);
}

fn check_search_approvals(store: &dyn StateStore) {
    store.create_user("sup", HASH, "analyst", None).unwrap();
    assert!(!store.user("sup").unwrap().unwrap().supervisor, "not a supervisor until marked");
    store.set_supervisor("sup", true).unwrap();
    assert!(store.user("sup").unwrap().unwrap().supervisor);
    expect_kind(store.set_supervisor("nobody", true), Status::NotFound);
    let request = |id: &str, by: &str, at: i64| SearchApproval {
        id: id.into(),
        requested_by: by.into(),
        unit: Some("u-1".into()),
        requested_at: t(at),
        request: json!({"plate": "粤B12345", "purpose": {"case_number": "C-1", "legal_basis": "court_order"}}),
        reasons: vec!["spans 30 days; the analyst role may search 7 days".into()],
        status: "pending".into(),
        decided_by: None,
        decided_at: None,
        decision_note: None,
    };
    for (i, by) in ["ana", "ana", "duty"].iter().enumerate() {
        store.add_search_approval(&request(&format!("sa{i}"), by, i as i64)).unwrap();
    }
    expect_kind(store.add_search_approval(&request("sa0", "ana", 9)), Status::Conflict);
    assert_eq!(store.search_approval("sa1").unwrap(), Some(request("sa1", "ana", 1)));
    assert_eq!(store.search_approval("sa9").unwrap(), None);
    let all = walk(2, |p| store.list_search_approvals(None, None, p).unwrap());
    assert_eq!(all.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["sa2", "sa1", "sa0"], "newest first");
    let anas = store.list_search_approvals(None, Some("ana"), &PageRequest::default()).unwrap().items;
    assert_eq!(anas.len(), 2);
    let approved = store.decide_search_approval("sa1", "approved", "sup", t(10), "case file seen").unwrap();
    assert_eq!((approved.status.as_str(), approved.decided_by.as_deref(), approved.decided_at), ("approved", Some("sup"), Some(t(10))));
    assert_eq!(store.search_approval("sa1").unwrap(), Some(approved));
    let e = expect_kind(store.decide_search_approval("sa1", "rejected", "sup", t(11), "no"), Status::Conflict);
    assert!(e.to_string().contains("already approved"), "{e}");
    expect_kind(store.decide_search_approval("sa0", "maybe", "sup", t(11), "?"), Status::InvalidInput);
    expect_kind(store.decide_search_approval("sa9", "approved", "sup", t(11), "?"), Status::NotFound);
    let pending = store.list_search_approvals(Some("pending"), None, &PageRequest::default()).unwrap().items;
    assert_eq!(pending.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["sa2", "sa0"]);
}

fn check_routing(store: &dyn StateStore) {
    assert_eq!(store.routing().unwrap(), None);
    let v1 = store.put_routing(&json!({"entries": []}), "admin", "first table", Some(0)).unwrap();
    assert_eq!(v1.version, 1);
    let v2 = store
        .put_routing(&json!({"entries": [{"category": "*", "unit": "u-1"}]}), "planner", "fires to u-1", None)
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(store.routing().unwrap(), Some(v2.clone()));
    let e = expect_kind(store.put_routing(&json!({"entries": []}), "admin", "stale", Some(1)), Status::Conflict);
    assert!(e.to_string().contains('1') && e.to_string().contains('2'), "names both versions: {e}");
    expect_kind(store.put_routing(&json!({}), " ", "nobody", None), Status::InvalidInput);
    let history = store.routing_history(10).unwrap();
    assert_eq!(history.iter().map(|v| (v.version, v.changed_by.as_str(), v.note.as_str())).collect::<Vec<_>>(),
        [(2, "planner", "fires to u-1"), (1, "admin", "first table")]);
    assert_eq!(store.routing_history(1).unwrap(), [v2]);
}

fn check_alerts(store: &dyn StateStore) {
    assert_eq!(store.alert("a-1").unwrap(), None);
    let statuses = ["new", "acked", "closed"];
    // Thirty alerts over ten distinct times, so ties on time are ordered by id.
    let alerts: Vec<AlertRow> = (0..30)
        .map(|i| alert(&format!("a-{i:02}"), (i % 10) as i64 * 60, statuses[i % 3]))
        .collect();
    for a in &alerts {
        store.insert_alert(a).unwrap();
    }
    for a in &alerts {
        assert_eq!(store.alert(&a.id).unwrap().as_ref(), Some(a));
    }
    let e = expect_kind(store.insert_alert(&alerts[3]), Status::Conflict);
    assert!(e.to_string().contains("a-03"), "names the id: {e}");
    expect_kind(
        store.insert_alert(&alert("", 0, "new")),
        Status::InvalidInput,
    );

    let mut newest_first = alerts.clone();
    newest_first.sort_by(|a, b| (b.time, &b.id).cmp(&(a.time, &a.id)));
    for limit in [1, 4, 7, 30, 31] {
        let listed = walk(limit, |p| store.list_alerts(&AlertFilter::default(), p).unwrap());
        assert_eq!(listed, newest_first, "all alerts with page size {limit}");
    }
    for status in statuses {
        let expected: Vec<AlertRow> = newest_first
            .iter()
            .filter(|a| a.status == status)
            .cloned()
            .collect();
        let listed = walk(3, |p| store.list_alerts(&with_status(status), p).unwrap());
        assert_eq!(listed, expected, "alerts with status {status}");
    }
    assert!(store
        .list_alerts(&with_status("dispatched"), &PageRequest::default())
        .unwrap()
        .items
        .is_empty());

    let mut acked = alerts[0].clone();
    acked.status = "acked".into();
    acked.body = json!({ "history": ["new", "acked"] });
    acked.updated_at = t(10_000);
    store.update_alert(&acked).unwrap();
    assert_eq!(store.alert(&acked.id).unwrap(), Some(acked.clone()));
    let acked_ids: BTreeSet<String> = walk(5, |p| store.list_alerts(&with_status("acked"), p).unwrap())
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert!(
        acked_ids.contains(&acked.id),
        "an update moves the alert to its new status"
    );
    expect_kind(
        store.update_alert(&alert("a-99", 0, "new")),
        Status::NotFound,
    );

    // A conditional update applies only over the version it was computed from.
    let mut escalated = acked.clone();
    escalated.status = "escalated".into();
    escalated.updated_at = t(11_000);
    assert!(!store.update_alert_if_unchanged(&escalated, t(9_000)).unwrap(), "changed since: refused");
    assert_eq!(store.alert(&acked.id).unwrap(), Some(acked.clone()));
    assert!(store.update_alert_if_unchanged(&escalated, acked.updated_at).unwrap());
    assert_eq!(store.alert(&acked.id).unwrap(), Some(escalated.clone()));
    assert!(!store.update_alert_if_unchanged(&escalated, acked.updated_at).unwrap(), "a second writer with the same read loses");
    expect_kind(store.update_alert_if_unchanged(&alert("a-99", 0, "new"), t(0)), Status::NotFound);

    // A batch: known ids are skipped on insert, unknown ids skipped on update, all in one go.
    let fresh = [alert("b-1", 5, "new"), alert("a-05", 5, "new"), alert("b-2", 6, "new")];
    let mut changed = alerts[7].clone();
    changed.status = "closed".into();
    let inserted = store
        .write_alerts(&fresh, &[changed.clone(), alert("b-404", 0, "new")])
        .unwrap();
    assert_eq!(inserted, ["b-1", "b-2"], "only new ids are inserted");
    assert_eq!(store.alert("b-2").unwrap().as_ref(), Some(&fresh[2]));
    assert_eq!(store.alert("a-05").unwrap().as_ref(), Some(&alerts[5]), "a known id is left alone");
    assert_eq!(store.alert(&changed.id).unwrap(), Some(changed));
    assert_eq!(store.alert("b-404").unwrap(), None);
    assert_eq!(store.write_alerts(&[], &[]).unwrap(), Vec::<String>::new());
    expect_kind(store.write_alerts(&[alert("", 0, "new")], &[]), Status::InvalidInput);
}

fn check_dead_letters(store: &dyn StateStore) {
    use DeadLetterChannel::{File, Http, Mqtt};
    let all = DeadLetterFilter::default();
    assert_eq!(store.count_dead_letters(&all).unwrap(), 0);
    assert_eq!(
        store.insert_dead_letters(&[]).unwrap().ids,
        Vec::<i64>::new()
    );

    let batch: Vec<NewDeadLetter> = (0..5)
        .map(|n| dead([Http, Mqtt, File][n % 3], n as i64, n))
        .collect();
    let inserted = store.insert_dead_letters(&batch).unwrap();
    assert_eq!(inserted.pruned, 0);
    assert_eq!(inserted.ids.len(), 5);
    assert!(
        inserted.ids.windows(2).all(|w| w[0] < w[1]),
        "ids ascend in batch order"
    );
    for (id, d) in inserted.ids.iter().zip(&batch) {
        let got = store.dead_letter(*id).unwrap().unwrap();
        assert_eq!(
            (
                got.id,
                got.received_at,
                got.channel,
                &got.origin,
                got.line,
                &got.field,
                &got.reason,
                &got.raw
            ),
            (
                *id,
                d.received_at,
                d.channel,
                &d.origin,
                d.line,
                &d.field,
                &d.reason,
                &d.raw
            )
        );
        assert_eq!(got.resubmitted_at, None);
    }
    assert_eq!(store.dead_letter(-1).unwrap(), None);

    // Newest first.
    let listed: Vec<i64> = store
        .list_dead_letters(&all, &PageRequest::default())
        .unwrap()
        .items
        .iter()
        .map(|d| d.id)
        .collect();
    let mut expected = inserted.ids.clone();
    expected.reverse();
    assert_eq!(listed, expected);

    // Marking re-submission, all or nothing.
    let ids = &inserted.ids;
    assert_eq!(
        store
            .mark_resubmitted(&[ids[0], ids[2], ids[0]], t(500))
            .unwrap(),
        2
    );
    assert_eq!(
        store.dead_letter(ids[0]).unwrap().unwrap().resubmitted_at,
        Some(t(500))
    );
    let e = expect_kind(
        store.mark_resubmitted(&[ids[1], 987_654_321], t(600)),
        Status::NotFound,
    );
    assert!(e.to_string().contains("987654321"), "names the id: {e}");
    assert_eq!(
        store.dead_letter(ids[1]).unwrap().unwrap().resubmitted_at,
        None,
        "nothing marked"
    );
    assert_eq!(store.mark_resubmitted(&[ids[2]], t(700)).unwrap(), 1);
    assert_eq!(
        store.dead_letter(ids[2]).unwrap().unwrap().resubmitted_at,
        Some(t(700))
    );
    assert_eq!(store.mark_resubmitted(&[], t(700)).unwrap(), 0);

    // Refused input writes nothing.
    let mut bad = dead(Http, 9, 9);
    bad.reason = String::new();
    expect_kind(
        store.insert_dead_letters(&[dead(Http, 9, 8), bad]),
        Status::InvalidInput,
    );
    assert_eq!(store.count_dead_letters(&all).unwrap(), 5);

    // A larger set, to page through with filters.
    let more: Vec<NewDeadLetter> = (5..205)
        .map(|n| dead([Http, Mqtt, File][n % 3], n as i64, n))
        .collect();
    let more_ids = store.insert_dead_letters(&more).unwrap().ids;
    let resubmit: Vec<i64> = more_ids.iter().copied().filter(|id| id % 4 == 0).collect();
    store.mark_resubmitted(&resubmit, t(1_000)).unwrap();

    let mut model: Vec<(i64, NewDeadLetter)> = ids
        .iter()
        .copied()
        .zip(batch.iter().cloned())
        .chain(more_ids.iter().copied().zip(more))
        .collect();
    model.reverse();
    let pending = |id: i64| !(resubmit.contains(&id) || id == ids[0] || id == ids[2]);
    let filters = [
        DeadLetterFilter::default(),
        DeadLetterFilter {
            channel: Some(Mqtt),
            ..Default::default()
        },
        DeadLetterFilter {
            since: Some(t(150)),
            ..Default::default()
        },
        DeadLetterFilter {
            pending_only: true,
            ..Default::default()
        },
        DeadLetterFilter {
            channel: Some(File),
            since: Some(t(40)),
            pending_only: true,
        },
    ];
    for filter in &filters {
        let expected: Vec<i64> = model
            .iter()
            .filter(|(id, d)| {
                filter.channel.is_none_or(|c| c == d.channel)
                    && filter.since.is_none_or(|s| d.received_at >= s)
                    && (!filter.pending_only || pending(*id))
            })
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(
            store.count_dead_letters(filter).unwrap(),
            expected.len() as u64,
            "count {filter:?}"
        );
        for limit in [1, 7, 50, 1000] {
            let listed: Vec<i64> = walk(limit, |p| store.list_dead_letters(filter, p).unwrap())
                .into_iter()
                .map(|d| d.id)
                .collect();
            assert_eq!(
                listed, expected,
                "dead letters {filter:?} with page size {limit}"
            );
        }
    }

    // Explicit pruning keeps the newest; ids are never reused.
    let total = store.count_dead_letters(&all).unwrap();
    assert_eq!(store.prune_dead_letters(10).unwrap(), total - 10);
    let kept: Vec<i64> = walk(100, |p| store.list_dead_letters(&all, p).unwrap())
        .into_iter()
        .map(|d| d.id)
        .collect();
    let newest: Vec<i64> = model.iter().take(10).map(|(id, _)| *id).collect();
    assert_eq!(kept, newest);
    assert_eq!(store.prune_dead_letters(10).unwrap(), 0);
    let next = store.insert_dead_letters(&[dead(Http, 0, 0)]).unwrap();
    assert!(
        next.ids[0] > newest[0],
        "a new id is above every earlier one"
    );
    assert_eq!(store.prune_dead_letters(0).unwrap(), 11);
    assert_eq!(store.count_dead_letters(&all).unwrap(), 0);
    let after_clear = store.insert_dead_letters(&[dead(Http, 0, 0)]).unwrap();
    assert!(
        after_clear.ids[0] > next.ids[0],
        "ids are not reused after the table is emptied"
    );
}

fn check_dead_letter_limit(store: &dyn StateStore) {
    let all = DeadLetterFilter::default();
    assert_eq!(store.dead_letter_limit(), 10);
    let batch = |from: usize, n: usize| -> Vec<NewDeadLetter> {
        (from..from + n)
            .map(|i| dead(DeadLetterChannel::Http, i as i64, i))
            .collect()
    };
    let first = store.insert_dead_letters(&batch(0, 7)).unwrap();
    assert_eq!(first.pruned, 0);
    let second = store.insert_dead_letters(&batch(7, 7)).unwrap();
    assert_eq!(
        second.pruned, 4,
        "14 rows with a limit of 10: the 4 oldest go"
    );
    assert_eq!(store.count_dead_letters(&all).unwrap(), 10);
    for id in &first.ids[..4] {
        assert_eq!(store.dead_letter(*id).unwrap(), None, "oldest pruned");
    }
    for id in first.ids[4..].iter().chain(&second.ids) {
        assert!(store.dead_letter(*id).unwrap().is_some(), "newer kept");
    }
    let big = store.insert_dead_letters(&batch(14, 25)).unwrap();
    assert_eq!(big.pruned, 25, "10 old rows and 15 of the batch itself");
    let kept: Vec<i64> = walk(3, |p| store.list_dead_letters(&all, p).unwrap())
        .into_iter()
        .map(|d| d.id)
        .collect();
    let mut expected: Vec<i64> = big.ids[15..].to_vec();
    expected.reverse();
    assert_eq!(kept, expected);
}

fn check_users_and_sessions(store: &dyn StateStore) {
    assert!(store.list_users().unwrap().is_empty());
    let admin = store.create_user("admin", HASH, "admin", None).unwrap();
    assert_eq!(admin.username, "admin");
    assert_eq!(admin.password_hash, HASH);
    assert!(admin.created_at > Utc::now() - Duration::minutes(1));
    let responder = store
        .create_user("responder", HASH, "responder", Some("u-1"))
        .unwrap();
    assert_eq!(store.user("admin").unwrap(), Some(admin.clone()));
    assert_eq!(store.user("responder").unwrap(), Some(responder.clone()));
    assert_eq!(store.user("nobody").unwrap(), None);
    assert_eq!(
        store.list_users().unwrap(),
        vec![admin.clone(), responder.clone()]
    );

    expect_kind(
        store.create_user("admin", HASH, "analyst", None),
        Status::Conflict,
    );
    let e = expect_kind(
        store.create_user("plain", "demo", "admin", None),
        Status::InvalidInput,
    );
    assert!(
        e.to_string().contains("password_hash"),
        "names the field: {e}"
    );
    expect_kind(
        store.create_user("", HASH, "admin", None),
        Status::InvalidInput,
    );
    expect_kind(store.create_user("x", HASH, "", None), Status::InvalidInput);
    let shown = serde_json::to_value(&admin).unwrap();
    assert!(
        shown.get("password_hash").is_none(),
        "the hash is never serialized: {shown}"
    );

    store.create_session("h-1", "admin", t(100)).unwrap();
    assert_eq!(store.session("h-1", t(0)).unwrap(), Some(admin.clone()));
    assert_eq!(store.session("h-1", t(99)).unwrap(), Some(admin.clone()));
    assert_eq!(
        store.session("h-1", t(100)).unwrap(),
        None,
        "expiry is exclusive"
    );
    assert_eq!(store.session("h-1", t(101)).unwrap(), None);
    assert_eq!(store.session("h-unknown", t(0)).unwrap(), None);
    expect_kind(
        store.create_session("h-1", "responder", t(100)),
        Status::Conflict,
    );
    expect_kind(
        store.create_session("h-2", "nobody", t(100)),
        Status::NotFound,
    );
    expect_kind(
        store.create_session("", "admin", t(100)),
        Status::InvalidInput,
    );

    assert!(store.delete_session("h-1").unwrap());
    assert!(!store.delete_session("h-1").unwrap());
    assert_eq!(
        store.session("h-1", t(0)).unwrap(),
        None,
        "a deleted session is gone"
    );

    store.create_session("h-10", "admin", t(10)).unwrap();
    store.create_session("h-20", "responder", t(20)).unwrap();
    store.create_session("h-30", "responder", t(30)).unwrap();
    assert_eq!(store.purge_expired_sessions(t(5)).unwrap(), 0);
    assert_eq!(
        store.purge_expired_sessions(t(20)).unwrap(),
        2,
        "expires_at <= now is purged"
    );
    assert_eq!(store.session("h-20", t(0)).unwrap(), None, "purged");
    assert_eq!(store.session("h-30", t(0)).unwrap(), Some(responder));
    assert_eq!(store.purge_expired_sessions(t(20)).unwrap(), 0);
    // Listing a user's sessions shows digests and times, never a token.
    store.create_session("h-40", "responder", t(40)).unwrap();
    let listed = store.list_sessions("responder").unwrap();
    let mut hashes: Vec<&str> = listed.iter().map(|s| s.token_hash.as_str()).collect();
    hashes.sort();
    assert_eq!(hashes, ["h-30", "h-40"]);
    assert!(listed.iter().all(|s| s.username == "responder"));
    assert_eq!(listed.iter().find(|s| s.token_hash == "h-40").unwrap().expires_at, t(40));
    assert!(store.list_sessions("nobody").unwrap().is_empty());
}

fn check_page_requests(store: &dyn StateStore) {
    store
        .upsert_devices(&[device("d-1", 1), device("d-2", 2)])
        .unwrap();
    store.insert_alert(&alert("a-1", 0, "new")).unwrap();
    store.insert_alert(&alert("a-2", 0, "new")).unwrap();
    let dl = store
        .insert_dead_letters(&[
            dead(DeadLetterChannel::Http, 0, 0),
            dead(DeadLetterChannel::Http, 1, 1),
        ])
        .unwrap();
    assert_eq!(dl.ids.len(), 2);
    let all = DeadLetterFilter::default();

    expect_kind(
        store.list_devices(&PageRequest::first(0)),
        Status::InvalidInput,
    );
    expect_kind(
        store.list_alerts(&AlertFilter::default(), &PageRequest::first(0)),
        Status::InvalidInput,
    );
    expect_kind(
        store.list_dead_letters(&all, &PageRequest::first(0)),
        Status::InvalidInput,
    );

    let device_cursor = store
        .list_devices(&PageRequest::first(1))
        .unwrap()
        .next
        .unwrap();
    let alert_cursor = store
        .list_alerts(&AlertFilter::default(), &PageRequest::first(1))
        .unwrap()
        .next
        .unwrap();
    let dl_cursor = store
        .list_dead_letters(&all, &PageRequest::first(1))
        .unwrap()
        .next
        .unwrap();
    for cursor in [&device_cursor, &alert_cursor, &dl_cursor] {
        assert!(
            cursor
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.~".contains(c)),
            "cursor `{cursor}` is URL-safe"
        );
    }
    for garbage in ["", "zz", "abc", "not a cursor", "💥"] {
        expect_kind(
            store.list_devices(&PageRequest::after(garbage, 5)),
            Status::InvalidInput,
        );
        expect_kind(
            store.list_alerts(&AlertFilter::default(), &PageRequest::after(garbage, 5)),
            Status::InvalidInput,
        );
        expect_kind(
            store.list_dead_letters(&all, &PageRequest::after(garbage, 5)),
            Status::InvalidInput,
        );
    }
    // A cursor only works on the list that gave it.
    expect_kind(
        store.list_devices(&PageRequest::after(&alert_cursor, 5)),
        Status::InvalidInput,
    );
    expect_kind(
        store.list_alerts(&AlertFilter::default(), &PageRequest::after(&dl_cursor, 5)),
        Status::InvalidInput,
    );
    expect_kind(
        store.list_dead_letters(&all, &PageRequest::after(&device_cursor, 5)),
        Status::InvalidInput,
    );

    assert_eq!(
        store
            .list_devices(&PageRequest::after(device_cursor, 5))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        store
            .list_alerts(&AlertFilter::default(), &PageRequest::after(alert_cursor, 5))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        store
            .list_dead_letters(&all, &PageRequest::after(dl_cursor, 5))
            .unwrap()
            .items
            .len(),
        1
    );
}

fn check_concurrent_use(store: &dyn StateStore) {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 100;
    let dead_ids: Vec<Vec<i64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|thread| {
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for chunk in 0..PER_THREAD / 10 {
                        let rows: Vec<DeviceRow> = (0..10)
                            .map(|i| {
                                let n = chunk * 10 + i;
                                device(&format!("t{thread}-{n:03}"), n)
                            })
                            .collect();
                        store.upsert_devices(&rows).unwrap();
                        let letters: Vec<NewDeadLetter> = (0..3)
                            .map(|i| dead(DeadLetterChannel::Mqtt, i, i as usize))
                            .collect();
                        ids.extend(store.insert_dead_letters(&letters).unwrap().ids);
                        store.list_devices(&PageRequest::first(50)).unwrap();
                        store.device(&rows[0].id).unwrap().unwrap();
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a worker thread panicked"))
            .collect()
    });
    assert_eq!(store.device_count().unwrap(), (THREADS * PER_THREAD) as u64);
    let unique: BTreeSet<i64> = dead_ids.iter().flatten().copied().collect();
    assert_eq!(
        unique.len(),
        THREADS * PER_THREAD / 10 * 3,
        "dead-letter ids are unique across threads"
    );
    for ids in &dead_ids {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "each thread sees its ids ascend"
        );
    }
}

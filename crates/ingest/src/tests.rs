use chrono::{TimeZone, Utc};
use cityward_model::KindRegistry;

use super::*;

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 3, 10, 0).unwrap()
}

fn validator() -> Validator {
    Validator::new(KindRegistry::builtin(), &IngestConfig::default())
        .with_bounds((121.0, 29.5, 122.0, 30.2))
}

const GOOD: &str = r#"{"id":"a","source":"truck-1","kind":"gps","time":"2026-11-22T03:00:00Z","lon":121.55,"lat":29.87,"attrs":{"speed_kmh":50}}"#;

#[test]
fn ndjson_keeps_good_records_next_to_bad_ones() {
    let body = format!(
        "{GOOD}\n{{not json\n\n{}\n{}\n",
        r#"{"source":"s","kind":"gps","time":"2026-11-22T03:00:00Z","lon":"x","lat":29.9}"#,
        GOOD.replace("\"a\"", "\"b\"")
    );
    let decoded = decode_json_body(body.as_bytes(), &validator(), now()).unwrap();
    assert_eq!(decoded.events.len(), 2);
    assert_eq!(decoded.rejects.len(), 2);
    assert_eq!(decoded.rejects[0].line, 2);
    assert_eq!(decoded.rejects[0].code, RejectCode::Malformed);
    assert_eq!(decoded.rejects[1].line, 4);
    assert_eq!(decoded.rejects[1].field.as_deref(), Some("lon"));
    assert!(
        decoded.rejects[1].reason.contains("number"),
        "{}",
        decoded.rejects[1].reason
    );
}

#[test]
fn json_array_elements_are_judged_one_by_one() {
    let body = format!(
        "[\n  {GOOD},\n  {{\"source\": 5, \"kind\":\"gps\"}},\n  {}\n]",
        GOOD.replace("\"a\"", "\"c\"")
    );
    let decoded = decode_json_body(body.as_bytes(), &validator(), now()).unwrap();
    assert_eq!(decoded.events.len(), 2);
    assert_eq!(decoded.events[1].id, "c");
    assert_eq!(decoded.rejects.len(), 1);
    assert_eq!(decoded.rejects[0].line, 3);
    assert_eq!(decoded.rejects[0].field.as_deref(), Some("source"));
}

#[test]
fn gzip_bodies_are_recognised() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(GOOD.as_bytes()).unwrap();
    let compressed = gz.finish().unwrap();
    let plain = gunzip_if_needed(&compressed, 1 << 20).unwrap();
    assert_eq!(&*plain, GOOD.as_bytes());
    assert!(matches!(
        gunzip_if_needed(&compressed, 10),
        Err(BodyError::TooLarge { .. })
    ));
    assert!(matches!(
        gunzip_if_needed(&[0x1f, 0x8b, 1, 2, 3], 100),
        Err(BodyError::Gzip(_))
    ));
}

#[test]
fn each_kind_of_bad_input_names_field_and_reason() {
    let v = validator();
    let cases = [
        (
            r#"{"source":"s","time":"2026-11-22T03:00:00Z"}"#,
            Some("kind"),
            RejectCode::MissingField,
        ),
        (
            r#"{"source":"s","kind":"teleport","time":"2026-11-22T03:00:00Z"}"#,
            Some("kind"),
            RejectCode::UnknownKind,
        ),
        (
            r#"{"source":"s","kind":"smoke","time":"yesterday"}"#,
            Some("time"),
            RejectCode::InvalidField,
        ),
        (
            r#"{"source":"s","kind":"smoke","time":"2027-01-01T00:00:00Z"}"#,
            Some("time"),
            RejectCode::TimeOutOfRange,
        ),
        (
            r#"{"source":"s","kind":"gps","time":"2026-11-22T03:00:00Z","lon":2.35,"lat":48.85}"#,
            Some("lon"),
            RejectCode::OutsideCity,
        ),
        (
            r#"{"source":"s","kind":"gps","time":"2026-11-22T03:00:00Z"}"#,
            Some("lon"),
            RejectCode::MissingField,
        ),
        (
            r#"{"source":"s","kind":"plate_read","time":"2026-11-22T03:00:00Z","lon":121.5,"lat":29.9}"#,
            Some("attrs.plate"),
            RejectCode::MissingField,
        ),
        (
            r#"{"source":"s","kind":"door","time":"2026-11-22T03:00:00Z","attrs":{"open":"yes"}}"#,
            Some("attrs.open"),
            RejectCode::InvalidField,
        ),
        (
            r#"{"source":"s","kind":"video_event","time":"2026-11-22T03:00:00Z","attrs":{"event_type":"x","face_image":"AAAA"}}"#,
            Some("attrs.face_image"),
            RejectCode::PersonalData,
        ),
        (
            r#"{"source":"s","kind":"video_event","time":"2026-11-22T03:00:00Z","person_id":"p1"}"#,
            Some("person_id"),
            RejectCode::PersonalData,
        ),
        (
            r#"{"source":"s","kind":"smoke","time":"2026-11-22T03:00:00Z","colour":"red"}"#,
            Some("colour"),
            RejectCode::InvalidField,
        ),
        (r#"[1,2]"#, None, RejectCode::Malformed),
    ];
    for (text, field, code) in cases {
        let reject = v.validate_json(text, 7, now()).unwrap_err();
        assert_eq!(
            (reject.field.as_deref(), reject.code),
            (field, code),
            "{text}: {}",
            reject.reason
        );
        assert_eq!(reject.line, 7);
        assert_eq!(reject.raw, text);
        assert!(reject.reason.len() > 15, "{}", reject.reason);
    }
}

#[test]
fn nulls_for_optional_fields_are_accepted() {
    let text = r#"{"source":"s","kind":"smoke","time":"2026-11-22T03:00:00Z","lon":null,"lat":null,"attrs":null}"#;
    let event = validator().validate_json(text, 1, now()).unwrap();
    assert_eq!(event.point(), None);
}

#[test]
fn gcj02_places_are_stored_as_wgs84() {
    let (glon, glat) = cityward_model::wgs84_to_gcj02(121.55, 29.87);
    let text = format!(
        r#"{{"source":"s","kind":"gps","time":"2026-11-22T03:00:00Z","lon":{glon},"lat":{glat},"crs":"gcj02"}}"#
    );
    let event = validator().validate_json(&text, 1, now()).unwrap();
    let (lon, lat) = event.point().unwrap();
    assert!(
        (lon - 121.55).abs() < 1e-8 && (lat - 29.87).abs() < 1e-8,
        "{lon} {lat}"
    );
    assert!(event.crs.is_wgs84());
}

#[test]
fn oversized_records_are_refused_alone() {
    let config = IngestConfig {
        max_record_bytes: 200,
        ..IngestConfig::default()
    };
    let v = Validator::new(KindRegistry::builtin(), &config);
    let big = format!(
        r#"{{"source":"s","kind":"smoke","time":"2026-11-22T03:00:00Z","attrs":{{"note":"{}"}}}}"#,
        "x".repeat(300)
    );
    let body = format!("{big}\n{GOOD}\n");
    let decoded = decode_json_body(body.as_bytes(), &v, now()).unwrap();
    assert_eq!(decoded.events.len(), 1);
    assert_eq!(decoded.rejects[0].code, RejectCode::TooLarge);
}

#[test]
fn csv_rows_become_typed_events() {
    let csv = "id,source,kind,time,lon,lat,plate,confidence\n\
               r1,anpr-1,plate_read,2026-11-22T03:00:00Z,121.5,29.9,0123,0.93\n\
               r2,anpr-1,plate_read,2026-11-22T03:00:01Z,121.5,29.9,,0.5\n\
               r3,anpr-1,plate_read,2026-11-22T03:00:02Z,121.5\n";
    let decoded = decode_csv(csv.as_bytes(), &validator(), now());
    assert_eq!(decoded.events.len(), 1);
    assert_eq!(decoded.events[0].attr_str("plate"), Some("0123"));
    assert_eq!(decoded.events[0].attr_f64("confidence"), Some(0.93));
    assert_eq!(decoded.rejects.len(), 2);
    assert_eq!(decoded.rejects[0].line, 3);
    assert_eq!(decoded.rejects[0].field.as_deref(), Some("attrs.plate"));
    assert_eq!(decoded.rejects[1].line, 4);
}

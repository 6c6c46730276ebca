//! Open311 GeoReport v2 through the HTTP API of an in-process node, as a resident's app and
//! a call-taker's desk use it: services listed and defined, requests posted (form-encoded
//! and JSON) and read back (JSON and XML) as their alerts are routed and closed, bad input
//! answered in GeoReport's error format, and the reporter's contact details never answered.
//! Every JSON answer is validated against the GeoReport v2 JSON Schemas with the Python
//! `jsonschema` package (skipped when it is missing, unless `CITYWARD_REQUIRE_SERVICES`).

use std::path::PathBuf;

use serde_json::{json, Value};

mod common;
use common::*;

const EMAIL: &str = "mei.resident@example.org";
const PHONE: &str = "+86 21 5555 0199";
const FIRST_NAME: &str = "Qiuyue-Reporter";

/// Validates `{"dir", "schema", "array", "instance"}` from stdin: `schema` is a file of
/// `dir` (`requests.json`), or a file and a JSON pointer (`swagger.json#/definitions/X`);
/// `array` wraps it as the items of a non-empty array. The schemas name no draft; they are
/// read as draft 4, the draft of their Swagger 2.0 description. `date-time` is checked as
/// RFC 3339 with an offset, whatever format packages are installed.
const SCHEMA_CHECK: &str = r##"
import json, pathlib, re, sys
from datetime import datetime
from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT4

job = json.load(sys.stdin)
base = pathlib.Path(job["dir"]).resolve()
registry = Registry().with_resources(
    (p.as_uri(), DRAFT4.create_resource(json.loads(p.read_text(encoding="utf-8"))))
    for p in base.glob("*.json")
)
checker = FormatChecker()
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")

@checker.checks("date-time", raises=ValueError)
def date_time(value):
    if isinstance(value, str):
        if not RFC3339.match(value):
            raise ValueError("not an RFC 3339 date-time with an offset")
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True

file, _, pointer = job["schema"].partition("#")
ref = {"$ref": (base / file).as_uri() + ("#" + pointer if pointer else "")}
schema = {"type": "array", "minItems": 1, "items": ref} if job["array"] else ref
errors = list(Draft4Validator(schema, registry=registry, format_checker=checker).iter_errors(job["instance"]))
for e in errors:
    print(f"{job['schema']}: at /{'/'.join(map(str, e.absolute_path))}: {e.message}")
sys.exit(1 if errors else 0)
"##;

/// Prints an XML document as JSON: `{"root": TAG, "items": [{"tag", "fields": {TAG: TEXT}}]}`.
const XML_TO_JSON: &str = r#"
import json, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.buffer.read())
items = [{"tag": item.tag, "fields": {f.tag: f.text for f in item}} for item in root]
print(json.dumps({"root": root.tag, "items": items}))
"#;

/// The GeoReport v2 schemas, copied into `tests/data/` from the shared standards folder.
fn schema_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/open311-georeport-v2"));
    assert!(dir.join("request.json").is_file(), "the Open311 schemas are missing from {}", dir.display());
    dir
}

fn schema_check(schema: &str, array: bool, instance: &Value) -> Option<Result<String, String>> {
    let dir = schema_dir();
    let job = json!({"dir": dir, "schema": schema, "array": array, "instance": instance});
    python_check("jsonschema", SCHEMA_CHECK, &job.to_string())
}

/// Panics unless `instance` is valid against `schema` (see [`SCHEMA_CHECK`]).
fn conforms(schema: &str, array: bool, instance: &Value) {
    if let Some(result) = schema_check(schema, array, instance) {
        result.unwrap_or_else(|e| panic!("not valid against {schema}: {e}\n{instance:#}"));
    }
}

/// An XML answer read by Python's parser (`None` only if python3 is missing).
fn xml(body: &str) -> Option<Value> {
    let result = python_check("xml.etree.ElementTree", XML_TO_JSON, body)?;
    Some(parse(&result.unwrap_or_else(|e| panic!("not well-formed XML: {e}\n{body}"))))
}

fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    pairs.join("&").into_bytes()
}

/// A client without a token (the endpoints are public) that keeps every answer, to check
/// that none of them carries the reporter's contact details.
struct Resident {
    base: String,
    answers: Vec<String>,
}

impl Resident {
    fn new(t: &TestNode) -> Self {
        Resident { base: t.base.clone(), answers: Vec::new() }
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let (status, body) = call("GET", format!("{}{path}", self.base), None, "", vec![]).await;
        self.answers.push(body.clone());
        (status, body)
    }

    async fn get_json(&mut self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path).await;
        (status, parse(&body))
    }

    async fn post(&mut self, path: &str, content_type: &'static str, body: Vec<u8>) -> (u16, String) {
        let (status, text) = call("POST", format!("{}{path}", self.base), None, content_type, body).await;
        self.answers.push(text.clone());
        (status, text)
    }

    async fn post_form(&mut self, fields: &[(&str, &str)]) -> (u16, Value) {
        let (status, body) = self.post("/open311/v2/requests.json", "application/x-www-form-urlencoded", form(fields)).await;
        (status, parse(&body))
    }

    /// Posts a request and answers its id; panics unless it is created.
    async fn report(&mut self, content_type: &'static str, body: Vec<u8>) -> String {
        let (status, body) = self.post("/open311/v2/requests.json", content_type, body).await;
        assert_eq!(status, 200, "{body}");
        let created = parse(&body);
        conforms("swagger.json#/definitions/RequestResponse", true, &created);
        assert_eq!(created.as_array().map(Vec::len), Some(1), "{created}");
        created[0]["service_request_id"].as_str().unwrap().to_string()
    }

    /// `GET /open311/v2/requests/{id}.json`: the request (a list of one, validated).
    async fn request(&mut self, id: &str) -> Value {
        let (status, list) = self.get_json(&format!("/open311/v2/requests/{id}.json")).await;
        assert_eq!(status, 200, "{list}");
        conforms("requests.json", false, &list);
        assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
        list[0].clone()
    }

    /// `GET /open311/v2/requests.json?QUERY`: the ids listed (the list validated).
    async fn listed(&mut self, query: &str) -> Vec<String> {
        let (status, list) = self.get_json(&format!("/open311/v2/requests.json?{query}")).await;
        assert_eq!(status, 200, "{query}: {list}");
        if !list.as_array().unwrap().is_empty() {
            conforms("requests.json", false, &list);
        }
        list.as_array().unwrap().iter().map(|r| r["service_request_id"].as_str().unwrap().to_string()).collect()
    }
}

/// A GeoReport error answer: `[{"code": STATUS, "description": …}]`; answers the description.
fn georeport_error(status: u16, body: &Value) -> String {
    let errors = body.as_array().unwrap_or_else(|| panic!("not a GeoReport error list: {body}"));
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["code"].as_u64(), Some(status as u64), "{body}");
    let description = errors[0]["description"].as_str().unwrap_or_default().to_string();
    assert!(!description.is_empty(), "{body}");
    description
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_are_listed_and_defined_in_json_and_xml() {
    let t = start(|_| {}).await;
    let mut r = Resident::new(&t);
    let configured: Vec<String> = t.node.config().open311.services.iter().map(|s| s.code.clone()).collect();

    let (status, services) = r.get_json("/open311/v2/services.json").await;
    assert_eq!(status, 200, "{services}");
    conforms("services.json", false, &services);
    let codes: Vec<&str> = services.as_array().unwrap().iter().map(|s| s["service_code"].as_str().unwrap()).collect();
    assert_eq!(codes, configured);
    let fire = services.as_array().unwrap().iter().find(|s| s["service_code"] == "fire_exit_blocked").unwrap();
    assert_eq!(fire["service_name"], "Blocked fire exit");
    assert_eq!((&fire["group"], &fire["metadata"], &fire["type"]), (&json!("fire safety"), &json!(false), &json!("realtime")));
    assert!(fire["keywords"].as_str().unwrap().contains("fire exit"), "{fire}");

    let (status, body) = r.get("/open311/v2/services.xml").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("<?xml"), "{body}");
    if let Some(doc) = xml(&body) {
        assert_eq!(doc["root"], "services", "{doc}");
        let items = doc["items"].as_array().unwrap();
        assert!(items.iter().all(|i| i["tag"] == "service"), "{doc}");
        let codes: Vec<&str> = items.iter().map(|i| i["fields"]["service_code"].as_str().unwrap()).collect();
        assert_eq!(codes, configured);
        assert_eq!(items[0]["fields"]["metadata"], "false", "{doc}");
    }

    let (status, definition) = r.get_json("/open311/v2/services/fire_exit_blocked.json").await;
    assert_eq!(status, 200, "{definition}");
    conforms("service-definition.json", false, &definition);
    assert_eq!(definition, json!({"service_code": "fire_exit_blocked", "attributes": []}));
    let (status, body) = r.get("/open311/v2/services/fire_exit_blocked.xml").await;
    assert_eq!(status, 200, "{body}");
    if let Some(doc) = xml(&body) {
        assert_eq!(doc["root"], "service_definition", "{doc}");
    }
    let (status, body) = r.get_json("/open311/v2/services/no_such_service.json").await;
    assert_eq!(status, 404, "{body}");
    assert!(georeport_error(404, &body).contains("fire_exit_blocked"), "names the codes there are: {body}");
    let (status, body) = r.get_json("/open311/v2/services/fire_exit_blocked.csv").await;
    assert!(status == 404 && georeport_error(404, &body).contains(".json or ID.xml"), "{body}");

    // The validator does refuse what breaks the schema.
    let broken = json!([{"service_code": "x", "service_name": "y", "metadata": "no", "type": "sometimes"}]);
    if let Some(result) = schema_check("services.json", false, &broken) {
        assert!(result.is_err(), "jsonschema accepted a bad service list");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_fire_exit_is_routed_to_its_unit_and_closed_by_the_city() {
    let t = start(|_| {}).await;
    let mut r = Resident::new(&t);
    let admin = t.login("admin", "admin-pass").await;
    let city = t.node.city();
    let place = city.devices[0].clone();
    let unit = city.grid_unit(&place.grid).expect("the grid has a unit").clone();
    let (lat, lon) = (place.lat.to_string(), place.lon.to_string());

    let id = r
        .report(
            "application/x-www-form-urlencoded",
            form(&[
                ("service_code", "fire_exit_blocked"),
                ("lat", &lat),
                ("long", &lon),
                ("address_string", "Back door of 18 Huaihai Road"),
                ("description", "Rear exit chained shut & blocked by crates"),
                ("email", EMAIL),
                ("phone", PHONE),
                ("first_name", FIRST_NAME),
                ("api_key", ""),
            ]),
        )
        .await;
    assert!(id.starts_with('r'), "{id}");

    // An alert like any other, routed to the unit of its place; the staff see who reported.
    let (status, alert) = t.get(&format!("/api/v1/alerts/{id}"), &admin).await;
    assert_eq!(status, 200, "{alert}");
    assert_eq!((&alert["rule"], &alert["key"]), (&json!("open311"), &json!("fire_exit_blocked")), "{alert:#}");
    assert_eq!((&alert["category"], &alert["severity"]), (&json!("fire.exit_blocked"), &json!("high")), "{alert:#}");
    assert_eq!(alert["title"], "Blocked fire exit");
    assert_eq!((alert["lon"].as_f64(), alert["lat"].as_f64()), (Some(place.lon), Some(place.lat)));
    assert_eq!(alert["handling"]["owner"], json!(unit.id), "{alert:#}");
    assert_eq!(alert["status"], "assigned", "{alert:#}");
    assert_eq!(alert["open311"]["reporter"]["email"], EMAIL, "call-takers can reach the reporter: {alert:#}");
    assert_eq!(alert["open311"]["description"], "Rear exit chained shut & blocked by crates");

    let request = r.request(&id).await;
    assert_eq!((&request["status"], &request["service_code"]), (&json!("open"), &json!("fire_exit_blocked")), "{request:#}");
    assert_eq!(request["service_name"], "Blocked fire exit");
    assert_eq!(request["agency_responsible"], json!(unit.name), "{request:#}");
    assert_eq!((request["lat"].as_f64(), request["long"].as_f64()), (Some(place.lat), Some(place.lon)));
    assert_eq!(request["address"], "Back door of 18 Huaihai Road");
    assert_eq!(request["description"], "Rear exit chained shut & blocked by crates");
    assert_eq!(request["status_notes"], Value::Null, "the system's routing note is not shown: {request:#}");
    let requested = request["requested_datetime"].as_str().unwrap().to_string();

    let (status, body) = r.get(&format!("/open311/v2/requests/{id}.xml")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("&amp; blocked by crates"), "{body}");
    if let Some(doc) = xml(&body) {
        assert_eq!(doc["root"], "service_requests", "{doc}");
        let fields = &doc["items"][0]["fields"];
        assert_eq!(doc["items"][0]["tag"], "request", "{doc}");
        assert_eq!((&fields["service_request_id"], &fields["status"]), (&json!(id), &json!("open")), "{doc}");
        assert_eq!(fields["agency_responsible"], json!(unit.name), "{doc}");
        assert_eq!(fields["description"], "Rear exit chained shut & blocked by crates", "{doc}");
    }

    assert!(r.listed("").await.contains(&id));
    assert!(r.listed("status=open&service_code=fire_exit_blocked").await.contains(&id));
    assert!(!r.listed("status=closed").await.contains(&id));

    // The city closes it: the resident sees it closed, with the note.
    let (status, closed) = t
        .post_json(&format!("/api/v1/alerts/{id}/close"), &admin, json!({"disposition": "confirmed_incident", "note": "cleared"}))
        .await;
    assert_eq!(status, 200, "{closed}");
    let request = r.request(&id).await;
    assert_eq!((&request["status"], &request["status_notes"]), (&json!("closed"), &json!("cleared")), "{request:#}");
    let updated = request["updated_datetime"].as_str().unwrap();
    assert!(cityward_model::parse_time(updated) >= cityward_model::parse_time(&requested), "{request:#}");

    assert!(r.listed("status=closed").await.contains(&id));
    assert!(r.listed("status=open,closed").await.contains(&id));
    assert!(!r.listed("status=open").await.contains(&id));
    assert!(!r.listed("service_code=pothole").await.contains(&id));
    assert_eq!(r.listed(&format!("service_request_id={id},r0000000000000000&status=open")).await, std::slice::from_ref(&id));
    let tomorrow = cityward_model::format_time(&(chrono::Utc::now() + chrono::Duration::days(1)));
    assert!(r.listed(&format!("start_date={}", encode(&tomorrow))).await.is_empty());
    let (status, body) = r.get("/open311/v2/requests.xml?status=closed").await;
    assert_eq!(status, 200, "{body}");
    if let Some(doc) = xml(&body) {
        assert_eq!(doc["root"], "service_requests", "{doc}");
        assert!(doc["items"].as_array().unwrap().iter().any(|i| i["fields"]["service_request_id"] == json!(id)), "{doc}");
    }

    // Alerts that are not service requests are not answered as such.
    let (status, body) = r.get_json("/open311/v2/requests/a0000000000000000.json").await;
    assert_eq!(status, 404, "{body}");

    for answer in &r.answers {
        assert!(!answer.contains(EMAIL) && !answer.contains(PHONE) && !answer.contains(FIRST_NAME), "an answer carries the reporter's details: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_taker_posts_json_and_reads_xml() {
    let t = start(|_| {}).await;
    let mut r = Resident::new(&t);
    let place = t.node.city().devices.last().unwrap().clone();

    let body = json!({"service_code": "water_leak", "lat": place.lat, "long": place.lon,
                      "description": "Hydrant gushing", "email": EMAIL, "phone": null});
    let (status, text) = r.post("/open311/v2/requests.xml", "application/json", body.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let mut id = String::new();
    if let Some(doc) = xml(&text) {
        assert_eq!((&doc["root"], &doc["items"][0]["tag"]), (&json!("service_requests"), &json!("request")), "{doc}");
        id = doc["items"][0]["fields"]["service_request_id"].as_str().unwrap().to_string();
    } else if let Some(start) = text.find("<service_request_id>") {
        id = text[start + 20..].split('<').next().unwrap().to_string();
    }
    let request = r.request(&id).await;
    assert_eq!((&request["service_code"], &request["status"]), (&json!("water_leak"), &json!("open")), "{request:#}");
    assert_eq!(request["description"], "Hydrant gushing");

    // An address alone is a location (there is no point to route by, so the city's desk has it).
    let id = r.report("application/json", json!({"service_code": "pothole", "address_string": "Corner of Fuxing and Ruijin"}).to_string().into_bytes()).await;
    let request = r.request(&id).await;
    assert_eq!((&request["lat"], &request["address"]), (&Value::Null, &json!("Corner of Fuxing and Ruijin")), "{request:#}");

    for answer in &r.answers {
        assert!(!answer.contains(EMAIL), "an answer carries the reporter's email: {answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_answered_in_the_georeport_error_format() {
    let t = start(|_| {}).await;
    let mut r = Resident::new(&t);
    let place = t.node.city().devices[0].clone();
    let (lat, lon) = (place.lat.to_string(), place.lon.to_string());

    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("service_code", "spaceship"), ("lat", &lat), ("long", &lon), ("email", EMAIL)], "not offered here; choose one of fire_exit_blocked"),
        (vec![("lat", &lat), ("long", &lon)], "service_code is required"),
        (vec![("service_code", "pothole"), ("description", "no place given")], "a location is required"),
        (vec![("service_code", "pothole"), ("lat", "0"), ("long", "0")], "outside the area this service covers"),
        (vec![("service_code", "pothole"), ("lat", "thirty-one"), ("long", &lon)], "lat `thirty-one` is not a number"),
        (vec![("service_code", "pothole"), ("lat", "95"), ("long", &lon)], "out of range"),
        (vec![("service_code", "pothole"), ("lat", &lon), ("long", &lat)], "look swapped"),
        (vec![("service_code", "pothole"), ("lat", &lat)], "lat and long go together"),
        (vec![("service_code", "pothole"), ("lat", &lat), ("lng", &lon)], "`lng` is not a GeoReport v2 field"),
        (vec![("service_code", "pothole"), ("address_string", "x"), ("email", "not-an-address")], "email is not an email address"),
    ];
    for (fields, expected) in &cases {
        let (status, body) = r.post_form(fields).await;
        assert_eq!(status, 400, "{fields:?}: {body}");
        let description = georeport_error(400, &body);
        assert!(description.contains(expected), "{fields:?}: `{description}` should say `{expected}`");
    }

    let (status, body) = r.post("/open311/v2/requests.json", "application/json", b"[1, 2]".to_vec()).await;
    assert!(status == 400 && georeport_error(400, &parse(&body)).contains("must be an object"), "{body}");
    let (status, body) = r.post("/open311/v2/requests.json", "application/json", b"{\"service_code\":".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    georeport_error(400, &parse(&body));
    let (status, body) = r.post("/open311/v2/requests.json", "text/plain", b"pothole at the corner".to_vec()).await;
    assert!(status == 415 && georeport_error(415, &parse(&body)).contains("application/x-www-form-urlencoded"), "{body}");

    // XML endpoints answer errors in XML.
    let (status, body) = r.post("/open311/v2/requests.xml", "application/x-www-form-urlencoded", form(&[("service_code", "pothole")])).await;
    assert_eq!(status, 400, "{body}");
    if let Some(doc) = xml(&body) {
        assert_eq!((&doc["root"], &doc["items"][0]["tag"]), (&json!("errors"), &json!("error")), "{doc}");
        assert_eq!(doc["items"][0]["fields"]["code"], "400", "{doc}");
        assert!(doc["items"][0]["fields"]["description"].as_str().unwrap().contains("location is required"), "{doc}");
    }

    let (status, body) = r.get_json("/open311/v2/requests/r0123456789abcdef.json").await;
    assert!(status == 404 && georeport_error(404, &body).contains("does not exist"), "{body}");
    let (status, body) = r.get("/open311/v2/requests/r0123456789abcdef.xml").await;
    assert_eq!(status, 404, "{body}");
    if let Some(doc) = xml(&body) {
        assert_eq!((&doc["root"], &doc["items"][0]["fields"]["code"]), (&json!("errors"), &json!("404")), "{doc}");
    }
    let (status, body) = r.get_json("/open311/v2/requests.json?status=pending").await;
    assert!(status == 400 && georeport_error(400, &body).contains("open, closed"), "{body}");
    let (status, body) = r.get_json("/open311/v2/requests.json?start_date=last-week").await;
    assert!(status == 400 && georeport_error(400, &body).contains("RFC 3339"), "{body}");
    let (status, body) = r
        .get_json("/open311/v2/requests.json?start_date=2026-01-01T00:00:00Z&end_date=2026-12-31T00:00:00Z")
        .await;
    assert!(status == 400 && georeport_error(400, &body).contains("at most 90 days"), "{body}");

    assert!(t.node.metrics().sum("cityward_open311_requests_total") >= cases.len() as f64);
    for answer in &r.answers {
        assert!(!answer.contains(EMAIL), "an answer carries the reporter's email: {answer}");
    }
}

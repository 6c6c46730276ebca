//! `[state] backend = "postgres"`: two nodes (as two processes of one tier would) on one
//! PostgreSQL schema share users, rules and alerts — what one changes the other reads.
//! Needs PostgreSQL at `CITYWARD_TEST_POSTGRES` (default 127.0.0.1:5432, database `test`);
//! skipped when it is not running, unless `CITYWARD_REQUIRE_SERVICES` is set.

mod common;

use serde_json::json;

fn postgres_url() -> Option<String> {
    let url = std::env::var("CITYWARD_TEST_POSTGRES").unwrap_or_else(|_| "postgresql://postgres@127.0.0.1:5432/test".into());
    if std::net::TcpStream::connect(("127.0.0.1", 5432)).is_ok() || std::env::var("CITYWARD_TEST_POSTGRES").is_ok() {
        return Some(url);
    }
    if std::env::var("CITYWARD_REQUIRE_SERVICES").is_ok() {
        panic!("PostgreSQL is not running on 127.0.0.1:5432; start it (.ci/run does) or set CITYWARD_TEST_POSTGRES");
    }
    eprintln!("skipped: PostgreSQL is not running on 127.0.0.1:5432");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_schema_share_users_rules_and_alerts() {
    let Some(url) = postgres_url() else { return };
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    let schema = format!("cw_nodes_{}_{nanos}", std::process::id());
    let use_pg = |c: &mut cityward_server::NodeConfig| {
        c.state.backend = "postgres".into();
        c.state.url = url.clone();
        c.state.schema = schema.clone();
    };
    let a = common::start(use_pg).await;
    let b = common::start(use_pg).await;
    let admin_a = a.login("admin", "admin-pass").await;
    // The users were created once, through node a's store; node b logs them in.
    let admin_b = b.login("admin", "admin-pass").await;

    a.install(&admin_a, json!({"id": "pg-smoke", "kind": "match", "when": "event.kind == \"smoke\" && event.attrs.alarm == true",
                              "key": "event.source", "severity": "high", "category": "fire.smoke"}))
        .await;
    let (status, rule) = b.get("/api/v1/rules/pg-smoke", &admin_b).await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(rule["version"], 1);

    let sensor = common::device(&a.node, "smoke");
    a.ingest(&admin_a, &[common::smoke("pg-1", &sensor.id, true, 30.0)]).await;
    let raised = a.wait_alert(&admin_a, "raised at a", |x| x["rule"] == "pg-smoke").await;
    let id = raised["id"].as_str().unwrap().to_string();
    let seen = b.wait_alert(&admin_b, "seen at b", |x| x["id"] == id.as_str()).await;
    assert_eq!(seen["status"], raised["status"]);

    let (status, acked) = b.post_json(&format!("/api/v1/alerts/{id}/ack"), &admin_b, json!({"note": "b acknowledges"})).await;
    assert_eq!(status, 200, "{acked}");
    let (status, at_a) = a.get(&format!("/api/v1/alerts/{id}"), &admin_a).await;
    assert_eq!(status, 200, "{at_a}");
    assert_eq!(at_a["status"], "acknowledged", "a reads b's change from the shared store");

    drop((a, b));
    // Leave the test database as it was.
    let _ = std::process::Command::new("psql").args([url.as_str(), "-qc", &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")]).status();
}

//! `cityward demo`: a generated city, a node, users for every role, and simulated events
//! streaming in live — nothing to install.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use cityward_server::{Channel, HotlistEntryInput, Node, NodeConfig, Role, User};
use cityward_sim::{Simulator, Size};

/// The demo's rules: every kind, on the generated city's zones and scripted incidents.
const DEMO_RULES: &str = include_str!("demo_rules.yaml");

/// Runs the demo until Ctrl-C.
pub async fn run(data: Option<PathBuf>, listen: &str, size: Size, seed: u64) -> anyhow::Result<()> {
    let (data_dir, _temporary) = match data {
        Some(dir) => (dir, None),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix("cityward-demo-")
                .tempdir()
                .context("cannot create a temporary data directory")?;
            (tmp.path().to_path_buf(), Some(tmp))
        }
    };
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let city = cityward_sim::generate_city(seed, size);
    let city_dir = data_dir.join("generated-city");
    city.write(&city_dir)
        .with_context(|| format!("cannot write the demo city to {}", city_dir.display()))?;

    let mut config = NodeConfig::default();
    config.node.name = "demo".into();
    config.node.data_dir = data_dir.clone();
    config.node.listen = listen
        .parse()
        .with_context(|| format!("--listen `{listen}` is not an address like 127.0.0.1:8080"))?;
    config.city.dir = Some(city_dir);
    config.auth.open_ingest = true;
    let rules = data_dir.join("demo-rules.yaml");
    std::fs::write(&rules, DEMO_RULES).with_context(|| format!("cannot write {}", rules.display()))?;
    config.detect.rules = vec![rules.clone()];
    let node = Node::open(config).await?;
    // The simulator's hotlisted plates, so the hotlist rule has something to find.
    let operator = User {
        username: "demo".into(),
        role: Role::Admin,
        unit: None,
        supervisor: false,
    };
    for plate in cityward_sim::HOTLIST_PLATES {
        let entry = HotlistEntryInput {
            value: plate.into(),
            reason: "demo case 2026-117".into(),
            owner: Some("police".into()),
            expires: Some(Utc::now() + chrono::Duration::days(30)),
        };
        node.put_hotlist_entry("wanted", entry, &operator)?;
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen}; is another demo running? pass --listen 127.0.0.1:8081"
            )
        })?;

    // The dispatcher works city-wide; the responder for one community, to show jurisdictions.
    let top = city.units.iter().find(|u| u.parent_unit.is_none()).map(|u| u.id.clone());
    let community = city.units.iter().find(|u| u.kind == "community").map(|u| u.id.clone());
    let unit_of = |role: Role| match role {
        Role::Dispatcher => top.clone(),
        Role::Responder => community.clone(),
        _ => None,
    };
    for role in Role::ALL {
        // Users survive in a reused --data directory; creating them again is not an error.
        let _ = node.create_user(role.as_str(), "demo", role, unit_of(role).as_deref());
    }
    // An analyst who approves searches beyond the limits of a role.
    let _ = node.create_user("supervisor", "demo", Role::Analyst, None);
    node.state().set_supervisor("supervisor", true)?;
    // An analyst of one street (not the responder's), to show that sharing is denied by
    // default: the street's own events, another unit's only under a sharing grant.
    let responder_street = community.as_deref().and_then(|c| city.unit(c)).and_then(|u| u.parent_unit.clone());
    let street = city.units.iter().find(|u| u.kind == "street" && Some(&u.id) != responder_street.as_ref()).map(|u| u.id.clone());
    if let Some(street) = &street {
        let _ = node.create_user("street-analyst", "demo", Role::Analyst, Some(street));
    }
    println!(
        "cityward demo city: {} devices, {} grids, {} roads, {} units.",
        city.devices.len(),
        city.grids.len(),
        city.roads.len(),
        city.units.len()
    );
    println!("  console   http://{listen}/");
    println!("  API       http://{listen}/api/openapi.json");
    println!(
        "  users     {} — password `demo`",
        Role::ALL.map(|r| r.as_str()).join(", ")
    );
    if let (Some(top), Some(community)) = (&top, &community) {
        println!("            dispatcher acts for {top} (the whole city), responder for {community}");
    }
    if let Some(street) = &street {
        println!("            street-analyst searches {street} only (others' data under a sharing grant)");
    }
    println!("  data      {}", data_dir.display());
    println!("  rules     {} (alerts: GET /api/v1/alerts)", rules.display());
    println!(
        "  try       cityward sql --data {} \"SELECT kind, count(*) FROM events GROUP BY kind\"",
        data_dir.display()
    );
    println!("Simulated events are streaming in; Ctrl-C stops.");

    let feeder = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut simulator = Simulator::new(&city, seed, Utc::now());
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let events = simulator.next_until(Utc::now());
                if events.is_empty() {
                    continue;
                }
                if let Err(e) = node.ingest_events(events, Channel::Internal).await {
                    tracing::error!(error = %e, "Simulated events could not be stored.");
                }
            }
        })
    };
    cityward_server::serve_on(node, listener, cityward_server::shutdown_signal()).await?;
    feeder.abort();
    Ok(())
}

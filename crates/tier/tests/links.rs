//! The tier links against real nats-server processes joined by leaf nodes: what a
//! community sends up arrives at the street exactly once and in order, across a cut link;
//! what the street publishes down reaches the community, including what it published
//! while the link was cut.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cityward_tier::testkit::{available, LinkCutter, NatsServer};
use cityward_tier::{Envelope, Link, LinkConfig};

fn envelope(kind: &str, i: usize, origin: &str) -> Envelope {
    Envelope::new(kind, format!("{kind}-{i}"), origin, &serde_json::json!({"n": i}))
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What arrives, kept in order, and the apply function that keeps it.
type Received = Arc<Mutex<Vec<Envelope>>>;
fn collector() -> (Received, impl Fn(Vec<Envelope>) -> std::future::Ready<Result<(), String>> + Clone) {
    let received: Received = Arc::default();
    let sink = received.clone();
    (received, move |batch| {
        sink.lock().unwrap().extend(batch);
        std::future::ready(Ok(()))
    })
}

fn link_config(node: &str, server: &NatsServer, parent: &str) -> LinkConfig {
    LinkConfig { node: node.into(), nats: server.url(), parent: parent.into(), ..LinkConfig::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_reaches_the_parent_once_and_in_order_across_a_cut_link() {
    if !available() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut street_server = NatsServer::start("street-1", dir.path(), None);
    let comm_server = NatsServer::start("comm-a", dir.path(), Some(&street_server));

    let street = Arc::new(Link::open(link_config("street-1", &street_server, "")).await.unwrap());
    let comm = Arc::new(Link::open(link_config("comm-a", &comm_server, "street-1")).await.unwrap());
    let (received, apply) = collector();
    let inbox = tokio::spawn(street.clone().run_inbox(apply));
    let forwarder = tokio::spawn(comm.clone().run_forwarder());

    // Healthy link.
    for i in 0..100 {
        comm.send_up(&[envelope("alert", i, "comm-a")]).await.unwrap();
    }
    wait_for("the first 100 envelopes at the street", Duration::from_secs(15), || received.lock().unwrap().len() >= 100).await;

    // Cut: the street's server goes away; the community keeps appending locally.
    street_server.stop();
    for i in 100..1100 {
        comm.send_up(&[envelope("alert", i, "comm-a")]).await.expect("the outbox takes envelopes while the uplink is cut");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received.lock().unwrap().len(), 100, "nothing can arrive while the street's server is down");

    // Restore: everything arrives, each once, in order.
    street_server.restart();
    let restored = Instant::now();
    wait_for("the first of the backlog", Duration::from_secs(30), || received.lock().unwrap().len() > 100).await;
    eprintln!("first of the backlog arrived {:?} after the street's server restarted", restored.elapsed());
    wait_for("the backlog at the street", Duration::from_secs(30), || received.lock().unwrap().len() >= 1100).await;
    eprintln!("backlog of 1,000 delivered {:?} after the street's server restarted", restored.elapsed());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = received.lock().unwrap().clone();
    let ids: Vec<String> = got.iter().map(|e| e.id.clone()).collect();
    let want: Vec<String> = (0..1100).map(|i| format!("alert-{i}")).collect();
    assert_eq!(ids, want, "every envelope exactly once, in the order it was sent");
    assert!(comm.stats().forwarded.load(std::sync::atomic::Ordering::Relaxed) >= 1100);
    forwarder.abort();
    inbox.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downlink_reaches_children_including_what_was_published_while_cut() {
    if !available() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let city_server = NatsServer::start("city", dir.path(), None);
    let mut comm_server = NatsServer::start("comm-b", dir.path(), Some(&city_server));
    let city = Arc::new(Link::open(link_config("city", &city_server, "")).await.unwrap());
    let comm = Arc::new(Link::open(link_config("comm-b", &comm_server, "city")).await.unwrap());

    let (received, apply) = collector();
    let down = tokio::spawn(comm.clone().run_downlink(apply.clone()));
    city.send_down(&[envelope("rule", 1, "city")]).await.unwrap();
    wait_for("the first rule at the community", Duration::from_secs(15), || received.lock().unwrap().len() == 1).await;

    // The community's server goes away; the city publishes on; the community comes back.
    down.abort();
    comm_server.stop();
    city.send_down(&[envelope("rule", 2, "city"), envelope("rule", 3, "city")]).await.unwrap();
    comm_server.restart();
    let comm = Arc::new(Link::open(link_config("comm-b", &comm_server, "city")).await.unwrap());
    let down = tokio::spawn(comm.clone().run_downlink(apply));
    wait_for("the rules published during the cut", Duration::from_secs(20), || received.lock().unwrap().len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: Vec<String> = received.lock().unwrap().iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, ["rule-1", "rule-2", "rule-3"]);
    down.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_link_resyncs_within_two_seconds_of_reconnection() {
    if !available() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cutter = LinkCutter::start(0);
    let city_server = NatsServer::start_behind("city", dir.path(), None, Some(cutter.port));
    cutter.set_target(city_server.leaf_port);
    let comm_server = NatsServer::start_leaf_of("comm-c", dir.path(), Some(cutter.port));
    let city = Arc::new(Link::open(link_config("city", &city_server, "")).await.unwrap());
    let comm = Arc::new(Link::open(link_config("comm-c", &comm_server, "city")).await.unwrap());
    let (received, apply) = collector();
    let inbox = tokio::spawn(city.clone().run_inbox(apply));
    let forwarder = tokio::spawn(comm.clone().run_forwarder());
    comm.send_up(&[envelope("alert", 0, "comm-c")]).await.unwrap();
    wait_for("the first envelope", Duration::from_secs(15), || received.lock().unwrap().len() == 1).await;

    cutter.cut();
    for i in 1..=2000 {
        comm.send_up(&[envelope("alert", i, "comm-c")]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received.lock().unwrap().len(), 1, "nothing crosses a cut link");
    cutter.restore();
    let restored = Instant::now();
    // The leaf connection comes back within its 1 s reconnect interval; the forwarder
    // notices within its probe interval.
    wait_for("the backlog after the partition", Duration::from_secs(5), || received.lock().unwrap().len() > 1).await;
    let resync = restored.elapsed();
    wait_for("all of the backlog", Duration::from_secs(20), || received.lock().unwrap().len() >= 2001).await;
    eprintln!("resync began {resync:?} after the link was restored");
    let ids: Vec<String> = received.lock().unwrap().iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, (0..=2000).map(|i| format!("alert-{i}")).collect::<Vec<_>>());
    forwarder.abort();
    inbox.abort();
}

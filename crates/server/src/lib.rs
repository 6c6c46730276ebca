//! The cityward node as a service: the [`Node`] that owns the intake pipeline, the write-
//! ahead log, the event lake and the state store; the HTTP API ([`router`]); the MQTT
//! subscriber; the node's metrics; and [`serve`], which runs it all until a shutdown
//! signal and then flushes.
//!
//! Decoding and validation live in `cityward-ingest`, durable storage in `cityward-store`;
//! this crate wires them into a running process and must not grow transport-independent
//! logic of its own.
#![deny(missing_docs)]

mod alert_writer;
mod auth;
mod city_api;
mod citystate;
mod config;
mod dedup;
mod desk;
mod detect;
mod dispatch;
mod heat;
mod http;
mod jobs;
mod live;
mod metrics;
mod mqtt;
mod node;
mod open311;
mod photos;
mod positions;
mod rules;
mod grants;
mod holds;
mod purpose;
mod retention;
mod search;
mod transparency;
mod stats;
mod stored_list;
mod storage;
mod shards;
mod tier;
mod trial;
mod webhooks;

use std::future::Future;
use std::sync::Arc;

pub use auth::create_user;
pub use config::{ConfigError, NodeConfig, DEFAULT_CONFIG_TOML};
pub use citystate::load_city;
pub use holds::load_holds;
pub use retention::retention_policy;
pub use http::{router, ApiError};
pub use metrics::Metrics;
pub use desk::AlertChange;
pub use detect::DetectStatus;
pub use rules::HotlistEntryInput;
pub use search::plate_condition;
pub use node::{new_event_id, Channel, IngestOutcome, Node, NodeError, Role, StoredBatch, User};
pub use storage::EventStore;

/// Opens a node, starts its background stages, and serves HTTP on `listener` until
/// `shutdown` resolves; then stops taking requests and flushes the WAL.
pub async fn serve_on(
    node: Arc<Node>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = start_background(&node);
    let app = router(node.clone());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, role = %node.config().node.role, "Node is listening.");
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    for task in background {
        task.abort();
    }
    node.shutdown().await;
    tracing::info!("Node stopped; the WAL is flushed.");
    served
}

/// Runs a node from its configuration until Ctrl-C or SIGTERM.
pub async fn serve(config: NodeConfig) -> Result<(), NodeError> {
    let listen = config.node.listen;
    let node = Node::open(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        NodeError::Unavailable(format!(
            "cannot listen on {listen}: {e}; is another process using it? set node.listen"
        ))
    })?;
    serve_on(node, listener, shutdown_signal())
        .await
        .map_err(|e| NodeError::Internal(e.to_string()))
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("Shutdown requested; finishing requests and flushing.");
}

fn start_background(node: &Arc<Node>) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = storage::start_background(node.clone());
    tasks.push(tokio::spawn(desk::run_clock(node.desk().clone())));
    tasks.push(tokio::spawn(webhooks::run(node.desk().clone())));
    tasks.push(tokio::spawn(dispatch::run(node.clone())));
    tasks.push(tokio::spawn(positions::run(node.clone())));
    tasks.extend(tier::start(node.clone()));
    tasks.extend(shards::start(node.clone()));
    if node.config().detect.enabled {
        tasks.push(tokio::spawn(rules::run_sql_rules(node.clone())));
    }
    if node.config().mqtt.enabled {
        tasks.push(tokio::spawn(mqtt::run(
            node.clone(),
            node.config().mqtt.clone(),
        )));
    }
    tasks
}

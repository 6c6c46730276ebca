//! Links between cityward's tiers — community, street and city nodes — over NATS JetStream.
//!
//! Every node runs beside its own `nats-server` with JetStream on, whose JetStream domain is
//! the node's name; the server of a lower tier is a leaf node of the server of the tier
//! above. A node's link owns three streams on its own server:
//!
//! - `CW_OUT_<node>` (`cw.<node>.out`), the **outbox**: what must go up (alert changes,
//!   summaries). The node appends to it locally, so appending works whether or not the
//!   tier above is reachable; a forwarder moves it, in order, to the parent's inbox and
//!   purges it only once the parent's JetStream has acknowledged it.
//! - `CW_IN_<node>` (`cw.<node>.in`), the **inbox**: what the nodes below forwarded.
//! - `CW_DOWN_<node>` (`cw.<node>.down`), the **downlink**: what this node publishes to the
//!   nodes below (rules, routing tables, zones, hotlists, changes to their alerts). Each child reads it through a
//!   durable consumer of its own, so a child that was cut off gets what it missed.
//!
//! Exactly once *in effect*: a forwarded batch carries a `Nats-Msg-Id` made of the outbox
//! sequence numbers it holds, so a batch sent again after a lost acknowledgement is dropped
//! by the parent's duplicate window; beyond that window, every [`Envelope`] has an id that
//! the applying side uses to ignore what it already has.
//!
//! [`shard`] is the other use of JetStream inside a tier: several processes of one node
//! sharing its events through a partitioned stream.
//!
//! This crate moves envelopes and knows nothing of what they mean: the server decides what
//! goes up or down and how an arriving envelope changes its state.
#![deny(missing_docs)]

pub mod shard;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The largest payload of one forwarded batch (NATS's default maximum is 1 MiB).
const MAX_BATCH_BYTES: usize = 512 * 1024;
/// Most outbox messages forwarded as one group (acknowledged, then purged, together).
const MAX_GROUP: usize = 4096;
/// Most bytes of outbox messages in one group.
const MAX_GROUP_BYTES: usize = 4 << 20;
/// Most groups sent and not yet acknowledged (so at most 64 MiB held for resending).
const MAX_IN_FLIGHT: usize = 16;
/// The first and the longest pause between attempts to reach the tier above.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MOST: Duration = Duration::from_millis(500);
/// How often a forwarder cut off from the parent asks whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long the parent's acknowledgement of a forwarded batch may take before the batch
/// is sent again (a batch sent just as the link came back may have gone nowhere).
const ACK_WAIT: Duration = Duration::from_millis(1500);

/// One fact that crosses a tier boundary. Its body stays JSON text on the way: the links
/// never parse it, only the node that applies it does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// What it is: `alert`, `summary`, `rule`, `rule.delete`, `hotlists`, ….
    pub kind: String,
    /// Its identity: the same id is the same fact, applied once.
    pub id: String,
    /// The node that produced it.
    pub origin: String,
    /// The fact itself, as JSON.
    pub body: Box<RawValue>,
}

impl Envelope {
    /// An envelope of `body` serialised.
    pub fn new(kind: &str, id: String, origin: &str, body: &impl Serialize) -> Envelope {
        // Serialising a value of ours cannot fail (no maps with non-string keys).
        let body = serde_json::value::to_raw_value(body).unwrap_or_else(|_| RawValue::from_string("null".into()).expect("null is JSON"));
        Envelope { kind: kind.into(), id, origin: origin.into(), body }
    }

    /// The body as `T`; an error names the envelope.
    pub fn body<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(self.body.get()).map_err(|e| format!("{} `{}` from {}: {e}", self.kind, self.id, self.origin))
    }
}

/// Where this node's link goes.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkConfig {
    /// This node's name; also the JetStream domain of its own NATS server.
    pub node: String,
    /// URL of this node's own NATS server (JetStream on, `domain` = the node's name).
    pub nats: String,
    /// The node of the tier above, whose server this node's server is a leaf node of;
    /// empty at the top (the city).
    pub parent: String,
    /// The most bytes the outbox keeps while the tier above is unreachable; beyond it new
    /// appends fail (and are counted) rather than old ones being dropped.
    pub outbox_max_bytes: i64,
    /// How long the downlink keeps what it published for children that are cut off.
    pub downlink_keep: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            node: "cityward".into(),
            nats: "nats://127.0.0.1:4222".into(),
            parent: String::new(),
            outbox_max_bytes: 10 * 1024 * 1024 * 1024,
            downlink_keep: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// What went wrong on a link; each names the stream or server and what to check.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// This node's own NATS server could not be reached or refused a request.
    #[error("NATS server {url}: {reason}; is nats-server running there with JetStream on (domain `{node}`)? set [tier] nats")]
    Local {
        /// The server.
        url: String,
        /// This node.
        node: String,
        /// What happened.
        reason: String,
    },
    /// A stream could not be created or used.
    #[error("JetStream stream {stream}: {reason}")]
    Stream {
        /// The stream.
        stream: String,
        /// What happened.
        reason: String,
    },
    /// An envelope could not be encoded or decoded.
    #[error("envelope on {subject}: {reason}")]
    Envelope {
        /// Where it was read.
        subject: String,
        /// What was wrong.
        reason: String,
    },
}

/// Counters of a link, for metrics and `/api/v1/status`.
#[derive(Debug, Default)]
pub struct LinkStats {
    /// Envelopes appended to the outbox.
    pub queued: AtomicU64,
    /// Envelopes the parent acknowledged.
    pub forwarded: AtomicU64,
    /// Batches the parent acknowledged.
    pub forwarded_batches: AtomicU64,
    /// Batches the parent had already (sent again after a lost acknowledgement).
    pub duplicate_batches: AtomicU64,
    /// Failed attempts to reach the parent.
    pub up_failures: AtomicU64,
    /// Appends to the outbox that failed (full, or the own server unreachable).
    pub outbox_failures: AtomicU64,
    /// Envelopes applied from the inbox.
    pub inbox_applied: AtomicU64,
    /// Envelopes applied from the parent's downlink.
    pub downlink_applied: AtomicU64,
    /// Whether the last attempt to reach the parent succeeded.
    pub up: AtomicBool,
}

/// A node's end of the tier links.
pub struct Link {
    config: LinkConfig,
    client: async_nats::Client,
    local: Context,
    stats: Arc<LinkStats>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("node", &self.config.node).field("parent", &self.config.parent).finish()
    }
}

/// The stream names and subjects of `node`.
pub fn outbox_subject(node: &str) -> String {
    format!("cw.{node}.out")
}
/// The subject of `node`'s inbox.
pub fn inbox_subject(node: &str) -> String {
    format!("cw.{node}.in")
}
/// The subject of `node`'s downlink.
pub fn downlink_subject(node: &str) -> String {
    format!("cw.{node}.down")
}
fn stream_name(prefix: &str, node: &str) -> String {
    format!("{prefix}_{node}")
}

/// Checks that `name` can name a node: it becomes part of subjects, stream names and the
/// JetStream domain.
pub fn check_node_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("`{name}` must have 1 to 64 characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
        return Err(format!(
            "`{name}` has `{c}`; a node name crosses NATS subjects and JetStream domains, so use only letters, digits, `-` and `_`"
        ));
    }
    Ok(())
}

impl Link {
    /// Connects to this node's own NATS server and makes sure its three streams exist.
    pub async fn open(config: LinkConfig) -> Result<Link, LinkError> {
        let local_err = |reason: String| LinkError::Local { url: config.nats.clone(), node: config.node.clone(), reason };
        check_node_name(&config.node).map_err(|e| local_err(format!("node name {e}")))?;
        if !config.parent.is_empty() {
            check_node_name(&config.parent).map_err(|e| local_err(format!("parent name {e}")))?;
        }
        let client = async_nats::ConnectOptions::new()
            .name(format!("cityward {}", config.node))
            .connection_timeout(Duration::from_secs(5))
            // The own server restarting is a local matter: be back within a second, not
            // after the client's default backoff of several.
            .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
            .connect(config.nats.as_str())
            .await
            .map_err(|e| local_err(e.to_string()))?;
        let local = jetstream::new(client.clone());
        let link = Link { config, client, local, stats: Arc::new(LinkStats::default()) };
        link.ensure_streams().await?;
        Ok(link)
    }

    async fn ensure_streams(&self) -> Result<(), LinkError> {
        let node = &self.config.node;
        let streams = [
            jetstream::stream::Config {
                name: stream_name("CW_OUT", node),
                description: Some("cityward: what this node sends to the tier above, until acknowledged there".into()),
                subjects: vec![outbox_subject(node)],
                // Not a work queue: the forwarder reads it with an ordered consumer and
                // purges what the parent acknowledged.
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                max_bytes: self.config.outbox_max_bytes,
                discard: DiscardPolicy::New,
                ..Default::default()
            },
            jetstream::stream::Config {
                name: stream_name("CW_IN", node),
                description: Some("cityward: what the nodes below forwarded, until applied".into()),
                subjects: vec![inbox_subject(node)],
                retention: RetentionPolicy::WorkQueue,
                storage: StorageType::File,
                duplicate_window: Duration::from_secs(600),
                ..Default::default()
            },
            jetstream::stream::Config {
                name: stream_name("CW_DOWN", node),
                description: Some("cityward: what this node publishes to the nodes below".into()),
                subjects: vec![downlink_subject(node)],
                retention: RetentionPolicy::Limits,
                storage: StorageType::File,
                max_age: self.config.downlink_keep,
                ..Default::default()
            },
        ];
        for config in streams {
            let name = config.name.clone();
            self.local
                .get_or_create_stream(config)
                .await
                .map_err(|e| LinkError::Stream { stream: name, reason: format!("{e}; does the server have JetStream on?") })?;
        }
        Ok(())
    }

    /// The link's configuration.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The link's counters.
    pub fn stats(&self) -> &Arc<LinkStats> {
        &self.stats
    }

    /// Appends envelopes to the outbox as one message; returns once this node's own
    /// JetStream has stored them, whether or not the tier above is reachable.
    pub async fn send_up(&self, envelopes: &[Envelope]) -> Result<(), LinkError> {
        if envelopes.is_empty() || self.config.parent.is_empty() {
            return Ok(());
        }
        let subject = outbox_subject(&self.config.node);
        let result = self.publish_local(&subject, envelopes).await;
        match &result {
            Ok(()) => self.stats.queued.fetch_add(envelopes.len() as u64, Ordering::Relaxed),
            Err(_) => self.stats.outbox_failures.fetch_add(1, Ordering::Relaxed),
        };
        result
    }

    /// Publishes envelopes to this node's downlink, for every node below.
    pub async fn send_down(&self, envelopes: &[Envelope]) -> Result<(), LinkError> {
        if envelopes.is_empty() {
            return Ok(());
        }
        self.publish_local(&downlink_subject(&self.config.node), envelopes).await
    }

    async fn publish_local(&self, subject: &str, envelopes: &[Envelope]) -> Result<(), LinkError> {
        let payload = encode(envelopes).map_err(|reason| LinkError::Envelope { subject: subject.into(), reason })?;
        let stream_err = |reason: String| LinkError::Stream { stream: subject.to_string(), reason };
        self.local
            .publish(subject.to_string(), payload)
            .await
            .map_err(|e| stream_err(e.to_string()))?
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        Ok(())
    }

    /// Moves the outbox to the parent's inbox until the task is dropped: in order, in
    /// batches, retrying while the parent is unreachable, removing a message from the
    /// outbox only once the parent's JetStream acknowledged it.
    pub async fn run_forwarder(self: Arc<Self>) {
        if self.config.parent.is_empty() {
            return;
        }
        let mut backoff = RETRY_FIRST;
        loop {
            match self.forward().await {
                Ok(()) => backoff = RETRY_FIRST,
                Err(e) => {
                    tracing::warn!(parent = %self.config.parent, error = %e, "Outbox not forwarded; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MOST);
                }
            }
        }
    }

    /// Forwards until an error that needs a fresh consumer. The outbox's first message
    /// is where forwarding stands: what the parent acknowledged is purged from it, so a
    /// restarted forwarder begins at the first message still there.
    async fn forward(&self) -> Result<(), LinkError> {
        let node = &self.config.node;
        let stream_err = |reason: String| LinkError::Stream { stream: stream_name("CW_OUT", node), reason };
        let stream = self.local.get_stream(stream_name("CW_OUT", node)).await.map_err(|e| stream_err(e.to_string()))?;
        // The outbox is read by sequence: no acknowledgements (what the parent has is
        // purged instead), and a gap in the sequence numbers starts the reading again.
        // A durable consumer, made afresh at the outbox's first message each time: an
        // ephemeral one would be deleted by the server during a long partition.
        let _ = stream.delete_consumer("forwarder").await;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("forwarder".into()),
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        let parent_subject = inbox_subject(&self.config.parent);
        // Groups sent and not yet acknowledged, oldest first: several are in flight so
        // that a backlog is not sent one round trip at a time.
        let mut in_flight: VecDeque<Group> = VecDeque::new();
        let mut next_seq: Option<u64> = None;
        let mut mean_size: usize = 1024;
        loop {
            let mut fetched = Vec::new();
            if in_flight.len() < MAX_IN_FLIGHT {
                // What is there now, in one round trip…
                // (A fetch's own byte limit is refused outright when the next message
                // alone is larger, so the count is sized from the messages seen so far.)
                let mut got = consumer
                    .fetch()
                    .max_messages((MAX_GROUP_BYTES / mean_size.max(1)).clamp(1, MAX_GROUP))
                    .messages()
                    .await
                    .map_err(|e| stream_err(e.to_string()))?;
                while let Some(m) = got.next().await {
                    fetched.push(m.map_err(|e| stream_err(e.to_string()))?);
                }
                // …or, with nothing to do, wait for the next message.
                if fetched.is_empty() && in_flight.is_empty() {
                    let mut got = consumer
                        .batch()
                        .max_messages(1)
                        .expires(Duration::from_secs(5))
                        .messages()
                        .await
                        .map_err(|e| stream_err(e.to_string()))?;
                    while let Some(m) = got.next().await {
                        fetched.push(m.map_err(|e| stream_err(e.to_string()))?);
                    }
                }
            }
            if !fetched.is_empty() {
                let bytes: usize = fetched.iter().map(|m| m.payload.len()).sum();
                mean_size = (mean_size + bytes / fetched.len()) / 2;
            }
            for m in &fetched {
                let seq = m.info().map_err(|e| stream_err(e.to_string()))?.stream_sequence;
                if next_seq.is_some_and(|n| n != seq) {
                    return Err(stream_err(format!("outbox read out of sequence (expected {}, got {seq}); reading again", next_seq.unwrap_or(0))));
                }
                next_seq = Some(seq + 1);
            }
            if let Some(last) = fetched.last() {
                let last = last.info().map_err(|e| stream_err(e.to_string()))?.stream_sequence;
                let batches = pack(&fetched, node).map_err(|reason| LinkError::Envelope { subject: outbox_subject(node), reason })?;
                let mut group = Group { batches, acks: Vec::new(), last };
                if let Err(reason) = self.publish_group(&parent_subject, &mut group).await {
                    tracing::debug!(parent = %self.config.parent, %reason, "Parent unreachable; keeping the outbox.");
                }
                in_flight.push_back(group);
                continue;
            }
            // Nothing new (or enough in flight): settle the oldest group.
            let Some(mut oldest) = in_flight.pop_front() else { continue };
            match self.settle(&mut oldest).await {
                Ok(()) => {
                    self.stats.up.store(true, Ordering::Relaxed);
                    stream
                        .purge()
                        .sequence(oldest.last + 1)
                        .await
                        .map_err(|e| stream_err(format!("cannot remove forwarded messages: {e}")))?;
                }
                Err(reason) => {
                    self.stats.up.store(false, Ordering::Relaxed);
                    self.stats.up_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(parent = %self.config.parent, %reason, "Parent unreachable; keeping the outbox.");
                    // Send this group and every later one again, in order, once the
                    // parent answers; the same ids make repeats duplicates there.
                    in_flight.push_front(oldest);
                    self.wait_for_parent().await;
                    for group in in_flight.iter_mut() {
                        group.acks.clear();
                        let _ = self.publish_group(&parent_subject, group).await;
                    }
                }
            }
        }
    }

    /// Publishes a group's batches to the parent's inbox, keeping their acknowledgements.
    async fn publish_group(&self, subject: &str, group: &mut Group) -> Result<(), String> {
        for batch in &group.batches[group.acks.len()..] {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, batch.msg_id.as_str());
            let ack = self
                .local
                .publish_with_headers(subject.to_string(), headers, batch.payload.clone())
                .await
                .map_err(|e| e.to_string())?;
            group.acks.push(ack);
        }
        Ok(())
    }

    /// Waits for the parent's acknowledgement of every batch of a group.
    async fn settle(&self, group: &mut Group) -> Result<(), String> {
        if group.acks.len() < group.batches.len() {
            return Err("not every batch of the group was sent".into());
        }
        for (ack, batch) in group.acks.drain(..).zip(&group.batches) {
            let ack = tokio::time::timeout(ACK_WAIT, ack)
                .await
                .map_err(|_| format!("no acknowledgement within {ACK_WAIT:?}"))?
                .map_err(|e| e.to_string())?;
            if ack.duplicate {
                self.stats.duplicate_batches.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.forwarded.fetch_add(batch.envelopes as u64, Ordering::Relaxed);
                self.stats.forwarded_batches.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Returns once the parent's JetStream answers through the link: asking every
    /// [`PROBE_EVERY`] with a short timeout notices a restored link sooner than sending
    /// whole batches into it and waiting for their acknowledgements.
    async fn wait_for_parent(&self) {
        // The parent's inbox stream answering its info request means the leaf connection
        // is up and the parent's JetStream has recovered the stream.
        let subject = format!("$JS.{}.API.STREAM.INFO.{}", self.config.parent, stream_name("CW_IN", &self.config.parent));
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let asked = tokio::time::timeout(PROBE_EVERY * 2, self.client.request(subject.clone(), Bytes::new())).await;
            if let Ok(Ok(reply)) = asked {
                if !reply.payload.windows(8).any(|w| w == b"\"error\"") {
                    return;
                }
            }
        }
    }

    /// Applies what the nodes below forwarded, in the order it arrived, until the task is
    /// dropped. `apply` gets each message's envelopes; the message leaves the inbox only
    /// when `apply` succeeded (on failure it is tried again after a pause).
    pub async fn run_inbox<F, Fut>(self: Arc<Self>, apply: F)
    where
        F: Fn(Vec<Envelope>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let stream = stream_name("CW_IN", &self.config.node);
        let local = self.local.clone();
        let stats = self.stats.clone();
        consume(&local, &stream, "apply", &inbox_subject(&self.config.node), &apply, &stats.inbox_applied).await;
    }

    /// Applies what the parent publishes on its downlink, through this node's own durable
    /// consumer there, until the task is dropped; while the parent is unreachable it keeps
    /// trying, and then gets everything it missed, in order.
    pub async fn run_downlink<F, Fut>(self: Arc<Self>, apply: F)
    where
        F: Fn(Vec<Envelope>) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        if self.config.parent.is_empty() {
            return;
        }
        let parent = jetstream::with_domain(self.client.clone(), &self.config.parent);
        let stream = stream_name("CW_DOWN", &self.config.parent);
        let durable = format!("down_{}", self.config.node);
        consume(&parent, &stream, &durable, &downlink_subject(&self.config.parent), &apply, &self.stats.downlink_applied).await;
    }
}

impl Link {
    /// Asks `node` (any node reachable over the leaf links) for its `service`, e.g. the
    /// raw events behind one of its alerts; `Ok(None)` when no such node answers.
    pub async fn request(&self, node: &str, service: &str, body: Bytes, timeout: Duration) -> Result<Option<Bytes>, LinkError> {
        let subject = format!("cw.{node}.{service}");
        let err = |reason: String| LinkError::Local { url: self.config.nats.clone(), node: self.config.node.clone(), reason: format!("request to {subject}: {reason}") };
        match tokio::time::timeout(timeout, self.client.request(subject.clone(), body)).await {
            Err(_) => Err(err(format!("no answer within {timeout:?}; is the link to `{node}` up?"))),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => Ok(None),
            Ok(Err(e)) => Err(err(e.to_string())),
            Ok(Ok(reply)) => Ok(Some(reply.payload)),
        }
    }

    /// Answers requests for this node's `service` with `answer` until the task is dropped.
    pub async fn serve<F, Fut>(self: Arc<Self>, service: &str, answer: F)
    where
        F: Fn(Bytes) -> Fut,
        Fut: std::future::Future<Output = Bytes>,
    {
        let subject = format!("cw.{}.{service}", self.config.node);
        let mut subscription = match self.client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%subject, error = %e, "Cannot answer requests.");
                return;
            }
        };
        while let Some(message) = subscription.next().await {
            let Some(reply) = message.reply else { continue };
            let answer = answer(message.payload).await;
            if let Err(e) = self.client.publish(reply, answer).await {
                tracing::warn!(%subject, error = %e, "Answer not sent.");
            }
        }
    }
}

/// Reads `stream` through the durable consumer `durable` and hands each message to
/// `apply`, acknowledging it once applied; reconnects and retries forever.
async fn consume<F, Fut>(js: &Context, stream: &str, durable: &str, subject: &str, apply: &F, applied: &AtomicU64)
where
    F: Fn(Vec<Envelope>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut backoff = RETRY_FIRST;
    loop {
        let result: Result<(), String> = async {
            let s = js.get_stream(stream).await.map_err(|e| e.to_string())?;
            let consumer: jetstream::consumer::PullConsumer = s
                .get_or_create_consumer(
                    durable,
                    pull::Config {
                        durable_name: Some(durable.into()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: Duration::from_secs(30),
                        deliver_policy: DeliverPolicy::All,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
            let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| e.to_string())?;
                let mut wait = RETRY_FIRST;
                let mut n = 0;
                loop {
                    // Decoded again for each attempt rather than kept: the envelopes are
                    // the apply's to take apart.
                    let envelopes = match decode(&message.payload) {
                        Ok(e) => e,
                        Err(reason) => {
                            // A message no version of cityward wrote: say so and move on,
                            // rather than block every message behind it.
                            tracing::error!(%subject, %reason, "Envelope dropped.");
                            break;
                        }
                    };
                    n = envelopes.len() as u64;
                    match apply(envelopes).await {
                        Ok(()) => break,
                        Err(reason) => {
                            tracing::warn!(%subject, %reason, "Envelopes not applied; retrying.");
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                message.ack().await.map_err(|e| e.to_string())?;
                applied.fetch_add(n, Ordering::Relaxed);
            }
            Err("the consumer's message stream ended".to_string())
        }
        .await;
        if let Err(reason) = result {
            tracing::debug!(%stream, %reason, "Consumer interrupted; retrying.");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MOST);
    }
}

/// Outbox messages forwarded together: their batches, the parent's acknowledgements of
/// those sent, and the outbox sequence of the last message (purged up to once settled).
struct Group {
    batches: Vec<Batch>,
    acks: Vec<async_nats::jetstream::context::PublishAckFuture>,
    last: u64,
}

/// Forwarded messages grouped under the NATS payload limit.
struct Batch {
    msg_id: String,
    payload: Bytes,
    envelopes: usize,
}

/// Packs outbox messages (each a newline-separated list of envelopes) into batches; each
/// batch's id is the node and the outbox sequence numbers it spans, so a batch packed
/// again from the same messages has the same id.
fn pack(messages: &[jetstream::Message], node: &str) -> Result<Vec<Batch>, String> {
    let mut batches = Vec::new();
    let mut payload: Vec<u8> = Vec::new();
    let mut first = 0u64;
    let mut last = 0u64;
    let mut count = 0usize;
    for message in messages {
        let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
        if !payload.is_empty() && payload.len() + message.payload.len() > MAX_BATCH_BYTES {
            batches.push(Batch { msg_id: format!("{node}:{first}-{last}"), payload: Bytes::from(std::mem::take(&mut payload)), envelopes: count });
            count = 0;
        }
        if payload.is_empty() {
            first = seq;
        }
        last = seq;
        payload.extend_from_slice(&message.payload);
        if !payload.ends_with(b"\n") {
            payload.push(b'\n');
        }
        count += message.payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count();
    }
    if !payload.is_empty() {
        batches.push(Batch { msg_id: format!("{node}:{first}-{last}"), payload: Bytes::from(payload), envelopes: count });
    }
    Ok(batches)
}

/// Envelopes as newline-separated JSON.
pub fn encode(envelopes: &[Envelope]) -> Result<Bytes, String> {
    let mut out = Vec::with_capacity(envelopes.len() * 256);
    for e in envelopes {
        serde_json::to_writer(&mut out, e).map_err(|e| e.to_string())?;
        out.push(b'\n');
    }
    Ok(Bytes::from(out))
}

/// The envelopes of a message; an error names the line that is not an envelope.
pub fn decode(payload: &[u8]) -> Result<Vec<Envelope>, String> {
    payload
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, line)| serde_json::from_slice(line).map_err(|e| format!("line {} is not an envelope: {e}", i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_bad_lines_are_named() {
        let e = Envelope::new("alert", "a1@1".into(), "comm-a", &serde_json::json!({"x": 1}));
        let bytes = encode(&[e.clone(), e.clone()]).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!((back[1].kind.as_str(), back[1].id.as_str(), back[1].origin.as_str(), back[1].body.get()), ("alert", "a1@1", "comm-a", r#"{"x":1}"#));
        assert_eq!(back[0].body::<serde_json::Value>().unwrap()["x"], 1);
        let err = decode(b"{\"kind\":\"alert\",\"id\":\"x\",\"origin\":\"o\",\"body\":1}\nnot json\n").unwrap_err();
        assert!(err.starts_with("line 2 "), "{err}");
    }

    #[test]
    fn node_names_that_would_break_subjects_are_refused() {
        assert!(check_node_name("comm-a_1").is_ok());
        for bad in ["", "a.b", "a b", "a>", "a*", "城"] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }
}

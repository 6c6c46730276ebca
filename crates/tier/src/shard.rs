//! Scale-out within a tier: several processes of one node share its events through a
//! JetStream stream partitioned by key, and divide the partitions between them by lease.
//!
//! - `CW_EV_<group>` (`cw.<group>.ev.<p>`): the events every process took in, one subject
//!   per partition. A process publishes what its intake stored; the process that owns a
//!   partition reads that partition's subject in stream order. Kept for `keep` (not
//!   purged on reading), so a partition can be read again from an older checkpoint.
//! - KV bucket `CW_LEASE_<group>`: `member.<id>` for every live process and `part.<p>` for
//!   the owner of each partition. Entries live for one lease; a live process renews them,
//!   so a process that dies frees its partitions within a lease.
//!
//! Which process should own a partition is rendezvous hashing over the live members:
//! every process computes the same answer from the same member list, and a member joining
//! or leaving moves only the partitions it gains or loses. A partition changes hands only
//! through its lease: the old owner saves its state and releases it, or its lease expires;
//! only then can the new owner take it.
//!
//! This module moves bytes and leases; what a partition's messages hold, and the state
//! kept per partition, are the server's.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::{check_node_name, LinkError};

/// How the processes of one node share its events.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardConfig {
    /// The group's name (normally the node's): part of the stream, subjects and bucket.
    pub group: String,
    /// This process's member id, unique in the group and the same across its restarts.
    pub member: String,
    /// URL of the NATS server (JetStream on) every process of the group uses.
    pub nats: String,
    /// Partitions of the event stream: the most processes that can share the work.
    pub partitions: u32,
    /// How long a member's or an owner's entry lives without being renewed.
    pub lease: Duration,
    /// How long the event stream keeps events (a partition's state is never older).
    pub keep: Duration,
    /// The most bytes the event stream keeps (-1: no limit); beyond, new publishes fail.
    pub max_bytes: i64,
}

/// A process's end of its group: the partitioned event stream and the leases.
pub struct Shards {
    config: ShardConfig,
    client: async_nats::Client,
    js: Context,
    leases: kv::Store,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards").field("group", &self.config.group).field("member", &self.config.member).finish()
    }
}

/// The stream of `group`'s events.
pub fn event_stream(group: &str) -> String {
    format!("CW_EV_{group}")
}

/// The subject of `group`'s partition `p`.
pub fn partition_subject(group: &str, p: u32) -> String {
    format!("cw.{group}.ev.{p}")
}

/// The partition of `key` among `partitions`: FNV-1a then MurmurHash3's finaliser (FNV
/// alone leaves similar keys in similar low bits), the same in every process and version,
/// so a key always lands in the same partition.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (fmix64(fnv1a(key.as_bytes())) % u64::from(partitions.max(1))) as u32
}

fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Which member should own each partition: the member with the highest hash of
/// (member, partition). Stable: a member joining takes about 1/n of the partitions, all
/// from others; one leaving hands only its own on.
pub fn assignment(members: &[String], partitions: u32) -> BTreeMap<u32, String> {
    let mut owners = BTreeMap::new();
    for p in 0..partitions {
        let best = members.iter().max_by_key(|m| (fmix64(fnv1a(m.as_bytes()) ^ fmix64(u64::from(p) + 1)), m.as_str()));
        if let Some(m) = best {
            owners.insert(p, m.clone());
        }
    }
    owners
}

impl Shards {
    /// Connects, and makes sure the group's event stream and lease bucket exist.
    pub async fn open(config: ShardConfig) -> Result<Shards, LinkError> {
        let local_err = |reason: String| LinkError::Local { url: config.nats.clone(), node: config.group.clone(), reason };
        check_node_name(&config.group).map_err(|e| local_err(format!("group name {e}")))?;
        check_node_name(&config.member).map_err(|e| local_err(format!("member id {e}")))?;
        if config.partitions == 0 || config.partitions > 1024 {
            return Err(local_err(format!("{} partitions; use 1 to 1024", config.partitions)));
        }
        let client = async_nats::ConnectOptions::new()
            .name(format!("cityward {} {}", config.group, config.member))
            .connection_timeout(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(10) as u64))
            .connect(config.nats.as_str())
            .await
            .map_err(|e| local_err(e.to_string()))?;
        let js = jetstream::new(client.clone());
        let stream = event_stream(&config.group);
        js.get_or_create_stream(jetstream::stream::Config {
            name: stream.clone(),
            description: Some("cityward: events of one node, partitioned by key between its processes".into()),
            subjects: vec![format!("cw.{}.ev.*", config.group)],
            retention: RetentionPolicy::Limits,
            storage: StorageType::File,
            max_age: config.keep,
            max_bytes: config.max_bytes,
            discard: DiscardPolicy::New,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| LinkError::Stream {
            stream: stream.clone(),
            reason: format!("{e}; does the server have JetStream on, with room for the stream's max_bytes in its max_store?"),
        })?;
        // The bucket's stream is made here, as a key-value bucket's would be, rather than by
        // `create_key_value`, which first asks for account details that servers before
        // 2.10 answer in a form the client does not read.
        let bucket = format!("CW_LEASE_{}", config.group);
        js.get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("cityward: live processes of one node and the owner of each partition".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: config.lease,
            storage: StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: DiscardPolicy::New,
            duplicate_window: config.lease.min(Duration::from_secs(120)),
            ..Default::default()
        })
        .await
        .map_err(|e| LinkError::Stream { stream: bucket.clone(), reason: e.to_string() })?;
        let leases = js.get_key_value(&bucket).await.map_err(|e| LinkError::Stream { stream: bucket.clone(), reason: e.to_string() })?;
        Ok(Shards { config, client, js, leases })
    }

    /// The group's configuration.
    pub fn config(&self) -> &ShardConfig {
        &self.config
    }

    /// The partition of `key`.
    pub fn partition_of(&self, key: &str) -> u32 {
        partition_of(key, self.config.partitions)
    }

    /// Publishes one message to partition `p`; the returned future resolves once
    /// JetStream stored it. `msg_id` makes a message published twice (after a lost
    /// acknowledgement) stored once.
    pub async fn publish(&self, p: u32, msg_id: &str, payload: Bytes) -> Result<PublishAckFuture, LinkError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", msg_id);
        self.js
            .publish_with_headers(partition_subject(&self.config.group, p), headers, payload)
            .await
            .map_err(|e| LinkError::Stream { stream: event_stream(&self.config.group), reason: e.to_string() })
    }

    /// Reads partition `p` from stream sequence `from` on, handing each message to
    /// `deliver` until it returns false; reconnects and resumes after the last delivered
    /// message when the server goes away. Returns only when `deliver` says stop.
    pub async fn read_partition<F, Fut>(&self, p: u32, from: u64, mut deliver: F)
    where
        F: FnMut(u64, Bytes) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut next = from.max(1);
        let subject = partition_subject(&self.config.group, p);
        let stream = event_stream(&self.config.group);
        loop {
            let result: Result<bool, String> = async {
                let s = self.js.get_stream(&stream).await.map_err(|e| e.to_string())?;
                let consumer = s
                    .create_consumer(pull::OrderedConfig {
                        filter_subject: subject.clone(),
                        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: next },
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
                while let Some(message) = messages.next().await {
                    let message = message.map_err(|e| e.to_string())?;
                    let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
                    if seq < next {
                        continue;
                    }
                    next = seq + 1;
                    if !deliver(seq, message.payload.clone()).await {
                        return Ok(false);
                    }
                }
                Err("the consumer's message stream ended".into())
            }
            .await;
            match result {
                Ok(_) => return,
                Err(reason) => {
                    tracing::debug!(%subject, %reason, next, "Partition reader interrupted; resuming.");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Says this member is alive (for one lease).
    pub async fn heartbeat(&self) -> Result<(), LinkError> {
        self.leases
            .put(format!("member.{}", self.config.member), Bytes::from_static(b"alive"))
            .await
            .map(|_| ())
            .map_err(|e| self.lease_err(e.to_string()))
    }

    /// Says this member is leaving (its partitions should go to the others now).
    pub async fn leave(&self) {
        let _ = self.leases.delete(format!("member.{}", self.config.member)).await;
    }

    /// The live members, sorted.
    pub async fn members(&self) -> Result<Vec<String>, LinkError> {
        let mut keys = self.leases.keys().await.map_err(|e| self.lease_err(e.to_string()))?;
        let mut members = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| self.lease_err(e.to_string()))?;
            if let Some(m) = key.strip_prefix("member.") {
                members.push(m.to_string());
            }
        }
        members.sort();
        Ok(members)
    }

    /// The partitions this member should own now.
    pub async fn wanted(&self) -> Result<Vec<u32>, LinkError> {
        let mut members = self.members().await?;
        if !members.contains(&self.config.member) {
            members.push(self.config.member.clone());
        }
        tracing::debug!(member = %self.config.member, ?members, "Members of the group.");
        Ok(assignment(&members, self.config.partitions)
            .into_iter()
            .filter(|(_, m)| *m == self.config.member)
            .map(|(p, _)| p)
            .collect())
    }

    /// Takes partition `p`'s lease if nobody holds it; its revision, to renew it with.
    pub async fn acquire(&self, p: u32) -> Result<Option<u64>, LinkError> {
        match self.leases.create(format!("part.{p}"), Bytes::from(self.config.member.clone())).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(self.lease_err(e.to_string())),
        }
    }

    /// Renews partition `p`'s lease; `None` when it is no longer this member's (it
    /// expired and another took it).
    pub async fn renew(&self, p: u32, revision: u64) -> Result<Option<u64>, LinkError> {
        match self.leases.update(format!("part.{p}"), Bytes::from(self.config.member.clone()), revision).await {
            Ok(revision) => Ok(Some(revision)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(self.lease_err(e.to_string())),
        }
    }

    /// Gives partition `p`'s lease up (after its state was saved).
    pub async fn release(&self, p: u32, revision: u64) {
        let _ = self.leases.delete_expect_revision(format!("part.{p}"), Some(revision)).await;
    }

    /// Tells the group's other processes that shared state changed (`what`: `rules`,
    /// `hotlists`), so they read it again. Best effort: a process that misses it reads
    /// the state at its next start.
    pub async fn announce(&self, what: &str) {
        let body = format!("{} {what}", self.config.member);
        if let Err(e) = self.client.publish(format!("cw.{}.changed", self.config.group), body.into()).await {
            tracing::warn!(error = %e, what, "Change not announced to the node's other processes.");
        }
    }

    /// What the group's other processes announce: `what` of each [`Shards::announce`]
    /// by another member, until the connection closes.
    pub async fn changes(&self) -> Result<impl futures_util::Stream<Item = String>, LinkError> {
        let me = format!("{} ", self.config.member);
        let subscriber = self
            .client
            .subscribe(format!("cw.{}.changed", self.config.group))
            .await
            .map_err(|e| LinkError::Local { url: self.config.nats.clone(), node: self.config.group.clone(), reason: e.to_string() })?;
        Ok(subscriber.filter_map(move |m| {
            let text = String::from_utf8_lossy(&m.payload).into_owned();
            let other = (!text.starts_with(&me)).then(|| text.split_once(' ').map(|(_, w)| w.to_string()).unwrap_or_default());
            std::future::ready(other)
        }))
    }

    fn lease_err(&self, reason: String) -> LinkError {
        LinkError::Stream { stream: format!("CW_LEASE_{}", self.config.group), reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("worker-{i}")).collect()
    }

    #[test]
    fn partitions_spread_over_members_and_move_little_when_one_joins() {
        // Short ids that differ in one letter spread too.
        let short = assignment(&["a".to_string(), "b".to_string()], 8);
        assert!(short.values().any(|m| m == "a") && short.values().any(|m| m == "b"), "{short:?}");
        let two = assignment(&names(2), 64);
        let three = assignment(&names(3), 64);
        for m in names(2) {
            let owned = two.values().filter(|o| **o == m).count();
            assert!((16..=48).contains(&owned), "{m} owns {owned} of 64");
        }
        // Only partitions the newcomer takes change hands.
        for (p, owner) in &three {
            if owner != "worker-2" {
                assert_eq!(owner, &two[p], "partition {p} moved between old members");
            }
        }
        assert!(three.values().any(|o| o == "worker-2"));
    }

    #[test]
    fn a_key_always_lands_in_the_same_partition() {
        assert_eq!(partition_of("smoke-17", 16), partition_of("smoke-17", 16));
        // Fixed values: a change of hash would move every key's state.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let spread: std::collections::BTreeSet<u32> = (0..1000).map(|i| partition_of(&format!("src-{i}"), 16)).collect();
        assert_eq!(spread.len(), 16);
    }
}

//! The partitioned event stream and partition leases of one node's processes, against a
//! real nats-server: a partition has one owner at a time, a lease that is not renewed
//! frees the partition for another process, and a partition is read in publishing order
//! from any position, with a message published twice under one id stored once.

use std::time::{Duration, Instant};

use cityward_tier::shard::{ShardConfig, Shards};
use cityward_tier::testkit::{available, NatsServer};

fn config(server: &NatsServer, member: &str) -> ShardConfig {
    ShardConfig {
        group: "ward".into(),
        member: member.into(),
        nats: server.url(),
        partitions: 4,
        lease: Duration::from_millis(800),
        keep: Duration::from_secs(3600),
        max_bytes: 64 << 20,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_has_one_owner_and_passes_on_when_its_lease_runs_out() {
    if !available() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start("ward", dir.path(), None);
    let a = Shards::open(config(&server, "a")).await.unwrap();
    let b = Shards::open(config(&server, "b")).await.unwrap();

    // Members see each other, and split the partitions between them.
    a.heartbeat().await.unwrap();
    b.heartbeat().await.unwrap();
    assert_eq!(a.members().await.unwrap(), vec!["a".to_string(), "b".to_string()]);
    let (wa, wb) = (a.wanted().await.unwrap(), b.wanted().await.unwrap());
    assert_eq!(wa.len() + wb.len(), 4, "{wa:?} {wb:?}");
    assert!(wa.iter().all(|p| !wb.contains(p)), "{wa:?} {wb:?}");

    // One owner at a time; renewing keeps it.
    let first = a.acquire(0).await.unwrap().expect("a takes partition 0");
    assert_eq!(b.acquire(0).await.unwrap(), None, "b cannot take a held partition");
    let second = a.renew(0, first).await.unwrap().expect("a renews its lease");
    assert!(second > first);
    assert_eq!(a.renew(0, first).await.unwrap(), None, "a stale revision does not renew: the lease changed since");

    // Released: another takes it at once.
    let rev = b.acquire(1).await.unwrap().expect("b takes partition 1");
    b.release(1, rev).await;
    assert!(a.acquire(1).await.unwrap().is_some(), "a released partition is free");

    // Not renewed: free after the lease, and a member that stops saying it is alive leaves.
    b.acquire(2).await.unwrap().expect("b takes partition 2");
    let start = Instant::now();
    loop {
        a.heartbeat().await.unwrap();
        if a.acquire(2).await.unwrap().is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "partition 2 never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(start.elapsed() >= Duration::from_millis(500), "freed before its lease ran out: {:?}", start.elapsed());
    assert_eq!(a.members().await.unwrap(), vec!["a".to_string()], "b left once it stopped saying it is alive");
    assert_eq!(a.wanted().await.unwrap(), vec![0, 1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_read_in_order_from_any_position_and_duplicates_are_stored_once() {
    if !available() {
        eprintln!("skipped: nats-server is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start("ward", dir.path(), None);
    let shards = Shards::open(config(&server, "a")).await.unwrap();
    let mut acks = Vec::new();
    for i in 0..100u32 {
        let p = i % 2;
        acks.push(shards.publish(p, &format!("a:{i}:{p}"), format!("m{i}").into()).await.unwrap());
    }
    // Published again after a lost acknowledgement: the same ids.
    for i in 0..10u32 {
        let p = i % 2;
        acks.push(shards.publish(p, &format!("a:{i}:{p}"), format!("m{i}").into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let read = |from: u64, want: usize| {
        let shards = &shards;
        async move {
            let mut got = Vec::new();
            shards
                .read_partition(1, from, |seq, payload| {
                    got.push((seq, String::from_utf8(payload.to_vec()).unwrap()));
                    std::future::ready(got.len() < want)
                })
                .await;
            got
        }
    };
    let all = tokio::time::timeout(Duration::from_secs(10), read(1, 50)).await.expect("partition 1 read");
    let texts: Vec<&str> = all.iter().map(|(_, t)| t.as_str()).collect();
    let expected: Vec<String> = (0..100).filter(|i| i % 2 == 1).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected.iter().map(String::as_str).collect::<Vec<_>>(), "only partition 1, in order, each once");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
    // From the middle: what a process taking the partition over reads.
    let from = all[25].0;
    let rest = tokio::time::timeout(Duration::from_secs(10), read(from, 25)).await.expect("partition 1 read from the middle");
    assert_eq!(rest, all[25..].to_vec());
}

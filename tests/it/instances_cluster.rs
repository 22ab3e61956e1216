//! Two instances on a 3-node JetStream cluster (the partitions' streams at 3 replicas, the
//! `partition()` mapping in every node's configuration), under load: the node leading a
//! partition's stream is killed with SIGKILL, then one instance; the node comes back. Every
//! command is applied exactly once, each tenant's in the order published, every view
//! complete.

use std::time::{Duration, Instant};

use activity_store::ingest::{IngestConfig, partitions};
use async_nats::jetstream;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::faults_cluster::{cluster_with, replicated_stream};
use crate::instances::{
    PARTITIONS, TENANTS, USERS, commands, count, divided, every_command_once_in_tenant_order,
    instance_with, os_pid, publish, wait_until,
};
use crate::support::mapped::holdings;
use crate::support::{TestDb, unique_name};

#[tokio::test]
async fn a_node_and_an_instance_killed_under_load_lose_and_double_nothing() {
    let name = unique_name("icl");
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let (stream, prefix) = (name.to_uppercase(), format!("{name}.commands"));
    let (from, to) = partitions::mapping(&prefix, PARTITIONS).unwrap();
    let mut nodes = cluster_with(&dir, &format!("mappings {{ \"{from}\": \"{to}\" }}"));
    let seeds: Vec<String> = nodes.iter().map(|n| n.url()).collect();
    let urls = seeds.join(",");
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(seeds.as_slice())
        .await
        .unwrap();
    let js = jetstream::new(client);
    // The partitions' streams at 3 replicas, once the cluster has a meta leader.
    let base = IngestConfig {
        stream: stream.clone(),
        subjects: format!("{prefix}.*"),
        replicas: 3,
        ..Default::default()
    };
    let mut replicated = Vec::new();
    for p in 0..PARTITIONS {
        replicated.push(replicated_stream(&js, &base.partition(p, PARTITIONS)).await);
    }
    let streams: Vec<String> = (0..PARTITIONS)
        .map(|p| base.partition(p, PARTITIONS).stream)
        .collect();

    let db = TestDb::migrated().await;
    partitions::set(&db.pool, PARTITIONS).await.unwrap();
    let flags = ["--stream-replicas", "3"];
    let mut a = instance_with(&db, &urls, (&stream, &prefix), &flags);
    let mut b = instance_with(&db, &urls, (&stream, &prefix), &flags);
    let (pa, pb) = (os_pid(&a), os_pid(&b));
    divided(&db, &streams, "two divide", |leads, folds| {
        [leads, folds]
            .iter()
            .all(|m| m.get(&pa) == Some(&2) && m.get(&pb) == Some(&2))
    })
    .await;

    let all = commands();
    let total = all.len() as i64;
    let activities = total - (TENANTS * (USERS + 1)) as i64;
    let publisher = tokio::spawn(publish(urls.clone(), prefix.clone(), all));
    let events = "SELECT count(*) FROM events";
    while count(&db, events).await < total / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The node leading partition 0's stream dies.
    let leader = replicated[0]
        .get_info()
        .await
        .unwrap()
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let node = nodes.iter_mut().find(|n| n.name == leader).unwrap();
    node.kill().await;
    let before = count(&db, events).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&db, events).await < before + 500 {
        assert!(
            Instant::now() < deadline,
            "ingest never resumed after the node died"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Then an instance dies: the other takes every partition and shard.
    kill(Pid::from_raw(pa), Signal::SIGKILL).unwrap();
    a.wait().await.unwrap();
    divided(&db, &streams, "the survivor takes all", |leads, folds| {
        [leads, folds]
            .iter()
            .all(|m| m.get(&pb) == Some(&4) && m.len() == 1)
    })
    .await;
    node.start();

    publisher.await.unwrap();
    every_command_once_in_tenant_order(&db, total).await;
    wait_until(
        &db,
        "every activity folded",
        "SELECT count(*) FROM analytics.activity_feed",
        activities,
    )
    .await;
    let (leads, _) = holdings(&db.pool, &streams).await;
    assert_eq!(leads.get(&pb), Some(&4));
    b.kill().await.unwrap();
    for n in &mut nodes {
        if n.child.is_some() {
            n.kill().await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

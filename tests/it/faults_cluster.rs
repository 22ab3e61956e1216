//! A 3-node JetStream cluster on loopback, the stream at 3 replicas: the node that leads the
//! stream is killed with SIGKILL under load and started again. Every command is applied
//! exactly once, in stream order; the time from the kill to the next committed batch is
//! printed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use activity_store::embedded::free_port;
use activity_store::ingest::{IngestConfig, Ingestor};
use activity_store::log::EventLog;
use async_nats::jetstream::{self, stream};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::recovery::{assert_exactly_once_in_order, publish_all, wait_for_ledger, workload};
use crate::support::{TestDb, unique_name};

pub(crate) struct Node {
    pub(crate) name: String,
    config: PathBuf,
    client_port: u16,
    pub(crate) child: Option<Child>,
}

fn nats_bin() -> &'static str {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nats-server")
}

impl Node {
    pub(crate) fn start(&mut self) {
        let child = Command::new(nats_bin())
            .arg("-c")
            .arg(&self.config)
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start a cluster node");
        self.child = Some(child);
    }

    pub(crate) async fn kill(&mut self) {
        let mut child = self.child.take().expect("a running node");
        kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
        child.wait().await.unwrap();
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }
}

fn cluster(dir: &Path) -> Vec<Node> {
    cluster_with(dir, "")
}

/// `cluster`, with `extra` lines in every node's configuration (a subject mapping).
pub(crate) fn cluster_with(dir: &Path, extra: &str) -> Vec<Node> {
    let ports: Vec<(u16, u16)> = (0..3)
        .map(|_| (free_port().unwrap(), free_port().unwrap()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, c)| format!("\"nats-route://127.0.0.1:{c}\""))
        .collect();
    (0..3)
        .map(|i| {
            let name = format!("n{i}");
            let (client_port, cluster_port) = ports[i];
            let config = dir.join(format!("{name}.conf"));
            let text = format!(
                "server_name: {name}\nlisten: \"127.0.0.1:{client_port}\"\n\
                 jetstream {{ store_dir: \"{store}\" }}\n\
                 cluster {{ name: c, listen: \"127.0.0.1:{cluster_port}\", routes: [{routes}] }}\n\
                 {extra}\n",
                store = dir.join(&name).display(),
                routes = routes.join(", ")
            );
            std::fs::write(&config, text).unwrap();
            let mut node = Node {
                name,
                config,
                client_port,
                child: None,
            };
            node.start();
            node
        })
        .collect()
}

/// Creates the stream at 3 replicas once the cluster has elected its meta leader.
pub(crate) async fn replicated_stream(
    js: &jetstream::Context,
    config: &IngestConfig,
) -> stream::Stream {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let created = js
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec![config.subjects.clone()],
                storage: stream::StorageType::File,
                num_replicas: 3,
                ..Default::default()
            })
            .await;
        match created {
            Ok(s) => return s,
            Err(e) => assert!(Instant::now() < deadline, "no JetStream cluster: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn last_committed(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(last_seq), 0) FROM ingest_checkpoints")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_stream_leaders_node_killed_under_load_loses_and_duplicates_nothing() {
    let dir = std::env::temp_dir().join(unique_name("cluster"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nodes = cluster(&dir);
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(urls.clone())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let prefix = unique_name("cl");
    let config = IngestConfig {
        stream: prefix.to_uppercase(),
        subjects: format!("{prefix}.commands.*"),
        replicas: 3,
        batch_wait: Duration::from_millis(100),
        batch_max: 500,
        ..Default::default()
    };
    let stream = replicated_stream(&js, &config).await;
    let db = TestDb::migrated().await;
    let log = Arc::new(EventLog::open(db.pool.clone()).await.unwrap());
    let ingestor = Ingestor::start(&js, log, config.clone()).await.unwrap();
    let stop = CancellationToken::new();
    let ingest = tokio::spawn(ingestor.run(stop.clone()));

    let commands = workload(6_000);
    let total = commands.len() as i64;
    let publisher = tokio::spawn(publish_all(
        client.clone(),
        format!("{prefix}.commands.acme"),
        commands,
    ));
    // Under load: kill the node that leads the stream once a third has been committed.
    while last_committed(&db).await < total / 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = stream
        .get_info()
        .await
        .unwrap()
        .cluster
        .and_then(|c| c.leader)
        .expect("the stream has a leader");
    let node = nodes.iter_mut().find(|n| n.name == leader).unwrap();
    let before = last_committed(&db).await;
    let killed = Instant::now();
    node.kill().await;
    // The time from the kill to the next committed batch. The batches in hand at the kill
    // (the one committing and the one pulled beside it, at most batch_max messages each)
    // may commit without NATS; past them, every message had to be delivered by the stream's
    // new leader. So this is an upper bound.
    let in_hand = 2 * config.batch_max as i64;
    let recovered = loop {
        if last_committed(&db).await > before + in_hand {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "nothing delivered after the leader died was committed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!(
        "stream leader {leader} killed: a batch delivered after it committed within {recovered:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.start();
    publisher.await.unwrap();
    wait_for_ledger(&db.pool, total, Duration::from_secs(120)).await;
    assert_exactly_once_in_order(&db.pool, total as usize, 0).await;
    stop.cancel();
    ingest.await.unwrap().expect("the ingestor kept running");
    for n in &mut nodes {
        if n.child.is_some() {
            n.kill().await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

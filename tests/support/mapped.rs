//! A private nats-server whose configuration routes commands to ingest partitions with the
//! `partition()` mapping, as `up` writes for its embedded server and a production server
//! needs (docs/production.md).

use std::path::Path;

use activity_store::embedded::free_port;
use activity_store::ingest::partitions;
use tokio::process::{Child, Command};

/// Starts nats-server with JetStream under `dir`, mapping `<prefix>.*` to `n` partitions;
/// returns it (killed on drop) and its URL.
pub fn mapped_nats(dir: &Path, prefix: &str, n: u32) -> (Child, String) {
    let port = free_port().unwrap();
    let (from, to) = partitions::mapping(prefix, n).expect("several partitions");
    let config = dir.join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: \"127.0.0.1:{port}\"\njetstream {{ store_dir: \"{}\" }}\n\
             mappings {{ \"{from}\": \"{to}\" }}\n",
            dir.join("js").display()
        ),
    )
    .unwrap();
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nats-server");
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nats-server");
    (child, format!("nats://127.0.0.1:{port}"))
}

/// Who holds the ingest leads of `streams` and the shards' fold leases, counted by the OS
/// process id their sessions name: (leads, folds).
pub async fn holdings(
    pool: &sqlx::PgPool,
    streams: &[String],
) -> (
    std::collections::BTreeMap<i32, usize>,
    std::collections::BTreeMap<i32, usize>,
) {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT CASE l.classid WHEN x'464f4c44'::int::oid THEN 'fold' ELSE 'lead' END, \
                a.application_name \
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
           AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND (l.classid = x'464f4c44'::int::oid OR (l.classid = x'41435449'::int::oid \
                AND l.objid::bigint IN (SELECT hashtext(s)::bigint & 4294967295 \
                                        FROM unnest($1::text[]) s)))",
    )
    .bind(streams)
    .fetch_all(pool)
    .await
    .unwrap();
    let (mut leads, mut folds) = (Default::default(), Default::default());
    for (kind, app) in rows {
        let pid: i32 = app.rsplit(':').next().unwrap().parse().unwrap();
        let map: &mut std::collections::BTreeMap<i32, usize> = if kind == "fold" {
            &mut folds
        } else {
            &mut leads
        };
        *map.entry(pid).or_insert(0) += 1;
    }
    (leads, folds)
}

/// A client of the server at `url`, once it accepts clients (it may be starting).
pub async fn connect(url: &str) -> async_nats::Client {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match async_nats::connect(url).await {
            Ok(c) => return c,
            Err(e) => assert!(std::time::Instant::now() < deadline, "{url}: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

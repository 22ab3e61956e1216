//! Cached reads obey the same tenant rules as SQL reads: a login bound to one tenant never
//! gets another's user from the cache, cold or warm; and a NATS user granted one tenant's
//! keys (the subject permissions the README gives) reads no other tenant's.

use std::time::Duration;

use activity_store::cache::ensure_bucket;
use activity_store::project::{CacheConfig, ProjectConfig, Projector};
use activity_store::query::user_through_cache;
use async_nats::jetstream;

use crate::fixtures::login_in;
use crate::project_support::{ReadSide, activity, register, tenant};
use crate::support::{nats_url, unique_name};

async fn two_tenants_cached() -> (ReadSide, Projector) {
    let r = ReadSide::new().await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let config = CacheConfig {
        ttls: Default::default(),
        bucket_prefix: unique_name("ci"),
    };
    let mut projector = Projector::start(r.db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    projector.attach_caches(&js, &config).await.unwrap();
    for t in ["acme", "globex"] {
        r.apply(&[tenant(t), register(t, "ann", "Ann")]).await;
    }
    (r, projector)
}

async fn acme_reader(r: &ReadSide) -> sqlx::PgPool {
    let (login, pool) = login_in(&r.db, "activity_reader").await;
    sqlx::query("INSERT INTO reader_tenants (login, tenant) VALUES ($1, 'acme')")
        .bind(&login)
        .execute(&r.db.pool)
        .await
        .unwrap();
    pool
}

#[tokio::test]
async fn a_login_bound_to_one_tenant_never_reads_another_through_the_cache() {
    let (r, projector) = two_tenants_cached().await;
    let entries = projector.cache("user_summary").unwrap();
    let acme = acme_reader(&r).await;
    // Cold: folded without write-through, so no entry exists yet.
    r.catch_up().await;
    let cold = user_through_cache(&acme, entries, "globex", "ann")
        .await
        .unwrap();
    assert_eq!((cold.row, cold.from_cache), (None, false));
    assert!(
        entries.get("globex", "ann").await.unwrap().is_none(),
        "a refused read fills nothing"
    );
    // Warm: the projector writes globex's entry through; the acme login still gets nothing.
    r.apply(&[activity("globex", "ann", "login", "2026-11-03 08:00:00")])
        .await;
    projector.catch_up().await.unwrap();
    assert!(entries.get("globex", "ann").await.unwrap().is_some());
    let warm = user_through_cache(&acme, entries, "globex", "ann")
        .await
        .unwrap();
    assert_eq!((warm.row, warm.from_cache), (None, false));
    // Its own tenant: a miss, then a hit.
    user_through_cache(&acme, entries, "acme", "ann")
        .await
        .unwrap();
    let own = user_through_cache(&acme, entries, "acme", "ann")
        .await
        .unwrap();
    assert!(own.from_cache && own.row.is_some_and(|row| row.tenant == "acme"));
}

/// A nats-server with two users in one JetStream account: `admin`, and `acme`, who may read
/// only acme's cache keys, with the permissions the README documents.
async fn server_with_tenant_user(
    dir: &std::path::Path,
    bucket: &str,
) -> (tokio::process::Child, u16) {
    let port = activity_store::embedded::free_port().unwrap();
    let config = format!(
        r#"listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
accounts {{
  STORE {{
    jetstream: enabled
    users: [
      {{ user: admin, password: admin }}
      {{ user: acme, password: acme, permissions: {{
          publish: {{ allow: ["$JS.API.STREAM.INFO.KV_{bucket}",
                             "$JS.API.DIRECT.GET.KV_{bucket}.$KV.{bucket}.user_summary.*.acme.>"] }}
          subscribe: {{ allow: ["_INBOX.>"] }} }} }}
    ]
  }}
}}
"#,
        store = dir.join("js").display()
    );
    let path = dir.join("nats.conf");
    std::fs::write(&path, config).unwrap();
    let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nats-server");
    let child = tokio::process::Command::new(bin)
        .arg("-c")
        .arg(&path)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (child, port)
}

#[tokio::test]
async fn a_nats_user_granted_one_tenants_keys_reads_no_other_tenants() {
    let dir = std::env::temp_dir().join(unique_name("natsauth"));
    std::fs::create_dir_all(&dir).unwrap();
    let bucket = "activity_user_summary";
    let (_server, port) = server_with_tenant_user(&dir, bucket).await;
    let url = format!("nats://127.0.0.1:{port}");
    let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into())
        .connect(&url)
        .await
        .unwrap();
    let kv = ensure_bucket(&jetstream::new(admin), bucket, Duration::from_secs(60))
        .await
        .unwrap();
    for t in ["acme", "globex"] {
        kv.put(
            format!(
                "user_summary.v1.{t}.{}",
                activity_store::cache::user_key("ann")
            ),
            format!("{t} secret").into(),
        )
        .await
        .unwrap();
    }
    let acme = async_nats::ConnectOptions::with_user_and_password("acme".into(), "acme".into())
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(&url)
        .await
        .unwrap();
    let theirs = jetstream::new(acme).get_key_value(bucket).await.unwrap();
    let own = theirs
        .get(format!(
            "user_summary.v1.acme.{}",
            activity_store::cache::user_key("ann")
        ))
        .await
        .unwrap();
    assert_eq!(own.as_deref(), Some(&b"acme secret"[..]));
    let other = theirs
        .get(format!(
            "user_summary.v1.globex.{}",
            activity_store::cache::user_key("ann")
        ))
        .await;
    assert!(
        !matches!(other, Ok(Some(_))),
        "globex's key must not be readable: {other:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

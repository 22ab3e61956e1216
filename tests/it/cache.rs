//! Cache entries of user summaries in NATS KV, against real NATS and PostgreSQL: read-through
//! misses then hits, write-through after every kind of change, erasure, versioned keys, the
//! bucket's TTL, stale fills refused, rebuilds, and the hit rate of a realistic read mix.

use std::time::{Duration, Instant};

use activity_store::cache::{CacheEntries, Cached};
use activity_store::project::{CacheConfig, ProjectConfig, Projector, projections};
use activity_store::query::{self, UserRow, user_through_cache};
use async_nats::jetstream;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::project_support::{ReadSide, activity, change_email, forget, register, tenant};
use crate::support::{nats_url, unique_name};

struct CacheSide {
    r: ReadSide,
    /// Folds with write-through; `r.projector` folds without it (as before a cache existed).
    projector: Projector,
    js: jetstream::Context,
    bucket: String,
}

async fn cached(ttl: Duration) -> CacheSide {
    let r = ReadSide::new().await;
    let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let prefix = unique_name("c");
    let config = CacheConfig {
        ttls: [("user_summary".to_owned(), ttl)].into(),
        bucket_prefix: prefix.clone(),
    };
    let mut projector = Projector::start(r.db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    projector.attach_caches(&js, &config).await.unwrap();
    CacheSide {
        r,
        projector,
        js,
        bucket: format!("{prefix}activity_user_summary"),
    }
}

impl CacheSide {
    fn entries(&self) -> &CacheEntries {
        self.projector.cache("user_summary").unwrap()
    }

    async fn read(&self, user: &str) -> (Option<UserRow>, bool) {
        let read = user_through_cache(&self.r.db.pool, self.entries(), "acme", user)
            .await
            .unwrap();
        (read.row, read.from_cache)
    }

    async fn fold_through(&self) {
        self.projector.catch_up().await.unwrap();
    }
}

async fn with_ann(ttl: Duration) -> CacheSide {
    let c = cached(ttl).await;
    c.r.apply(&[tenant("acme"), register("acme", "ann", "Ann")])
        .await;
    c.r.apply(&[activity("acme", "ann", "login", "2026-11-03 08:00:00")])
        .await;
    // Folded before the cache saw anything: the entry is absent.
    c.r.catch_up().await;
    c
}

#[tokio::test]
async fn the_first_read_misses_and_fills_the_second_hits_without_the_table() {
    let c = with_ann(Duration::from_secs(60)).await;
    let (first, from_cache) = c.read("ann").await;
    assert!(!from_cache, "an absent entry is a miss");
    let first = first.unwrap();
    assert_eq!((first.events, first.email.as_str()), (1, "ann@example.com"));
    let (second, from_cache) = c.read("ann").await;
    assert!(from_cache, "the fill makes the next read a hit");
    assert_eq!(second.unwrap(), first);
    // The entry is the row as JSON, with the position it reflects.
    let entry = c.entries().get("acme", "ann").await.unwrap().unwrap();
    assert_eq!(entry["position"].as_i64(), Some(first.position));
}

#[tokio::test]
async fn email_changes_and_new_activities_are_on_the_next_read() {
    let c = with_ann(Duration::from_secs(60)).await;
    c.read("ann").await;
    c.r.apply(&[change_email("acme", "ann", "ann@new.example")])
        .await;
    c.fold_through().await;
    let (row, from_cache) = c.read("ann").await;
    assert!(from_cache);
    assert_eq!(row.unwrap().email, "ann@new.example");
    c.r.apply(&[activity("acme", "ann", "view", "2026-11-04 08:00:00")])
        .await;
    c.fold_through().await;
    let (row, from_cache) = c.read("ann").await;
    let row = row.unwrap();
    assert!(from_cache);
    assert_eq!(
        (row.events, row.last_activity_type.as_deref()),
        (2, Some("view"))
    );
}

#[tokio::test]
async fn forget_user_removes_the_entry_and_its_personal_data() {
    let c = with_ann(Duration::from_secs(60)).await;
    c.read("ann").await;
    c.r.apply(&[forget("acme", "ann")]).await;
    c.fold_through().await;
    assert_eq!(c.read("ann").await, (None, false));
    let held = c.entries().peek("acme", "ann").await.unwrap();
    assert!(
        matches!(held, Some(Cached::Tombstone { .. })),
        "only a tombstone is left: {held:?}"
    );
}

#[tokio::test]
async fn keys_carry_the_projection_version_so_a_bump_misses() {
    let c = with_ann(Duration::from_secs(60)).await;
    c.read("ann").await;
    let mut bumped = projections()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "user_summary")
        .unwrap();
    let key = c.entries().key("acme", "ann");
    assert!(
        key.starts_with(&format!("user_summary.v{}.acme.", bumped.version)),
        "{key}"
    );
    bumped.version += 1;
    let mac = activity_store::cache::CacheMac::load(&c.r.db.pool)
        .await
        .unwrap();
    let v2 = CacheEntries::open(
        &c.js,
        (&bumped.name, bumped.version),
        &c.bucket,
        Duration::from_secs(60),
        mac,
    )
    .await
    .unwrap();
    assert_eq!(v2.get("acme", "ann").await.unwrap(), None);
    assert!(c.entries().get("acme", "ann").await.unwrap().is_some());
}

#[tokio::test]
async fn any_user_id_makes_a_valid_key() {
    let c = cached(Duration::from_secs(60)).await;
    let odd = "Ann.O'Neil/ü@x y=*>";
    let registration = serde_json::json!({"type": "register_user", "tenant": "acme",
        "user": odd, "email": "ann@example.com"});
    c.r.apply(&[tenant("acme"), registration]).await;
    c.fold_through().await;
    let (row, from_cache) = c.read(odd).await;
    assert!(from_cache, "written through under an escaped key");
    assert_eq!(row.unwrap().user_id, odd);
}

#[tokio::test]
async fn the_bucket_ttl_is_the_configured_one_and_entries_expire_after_it() {
    let c = with_ann(Duration::from_secs(1)).await;
    let info =
        c.js.get_stream(format!("KV_{}", c.bucket))
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .clone();
    assert_eq!(info.config.max_age, Duration::from_secs(1));
    c.read("ann").await;
    assert!(c.entries().get("acme", "ann").await.unwrap().is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.entries().get("acme", "ann").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the entry never expired");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!c.read("ann").await.1, "an expired entry is a miss");
}

#[tokio::test]
async fn a_fill_from_an_older_read_never_overwrites_a_newer_entry() {
    let c = with_ann(Duration::from_secs(60)).await;
    // A reader read the table, then stalled...
    let (old, as_of, epoch) = query::user_at(&c.r.db.pool, "acme", "ann")
        .await
        .unwrap()
        .unwrap();
    // ...while the projector folded a change and wrote it through.
    c.r.apply(&[change_email("acme", "ann", "ann@new.example")])
        .await;
    c.fold_through().await;
    let stale = Cached::Row {
        row: serde_json::to_value(&old).unwrap(),
        as_of,
        epoch,
    };
    assert!(!c.entries().write("acme", "ann", &stale).await.unwrap());
    assert_eq!(c.read("ann").await.0.unwrap().email, "ann@new.example");
}

#[tokio::test]
async fn a_fill_read_before_an_erasure_never_brings_the_user_back() {
    let c = with_ann(Duration::from_secs(60)).await;
    // A reader (the HTTP API, `query user`) read the row, then stalled...
    let (old, as_of, epoch) = query::user_at(&c.r.db.pool, "acme", "ann")
        .await
        .unwrap()
        .unwrap();
    // ...while the user was forgotten, folded, and the entry purged as `forget` does it.
    c.r.apply(&[forget("acme", "ann")]).await;
    c.fold_through().await;
    let tombstone = Cached::Tombstone {
        as_of: checkpoint(&c).await,
        epoch,
    };
    c.entries()
        .purge("acme", "ann", Some(&tombstone))
        .await
        .unwrap();
    let stale = Cached::Row {
        row: serde_json::to_value(&old).unwrap(),
        as_of,
        epoch,
    };
    assert!(!c.entries().write("acme", "ann", &stale).await.unwrap());
    assert_eq!(c.entries().get("acme", "ann").await.unwrap(), None);
}

/// acme's position in user_summary.
async fn checkpoint(c: &CacheSide) -> i64 {
    sqlx::query_scalar("SELECT tenant_projection_position('user_summary', 'acme')")
        .fetch_one(&c.r.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tombstone_of_a_fold_not_yet_committed_keeps_every_fill_out() {
    let c = with_ann(Duration::from_secs(60)).await;
    let row = c.read("ann").await.0.unwrap();
    // A fold in progress has tombstoned the key as of a position not yet committed.
    let pending = Cached::Tombstone {
        as_of: checkpoint(&c).await + 5,
        epoch: 0,
    };
    c.entries().write("acme", "ann", &pending).await.unwrap();
    for _ in 0..2 {
        let (again, from_cache) = c.read("ann").await;
        assert!(!from_cache, "a tombstone is never an answer");
        assert_eq!(again.unwrap(), row, "the table answers");
        assert_eq!(
            c.entries().peek("acme", "ann").await.unwrap(),
            Some(pending.clone())
        );
    }
}

#[tokio::test]
async fn a_tombstone_left_by_a_crash_after_commit_is_replaced_by_the_next_fill() {
    let c = with_ann(Duration::from_secs(60)).await;
    // The projector committed up to the checkpoint and died before writing the row.
    let left = Cached::Tombstone {
        as_of: checkpoint(&c).await,
        epoch: 0,
    };
    c.entries().write("acme", "ann", &left).await.unwrap();
    let (row, from_cache) = c.read("ann").await;
    assert!(!from_cache && row.is_some(), "a miss the table answers");
    let (again, from_cache) = c.read("ann").await;
    assert!(from_cache, "the fill replaced the tombstone");
    assert_eq!(again, row);
}

#[tokio::test]
async fn a_rebuild_clears_the_bucket_and_refills_every_entry_from_its_row() {
    let c = cached(Duration::from_secs(60)).await;
    c.r.apply(&[tenant("acme")]).await;
    let users: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let regs: Vec<_> = users.iter().map(|u| register("acme", u, "U")).collect();
    c.r.apply(&regs).await;
    let acts: Vec<_> = users
        .iter()
        .map(|u| activity("acme", u, "login", "2026-11-03 08:00:00"))
        .collect();
    c.r.apply(&acts).await;
    c.fold_through().await;
    // A stray entry that no row backs: a rebuild must not keep it.
    let stray = c.entries().key("acme", "ghost");
    let ghost = Cached::Row {
        row: serde_json::json!({"position": 1}),
        as_of: 1,
        epoch: 0,
    };
    c.entries().write("acme", "ghost", &ghost).await.unwrap();
    c.projector
        .rebuild("user_summary", |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        c.entries().get("acme", "ghost").await.unwrap(),
        None,
        "{stray}"
    );
    for u in &users {
        let table = query::user(&c.r.db.pool, "acme", u).await.unwrap().unwrap();
        let entry = c.entries().get("acme", u).await.unwrap().unwrap();
        assert_eq!(serde_json::from_value::<UserRow>(entry).unwrap(), table);
    }
}

#[tokio::test]
async fn a_realistic_read_mix_hits_more_than_nine_times_in_ten() {
    let c = cached(Duration::from_secs(300)).await;
    c.r.apply(&[tenant("acme")]).await;
    let users: Vec<String> = (0..1_000).map(|i| format!("user-{i}")).collect();
    for chunk in users.chunks(250) {
        let regs: Vec<_> = chunk.iter().map(|u| register("acme", u, "U")).collect();
        c.r.apply(&regs).await;
    }
    // Folded without the cache: it starts cold, as after a restart or an expiry.
    c.r.catch_up().await;
    let mut rng = StdRng::seed_from_u64(7);
    let (mut hits, mut reads) = (0, 0);
    for round in 0..100 {
        // Between reads, some users act and the projector writes their entries through.
        let acts: Vec<_> = (0..5)
            .map(|_| {
                let u = &users[rng.random_range(0..users.len())];
                activity("acme", u, "login", "2026-11-03 08:00:00")
            })
            .collect();
        c.r.apply(&acts).await;
        if round % 10 == 0 {
            c.fold_through().await;
        }
        for _ in 0..100 {
            // Skewed like real traffic: a fifth of the users get four fifths of the reads.
            let hot = rng.random_bool(0.8);
            let i = if hot {
                rng.random_range(0..200)
            } else {
                rng.random_range(200..1_000)
            };
            let (row, from_cache) = c.read(&users[i]).await;
            assert!(row.is_some());
            hits += from_cache as u32;
            reads += 1;
        }
    }
    let rate = hits as f64 / reads as f64;
    eprintln!(
        "cache hit rate over {reads} reads of 1,000 users: {:.1}%",
        rate * 100.0
    );
    assert!(rate > 0.9, "hit rate {rate}");
}

#[tokio::test]
async fn a_cached_projection_is_never_refolded_without_its_cache() {
    let c = with_ann(Duration::from_secs(60)).await;
    c.read("ann").await;
    // Without NATS, a rebuild would leave entries of the old fold: refused.
    let e = c.r.projector.rebuild("user_summary", |_, _| {}).await;
    assert!(e.unwrap_err().to_string().contains("is cached"));
    // A new version installed at start clears the bucket once the cache is attached.
    // An older version recorded (0, below any real one).
    sqlx::query(
        "ALTER TABLE projection_checkpoints DROP CONSTRAINT projection_checkpoints_version_positive",
    )
    .execute(&c.r.db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE projection_checkpoints SET version = 0")
        .execute(&c.r.db.pool)
        .await
        .unwrap();
    let mut restarted = Projector::start(c.r.db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap();
    let prefix = c
        .bucket
        .trim_end_matches("activity_user_summary")
        .to_owned();
    let config = CacheConfig {
        bucket_prefix: prefix,
        ..Default::default()
    };
    // An entry no rebuilt row backs: the rebuild must clear it.
    let ghost = Cached::Row {
        row: serde_json::json!({"tenant": "acme", "user_id": "ghost"}),
        as_of: 1,
        epoch: 0,
    };
    c.entries().write("acme", "ghost", &ghost).await.unwrap();
    restarted.attach_caches(&c.js, &config).await.unwrap();
    // The rebuild runs in the background under the lease; catch_up does it here.
    restarted.catch_up().await.unwrap();
    assert_eq!(c.entries().peek("acme", "ghost").await.unwrap(), None);
    assert!(
        matches!(
            c.entries().peek("acme", "ann").await.unwrap(),
            Some(Cached::Row { .. })
        ),
        "refilled from the rebuilt row"
    );
}

#[tokio::test]
async fn a_fill_that_read_the_tables_before_a_rebuild_is_never_served_after_it() {
    let c = with_ann(Duration::from_secs(60)).await;
    c.r.apply(&[activity("acme", "ann", "login", "2026-11-03 08:00:00")])
        .await;
    c.fold_through().await;
    // The live row is wrong (a bug, a bad migration): a rebuild is what mends it.
    sqlx::query("UPDATE analytics.user_summary SET events = 999")
        .execute(&c.r.db.pool)
        .await
        .unwrap();
    // A reader misses and reads the wrong row and its checkpoint... then is slow.
    let (stale, as_of, epoch) = query::user_at(&c.r.db.pool, "acme", "ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stale.events, 999);
    // The rebuild's steps: the shadow folded and swapped in, the bucket purged...
    let summary = activity_store::project::projections()
        .unwrap()
        .into_iter()
        .find(|p| p.name == "user_summary")
        .unwrap();
    let shadow = activity_store::project::shadow::prepare(&c.r.db.pool, &summary, 100, |_, _| {})
        .await
        .unwrap();
    activity_store::project::shadow::swap_in(&c.r.db.pool, &summary, shadow)
        .await
        .unwrap();
    c.entries().clear().await.unwrap();
    // ...and the slow reader fills before the refill reaches its key, as of the same log
    // position the refill will write.
    let row = serde_json::to_value(&stale).unwrap();
    c.entries()
        .write("acme", "ann", &Cached::Row { row, as_of, epoch })
        .await
        .unwrap();
    let rebuilt = query::user(&c.r.db.pool, "acme", "ann")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(rebuilt.events, 999);
    let (row, _) = c.read("ann").await;
    assert_eq!(
        row.unwrap(),
        rebuilt,
        "the rebuilt row, never the stale fill"
    );
    let (row, from_cache) = c.read("ann").await;
    assert_eq!((row.unwrap(), from_cache), (rebuilt, true));
}

//! The log in shards on one server: a tenant lives on the shard its slug hashes to (FNV-1a,
//! as NATS's partition() routes it), recorded with its first event; each shard numbers its
//! own positions, appends under its own lock and is folded against its own checkpoint, so
//! shards append and fold in parallel while each keeps "no skipped events".

use activity_store::db::locks;
use activity_store::log::shards::{self, partition};
use activity_store::log::{EventLog, append_in, migrate, partitions};
use activity_store::project::{shard_base, shard_of};
use sqlx::{Connection, PgConnection};

use crate::fixtures::{jan, login, login_in, sqlstate};
use crate::project_support::{self as ps, ReadSide};
use crate::support::TestDb;

/// The first slug `t0`, `t1`, … of each of `n` shards, by shard.
fn one_tenant_per_shard(n: u32) -> Vec<String> {
    (0..n)
        .map(|s| {
            (0..)
                .map(|i| format!("t{i}"))
                .find(|t| partition(t, n) == s)
                .expect("some slug hashes to every shard")
        })
        .collect()
}

#[tokio::test]
async fn a_tenant_lives_on_its_hashed_shard_and_each_shard_numbers_its_own_positions() {
    let db = TestDb::with_shards(4).await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let tenants = one_tenant_per_shard(4);
    let mut batch = Vec::new();
    for i in 0..30 {
        for t in &tenants {
            batch.push(login(t, &format!("u{i}")));
        }
    }
    log.append_batch(&batch).await.unwrap();
    log.append_batch(&[login(&tenants[2], "again")])
        .await
        .unwrap();
    for (shard, t) in tenants.iter().enumerate() {
        let recorded: i32 = sqlx::query_scalar("SELECT shard FROM tenant_heads WHERE tenant = $1")
            .bind(t)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(recorded, shard as i32, "{t}'s shard is recorded");
        let positions: Vec<i64> =
            sqlx::query_scalar("SELECT position FROM events WHERE tenant = $1 ORDER BY position")
                .bind(t)
                .fetch_all(&db.pool)
                .await
                .unwrap();
        let within: Vec<i64> = positions
            .iter()
            .map(|p| p - shard_base(shard as i32))
            .collect();
        let n = if shard == 2 { 31 } else { 30 };
        assert_eq!(within, (1..=n).collect::<Vec<i64>>(), "{t}: shard {shard}");
        assert!(positions.iter().all(|p| shard_of(*p) == shard as i32));
    }
}

#[tokio::test]
async fn the_database_hashes_a_slug_as_nats_does() {
    let db = TestDb::migrated().await;
    let slugs = [
        "",
        "a",
        "acme",
        "foobar",
        "tenant-42",
        "x_y",
        "été",
        "\u{1F600}",
        "zzzzzzzzzzzz",
    ];
    for slug in slugs {
        let hash: i64 = sqlx::query_scalar("SELECT fnv1a32($1)")
            .bind(slug)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(hash, i64::from(shards::fnv1a32(slug)), "{slug}");
        for n in [1_u32, 2, 3, 4, 7] {
            let shard: i32 = sqlx::query_scalar("SELECT (fnv1a32($1) % $2)::int4")
                .bind(slug)
                .bind(n as i64)
                .fetch_one(&db.pool)
                .await
                .unwrap();
            assert_eq!(shard as u32, partition(slug, n), "{slug} among {n}");
        }
    }
}

#[tokio::test]
async fn shards_append_at_once_and_a_fold_never_passes_an_open_append_of_its_shard() {
    let r = ReadSide::on(TestDb::with_shards(2).await).await;
    let [a, b] = <[String; 2]>::try_from(one_tenant_per_shard(2)).unwrap();
    r.apply(&[ps::tenant(&a), ps::tenant(&b)]).await;
    r.catch_up().await;
    r.log
        .ensure_months(&[partitions::Month::of(jan(1))])
        .await
        .unwrap();
    // An append to a's shard, left open.
    let mut open = r.db.pool.begin().await.unwrap();
    append_in(&mut open, &[login(&a, "u1")]).await.unwrap();
    // b's shard appends and commits meanwhile; a's shard waits for the open one.
    let mut other = r.db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *other)
        .await
        .unwrap();
    append_in(&mut other, &[login(&b, "u1")]).await.unwrap();
    other.commit().await.unwrap();
    let mut same = r.db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '300ms'")
        .execute(&mut *same)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(locks::append_shard(0))
        .execute(&mut *same)
        .await
        .unwrap_err();
    drop(same);
    // The fold takes b's event and stops short of a's shard's open append.
    r.catch_up().await;
    let folded = ps::checkpoints(&r.db.pool, "activity_feed").await;
    let visible = ps::visible(&r.db.pool).await;
    assert_eq!(folded, visible, "every shard folded up to what is visible");
    assert_eq!(folded.get(1) - shard_base(1), 2, "b's shard took its event");
    assert_eq!(folded.get(0), 1, "a's shard waits for its open append");
    open.commit().await.unwrap();
    r.catch_up().await;
    assert_eq!(
        ps::checkpoints(&r.db.pool, "activity_feed").await.get(0),
        2,
        "then folds it"
    );
    // Replay equals live, shard by shard.
    let live = r.snapshot().await;
    r.replay().await;
    assert_eq!(r.snapshot().await, live);
}

#[tokio::test]
async fn a_store_gains_shards_its_tenants_stay_and_a_shard_with_a_tenant_is_kept() {
    let db = TestDb::with_shards(2).await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let first = one_tenant_per_shard(2);
    let moved_if_rehashed = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| partition(t, 2) == 1 && partition(t, 4) != 1)
        .unwrap();
    let placed = [
        first[0].clone(),
        first[1].clone(),
        moved_if_rehashed.clone(),
    ];
    let batch: Vec<_> = placed.iter().map(|t| login(t, "u")).collect();
    log.append_batch(&batch).await.unwrap();
    shards::set(&db.pool, 4).await.unwrap();
    assert_eq!(shards::count(&db.pool).await.unwrap(), 4);
    let newcomer = (0..)
        .map(|i| format!("t{i}"))
        .find(|t| partition(t, 4) == 3 && !placed.contains(t))
        .unwrap();
    let batch: Vec<_> = placed
        .iter()
        .chain([&newcomer])
        .map(|t| login(t, "v"))
        .collect();
    log.append_batch(&batch).await.unwrap();
    for (t, shard) in [(&moved_if_rehashed, 1), (&newcomer, 3)] {
        let shards: Vec<i32> = sqlx::query_scalar(
            "SELECT DISTINCT (position >> 48)::int4 FROM events WHERE tenant = $1",
        )
        .bind(t)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(shards, vec![shard], "{t} stays where it was placed");
    }
    let refused = sqlx::query("SELECT set_log_shards(1)")
        .execute(&db.pool)
        .await;
    assert_eq!(
        sqlstate(refused),
        "55006",
        "shards holding tenants are kept"
    );
    assert_eq!(shards::count(&db.pool).await.unwrap(), 4);
    let refused = crate::fixtures::down_to_before(&db.pool, 26).await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("move them to shard 0"),
        "one log again only once every tenant is on shard 0"
    );
}

#[tokio::test]
async fn a_writer_cannot_put_a_row_in_another_shard() {
    let db = TestDb::with_shards(4).await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.ensure_months(&[partitions::Month::of(jan(1))])
        .await
        .unwrap();
    let (user, _pool) = login_in(&db, "activity_writer").await;
    let mut conn = PgConnection::connect_with(&db.options_as(&user, "pw"))
        .await
        .unwrap();
    let tenants = one_tenant_per_shard(4);
    let t = &tenants[1];
    let row = "INSERT INTO events (position, event_id, command_id, tenant, user_id, event_type, \
        activity_type, data, occurred_at, received_at, tenant_position) VALUES ($1, \
        gen_random_uuid(), $2, $3, 'u1', 'activity_recorded', 'login', '{}', \
        '2025-01-15T10:30:00Z', now(), $4)";
    let id = uuid::Uuid::new_v4();
    for target in [0, 2, 3] {
        let mut tx = conn.begin().await.unwrap();
        let (last, tenant_last): (i64, i64) = sqlx::query_as(
            "SELECT last, tenant_last FROM begin_append(ARRAY[$1], ARRAY[$2::uuid])",
        )
        .bind(t)
        .bind(id)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert_eq!(shard_of(last), 1);
        let elsewhere = last - shard_base(1) + shard_base(target);
        let forged = sqlx::query(row)
            .bind(elsewhere)
            .bind(id)
            .bind(t)
            .bind(tenant_last)
            .execute(&mut *tx)
            .await;
        assert_eq!(
            sqlstate(forged),
            "42501",
            "a row of shard 1 put in shard {target}"
        );
        tx.rollback().await.unwrap();
    }
}

#[tokio::test]
async fn a_shards_window_end_is_read_from_the_index() {
    let db = TestDb::with_shards(4).await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.ensure_months(&[partitions::Month::of(jan(1))])
        .await
        .unwrap();
    // 4 shards of 5,000 events each, straight from the owner.
    sqlx::raw_sql(
        "INSERT INTO events (position, tenant_position, event_id, command_id, tenant, user_id, \
         event_type, activity_type, data, occurred_at, received_at) \
         SELECT (s::bigint << 48) + i, i, gen_random_uuid(), gen_random_uuid(), 't' || s, 'u', \
                'activity_recorded', 'login', '{}', '2025-01-15T10:30:00Z', now() \
         FROM generate_series(0, 3) s, generate_series(1, 5000) i; ANALYZE events",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT max(position) FROM events \
         WHERE position > (2::bigint << 48) + 10 AND position < 3::bigint << 48",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("Index Only Scan Backward using events_p") && !plan.contains("Seq Scan"),
        "{plan}"
    );
}

#[tokio::test]
async fn only_the_owner_sets_the_shard_count_and_no_reader_learns_a_tenants_shard() {
    let db = TestDb::with_shards(4).await;
    let (writer, _pool) = login_in(&db, "activity_writer").await;
    let (reader, _pool) = login_in(&db, "activity_reader").await;
    for user in [&writer, &reader] {
        let mut conn = PgConnection::connect_with(&db.options_as(user, "pw"))
            .await
            .unwrap();
        let set = sqlx::query("SELECT set_log_shards(8)")
            .execute(&mut conn)
            .await;
        assert_eq!(sqlstate(set), "42501", "{user} sets the shard count");
    }
    let mut conn = PgConnection::connect_with(&db.options_as(&reader, "pw"))
        .await
        .unwrap();
    for sql in [
        "SELECT tenant_shard('acme')",
        "SELECT * FROM log_shards",
        "SELECT * FROM shard_checkpoints",
        "SELECT lock_tenant_shards(ARRAY['acme'])",
    ] {
        let r = sqlx::query(sql).execute(&mut conn).await;
        assert_eq!(sqlstate(r), "42501", "a reader runs {sql}");
    }
    assert_eq!(shards::count(&db.pool).await.unwrap(), 4);
}

#[tokio::test]
async fn a_single_log_store_upgrades_to_shards_and_replays_to_the_same_views() {
    // A store of one log, with its views folded, taken back to before shards and up again:
    // the upgrade with data in it.
    let r = ReadSide::on(TestDb::with_shards(1).await).await;
    let old = one_tenant_per_shard(4);
    let mut first = Vec::new();
    for t in &old {
        first.push(ps::tenant(t));
        first.push(ps::register(t, "ann", "Ann"));
        first.push(ps::activity(t, "ann", "login", "2026-11-04 08:00:00"));
    }
    r.apply(&first).await;
    r.catch_up().await;
    let before = r.snapshot().await;
    crate::fixtures::down_to_before(&r.db.pool, 26)
        .await
        .unwrap();
    migrate::up(&r.db.pool).await.unwrap();
    assert_eq!(r.snapshot().await, before, "the upgrade moves no row");
    assert_eq!(
        ps::checkpoints(&r.db.pool, "activity_feed").await,
        ps::visible(&r.db.pool).await,
        "the projections' checkpoints carried over to shard 0"
    );
    // Grown to 4: the old tenants stay on shard 0, their positions go on; new ones spread.
    shards::set(&r.db.pool, 4).await.unwrap();
    let log = EventLog::open(r.db.pool.clone()).await.unwrap();
    assert_eq!(log.shards(), 4);
    let newcomers: Vec<String> = (0..)
        .map(|i| format!("n{i}"))
        .filter(|t| partition(t, 4) != 0)
        .take(3)
        .collect();
    let mut more = Vec::new();
    for t in old.iter().chain(&newcomers) {
        if newcomers.contains(t) {
            more.push(ps::tenant(t));
            more.push(ps::register(t, "ann", "Ann"));
        }
        more.push(ps::activity(t, "ann", "view", "2026-11-05 08:00:00"));
    }
    r.apply(&more).await;
    r.catch_up().await;
    for t in &old {
        let (shard, positions): (i32, Vec<i64>) = sqlx::query_as(
            "SELECT (SELECT shard FROM tenant_heads WHERE tenant = $1), \
                    ARRAY(SELECT tenant_position FROM events WHERE tenant = $1 ORDER BY position)",
        )
        .bind(t)
        .fetch_one(&r.db.pool)
        .await
        .unwrap();
        assert_eq!((shard, positions), (0, vec![1, 2, 3, 4]), "{t}");
    }
    for t in &newcomers {
        let shard: i32 = sqlx::query_scalar("SELECT shard FROM tenant_heads WHERE tenant = $1")
            .bind(t)
            .fetch_one(&r.db.pool)
            .await
            .unwrap();
        assert_eq!(shard as u32, partition(t, 4), "{t} placed among 4");
    }
    let live = r.snapshot().await;
    r.replay().await;
    assert_eq!(
        r.snapshot().await,
        live,
        "a replay after the upgrade gives the same views"
    );
}

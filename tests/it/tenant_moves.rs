//! Moving a tenant to another shard: its events take the target shard's next positions in
//! their order; its views, its tenant positions and what it reads stay the same, and a
//! replay after the move gives the views the live folds gave.

use std::time::Duration;

use activity_store::log::shards::{self, partition};
use activity_store::project::{shard_base, shard_of};
use sqlx::{Connection, PgConnection};

use crate::fixtures::{login_in, sqlstate};
use crate::project_support::{self as ps, ReadSide};
use crate::support::TestDb;

/// Slugs on shards 0 and 2 of 4.
fn on(shard: u32) -> String {
    (0..)
        .map(|i| format!("m{i}"))
        .find(|t| partition(t, 4) == shard)
        .unwrap()
}

async fn tenant_rows(pool: &sqlx::PgPool, t: &str) -> (i32, Vec<i64>, Vec<i64>) {
    sqlx::query_as(
        "SELECT (SELECT shard FROM tenant_heads WHERE tenant = $1), \
                ARRAY(SELECT position FROM events WHERE tenant = $1 ORDER BY position), \
                ARRAY(SELECT tenant_position FROM events WHERE tenant = $1 ORDER BY position)",
    )
    .bind(t)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn seeded() -> (ReadSide, String, String) {
    let r = ReadSide::on(TestDb::with_shards(4).await).await;
    let (t, other) = (on(0), on(2));
    let mut cmds = Vec::new();
    for x in [&t, &other] {
        cmds.push(ps::tenant(x));
        cmds.push(ps::register(x, "ann", "Ann"));
        cmds.push(ps::register(x, "bob", "Bob"));
        for d in 1..=5 {
            cmds.push(ps::activity(
                x,
                "ann",
                "login",
                &format!("2026-11-0{d} 08:00:00"),
            ));
        }
        cmds.push(ps::forget(x, "bob"));
    }
    r.apply(&cmds).await;
    r.catch_up().await;
    (r, t, other)
}

#[tokio::test]
async fn a_moved_tenant_keeps_its_views_and_positions_and_goes_on_on_its_new_shard() {
    let (r, t, other) = seeded().await;
    let before = r.snapshot().await;
    let (shard, _, tenant_positions) = tenant_rows(&r.db.pool, &t).await;
    assert_eq!(shard, 0);
    let position_before: i64 =
        sqlx::query_scalar("SELECT tenant_projection_position('activity_feed', $1)")
            .bind(&t)
            .fetch_one(&r.db.pool)
            .await
            .unwrap();
    // An erasure of bob's is recorded at his user_forgotten event: it follows the event.
    sqlx::query(
        "INSERT INTO erasures (tenant, pseudonym, forgotten_at) \
         SELECT $1, 'erased-' || md5('bob'), position FROM events \
         WHERE tenant = $1 AND event_type = 'user_forgotten'",
    )
    .bind(&t)
    .execute(&r.db.pool)
    .await
    .unwrap();
    let moved = shards::move_tenant(&r.db.pool, &t, 2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(moved, tenant_positions.len() as i64);
    let followed: bool = sqlx::query_scalar(
        "SELECT r.forgotten_at = e.position FROM erasures r JOIN events e \
         ON e.tenant = r.tenant AND e.event_type = 'user_forgotten' WHERE r.tenant = $1",
    )
    .bind(&t)
    .fetch_one(&r.db.pool)
    .await
    .unwrap();
    assert!(followed, "the erasure's position follows its event");
    let (shard, positions, after) = tenant_rows(&r.db.pool, &t).await;
    assert_eq!(shard, 2);
    assert!(positions.iter().all(|p| shard_of(*p) == 2), "{positions:?}");
    assert_eq!(
        after, tenant_positions,
        "tenant positions, in order, unchanged"
    );
    // Appended after the other tenant's events of shard 2, which stay where they were.
    let (_, others, _) = tenant_rows(&r.db.pool, &other).await;
    assert!(positions[0] > *others.last().unwrap());
    assert_eq!(others[0], shard_base(2) + 1);
    r.catch_up().await;
    assert_eq!(
        r.snapshot().await,
        before,
        "no view moved, nothing folded twice"
    );
    let position_after: i64 =
        sqlx::query_scalar("SELECT tenant_projection_position('activity_feed', $1)")
            .bind(&t)
            .fetch_one(&r.db.pool)
            .await
            .unwrap();
    assert_eq!(position_after, position_before);
    // It goes on on shard 2, its tenant positions after its last.
    r.apply(&[ps::activity(&t, "ann", "view", "2026-11-09 08:00:00")])
        .await;
    r.catch_up().await;
    let (_, positions, tenant_positions) = tenant_rows(&r.db.pool, &t).await;
    assert_eq!(shard_of(*positions.last().unwrap()), 2);
    assert_eq!(*tenant_positions.last().unwrap(), after.len() as i64 + 1);
    let live = r.snapshot().await;
    r.replay().await;
    assert_eq!(
        r.snapshot().await,
        live,
        "a replay after the move gives the same views"
    );
}

#[tokio::test]
async fn a_move_waits_for_the_folds_and_refuses_what_it_cannot_do() {
    let (r, t, other) = seeded().await;
    // The target shard has an event no projection has folded: the move waits, then gives up.
    r.apply(&[ps::activity(&other, "ann", "view", "2026-11-09 08:00:00")])
        .await;
    let early = shards::move_tenant(&r.db.pool, &t, 2, Duration::from_millis(300)).await;
    assert!(
        early
            .as_ref()
            .is_err_and(|e| e.to_string().contains("not folded")),
        "{early:?}"
    );
    assert_eq!(tenant_rows(&r.db.pool, &t).await.0, 0, "nothing moved");
    for (tenant, to, code) in [
        (t.as_str(), 0, "22023"),
        ("nobody", 1, "P0002"),
        (t.as_str(), 9, "22023"),
    ] {
        let refused = sqlx::query("SELECT move_tenant($1, $2)")
            .bind(tenant)
            .bind(to)
            .execute(&r.db.pool)
            .await;
        assert_eq!(sqlstate(refused), code, "{tenant} to {to}");
    }
    let (writer, _pool) = login_in(&r.db, "activity_writer").await;
    let mut conn = PgConnection::connect_with(&r.db.options_as(&writer, "pw"))
        .await
        .unwrap();
    let forged = sqlx::query("SELECT move_tenant($1, 2)")
        .bind(&t)
        .execute(&mut conn)
        .await;
    assert_eq!(sqlstate(forged), "42501", "a writer moves a tenant");
    // A direct UPDATE of positions is still refused, for the owner too.
    let direct = sqlx::query("UPDATE events SET position = position + 1000 WHERE tenant = $1")
        .bind(&t)
        .execute(&r.db.pool)
        .await;
    assert_eq!(sqlstate(direct), "42501");
    // Once folded, it moves.
    r.catch_up().await;
    shards::move_tenant(&r.db.pool, &t, 2, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(tenant_rows(&r.db.pool, &t).await.0, 2);
}

#[tokio::test]
async fn the_shards_command_lists_the_shards_and_moves_a_tenant() {
    let (r, t, _) = seeded().await;
    let url = r.db.url();
    // Off the runtime, which keeps serving the pool meanwhile.
    let cli = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::cli::stdout_of(&args, &url)
        })
    };
    let list = cli(vec!["shards".into(), "list".into()]).await.unwrap();
    assert_eq!(
        list,
        "shard 0: 1 tenants\nshard 1: 0 tenants\nshard 2: 1 tenants\nshard 3: 0 tenants\n"
    );
    let args = ["shards", "move", &t, "--to", "3"]
        .map(String::from)
        .to_vec();
    let out = cli(args).await.unwrap();
    assert_eq!(out, format!("moved {t} to shard 3: 9 events\n"));
    assert_eq!(tenant_rows(&r.db.pool, &t).await.0, 3);
}

//! The append path has no hole: whatever a writer login runs that its grants allow, alone or
//! two statements together, around a `begin_append`, the commit never leaves a ledger entry
//! without its event, nor an event without its ledger entry. The statements are read from
//! the catalog, so a grant added later is tried too.

use activity_store::log::{EventLog, partitions};
use sqlx::{Connection, PgConnection};

use crate::fixtures::{jan, login_in};
use crate::support::TestDb;

/// Every change the writer's table grants allow, one statement each.
async fn allowed(db: &TestDb) -> Vec<String> {
    let grants: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.relname::text, p.priv, \
                (SELECT a.attname::text FROM pg_attribute a \
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                 ORDER BY a.attnum LIMIT 1) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, \
              unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(priv) \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND has_table_privilege('activity_writer', c.oid, p.priv) ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut out = Vec::new();
    for (table, privilege, column) in grants {
        out.push(match privilege.as_str() {
            "DELETE" => format!("DELETE FROM {table}"),
            "TRUNCATE" => format!("TRUNCATE {table}"),
            "UPDATE" => format!("UPDATE {table} SET {column} = {column}"),
            _ => format!("INSERT INTO {table} SELECT * FROM {table} LIMIT 1"),
        });
    }
    let sequences: Vec<String> = sqlx::query_scalar(
        "SELECT s.relname::text FROM (SELECT oid, relname FROM pg_class WHERE relkind = 'S' OFFSET 0) s \
         WHERE has_sequence_privilege('activity_writer', s.oid, 'UPDATE')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    out.extend(sequences.iter().map(|s| format!("SELECT setval('{s}', 1)")));
    out
}

async fn broken(db: &TestDb) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM command_ledger l WHERE NOT EXISTS \
                   (SELECT 1 FROM events e WHERE e.tenant = l.tenant AND e.command_id = l.command_id)), \
                (SELECT count(*) FROM events e WHERE NOT EXISTS \
                   (SELECT 1 FROM command_ledger l WHERE l.tenant = e.tenant AND l.command_id = e.command_id))",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Runs `statements` after a `begin_append` in one transaction, each behind a savepoint so
/// a refused one does not end the transaction, then tries to commit.
async fn attempt(conn: &mut PgConnection, statements: &[&String]) {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT * FROM begin_append(ARRAY['acme'], ARRAY[gen_random_uuid()])")
        .execute(&mut *tx)
        .await
        .unwrap();
    for s in statements {
        sqlx::query("SAVEPOINT s").execute(&mut *tx).await.unwrap();
        if sqlx::raw_sql(sqlx::AssertSqlSafe(s.to_string()))
            .execute(&mut *tx)
            .await
            .is_err()
        {
            sqlx::query("ROLLBACK TO SAVEPOINT s")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
    }
    let _ = tx.commit().await;
}

#[tokio::test]
async fn no_statement_a_writer_may_run_marks_a_command_applied_without_its_event() {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    log.ensure_months(&[partitions::Month::of(jan(1))])
        .await
        .unwrap();
    let (user, _pool) = login_in(&db, "activity_writer").await;
    let mut conn = PgConnection::connect_with(&db.options_as(&user, "pw"))
        .await
        .unwrap();
    // The reproduction from the attack, read straight: a permit deleted before the commit.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT * FROM begin_append(ARRAY['globex'], ARRAY[gen_random_uuid()])")
        .execute(&mut *tx)
        .await
        .unwrap();
    let _ = sqlx::query("DELETE FROM append_permits")
        .execute(&mut *tx)
        .await;
    let _ = tx.commit().await;
    assert_eq!(broken(&db).await, (0, 0), "a permit deleted by hand");

    let statements = allowed(&db).await;
    assert!(
        statements
            .iter()
            .any(|s| s.starts_with("INSERT INTO events")),
        "the catalog query finds the writer's grants: {statements:?}"
    );
    for (i, a) in statements.iter().enumerate() {
        attempt(&mut conn, &[a]).await;
        assert_eq!(broken(&db).await, (0, 0), "after {a}");
        for b in &statements[i..] {
            attempt(&mut conn, &[a, b]).await;
            assert_eq!(broken(&db).await, (0, 0), "after {a}; {b}");
        }
    }
}

#[tokio::test]
async fn a_writer_creates_only_months_the_accepted_window_reaches() {
    let db = TestDb::migrated().await;
    let (user, _pool) = login_in(&db, "activity_writer").await;
    let mut conn = PgConnection::connect_with(&db.options_as(&user, "pw"))
        .await
        .unwrap();
    let create = |at: &'static str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT create_event_partition('{at}')"
        )))
    };
    for far in ["9999-01-01", "1970-01-01"] {
        let r = create(far).execute(&mut conn).await;
        assert_eq!(crate::fixtures::sqlstate(r), "42501", "{far}");
    }
    let this_month = chrono::Utc::now().format("%Y-%m-01").to_string();
    sqlx::query("SELECT create_event_partition($1::timestamptz)")
        .bind(&this_month)
        .execute(&mut conn)
        .await
        .expect("this month is the writer's to create");
    // The log's owner may create any month.
    create("9999-01-01").execute(&db.pool).await.unwrap();
}

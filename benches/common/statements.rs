//! Where the server's time goes, from `pg_stat_statements` (the benches' PostgreSQL
//! preloads it).

use crate::support::TestDb;

/// Starts counting the server's time per statement afresh (`pg_stat_statements`, which the
/// benches' PostgreSQL preloads).
pub async fn reset_statements(db: &TestDb) {
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&db.pool)
        .await
        .unwrap();
}

/// The server's time in `db` since `reset_statements`, in seconds: every top-level statement
/// of the store's logins (not the bench's superuser), nested ones counted once, inside theirs.
pub async fn server_seconds(db: &TestDb) -> f64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(total_exec_time), 0) / 1000 \
         FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND NOT r.rolsuper AND toplevel",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// Where the server's time went in `db` since `reset_statements`, by top-level statement
/// (nested ones, inside functions, are marked `  ↳`): (statement, calls, total ms).
pub async fn server_time(db: &TestDb, top: usize) -> Vec<(String, i64, f64)> {
    let rows: Vec<(String, bool, i64, f64)> = sqlx::query_as(
        "SELECT regexp_replace(query, '\\s+', ' ', 'g'), toplevel, calls, total_exec_time \
         FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND NOT r.rolsuper \
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(top as i64)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(q, toplevel, calls, ms)| {
            let q: String = q.chars().take(90).collect();
            (if toplevel { q } else { format!("  ↳ {q}") }, calls, ms)
        })
        .collect()
}

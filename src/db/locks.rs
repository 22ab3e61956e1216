//! Every advisory lock the store takes, in one place. Keys of one bigint serialise a job
//! across the database; keys of two int4 (a class here and `hashtext(name)`) serialise it per
//! projection or stream. Migrations that take a lock in SQL write its key as a decimal: a
//! test below holds them equal to these.

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::{DbError, db};

/// Serialises appends ("ACTVAPND"): positions are handed out and committed in one order, so
/// a reader that sees position N has seen every position below it.
pub const APPEND: i64 = 0x4143_5456_4150_4e44;
/// Serialises partition DDL between processes ("ACTVPART").
pub const PARTITIONS: i64 = 0x4143_5456_5041_5254;
/// The maintenance lease ("ACTVMANT"): one running store keeps the months ahead created.
pub const MAINTENANCE: i64 = 0x4143_5456_4d41_4e54;

/// A projection's install lock ("PROJ"), per projection name.
pub const INSTALL: i32 = 0x5052_4f4a;
/// A shard's fold lease ("FOLD"), keyed by the shard: one projector folds it at a time.
pub const SHARD_FOLD: i32 = 0x464f_4c44;
/// A projector's membership ("MEMB"), keyed by its session's pid: the projectors dividing
/// the shards are the sessions holding one.
pub const PROJECT_MEMBER: i32 = 0x4d45_4d42;
/// An ingesting instance's membership ("INGM"), keyed by its session's pid: the instances
/// dividing the ingest partitions are the sessions holding one.
pub const INGEST_MEMBER: i32 = 0x494e_474d;
/// A projection's rebuild ("REBU"): one rebuild of it at a time.
pub const REBUILD: i32 = 0x5245_4255;
/// A stream's ingest leader ("ACTI"): one ingestor commits from it at a time.
pub const INGEST_LEADER: i32 = 0x4143_5449;

/// How long an append waits for the append lock (and any lock after it) before it gives up.
pub const APPEND_LOCK_TIMEOUT: &str = "10s";

/// Takes transaction-scoped lock `key` until the transaction ends.
pub async fn xact(conn: &mut PgConnection, key: i64, action: &'static str) -> Result<(), DbError> {
    db(
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(conn)
            .await,
        action,
    )
    .map(|_| ())
}

/// Bounds the caller's transaction's lock waits: an append waits for its shards' append
/// locks (which `begin_append` and `ingest_view` take) at most `APPEND_LOCK_TIMEOUT`. A wait
/// behind a stuck append ends (SQLSTATE 55P03, retried like any outage) rather than hang, so
/// a shutdown or a liveness probe is never stuck behind it for ever.
pub async fn bound_lock_waits(conn: &mut PgConnection) -> Result<(), DbError> {
    db(
        sqlx::query("SELECT set_config('lock_timeout', $1, true)")
            .bind(APPEND_LOCK_TIMEOUT)
            .execute(conn)
            .await,
        "bound an append's lock waits",
    )
    .map(|_| ())
}

/// The append lock of shard `shard`: shard 0's is the one the log always had.
pub fn append_shard(shard: i32) -> i64 {
    APPEND + i64::from(shard)
}

/// Most shards a store may have (the migrations' `log_shards` holds to it).
pub const MAX_SHARDS: i32 = 1024;

/// Takes transaction-scoped lock (`class`, `name`) until the transaction ends.
pub async fn xact_named(
    conn: &mut PgConnection,
    class: i32,
    name: &str,
    action: &'static str,
) -> Result<(), DbError> {
    let sql = "SELECT pg_advisory_xact_lock($1, hashtext($2))";
    named(conn, sql, (class, name), action).await
}

/// Waits for session lock (`class`, `name`), held until released or the session ends.
pub async fn session_named(
    conn: &mut PgConnection,
    class: i32,
    name: &str,
    action: &'static str,
) -> Result<(), DbError> {
    let sql = "SELECT pg_advisory_lock($1, hashtext($2))";
    named(conn, sql, (class, name), action).await
}

async fn named(
    conn: &mut PgConnection,
    sql: &'static str,
    (class, name): (i32, &str),
    action: &'static str,
) -> Result<(), DbError> {
    db(
        sqlx::query(sql).bind(class).bind(name).execute(conn).await,
        action,
    )
    .map(|_| ())
}

/// Takes session lock (`class`, `name`) if it is free.
pub async fn try_session_named(
    conn: &mut PgConnection,
    class: i32,
    name: &str,
    action: &'static str,
) -> Result<bool, DbError> {
    db(
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(class)
            .bind(name)
            .fetch_one(conn)
            .await,
        action,
    )
}

/// Takes session lock `key` if it is free.
pub async fn try_session(
    conn: &mut PgConnection,
    key: i64,
    action: &'static str,
) -> Result<bool, DbError> {
    db(
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(conn)
            .await,
        action,
    )
}

/// The session holding a lock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Holder {
    /// Its backend's process id (`pg_terminate_backend` takes it).
    pub pid: i32,
    /// Its `application_name`: the store's sessions name their role, host and process.
    pub application_name: String,
    /// The client's address, when over TCP.
    pub client_addr: Option<String>,
    /// Seconds since its transaction (or, outside one, its session) began; unknown when the
    /// login reading may not see other logins' sessions (grant it `pg_read_all_stats`).
    pub seconds: Option<f64>,
}

/// The session holding an advisory lock of this database, if any. A lock on two int4 keys
/// shows in `pg_locks` as (classid, objid, objsubid 2); on one bigint, as its high and low
/// halves with objsubid 1. Both halves are compared as unsigned 32-bit values.
const HOLDER: &str = "\
SELECT a.pid, coalesce(a.application_name, ''), host(a.client_addr),
       extract(epoch FROM now() - coalesce(a.xact_start, a.backend_start))::float8
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = ($1::bigint & 4294967295)
  AND l.objid::bigint BETWEEN ($2::bigint & 4294967295) AND ($2::bigint & 4294967295) + $4
  AND l.objsubid = $3
ORDER BY a.xact_start NULLS LAST
LIMIT 1";

type HolderRow = (i32, String, Option<String>, Option<f64>);

async fn holder_of(
    conn: &mut PgConnection,
    high: i64,
    low: i64,
    keys: i16,
    span: i64,
) -> Result<Option<Holder>, DbError> {
    let row: Option<HolderRow> = db(
        sqlx::query_as(HOLDER)
            .bind(high)
            .bind(low)
            .bind(keys)
            .bind(span)
            .fetch_optional(conn)
            .await,
        "read who holds a lock",
    )?;
    Ok(
        row.map(|(pid, application_name, client_addr, seconds)| Holder {
            pid,
            application_name,
            client_addr,
            seconds,
        }),
    )
}

/// The holder of lock `key` (of one bigint), the longest-running when several hold it.
pub async fn holder(conn: &mut PgConnection, key: i64) -> Result<Option<Holder>, DbError> {
    holder_of(conn, key >> 32, key & 0xffff_ffff, 1, 0).await
}

/// The longest-running holder of any shard's append lock.
pub async fn append_holder(conn: &mut PgConnection) -> Result<Option<Holder>, DbError> {
    let span = i64::from(MAX_SHARDS - 1);
    holder_of(conn, APPEND >> 32, APPEND & 0xffff_ffff, 1, span).await
}

/// The holder of lock (`class`, `hashtext(name)`).
pub async fn named_holder(
    conn: &mut PgConnection,
    class: i32,
    name: &str,
) -> Result<Option<Holder>, DbError> {
    let hash: i32 = db(
        sqlx::query_scalar("SELECT hashtext($1)")
            .bind(name)
            .fetch_one(&mut *conn)
            .await,
        "hash a lock's name",
    )?;
    holder_of(conn, i64::from(class), i64::from(hash), 2, 0).await
}

/// The holder of lock (`class`, `key`).
pub async fn keyed_holder(
    conn: &mut PgConnection,
    class: i32,
    key: i32,
) -> Result<Option<Holder>, DbError> {
    holder_of(conn, i64::from(class), i64::from(key), 2, 0).await
}

/// How long the oldest transaction now holding a shard's append lock has been open, in
/// seconds (0 when none is): how long that shard's projectors have been held back.
pub async fn appends_held_back_for(pool: &PgPool) -> Result<f64, DbError> {
    let mut conn = db(pool.acquire().await, "connect to measure the append lock")?;
    let held = append_holder(&mut conn).await?;
    Ok(held.and_then(|h| h.seconds).unwrap_or(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key written as a decimal in a migration is one of the keys above, and the one
    /// the append path's SQL takes is the append lock's.
    #[test]
    fn keys_in_migrations_are_the_codes() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
        let mut seen = 0;
        let data = std::fs::read_dir(format!("{dir}/data")).expect("data migrations folder");
        for entry in std::fs::read_dir(dir)
            .expect("migrations folder")
            .chain(data)
        {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                continue;
            }
            let sql = std::fs::read_to_string(&path).expect("readable");
            for (i, _) in sql.match_indices("pg_advisory") {
                let rest = &sql[i..];
                let open = rest.find('(').expect("a call");
                let args = &rest[open + 1..open + rest[open..].find(')').expect("closed")];
                let first = args.split(',').next().expect("an argument");
                // A shard's append lock is written `APPEND + shard`.
                let first = first.split('+').next().expect("a key").trim();
                let key: i64 = first.parse().unwrap_or_else(|_| {
                    panic!("{}: lock key `{first}` is not a literal", path.display())
                });
                assert_eq!(
                    key,
                    APPEND,
                    "{}: a lock key other than the append lock's",
                    path.display()
                );
                seen += 1;
            }
        }
        assert!(
            seen >= 2,
            "the append path's migrations take the append lock ({seen} found)"
        );
    }

    #[test]
    fn keys_are_distinct() {
        let big = [APPEND, PARTITIONS, MAINTENANCE];
        let small = [
            INSTALL,
            SHARD_FOLD,
            PROJECT_MEMBER,
            INGEST_MEMBER,
            REBUILD,
            INGEST_LEADER,
        ];
        for (i, a) in big.iter().enumerate() {
            assert!(big[i + 1..].iter().all(|b| a != b));
        }
        for (i, a) in small.iter().enumerate() {
            assert!(small[i + 1..].iter().all(|b| a != b));
        }
    }
}

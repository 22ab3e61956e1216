//! Real servers for tests and benches: one PostgreSQL and one nats-server per process on free
//! loopback ports (or the ones `DATABASE_URL` / `NATS_URL` name), a database per test.
#![allow(dead_code)]

pub mod hostile;
pub mod mapped;

use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;
use std::sync::OnceLock;

use activity_store::embedded::{NatsConfig, NatsServer, PgConfig, PgServer};
use activity_store::log::migrate;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

struct Servers {
    /// A superuser URL; tests create their databases through it.
    admin_url: String,
    nats_url: String,
}

static SERVERS: OnceLock<Servers> = OnceLock::new();
static DURABLE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Benches call this before anything else: their servers fsync like production ones.
pub fn use_durable_servers() {
    DURABLE.store(true, std::sync::atomic::Ordering::SeqCst);
}

fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        std::thread::spawn(start_servers)
            .join()
            .expect("starting the test servers panicked")
    })
}

fn start_servers() -> Servers {
    let db_env = std::env::var("DATABASE_URL").ok();
    let nats_env = std::env::var("NATS_URL").ok();
    if let (Some(admin_url), Some(nats_url)) = (db_env.clone(), nats_env.clone()) {
        return Servers {
            admin_url,
            nats_url,
        };
    }
    let dir = std::env::temp_dir().join(format!(
        "activity-store-test-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("create the test servers' folder");
    let rt = tokio::runtime::Runtime::new().expect("a runtime to start servers");
    let (pg, nats) = rt.block_on(async {
        let pg = match db_env {
            Some(_) => None,
            None => Some(
                PgServer::start(&PgConfig {
                    data_dir: dir.join("pg"),
                    password: uuid::Uuid::new_v4().simple().to_string(),
                    port: None,
                    durable: DURABLE.load(std::sync::atomic::Ordering::SeqCst),
                    log_file: dir.join("postgres.log"),
                })
                .await
                .expect("start the test PostgreSQL"),
            ),
        };
        let nats = match nats_env {
            Some(_) => None,
            None => Some(
                NatsServer::start(&NatsConfig {
                    store_dir: dir.join("nats"),
                    port: None,
                    log_file: dir.join("nats.log"),
                    auth: None,
                })
                .await
                .expect("start the test nats-server"),
            ),
        };
        (pg, nats)
    });
    let servers = Servers {
        admin_url: db_env.unwrap_or_else(|| pg.as_ref().unwrap().url("postgres")),
        nats_url: nats_env.unwrap_or_else(|| nats.as_ref().unwrap().url()),
    };
    let pids: Vec<String> = [
        pg.as_ref().and_then(|s| s.pid()),
        nats.as_ref().and_then(|s| s.pid()),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.to_string())
    .collect();
    watch_and_clean_up(pids, dir);
    // The servers live as long as this process; the watchdog stops them after it exits.
    std::mem::forget(pg);
    std::mem::forget(nats);
    std::mem::forget(rt);
    servers
}

/// Stops the servers and deletes their data once this process has exited, however it exits.
/// The watchdog outlives this process by design, so nothing here waits for it.
#[allow(clippy::zombie_processes)]
fn watch_and_clean_up(pids: Vec<String>, dir: PathBuf) {
    let script = r#"
        parent=$1; dir=$2; shift 2
        while kill -0 "$parent" 2>/dev/null; do sleep 0.5; done
        kill -INT "$@" 2>/dev/null
        for _ in $(seq 1 40); do kill -0 "$@" 2>/dev/null || break; sleep 0.25; done
        kill -9 "$@" 2>/dev/null
        rm -rf "$dir"
    "#;
    // Its own session, so a Ctrl-C to the test run does not stop it before it cleans up.
    Command::new("setsid")
        .args([
            "sh",
            "-c",
            script,
            "watchdog",
            &std::process::id().to_string(),
        ])
        .arg(&dir)
        .args(&pids)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the test servers' watchdog");
}

/// The superuser connection options, pointed at database `db`.
pub fn pg_options(db: &str) -> PgConnectOptions {
    PgConnectOptions::from_str(&servers().admin_url)
        .expect("a valid DATABASE_URL")
        .database(db)
}

/// The NATS URL of the test server.
/// The shards a test store's log has: `ACTIVITY_TEST_SHARDS`, or the store's default.
pub fn test_shards() -> i32 {
    std::env::var("ACTIVITY_TEST_SHARDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(activity_store::log::shards::DEFAULT_SHARDS)
}

pub fn nats_url() -> String {
    servers().nats_url.clone()
}

/// A unique lower-case name for a database, stream, role or bucket of one test.
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A database of a test's own.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// A superuser pool on it.
    pub pool: PgPool,
}

impl TestDb {
    /// A new, empty database: no migrations applied.
    pub async fn empty() -> TestDb {
        let name = unique_name("t");
        let mut admin = PgConnection::connect_with(&pg_options("postgres"))
            .await
            .expect("connect to the test PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(pg_options(&name))
            .await
            .expect("connect to the test database");
        TestDb { name, pool }
    }

    /// A new database with every migration applied, its log in the default number of
    /// shards (`ACTIVITY_TEST_SHARDS` sets another).
    pub async fn migrated() -> TestDb {
        TestDb::with_shards(test_shards()).await
    }

    /// A new database with every migration applied, its log in `shards` shards.
    pub async fn with_shards(shards: i32) -> TestDb {
        let db = TestDb::empty().await;
        migrate::up(&db.pool).await.expect("migrations apply");
        activity_store::log::shards::set(&db.pool, shards)
            .await
            .expect("set the shard count");
        db
    }

    /// A superuser URL of this database, for the binary's --database-url.
    pub fn url(&self) -> String {
        let admin = &servers().admin_url;
        let (base, query) = admin
            .split_once('?')
            .map_or((admin.as_str(), None), |(b, q)| (b, Some(q)));
        let (server, _db) = base.rsplit_once('/').expect("a URL with a database");
        match query {
            Some(q) => format!("{server}/{}?{q}", self.name),
            None => format!("{server}/{}", self.name),
        }
    }

    /// A URL of this database as `user` with `password`.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        let url = self.url();
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{user}:{password}@{host}")
    }

    /// Options to connect to this database as `user` with `password`.
    pub fn options_as(&self, user: &str, password: &str) -> PgConnectOptions {
        pg_options(&self.name).username(user).password(password)
    }
}

//! `activity-store up`: a private PostgreSQL and NATS under one folder, migrated and ready.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sqlx::Connection;

use super::binaries::ServiceUser;
use super::{EmbeddedError, NatsAuth, NatsConfig, NatsServer, PgConfig, PgServer, write_private};

/// The subject prefixes producers of the embedded store use: they may publish under the
/// first and read refusals under the second, and nothing else.
#[derive(Debug, Clone)]
pub struct ProducerSubjects {
    /// Commands, e.g. `activity.commands`.
    pub commands: String,
    /// Refusals, e.g. `activity.rejections`.
    pub rejections: String,
}
use crate::db::DbError;
use crate::log::{EventLog, migrate};
use crate::readers::logins;

/// The database `up` keeps the store in.
pub const DATABASE: &str = "activity";

/// What can go wrong bringing the embedded default up or down.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// A server could not be started or stopped.
    #[error(transparent)]
    Server(#[from] EmbeddedError),
    /// The database could not be prepared.
    #[error(transparent)]
    Log(#[from] DbError),
    /// The data folder cannot be used.
    #[error("{0}")]
    DataDir(String),
}

/// The embedded default: both servers running with their data under one folder.
#[derive(Debug)]
pub struct Embedded {
    pg: PgServer,
    nats: NatsServer,
    env_file: PathBuf,
    /// The database's owner and its password (the superuser for a database an older
    /// `up` created, which it owns).
    owner: (String, String),
    ingest_password: String,
    api_password: String,
}

impl Embedded {
    /// Starts (or restarts, reusing its data) the servers under `data_dir`, creates and
    /// migrates the database (a new store gets `shards`, or the default), and writes
    /// `DATABASE_URL` and `NATS_URL` to `data_dir/env`.
    pub async fn start(
        data_dir: &Path,
        subjects: &ProducerSubjects,
        shards: Option<i32>,
    ) -> Result<Embedded, UpError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| UpError::DataDir(format!("cannot create {}: {e}", data_dir.display())))?;
        let data_dir = data_dir
            .canonicalize()
            .map_err(|e| UpError::DataDir(format!("cannot resolve {}: {e}", data_dir.display())))?;
        if let Some(user) = ServiceUser::for_postgres()? {
            check_traversable(&data_dir, user)?;
        }
        let superuser_password = password(&data_dir)?;
        let env_file = data_dir.join("env");
        let pg = PgServer::start(&PgConfig {
            data_dir: data_dir.join("pg"),
            password: superuser_password.clone(),
            port: previous_port(&env_file, "DATABASE_URL"),
            durable: true,
            log_file: data_dir.join("postgres.log"),
        })
        .await?;
        let mut owner = (
            logins::OWNER.to_owned(),
            password_in(&data_dir, "pg-owner-password")?,
        );
        let passwords = (
            password_in(&data_dir, "pg-ingest-password")?,
            password_in(&data_dir, "pg-api-password")?,
        );
        // The database first: the NATS server's mapping routes to its partition count.
        let partitions =
            match prepare(&pg, &mut owner, (&passwords, &superuser_password), shards).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = pg.stop().await;
                    return Err(e);
                }
            };
        let nats = match NatsServer::start(&NatsConfig {
            store_dir: data_dir.join("nats"),
            port: previous_port(&env_file, "NATS_URL"),
            log_file: data_dir.join("nats.log"),
            auth: Some(NatsAuth {
                store_password: password_in(&data_dir, "nats-store-password")?,
                producer_password: password_in(&data_dir, "nats-producer-password")?,
                // NATS checks the subject after the mapping: producers need the partitions'
                // subjects too. A command published straight to another partition than its
                // tenant's is refused by ingest (`tenant_mismatch`), never reordered.
                commands: format!("{}.>", subjects.commands),
                rejections: format!("{}.>", subjects.rejections),
                mapping: crate::ingest::partitions::mapping(&subjects.commands, partitions),
            }),
        })
        .await
        {
            Ok(n) => n,
            Err(e) => {
                let _ = pg.stop().await;
                return Err(e.into());
            }
        };
        let embedded = Embedded {
            pg,
            nats,
            env_file,
            owner,
            ingest_password: passwords.0,
            api_password: passwords.1,
        };
        if let Err(e) = write_private(&embedded.env_file, &embedded.env(None)) {
            let _ = embedded.stop().await;
            return Err(e.into());
        }
        Ok(embedded)
    }

    /// The env file's text: every URL, the API's if it is served.
    fn env(&self, urls: Option<(&str, &str)>) -> String {
        let mut env = format!(
            "DATABASE_URL={}\nINGEST_DATABASE_URL={}\nAPI_DATABASE_URL={}\nNATS_URL={}\n\
             PRODUCER_NATS_URL={}\n",
            self.database_url(),
            self.ingest_database_url(),
            self.api_database_url(),
            self.nats_url(),
            self.producer_nats_url()
        );
        if let Some((api, metrics)) = urls {
            env.push_str(&format!("API_URL={api}\nMETRICS_URL={metrics}\n"));
        }
        env
    }

    /// Writes the API's and the metrics endpoint's URLs into the env file, beside the others.
    pub fn publish_urls(&self, api: &str, metrics: &str) -> Result<(), UpError> {
        write_private(&self.env_file, &self.env(Some((api, metrics))))?;
        Ok(())
    }

    /// The store's database, as the API's login (a reader bound to no tenant).
    pub fn api_database_url(&self) -> String {
        self.pg.url_as(logins::API, &self.api_password, DATABASE)
    }

    /// The store's database, as its owner (who migrates and projects).
    pub fn database_url(&self) -> String {
        self.pg.url_as(&self.owner.0, &self.owner.1, DATABASE)
    }

    /// The store's database, as the ingestor's `activity_writer` login.
    pub fn ingest_database_url(&self) -> String {
        self.pg
            .url_as(logins::INGEST, &self.ingest_password, DATABASE)
    }

    /// The NATS server.
    pub fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// Producers' NATS URL: publish commands, read refusals, nothing else.
    pub fn producer_nats_url(&self) -> String {
        self.nats.producer_url()
    }

    /// The file holding both URLs.
    pub fn env_file(&self) -> &Path {
        &self.env_file
    }

    /// Stops both servers cleanly.
    pub async fn stop(self) -> Result<(), UpError> {
        let nats = self.nats.stop().await;
        self.pg.stop().await?;
        nats?;
        Ok(())
    }
}

/// Reads `KEY=value` lines of an env file written by `up`.
pub fn read_env_file(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// The port a previous `up` used, if it is free again: URLs users saved keep working.
fn previous_port(env_file: &Path, key: &str) -> Option<u16> {
    let url = read_env_file(env_file, key)?;
    let after_host = url.rsplit_once('@').map_or(url.as_str(), |(_, h)| h);
    let port: u16 = after_host
        .rsplit_once(':')?
        .1
        .split('/')
        .next()?
        .parse()
        .ok()?;
    std::net::TcpListener::bind(("127.0.0.1", port))
        .ok()
        .map(|_| port)
}

fn password(data_dir: &Path) -> Result<String, UpError> {
    password_in(data_dir, "pg-password")
}

/// A generated password kept in `data_dir/name` (mode 0600), made on first use.
fn password_in(data_dir: &Path, name: &str) -> Result<String, UpError> {
    let file = data_dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&file) {
        return Ok(existing.trim().to_owned());
    }
    let password = uuid::Uuid::new_v4().simple().to_string();
    write_private(&file, &password)?;
    Ok(password)
}

/// PostgreSQL runs as `postgres` when we are root: it must be able to reach the data folder.
fn check_traversable(dir: &Path, user: ServiceUser) -> Result<(), UpError> {
    use std::os::unix::fs::MetadataExt;
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = ancestor.metadata() else {
            continue;
        };
        let mode = meta.permissions().mode();
        let reachable = mode & 0o001 != 0 || (meta.uid() == user.uid.as_raw() && mode & 0o100 != 0);
        if !reachable {
            return Err(UpError::DataDir(format!(
                "PostgreSQL runs as the `postgres` user, which cannot enter {}; choose a --data-dir it can reach (e.g. under /var/tmp) or run as an ordinary user",
                ancestor.display()
            )));
        }
    }
    Ok(())
}

/// Creates the store's logins and database if missing, migrates it, and sets a new store's
/// shards (and as many ingest partitions); returns the partition count. A database an older
/// `up` made as the superuser keeps it as its owner (`owner` becomes the superuser).
async fn prepare(
    pg: &PgServer,
    owner: &mut (String, String),
    ((ingest_password, api_password), superuser_password): (&(String, String), &str),
    shards: Option<i32>,
) -> Result<u32, UpError> {
    let db = |source| DbError::Database {
        action: "create the store's database",
        source,
    };
    let mut admin = sqlx::PgConnection::connect(&pg.url("postgres"))
        .await
        .map_err(db)?;
    logins::ensure(&mut admin, &owner.1, ingest_password, api_password).await?;
    let current: Option<String> = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
    )
    .bind(DATABASE)
    .fetch_optional(&mut admin)
    .await
    .map_err(db)?;
    match current.as_deref() {
        None => {
            let create = format!("CREATE DATABASE {DATABASE} OWNER {}", logins::OWNER);
            sqlx::query(sqlx::AssertSqlSafe(create))
                .execute(&mut admin)
                .await
                .map_err(db)?;
        }
        Some(o) if o == logins::OWNER => {}
        // A database an older `up` created as the superuser: its objects are the
        // superuser's, so it stays the owner; the ingestor still runs as a writer.
        Some(_) => {
            tracing::warn!(
                "the store's database is owned by the superuser (made by an older `up`); it keeps running as its owner"
            );
            *owner = ("postgres".to_owned(), superuser_password.to_owned());
        }
    }
    let pool = sqlx::PgPool::connect(&pg.url_as(&owner.0, &owner.1, DATABASE))
        .await
        .map_err(db)?;
    migrate::up(&pool).await?;
    let fresh = fresh_store(&pool).await?;
    let shards = crate::log::shards::install(&pool, shards).await?;
    if fresh {
        crate::ingest::partitions::set(&pool, shards as u32).await?;
    }
    let partitions = crate::ingest::partitions::count(&pool).await?;
    EventLog::open(pool.clone()).await?;
    pool.close().await;
    Ok(partitions)
}

/// Whether the store has never ingested a command: its routing may still be chosen.
async fn fresh_store(pool: &sqlx::PgPool) -> Result<bool, DbError> {
    crate::db::db(
        sqlx::query_scalar(
            "SELECT NOT EXISTS (SELECT 1 FROM tenant_heads) \
         AND NOT EXISTS (SELECT 1 FROM ingest_checkpoints)",
        )
        .fetch_one(pool)
        .await,
        "check whether the store has ingested anything",
    )
}

//! A private stream, consumer and database per test, and a way to drive the ingestor.

use std::sync::Arc;
use std::time::Duration;

use activity_store::ingest::{IngestConfig, Ingestor, Step};
use activity_store::log::EventLog;
use async_nats::jetstream;
use serde_json::{Value, json};

use crate::support::{TestDb, nats_url, unique_name};

pub struct Pipeline {
    pub db: TestDb,
    pub js: jetstream::Context,
    pub ingestor: Ingestor,
    pub prefix: String,
    pub config: IngestConfig,
}

impl Pipeline {
    pub async fn new() -> Pipeline {
        Pipeline::with_config(|_| {}).await
    }

    pub async fn with_config(adjust: impl FnOnce(&mut IngestConfig)) -> Pipeline {
        let db = TestDb::migrated().await;
        let pool = db.pool.clone();
        Pipeline::build(db, pool, adjust).await
    }

    /// A pipeline whose ingestor connects through `pool` (a login of its own); `db.pool`
    /// stays the superuser's, for checks.
    pub async fn on_pool(db: TestDb, pool: sqlx::PgPool) -> Pipeline {
        Pipeline::build(db, pool, |_| {}).await
    }

    async fn build(
        db: TestDb,
        pool: sqlx::PgPool,
        adjust: impl FnOnce(&mut IngestConfig),
    ) -> Pipeline {
        let log = Arc::new(EventLog::open(pool).await.unwrap());
        let js = jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        let prefix = unique_name("p");
        let mut config = IngestConfig {
            stream: prefix.to_uppercase(),
            subjects: format!("{prefix}.commands.*"),
            batch_wait: Duration::from_millis(200),
            ..Default::default()
        };
        adjust(&mut config);
        let ingestor = Ingestor::start(&js, log, config.clone()).await.unwrap();
        Pipeline {
            db,
            js,
            ingestor,
            prefix,
            config,
        }
    }

    pub fn subject(&self, tenant: &str) -> String {
        format!("{}.commands.{tenant}", self.prefix)
    }

    /// Publishes raw bytes and waits for the stream's ack; returns the stream sequence.
    pub async fn publish_raw(&self, tenant: &str, bytes: Vec<u8>, msg_id: Option<&str>) -> u64 {
        publish_raw(&self.js, self.subject(tenant), bytes, msg_id).await
    }

    /// Publishes a command (adding a fresh `id` unless it has one) with `Nats-Msg-Id` =
    /// `<tenant>:<id>`, as the README tells producers to.
    pub async fn publish(&self, command: Value) -> u64 {
        publish(&self.js, &self.prefix, command).await
    }

    /// Stops the ingestor (its leadership lock goes with it); the rest stays.
    pub fn stop(self) -> Stopped {
        Stopped {
            db: self.db,
            js: self.js,
            prefix: self.prefix,
            config: self.config,
        }
    }

    /// Steps the ingestor until a step finds nothing; returns the messages it handled.
    pub async fn drain(&self) -> usize {
        let mut handled = 0;
        loop {
            match self.ingestor.step().await.unwrap() {
                Step::Progress { messages, .. } => handled += messages,
                Step::Salvaged { .. } => handled += 1,
                Step::Rewound { .. } => {}
                Step::Idle => return handled,
            }
        }
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// A pipeline whose ingestor is not running: the store stopped.
pub struct Stopped {
    pub db: TestDb,
    pub js: jetstream::Context,
    pub prefix: String,
    pub config: IngestConfig,
}

impl Stopped {
    pub async fn publish(&self, command: Value) -> u64 {
        publish(&self.js, &self.prefix, command).await
    }

    /// Starts an ingestor again on the same database and stream.
    pub async fn start(self) -> Pipeline {
        let log = Arc::new(EventLog::open(self.db.pool.clone()).await.unwrap());
        let ingestor = Ingestor::start(&self.js, log, self.config.clone())
            .await
            .unwrap();
        Pipeline {
            db: self.db,
            js: self.js,
            ingestor,
            prefix: self.prefix,
            config: self.config,
        }
    }
}

async fn publish_raw(
    js: &jetstream::Context,
    subject: String,
    bytes: Vec<u8>,
    msg_id: Option<&str>,
) -> u64 {
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = msg_id {
        headers.insert("Nats-Msg-Id", id);
    }
    let ack = js
        .publish_with_headers(subject, headers, bytes.into())
        .await
        .unwrap();
    ack.await.unwrap().sequence
}

async fn publish(js: &jetstream::Context, prefix: &str, mut command: Value) -> u64 {
    if command.get("id").is_none() {
        command["id"] = json!(uuid::Uuid::new_v4().to_string());
    }
    let tenant = command["tenant"].as_str().unwrap_or("none").to_owned();
    let msg_id = format!("{tenant}:{}", command["id"].as_str().unwrap_or_default());
    let subject = format!("{prefix}.commands.{tenant}");
    publish_raw(
        js,
        subject,
        serde_json::to_vec(&command).unwrap(),
        Some(&msg_id),
    )
    .await
}

pub fn create_tenant(t: &str) -> Value {
    json!({"type": "create_tenant", "tenant": t, "name": "Tenant"})
}
pub fn register(t: &str, u: &str) -> Value {
    json!({"type": "register_user", "tenant": t, "user": u, "email": format!("{u}@example.com")})
}
pub fn activity(t: &str, u: &str) -> Value {
    json!({"type": "record_activity", "tenant": t, "user": u, "activity_type": "login",
        "occurred_at": "2025-01-20 14:45:00", "metadata": {"ip": "10.0.0.1"}})
}

/// `commands` as one batch of inbound messages from `first_seq` on, each with a fresh id.
pub fn batch(first_seq: u64, commands: Vec<Value>) -> Vec<activity_store::ingest::Inbound> {
    commands
        .into_iter()
        .zip(first_seq..)
        .map(|(mut c, seq)| {
            c["id"] = json!(uuid::Uuid::now_v7().to_string());
            let tenant = c["tenant"].as_str().unwrap().to_owned();
            activity_store::ingest::Inbound {
                subject: format!("activity.commands.{tenant}"),
                payload: serde_json::to_vec(&c).unwrap().into(),
                stream_seq: seq,
                delivered: 1,
                published: chrono::Utc::now(),
                stream_created: None,
                route: None,
            }
        })
        .collect()
}

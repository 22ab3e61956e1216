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
        let log = Arc::new(EventLog::open(db.pool.clone()).await.unwrap());
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
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        let ack = self
            .js
            .publish_with_headers(self.subject(tenant), headers, bytes.into())
            .await
            .unwrap();
        ack.await.unwrap().sequence
    }

    /// Publishes a command (adding a fresh `id` unless it has one) with `Nats-Msg-Id` = its id.
    pub async fn publish(&self, mut command: Value) -> u64 {
        if command.get("id").is_none() {
            command["id"] = json!(uuid::Uuid::new_v4().to_string());
        }
        let tenant = command["tenant"].as_str().unwrap_or("none").to_owned();
        let id = command["id"].as_str().map(str::to_owned);
        self.publish_raw(
            &tenant,
            serde_json::to_vec(&command).unwrap(),
            id.as_deref(),
        )
        .await
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

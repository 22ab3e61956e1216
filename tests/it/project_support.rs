//! A log and the read side over it, fed through the ingest decision path without NATS.

use std::sync::atomic::{AtomicU64, Ordering};

use activity_store::ingest::{Inbound, commit_batch};
use activity_store::log::EventLog;
use activity_store::model::TimeWindow;
use activity_store::project::{ProjectConfig, Projector};
use chrono::Utc;
use serde_json::{Value, json};

use crate::support::TestDb;

pub struct ReadSide {
    pub db: TestDb,
    pub log: EventLog,
    pub projector: Projector,
    seq: AtomicU64,
}

impl ReadSide {
    pub async fn new() -> ReadSide {
        ReadSide::with_window(10_000).await
    }

    pub async fn with_window(window: i64) -> ReadSide {
        ReadSide::on_with_window(TestDb::migrated().await, window).await
    }

    /// A read side over `db`.
    pub async fn on(db: TestDb) -> ReadSide {
        ReadSide::on_with_window(db, 10_000).await
    }

    async fn on_with_window(db: TestDb, window: i64) -> ReadSide {
        let log = EventLog::open(db.pool.clone()).await.unwrap();
        let config = ProjectConfig {
            window,
            ..Default::default()
        };
        let projector = Projector::start(db.pool.clone(), config).await.unwrap();
        ReadSide {
            db,
            log,
            projector,
            seq: AtomicU64::new(0),
        }
    }

    /// Decides and appends `commands` as one ingest batch (ids added where missing).
    pub async fn apply(&self, commands: &[Value]) {
        let batch: Vec<Inbound> = commands
            .iter()
            .map(|c| {
                let mut c = c.clone();
                if c.get("id").is_none() {
                    c["id"] = json!(uuid::Uuid::new_v4().to_string());
                }
                let tenant = c["tenant"].as_str().unwrap_or("none").to_owned();
                Inbound {
                    subject: format!("activity.commands.{tenant}"),
                    payload: serde_json::to_vec(&c).unwrap().into(),
                    stream_seq: self.seq.fetch_add(1, Ordering::SeqCst) + 1,
                    delivered: 1,
                    published: Utc::now(),
                    stream_created: None,
                    route: None,
                }
            })
            .collect();
        commit_batch(&self.log, "TEST", 0, &batch, &TimeWindow::default())
            .await
            .unwrap();
    }

    pub async fn catch_up(&self) -> i64 {
        self.projector.catch_up().await.unwrap()
    }

    /// Every projection installed again, empty, and folded from the whole log.
    pub async fn replay(&self) {
        for p in self.projector.projections() {
            activity_store::project::reinstall(&self.db.pool, p)
                .await
                .unwrap();
        }
        self.catch_up().await;
    }

    /// Every row of a read model, as text, in key order.
    pub async fn rows(&self, table: &str) -> Vec<String> {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM {table} t ORDER BY 1"
        )))
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// All three read models (and the daily model's private state).
    pub async fn snapshot(&self) -> Vec<Vec<String>> {
        let mut all = Vec::new();
        for t in READ_TABLES {
            all.push(self.rows(t).await);
        }
        all
    }
}

pub const READ_TABLES: [&str; 4] = [
    "analytics.activity_feed",
    "analytics.daily_activity",
    "analytics.user_summary",
    "projection_state.daily_activity_users",
];

pub fn tenant(t: &str) -> Value {
    json!({"type": "create_tenant", "tenant": t, "name": "Tenant"})
}
pub fn register(t: &str, u: &str, name: &str) -> Value {
    json!({"type": "register_user", "tenant": t, "user": u, "email": format!("{u}@example.com"), "name": name})
}
pub fn activity(t: &str, u: &str, kind: &str, at: &str) -> Value {
    json!({"type": "record_activity", "tenant": t, "user": u, "activity_type": kind,
        "occurred_at": at, "metadata": {"ip": "10.0.0.1", "kind": kind}})
}
pub fn change_email(t: &str, u: &str, email: &str) -> Value {
    json!({"type": "change_user_email", "tenant": t, "user": u, "email": email})
}
pub fn forget(t: &str, u: &str) -> Value {
    json!({"type": "forget_user", "tenant": t, "user": u})
}

/// Projection `name`'s checkpoint of each shard.
pub async fn checkpoints(pool: &sqlx::PgPool, name: &str) -> activity_store::project::Frontier {
    let mut conn = pool.acquire().await.unwrap();
    activity_store::project::Frontier::checkpoints(&mut conn, name, false)
        .await
        .unwrap()
}

/// Each shard's last visible position.
pub async fn visible(pool: &sqlx::PgPool) -> activity_store::project::Frontier {
    let mut conn = pool.acquire().await.unwrap();
    activity_store::project::Frontier::visible(&mut conn)
        .await
        .unwrap()
}

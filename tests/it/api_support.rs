//! A running store serving the HTTP API (ingest, project, API as an unbound reader login),
//! and a real HTTP client to talk to it.

use std::time::{Duration, Instant};

use activity_store::api::ApiConfig;
use activity_store::embedded::free_port;
use activity_store::serve::ServeConfig;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::fixtures::login_in;
use crate::liveness::{Store, config, ingest_config};
use crate::support::{TestDb, nats_url};

pub struct Api {
    pub db: TestDb,
    pub base: String,
    /// The subject prefix: commands go to `<prefix>.commands.<tenant>`.
    pub prefix: String,
    pub http: reqwest::Client,
    store: Store,
}

/// An answer: status, headers, body as JSON (Null if it is not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    pub fn position(&self) -> i64 {
        self.header("x-activity-position")
            .expect("X-Activity-Position")
            .parse()
            .unwrap()
    }
}

impl Api {
    pub async fn start() -> Api {
        Api::with(|_| {}).await
    }

    pub async fn with(adjust: impl FnOnce(&mut ServeConfig)) -> Api {
        let db = TestDb::migrated().await;
        let (writer, _) = login_in(&db, "activity_writer").await;
        // The API's login is a reader bound to no tenant: only tokens scope it.
        let (reader, _) = login_in(&db, "activity_http_reader").await;
        let (prefix, mut ingest) = ingest_config();
        ingest.rejections = format!("{prefix}.rejections");
        let mut config = config(db.url(), Some(db.url_as(&writer, "pw")), ingest, true);
        let port = free_port().unwrap();
        config.api = Some(ApiConfig {
            addr: format!("127.0.0.1:{port}").parse().unwrap(),
            max_wait: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(5),
            bucket_prefix: config.cache.bucket_prefix.clone(),
        });
        config.api_database_url = Some(db.url_as(&reader, "pw"));
        adjust(&mut config);
        let base = format!("http://{}", config.api.as_ref().unwrap().addr);
        let store = Store::launch(config).await;
        store.wait_for("/readyz", 200, "ready").await;
        let api = Api {
            db,
            base,
            prefix,
            http: reqwest::Client::new(),
            store,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.get("/v1/openapi.json", None).await.status != 200 {
            assert!(Instant::now() < deadline, "the API never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        api
    }

    /// A token for `tenant`, made as `readers token create` makes it.
    pub async fn token(&self, tenant: &str) -> String {
        activity_store::api::tokens::create(&self.db.pool, tenant, "test", None)
            .await
            .unwrap()
            .0
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.get_with(path, token, &[]).await
    }

    pub async fn get_with(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let Ok(response) = request.send().await else {
            return Answer {
                status: 0,
                headers: HeaderMap::new(),
                text: String::new(),
            };
        };
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            text,
        }
    }

    /// Publishes `command` (with a fresh id unless it has one); returns the id.
    pub async fn publish(&self, mut command: Value) -> uuid::Uuid {
        if command.get("id").is_none() {
            command["id"] = json!(uuid::Uuid::new_v4());
        }
        let id = command["id"].as_str().unwrap().parse().unwrap();
        let subject = format!(
            "{}.commands.{}",
            self.prefix,
            command["tenant"].as_str().unwrap()
        );
        let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap());
        js.publish(subject, serde_json::to_vec(&command).unwrap().into())
            .await
            .unwrap()
            .await
            .unwrap();
        id
    }

    /// Waits (at most 30 s) until command `id` of `tenant` is applied or refused; returns
    /// its status.
    pub async fn settled(&self, tenant: &str, token: &str, id: uuid::Uuid) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = self
                .get(
                    &format!("/v1/tenants/{tenant}/commands/{id}?wait_ms=1000"),
                    Some(token),
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
            let status = a.json();
            if status["status"] != "unknown" {
                return status;
            }
            assert!(Instant::now() < deadline, "command {id} never settled");
        }
    }

    /// Publishes commands and waits until the last is settled and folded by every
    /// projection; returns the position it was applied at.
    pub async fn apply(&self, tenant: &str, token: &str, commands: Vec<Value>) -> i64 {
        let mut last = None;
        for c in commands {
            last = Some(self.publish(c).await);
        }
        let status = self.settled(tenant, token, last.unwrap()).await;
        let position = status["position"].as_i64().unwrap_or(0);
        self.folded(tenant, token, position).await;
        position
    }

    /// Waits (at most 30 s a projection) until every projection has folded `position`.
    pub async fn folded(&self, tenant: &str, token: &str, position: i64) {
        // Each projection has folded it once a read asking for its position answers (the
        // summary of a user that does not exist: 404 once reached, 503 before).
        for (path, reached) in [
            ("activities?limit=1&", 200),
            ("daily?", 200),
            ("users/nobody/summary?", 404),
        ] {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let url = format!("/v1/tenants/{tenant}/{path}min_position={position}");
                let a = self.get(&url, Some(token)).await;
                if a.status == reached {
                    break;
                }
                assert_eq!(a.status, 503, "{path}: {}", a.text);
                assert!(Instant::now() < deadline, "{path} never reached {position}");
            }
        }
    }

    /// The store serving the API (its `/livez`, `/readyz`, `/metrics`).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub async fn stop(self) {
        self.store.stop().await;
    }
}

/// A path segment, percent-encoded: every byte but unreserved ones.
pub fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn tenant(t: &str) -> Value {
    json!({"type": "create_tenant", "tenant": t, "name": "Tenant"})
}
pub fn register(t: &str, u: &str) -> Value {
    json!({"type": "register_user", "tenant": t, "user": u, "email": "someone@example.com", "name": "Someone"})
}
pub fn activity(t: &str, u: &str, kind: &str, at: &str, metadata: Value) -> Value {
    json!({"type": "record_activity", "tenant": t, "user": u, "activity_type": kind,
        "occurred_at": at, "metadata": metadata})
}

//! HTTP API speed, in one run on real servers: requests per second and p50/p99 latency of
//! the summary, a user's feed and a tenant's feed, from C concurrent keep-alive clients
//! against `activity-store run --project --api-addr …` reading as an unbound reader login
//! with a tenant token; beside each, the same read in SQL from a pool of C connections (the
//! database's own rate for it: what the HTTP layer, the token check and the session cost).
//!
//! `cargo bench --bench api` or `cargo bench --bench api -- 200000` (activities seeded);
//! `API_CLIENTS` (default 16) and `API_SECONDS` (default 10 per endpoint).

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use activity_store::project::{ProjectConfig, Projector};
use common::{free_port, ready_store, seed_log, stop};
use sqlx::PgPool;

/// Latencies of one run, in seconds.
struct Run {
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<f64>,
}

impl Run {
    fn quantile(&self, q: f64) -> f64 {
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies.get(i).copied().unwrap_or(f64::NAN) * 1000.0
    }
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// `clients` tasks calling `call(i)` for `seconds`; each call's latency kept.
async fn drive<F, Fut>(clients: usize, seconds: f64, call: F) -> Run
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors, mut i) = (Vec::new(), 0, c * 7919);
            while Instant::now() < deadline {
                let t = Instant::now();
                if !call(i).await {
                    errors += 1;
                }
                latencies.push(t.elapsed().as_secs_f64());
                i += 1;
            }
            (latencies, errors)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::new(),
    };
    for t in tasks {
        let (l, e) = t.await.unwrap();
        run.errors += e;
        run.latencies.extend(l);
    }
    run.seconds = started.elapsed().as_secs_f64();
    run.requests = run.latencies.len();
    run.latencies.sort_by(f64::total_cmp);
    run
}

fn report(name: &str, http: &Run, sql: &Run) {
    println!(
        "{name:<34} {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}   | SQL alone {:>8.0}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({:.2}× of SQL)",
        http.rate(),
        http.quantile(0.5),
        http.quantile(0.99),
        http.errors,
        sql.rate(),
        sql.quantile(0.5),
        sql.quantile(0.99),
        http.rate() / sql.rate()
    );
}

/// The path of the i-th request to an endpoint.
type Path = Box<dyn Fn(usize) -> String + Send + Sync>;

/// A user of tenant t0 (users uJ with J % 10 == 0).
fn user(i: usize) -> String {
    format!("u{}", (i * 10) % common::SEED_USERS as usize)
}

#[tokio::main]
async fn main() {
    support::use_durable_servers();
    let n = common::count_arg(200_000);
    let env = common::env_or;
    let (clients, seconds) = (env("API_CLIENTS", 16.0) as usize, env("API_SECONDS", 10.0));
    let db = seed_log(n).await;
    println!(
        "seeded {n} activities of {} users in 10 tenants; folding them",
        common::SEED_USERS
    );
    Projector::start(db.pool.clone(), ProjectConfig::default())
        .await
        .unwrap()
        .catch_up()
        .await
        .unwrap();
    let reader = support::unique_name("api");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {reader} LOGIN PASSWORD 'pw' IN ROLE activity_http_reader"
    )))
    .execute(&db.pool)
    .await
    .unwrap();
    let token = activity_store::api::tokens::create(&db.pool, "t0", "bench", None)
        .await
        .unwrap()
        .0;
    let api_port = free_port();
    let api_addr = format!("127.0.0.1:{api_port}");
    let api_url = db.url_as(&reader, "pw");
    let prefix = support::unique_name("apib");
    let args = [
        "--project",
        "--api-addr",
        &api_addr,
        "--api-database-url",
        &api_url,
    ];
    let (child, _) = ready_store(&db, &prefix, &args).await;
    let base = format!("http://{api_addr}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap();
    let sql = sqlx::postgres::PgPoolOptions::new()
        .max_connections(clients as u32)
        .connect_with(db.options_as(&reader, "pw"))
        .await
        .unwrap();
    sqlx::query("INSERT INTO reader_tenants (login, tenant) VALUES ($1, 't0')")
        .bind(&reader)
        .execute(&db.pool)
        .await
        .unwrap();
    // Warm the cache: every summary read once.
    let get = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        move |path: String| {
            let (http, url, token) = (http.clone(), format!("{base}{path}"), token.clone());
            async move {
                match http.get(url).bearer_auth(token).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    };
    let warm = get.clone();
    drive(clients, 3.0, move |i| {
        warm(format!("/v1/tenants/t0/users/{}/summary", user(i)))
    })
    .await;

    println!(
        "\n{clients} clients, {seconds} s each, 2-core VM; SQL alone = the same read from a pool of {clients}"
    );
    let endpoints: Vec<(&str, Path)> = vec![
        (
            "summary (cache)",
            Box::new(|i| format!("/v1/tenants/t0/users/{}/summary", user(i))),
        ),
        (
            "user feed, 20 rows",
            Box::new(|i| format!("/v1/tenants/t0/users/{}/activities?limit=20", user(i))),
        ),
        (
            "tenant feed, 50 rows",
            Box::new(|_| "/v1/tenants/t0/activities?limit=50".to_owned()),
        ),
    ];
    for (name, path) in endpoints {
        let g = get.clone();
        let path = Arc::new(path);
        let p = path.clone();
        let http_run = drive(clients, seconds, move |i| g(p(i))).await;
        let pool = sql.clone();
        let sql_run = drive(clients, seconds, move |i| sql_read(pool.clone(), name, i)).await;
        report(name, &http_run, &sql_run);
    }
    // Where the summaries came from, over a sample of users.
    let mut from_cache = 0;
    for i in 0..500 {
        let url = format!("{base}/v1/tenants/t0/users/{}/summary", user(i));
        let r = http.get(url).bearer_auth(&token).send().await.unwrap();
        from_cache += usize::from(
            r.headers()
                .get("x-activity-source")
                .is_some_and(|v| v == "cache"),
        );
    }
    println!("summaries served from the cache: {from_cache} of 500");
    fairness(&db.pool, &http, &base, &token, clients, seconds).await;
    stop(child).await;
}

/// One tenant (t0) floods the tenant feed with `clients` clients while another (t1) reads
/// summaries with two: t1's p99 beside its quiet p99 (goal: within 2×), and how many of
/// t0's requests were told 429.
async fn fairness(
    pool: &PgPool,
    http: &reqwest::Client,
    base: &str,
    flood_token: &str,
    clients: usize,
    seconds: f64,
) {
    let quiet_token = activity_store::api::tokens::create(pool, "t1", "bench", None)
        .await
        .unwrap()
        .0;
    let read = |token: String, path: fn(usize) -> String| {
        let (http, base) = (http.clone(), base.to_owned());
        move |i: usize| {
            let (http, url, token) = (http.clone(), format!("{base}{}", path(i)), token.clone());
            async move {
                match http.get(url).bearer_auth(token).send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                }
            }
        }
    };
    let summary: fn(usize) -> String = |i| format!("/v1/tenants/t1/users/{}/summary", user(i));
    let feed: fn(usize) -> String = |_| "/v1/tenants/t0/activities?limit=50".to_owned();
    let quiet = drive(2, seconds, read(quiet_token.clone(), summary)).await;
    let flood = tokio::spawn(drive(
        clients,
        seconds + 2.0,
        read(flood_token.to_owned(), feed),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flooded = drive(2, seconds, read(quiet_token, summary)).await;
    let flood = flood.await.unwrap();
    let ratio = flooded.quantile(0.99) / quiet.quantile(0.99);
    println!(
        "\nfairness: t1's summary p99 {:.2} ms quiet, {:.2} ms while t0 floods with {clients} clients \
         ({ratio:.2}×; goal ≤ 2×: {}); t0 {:.0} req/s, {} of its requests refused (429) or failed",
        quiet.quantile(0.99),
        flooded.quantile(0.99),
        if ratio <= 2.0 { "met" } else { "MISSED" },
        flood.rate(),
        flood.errors
    );
}

/// The endpoint's read straight in SQL, as a reader bound to t0.
async fn sql_read(pool: PgPool, name: &'static str, i: usize) -> bool {
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('role', 'activity_reader', true), set_config('activity.tenant', 't0', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let q = match name {
        "summary (cache)" => sqlx::query(activity_store::query::USER_SUMMARY).bind("t0").bind(user(i)),
        "user feed, 20 rows" => sqlx::query(
            "SELECT tenant, user_id, event_id, activity_type, occurred_at, metadata FROM analytics.activity_feed \
             WHERE tenant = $1 AND user_id = $2 ORDER BY occurred_at DESC, event_id DESC LIMIT 20",
        )
        .bind("t0")
        .bind(user(i)),
        _ => sqlx::query(
            "SELECT tenant, user_id, event_id, activity_type, occurred_at, metadata FROM analytics.activity_feed \
             WHERE tenant = $1 ORDER BY occurred_at DESC, event_id DESC LIMIT 50",
        )
        .bind("t0"),
    };
    q.fetch_all(&mut *tx).await.is_ok()
}

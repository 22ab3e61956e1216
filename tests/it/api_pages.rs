//! The HTTP API's pages, limits and errors: keyset pages walk a feed with no row missed or
//! repeated while events arrive; every error is JSON naming the parameter and the rule; a
//! slow read is cancelled; the OpenAPI document lists paths that answer.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::api_support::{Api, activity, register, segment, tenant};

/// Walks a feed from `first` (a path with its query), `cursor` naming the page parameter.
async fn walk(
    api: &Api,
    token: &str,
    first: &str,
    cursor: &str,
    between: impl AsyncFn(usize),
) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut url = first.to_owned();
    for page in 0.. {
        let a = api.get(&url, Some(token)).await;
        assert_eq!(a.status, 200, "{}", a.text);
        let body = a.json();
        rows.extend(body["items"].as_array().unwrap().iter().cloned());
        match body["next"].as_str() {
            Some(next) => url = format!("{first}&{cursor}={next}"),
            None => break,
        }
        between(page).await;
    }
    rows
}

#[tokio::test]
async fn pages_walk_a_whole_feed_while_new_events_arrive() {
    let api = Api::start().await;
    let acme = api.token("acme").await;
    let mut commands = vec![
        tenant("acme"),
        register("acme", "u1"),
        register("acme", "u2"),
    ];
    // Many activities at the same instant: ties are cut by event id, never lost at a page edge.
    for i in 0..240 {
        let at = format!("2026-01-{:02}T10:00:00Z", 1 + (i % 4));
        commands.push(activity(
            "acme",
            if i % 2 == 0 { "u1" } else { "u2" },
            "login",
            &at,
            json!({"i": i}),
        ));
    }
    api.apply("acme", &acme, commands).await;
    let before: HashSet<String> = sqlx::query_scalar(
        "SELECT event_id::text FROM analytics.activity_feed WHERE tenant = 'acme'",
    )
    .fetch_all(&api.db.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    assert_eq!(before.len(), 240);
    // Between pages, new activities arrive, newer and older than the walk's place.
    let arriving = async |page: usize| {
        for day in ["2026-02-01T00:00:00Z", "2026-01-02T10:00:00Z"] {
            api.publish(activity("acme", "u1", "late", day, json!({"page": page})))
                .await;
        }
    };
    let rows = walk(
        &api,
        &acme,
        "/v1/tenants/acme/activities?limit=17",
        "cursor",
        arriving,
    )
    .await;
    let ids: Vec<String> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap().to_owned())
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no row twice");
    for id in &before {
        assert!(unique.contains(id), "row {id} missed");
    }
    // In order: newest first, ties by event id.
    for pair in rows.windows(2) {
        let key = |r: &Value| {
            (
                r["occurred_at"].as_str().unwrap().to_owned(),
                r["event_id"].as_str().unwrap().to_owned(),
            )
        };
        assert!(key(&pair[0]) > key(&pair[1]), "{pair:?}");
    }
    // A user's feed pages the same way, with `before`.
    let rows = walk(
        &api,
        &acme,
        "/v1/tenants/acme/users/u2/activities?limit=7",
        "before",
        async |_| {},
    )
    .await;
    assert_eq!(rows.len(), 120);
    api.stop().await;
}

#[tokio::test]
async fn rows_come_as_json_lines_when_asked() {
    let api = Api::start().await;
    let acme = api.token("acme").await;
    let mut commands = vec![tenant("acme"), register("acme", "u1")];
    for i in 0..5 {
        commands.push(activity(
            "acme",
            "u1",
            "login",
            &format!("2026-01-0{}T10:00:00Z", i + 1),
            json!({}),
        ));
    }
    api.apply("acme", &acme, commands).await;
    let a = api
        .get_with(
            "/v1/tenants/acme/users/u1/activities?limit=3",
            Some(&acme),
            &[("Accept", "application/x-ndjson")],
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/x-ndjson")
    );
    let lines: Vec<Value> = a
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["occurred_at"], "2026-01-05T10:00:00Z");
    let next = a.header("x-activity-next").expect("the next page's cursor");
    let rest = api
        .get_with(
            &format!("/v1/tenants/acme/users/u1/activities?limit=3&before={next}"),
            Some(&acme),
            &[("Accept", "application/x-ndjson")],
        )
        .await;
    assert_eq!(rest.text.lines().count(), 2);
    assert_eq!(rest.header("x-activity-next"), None);
    api.stop().await;
}

#[tokio::test]
async fn every_error_is_json_naming_the_parameter_and_the_rule() {
    let api = Api::start().await;
    let acme = api.token("acme").await;
    api.apply("acme", &acme, vec![tenant("acme")]).await;
    let long = "x".repeat(9000);
    let cases: Vec<(String, u16, &str, Option<&str>)> = vec![
        (
            "/v1/tenants/acme/activities?cursor=bm9wZQ".into(),
            400,
            "bad_parameter",
            Some("cursor"),
        ),
        (
            "/v1/tenants/acme/users/u1/activities?before=%00".into(),
            400,
            "bad_parameter",
            Some("before"),
        ),
        (
            format!("/v1/tenants/acme/activities?metadata={}", segment("[1,2]")),
            400,
            "bad_parameter",
            Some("metadata"),
        ),
        (
            "/v1/tenants/acme/activities?metadata=%7B".into(),
            400,
            "bad_parameter",
            Some("metadata"),
        ),
        (
            "/v1/tenants/acme/activities?limit=5000".into(),
            400,
            "bad_parameter",
            Some("limit"),
        ),
        (
            "/v1/tenants/acme/activities?limit=0".into(),
            400,
            "bad_parameter",
            Some("limit"),
        ),
        (
            "/v1/tenants/acme/activities?limt=5".into(),
            400,
            "bad_parameter",
            Some("limt"),
        ),
        (
            "/v1/tenants/acme/activities?limit=5&limit=6".into(),
            400,
            "bad_parameter",
            Some("limit"),
        ),
        (
            "/v1/tenants/acme/activities?from=yesterday".into(),
            400,
            "bad_parameter",
            Some("from"),
        ),
        (
            "/v1/tenants/acme/activities?type=Not%20A%20Type".into(),
            400,
            "bad_parameter",
            Some("type"),
        ),
        (
            "/v1/tenants/acme/daily?from=2026-13-01".into(),
            400,
            "bad_parameter",
            Some("from"),
        ),
        (
            "/v1/tenants/acme/daily?min_position=-1".into(),
            400,
            "bad_parameter",
            Some("min_position"),
        ),
        (
            "/v1/tenants/acme/commands/not-a-uuid".into(),
            400,
            "bad_parameter",
            Some("id"),
        ),
        (
            "/v1/tenants/acme/commands/00000000-0000-0000-0000-000000000000?wait_ms=999999".into(),
            400,
            "bad_parameter",
            Some("wait_ms"),
        ),
        (
            format!("/v1/tenants/acme/users/{}/summary", "u".repeat(129)),
            400,
            "bad_parameter",
            Some("user"),
        ),
        (
            "/v1/tenants/acme/users/%FF%FE/summary".into(),
            400,
            "bad_parameter",
            Some("path"),
        ),
        (
            "/v1/tenants/acme/users/nobody/summary".into(),
            404,
            "not_found",
            None,
        ),
        ("/v1/nothing/here".into(), 404, "not_found", None),
        // Tenants no token can hold: odd bytes reach no query, and answer like any other.
        ("/v1/tenants/ac%00me/daily".into(), 404, "not_found", None),
        (
            "/v1/tenants/ACME/users/u1/summary".into(),
            404,
            "not_found",
            None,
        ),
        (
            format!("/v1/tenants/{}/activities", "a".repeat(300)),
            404,
            "not_found",
            None,
        ),
        (
            format!(
                "/v1/tenants/acme/activities?metadata={}",
                segment(r#"{"k":"a\u0000b"}"#)
            ),
            400,
            "bad_parameter",
            Some("metadata"),
        ),
        (
            "/v1/tenants/acme/activities?from=99999-01-01T00:00:00Z".into(),
            400,
            "bad_parameter",
            Some("from"),
        ),
        (
            format!("/v1/tenants/acme/activities?metadata={long}"),
            414,
            "uri_too_long",
            None,
        ),
    ];
    for (path, status, code, parameter) in cases {
        let a = api.get(&path, Some(&acme)).await;
        assert_eq!(a.status, status, "{path}: {}", a.text);
        assert_eq!(
            a.header("content-type").as_deref(),
            Some("application/json"),
            "{path}"
        );
        let error = &a.json()["error"];
        assert_eq!(error["code"], code, "{path}: {}", a.text);
        assert_eq!(error["parameter"].as_str(), parameter, "{path}: {}", a.text);
        assert!(
            error["message"].as_str().unwrap().len() > 10,
            "{path}: {}",
            a.text
        );
    }
    let posted = api
        .http
        .post(format!("{}/v1/tenants/acme/daily", api.base))
        .bearer_auth(&acme)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status().as_u16(), 405);
    assert_eq!(posted.headers()["allow"], "GET, HEAD");
    assert_eq!(posted.headers()["cache-control"], "no-store");
    let body: Value = posted.json_or_null().await;
    assert_eq!(body["error"]["code"], "method_not_allowed");
    api.stop().await;
}

trait JsonOrNull {
    async fn json_or_null(self) -> Value;
}
impl JsonOrNull for reqwest::Response {
    async fn json_or_null(self) -> Value {
        serde_json::from_str(&self.text().await.unwrap()).unwrap_or(Value::Null)
    }
}

#[tokio::test]
async fn a_slow_read_is_cancelled_at_the_statement_timeout() {
    let api =
        Api::with(|c| c.api.as_mut().unwrap().statement_timeout = Duration::from_millis(20)).await;
    let acme = api.token("acme").await;
    // A tenant with many activities, none of the type asked for: the read scans them all.
    sqlx::query(
        "INSERT INTO analytics.activity_feed SELECT 'acme', 'u' || (i % 100), gen_random_uuid(), 'login', \
         now() - i * interval '1 second', jsonb_build_object('pad', repeat('x', 200)), i FROM generate_series(1, 400000) i",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let a = api
        .get(
            "/v1/tenants/acme/activities?type=never&limit=10",
            Some(&acme),
        )
        .await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "query_timeout");
    assert!(
        a.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("20ms"),
        "{}",
        a.text
    );
    // Nothing of it is left running in the API's sessions (the cancelled statement and the
    // rollback that follows settle within moments; an uncancelled scan would still run).
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let running: Vec<String> = sqlx::query_scalar(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'activity-store api %' AND state = 'active' \
             AND pid <> pg_backend_pid()",
        )
        .fetch_all(&api.db.pool)
        .await
        .unwrap();
        if running.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {running:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    api.stop().await;
}

/// A valid value of a documented query parameter.
fn sample(name: &str) -> String {
    let cursor = activity_store::api::Cursor {
        at: chrono::Utc::now(),
        event_id: uuid::Uuid::nil(),
    };
    match name {
        "metadata" => r#"{"k":"v"}"#.into(),
        "type" => "login".into(),
        "from" | "to" => "2026-01-01".into(),
        "limit" => "5".into(),
        "before" | "cursor" => cursor.encode(),
        "min_position" | "wait_ms" => "0".into(),
        "version" => "1".into(),
        other => panic!("no sample for the documented parameter {other}"),
    }
}

#[tokio::test]
async fn the_openapi_document_lists_paths_that_answer_as_documented() {
    let api = Api::start().await;
    let acme = api.token("acme").await;
    let id = api.publish(tenant("acme")).await;
    api.settled("acme", &acme, id).await;
    let served = api.get("/v1/openapi.json", None).await;
    assert_eq!(served.status, 200);
    let doc: Value = serde_json::from_str(activity_store::api::OPENAPI).unwrap();
    assert_eq!(served.json(), doc);
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 8);
    for (path, item) in paths {
        let concrete = path
            .replace("{tenant}", "acme")
            .replace("{user}", "nobody")
            .replace("{type}", "purchase")
            .replace("{id}", &id.to_string());
        let op = &item["get"];
        let a = api.get(&concrete, Some(&acme)).await;
        let documented: Vec<&String> = op["responses"].as_object().unwrap().keys().collect();
        assert!(
            documented.contains(&&a.status.to_string()),
            "{path}: {} not documented ({documented:?})",
            a.status
        );
        if op.get("security").is_none() {
            assert_eq!(
                api.get(&concrete, None).await.status,
                401,
                "{path} needs a token"
            );
        }
        // Every documented parameter, given at once with a valid value, is taken.
        let mut query = Vec::new();
        for p in op["parameters"].as_array().into_iter().flatten() {
            let name = p["name"].as_str().unwrap();
            match p["in"].as_str().unwrap() {
                "path" => assert!(path.contains(&format!("{{{name}}}")), "{path}: {name}"),
                "query" => query.push(format!("{name}={}", segment(&sample(name)))),
                _ => {}
            }
        }
        if !query.is_empty() {
            let a = api
                .get(&format!("{concrete}?{}", query.join("&")), Some(&acme))
                .await;
            assert_ne!(a.status, 400, "{path}: {}", a.text);
        }
    }
    api.stop().await;
}

#[tokio::test]
async fn head_answers_like_get_without_a_body_and_nothing_is_stored_by_caches() {
    let api = Api::start().await;
    let acme = api.token("acme").await;
    api.apply("acme", &acme, vec![tenant("acme")]).await;
    let url = format!("{}/v1/tenants/acme/daily", api.base);
    let head = api.http.head(&url).bearer_auth(&acme).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert!(head.headers().contains_key("x-activity-position"));
    assert_eq!(head.headers()["cache-control"], "no-store");
    assert_eq!(head.headers()["vary"], "Accept, Authorization");
    assert!(head.bytes().await.unwrap().is_empty());
    let unauthorized = api.http.head(&url).send().await.unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    api.stop().await;
}

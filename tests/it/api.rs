//! The HTTP API through a real HTTP client against a running store: every read equals the
//! SQL read, tokens scope every path, read-your-writes by position, command status.

use std::time::{Duration, Instant};

use activity_store::query;
use serde_json::{Value, json};

use crate::api_support::{Api, activity, register, segment, tenant};

/// A token of the right shape that was never made: it reaches the database's check.
const NEVER_ISSUED: &str = "ast_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Two tenants with users (one with an awkward id) and activities; returns the tokens.
async fn seeded(api: &Api) -> (String, String) {
    let (acme, globex) = (api.token("acme").await, api.token("globex").await);
    api.apply(
        "globex",
        &globex,
        vec![tenant("globex"), register("globex", "u1")],
    )
    .await;
    let mut commands = vec![
        tenant("acme"),
        register("acme", "u1"),
        register("acme", "odd/ü %?#\"user"),
        activity(
            "globex",
            "u1",
            "login",
            "2026-01-05T10:00:00Z",
            json!({"ip": "10.0.0.1"}),
        ),
    ];
    for i in 0..30 {
        let user = if i % 3 == 0 { "odd/ü %?#\"user" } else { "u1" };
        let kind = if i % 2 == 0 { "login" } else { "page.view" };
        let at = format!("2026-01-{:02}T10:{:02}:00Z", 1 + i % 7, i);
        commands.push(activity(
            "acme",
            user,
            kind,
            &at,
            json!({"ip": format!("10.0.0.{}", i % 4), "n": i}),
        ));
    }
    api.apply("acme", &acme, commands).await;
    (acme, globex)
}

fn without_position(mut v: Value) -> Value {
    v.as_object_mut().map(|o| o.remove("position"));
    v
}

#[tokio::test]
async fn every_read_answers_what_the_sql_read_answers() {
    let api = Api::start().await;
    let (acme, _) = seeded(&api).await;
    let pool = &api.db.pool;
    for user in ["u1", "odd/ü %?#\"user"] {
        let a = api
            .get(
                &format!("/v1/tenants/acme/users/{}/summary", segment(user)),
                Some(&acme),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let sql = query::user(pool, "acme", user).await.unwrap().unwrap();
        assert_eq!(a.json(), serde_json::to_value(&sql).unwrap());
        assert_eq!(
            a.json()["user_id"],
            user,
            "the id round-trips through the path"
        );

        let a = api
            .get(
                &format!(
                    "/v1/tenants/acme/users/{}/activities?limit=1000",
                    segment(user)
                ),
                Some(&acme),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.text);
        let sql = query::feed(pool, "acme", user, 1000, None).await.unwrap();
        assert!(!sql.is_empty());
        assert_eq!(a.json()["items"], serde_json::to_value(&sql).unwrap());
        assert_eq!(a.json()["next"], Value::Null);
    }
    // A user's feed takes the same filters: `query feed --metadata` from curl.
    let by_ip = json!({"ip": "10.0.0.1"});
    let url = format!(
        "/v1/tenants/acme/users/u1/activities?limit=1000&metadata={}",
        segment(&by_ip.to_string())
    );
    let a = api.get(&url, Some(&acme)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let sql = query::feed(pool, "acme", "u1", 1000, Some(&by_ip))
        .await
        .unwrap();
    assert!(!sql.is_empty());
    assert_eq!(a.json()["items"], serde_json::to_value(&sql).unwrap());
    let filter = json!({"ip": "10.0.0.2"});
    let url = format!(
        "/v1/tenants/acme/activities?metadata={}&type=login&from=2026-01-02&to=2026-01-06T00:00:00Z",
        segment(&filter.to_string())
    );
    let a = api.get(&url, Some(&acme)).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let sql: Vec<query::FeedRow> = sqlx::query_as(
        "SELECT tenant, user_id, event_id, activity_type, occurred_at, metadata FROM analytics.activity_feed \
         WHERE tenant = 'acme' AND metadata @> $1 AND activity_type = 'login' \
         AND occurred_at >= '2026-01-02' AND occurred_at < '2026-01-06' ORDER BY occurred_at DESC, event_id DESC",
    )
    .bind(&filter)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(!sql.is_empty());
    assert_eq!(a.json()["items"], serde_json::to_value(&sql).unwrap());

    let a = api
        .get(
            "/v1/tenants/acme/daily?from=2026-01-02&to=2026-01-05&type=login",
            Some(&acme),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    let days: Vec<query::DailyRow> = query::daily(
        pool,
        "acme",
        "2026-01-02".parse().ok(),
        "2026-01-05".parse().ok(),
    )
    .await
    .unwrap()
    .into_iter()
    .filter(|d| d.activity_type == "login")
    .collect();
    assert!(!days.is_empty());
    assert_eq!(a.json()["items"], serde_json::to_value(&days).unwrap());
    // Every answer says which position of acme's log it reflects: here, all that was applied.
    let applied: i64 =
        sqlx::query_scalar("SELECT max(tenant_position) FROM events WHERE tenant = 'acme'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(a.position(), applied);
    api.stop().await;
}

#[tokio::test]
async fn tokens_scope_every_path_and_another_tenant_is_not_found() {
    let api = Api::start().await;
    let (acme, globex) = seeded(&api).await;
    let id = uuid::Uuid::new_v4();
    let paths = [
        "/v1/tenants/acme/users/u1/summary".to_owned(),
        "/v1/tenants/acme/users/u1/activities".to_owned(),
        "/v1/tenants/acme/activities".to_owned(),
        "/v1/tenants/acme/daily".to_owned(),
        format!("/v1/tenants/acme/commands/{id}"),
    ];
    let revoked = api.token("acme").await;
    sqlx::query(
        "UPDATE api_tokens SET revoked_at = now() WHERE hash = sha256(sha256(convert_to($1, 'UTF8')))",
    )
    .bind(&revoked)
    .execute(&api.db.pool)
    .await
    .unwrap();
    for path in &paths {
        for token in [
            None,
            Some("ast_not_a_token"),
            Some(NEVER_ISSUED),
            Some(revoked.as_str()),
        ] {
            let a = api.get(path, token).await;
            assert_eq!(a.status, 401, "{path} {token:?}: {}", a.text);
            assert_eq!(a.json()["error"]["code"], "unauthorized");
            assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
        }
        let other = api.get(path, Some(&globex)).await;
        assert_eq!(other.status, 404, "{path}: {}", other.text);
        // Exactly what a tenant that does not exist answers: nothing tells them apart.
        let nowhere = api
            .get(&path.replace("/acme/", "/nowhere/"), Some(&globex))
            .await;
        assert_eq!(
            other.text.replace("acme", "T"),
            nowhere.text.replace("nowhere", "T"),
            "{path}"
        );
        assert_eq!(api.get(path, Some(&acme)).await.status, 200, "{path}");
    }
    // The token is checked before any parameter: a client without a valid one learns
    // nothing of the rules.
    for bad in [
        "/v1/tenants/acme/activities?limit=0",
        "/v1/tenants/acme/commands/nope",
    ] {
        assert_eq!(api.get(bad, Some(&revoked)).await.status, 401, "{bad}");
        assert_eq!(api.get(bad, Some(&acme)).await.status, 400, "{bad}");
    }
    // The token is a header, never a parameter (it would end in access logs).
    let a = api
        .get(&format!("/v1/tenants/acme/daily?token={acme}"), None)
        .await;
    assert_eq!(a.status, 401);
    api.stop().await;
}

#[tokio::test]
async fn the_cache_serves_a_summary_only_to_its_tenant_and_only_current() {
    let api = Api::start().await;
    let (acme, globex) = seeded(&api).await;
    let path = "/v1/tenants/acme/users/u1/summary";
    let first = api.get(path, Some(&acme)).await;
    assert_eq!(first.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let cached = loop {
        let a = api.get(path, Some(&acme)).await;
        if a.header("x-activity-source").as_deref() == Some("cache") {
            break a;
        }
        assert!(Instant::now() < deadline, "never served from the cache");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        without_position(cached.json()),
        without_position(first.json())
    );
    assert_eq!(api.get(path, Some(&globex)).await.status, 404);
    // An entry of another epoch (read from tables a rebuild has since replaced) is not served.
    sqlx::query(
        "UPDATE projection_checkpoints SET epoch = epoch + 1 WHERE projection = 'user_summary'",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let after = api.get(path, Some(&acme)).await;
    assert_eq!(after.header("x-activity-source").as_deref(), Some("table"));
    // Asking for a position past the entry's reads the table once the projection is there.
    let position = api
        .apply(
            "acme",
            &acme,
            vec![activity(
                "acme",
                "u1",
                "login",
                "2026-01-09T10:00:00Z",
                json!({}),
            )],
        )
        .await;
    let a = api
        .get(&format!("{path}?min_position={position}"), Some(&acme))
        .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert!(a.position() >= position);
    assert_eq!(a.json()["last_seen"], "2026-01-09T10:00:00Z");
    api.stop().await;
}

#[tokio::test]
async fn a_read_waits_for_its_position_and_gives_up_with_retry_after() {
    let api = Api::start().await;
    let (acme, _) = seeded(&api).await;
    let now = api
        .get("/v1/tenants/acme/users/u1/activities?limit=1", Some(&acme))
        .await
        .position();
    let path = format!(
        "/v1/tenants/acme/users/u1/activities?limit=1&min_position={}",
        now + 1
    );
    let waiting = {
        let (http, url, token) = (
            api.http.clone(),
            format!("{}{path}", api.base),
            acme.clone(),
        );
        tokio::spawn(async move {
            let started = Instant::now();
            let r = http.get(url).bearer_auth(token).send().await.unwrap();
            (
                started.elapsed(),
                r.status().as_u16(),
                r.headers().clone(),
                r.text().await.unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.publish(activity(
        "acme",
        "u1",
        "purchase",
        "2026-01-31T10:00:00Z",
        json!({}),
    ))
    .await;
    let (waited, status, headers, body) = waiting.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    let position: i64 = headers["x-activity-position"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(position > now);
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        page["items"][0]["activity_type"], "purchase",
        "the read sees the write"
    );

    // A position never reached: 503 after the server's max wait (2 s here), Retry-After.
    let started = Instant::now();
    let a = api
        .get_with(
            "/v1/tenants/acme/daily",
            Some(&acme),
            &[("X-Activity-Min-Position", "999999999")],
        )
        .await;
    assert_eq!(a.status, 503, "{}", a.text);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.json()["error"]["code"], "position_not_reached");
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    // An unauthenticated request never waits.
    let started = Instant::now();
    let a = api
        .get(
            "/v1/tenants/acme/daily?min_position=999999999",
            Some(NEVER_ISSUED),
        )
        .await;
    assert_eq!(a.status, 401);
    assert!(started.elapsed() < Duration::from_secs(1));
    api.stop().await;
}

#[tokio::test]
async fn a_producer_learns_the_fate_of_each_command_it_sent() {
    let api = Api::start().await;
    let (acme, globex) = seeded(&api).await;
    let client = async_nats::connect(crate::support::nats_url())
        .await
        .unwrap();
    let mut refusals = client
        .subscribe(format!("{}.rejections.acme", api.prefix))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let good = api
        .publish(activity(
            "acme",
            "u1",
            "login",
            "2026-01-08T10:00:00Z",
            json!({}),
        ))
        .await;
    let unknown_user = api
        .publish(activity(
            "acme",
            "ghost",
            "login",
            "2026-01-08T10:00:00Z",
            json!({}),
        ))
        .await;
    let bad_field = api
        .publish(activity(
            "acme",
            "u1",
            "NOT OK",
            "2026-01-08T10:00:00Z",
            json!({"secret": "s3cr3t"}),
        ))
        .await;

    let applied = api.settled("acme", &acme, good).await;
    assert_eq!(applied["status"], "applied");
    let (position, event_id): (i64, uuid::Uuid) =
        sqlx::query_as("SELECT tenant_position, event_id FROM events WHERE command_id = $1")
            .bind(good)
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(applied["position"], position);
    assert_eq!(applied["event_id"], event_id.to_string());
    assert_eq!(applied["event_type"], "activity_recorded");
    let a = api
        .get(&format!("/v1/tenants/acme/commands/{good}"), Some(&acme))
        .await;
    assert_eq!(
        a.position(),
        position,
        "the position to read one's write at"
    );

    let refused = api.settled("acme", &acme, unknown_user).await;
    assert_eq!(
        (refused["status"].as_str(), refused["reason"].as_str()),
        (Some("refused"), Some("unknown_user"))
    );
    assert_eq!(refused["field"], "user");
    assert!(
        refused["message"].as_str().unwrap().contains("ghost"),
        "{refused}"
    );
    let refused = api.settled("acme", &acme, bad_field).await;
    assert_eq!(
        (refused["reason"].as_str(), refused["field"].as_str()),
        (Some("invalid_field"), Some("activity_type"))
    );

    let never = uuid::Uuid::new_v4();
    let started = Instant::now();
    let a = api
        .get(
            &format!("/v1/tenants/acme/commands/{never}?wait_ms=500"),
            Some(&acme),
        )
        .await;
    assert_eq!(a.json()["status"], "unknown");
    assert!(started.elapsed() >= Duration::from_millis(450));
    assert_eq!(a.header("x-activity-position"), None);
    // Another tenant's token learns nothing of acme's commands.
    assert_eq!(
        api.get(&format!("/v1/tenants/acme/commands/{good}"), Some(&globex))
            .await
            .status,
        404
    );
    let theirs = api
        .get(
            &format!("/v1/tenants/globex/commands/{good}"),
            Some(&globex),
        )
        .await;
    assert_eq!(theirs.json()["status"], "unknown", "{}", theirs.text);

    // Each refusal, published for its producer: reason, field, message, id; never the bytes.
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut refusals),
        )
        .await
        .expect("refusals are published")
        .unwrap();
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        assert!(!text.contains("s3cr3t"), "never the raw bytes: {text}");
        seen.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    assert_eq!(seen[0]["command_id"], unknown_user.to_string());
    assert_eq!(seen[0]["reason"], "unknown_user");
    assert_eq!(seen[1]["command_id"], bad_field.to_string());
    assert_eq!(
        (seen[1]["reason"].as_str(), seen[1]["field"].as_str()),
        (Some("invalid_field"), Some("activity_type"))
    );
    assert!(
        seen[1]["message"]
            .as_str()
            .unwrap()
            .contains("activity_type")
    );
    api.stop().await;
}

//! Schemas for operators (`schemas put | list | show`) and for tenants (the HTTP API, each
//! token only its own tenant's).

use std::process::Output;

use serde_json::json;

use crate::api_support::Api;
use crate::contracts::{amount_is_a_number, purchase, registration, side_with_users};
use crate::support::TestDb;

fn cli(db: &TestDb, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_activity-store"))
        .arg("schemas")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn file(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(crate::support::unique_name("schemas"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test]
async fn an_operator_puts_lists_and_shows_schemas_and_is_told_what_existing_events_break() {
    let side = side_with_users().await;
    side.apply(&[
        purchase("acme", "ann", json!({"amount": 3})),
        purchase("acme", "ann", json!({"amount": "3"})),
    ])
    .await;
    let schema = file("purchase.json", &amount_is_a_number().to_string());
    let path = schema.to_str().unwrap();

    let refused = cli(
        &side.db,
        &["put", "--tenant", "acme", "--type", "purchase", path],
    );
    assert!(!refused.status.success(), "{}", text(&refused));
    for part in [
        "1 of 2 existing",
        "--force",
        "`/amount`",
        "/properties/amount/type",
    ] {
        assert!(text(&refused).contains(part), "{part}: {}", text(&refused));
    }
    let listed = cli(&side.db, &["list"]);
    assert!(listed.status.success());
    assert!(text(&listed).contains("no schemas"), "{}", text(&listed));

    let forced = cli(
        &side.db,
        &[
            "put", "--tenant", "acme", "--type", "purchase", path, "--force",
        ],
    );
    assert!(forced.status.success(), "{}", text(&forced));
    assert!(
        text(&forced).contains("registered version 1 of acme's purchase schema: 2 existing events checked in 1 batches, 1 break it"),
        "{}",
        text(&forced)
    );
    let listed = cli(&side.db, &["list", "--tenant", "acme"]);
    assert!(
        text(&listed).contains("acme purchase version 1"),
        "{}",
        text(&listed)
    );
    let shown = cli(
        &side.db,
        &["show", "--tenant", "acme", "--type", "purchase"],
    );
    assert!(shown.status.success(), "{}", text(&shown));
    assert!(
        text(&shown).contains("forced over 1 existing"),
        "{}",
        text(&shown)
    );
    let body: String = text(&shown).lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        amount_is_a_number()
    );

    for (args, expect) in [
        (
            vec!["show", "--tenant", "acme", "--type", "login"],
            "no schema",
        ),
        (
            vec![
                "show",
                "--tenant",
                "acme",
                "--type",
                "purchase",
                "--version",
                "7",
            ],
            "no schema version 7",
        ),
    ] {
        let o = cli(&side.db, &args);
        assert!(!o.status.success(), "{args:?}");
        assert!(text(&o).contains(expect), "{args:?}: {}", text(&o));
    }
    // Files that are no schema: not JSON; far past any schema (refused before read whole).
    for (name, body, expect) in [
        ("bad.json", "{\"type\": ".to_owned(), "is not JSON"),
        ("huge.json", " ".repeat(300 * 1024), "at most 64 KiB"),
    ] {
        let path = file(name, &body);
        let path = path.to_str().unwrap();
        let o = cli(
            &side.db,
            &["put", "--tenant", "acme", "--type", "purchase", path],
        );
        assert!(!o.status.success(), "{name}");
        assert!(text(&o).contains(expect), "{name}: {}", text(&o));
    }
}

#[tokio::test]
async fn a_tenant_reads_its_own_schemas_through_the_api_and_no_one_elses() {
    let api = Api::start().await;
    for t in ["acme", "beta"] {
        let token = api.token(t).await;
        let id = api.publish(crate::api_support::tenant(t)).await;
        api.settled(t, &token, id).await;
        activity_store::contracts::put(&api.db.pool, &registration(t, amount_is_a_number()))
            .await
            .unwrap();
    }
    let acme = api.token("acme").await;
    let listed = api.get("/v1/tenants/acme/schemas", Some(&acme)).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let items = listed.json()["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(
        (
            items[0]["tenant"].as_str(),
            items[0]["activity_type"].as_str(),
            items[0]["version"].as_i64()
        ),
        (Some("acme"), Some("purchase"), Some(1))
    );
    let shown = api
        .get("/v1/tenants/acme/schemas/purchase", Some(&acme))
        .await;
    assert_eq!(shown.status, 200, "{}", shown.text);
    assert_eq!(shown.json()["schema"], amount_is_a_number());
    assert!(
        shown.json().get("created_by").is_none(),
        "the operator's login is not a tenant's"
    );

    for path in [
        "/v1/tenants/beta/schemas",
        "/v1/tenants/beta/schemas/purchase",
        "/v1/tenants/acme/schemas/login",
        "/v1/tenants/acme/schemas/purchase?version=2",
    ] {
        let a = api.get(path, Some(&acme)).await;
        assert_eq!(a.status, 404, "{path}: {}", a.text);
        assert!(
            !a.text.contains("amount"),
            "{path} leaked a schema: {}",
            a.text
        );
    }
    for bad in [
        "purchase?version=0",
        "purchase?version=x",
        "purchase?limit=3",
        // Odd bytes in the type are a 400 naming it, never a database error.
        "pur%00chase",
        "%FF",
        "Purchase",
    ] {
        let a = api
            .get(&format!("/v1/tenants/acme/schemas/{bad}"), Some(&acme))
            .await;
        assert_eq!(a.status, 400, "{bad}: {}", a.text);
    }
    assert_eq!(api.get("/v1/tenants/acme/schemas", None).await.status, 401);
    api.stop().await;
}

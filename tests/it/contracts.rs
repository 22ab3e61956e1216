//! Per-tenant activity schemas (data contracts): a JSON Schema for a tenant's activity type's
//! metadata, versioned and immutable; ingest refuses a command that breaks the current one as
//! `schema_violation`, naming the JSON pointer and the rule; registering a new version counts,
//! in batches over the log, the existing events it would refuse, and is refused for them
//! unless forced.

use activity_store::contracts::{self, ContractError, Registration};
use serde_json::{Value, json};

use crate::fixtures::{login_in, sqlstate};
use crate::ingest_support::{create_tenant, register};
use crate::project_support::ReadSide;

pub fn purchase(tenant: &str, user: &str, metadata: Value) -> Value {
    json!({"type": "record_activity", "tenant": tenant, "user": user,
        "activity_type": "purchase", "occurred_at": "2025-01-20 14:45:00", "metadata": metadata})
}

pub fn amount_is_a_number() -> Value {
    json!({"type": "object", "required": ["amount"],
        "properties": {"amount": {"type": "number", "minimum": 0}}})
}

pub async fn side_with_users() -> ReadSide {
    let side = ReadSide::new().await;
    side.apply(&[
        create_tenant("acme"),
        register("acme", "ann"),
        create_tenant("beta"),
        register("beta", "bob"),
    ])
    .await;
    side
}

pub fn registration<'a>(tenant: &'a str, schema: Value) -> Registration<'a> {
    Registration {
        tenant,
        activity_type: "purchase",
        schema,
        force: false,
        batch_rows: contracts::SCAN_BATCH_ROWS,
    }
}

async fn dead_letters(side: &ReadSide) -> Vec<(String, Option<String>, String)> {
    sqlx::query_as("SELECT reason, field, message FROM dead_letters ORDER BY id")
        .fetch_all(&side.db.pool)
        .await
        .unwrap()
}

async fn amounts(side: &ReadSide) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT data->'amount' FROM events WHERE activity_type = 'purchase' ORDER BY position",
    )
    .fetch_all(&side.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_command_breaking_its_tenants_schema_is_refused_naming_pointer_and_rule() {
    let side = side_with_users().await;
    let put = contracts::put(&side.db.pool, &registration("acme", amount_is_a_number()))
        .await
        .unwrap();
    assert_eq!((put.version, put.violations), (1, 0));

    side.apply(&[
        purchase("acme", "ann", json!({"amount": 12.5})),
        purchase("acme", "ann", json!({"amount": "12"})),
        purchase("acme", "ann", json!({})),
        // Another tenant's purchases and another of acme's types are not bound by it.
        purchase("beta", "bob", json!({"amount": "12"})),
        json!({"type": "record_activity", "tenant": "acme", "user": "ann",
            "activity_type": "login", "metadata": {"amount": "12"}}),
    ])
    .await;
    assert_eq!(amounts(&side).await, [json!(12.5), json!("12")]);
    let letters = dead_letters(&side).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    for (reason, field, _) in &letters {
        assert_eq!(
            (reason.as_str(), field.as_deref()),
            ("schema_violation", Some("metadata"))
        );
    }
    let (wrong_type, missing) = (&letters[0].2, &letters[1].2);
    for part in [
        "`/amount`",
        "/properties/amount/type",
        "version 1",
        "`purchase`",
        "number",
    ] {
        assert!(
            wrong_type.contains(part),
            "{part} missing from {wrong_type}"
        );
    }
    for part in ["/required", "amount"] {
        assert!(missing.contains(part), "{part} missing from {missing}");
    }
}

/// Redrives every unresolved `schema_violation`; whether each was accepted.
async fn redrive(side: &ReadSide) -> Vec<bool> {
    use activity_store::ingest::redrive::{self, Selection, Verdict};
    let selection = Selection {
        reason: Some("schema_violation".into()),
        ..Selection::default()
    };
    let letters = redrive::unresolved(&side.db.pool, &selection)
        .await
        .unwrap();
    let window = activity_store::model::TimeWindow::default();
    let verdicts = redrive::redrive(&side.log, &letters, &window, false)
        .await
        .unwrap();
    verdicts.iter().map(|v| *v == Verdict::Accepted).collect()
}

#[tokio::test]
async fn a_refused_command_is_redriven_after_the_schema_is_fixed() {
    let side = side_with_users().await;
    contracts::put(&side.db.pool, &registration("acme", amount_is_a_number()))
        .await
        .unwrap();
    side.apply(&[purchase("acme", "ann", json!({"amount": "12"}))])
        .await;
    assert_eq!(dead_letters(&side).await.len(), 1);

    // Still refused while the schema stands.
    assert_eq!(redrive(&side).await, [false]);

    let fixed = json!({"type": "object", "required": ["amount"],
        "properties": {"amount": {"type": ["number", "string"]}}});
    let put = contracts::put(&side.db.pool, &registration("acme", fixed))
        .await
        .unwrap();
    assert_eq!(put.version, 2);
    assert_eq!(redrive(&side).await, [true]);
    assert_eq!(amounts(&side).await, [json!("12")]);
}

#[tokio::test]
async fn registering_counts_existing_violations_in_batches_and_is_refused_unless_forced() {
    let side = side_with_users().await;
    let mut commands: Vec<Value> = (0..10)
        .map(|i| purchase("acme", "ann", json!({"amount": i})))
        .collect();
    commands.push(purchase("acme", "ann", json!({"amount": "three"})));
    commands.push(purchase("acme", "ann", json!({"amount": -1})));
    commands.push(purchase("beta", "bob", json!({"amount": "not acme's"})));
    side.apply(&commands).await;

    let mut small = registration("acme", amount_is_a_number());
    small.batch_rows = 3;
    let refused = contracts::put(&side.db.pool, &small).await.unwrap_err();
    match &refused {
        ContractError::Broken(report) => {
            assert_eq!((report.checked, report.violations), (12, 2));
            assert_eq!(report.batches, 4, "12 events in batches of 3");
            assert_eq!(report.samples.len(), 2);
            assert!(report.samples[0].message.contains("/amount"), "{report:?}");
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    assert!(refused.to_string().contains("2 of 12"), "{refused}");
    assert!(
        contracts::list(&side.db.pool, Some("acme"))
            .await
            .unwrap()
            .is_empty(),
        "a refused registration stores nothing"
    );

    small.force = true;
    let forced = contracts::put(&side.db.pool, &small).await.unwrap();
    assert_eq!(
        (forced.version, forced.checked, forced.violations),
        (1, 12, 2)
    );
    let shown = contracts::show(&side.db.pool, "acme", "purchase", None)
        .await
        .unwrap();
    assert_eq!(shown.schema, amount_is_a_number());
    assert_eq!(
        (shown.version, shown.violations, shown.forced),
        (1, 2, true)
    );
}

#[tokio::test]
async fn a_schema_that_does_not_compile_reaches_outside_or_names_no_tenant_is_refused() {
    let side = side_with_users().await;
    let pool = &side.db.pool;
    for (schema, expect) in [
        (json!({"type": "nonsense"}), "not a valid JSON Schema"),
        (
            json!({"$ref": "http://example.com/schema.json"}),
            "not a valid JSON Schema",
        ),
        (
            json!({"type": "object", "properties": {"a": {"pattern": "("}}}),
            "not a valid JSON Schema",
        ),
        (
            json!({"$ref": "file:///etc/passwd"}),
            "not a valid JSON Schema",
        ),
        // Patterns run in linear time: what could backtrack (a back-reference, look-ahead)
        // is refused when registered, so no producer's string can stall ingest.
        (
            json!({"properties": {"a": {"pattern": "(a)\\1"}}}),
            "not a valid JSON Schema",
        ),
        (
            json!({"properties": {"a": {"pattern": "^(?=a)"}}}),
            "not a valid JSON Schema",
        ),
        (
            json!({"patternProperties": {"(x)\\1": {}}}),
            "not a valid JSON Schema",
        ),
        (json!([1, 2]), "must be a JSON object"),
    ] {
        let e = contracts::put(pool, &registration("acme", schema.clone()))
            .await
            .unwrap_err();
        assert!(
            matches!(e, ContractError::InvalidSchema(_)),
            "{schema}: {e:?}"
        );
        assert!(e.to_string().contains(expect), "{schema}: {e}");
    }
    let huge = json!({"description": "x".repeat(70_000)});
    let e = contracts::put(pool, &registration("acme", huge))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("64 KiB"), "{e}");
    let e = contracts::put(pool, &registration("nobody", amount_is_a_number()))
        .await
        .unwrap_err();
    assert!(matches!(e, ContractError::UnknownTenant(_)), "{e:?}");
    let mut bad_type = registration("acme", amount_is_a_number());
    bad_type.activity_type = "Purchase!";
    let e = contracts::put(pool, &bad_type).await.unwrap_err();
    assert!(e.to_string().contains("activity_type"), "{e}");
    assert!(contracts::list(pool, None).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_schema_version_is_immutable_and_its_table_keeps_its_rules() {
    let side = side_with_users().await;
    let pool = &side.db.pool;
    contracts::put(pool, &registration("acme", amount_is_a_number()))
        .await
        .unwrap();
    let r = sqlx::query("UPDATE activity_schemas SET schema = '{}'")
        .execute(pool)
        .await;
    assert_eq!(sqlstate(r), "P0001", "a version's schema never changes");
    let insert = |tenant: &'static str, version: i32, schema: &'static str| {
        sqlx::query(
            "INSERT INTO activity_schemas (tenant, activity_type, version, schema) \
             VALUES ($1, 'purchase', $2, $3::jsonb)",
        )
        .bind(tenant)
        .bind(version)
        .bind(schema)
    };
    assert_eq!(
        sqlstate(insert("nobody", 1, "{}").execute(pool).await),
        "23503"
    );
    assert_eq!(
        sqlstate(insert("acme", 1, "{}").execute(pool).await),
        "23505"
    );
    assert_eq!(
        sqlstate(insert("acme", 0, "{}").execute(pool).await),
        "23514"
    );
    assert_eq!(
        sqlstate(insert("acme", 2, "[1]").execute(pool).await),
        "23514"
    );
    assert_eq!(
        sqlstate(
            sqlx::query("INSERT INTO dead_letters (reason, message, raw, raw_length, raw_sha256, received_at) \
                 VALUES ('schema_violations', 'm', '\\x00', 1, sha256('\\x00'), now())")
                .execute(pool)
                .await
        ),
        "23514"
    );
}

#[tokio::test]
async fn a_reader_sees_only_its_own_tenants_schemas() {
    let side = side_with_users().await;
    let pool = &side.db.pool;
    for tenant in ["acme", "beta"] {
        contracts::put(pool, &registration(tenant, amount_is_a_number()))
            .await
            .unwrap();
    }
    let (login, reader) = login_in(&side.db, "activity_reader").await;
    sqlx::query("INSERT INTO reader_tenants (login, tenant) VALUES ($1, 'acme')")
        .bind(&login)
        .execute(pool)
        .await
        .unwrap();
    let seen = |tenant: &'static str| {
        let reader = reader.clone();
        async move {
            let mut tx = reader.begin().await.unwrap();
            sqlx::query("SELECT set_config('activity.tenant', $1, true)")
                .bind(tenant)
                .execute(&mut *tx)
                .await
                .unwrap();
            let rows: Vec<String> = sqlx::query_scalar("SELECT tenant FROM activity_schemas")
                .fetch_all(&mut *tx)
                .await
                .unwrap();
            rows
        }
    };
    assert_eq!(seen("acme").await, ["acme"]);
    assert!(seen("beta").await.is_empty(), "not bound to beta");
    let write = sqlx::query("DELETE FROM activity_schemas")
        .execute(&reader)
        .await;
    assert_eq!(sqlstate(write), "42501");
}

//! Every migration is reversible: up → down → up leaves the schema exactly as it was.

use activity_store::log::migrate;
use sqlx::PgPool;

use crate::support::TestDb;

/// Everything a migration can create, as sorted text lines.
async fn schema_of(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        r#"
        SELECT x FROM (
          SELECT format('relation %s.%s kind=%s part=%s', n.nspname, c.relname, c.relkind,
                        coalesce(pg_get_partkeydef(c.oid), '-'))
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
             AND c.relname NOT LIKE '_sqlx_migrations%'
          UNION ALL
          SELECT format('column %s.%s.%s %s null=%s default=%s', table_schema, table_name, column_name,
                        data_type, is_nullable, coalesce(column_default, '-'))
            FROM information_schema.columns
           WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_name <> '_sqlx_migrations'
          UNION ALL
          SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
            FROM pg_constraint WHERE connamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
             AND conrelid::regclass::text <> '_sqlx_migrations'
          UNION ALL
          SELECT format('index %s', indexdef) FROM pg_indexes
           WHERE schemaname NOT IN ('pg_catalog') AND tablename <> '_sqlx_migrations'
          UNION ALL
          SELECT format('trigger %s', pg_get_triggerdef(oid)) FROM pg_trigger WHERE NOT tgisinternal
          UNION ALL
          SELECT format('function %s.%s(%s) %s definer=%s', n.nspname, p.proname,
                        pg_get_function_identity_arguments(p.oid), md5(p.prosrc), p.prosecdef)
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
          UNION ALL
          SELECT format('grant %s %s.%s %s', grantee, table_schema, table_name, privilege_type)
            FROM information_schema.role_table_grants WHERE grantee LIKE 'activity\_%'
          UNION ALL
          SELECT format('policy %s.%s %s %s', schemaname, tablename, policyname, qual) FROM pg_policies
          UNION ALL
          SELECT format('rls %s force=%s', oid::regclass, relforcerowsecurity) FROM pg_class WHERE relrowsecurity
          UNION ALL
          SELECT format('schema %s', nspname) FROM pg_namespace
           WHERE nspname NOT LIKE 'pg\_%' AND nspname NOT IN ('information_schema', 'public')
        ) s(x) ORDER BY x
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("read the catalog")
}

#[tokio::test]
async fn every_migration_round_trips_to_an_identical_schema() {
    let db = TestDb::empty().await;
    let bare = schema_of(&db.pool).await;
    migrate::up(&db.pool).await.unwrap();
    let full = schema_of(&db.pool).await;
    for must in [
        "relation public.events kind=p part=RANGE (occurred_at)",
        "relation public.command_ledger kind=r",
        "relation public.dead_letters kind=r",
        "relation public.tenants kind=r",
        "relation public.users kind=r",
        "relation public.projection_checkpoints kind=r",
    ] {
        assert!(
            full.iter().any(|l| l.starts_with(must)),
            "missing `{must}` in\n{full:#?}"
        );
    }
    let count = migrate::status(&db.pool).await.unwrap().len();
    assert!(count >= 4);
    for steps in 1..=count {
        let reverted = migrate::down(&db.pool, steps).await.unwrap();
        assert_eq!(reverted.len(), steps);
        migrate::up(&db.pool).await.unwrap();
        assert_eq!(
            schema_of(&db.pool).await,
            full,
            "after reverting {steps} and reapplying"
        );
    }
    migrate::down(&db.pool, count).await.unwrap();
    assert_eq!(
        schema_of(&db.pool).await,
        bare,
        "down all the way leaves nothing behind"
    );
    migrate::up(&db.pool).await.unwrap();
    assert_eq!(schema_of(&db.pool).await, full);
}

#[tokio::test]
async fn status_tells_applied_from_pending() {
    let db = TestDb::empty().await;
    let before = migrate::status(&db.pool).await.unwrap();
    assert!(before.iter().all(|m| !m.applied));
    migrate::up(&db.pool).await.unwrap();
    migrate::down(&db.pool, 1).await.unwrap();
    let after = migrate::status(&db.pool).await.unwrap();
    let pending: Vec<bool> = after.iter().map(|m| m.applied).collect();
    assert_eq!(pending.last(), Some(&false));
    assert!(pending[..pending.len() - 1].iter().all(|a| *a));
    assert_eq!(
        after.iter().map(|m| m.version).collect::<Vec<_>>(),
        before.iter().map(|m| m.version).collect::<Vec<_>>()
    );
}

/// A migration refused by its own guard must not keep the migrator's lock: the operator fixes
/// the cause and runs it again from the same process (a long-running one, or a test) without
/// it waiting for ever on the lock the refused run left on a pooled session.
#[tokio::test]
async fn a_refused_down_leaves_the_next_migration_free_to_run() {
    let db = TestDb::migrated().await;
    sqlx::query(
        "INSERT INTO dead_letters (reason, message, raw, raw_length, raw_sha256, received_at) \
         VALUES ('unsupported_version', 'm', '\\x00', 1, sha256('\\x00'), now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let refused = crate::fixtures::down_to_before(&db.pool, 29)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("unsupported_version"),
        "{refused}"
    );
    sqlx::query("DELETE FROM dead_letters")
        .execute(&db.pool)
        .await
        .unwrap();
    let again = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        crate::fixtures::down_to_before(&db.pool, 29).await.unwrap();
        migrate::up(&db.pool).await.unwrap();
    })
    .await;
    assert!(
        again.is_ok(),
        "the second migration waited on the refused one's lock"
    );
}

//! The ingestor's compiled schemas: each version compiled once per process (a version never
//! changes); which version is current is read with the batch's view (`ingest_view`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;
use sqlx::PgConnection;

use super::Contract;
use crate::db::{DbError, db};

type Key = (String, String);

/// Compiled schema versions, kept across batches (a version never changes).
#[derive(Default)]
pub struct Cache {
    compiled: Mutex<HashMap<Key, Arc<Contract>>>,
}

impl Cache {
    /// The compiled contract of each (tenant, activity type, current version) in `current`,
    /// as `ingest_view` read them in the caller's transaction; versions not compiled yet
    /// are read and compiled first.
    pub async fn compiled(
        &self,
        conn: &mut PgConnection,
        current: Vec<(String, String, i32)>,
    ) -> Result<HashMap<Key, Arc<Contract>>, DbError> {
        if current.is_empty() {
            return Ok(HashMap::new());
        }
        let missing: Vec<&(String, String, i32)> = {
            let compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
            current
                .iter()
                .filter(|(t, a, v)| {
                    compiled
                        .get(&(t.clone(), a.clone()))
                        .is_none_or(|c| c.version != *v)
                })
                .collect()
        };
        if !missing.is_empty() {
            let fetched = fetch(conn, &missing).await?;
            let mut compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
            for (tenant, activity_type, version, schema) in fetched {
                let contract = Contract::new(activity_type.clone(), version, &schema);
                compiled.insert((tenant, activity_type), Arc::new(contract));
            }
        }
        let compiled = self.compiled.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(current
            .into_iter()
            .filter_map(|(t, a, v)| {
                let key = (t, a);
                let c = compiled.get(&key).filter(|c| c.version == v)?;
                Some((key, Arc::clone(c)))
            })
            .collect())
    }
}

async fn fetch(
    conn: &mut PgConnection,
    wanted: &[&(String, String, i32)],
) -> Result<Vec<(String, String, i32, Value)>, DbError> {
    let tenants: Vec<&str> = wanted.iter().map(|w| w.0.as_str()).collect();
    let types: Vec<&str> = wanted.iter().map(|w| w.1.as_str()).collect();
    let versions: Vec<i32> = wanted.iter().map(|w| w.2).collect();
    db(
        sqlx::query_as(
            "SELECT s.tenant, s.activity_type, s.version, s.schema FROM activity_schemas s \
             JOIN unnest($1::text[], $2::text[], $3::int[]) AS q (tenant, activity_type, version) \
               USING (tenant, activity_type, version)",
        )
        .bind(&tenants)
        .bind(&types)
        .bind(&versions)
        .fetch_all(conn)
        .await,
        "read the schemas a batch is held to",
    )
}

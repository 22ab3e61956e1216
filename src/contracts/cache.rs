//! The ingestor's view of the schemas: which version is current for each (tenant, activity
//! type) a batch names, read in the batch's transaction, and each version compiled once.

use std::collections::{BTreeSet, HashMap};
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
    /// The current contract of each of `pairs` (tenant, activity type) that has one, read
    /// in the caller's transaction: a batch decided after `schemas put` commits is held to
    /// the new version.
    pub async fn current(
        &self,
        conn: &mut PgConnection,
        pairs: BTreeSet<(&str, &str)>,
    ) -> Result<HashMap<Key, Arc<Contract>>, DbError> {
        if pairs.is_empty() {
            return Ok(HashMap::new());
        }
        let (tenants, types): (Vec<&str>, Vec<&str>) = pairs.into_iter().unzip();
        let current: Vec<(String, String, i32)> = db(
            sqlx::query_as(
                "SELECT DISTINCT ON (s.tenant, s.activity_type) s.tenant, s.activity_type, s.version \
                 FROM activity_schemas s \
                 JOIN unnest($1::text[], $2::text[]) AS q (tenant, activity_type) \
                   USING (tenant, activity_type) \
                 ORDER BY s.tenant, s.activity_type, s.version DESC",
            )
            .bind(&tenants)
            .bind(&types)
            .fetch_all(&mut *conn)
            .await,
            "read the schemas a batch is held to",
        )?;
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

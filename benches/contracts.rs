//! What per-tenant activity schemas cost ingest, in one run on a real PostgreSQL: the same
//! N commands (default 120,000 over 4 tenants and 3 activity types, ~260 bytes of metadata)
//! decided and committed by the ingest path (`commit_batch`, 1,000 messages a batch, as a
//! lead commits them), once with no schema and once with a schema on every (tenant, type),
//! alternating over five rounds, each run on a freshly migrated database. NATS is left out on
//! purpose: the pull and ack cost the same either way, so leaving them in would only shrink
//! the ratio.
//!
//! `cargo bench --bench contracts` or `cargo bench --bench contracts -- 50000`.

#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::time::Instant;

use activity_store::contracts::{self, Registration};
use activity_store::ingest::{Inbound, commit_batch};
use activity_store::log::EventLog;
use activity_store::model::TimeWindow;
use chrono::Utc;
use common::{Cmd, bar, commands_over, count_arg, percentile};
use serde_json::json;
use support::TestDb;

const BATCH: usize = 1_000;
const ROUNDS: usize = 5;
const TYPES: [&str; 3] = ["page.view", "login", "cart:add"];

/// What a producer's team would write for the bench's metadata: every field typed, two
/// formats checked, a pattern, bounds, nothing else allowed.
fn schema() -> serde_json::Value {
    json!({
        "type": "object",
        "required": ["path", "session", "n"],
        "additionalProperties": false,
        "properties": {
            "path": {"type": "string", "pattern": "^/", "maxLength": 2048},
            "session": {"type": "string", "format": "uuid"},
            "ua": {"type": "string", "maxLength": 512},
            "ref": {"type": "string", "format": "uri"},
            "n": {"type": "integer", "minimum": 0},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10}
        }
    })
}

fn inbound(commands: &[Cmd]) -> Vec<Inbound> {
    commands
        .iter()
        .zip(1..)
        .map(|((_, tenant, payload), seq)| Inbound {
            subject: format!("activity.commands.{tenant}"),
            payload: payload.clone(),
            stream_seq: seq,
            delivered: 1,
            published: Utc::now(),
            stream_created: None,
            route: None,
        })
        .collect()
}

/// One run on a fresh database; the activities' events/s.
async fn run(messages: &[Inbound], tenants: &[String], with_schemas: bool) -> f64 {
    let db = TestDb::migrated().await;
    let log = EventLog::open(db.pool.clone()).await.unwrap();
    let window = TimeWindow::default();
    // Tenants and users first, untimed: the schemas need their tenants.
    let setup = 4 + common::USERS;
    for chunk in messages[..setup].chunks(BATCH) {
        commit_batch(&log, "BENCH", 0, chunk, &window)
            .await
            .unwrap();
    }
    if with_schemas {
        for tenant in tenants {
            for activity_type in TYPES {
                let r = Registration {
                    tenant,
                    activity_type,
                    schema: schema(),
                    force: false,
                    batch_rows: contracts::SCAN_BATCH_ROWS,
                };
                contracts::put(&db.pool, &r).await.unwrap();
            }
        }
    }
    let timed = &messages[setup..];
    let label = if with_schemas {
        "a schema on every type"
    } else {
        "no schema"
    };
    let pb = bar(timed.len(), label);
    let t = Instant::now();
    let mut appended = 0;
    for chunk in timed.chunks(BATCH) {
        let outcome = commit_batch(&log, "BENCH", 0, chunk, &window)
            .await
            .unwrap();
        assert!(
            outcome.rejected.is_empty(),
            "{:?}",
            outcome.refusals.first()
        );
        appended += outcome.appended;
        pb.inc(chunk.len() as u64);
    }
    let rate = appended as f64 / t.elapsed().as_secs_f64();
    pb.finish_and_clear();
    assert_eq!(appended, timed.len(), "every activity appended");
    rate
}

#[tokio::main]
async fn main() {
    let n = count_arg(120_000) as usize;
    let tenants: Vec<String> = (0..4).map(|i| format!("tenant-{i}")).collect();
    let messages = inbound(&commands_over(n, &tenants));
    let (mut none, mut with) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // Alternate which goes first, so a warming cache or a checkpoint favours neither.
        for with_schemas in [round % 2 == 1, round % 2 == 0] {
            let rate = run(&messages, &tenants, with_schemas).await;
            println!(
                "round {}: {:<24} {rate:>9.0} events/s",
                round + 1,
                if with_schemas {
                    "a schema on every type"
                } else {
                    "no schema"
                }
            );
            if with_schemas { &mut with } else { &mut none }.push(rate);
        }
    }
    none.sort_by(f64::total_cmp);
    with.sort_by(f64::total_cmp);
    let (a, b) = (percentile(&none, 0.5), percentile(&with, 0.5));
    let cost = (1.0 - b / a) * 100.0;
    println!(
        "\n{} activities, median of {ROUNDS}: no schema {a:.0} events/s, a schema on every type \
         {b:.0} events/s: schemas cost {cost:.1}% (goal at most 10%: {})",
        n - 4 - common::USERS,
        if cost <= 10.0 { "met" } else { "MISSED" }
    );
}

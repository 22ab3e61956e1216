//! Hostile inputs for the write path, structure-aware: commands of every type, then mutated
//! (fields dropped, retyped, filled with NUL, control characters and lone surrogates,
//! truncated, bit-flipped, padded to the size limits, nested deep), on subjects whose tenant
//! token is sometimes wrong or unstorable. `run` drives them through the real decide and
//! write path against PostgreSQL and checks that every input became an event, a duplicate
//! or a dead letter, and that no batch failed.

use activity_store::ingest::{Inbound, commit_batch};
use activity_store::log::EventLog;
use activity_store::model::TimeWindow;
use activity_store::model::fields::{MAX_COMMAND_BYTES, MAX_METADATA_BYTES};
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const TENANTS: [&str; 2] = ["acme", "globex"];
const USERS: usize = 20;

/// One message: the tenant token of its subject and its body.
#[derive(Debug, Clone)]
pub struct Input {
    pub subject_tenant: String,
    pub body: Vec<u8>,
}

fn user(rng: &mut StdRng) -> String {
    format!("u{}", rng.random_range(0..USERS))
}

fn command(rng: &mut StdRng) -> Value {
    let tenant = TENANTS[rng.random_range(0..TENANTS.len())];
    let id = uuid::Uuid::new_v4().to_string();
    let u = user(rng);
    match rng.random_range(0..10) {
        0 => json!({"type": "create_tenant", "id": id, "tenant": tenant, "name": "T"}),
        1 | 2 => json!({"type": "register_user", "id": id, "tenant": tenant, "user": u,
            "email": format!("{u}@example.com"), "name": "N"}),
        3 => json!({"type": "change_user_email", "id": id, "tenant": tenant, "user": u,
            "email": format!("{u}@new.example")}),
        4 => json!({"type": "forget_user", "id": id, "tenant": tenant, "user": u}),
        _ => json!({"type": "record_activity", "id": id, "tenant": tenant, "user": u,
            "activity_type": "page.view", "occurred_at": "2026-11-03T08:00:00Z",
            "metadata": {"path": "/x", "n": rng.random_range(0..1000)}}),
    }
}

fn odd_string(rng: &mut StdRng) -> String {
    match rng.random_range(0..8) {
        0 => "a\0b".into(),
        1 => "\u{1}\u{7f}\u{85}\u{2028}".into(),
        2 => "x".repeat(rng.random_range(0..300)),
        3 => "日本語🎉".repeat(rng.random_range(1..40)),
        4 => String::new(),
        5 => " ".into(),
        6 => "2026-02-30 25:61:61".into(),
        _ => "9999-12-31T23:59:60Z".into(),
    }
}

fn odd_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..9) {
        0 => Value::Null,
        1 => json!(rng.random::<bool>()),
        2 => json!(rng.random::<i64>()),
        3 => json!(1e308),
        4 => json!(odd_string(rng)),
        5 => json!([1, "two", null]),
        6 => json!({"nested": {"k": odd_string(rng)}}),
        7 => json!(u64::MAX),
        _ => json!(-0.0),
    }
}

fn nested(depth: usize) -> Value {
    (0..depth).fold(json!("leaf"), |inner, _| json!({ "k": inner }))
}

/// Pads a JSON object's bytes with spaces to exactly `size` bytes (if it is smaller).
fn padded(mut bytes: Vec<u8>, size: usize) -> Vec<u8> {
    if bytes.len() < size {
        bytes.resize(size, b' ');
    }
    bytes
}

/// One input, valid or mutated.
pub fn input(rng: &mut StdRng) -> Input {
    let mut c = command(rng);
    let mut subject_tenant = c["tenant"].as_str().unwrap().to_owned();
    let keys: Vec<String> = c.as_object().unwrap().keys().cloned().collect();
    let key = keys[rng.random_range(0..keys.len())].clone();
    let body = match rng.random_range(0..18) {
        0..=3 => serde_json::to_vec(&c).unwrap(),
        4 => {
            c.as_object_mut().unwrap().remove(&key);
            serde_json::to_vec(&c).unwrap()
        }
        5 => {
            c[&key] = odd_value(rng);
            serde_json::to_vec(&c).unwrap()
        }
        6 => {
            c["extra"] = odd_value(rng);
            serde_json::to_vec(&c).unwrap()
        }
        7 => {
            let bytes = serde_json::to_vec(&c).unwrap();
            bytes[..rng.random_range(0..bytes.len())].to_vec()
        }
        8 => {
            let mut bytes = serde_json::to_vec(&c).unwrap();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            bytes
        }
        9 => (0..rng.random_range(0..200))
            .map(|_| rng.random())
            .collect(),
        10 => {
            let size = MAX_COMMAND_BYTES + rng.random_range(0..3) - 1;
            padded(serde_json::to_vec(&c).unwrap(), size)
        }
        11 => {
            let fill = MAX_METADATA_BYTES - 12 + rng.random_range(0..4);
            c["metadata"] = json!({"blob": "m".repeat(fill.saturating_sub(11))});
            serde_json::to_vec(&c).unwrap()
        }
        12 => {
            c["metadata"] = nested(rng.random_range(100..300));
            serde_json::to_vec(&c).unwrap()
        }
        13 => {
            c["occurred_at"] = json!(odd_string(rng));
            serde_json::to_vec(&c).unwrap()
        }
        14 => {
            // A repeated key and a lone surrogate, which serde_json cannot produce itself.
            let text = serde_json::to_string(&c).unwrap();
            let extra = if rng.random() {
                r#","tenant":"acme"}"#
            } else {
                r#","name":"\ud800"}"#
            };
            format!("{}{extra}", &text[..text.len() - 1]).into_bytes()
        }
        15 => {
            subject_tenant = match rng.random_range(0..4) {
                0 => "ac\0me".into(),
                1 => "a".repeat(255),
                2 => "ACME".into(),
                _ => "globex".into(),
            };
            serde_json::to_vec(&c).unwrap()
        }
        16 => Vec::new(),
        _ => {
            c[&key] = json!(odd_string(rng));
            serde_json::to_vec(&c).unwrap()
        }
    };
    Input {
        subject_tenant,
        body,
    }
}

/// What the inputs became.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub inputs: usize,
    pub appended: usize,
    pub duplicates: usize,
    pub rejected: usize,
}

/// The tenants and users the inputs mostly refer to, so most valid commands are accepted.
pub fn registry() -> Vec<Input> {
    let mut out = Vec::new();
    for t in TENANTS {
        let c =
            json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(), "tenant": t, "name": "T"});
        out.push(Input {
            subject_tenant: t.into(),
            body: serde_json::to_vec(&c).unwrap(),
        });
        for u in 0..USERS {
            let c = json!({"type": "register_user", "id": uuid::Uuid::new_v4(), "tenant": t,
                "user": format!("u{u}"), "email": format!("u{u}@example.com")});
            out.push(Input {
                subject_tenant: t.into(),
                body: serde_json::to_vec(&c).unwrap(),
            });
        }
    }
    out
}

/// Commits `inputs` in batches of `batch` through the ingest write path, on stream
/// sequences after `first_seq`; panics (naming the seed) if a batch fails or an input is
/// unaccounted for.
pub async fn run(
    log: &EventLog,
    inputs: &[Input],
    first_seq: u64,
    batch: usize,
    seed: u64,
) -> Tally {
    let mut tally = Tally::default();
    for (n, chunk) in inputs.chunks(batch).enumerate() {
        let messages: Vec<Inbound> = chunk
            .iter()
            .enumerate()
            .map(|(i, input)| Inbound {
                subject: format!("fuzz.commands.{}", input.subject_tenant),
                payload: input.body.clone().into(),
                stream_seq: first_seq + (n * batch + i) as u64,
                delivered: 1,
                published: Utc::now(),
                stream_created: None,
                route: None,
            })
            .collect();
        let outcome = commit_batch(log, "FUZZ", 0, &messages, &TimeWindow::default())
            .await
            .unwrap_or_else(|e| {
                let shown: Vec<String> = chunk
                    .iter()
                    .map(|i| String::from_utf8_lossy(&i.body[..i.body.len().min(200)]).into_owned())
                    .collect();
                panic!("seed {seed}: batch {n} failed: {e}\ninputs: {shown:#?}")
            });
        let accounted = outcome.appended + outcome.duplicates + outcome.rejected.len();
        assert_eq!(
            accounted,
            chunk.len(),
            "seed {seed}: batch {n}: {outcome:?}"
        );
        tally.inputs += chunk.len();
        tally.appended += outcome.appended;
        tally.duplicates += outcome.duplicates;
        tally.rejected += outcome.rejected.len();
    }
    tally
}

/// A seed from `FUZZ_SEED`, or a fresh one (printed, so a failure can be replayed).
pub fn seeded() -> (u64, StdRng) {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("fuzz seed {seed} (set FUZZ_SEED={seed} to replay)");
    (seed, StdRng::seed_from_u64(seed))
}

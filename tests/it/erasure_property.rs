//! The erasure property: people whose ids, emails, names and metadata hold quotes,
//! backslashes, slashes, control characters (never NUL), astral-plane characters and long
//! values send commands, accepted and refused, through producers that spell JSON
//! differently; some still wait in the stream when they are forgotten. Afterwards no copy
//! (a `pg_dump --data-only`, every stream message, every revision of every cache bucket,
//! every archive) holds any of their values in any spelling, and a person not forgotten is
//! still found everywhere the check looks.
//!
//! `ERASURE_CASES` sets how many people (default 200).

use std::collections::HashSet;

use activity_store::erase;
use activity_store::log::archive;
use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::erasure_support::{Erasable, Style, archives, markers_in};

/// What a person's values are made of, around a marker that names the person.
const PLAIN: &[char] = &[
    'a',
    'Z',
    '0',
    '-',
    '.',
    '"',
    '\\',
    '/',
    '\'',
    'é',
    'Ñ',
    'ß',
    '中',
    '😀',
    '𝄞',
    '\u{10FFFF}',
    '\u{2028}',
    '{',
    '}',
    ':',
    ',',
    '[',
    '%',
    '=',
];
/// Metadata may also hold control characters.
const CONTROLS: &[char] = &[
    '\u{1}', '\u{1f}', '\t', '\n', '\r', '\u{7f}', '\u{85}', '\u{8}',
];

struct Person {
    marker: String,
    id: String,
    email: String,
    name: String,
    secret: String,
}

fn marker(i: usize, rng: &mut StdRng) -> String {
    format!("zq{i:05}q{:08x}", rng.random::<u32>())
}

fn noise(rng: &mut StdRng, alphabet: &[char], max: usize) -> String {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

fn person(i: usize, rng: &mut StdRng) -> Person {
    let m = marker(i, rng);
    let long = rng.random_bool(0.2);
    let id_noise = noise(rng, PLAIN, if long { 100 } else { 8 });
    let email_noise: String = noise(rng, PLAIN, 20)
        .chars()
        .filter(|c| *c != '@' && !c.is_whitespace())
        .collect();
    let mut secret_alphabet = PLAIN.to_vec();
    secret_alphabet.extend_from_slice(CONTROLS);
    Person {
        id: format!("{m}{id_noise}"),
        email: format!("e{m}{email_noise}@x{i}.example.com"),
        name: format!("N {m} {}", noise(rng, PLAIN, if long { 150 } else { 10 })),
        secret: format!(
            "s{m}{}",
            noise(rng, &secret_alphabet, if long { 2000 } else { 30 })
        ),
        marker: m,
    }
}

fn style(rng: &mut StdRng) -> Style {
    Style::ALL[rng.random_range(0..Style::ALL.len())]
}

/// What a person sends before the month is archived: accepted and refused.
fn first_round(p: &Person, at: &str) -> Vec<(&'static str, Value)> {
    let register = json!({"type": "register_user", "tenant": "acme", "user": p.id,
                          "email": p.email, "name": p.name});
    vec![
        ("acme", register.clone()),
        (
            "acme",
            json!({"type": "record_activity", "tenant": "acme", "user": p.id, "activity_type": "login",
                   "occurred_at": at, "metadata": {"secret": p.secret, "who": p.id}}),
        ),
        (
            "acme",
            json!({"type": "record_activity", "tenant": "acme", "user": p.id,
                   "activity_type": "BAD TYPE", "metadata": {"secret": p.secret}}),
        ),
        ("acme", register),
    ]
}

/// What a person sends right before being forgotten: still in the stream when it begins.
fn last_round(p: &Person) -> Vec<(&'static str, Value)> {
    vec![
        (
            "acme",
            json!({"type": "record_activity", "tenant": "acme", "user": p.id,
                   "activity_type": "view", "metadata": {"secret": p.secret}}),
        ),
        (
            "globex",
            json!({"type": "record_activity", "tenant": "acme", "user": p.id,
                   "activity_type": "view", "metadata": {"email": p.email}}),
        ),
    ]
}

#[tokio::test]
async fn no_copy_holds_a_forgotten_person_in_any_spelling() {
    let cases: usize = std::env::var("ERASURE_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let seed: u64 = rand::random();
    eprintln!("erasure property: {cases} people, seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let people: Vec<Person> = (0..=cases).map(|i| person(i, &mut rng)).collect();
    // The last one is kept: proof that the check can find what is there.
    let (forgotten, kept) = people.split_at(cases);
    let e = Erasable::start().await;
    let (month, at) = crate::erasure_spellings::last_month();
    e.publish_as(
        "acme",
        json!({"type": "create_tenant", "tenant": "acme", "name": "Acme"}),
        Style::Raw,
    )
    .await;
    for p in &people {
        for (tenant, c) in first_round(p, &at) {
            let s = style(&mut rng);
            e.publish_as(tenant, c, s).await;
        }
    }
    let accepted = 1 + 2 * people.len() as i64;
    e.settled(accepted).await;
    let dir = std::env::temp_dir().join(crate::support::unique_name("erasure-property"));
    archive::detach_before(&e.db.pool, month.next(), Some(&dir))
        .await
        .unwrap();

    for p in &people {
        for (tenant, c) in last_round(p) {
            let s = style(&mut rng);
            e.publish_as(tenant, c, s).await;
        }
    }
    let receipts: Vec<_> = futures_util::stream::iter(forgotten)
        .map(|p| erase::forget(&e.db.pool, &e.js, &e.erase, "acme", &p.id, |_| {}))
        .buffer_unordered(4)
        .collect()
        .await;
    for r in receipts {
        let r = r.unwrap();
        assert!(r.stream_left.is_empty(), "{r:?}");
        assert_eq!(r.read_model_rows, 0, "{r:?}");
    }
    archive::rescrub(&e.db.pool, &dir).await.unwrap();
    let gone: HashSet<&str> = forgotten.iter().map(|p| p.marker.as_str()).collect();
    let in_archives = markers_in(&archives(&dir));
    assert!(
        in_archives.contains(&kept[0].marker),
        "the check finds nothing"
    );
    let leaked: Vec<&String> = in_archives
        .iter()
        .filter(|m| gone.contains(m.as_str()))
        .collect();
    assert!(leaked.is_empty(), "archives hold {leaked:?}");

    let manifest = std::fs::read_dir(&dir)
        .unwrap()
        .map(|f| f.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .unwrap();
    archive::attach(&e.db.pool, &manifest).await.unwrap();
    let everywhere = markers_in(&e.everything().await);
    assert!(
        everywhere.contains(&kept[0].marker),
        "the check finds nothing"
    );
    let leaked: Vec<&String> = everywhere
        .iter()
        .filter(|m| gone.contains(m.as_str()))
        .collect();
    assert!(leaked.is_empty(), "still held: {leaked:?}");
    e.store.stop().await;
}

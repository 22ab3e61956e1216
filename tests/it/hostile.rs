//! Whatever bytes a producer puts in a subject, a header or a body, the outcome is an event or
//! a dead letter with a reason, and the next good command lands.

use serde_json::json;

use crate::ingest_support::{Pipeline, create_tenant, register};
use crate::raw_nats::RawNats;
use crate::support::nats_url;

async fn ready() -> (Pipeline, RawNats) {
    let p = Pipeline::new().await;
    p.publish(create_tenant("acme")).await;
    p.drain().await;
    (p, RawNats::connect(&nats_url()).await)
}

/// The body of a valid command registering `user` in acme.
fn registration(user: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "register_user", "id": uuid::Uuid::new_v4(),
        "tenant": "acme", "user": user, "email": format!("{user}@example.com")}))
    .unwrap()
}

/// Publishes a good command after the hostile ones, drains, and checks it landed.
async fn next_good_command_lands(p: &Pipeline) {
    p.publish(register("acme", "after")).await;
    p.drain().await;
    assert_eq!(
        p.count("SELECT count(*) FROM users WHERE user_id = 'after'")
            .await,
        1,
        "the command after the hostile ones landed"
    );
}

async fn dead_letter(p: &Pipeline, seq: u64) -> (String, String, Option<String>, i64, Vec<u8>) {
    sqlx::query_as(
        "SELECT reason, subject, tenant, raw_length, raw FROM dead_letters WHERE stream_seq = $1",
    )
    .bind(seq as i64)
    .fetch_one(&p.db.pool)
    .await
    .unwrap_or_else(|e| panic!("no dead letter for sequence {seq}: {e}"))
}

#[tokio::test]
async fn a_nul_in_the_subject_is_a_dead_letter_not_a_stopped_loop() {
    let (p, mut raw) = ready().await;
    let subject = format!("{}.commands.ac\0me", p.prefix);
    let seq = raw
        .publish(subject.as_bytes(), None, &registration("ann"))
        .await
        .expect("nats-server stores a subject with NUL");
    next_good_command_lands(&p).await;
    let (reason, stored_subject, tenant, _, raw_bytes) = dead_letter(&p, seq).await;
    assert_eq!(reason, "tenant_mismatch");
    assert_eq!(stored_subject, format!("{}.commands.ac\\x00me", p.prefix));
    assert_eq!(tenant.as_deref(), Some("ac\\x00me"));
    let kept: serde_json::Value = serde_json::from_slice(&raw_bytes).unwrap();
    assert_eq!(kept["user"], "ann", "the raw bytes are kept");
    assert_eq!(
        p.count("SELECT count(*) FROM users WHERE user_id = 'ann'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_subject_the_client_cannot_parse_is_read_past_it() {
    let (p, mut raw) = ready().await;
    let mut subject = format!("{}.commands.", p.prefix).into_bytes();
    subject.extend_from_slice(b"\xff\xfe");
    let seq = raw
        .publish(&subject, None, &registration("ann"))
        .await
        .expect("nats-server stores a subject that is not UTF-8");
    next_good_command_lands(&p).await;
    let (reason, stored_subject, ..) = dead_letter(&p, seq).await;
    assert_eq!(reason, "tenant_mismatch");
    assert!(
        stored_subject.starts_with(&format!("{}.commands.", p.prefix)),
        "{stored_subject}"
    );
}

#[tokio::test]
async fn headers_with_odd_bytes_do_not_stop_a_good_command() {
    let (p, mut raw) = ready().await;
    let subject = p.subject("acme");
    let odd_value = raw
        .publish(
            subject.as_bytes(),
            Some(b"X-Odd: \xff\x00v\r\n"),
            &registration("ann"),
        )
        .await
        .unwrap();
    let odd_name = raw
        .publish(
            subject.as_bytes(),
            Some(b"Bad Name\xff: v\r\n"),
            &registration("bob"),
        )
        .await
        .unwrap();
    let no_colon = raw
        .publish(
            subject.as_bytes(),
            Some(b"garbage\r\n"),
            &registration("cy"),
        )
        .await
        .unwrap();
    assert!(odd_value < odd_name && odd_name < no_colon);
    next_good_command_lands(&p).await;
    // The headers are not the command: each body was a good registration, and each landed.
    for user in ["ann", "bob", "cy"] {
        let found: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE user_id = $1")
            .bind(user)
            .fetch_one(&p.db.pool)
            .await
            .unwrap();
        assert_eq!(found, 1, "{user} registered");
    }
    assert_eq!(p.count("SELECT count(*) FROM dead_letters").await, 0);
}

#[tokio::test]
async fn subjects_outside_the_stream_are_never_stored_and_harm_nothing() {
    let (p, mut raw) = ready().await;
    for subject in [
        p.prefix.clone(),
        format!("{}.commands.acme.extra.token", p.prefix),
    ] {
        assert_eq!(
            raw.publish(subject.as_bytes(), None, &registration("ann"))
                .await,
            None,
            "{subject} is not a stream subject"
        );
    }
    next_good_command_lands(&p).await;
    assert_eq!(
        p.count("SELECT count(*) FROM users WHERE user_id = 'ann'")
            .await,
        0
    );
}

#[tokio::test]
async fn a_255_byte_tenant_token_and_an_empty_body_are_dead_letters() {
    let (p, mut raw) = ready().await;
    let long = "a".repeat(255);
    let long_subject = p.subject(&long);
    let mismatch = raw
        .publish(long_subject.as_bytes(), None, &registration("ann"))
        .await
        .unwrap();
    let body = serde_json::to_vec(&json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(),
        "tenant": long, "name": "Long"}))
    .unwrap();
    let invalid = raw
        .publish(long_subject.as_bytes(), None, &body)
        .await
        .unwrap();
    let empty = raw
        .publish(p.subject("acme").as_bytes(), None, b"")
        .await
        .unwrap();
    next_good_command_lands(&p).await;
    let (reason, _, tenant, ..) = dead_letter(&p, mismatch).await;
    assert_eq!(reason, "tenant_mismatch");
    assert_eq!(tenant.as_deref(), Some(long.as_str()));
    assert_eq!(dead_letter(&p, invalid).await.0, "invalid_field");
    let (reason, _, _, length, bytes) = dead_letter(&p, empty).await;
    assert_eq!((reason.as_str(), length, bytes.len()), ("malformed", 0, 0));
}

#[tokio::test]
async fn the_size_limit_is_exact_and_dead_letters_keep_a_bounded_prefix() {
    let p = Pipeline::with_config(|c| c.max_message_bytes = 950 * 1024).await;
    p.publish(create_tenant("acme")).await;
    p.drain().await;
    let mut raw = RawNats::connect(&nats_url()).await;
    let limit = activity_store::model::fields::MAX_COMMAND_BYTES;
    let padded = |size: usize, user: &str| {
        let mut body = registration(user);
        body.resize(size, b' ');
        body
    };
    let subject = p.subject("acme");
    let at_limit = raw
        .publish(subject.as_bytes(), None, &padded(limit, "ann"))
        .await
        .unwrap();
    let over = padded(limit + 1, "bob");
    let one_over = raw.publish(subject.as_bytes(), None, &over).await.unwrap();
    let huge = padded(900 * 1024, "cy");
    let huge_seq = raw.publish(subject.as_bytes(), None, &huge).await.unwrap();
    // Past the stream's largest message: refused by the stream, never stored.
    let too_big = padded(p.config.max_message_bytes + 1, "dee");
    assert_eq!(raw.publish(subject.as_bytes(), None, &too_big).await, None);
    next_good_command_lands(&p).await;
    assert!(at_limit < one_over);
    assert_eq!(
        p.count("SELECT count(*) FROM users WHERE user_id = 'ann'")
            .await,
        1
    );
    for (seq, bytes) in [(one_over, &over), (huge_seq, &huge)] {
        let (reason, _, _, length, kept) = dead_letter(&p, seq).await;
        assert_eq!(reason, "too_large");
        assert_eq!(length as usize, bytes.len());
        assert_eq!(kept.len(), activity_store::ingest::DEAD_LETTER_RAW_PREFIX);
        assert_eq!(&kept[..], &bytes[..kept.len()]);
        let hash_matches: bool = sqlx::query_scalar(
            "SELECT raw_sha256 = sha256($2) FROM dead_letters WHERE stream_seq = $1",
        )
        .bind(seq as i64)
        .bind(bytes.as_slice())
        .fetch_one(&p.db.pool)
        .await
        .unwrap();
        assert!(hash_matches, "the SHA-256 is of the whole message");
    }
}

#[tokio::test]
async fn batches_are_bounded_by_bytes() {
    let p = Pipeline::with_config(|c| {
        c.batch_max_bytes = 300 * 1024;
        c.max_message_bytes = 128 * 1024;
    })
    .await;
    p.publish(create_tenant("acme")).await;
    p.drain().await;
    for i in 0..8 {
        let mut c = register("acme", &format!("u{i}"));
        c["name"] = json!("n".repeat(100));
        c["id"] = json!(uuid::Uuid::new_v4());
        let mut body = serde_json::to_vec(&c).unwrap();
        body.resize(60 * 1024, b' ');
        p.publish_raw("acme", body, None).await;
    }
    let mut largest = 0;
    let mut handled = 0;
    while handled < 8 {
        if let activity_store::ingest::Step::Progress { messages, .. } =
            p.ingestor.step().await.unwrap()
        {
            largest = largest.max(messages);
            handled += messages;
        }
    }
    assert!(largest <= 5, "a batch held {largest} messages of 60 KiB");
    assert_eq!(p.count("SELECT count(*) FROM users").await, 8);
}

#[tokio::test]
async fn a_message_the_client_cannot_parse_in_the_middle_of_a_batch_is_read_past() {
    let (p, mut raw) = ready().await;
    let subject = p.subject("acme");
    for (i, headers) in [None, None, Some(&b"Bad Name\xff: v\r\n"[..]), None, None]
        .into_iter()
        .enumerate()
    {
        raw.publish(subject.as_bytes(), headers, &registration(&format!("m{i}")))
            .await
            .unwrap();
    }
    next_good_command_lands(&p).await;
    assert_eq!(
        p.count("SELECT count(*) FROM users WHERE user_id LIKE 'm%'")
            .await,
        5,
        "every registration around the unparseable one landed, once"
    );
    let in_order: bool = sqlx::query_scalar(
        "SELECT bool_and(ok) FROM (SELECT stream_seq > lag(stream_seq) OVER (ORDER BY position) \
         OR lag(stream_seq) OVER (ORDER BY position) IS NULL AS ok FROM events) s",
    )
    .fetch_one(&p.db.pool)
    .await
    .unwrap();
    assert!(in_order);
}

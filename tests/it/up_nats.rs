//! Least privilege on the embedded NATS: nobody connects anonymously; producers may publish
//! commands and read refusals and nothing else (no stream reads, purges or deletions, no
//! cache writes); the store's own user does its work; the logs are its owner's alone.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use async_nats::jetstream;
use serde_json::json;

use crate::support::unique_name;
use crate::up::{start_up, stop};

fn env_value(env: &str, key: &str) -> String {
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} in the env file"))
        .to_owned()
}

/// Whether a JetStream API request as this client is answered at all.
async fn answered(client: &async_nats::Client, subject: String) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject, json!({"seq": 1}).to_string().into())
        )
        .await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn the_embedded_nats_lets_producers_publish_and_nothing_more() {
    let dir = std::env::temp_dir().join(unique_name("up-nats"));
    let (child, _url) = start_up(&dir).await;
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    let store_url = env_value(&env, "NATS_URL");
    let producer_url = env_value(&env, "PRODUCER_NATS_URL");
    let port = store_url.rsplit_once(':').unwrap().1.to_owned();

    let anonymous = async_nats::connect(format!("nats://127.0.0.1:{port}")).await;
    assert!(anonymous.is_err(), "an anonymous client connected");
    let wrong =
        activity_store::nats::connect(&format!("nats://producer:guess@127.0.0.1:{port}")).await;
    assert!(wrong.is_err(), "a wrong password connected");

    // A producer connects as any client would: its password, the default inbox prefix.
    let password = producer_url
        .split_once("producer:")
        .and_then(|(_, rest)| rest.split_once('@'))
        .map(|(password, _)| password.to_owned())
        .unwrap();
    let producer = async_nats::ConnectOptions::with_user_and_password("producer".into(), password)
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap();
    let pjs = jetstream::new(producer.clone());
    let command = json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(), "tenant": "acme",
                         "name": "Acme"});
    // The stream exists once the ingestor has started.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ack = pjs
            .publish("activity.commands.acme", command.to_string().into())
            .await
            .unwrap()
            .await;
        match ack {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("not stored yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("a producer's command is not stored: {e}"),
        }
    }
    let mut refusals = producer
        .subscribe("activity.rejections.acme")
        .await
        .unwrap();
    pjs.publish("activity.commands.acme", b"not json".as_slice().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let refusal = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::StreamExt::next(&mut refusals),
    )
    .await
    .expect("the refusal reaches the producer")
    .unwrap();
    assert!(String::from_utf8_lossy(&refusal.payload).contains("malformed"));

    // A new store of 4 shards routes commands to 4 partitions: acme's are in its own.
    let stream = format!(
        "ACTIVITY_P{}",
        activity_store::ingest::partitions::of("acme", 4)
    );
    // A producer may publish to a partition's subject (NATS checks permissions after the
    // mapping), but a command put in another partition than its tenant's is refused, so it
    // can never overtake the tenant's others.
    let ours = activity_store::ingest::partitions::of("acme", 4);
    let wrong = (ours + 1) % 4;
    let misrouted = json!({"type": "create_tenant", "id": uuid::Uuid::new_v4(), "tenant": "acme",
                           "name": "Acme"});
    pjs.publish(
        format!("activity.commands.{wrong}.acme"),
        misrouted.to_string().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let refusal = tokio::time::timeout(
        Duration::from_secs(30),
        futures_util::StreamExt::next(&mut refusals),
    )
    .await
    .expect("the misrouted command's refusal reaches the producer")
    .unwrap();
    let said = String::from_utf8_lossy(&refusal.payload).into_owned();
    assert!(
        said.contains("tenant_mismatch") && said.contains(&format!("partition {ours}")),
        "{said}"
    );
    // Everything else a producer might try is refused by the server.
    for subject in [
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.STREAM.PURGE.{stream}"),
        format!("$JS.API.STREAM.DELETE.{stream}"),
        "$JS.API.STREAM.LIST".to_owned(),
        "$JS.API.STREAM.INFO.KV_activity_user_summary".to_owned(),
    ] {
        assert!(!answered(&producer, subject.clone()).await, "{subject}");
    }
    producer
        .publish(
            "$KV.activity_user_summary.user_summary.v1.acme.forged",
            "{}".into(),
        )
        .await
        .unwrap();
    producer.flush().await.unwrap();

    // The store's own user does its work: the stream still holds both commands, and no
    // forged cache entry was written. Its replies (here a stream read, and every pull
    // delivery) never come to the inboxes a producer may subscribe to.
    let mut overheard = producer.subscribe("_INBOX.>").await.unwrap();
    producer.flush().await.unwrap();
    let store = activity_store::nats::connect(&store_url).await.unwrap();
    assert!(answered(&store, format!("$JS.API.STREAM.MSG.GET.{stream}")).await);
    let heard = tokio::time::timeout(
        Duration::from_secs(1),
        futures_util::StreamExt::next(&mut overheard),
    )
    .await;
    assert!(heard.is_err(), "a producer overheard the store: {heard:?}");
    let sjs = jetstream::new(store);
    let held = sjs
        .get_stream(&stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert!(held >= 2, "the stream holds {held}");
    if let Ok(kv) = sjs.get_key_value("activity_user_summary").await {
        assert!(
            kv.get("user_summary.v1.acme.forged")
                .await
                .unwrap()
                .is_none()
        );
    }
    for log in ["postgres.log", "nats.log"] {
        let mode = std::fs::metadata(dir.join(log))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{log} is readable by others: {mode:o}");
    }
    stop(child).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

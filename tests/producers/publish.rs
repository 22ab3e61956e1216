//! Publish activity-store commands from Rust with async-nats; the store's tests call this
//! function as it is.

use async_nats::jetstream;
use serde_json::{Value, json};

/// Publishes a tenant, a user and one activity; returns their stream sequences. `login` is
/// the producer's user and password where the server asks for one (`up`'s NATS does: user
/// `producer`, the password in PRODUCER_NATS_URL).
pub async fn publish_example(
    nats_url: &str,
    login: Option<(&str, &str)>,
    prefix: &str,
) -> Result<Vec<u64>, async_nats::Error> {
    let options = match login {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        }
        None => async_nats::ConnectOptions::new(),
    };
    let js = jetstream::new(options.connect(nats_url).await?);
    let tenant = "acme";
    let commands: Vec<Value> = vec![
        json!({"type": "create_tenant", "tenant": tenant, "name": "Acme"}),
        json!({"type": "register_user", "tenant": tenant, "user": "ann", "email": "ann@example.com"}),
        json!({"type": "record_activity", "tenant": tenant, "user": "ann",
            "activity_type": "login", "metadata": {"ip": "10.0.0.1"}}),
    ];
    let mut sequences = Vec::new();
    for mut command in commands {
        // One id per command, kept across retries; time-ordered ids append fastest.
        let id = uuid::Uuid::now_v7().to_string();
        command["id"] = json!(id);
        let mut headers = async_nats::HeaderMap::new();
        // Scoped to the tenant: JetStream's duplicate window is stream-wide.
        headers.insert("Nats-Msg-Id", format!("{tenant}:{id}").as_str());
        // The second await is the stream's ack; on error, retry with the same body and id.
        let ack = js
            .publish_with_headers(
                format!("{prefix}.{tenant}"),
                headers,
                serde_json::to_vec(&command)?.into(),
            )
            .await?
            .await?;
        sequences.push(ack.sequence);
    }
    Ok(sequences)
}

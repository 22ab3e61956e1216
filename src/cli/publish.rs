//! `activity-store publish`: JSON lines to the stream, each with `Nats-Msg-Id` =
//! `<tenant>:<id>`: JetStream's duplicate window is stream-wide, so one tenant's ids must
//! never suppress another's.

use std::collections::VecDeque;
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::CliError;

/// How a publish run went.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Lines the stream acknowledged.
    pub published: u64,
    /// Line numbers (from 1) that were not sent, with why.
    pub invalid: Vec<(usize, String)>,
}

/// Publishes every line of `input` (`-` for standard input) to `<prefix>.<tenant>`.
pub async fn publish(
    nats_url: &str,
    subject_prefix: &str,
    input: &Path,
    rate: Option<u32>,
) -> Result<PublishReport, CliError> {
    let reader: Box<dyn BufRead> = if input == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(input)
            .map_err(|e| CliError::Input(format!("{}: {e}", input.display())))?;
        Box::new(std::io::BufReader::new(file))
    };
    let client = crate::nats::connect(nats_url).await.map_err(|e| {
        CliError::Nats(format!(
            "connect to {}: {e}",
            crate::nats::redacted(nats_url)
        ))
    })?;
    let js = jetstream::new(client);
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new_spinner()
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} published ({per_sec}) {msg}")
            .expect("a valid template"),
    );
    let mut pacer =
        rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(r.max(1)))));
    let mut in_flight = VecDeque::new();
    let mut report = PublishReport::default();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| CliError::Input(format!("line {}: {e}", i + 1)))?;
        if line.trim().is_empty() {
            continue;
        }
        let (subject, id) = match route(&line, subject_prefix) {
            Ok(r) => r,
            Err(why) => {
                report.invalid.push((i + 1, why));
                continue;
            }
        };
        if let Some(p) = pacer.as_mut() {
            p.tick().await;
        }
        let mut headers = async_nats::HeaderMap::new();
        if let Some(id) = id {
            headers.insert("Nats-Msg-Id", id.as_str());
        }
        let ack = js
            .publish_with_headers(subject, headers, line.into_bytes().into())
            .await
            .map_err(|e| CliError::Nats(format!("publish line {}: {e}", i + 1)))?;
        in_flight.push_back((i + 1, ack));
        if in_flight.len() >= 1024 {
            settle(in_flight.pop_front(), &mut report, &bar).await?;
        }
    }
    while !in_flight.is_empty() {
        settle(in_flight.pop_front(), &mut report, &bar).await?;
    }
    bar.finish_and_clear();
    Ok(report)
}

async fn settle(
    next: Option<(usize, jetstream::context::PublishAckFuture)>,
    report: &mut PublishReport,
    bar: &ProgressBar,
) -> Result<(), CliError> {
    if let Some((line, ack)) = next {
        ack.await
            .map_err(|e| CliError::Nats(format!("line {line} was not acknowledged: {e}")))?;
        report.published += 1;
        bar.inc(1);
    }
    Ok(())
}

/// The subject and message id of one line, or why it cannot be sent.
fn route(line: &str, prefix: &str) -> Result<(String, Option<String>), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    let tenant = value
        .get("tenant")
        .and_then(Value::as_str)
        .ok_or("no `tenant`")?;
    crate::model::fields::tenant_slug("tenant", tenant).map_err(|r| r.message)?;
    let id = value
        .get("id")
        .and_then(Value::as_str)
        .map(|id| format!("{tenant}:{id}"));
    Ok((format!("{prefix}.{tenant}"), id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_tenant_with_the_id_as_message_id() {
        let (subject, id) = route(r#"{"tenant": "acme", "id": "x"}"#, "activity.commands").unwrap();
        assert_eq!(
            (subject.as_str(), id.as_deref()),
            ("activity.commands.acme", Some("acme:x"))
        );
        assert!(
            route("{not json", "p")
                .unwrap_err()
                .starts_with("not valid JSON")
        );
        assert!(
            route(r#"{"tenant": "a.b"}"#, "p").is_err(),
            "a dot would change the subject"
        );
        assert!(route(r#"{"id": "x"}"#, "p").is_err());
        assert!(
            route("{\"tenant\": \"a\\r\\nPUB x 1\"}", "p").is_err(),
            "a line break would end the protocol line"
        );
    }
}

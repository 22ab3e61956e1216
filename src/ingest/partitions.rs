//! Commands routed to P ingest partitions on their way in. With P = 1 (the default) there is
//! the one stream of before. With P > 1 the NATS server maps every command subject
//! `<prefix>.<tenant>` to `<prefix>.<n>.<tenant>`, n = FNV-1a of the tenant modulo P (its
//! `partition()` mapping function, which `up` writes into its embedded server's
//! configuration), and each partition is a stream of its own (`<stream>_P<n>`) with its own
//! durable consumer, ingest lead and epoch-fenced checkpoint: running instances divide the
//! partitions between them. Producers publish as before. A partition is not a shard: an
//! ingest lead appends each command to whatever shard its tenant is recorded on.

use sqlx::PgExecutor;

use super::IngestConfig;
use crate::db::{DbError, db};

/// Most partitions (the table's check holds to it).
pub const MAX_PARTITIONS: u32 = 1024;

/// The store's partition count.
pub async fn count(conn: impl PgExecutor<'_>) -> Result<u32, DbError> {
    let n: i32 = db(
        sqlx::query_scalar("SELECT partitions FROM ingest_partitions")
            .fetch_one(conn)
            .await,
        "read the ingest partition count",
    )?;
    Ok(n as u32)
}

/// Sets the partition count: the owner's, at install, with the NATS mapping to match.
pub async fn set(conn: impl PgExecutor<'_>, n: u32) -> Result<(), DbError> {
    db(
        sqlx::query("UPDATE ingest_partitions SET partitions = $1")
            .bind(n as i32)
            .execute(conn)
            .await,
        "set the ingest partition count",
    )
    .map(|_| ())
}

/// The partition tenant `tenant`'s commands are routed to, of `n`: what NATS's
/// `partition(n, 1)` gives for the subject's tenant token.
pub fn of(tenant: &str, n: u32) -> u32 {
    crate::log::shards::partition(tenant, n)
}

impl IngestConfig {
    /// The prefix commands are published under: `subjects` without its last `.*`.
    pub fn subject_prefix(&self) -> &str {
        self.subjects.strip_suffix(".*").unwrap_or(&self.subjects)
    }

    /// Partition `p` of `n`: its own stream, subjects and consumer, and its share of the
    /// batch bytes, so the leads one process holds keep in memory what one stream's did
    /// (never less than a message: see `batch_bytes`). Partition 0 of 1 is this
    /// configuration itself.
    pub fn partition(&self, p: u32, n: u32) -> IngestConfig {
        if n <= 1 {
            return self.clone();
        }
        let (stream, durable) = names(&self.stream, &self.durable, p, n);
        IngestConfig {
            stream,
            subjects: format!("{}.{p}.*", self.subject_prefix()),
            durable,
            route: Some((p, n)),
            batch_max_bytes: self.batch_max_bytes.div_ceil(n as usize),
            ..self.clone()
        }
    }

    /// The stream tenant `tenant`'s commands are stored in, of `n` partitions.
    pub fn stream_of(&self, tenant: &str, n: u32) -> String {
        self.partition(of(tenant, n), n).stream
    }
}

/// Partition `p` of `n`'s stream and durable consumer, for `stream` and `durable`.
pub fn names(stream: &str, durable: &str, p: u32, n: u32) -> (String, String) {
    match n {
        0 | 1 => (stream.to_owned(), durable.to_owned()),
        _ => (format!("{stream}_P{p}"), format!("{durable}-p{p}")),
    }
}

/// Every partition's stream and durable consumer, of `n`.
pub fn streams(stream: &str, durable: &str, n: u32) -> Vec<(String, String)> {
    (0..n.max(1))
        .map(|p| names(stream, durable, p, n))
        .collect()
}

/// Why a command a partition's stream held is refused, if its tenant is routed to another
/// partition. NATS checks a producer's publish permission on the mapped subject, so a
/// producer allowed to publish commands can also publish straight to a partition's subject;
/// such a command, stored apart from its tenant's others, could overtake them. It becomes a
/// `tenant_mismatch` dead letter instead.
pub(super) fn misrouted(
    m: &super::Inbound,
    command: &crate::model::Command,
) -> Option<crate::model::Rejection> {
    let (p, n) = m.route?;
    let wanted = of(&command.tenant, n);
    (wanted != p).then(|| {
        crate::model::Rejection::field(
            crate::model::Reason::TenantMismatch,
            "subject",
            format!(
                "`{}` is partition {p}'s, but tenant `{}` is routed to partition {wanted} of \
                 {n}: publish to the commands prefix and the tenant only",
                crate::model::escape_text(&m.subject),
                command.tenant
            ),
        )
    })
}

/// The NATS server mapping that routes commands to `n` partitions: (source, destination),
/// written in a server's configuration as `mappings = { source: destination }`. None for
/// one partition.
pub fn mapping(prefix: &str, n: u32) -> Option<(String, String)> {
    (n > 1).then(|| {
        (
            format!("{prefix}.*"),
            format!("{prefix}.{{{{partition({n},1)}}}}.{{{{wildcard(1)}}}}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_is_the_stream_of_before() {
        let c = IngestConfig::default();
        let p = c.partition(0, 1);
        assert_eq!(
            (p.stream, p.subjects, p.durable),
            (c.stream, c.subjects, c.durable)
        );
        assert_eq!(mapping("activity.commands", 1), None);
    }

    #[test]
    fn each_partition_has_its_own_stream_subjects_and_consumer() {
        let c = IngestConfig::default();
        let p = c.partition(3, 4);
        assert_eq!(p.stream, "ACTIVITY_P3");
        assert_eq!(p.subjects, "activity.commands.3.*");
        assert_eq!(p.route, Some((3, 4)));
        assert_eq!(p.durable, "activity-ingest-p3");
        assert_eq!(p.batch_max, c.batch_max);
        assert_eq!(
            p.batch_max_bytes * 4,
            c.batch_max_bytes,
            "four share one's bytes"
        );
        let many = c.partition(0, 1024);
        assert!(
            many.batch_bytes() > c.max_message_bytes,
            "a message always fits a pull"
        );
        assert_eq!(
            mapping("activity.commands", 4),
            Some((
                "activity.commands.*".to_owned(),
                "activity.commands.{{partition(4,1)}}.{{wildcard(1)}}".to_owned()
            ))
        );
        // A tenant's stream is its partition's, by the hash NATS routes with.
        let t = (0..)
            .map(|i| format!("t{i}"))
            .find(|t| of(t, 4) == 2)
            .unwrap();
        assert_eq!(c.stream_of(&t, 4), "ACTIVITY_P2");
        assert_eq!(c.stream_of(&t, 1), "ACTIVITY");
    }
}

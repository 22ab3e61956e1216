//! `status` for a terminal: one section per part of the store.

use std::fmt::Write;

use super::{Holder, Status};

fn holder(h: &Option<Holder>) -> String {
    match h {
        None => "none".into(),
        Some(h) => {
            let age = h
                .seconds
                .map_or_else(|| "age unknown".into(), |s| format!("{s:.0} s"));
            format!("pid {} ({}, {age})", h.pid, h.application_name)
        }
    }
}

impl Status {
    /// The status as lines for a terminal: the verdict and its problems, then one section
    /// per part of the store.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.healthy() {
            "healthy"
        } else {
            "DEGRADED"
        };
        let _ = writeln!(out, "{verdict} at {}", self.at.to_rfc3339());
        for p in &self.problems {
            let _ = writeln!(out, "  ! {p}");
        }
        let _ = writeln!(out, "\nlog: last position {}", self.last_position);
        if self.shards.len() > 1 {
            let shards: Vec<String> = self
                .shards
                .iter()
                .map(|(s, last)| format!("{s} at {last}"))
                .collect();
            let _ = writeln!(out, "  shards: {}", shards.join(", "));
        }
        let _ = writeln!(
            out,
            "  open append transaction: {}",
            holder(&self.watermark)
        );
        self.projections_text(&mut out);
        self.ingest_text(&mut out);
        self.partitions_text(&mut out);
        self.dead_letters_text(&mut out);
        self.caches_text(&mut out);
        out
    }

    fn projections_text(&self, out: &mut String) {
        let _ = writeln!(out, "\nprojections:");
        for p in &self.projections {
            let lag = p
                .lag_seconds
                .map_or_else(|| "up to date".into(), |s| format!("{s:.1} s behind"));
            let _ = writeln!(
                out,
                "  {:<16} v{} at {} ({} events, {lag}); lease: {}",
                p.name,
                p.version,
                p.position,
                p.lag_events,
                holder(&p.lease)
            );
            let pids: Vec<String> = p
                .shards
                .iter()
                .map(|k| match &k.lease {
                    Some(h) => format!("{} by pid {}", k.shard, h.pid),
                    None => format!("{} by none", k.shard),
                })
                .collect();
            if p.shards.len() > 1 {
                let _ = writeln!(out, "    shards folded: {}", pids.join(", "));
            }
            if p.rebuild.is_some() {
                let _ = writeln!(out, "    rebuilding: {}", holder(&p.rebuild));
            }
            if !p.lagging_tenants.is_empty() {
                let most: Vec<String> = p
                    .lagging_tenants
                    .iter()
                    .map(|t| format!("{} ({} events)", t.tenant, t.lag_events))
                    .collect();
                let _ = writeln!(out, "    most behind: {}", most.join(", "));
            }
        }
        if let Some(lags) = &self.tenant {
            let tenant = lags.first().map_or("", |t| t.tenant.as_str());
            let head = lags.first().map_or(0, |t| t.head);
            let _ = writeln!(
                out,
                "
tenant {tenant}: last position {head}"
            );
            for t in lags {
                let lag = t
                    .lag_seconds
                    .map_or_else(|| "up to date".into(), |s| format!("{s:.1} s behind"));
                let _ = writeln!(
                    out,
                    "  {:<16} at {} ({} events, {lag})",
                    t.projection, t.position, t.lag_events
                );
            }
        }
    }

    fn ingest_text(&self, out: &mut String) {
        let _ = writeln!(out, "\ningest:");
        for i in &self.ingest {
            let _ = writeln!(
                out,
                "  {:<16} checkpoint {} (epoch {}, {} resets); leader: {}",
                i.stream,
                i.checkpoint,
                i.leader_epoch,
                i.resets,
                holder(&i.leader)
            );
            if let Some(n) = &i.nats {
                let _ = writeln!(
                    out,
                    "    stream {}..{} ({} messages); consumer pending {}, un-acked {}, redelivered {}",
                    n.first_seq, n.last_seq, n.messages, n.pending, n.ack_pending, n.redelivered
                );
            }
        }
    }

    fn partitions_text(&self, out: &mut String) {
        let _ = writeln!(out, "\npartitions:");
        for p in &self.partitions {
            let rows = if p.rows_exact {
                p.rows.to_string()
            } else {
                format!("~{} (estimate)", p.rows)
            };
            let mib = p.bytes as f64 / 1_048_576.0;
            let _ = writeln!(
                out,
                "  {:<16} {rows:>18} rows {mib:>9.1} MiB  {}",
                p.name, p.bound
            );
        }
    }

    fn dead_letters_text(&self, out: &mut String) {
        let _ = writeln!(out, "\ndead letters (unresolved):");
        if self.dead_letters.is_empty() {
            let _ = writeln!(out, "  none");
        }
        for d in &self.dead_letters {
            let _ = writeln!(out, "  {:<20} {}", d.reason, d.count);
        }
        if self.upcast_failures.count > 0 {
            let _ = writeln!(
                out,
                "\nevents that could not be upcast (left out of the views): {}",
                self.upcast_failures.count
            );
        }
    }

    fn caches_text(&self, out: &mut String) {
        if self.caches.is_empty() {
            return;
        }
        let _ = writeln!(out, "\ncaches:");
        for c in &self.caches {
            let entries = c
                .entries
                .map_or("missing".into(), |e| format!("{e} entries"));
            let _ = writeln!(out, "  {:<16} {:<24} {entries}", c.projection, c.bucket);
        }
    }
}

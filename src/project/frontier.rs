//! How far something has folded the log: a position per shard. Shard `s` holds positions
//! `s << 48 | n` (n from 1), so a shard's position says how many of its positions lie
//! behind it, and nothing of another shard's.

use std::collections::BTreeMap;
use std::fmt;

use sqlx::PgConnection;

use super::ProjectError;
use crate::db::db;

/// Bits of a position below its shard.
pub const SHARD_BITS: u32 = 48;

/// Where shard `shard`'s positions start (the position before its first).
pub fn shard_base(shard: i32) -> i64 {
    i64::from(shard) << SHARD_BITS
}

/// The shard a position is in.
pub fn shard_of(position: i64) -> i32 {
    (position >> SHARD_BITS) as i32
}

/// A position per shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Frontier(BTreeMap<i32, i64>);

impl Frontier {
    /// Nothing folded, of each shard the log has.
    pub async fn empty(conn: &mut PgConnection) -> Result<Frontier, ProjectError> {
        let shards: Vec<i32> = db(
            sqlx::query_scalar("SELECT shard FROM log_shards ORDER BY shard")
                .fetch_all(conn)
                .await,
            "read the log's shards",
        )?;
        Ok(Frontier(
            shards.into_iter().map(|s| (s, shard_base(s))).collect(),
        ))
    }

    /// Each shard's largest visible position: folding up to it passes over no event still to
    /// come (a shard's appends commit in position order).
    pub async fn visible(conn: &mut PgConnection) -> Result<Frontier, ProjectError> {
        let rows: Vec<(i32, i64)> = db(
            sqlx::query_as(sqlx::AssertSqlSafe(crate::log::shards::SHARD_LASTS))
                .fetch_all(conn)
                .await,
            "read each shard's last position",
        )?;
        Ok(Frontier(rows.into_iter().collect()))
    }

    /// Projection `name`'s checkpoints; with `lock`, its row is locked against every fold
    /// (folds share it) until the caller's transaction ends.
    pub async fn checkpoints(
        conn: &mut PgConnection,
        name: &str,
        lock: bool,
    ) -> Result<Frontier, ProjectError> {
        if lock {
            db(
                sqlx::query(
                    "SELECT 1 FROM projection_checkpoints WHERE projection = $1 FOR UPDATE",
                )
                .bind(name)
                .execute(&mut *conn)
                .await,
                "lock a projection's checkpoints",
            )?;
        }
        let rows: Vec<(i32, i64)> = db(
            sqlx::query_as(
                "SELECT shard, position FROM shard_checkpoints WHERE projection = $1 ORDER BY shard",
            )
            .bind(name)
            .fetch_all(conn)
            .await,
            "read a projection's checkpoints",
        )?;
        Ok(Frontier(rows.into_iter().collect()))
    }

    /// One shard's position.
    pub fn single(shard: i32, position: i64) -> Frontier {
        Frontier(BTreeMap::from([(shard, position)]))
    }

    /// Shard `shard`'s position; nothing folded of a shard it does not name.
    pub fn get(&self, shard: i32) -> i64 {
        self.0.get(&shard).copied().unwrap_or(shard_base(shard))
    }

    /// Sets shard `shard`'s position.
    pub fn set(&mut self, shard: i32, position: i64) {
        self.0.insert(shard, position);
    }

    /// Each shard and its position, in shard order.
    pub fn iter(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.0.iter().map(|(s, p)| (*s, *p))
    }

    /// Positions behind it, over every shard: with dense positions, events folded.
    pub fn folded(&self) -> i64 {
        self.iter().map(|(s, p)| p - shard_base(s)).sum()
    }

    /// The later of the two, shard by shard.
    pub fn max(&self, other: &Frontier) -> Frontier {
        let mut out = self.clone();
        for (s, p) in other.iter() {
            out.set(s, out.get(s).max(p));
        }
        out
    }

    /// The shards as two columns, for `unnest`.
    pub fn columns(&self) -> (Vec<i32>, Vec<i64>) {
        self.iter().unzip()
    }
}

impl fmt::Display for Frontier {
    /// `shard 0 at 12, shard 1 at 40`: each shard's position counted within the shard.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .iter()
            .map(|(s, p)| format!("shard {s} at {}", p - shard_base(s)))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_hold_their_own_positions() {
        assert_eq!(shard_base(0), 0);
        assert_eq!(shard_of(1), 0);
        assert_eq!(shard_of(shard_base(3) + 1), 3);
        assert_eq!(shard_of(shard_base(4) - 1), 3);
        let mut f = Frontier::single(0, 5);
        f.set(2, shard_base(2) + 7);
        assert_eq!(f.folded(), 12);
        assert_eq!(f.get(1), shard_base(1));
        assert_eq!(f.to_string(), "shard 0 at 5, shard 2 at 7");
        let later = f.max(&Frontier::single(2, shard_base(2) + 9));
        assert_eq!(later.get(2), shard_base(2) + 9);
        assert_eq!(later.get(0), 5);
    }
}

//! Entries are sealed with an HMAC-SHA256 under a secret the database keeps, over the entry's
//! key and value: a reader serves only what the store wrote, under the key it was written
//! for, even if a NATS permission lets someone else write to the bucket. A value that does
//! not verify is never served; it counts in `activity_cache_forged_total` and any write may
//! replace it.

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::cached::Cached;

/// What a sealed value starts with, before the tag in hex and a space.
const PREFIX: &[u8] = b"hmac-sha256:";

/// The secret entries are sealed with.
#[derive(Clone)]
pub struct CacheMac(Arc<Vec<u8>>);

impl CacheMac {
    /// The secret as the database keeps it (the log's owner and the HTTP API's logins may
    /// read it; SQL readers may not).
    pub async fn load(pool: &sqlx::PgPool) -> Result<CacheMac, crate::db::DbError> {
        let secret: Vec<u8> = crate::db::db(
            sqlx::query_scalar("SELECT cache_mac_secret()")
                .fetch_one(pool)
                .await,
            "read the cache secret",
        )?;
        Ok(CacheMac::new(&secret))
    }
}

impl std::fmt::Debug for CacheMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheMac(..)")
    }
}

/// What a value read from the bucket turned out to be.
#[derive(Debug, PartialEq)]
pub(super) enum Opened {
    /// Written by the store for this key.
    Sealed(Cached),
    /// Not sealed by the store's secret for this key (forged, moved from another key, or
    /// written before entries were sealed).
    Forged,
}

impl CacheMac {
    /// Seals with `secret` (at least 32 bytes).
    pub fn new(secret: &[u8]) -> Self {
        CacheMac(Arc::new(secret.to_vec()))
    }

    fn tag(&self, key: &str, json: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key");
        mac.update(key.as_bytes());
        mac.update(b"\0");
        mac.update(json);
        mac
    }

    /// `value` as stored under `key`: the prefix, the tag in hex, a space, the JSON.
    pub(super) fn seal(&self, key: &str, value: &Cached) -> Bytes {
        let json = value.bytes();
        let tag = self.tag(key, &json).finalize().into_bytes();
        let mut out = PREFIX.to_vec();
        out.extend(tag.iter().flat_map(|b| format!("{b:02x}").into_bytes()));
        out.push(b' ');
        out.extend_from_slice(&json);
        out.into()
    }

    /// Reads a value stored under `key`.
    pub(super) fn open(&self, key: &str, stored: &[u8]) -> Opened {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Opened::Forged;
        };
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            return Opened::Forged;
        };
        let (hex, json) = (&rest[..space], &rest[space + 1..]);
        let tag: Option<Vec<u8>> = std::str::from_utf8(hex).ok().and_then(|h| {
            (h.len() == 64)
                .then(|| {
                    (0..32)
                        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok())
                        .collect()
                })
                .flatten()
        });
        match tag {
            Some(tag) if self.tag(key, json).verify_slice(&tag).is_ok() => {
                Cached::parse(json).map_or(Opened::Forged, Opened::Sealed)
            }
            _ => Opened::Forged,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> Cached {
        Cached::Row {
            row: serde_json::json!({"user_id": "ann", "events": 3}),
            as_of: 7,
            epoch: 1,
        }
    }

    #[test]
    fn a_sealed_value_opens_under_its_own_key_only() {
        let mac = CacheMac::new(&[7; 32]);
        let sealed = mac.seal("user_summary.v1.acme.u1", &row());
        assert_eq!(
            mac.open("user_summary.v1.acme.u1", &sealed),
            Opened::Sealed(row())
        );
        // Moved to another tenant's key, or sealed with another secret: forged.
        assert_eq!(
            mac.open("user_summary.v1.globex.u1", &sealed),
            Opened::Forged
        );
        assert_eq!(
            CacheMac::new(&[8; 32]).open("user_summary.v1.acme.u1", &sealed),
            Opened::Forged
        );
    }

    #[test]
    fn anything_else_is_forged() {
        let mac = CacheMac::new(&[7; 32]);
        let key = "k";
        let sealed = mac.seal(key, &row());
        let mut tampered = sealed.to_vec();
        let last = tampered.len() - 2;
        tampered[last] ^= 1;
        for stored in [
            &b"{\"as_of\": 99999999, \"epoch\": 9, \"user_id\": \"ann\"}"[..],
            &b""[..],
            &b"hmac-sha256:zz {}"[..],
            &tampered[..],
        ] {
            assert_eq!(mac.open(key, stored), Opened::Forged, "{stored:?}");
        }
    }
}

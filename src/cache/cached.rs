//! What an entry holds: a row or a tombstone, each as of a checkpoint and epoch of its
//! projection; and the keys that name a tenant's user without naming them.

use bytes::Bytes;
use serde_json::Value;

/// A cached value: a row, or a tombstone that only keeps older writes out; each as of a
/// checkpoint of the projection.
#[derive(Debug, Clone, PartialEq)]
pub enum Cached {
    /// The row, as JSON (its `position` included).
    Row {
        /// The row.
        row: Value,
        /// The checkpoint it was read at.
        as_of: i64,
        /// The projection's epoch it was read at.
        epoch: i64,
    },
    /// No row here; nothing read before (`epoch`, `as_of`) may be written.
    Tombstone {
        /// The checkpoint of the fold that wrote it.
        as_of: i64,
        /// The projection's epoch then.
        epoch: i64,
    },
}

impl Cached {
    /// Its place in the order of writes: the projection's epoch, then the log position.
    fn order(&self) -> (i64, i64) {
        match self {
            Cached::Row { as_of, epoch, .. } | Cached::Tombstone { as_of, epoch } => {
                (*epoch, *as_of)
            }
        }
    }

    /// The projection's epoch it belongs to.
    pub fn epoch(&self) -> i64 {
        self.order().0
    }

    /// Whether this may replace `held`: it is newer (a later epoch, or a later checkpoint in
    /// the same epoch), or it is the row a tombstone of the same checkpoint was waiting for.
    pub(super) fn replaces(&self, held: &Cached) -> bool {
        self.order() > held.order()
            || (self.order() == held.order()
                && matches!((self, held), (Cached::Row { .. }, Cached::Tombstone { .. })))
    }

    pub(super) fn parse(bytes: &[u8]) -> Option<Cached> {
        let mut value: Value = serde_json::from_slice(bytes).ok()?;
        let fields = value.as_object_mut()?;
        let as_of = fields.remove("as_of")?.as_i64()?;
        // Entries written before epochs existed are of epoch 0.
        let epoch = fields.remove("epoch").and_then(|e| e.as_i64()).unwrap_or(0);
        if value.get("tombstone").is_some() {
            return Some(Cached::Tombstone { as_of, epoch });
        }
        Some(Cached::Row {
            row: value,
            as_of,
            epoch,
        })
    }

    pub(super) fn bytes(&self) -> Bytes {
        let value = match self {
            Cached::Row { row, as_of, epoch } => {
                let mut row = row.clone();
                if let Some(fields) = row.as_object_mut() {
                    fields.insert("as_of".into(), (*as_of).into());
                    fields.insert("epoch".into(), (*epoch).into());
                }
                row
            }
            Cached::Tombstone { as_of, epoch } => {
                serde_json::json!({ "tombstone": true, "as_of": as_of, "epoch": epoch })
            }
        };
        serde_json::to_vec(&value)
            .expect("JSON values serialise")
            .into()
    }
}

/// A key token for any user id: `[A-Za-z0-9_-]` kept, every other byte `=XX`.
pub fn key_token(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02X}"));
        }
    }
    out
}

/// A user's key token: `u` and the first 128 bits of the SHA-256 of the user id, in hex. The
/// id never appears in a key, so neither a bucket listing nor a deletion marker names anyone.
pub fn user_key(user: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(user.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("u{hex}")
}

#[cfg(test)]
mod tests {
    use super::{key_token, user_key};

    #[test]
    fn user_keys_never_name_the_user_and_differ_per_user() {
        let k = user_key("ann.o'neil@example.com");
        assert!(!k.contains("ann") && k.len() == 33, "{k}");
        assert!(k.bytes().all(|b| b.is_ascii_alphanumeric()), "{k}");
        assert_ne!(user_key("ann"), user_key("Ann"));
        assert_eq!(user_key("ann"), user_key("ann"));
    }

    #[test]
    fn key_tokens_keep_plain_ids_and_escape_everything_else() {
        assert_eq!(key_token("ann_1-x"), "ann_1-x");
        assert_eq!(key_token("a.b@x"), "a=2Eb=40x");
        assert_eq!(key_token("ü"), "=C3=BC");
        // `=` is escaped too, so two ids never share a token.
        assert_ne!(key_token("=2E"), key_token("."));
    }

    #[test]
    fn key_tokens_only_use_characters_nats_keys_allow_and_no_dots() {
        let token = key_token("Ann.O'Neil/ü@x y=*>\u{7f}");
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-=".contains(&b)),
            "{token}"
        );
    }
}

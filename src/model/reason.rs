//! Why a command was refused: a stable reason code, the field at fault and a message naming the rule.

use std::fmt;

/// The stable reason codes of the wire contract, stored in `dead_letters.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The bytes are not a UTF-8 JSON object.
    Malformed,
    /// `type` names no command of the contract.
    UnknownType,
    /// A field is missing, of the wrong kind, unknown, or breaks its rule.
    InvalidField,
    /// The command's tenant has not been created.
    UnknownTenant,
    /// `create_tenant` for a tenant that already exists.
    TenantExists,
    /// The command's user is not registered in the tenant.
    UnknownUser,
    /// `register_user` for a user already registered in the tenant.
    UserExists,
    /// The subject's tenant differs from the body's `tenant`.
    TenantMismatch,
    /// `occurred_at` lies outside the accepted window.
    OutOfRange,
    /// The command or its metadata is larger than allowed.
    TooLarge,
    /// The command's month was detached (archived) from the log.
    ArchivedMonth,
    /// The command names a contract version this store does not know.
    UnsupportedVersion,
    /// An activity's metadata breaks its tenant's schema for its type.
    SchemaViolation,
}

impl Reason {
    /// Every reason code, in the order of the contract.
    pub const ALL: [Reason; 13] = [
        Reason::Malformed,
        Reason::UnknownType,
        Reason::InvalidField,
        Reason::UnknownTenant,
        Reason::TenantExists,
        Reason::UnknownUser,
        Reason::UserExists,
        Reason::TenantMismatch,
        Reason::OutOfRange,
        Reason::TooLarge,
        Reason::ArchivedMonth,
        Reason::UnsupportedVersion,
        Reason::SchemaViolation,
    ];

    /// The code as stored and as used for metric labels.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Malformed => "malformed",
            Reason::UnknownType => "unknown_type",
            Reason::InvalidField => "invalid_field",
            Reason::UnknownTenant => "unknown_tenant",
            Reason::TenantExists => "tenant_exists",
            Reason::UnknownUser => "unknown_user",
            Reason::UserExists => "user_exists",
            Reason::TenantMismatch => "tenant_mismatch",
            Reason::OutOfRange => "out_of_range",
            Reason::TooLarge => "too_large",
            Reason::ArchivedMonth => "archived_month",
            Reason::UnsupportedVersion => "unsupported_version",
            Reason::SchemaViolation => "schema_violation",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused command: what is wrong, in the producer's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// The stable reason code.
    pub reason: Reason,
    /// The field at fault, when one is.
    pub field: Option<&'static str>,
    /// A human message that names the field and the rule.
    pub message: String,
}

impl Rejection {
    /// A rejection that concerns the message as a whole.
    pub fn whole(reason: Reason, message: impl Into<String>) -> Self {
        Rejection {
            reason,
            field: None,
            message: message.into(),
        }
    }

    /// A rejection of one field; the message is prefixed with the field's name.
    pub fn field(reason: Reason, field: &'static str, rule: impl fmt::Display) -> Self {
        Rejection {
            reason,
            field: Some(field),
            message: format!("`{field}` {rule}"),
        }
    }

    /// `invalid_field` for one field.
    pub fn invalid(field: &'static str, rule: impl fmt::Display) -> Self {
        Rejection::field(Reason::InvalidField, field, rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_contracts_and_distinct() {
        let codes: Vec<_> = Reason::ALL.iter().map(|r| r.code()).collect();
        assert_eq!(
            codes,
            [
                "malformed",
                "unknown_type",
                "invalid_field",
                "unknown_tenant",
                "tenant_exists",
                "unknown_user",
                "user_exists",
                "tenant_mismatch",
                "out_of_range",
                "too_large",
                "archived_month",
                "unsupported_version",
                "schema_violation"
            ]
        );
    }

    #[test]
    fn field_rejection_names_the_field() {
        let r = Rejection::invalid("email", "must contain one @");
        assert_eq!(r.field, Some("email"));
        assert_eq!(r.to_string(), "invalid_field: `email` must contain one @");
    }
}

//! Commands of the wire contract, decoded from the bytes a producer published.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::fields::{self, MAX_COMMAND_BYTES, TimeWindow};
use super::reason::{Reason, Rejection};

/// A validated command. Every field has passed its rule; only the decision against the
/// registry (does the tenant exist, is the user registered) remains.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// The producer's command id, the key of exactly-once application.
    pub id: Uuid,
    /// The tenant slug.
    pub tenant: String,
    /// What the command asks for.
    pub body: CommandBody,
}

/// The five kinds of command and their fields.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandBody {
    /// `create_tenant`.
    CreateTenant { name: String },
    /// `register_user`.
    RegisterUser {
        user: String,
        email: String,
        name: Option<String>,
    },
    /// `change_user_email`.
    ChangeUserEmail { user: String, email: String },
    /// `record_activity`; `occurred_at` already defaulted and normalised to UTC.
    RecordActivity {
        user: String,
        activity_type: String,
        occurred_at: DateTime<Utc>,
        metadata: Map<String, Value>,
    },
    /// `forget_user`.
    ForgetUser { user: String },
}

impl CommandBody {
    /// The wire name of the command type.
    pub fn type_name(&self) -> &'static str {
        match self {
            CommandBody::CreateTenant { .. } => "create_tenant",
            CommandBody::RegisterUser { .. } => "register_user",
            CommandBody::ChangeUserEmail { .. } => "change_user_email",
            CommandBody::RecordActivity { .. } => "record_activity",
            CommandBody::ForgetUser { .. } => "forget_user",
        }
    }

    /// The user the command is about, if any.
    pub fn user(&self) -> Option<&str> {
        match self {
            CommandBody::CreateTenant { .. } => None,
            CommandBody::RegisterUser { user, .. }
            | CommandBody::ChangeUserEmail { user, .. }
            | CommandBody::RecordActivity { user, .. }
            | CommandBody::ForgetUser { user } => Some(user),
        }
    }
}

/// The fields each command type accepts besides `type`, `id` and `tenant`.
fn allowed_fields(type_name: &str) -> Option<&'static [&'static str]> {
    Some(match type_name {
        "create_tenant" => &["name"],
        "register_user" => &["user", "email", "name"],
        "change_user_email" => &["user", "email"],
        "record_activity" => &["user", "activity_type", "occurred_at", "metadata"],
        "forget_user" => &["user"],
        _ => return None,
    })
}

/// The wire contract versions this store decides: a command names one in `version`, or
/// none, which is version 1.
pub const CONTRACT_VERSIONS: [u64; 1] = [1];

/// Checks a command's `version`: absent or one of [`CONTRACT_VERSIONS`]. Any other is
/// refused as `unsupported_version`, never decided by this version's rules.
fn contract_version(version: Option<Value>) -> Result<(), Rejection> {
    let Some(version) = version else {
        return Ok(());
    };
    let n = version
        .as_u64()
        .ok_or_else(|| Rejection::invalid("version", "must be a whole number, e.g. 1"))?;
    if CONTRACT_VERSIONS.contains(&n) {
        return Ok(());
    }
    Err(Rejection::field(
        Reason::UnsupportedVersion,
        "version",
        format!("is {n}; this store supports version 1 of the wire contract"),
    ))
}

/// Decodes and validates one command. Never panics, whatever the bytes.
///
/// `received_at` is the default `occurred_at` and the anchor of the accepted window.
pub fn decode(
    bytes: &[u8],
    received_at: DateTime<Utc>,
    window: &TimeWindow,
) -> Result<Command, Rejection> {
    if bytes.len() > MAX_COMMAND_BYTES {
        return Err(Rejection::whole(
            Reason::TooLarge,
            format!(
                "the command is {} bytes; at most {MAX_COMMAND_BYTES} are accepted",
                bytes.len()
            ),
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Rejection::whole(Reason::Malformed, format!("not valid UTF-8 JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(Rejection::whole(
            Reason::Malformed,
            "a command must be a JSON object",
        ));
    };
    // Before anything else: a later contract may have types and fields this one does not.
    contract_version(obj.remove("version"))?;
    let type_name = match obj.remove("type") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(Rejection::invalid("type", "must be a string")),
        None => return Err(Rejection::invalid("type", "is required")),
    };
    let allowed = allowed_fields(&type_name).ok_or_else(|| {
        Rejection::field(
            Reason::UnknownType,
            "type",
            format!(
                "`{}` is not one of create_tenant, register_user, change_user_email, record_activity, forget_user",
                type_name.escape_default()
            ),
        )
    })?;
    let mut f = Fields(obj);
    let id = f.required_str("id")?;
    let id = Uuid::parse_str(&id).map_err(|_| Rejection::invalid("id", "must be a UUID"))?;
    let tenant = f.required_str("tenant")?;
    fields::tenant_slug("tenant", &tenant)?;
    if let Some(extra) = f.0.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Rejection {
            reason: Reason::InvalidField,
            field: None,
            message: format!("`{}` is not a field of {type_name}", extra.escape_default()),
        });
    }
    let body = match type_name.as_str() {
        "create_tenant" => {
            let name = f.required_str("name")?;
            fields::display_name("name", &name)?;
            CommandBody::CreateTenant { name }
        }
        "register_user" => CommandBody::RegisterUser {
            user: f.new_user()?,
            email: f.email()?,
            name: f.optional_name()?,
        },
        "change_user_email" => CommandBody::ChangeUserEmail {
            user: f.user()?,
            email: f.email()?,
        },
        "record_activity" => record_activity(&mut f, received_at, window)?,
        _ => CommandBody::ForgetUser { user: f.user()? },
    };
    Ok(Command { id, tenant, body })
}

fn record_activity(
    f: &mut Fields,
    received_at: DateTime<Utc>,
    window: &TimeWindow,
) -> Result<CommandBody, Rejection> {
    let user = f.user()?;
    let activity_type = f.required_str("activity_type")?;
    fields::activity_type(&activity_type)?;
    let occurred_at = match f.optional_str("occurred_at")? {
        Some(s) => fields::timestamp(&s)?,
        None => received_at,
    };
    fields::within_window(occurred_at, received_at, window)?;
    let metadata = match f.0.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(v) => fields::metadata(v)?,
    };
    Ok(CommandBody::RecordActivity {
        user,
        activity_type,
        occurred_at,
        metadata,
    })
}

/// The remaining fields of a command object, taken out one by one.
struct Fields(Map<String, Value>);

impl Fields {
    fn optional_str(&mut self, field: &'static str) -> Result<Option<String>, Rejection> {
        match self.0.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Rejection::invalid(field, "must be a string")),
        }
    }

    fn required_str(&mut self, field: &'static str) -> Result<String, Rejection> {
        self.optional_str(field)?
            .ok_or_else(|| Rejection::invalid(field, "is required"))
    }

    fn user(&mut self) -> Result<String, Rejection> {
        let user = self.required_str("user")?;
        fields::user_id(&user)?;
        Ok(user)
    }

    fn new_user(&mut self) -> Result<String, Rejection> {
        let user = self.required_str("user")?;
        fields::new_user_id(&user)?;
        Ok(user)
    }

    fn email(&mut self) -> Result<String, Rejection> {
        let email = self.required_str("email")?;
        fields::email(&email)?;
        Ok(email)
    }

    fn optional_name(&mut self) -> Result<Option<String>, Rejection> {
        let name = self.optional_str("name")?;
        if let Some(n) = &name {
            fields::display_name("name", n)?;
        }
        Ok(name)
    }
}

#[cfg(test)]
#[path = "command_tests.rs"]
mod tests;

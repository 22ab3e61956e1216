//! Deciding commands against the registry: pure, in order, batch-aware.
//!
//! A batch is decided command by command against a view of the registry that already holds
//! the effects of the commands before it, so `create_tenant`, `register_user` and
//! `record_activity` in one batch all succeed. The net change to the registry is collected
//! for the batch's transaction to write.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::contracts::Contract;
use crate::model::{Command, CommandBody, Lineage, NewEvent, Reason, Rejection};

/// A user's registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// The email.
    pub email: String,
    /// The display name.
    pub name: Option<String>,
}

/// What a batch does to one user's registry row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChange {
    /// (Re-)registered: the row is replaced by this one.
    Register(UserRow),
    /// Only the email changed.
    Email(String),
    /// Forgotten: the row is deleted.
    Forget,
}

/// The registry as seen while deciding a batch: what the database had for the batch's
/// tenants and users, plus the batch's own effects so far.
#[derive(Debug, Default, Clone)]
pub struct RegistryView {
    tenants: HashSet<String>,
    users: HashSet<(String, String)>,
    new_tenants: Vec<(String, String)>,
    user_changes: BTreeMap<(String, String), UserChange>,
    contracts: HashMap<(String, String), Arc<Contract>>,
}

impl RegistryView {
    /// A view of the given existing tenants and (tenant, user) pairs.
    pub fn new(
        tenants: impl IntoIterator<Item = String>,
        users: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        RegistryView {
            tenants: tenants.into_iter().collect(),
            users: users.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Holds each (tenant, activity type) in `contracts` to its schema.
    pub fn with_contracts(mut self, contracts: HashMap<(String, String), Arc<Contract>>) -> Self {
        self.contracts = contracts;
        self
    }

    /// Tenants the batch creates, with their names, in order.
    pub fn new_tenants(&self) -> &[(String, String)] {
        &self.new_tenants
    }

    /// The net change to each user the batch touched.
    pub fn user_changes(&self) -> &BTreeMap<(String, String), UserChange> {
        &self.user_changes
    }

    /// Decides one command; on acceptance the view takes its effect and its event is returned.
    pub fn decide(
        &mut self,
        mut command: Command,
        received_at: DateTime<Utc>,
        lineage: Lineage,
    ) -> Result<NewEvent, Rejection> {
        let tenant = command.tenant.clone();
        let tenant_known = self.tenants.contains(&tenant);
        if let CommandBody::CreateTenant { name } = &command.body {
            if tenant_known {
                return Err(Rejection::field(
                    Reason::TenantExists,
                    "tenant",
                    format!("`{tenant}` already exists"),
                ));
            }
            self.tenants.insert(tenant.clone());
            self.new_tenants.push((tenant, name.clone()));
            return Ok(NewEvent::from_command(command, received_at, lineage));
        }
        if !tenant_known {
            return Err(Rejection::field(
                Reason::UnknownTenant,
                "tenant",
                format!("`{tenant}` does not exist; create it with create_tenant first"),
            ));
        }
        let user = command
            .body
            .user()
            .expect("every command but create_tenant has a user")
            .to_owned();
        let key = (tenant, user);
        let registered = self.users.contains(&key);
        match &command.body {
            CommandBody::RegisterUser { email, name, .. } => {
                if registered {
                    return Err(Rejection::field(
                        Reason::UserExists,
                        "user",
                        format!("`{}` is already registered in `{}`", key.1, key.0),
                    ));
                }
                let row = UserRow {
                    email: email.clone(),
                    name: name.clone(),
                };
                self.users.insert(key.clone());
                self.user_changes.insert(key, UserChange::Register(row));
            }
            _ if !registered => {
                return Err(Rejection::field(
                    Reason::UnknownUser,
                    "user",
                    format!("`{}` is not registered in `{}`", key.1, key.0),
                ));
            }
            CommandBody::ChangeUserEmail { email, .. } => {
                let change = match self.user_changes.remove(&key) {
                    Some(UserChange::Register(row)) => UserChange::Register(UserRow {
                        email: email.clone(),
                        ..row
                    }),
                    _ => UserChange::Email(email.clone()),
                };
                self.user_changes.insert(key, change);
            }
            CommandBody::ForgetUser { .. } => {
                self.users.remove(&key);
                self.user_changes.insert(key, UserChange::Forget);
            }
            CommandBody::CreateTenant { .. } => {}
            CommandBody::RecordActivity { .. } => self.hold_to_contract(&mut command)?,
        }
        Ok(NewEvent::from_command(command, received_at, lineage))
    }
}

impl RegistryView {
    /// Refuses an activity whose metadata breaks its tenant's schema for its type.
    fn hold_to_contract(&self, command: &mut Command) -> Result<(), Rejection> {
        if self.contracts.is_empty() {
            return Ok(());
        }
        let CommandBody::RecordActivity {
            activity_type,
            metadata,
            ..
        } = &mut command.body
        else {
            return Ok(());
        };
        match self
            .contracts
            .get(&(command.tenant.clone(), activity_type.clone()))
        {
            Some(contract) => contract.check_map(metadata),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

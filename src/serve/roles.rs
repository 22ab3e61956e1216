//! Supervising the store's roles: a role that ends with an error is restarted with backoff
//! and counted; its state is what `/livez` and `/readyz` report.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::health::Heartbeat;

/// How long a trouble may last (a stream being re-created) before the role is not ready.
pub const TROUBLE_GRACE: Duration = Duration::from_secs(3);

/// Where a role stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleState {
    /// Starting: connecting, installing, or waiting as a standby for the active one's lease.
    Starting,
    /// Working; its heartbeat must keep beating.
    Running,
    /// Ended with an error; started again after a backoff.
    Restarting {
        /// What ended it.
        error: String,
    },
    /// Stopped for shutdown.
    Stopped,
}

/// One role's state and heartbeat, shared with the health checks.
#[derive(Debug, Clone)]
pub struct Role {
    /// `ingest` or `project`.
    pub name: &'static str,
    state: Arc<Mutex<RoleState>>,
    /// Beaten by the role's loop.
    pub heartbeat: Heartbeat,
}

impl Role {
    /// A role that has not started yet.
    pub fn new(name: &'static str) -> Self {
        metrics::counter!("activity_role_restarts_total", "role" => name).increment(0);
        metrics::gauge!("activity_role_up", "role" => name).set(0.0);
        Role {
            name,
            state: Arc::new(Mutex::new(RoleState::Starting)),
            heartbeat: Heartbeat::new(),
        }
    }

    /// Where it stands now.
    pub fn state(&self) -> RoleState {
        self.state.lock().expect("role state").clone()
    }

    /// Marks it running (once its start-up is done).
    pub fn running(&self) {
        self.heartbeat.beat();
        self.set(RoleState::Running);
    }

    fn set(&self, state: RoleState) {
        let up = matches!(state, RoleState::Running);
        metrics::gauge!("activity_role_up", "role" => self.name).set(if up { 1.0 } else { 0.0 });
        *self.state.lock().expect("role state") = state;
    }

    /// Why it is not alive: running, but its loop has not beaten within `timeout`, or it
    /// has been unable to use what it needs (a stream, a bucket) for longer than that.
    pub fn stuck(&self, timeout: Duration) -> Option<String> {
        if self.state() != RoleState::Running {
            return None;
        }
        let age = self.heartbeat.age();
        if age > timeout {
            return Some(format!(
                "{}: no progress for {:.0} s (limit {:.0} s)",
                self.name,
                age.as_secs_f64(),
                timeout.as_secs_f64()
            ));
        }
        match self.heartbeat.worst_trouble() {
            Some((why, lasted)) if lasted > timeout => Some(format!(
                "{}: {why}, for {:.0} s (limit {:.0} s)",
                self.name,
                lasted.as_secs_f64(),
                timeout.as_secs_f64()
            )),
            _ => None,
        }
    }

    /// Why it is not ready, if it is not: not running, or unable for a few seconds to use
    /// what it needs.
    pub fn not_ready(&self) -> Option<String> {
        match self.state() {
            RoleState::Running => self
                .heartbeat
                .worst_trouble()
                .filter(|(_, lasted)| *lasted >= TROUBLE_GRACE)
                .map(|(why, lasted)| {
                    format!("{}: {why} (for {:.0} s)", self.name, lasted.as_secs_f64())
                }),
            RoleState::Starting => Some(format!(
                "{}: starting (or standby, waiting for the active one's lease)",
                self.name
            )),
            RoleState::Restarting { error } => {
                Some(format!("{}: restarting after an error: {error}", self.name))
            }
            RoleState::Stopped => Some(format!("{}: stopped", self.name)),
        }
    }
}

/// Runs `attempt` until `shutdown`: each attempt starts the role (calling `Role::running`
/// once it works) and runs it; one that ends with an error is logged, counted in
/// `activity_role_restarts_total{role}` and made again after a backoff (1 s, doubling to
/// 60 s, back to 1 s after a minute of running).
pub async fn supervise<F, Fut, E>(role: Role, shutdown: CancellationToken, mut attempt: F)
where
    F: FnMut(Role, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let mut backoff = Duration::from_secs(1);
    loop {
        role.set(RoleState::Starting);
        let started = tokio::time::Instant::now();
        // Its own task, so a panic is an error to restart after, not the end of supervision.
        // The role watches `shutdown` itself and finishes what it holds before returning.
        let ended = match tokio::spawn(attempt(role.clone(), shutdown.clone())).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panicked) => Some(format!("it panicked: {panicked}")),
        };
        if shutdown.is_cancelled() {
            role.set(RoleState::Stopped);
            return;
        }
        let error = ended.unwrap_or_else(|| "it stopped by itself".to_owned());
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tracing::error!(role = role.name, %error, retry_in = ?backoff, "role stopped; restarting it");
        metrics::counter!("activity_role_restarts_total", "role" => role.name).increment(1);
        role.set(RoleState::Restarting { error });
        tokio::select! {
            _ = shutdown.cancelled() => {
                role.set(RoleState::Stopped);
                return;
            }
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

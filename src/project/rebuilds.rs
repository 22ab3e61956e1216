//! The projector's rebuilds: a projection folded from the whole log (or one tenant's) into
//! shadow tables while the live ones serve, optionally verified, swapped in, its cache
//! cleared and refilled.

use super::fold::refill;
use super::frontier::Frontier;
use super::shadow;
use super::verify::Verified;
use super::worker::Projector;
use super::{ProjectError, Projection};

impl Projector {
    /// Rebuilds projection `name` from the whole log without taking reads down: folds it into
    /// shadow tables (calling `progress(folded, last)`) while the live ones serve, swaps them
    /// in, then clears and refills its cache bucket. Returns the positions it stands at.
    pub async fn rebuild(
        &self,
        name: &str,
        progress: impl Fn(i64, i64),
    ) -> Result<Frontier, ProjectError> {
        let p = self.rebuildable(name)?;
        let shadow = shadow::prepare(&self.pool, p, self.config.window, progress).await?;
        self.swap(p, shadow).await
    }

    /// `rebuild`, comparing the rebuilt tables with the live ones at the same position before
    /// the swap; when they differ, swaps only if `force`. Returns what the comparison found
    /// and, if it swapped, the position the projection stands at.
    pub async fn rebuild_verified(
        &self,
        name: &str,
        progress: impl Fn(i64, i64),
        force: bool,
    ) -> Result<(Verified, Option<Frontier>), ProjectError> {
        let p = self.rebuildable(name)?;
        let mut shadow = shadow::prepare(&self.pool, p, self.config.window, progress).await?;
        let verified = super::verify::verify(&self.pool, p, &mut shadow).await?;
        if !verified.differences.is_empty() && !force {
            // Dropped unswapped: the live tables serve on, untouched.
            shadow.discard().await;
            return Ok((verified, None));
        }
        let position = self.swap(p, shadow).await?;
        Ok((verified, Some(position)))
    }

    /// Rebuilds projection `name` for `tenant` alone (see `super::tenant`), calling
    /// `progress(events folded, events)`: every other tenant's rows stay as they are. With
    /// `verify`, compares first and swaps only if the rows match or `force`. Returns what the
    /// comparison found and, if it swapped, the tenant's position.
    pub async fn rebuild_tenant(
        &self,
        name: &str,
        tenant: &str,
        progress: impl Fn(i64, i64),
        (verify, force): (bool, bool),
    ) -> Result<(Option<Verified>, Option<i64>), ProjectError> {
        let p = self.rebuildable(name)?;
        let mut shadow = super::tenant::prepare(&self.pool, p, tenant, progress).await?;
        let verified = match verify {
            true => Some(super::verify::verify(&self.pool, p, &mut shadow).await?),
            false => None,
        };
        if verified.as_ref().is_some_and(|v| !v.differences.is_empty()) && !force {
            shadow.discard().await;
            return Ok((verified, None));
        }
        let position = super::tenant::swap_in(&self.pool, p, shadow).await?;
        if let Some(cache) = self.caches.get(&p.name) {
            cache.clear().await?;
            refill(&self.pool, p, cache).await?;
        }
        Ok((verified, Some(position)))
    }

    pub(super) fn rebuildable(&self, name: &str) -> Result<&Projection, ProjectError> {
        let p = self
            .projections
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| ProjectError::Unknown(name.to_owned()))?;
        if p.cache.is_some() && !self.caches.contains_key(name) {
            return Err(ProjectError::Invalid {
                name: name.to_owned(),
                problem: "is cached: rebuild it with NATS configured, so that its cache \
                          entries are cleared and refilled"
                    .into(),
            });
        }
        Ok(p)
    }

    pub(super) async fn swap(
        &self,
        p: &Projection,
        shadow: shadow::Shadow,
    ) -> Result<Frontier, ProjectError> {
        let position = shadow::swap_in(&self.pool, p, shadow).await?;
        if let Some(cache) = self.caches.get(&p.name) {
            cache.clear().await?;
            refill(&self.pool, p, cache).await?;
        }
        Ok(position)
    }
}

//! The pipeline's questions to shared state: is this token revoked, and may this limited-use
//! token be used once more. Without shared state configured there is nothing to ask, except
//! for a limited-use token, which is then refused: its limit cannot be kept.

use super::Gateway;
use crate::principal::{Principal, TokenKind};
use crate::reject::Rejection;
use crate::store::StateError;

impl Gateway {
    /// Refuses a revoked token (by `jti`, subject, or subject within `organization`).
    pub(super) async fn admit(
        &self,
        principal: &Principal,
        organization: Option<&str>,
    ) -> Result<(), Rejection> {
        match &self.store {
            Some(store) => Ok(store.admit(principal, organization).await?),
            None => Ok(()),
        }
    }

    /// Counts one use of a limited-use exchanged token; called once the request is allowed, so
    /// a refused request spends nothing.
    pub(super) async fn spend(&self, principal: &Principal) -> Result<(), Rejection> {
        let TokenKind::Exchanged(binding) = &principal.kind else {
            return Ok(());
        };
        let Some(max) = binding.uses else {
            return Ok(());
        };
        match &self.store {
            Some(store) => Ok(store.spend(principal, max).await?),
            None => Err(StateError::Unavailable.into()),
        }
    }
}

//! The decision: a pure function of the route's access rule and the verified principal. Proxy
//! mode, forward-auth and `explain` all call it, so they can never disagree.

use crate::reject::Rejection;
use crate::route::{Access, ScopeRule};
use crate::verify::Principal;

/// What to do with a request whose route matched and whose caller (if any) was authenticated.
#[derive(Debug)]
pub enum Decision {
    Allow,
    Deny(Rejection),
}

/// Decides `access` for `principal` (`None` for an unauthenticated caller).
pub fn decide(access: &Access, principal: Option<&Principal>) -> Decision {
    match (access, principal) {
        (Access::Public, _) => Decision::Allow,
        (Access::Scopes(rule), Some(p)) if satisfies(rule, p) => Decision::Allow,
        (Access::Scopes(rule), Some(_)) => Decision::Deny(Rejection::InsufficientScope {
            required: required(rule),
        }),
        // The pipeline authenticates before deciding; reaching this is a bug, and it fails closed.
        (Access::Scopes(_), None) => {
            Decision::Deny(Rejection::Auth(crate::verify::AuthError::Missing))
        }
    }
}

fn satisfies(rule: &ScopeRule, p: &Principal) -> bool {
    rule.all.iter().all(|s| p.has_scope(s))
        && (rule.any.is_empty() || rule.any.iter().any(|s| p.has_scope(s)))
}

/// The `scope` parameter of a 403: every required scope, then the any-of choices.
fn required(rule: &ScopeRule) -> String {
    rule.all
        .iter()
        .chain(&rule.any)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(" ")
}

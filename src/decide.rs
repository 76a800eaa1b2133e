//! The decision: a pure function of the route, the verified caller, the organization's
//! membership answer and the request's facts. Proxy mode, forward-auth and `explain` all call
//! it, so they can never disagree. Any doubt is a denial.

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

use crate::condition::Facts;
use crate::policy::{Access, Combine, ForwardScopes, Grants, Membership, Roles, Route, ScopeRule};
use crate::principal::Principal;

/// What to do with a request.
#[derive(Debug)]
pub(crate) enum Decision {
    Allow(Allowed),
    Deny {
        denial: Denial,
        /// The effective scopes, when the decision got as far as computing them (a scope or
        /// condition denial): what `explain` shows as the "why".
        effective: Option<Vec<String>>,
    },
}

impl Decision {
    fn deny(denial: Denial) -> Self {
        Decision::Deny {
            denial,
            effective: None,
        }
    }
}

/// Why the decision is no; `reject` maps each to its HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// A protected route reached without a verified caller (the pipeline authenticates first,
    /// so this fails closed rather than happens).
    NoCaller,
    /// The caller is not a member of the organization.
    NotMember,
    /// The effective scopes miss a scope the route requires.
    InsufficientScope {
        /// The route's rule as a space-delimited list.
        required: String,
    },
    /// The route's condition is false or could not be evaluated.
    ConditionFailed,
}

/// What an allowed request carries upstream.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Allowed {
    /// The effective scopes in the organization (or the token's, for org-less routes).
    pub effective: Vec<String>,
    /// The scopes the minted token carries (sorted).
    pub scopes: Vec<String>,
    /// The backend claims the route forwards, under their forwarded names.
    pub claims: Map<String, Value>,
}

/// Everything the decision looks at.
#[derive(Debug)]
pub(crate) struct Input<'a> {
    pub route: &'a Route,
    pub roles: &'a Roles,
    /// `None` only for public routes.
    pub principal: Option<&'a Principal>,
    pub organization: Option<&'a str>,
    /// The backend's answer, for routes with an organization.
    pub membership: Option<&'a Membership>,
    pub params: &'a [(&'a str, &'a str)],
    pub method: &'a str,
    pub path: &'a str,
}

/// Decides one request.
pub(crate) fn decide(input: &Input<'_>) -> Decision {
    let route = input.route;
    let rule = match &route.access {
        Access::Public => return Decision::Allow(Allowed::default()),
        Access::Scopes(rule) => rule,
    };
    // The pipeline authenticates before deciding; reaching this without a caller fails closed.
    let Some(principal) = input.principal else {
        return Decision::deny(Denial::NoCaller);
    };
    let empty = Map::new();
    let (effective, backend_claims) = match (&route.organization, input.membership) {
        (None, _) => (principal.scopes.to_vec(), &empty),
        (Some(_), Some(Membership::Member(grants))) => (
            effective_scopes(grants, input.roles, principal),
            &grants.claims,
        ),
        (Some(_), Some(Membership::NotMember) | None) => {
            return Decision::deny(Denial::NotMember);
        }
    };
    let has = |s: &String| effective.binary_search(s).is_ok();
    if !rule.all.iter().all(has) || !(rule.any.is_empty() || rule.any.iter().any(has)) {
        return Decision::Deny {
            denial: Denial::InsufficientScope {
                required: required(rule),
            },
            effective: Some(effective),
        };
    }
    if let Some(condition) = &route.condition {
        let facts = Facts {
            params: input.params,
            org: input.organization,
            token: &principal.claims,
            claims: backend_claims,
            scopes: &effective,
            method: input.method,
            path: input.path,
        };
        let holds = condition.evaluate(&facts).unwrap_or_else(|e| {
            tracing::debug!(route = %route.name, error = %e, "condition failed to evaluate; denying");
            false
        });
        if !holds {
            return Decision::Deny {
                denial: Denial::ConditionFailed,
                effective: Some(effective),
            };
        }
    }
    let mut scopes: Vec<String> = match &route.forward.scopes {
        ForwardScopes::Required => rule
            .all
            .iter()
            .chain(rule.any.iter().filter(|s| has(s)))
            .cloned()
            .collect(),
        ForwardScopes::Effective => effective.clone(),
        ForwardScopes::List(list) => list.iter().filter(|s| has(s)).cloned().collect(),
    };
    scopes.sort_unstable();
    scopes.dedup();
    let claims = route
        .forward
        .claims
        .iter()
        .filter_map(|(from, to)| backend_claims.get(from).map(|v| (to.clone(), v.clone())))
        .collect();
    Decision::Allow(Allowed {
        effective,
        scopes,
        claims,
    })
}

/// Scopes granted in the organization (roles mapped through the policy, plus direct scopes),
/// combined with the token's per the issuer's `combine`. Sorted, without duplicates.
pub(crate) fn effective_scopes(
    grants: &Grants,
    roles: &Roles,
    principal: &Principal,
) -> Vec<String> {
    let granted = grants
        .roles
        .iter()
        .filter_map(|r| roles.get(r))
        .flatten()
        .chain(&grants.scopes);
    let mut scopes: Vec<String> = match principal.issuer.combine {
        Combine::Intersect => granted
            .filter(|s| principal.has_scope(s))
            .cloned()
            .collect(),
        Combine::Replace => granted.cloned().collect(),
    };
    scopes.sort_unstable();
    scopes.dedup();
    scopes
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

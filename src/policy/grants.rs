//! What a permissions backend grants a subject in an organization: the value the permissions
//! stage returns and the decision reads.

use serde::Deserialize;
use serde_json::{Map, Value};

/// What a backend grants a member.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub claims: Map<String, Value>,
}

/// A backend's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Membership {
    Member(Grants),
    /// Not a member of the organization.
    NotMember,
}

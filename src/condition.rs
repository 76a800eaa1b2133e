//! Route conditions: CEL expressions compiled once at load and evaluated per request over the
//! request's facts. Anything but a boolean `true` denies.
//!
//! Variables: `params` (path parameters), `org` (string or null), `token` (the verified token's
//! claims), `claims` (the permissions backend's claims for this organization), `scopes` (the
//! effective scopes), `method` and `path` (normalized).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

/// The variables a condition may use; anything else is a configuration error.
pub(crate) const VARIABLES: &[&str] = &[
    "params", "org", "token", "claims", "scopes", "method", "path",
];

/// Why a condition does not compile (a configuration error) or cannot be evaluated (a deny).
#[derive(Debug, thiserror::Error)]
pub enum ConditionError {
    /// Not a CEL expression.
    #[error("{0}")]
    Parse(#[from] cel::ParseErrors),
    /// It names variables scopegate does not provide.
    #[error("unknown variable(s) {}", .0.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", "))]
    UnknownVariables(Vec<String>),
    /// A fact could not become a CEL value.
    #[error("the variable `{name}` cannot be given to CEL: {source}")]
    Bind {
        name: &'static str,
        source: cel::SerializationError,
    },
    /// Evaluation failed (a missing key, a type mismatch).
    #[error("{0}")]
    Execution(#[from] cel::ExecutionError),
    /// The expression returned something other than a boolean.
    #[error("the condition returned {0}, not a boolean")]
    NotBoolean(String),
}

/// A compiled condition.
#[derive(Clone)]
pub struct Condition {
    source: String,
    program: Arc<cel::Program>,
    /// Whether it reads `token` (the verified token's claims): then every claim is kept with a
    /// cached token.
    reads_token: bool,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

/// What a condition sees.
#[derive(Debug)]
pub struct Facts<'a> {
    pub params: &'a [(&'a str, &'a str)],
    pub org: Option<&'a str>,
    pub token: &'a Map<String, Value>,
    pub claims: &'a Map<String, Value>,
    pub scopes: &'a [String],
    pub method: &'a str,
    pub path: &'a str,
}

impl Condition {
    /// Compiles `source`, refusing unknown variables.
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        let program = cel::Program::compile(source)?;
        let unknown: Vec<String> = program
            .references()
            .variables()
            .into_iter()
            .filter(|v| !VARIABLES.contains(v))
            .map(str::to_string)
            .collect();
        if !unknown.is_empty() {
            return Err(ConditionError::UnknownVariables(unknown));
        }
        let reads_token = program.references().has_variable("token");
        Ok(Self {
            source: source.to_string(),
            program: Arc::new(program),
            reads_token,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it reads the `token` variable.
    pub fn reads_token(&self) -> bool {
        self.reads_token
    }

    /// Evaluates the condition: `Ok(true)` allows; `Ok(false)` or an error denies.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Result<bool, ConditionError> {
        let mut context = cel::Context::default();
        let params: BTreeMap<&str, &str> = facts.params.iter().copied().collect();
        bind(&mut context, "params", &params)?;
        bind(&mut context, "org", &facts.org)?;
        bind(&mut context, "token", facts.token)?;
        bind(&mut context, "claims", facts.claims)?;
        bind(&mut context, "scopes", &facts.scopes)?;
        bind(&mut context, "method", &facts.method)?;
        bind(&mut context, "path", &facts.path)?;
        match self.program.execute(&context)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(ConditionError::NotBoolean(format!("{other:?}"))),
        }
    }
}

fn bind<T: serde::Serialize>(
    context: &mut cel::Context<'_, '_>,
    name: &'static str,
    value: &T,
) -> Result<(), ConditionError> {
    context
        .add_variable(name, value)
        .map_err(|source| ConditionError::Bind { name, source })
}

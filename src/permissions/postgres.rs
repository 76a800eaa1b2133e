//! The `postgres` backend: one query per lookup from a connection pool (deadpool-postgres over
//! tokio-postgres). The query takes the issuer, subject, organization and client id (`$1`..`$4`,
//! text) and returns at most one row with the columns `roles` (text[]), `scopes` (text[]),
//! `claims` (jsonb object) and `ttl` (integer seconds, may be null); no row is "not a member".
//! [`SCHEMA`] is the shipped schema and [`DEFAULT_QUERY`] reads it; an existing database
//! supplies its own `query` with the same parameters and columns.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

use super::{Answer, Backend, BackendError, BoxFuture, Grants, Membership, Query};

/// The tables `scopegate db schema` prints and `scopegate db migrate` applies (idempotent).
pub(crate) const SCHEMA: &str = r#"-- scopegate permissions schema (PostgreSQL 12+). Safe to apply again.
CREATE TABLE IF NOT EXISTS scopegate_organizations (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- What a caller, identified by its token's issuer and subject, may do in an organization.
CREATE TABLE IF NOT EXISTS scopegate_memberships (
    issuer        text NOT NULL,                -- the token's `iss`, exactly
    subject       text NOT NULL,                -- the token's `sub`
    organization  text NOT NULL REFERENCES scopegate_organizations (name) ON DELETE CASCADE,
    roles         text[] NOT NULL DEFAULT '{}', -- role names of the policy files
    scopes        text[] NOT NULL DEFAULT '{}', -- scopes granted directly
    claims        jsonb NOT NULL DEFAULT '{}'   -- forwarded in the minted token (an object)
                  CHECK (jsonb_typeof(claims) = 'object'),
    ttl_seconds   integer CHECK (ttl_seconds IS NULL OR ttl_seconds >= 0),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (issuer, subject, organization)
);
"#;

/// The lookup against [`SCHEMA`]. A query is given as many of the four parameters as it uses
/// (this one does not use the client id, `$4`).
pub(crate) const DEFAULT_QUERY: &str = "SELECT roles, scopes, claims, ttl_seconds AS ttl \
     FROM scopegate_memberships \
     WHERE issuer = $1 AND subject = $2 AND organization = $3";

/// Permissions from a PostgreSQL database.
pub(crate) struct PostgresBackend {
    pool: Pool,
    query: String,
    timeout: Duration,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: never printed.
        f.debug_struct("PostgresBackend")
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// A pool of at most `pool_size` connections to `config`; nothing connects until the
    /// first lookup, so a database that is down at start is a 503 then, not a failed start.
    pub(crate) fn new(
        config: tokio_postgres::Config,
        pool_size: usize,
        query: String,
        timeout: Duration,
    ) -> Result<Self, String> {
        let mut config = config;
        config.connect_timeout(timeout);
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            pool,
            query,
            timeout,
        })
    }

    async fn call(&self, query: &Query) -> Result<Answer, BackendError> {
        let client = self
            .pool
            .get()
            .await
            .map_err(|e| BackendError::Database(e.to_string()))?;
        let statement = client
            .prepare_cached(&self.query)
            .await
            .map_err(|e| BackendError::Database(e.to_string()))?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [
            &query.issuer,
            &query.subject,
            &query.organization,
            &query.client_id,
        ];
        let used = statement.params().len().min(params.len());
        let row = client
            .query_opt(&statement, &params[..used])
            .await
            .map_err(|e| BackendError::Database(e.to_string()))?;
        let Some(row) = row else {
            return Ok(Answer {
                membership: Membership::NotMember,
                ttl: None,
            });
        };
        answer(&row)
    }
}

/// The row's grants. A column of the wrong type, a null array or claims that are not a JSON
/// object fail the lookup (503, or the stale answer): never an allow on a half-read row.
fn answer(row: &tokio_postgres::Row) -> Result<Answer, BackendError> {
    let bad = |column: &str, e: &dyn std::fmt::Display| {
        BackendError::Row(format!("column `{column}`: {e}"))
    };
    let roles: Vec<String> = row.try_get("roles").map_err(|e| bad("roles", &e))?;
    let scopes: Vec<String> = row.try_get("scopes").map_err(|e| bad("scopes", &e))?;
    let claims: serde_json::Value = row.try_get("claims").map_err(|e| bad("claims", &e))?;
    let serde_json::Value::Object(claims) = claims else {
        return Err(bad("claims", &"not a JSON object"));
    };
    let ttl: Option<i32> = row.try_get("ttl").map_err(|e| bad("ttl", &e))?;
    let ttl = match ttl {
        None => None,
        Some(s) => Some(Duration::from_secs(
            u64::try_from(s).map_err(|_| bad("ttl", &"negative"))?,
        )),
    };
    Ok(Answer {
        membership: Membership::Member(Grants {
            roles,
            scopes,
            claims,
        }),
        ttl,
    })
}

impl Backend for PostgresBackend {
    fn lookup<'a>(&'a self, query: &'a Query) -> BoxFuture<'a, Result<Answer, BackendError>> {
        super::timed(self.timeout, self.call(query))
    }
}

/// Applies [`SCHEMA`] over one connection (`scopegate db migrate`).
pub(crate) async fn migrate(config: &tokio_postgres::Config) -> Result<(), String> {
    let (client, connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let applied = client
        .batch_execute(SCHEMA)
        .await
        .map_err(|e| e.to_string());
    drop(client);
    let _ = driver.await;
    applied
}

//! The `postgres` backend: one query per lookup from a connection pool (deadpool-postgres over
//! tokio-postgres). The query takes the issuer, subject, organization and client id (`$1`..`$4`,
//! text) and returns at most one row with the columns `roles` (text[]), `scopes` (text[]),
//! `claims` (jsonb object) and `ttl` (integer seconds, may be null); no row is "not a member".
//! [`SCHEMA`] is the shipped schema and [`DEFAULT_QUERY`] reads it; an existing database
//! supplies its own `query` with the same parameters and columns.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::watch::{Change, Forget};
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

-- Every change to a membership notifies `scopegate_memberships` with the (issuer, subject,
-- organization) it touched; gateways with `listen: true` drop those cached answers at once.
-- An organization deleted deletes its memberships (cascade), which notify too; a TRUNCATE
-- notifies `{}`: everything.
CREATE OR REPLACE FUNCTION scopegate_membership_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('scopegate_memberships', '{}');
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('scopegate_memberships', json_build_object(
            'issuer', OLD.issuer, 'subject', OLD.subject, 'organization', OLD.organization)::text);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM pg_notify('scopegate_memberships', json_build_object(
            'issuer', NEW.issuer, 'subject', NEW.subject, 'organization', NEW.organization)::text);
    END IF;
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS scopegate_memberships_changed ON scopegate_memberships;
CREATE TRIGGER scopegate_memberships_changed
    AFTER INSERT OR UPDATE OR DELETE ON scopegate_memberships
    FOR EACH ROW EXECUTE FUNCTION scopegate_membership_changed();
DROP TRIGGER IF EXISTS scopegate_memberships_truncated ON scopegate_memberships;
CREATE TRIGGER scopegate_memberships_truncated
    AFTER TRUNCATE ON scopegate_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION scopegate_membership_changed();
"#;

/// The channel [`SCHEMA`]'s trigger notifies and `listen: true` listens on.
pub(crate) const CHANNEL: &str = "scopegate_memberships";
/// How long the listener waits before connecting again after losing its connection.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The lookup against [`SCHEMA`]. A query is given as many of the four parameters as it uses
/// (this one does not use the client id, `$4`).
pub(crate) const DEFAULT_QUERY: &str = "SELECT roles, scopes, claims, ttl_seconds AS ttl \
     FROM scopegate_memberships \
     WHERE issuer = $1 AND subject = $2 AND organization = $3";

/// Where the `postgres` backend connects: what `scopegate db migrate` applies the schema to.
#[derive(Clone)]
pub(crate) struct Database {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: Option<crate::fetch::ClientTls>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password: never printed.
        f.debug_struct("Database")
            .field("hosts", &self.config.get_hosts())
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Permissions from a PostgreSQL database.
pub(crate) struct PostgresBackend {
    pool: Pool,
    query: String,
    timeout: Duration,
    /// Where `listen: true` listens for changes; `None` without it.
    listen: Option<tokio_postgres::Config>,
    /// TLS (rustls, the `tls:` block's roots and client certificate); `None`: plaintext.
    tls: Option<MakeRustlsConnect>,
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
        listen: bool,
        tls: Option<&crate::fetch::ClientTls>,
    ) -> Result<Self, String> {
        let mut config = config;
        config.connect_timeout(timeout);
        let tls = tls.map(|t| {
            // With a `tls:` block the connection is TLS or nothing: never a silent fallback.
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            MakeRustlsConnect::new((*t.config).clone())
        });
        let listen = listen.then(|| config.clone());
        let recycling = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => Manager::from_config(config, tls.clone(), recycling),
            None => Manager::from_config(config, NoTls, recycling),
        };
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
            listen,
            tls,
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
    // `integer` or `bigint`: a query of one's own may compute it either way.
    let ttl: Option<i64> = match row.try_get::<_, Option<i32>>("ttl") {
        Ok(t) => t.map(i64::from),
        Err(_) => row.try_get("ttl").map_err(|e| bad("ttl", &e))?,
    };
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

    fn watches(&self) -> bool {
        self.listen.is_some()
    }

    fn watch(&self, forget: Forget) {
        let Some(config) = self.listen.clone() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let tls = self.tls.clone();
        tokio::spawn(async move {
            while forget.alive() {
                let listened = match &tls {
                    Some(tls) => listen(&config, tls.clone(), &forget).await,
                    None => listen(&config, NoTls, &forget).await,
                };
                match listened {
                    // The caches are gone: the gateway that replaced them owns the gauge now.
                    Ok(()) => return,
                    Err(e) => {
                        forget.listening(false);
                        tracing::warn!(error = %e, channel = CHANNEL, "permissions change notifications lost; reconnecting (answers cached meanwhile are dropped when they resume)");
                    }
                }
                tokio::time::sleep(RECONNECT_AFTER).await;
            }
        });
    }
}

/// One listening connection: drops what each notification names. Every cached answer is
/// dropped once `LISTEN` is in place, since changes made before it (or while a previous
/// connection was down) were never heard. `Ok` when the caches are gone; `Err` when the
/// connection failed.
async fn listen<T>(config: &tokio_postgres::Config, tls: T, forget: &Forget) -> Result<(), String>
where
    T: MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + Unpin,
{
    use tokio_postgres::AsyncMessage;
    let (client, mut connection) = config.connect(tls).await.map_err(|e| e.to_string())?;
    let statement = format!("LISTEN {CHANNEL}");
    let mut subscribe = std::pin::pin!(client.batch_execute(&statement));
    let mut subscribed = false;
    let mut alive = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            done = &mut subscribe, if !subscribed => {
                done.map_err(|e| e.to_string())?;
                subscribed = true;
                forget.listening(true);
                tracing::info!(channel = CHANNEL, "listening for permissions changes");
                if !forget.forget(Change::default()) {
                    return Ok(());
                }
            }
            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => match message {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    // A payload that is not a change drops everything: never keep a revoked grant.
                    let change = serde_json::from_str::<Change>(n.payload()).unwrap_or_default();
                    if !forget.forget(change) {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err("the connection closed".into()),
            },
            _ = alive.tick() => {
                if !forget.alive() {
                    return Ok(());
                }
            }
        }
    }
}

/// Applies [`SCHEMA`] over one connection (`scopegate db migrate`), with TLS when the server
/// file's `tls:` block asks for it.
pub(crate) async fn migrate(database: &Database) -> Result<(), String> {
    let mut config = database.config.clone();
    config.connect_timeout(Duration::from_secs(10));
    match &database.tls {
        Some(t) => {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            apply(&config, MakeRustlsConnect::new((*t.config).clone())).await
        }
        None => apply(&config, NoTls).await,
    }
}

async fn apply<T>(config: &tokio_postgres::Config, tls: T) -> Result<(), String>
where
    T: MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await.map_err(|e| e.to_string())?;
    let driver = tokio::spawn(connection);
    let applied = client
        .batch_execute(SCHEMA)
        .await
        .map_err(|e| e.to_string());
    drop(client);
    let _ = driver.await;
    applied
}

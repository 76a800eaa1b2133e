//! The permissions backend (file or http), its cache and the per-caller miss budget.

use std::path::Path;
use std::sync::Arc;

use http::Uri;

use super::limits::bounded;
use super::locate::Step;
use super::{Check, PermissionsConfig, client_tls, defaults, raw};
use crate::policy::{IssuerConfig, is_loopback};

pub(super) fn permissions(
    check: &mut Check<'_>,
    base: &Path,
    raw: &raw::Permissions,
    issuers: &[Arc<IssuerConfig>],
) -> Option<PermissionsConfig> {
    use crate::permissions::{CacheConfig, OnError};
    let at = |key: &'static str| [Step::Key("permissions"), Step::Key(key)];
    let timeout = check.duration(
        &at("timeout"),
        raw.timeout.as_deref(),
        defaults::PERMISSIONS_TIMEOUT,
    );
    let mut database = None;
    let backend: Arc<dyn crate::permissions::Backend> = match (&raw.files, &raw.url, &raw.postgres)
    {
        (None, None, Some(pg)) => {
            let (backend, db) = postgres(check, base, pg, timeout)?;
            database = Some(db);
            backend
        }
        (Some(files), None, None) => {
            let files = files.iter().map(|f| base.join(f)).collect();
            let known = issuers
                .iter()
                .map(|i| (i.name.clone(), i.issuer.clone()))
                .collect();
            match crate::permissions::file::FileBackend::load(files, known) {
                Ok(b) => Arc::new(b),
                Err(e) => {
                    check.error(
                        &at("files"),
                        format!("permissions data: {e}"),
                        "fix the data file; see the README for its format (with several issuers, each file names its `issuer:`)",
                    );
                    return None;
                }
            }
        }
        (None, Some(url), None) => match url.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("https"))
                    || (u.scheme_str() == Some("http")
                        && (is_loopback(&u) || raw.insecure_http)) =>
            {
                let tls = raw
                    .tls
                    .as_ref()
                    .and_then(|t| client_tls(check, base, &[Step::Key("permissions")], t));
                Arc::new(crate::permissions::http::HttpBackend::new(
                    u,
                    timeout,
                    bounded(
                        check,
                        &at("max_concurrency"),
                        raw.max_concurrency,
                        defaults::PERMISSIONS_MAX_CONCURRENCY,
                    ),
                    tls.as_ref(),
                ))
            }
            _ => {
                check.error(
                    &at("url"),
                    format!("`{url}` is not an https URL (or http on loopback)"),
                    "write the permissions API's URL, like `https://perms.internal/v1/check`; plain http is allowed only for loopback addresses, or with `insecure_http: true`",
                );
                return None;
            }
        },
        _ => {
            check.error(
                &[Step::Key("permissions")],
                "`permissions` needs exactly one of `files`, `url` and `postgres`",
                "use `files: [data.yaml]` for the file backend, `url: ...` for the HTTP backend or `postgres: { url: ... }` for PostgreSQL",
            );
            return None;
        }
    };
    let on_error = match raw.on_error {
        None | Some(raw::OnError::Deny) => OnError::Deny,
        Some(raw::OnError::Stale) => OnError::Stale(check.duration(
            &at("stale_for"),
            raw.stale_for.as_deref(),
            defaults::STALE_FOR,
        )),
    };
    let cache = CacheConfig {
        entries: raw
            .cache_entries
            .unwrap_or(defaults::PERMISSIONS_CACHE_ENTRIES),
        default_ttl: check.duration(
            &at("default_ttl"),
            raw.default_ttl.as_deref(),
            defaults::PERMISSIONS_DEFAULT_TTL,
        ),
        max_ttl: check.duration(
            &at("max_ttl"),
            raw.max_ttl.as_deref(),
            defaults::PERMISSIONS_MAX_TTL,
        ),
        negative_ttl: check.duration(
            &at("negative_ttl"),
            raw.negative_ttl.as_deref(),
            defaults::NEGATIVE_TTL,
        ),
        on_error,
        lookup_timeout: timeout,
        budget: miss_budget(check, raw.miss_budget.as_ref()),
    };
    Some(PermissionsConfig {
        backend,
        cache,
        database,
    })
}

/// The `postgres` backend: a parsed connection string, plaintext only where nobody sits on the
/// path (loopback, a Unix socket) unless the file says otherwise.
fn postgres(
    check: &mut Check<'_>,
    base: &Path,
    raw: &raw::Postgres,
    timeout: std::time::Duration,
) -> Option<(
    Arc<dyn crate::permissions::Backend>,
    crate::permissions::postgres::Database,
)> {
    use tokio_postgres::config::{Host, SslMode};
    let at = |key: &'static str| {
        [
            Step::Key("permissions"),
            Step::Key("postgres"),
            Step::Key(key),
        ]
    };
    let config = match raw.url.parse::<tokio_postgres::Config>() {
        Ok(c) => c,
        Err(e) => {
            // The error never repeats the string: it may hold a password.
            check.error(
                &at("url"),
                format!("not a PostgreSQL connection string: {e}"),
                "write `postgresql://user:password@host:5432/database` or `host=... user=... dbname=...`",
            );
            return None;
        }
    };
    let tls = match &raw.tls {
        Some(t) => {
            let path = [Step::Key("permissions"), Step::Key("postgres")];
            let tls = client_tls(check, base, &path, t)?;
            if tls.server_name.is_some() {
                check.error(
                    &at("tls"),
                    "`server_name` is not supported towards PostgreSQL",
                    "write the name the database's certificate carries as the host of `url`",
                );
                return None;
            }
            Some(tls)
        }
        None if config.get_ssl_mode() == SslMode::Require => {
            check.error(
                &at("url"),
                "`sslmode=require` needs a `tls:` block",
                "add `tls: {}` to trust the public web PKI roots, or `tls: { ca_file: ca.pem, ca_only: true }` for a private CA",
            );
            return None;
        }
        None => None,
    };
    let local = |h: &Host| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    };
    if config.get_hosts().is_empty() {
        check.error(
            &at("url"),
            "the connection string names no host",
            "write the database's host, like `postgresql://scopegate@127.0.0.1:5432/permissions`",
        );
        return None;
    }
    if tls.is_none() && !config.get_hosts().iter().all(local) && !raw.insecure_plaintext {
        check.error(
            &at("url"),
            "a PostgreSQL host that is not loopback would be reached without TLS",
            "add a `tls:` block (`tls: {}` for the public roots, `ca_file:` for a private CA), or set `insecure_plaintext: true` if the network is trusted",
        );
        return None;
    }
    let pool_size = bounded(
        check,
        &at("pool_size"),
        raw.pool_size,
        defaults::POSTGRES_POOL_SIZE,
    );
    let query = raw
        .query
        .clone()
        .unwrap_or_else(|| crate::permissions::postgres::DEFAULT_QUERY.to_string());
    let database = crate::permissions::postgres::Database {
        config: config.clone(),
        tls: tls.clone(),
    };
    let backend = crate::permissions::postgres::PostgresBackend::new(
        config,
        pool_size,
        query,
        timeout,
        raw.listen,
        tls.as_ref(),
    );
    match backend {
        Ok(b) => Some((Arc::new(b), database)),
        Err(e) => {
            check.error(
                &at("url"),
                format!("cannot set up the connection pool: {e}"),
                "check the connection string",
            );
            None
        }
    }
}

pub(super) fn miss_budget(
    check: &mut Check<'_>,
    raw: Option<&raw::MissBudget>,
) -> crate::permissions::budget::BudgetConfig {
    let mut budget = crate::permissions::budget::BudgetConfig::default();
    let Some(raw) = raw else { return budget };
    let at = |key: &'static str| {
        [
            Step::Key("permissions"),
            Step::Key("miss_budget"),
            Step::Key(key),
        ]
    };
    if let Some(rate) = raw.per_second {
        if rate.is_finite() && (0.01..=100_000.0).contains(&rate) {
            budget.per_second = rate;
        } else {
            check.error(
                &at("per_second"),
                format!("`{rate}` is not a usable rate"),
                "write misses per second per caller, from 0.01 to 100000; the default is 10",
            );
        }
    }
    if let Some(burst) = raw.burst {
        if (1..=1_000_000).contains(&burst) {
            budget.burst = burst;
        } else {
            check.error(
                &at("burst"),
                format!("`{burst}` is not a usable burst"),
                "write a number from 1 to 1000000; the default is 50",
            );
        }
    }
    budget.concurrency = bounded(
        check,
        &at("concurrency"),
        raw.concurrency,
        budget.concurrency,
    );
    budget
}

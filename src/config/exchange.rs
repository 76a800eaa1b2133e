//! Token exchange: clients (secrets from files or the environment) and exchange rules.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use http::Method;

use super::locate::Step;
use super::{Check, defaults, raw};
use crate::policy::UpstreamConfig;

/// Exchange clients (id to secret digest), the act depth limit and the client-authentication
/// failure limit.
pub(super) type ExchangeClients = (HashMap<String, [u8; 32]>, usize, u32);

/// The `exchange:` section of the server file, validated.
pub(super) fn exchange_clients(
    check: &mut Check<'_>,
    base: &Path,
    raw: &raw::Exchange,
) -> ExchangeClients {
    let mut clients = HashMap::new();
    for (id, c) in &raw.clients {
        let at = [Step::Key("exchange"), Step::Key("clients"), Step::Key(id)];
        let secret = match (&c.secret_file, &c.secret_env) {
            (Some(file), None) => {
                let path = base.join(file);
                std::fs::read_to_string(&path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                    .map_err(|e| format!("cannot read the secret file `{}`: {e}", path.display()))
            }
            (None, Some(var)) => {
                std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
            }
            _ => Err(format!(
                "client `{id}` needs exactly one of `secret_file` and `secret_env`"
            )),
        };
        match secret {
            Ok(s) if s.len() >= 16 => {
                clients.insert(id.clone(), crate::exchange::secret_hash(s.as_bytes()));
            }
            Ok(_) => check.error(&at, format!("the secret of client `{id}` is shorter than 16 characters"), "use a long random secret, for example `openssl rand -hex 32`"),
            Err(e) => check.error(&at, e, "secrets are never written in YAML: put the secret in a file (a Kubernetes Secret) or an environment variable"),
        }
    }
    let max_auth_failures = match raw.max_auth_failures_per_minute {
        None => defaults::MAX_AUTH_FAILURES_PER_MINUTE,
        Some(n) if (1..=10_000).contains(&n) => n,
        Some(n) => {
            check.error(
                &[
                    Step::Key("exchange"),
                    Step::Key("max_auth_failures_per_minute"),
                ],
                format!("`{n}` is not a usable number of failures"),
                "write a number from 1 to 10000; the default is 10",
            );
            10
        }
    };
    (
        clients,
        raw.max_act_depth.unwrap_or(defaults::MAX_ACT_DEPTH),
        max_auth_failures,
    )
}

/// Refuses a rule with `uses:` when no shared state is configured to count them.
pub(super) fn uses_without_state(check: &mut Check<'_>, i: usize) -> bool {
    check.error(
        &[Step::Key("exchange"), Step::Index(i), Step::Key("uses")],
        "`uses` needs shared state to count uses across replicas",
        "add `state: { redis: { url: redis://127.0.0.1:6379 } }` to the server file, or remove `uses`",
    );
    false
}

pub(super) fn exchange_rule(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::ExchangeRule,
    clients: Option<&ExchangeClients>,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
) -> Option<crate::exchange::Rule> {
    let at = |key: &'static str| [Step::Key("exchange"), Step::Index(i), Step::Key(key)];
    let name = &raw.name;
    let mut ok = true;
    match clients {
        None => {
            check.error(
                &at("client"),
                format!("exchange rule `{name}` needs token exchange, which is not configured"),
                "add `exchange: { clients: ... }` to the server file",
            );
            ok = false;
        }
        Some((c, _, _)) if !c.contains_key(&raw.client) => {
            let known = c.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
            check.error(
                &at("client"),
                format!(
                    "exchange rule `{name}` names client `{}`, which is not configured",
                    raw.client
                ),
                format!("configured clients: {known}"),
            );
            ok = false;
        }
        Some(_) => {}
    }
    if !upstreams.values().any(|u| u.audience == raw.audience) {
        let known = upstreams
            .values()
            .map(|u| u.audience.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        check.error(&at("audience"), format!("exchange rule `{name}` issues tokens for audience `{}`, which no upstream has", raw.audience), format!("the token is good only on routes to an upstream with this audience; audiences: {known}"));
        ok = false;
    }
    if raw.scopes.is_empty() {
        check.error(
            &at("scopes"),
            format!("exchange rule `{name}` allows no scopes"),
            "list the scopes a client may obtain",
        );
        ok = false;
    }
    let max_ttl = check.duration(
        &at("max_ttl"),
        Some(&raw.max_ttl),
        defaults::EXCHANGE_MAX_TTL,
    );
    if max_ttl.is_zero() || max_ttl > defaults::EXCHANGE_TTL_BOUND {
        check.error(
            &at("max_ttl"),
            "`max_ttl` must be between 1s and 30 days",
            "a callback token lives as long as the job it serves, no longer",
        );
        ok = false;
    }
    let bind = match raw.bind.as_deref().map(crate::exchange::Bind::new) {
        None => None,
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => {
            check.error(
                &at("bind"),
                format!("`bind` is not a path template: {e}"),
                "write a template like `/builds/{id}`",
            );
            ok = false;
            None
        }
    };
    let bind_methods = raw.bind_methods.as_ref().map(|ms| {
        ms.iter()
            .filter_map(|m| match Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.bytes().all(|b| b.is_ascii_uppercase()) && bind.is_some() => {
                    Some(method.to_string())
                }
                _ => {
                    check.error(
                        &at("bind_methods"),
                        format!("`{m}` is not an upper-case method, or the rule has no `bind`"),
                        "write methods like `[PUT]`, together with a `bind` path template",
                    );
                    ok = false;
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    if raw.uses == Some(0) {
        check.error(
            &at("uses"),
            "`uses: 0` would issue a token nobody can use",
            "give how many times the token may be presented, like `uses: 1`, or leave it out",
        );
        ok = false;
    }
    ok.then(|| crate::exchange::Rule {
        uses: raw.uses,
        name: name.clone(),
        client: raw.client.clone(),
        audience: raw.audience.clone(),
        scopes: raw.scopes.clone(),
        max_ttl,
        bind,
        bind_methods,
    })
}

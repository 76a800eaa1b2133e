//! Routes of the policy files: match, access rule, organization source, condition, forwarding.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http::Method;

use super::locate::Step;
use super::{Check, defaults, raw};
use crate::policy::UpstreamConfig;
use crate::policy::{Access, Route, ScopeRule};

pub(super) fn route(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::Route,
    upstreams: &BTreeMap<String, Arc<UpstreamConfig>>,
    has_permissions: bool,
    global_cors: Option<&Arc<crate::policy::Cors>>,
) -> Option<Route> {
    let at = |key: &'static str| [Step::Key("routes"), Step::Index(i), Step::Key(key)];
    let at_match = |key: &'static str| {
        [
            Step::Key("routes"),
            Step::Index(i),
            Step::Key("match"),
            Step::Key(key),
        ]
    };
    let name = &raw.name;
    let mut ok = true;
    if name.is_empty() {
        check.error(
            &at("name"),
            "a route has an empty name",
            "give every route a name; it appears in metrics and errors",
        );
        ok = false;
    }
    let upstream = upstreams.get(&raw.upstream).cloned();
    if upstream.is_none() {
        let defined = upstreams
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ");
        check.error(
            &at("upstream"),
            format!(
                "route `{name}` names upstream `{}`, which is not defined",
                raw.upstream
            ),
            if defined.is_empty() {
                "define it under `upstreams:` in the server file".to_string()
            } else {
                format!("defined upstreams: {defined}")
            },
        );
    }
    let path = &raw.matches.path;
    if crate::normalize::normalize(path).as_deref() != Ok(path.as_str()) {
        check.error(&at_match("path"), format!("route `{name}` path `{path}` is not a normalized path"), "start with `/`, no `//`, no `.`/`..` segments, no `%2F`; parameters are written `{name}`, a catch-all `{*rest}`");
        ok = false;
    }
    let methods = match &raw.matches.method {
        None => None,
        Some(raw::OneOrMany::One(m)) if m == "*" || m.eq_ignore_ascii_case("any") => None,
        Some(raw::OneOrMany::One(m)) => Some(vec![m.clone()]),
        Some(raw::OneOrMany::Many(ms)) => Some(ms.clone()),
    };
    let methods = methods.map(|ms| {
        ms.iter()
            .filter_map(|m| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) if m == Method::HEAD => {
                    check.error(&at_match("method"), format!("route `{name}` lists HEAD"), "HEAD is authorized exactly as GET on the same path: list GET");
                    ok = false;
                    None
                }
                Ok(m) => Some(m),
                Err(_) => {
                    check.error(&at_match("method"), format!("`{m}` is not an HTTP method"), "write a method like GET or POST, a list of them, or leave `method` out for any");
                    ok = false;
                    None
                }
            })
            .collect::<Vec<_>>()
    });
    let host = raw.matches.host.as_ref().map(|h| h.to_ascii_lowercase());
    let access = match (raw.public, &raw.require) {
        (true, None) => Access::Public,
        (true, Some(_)) => {
            check.error(
                &at("public"),
                format!("route `{name}` is public and also has `require`"),
                "a public route skips authentication; remove one of the two",
            );
            ok = false;
            Access::Public
        }
        (false, None) => {
            check.error(
                &[Step::Key("routes"), Step::Index(i)],
                format!("route `{name}` has neither `require` nor `public: true`"),
                "add `require: { scopes: [...] }`, or `public: true` to skip authentication",
            );
            ok = false;
            Access::Public
        }
        (false, Some(req)) => {
            for s in req.scopes.iter().chain(&req.any_scopes) {
                if s.is_empty() || s.contains(char::is_whitespace) {
                    check.error(
                        &at("require"),
                        format!("scope `{s}` is empty or has white space"),
                        "scopes are single tokens like `read:builds`",
                    );
                    ok = false;
                }
            }
            Access::Scopes(ScopeRule {
                all: req.scopes.clone(),
                any: req.any_scopes.clone(),
            })
        }
    };
    let organization = raw.organization.as_ref().and_then(|o| {
        let source = organization(check, i, name, path, o);
        ok &= source.is_some();
        source
    });
    if organization.is_some() && !has_permissions {
        check.error(
            &at("organization"),
            format!(
                "route `{name}` resolves an organization, but no permissions backend is configured"
            ),
            "add `permissions:` to the server file (a `files` list or a `url`)",
        );
        ok = false;
    }
    if raw.public
        && (raw.organization.is_some() || raw.condition.is_some() || raw.forward.is_some())
    {
        check.error(&at("public"), format!("route `{name}` is public but has `organization`, `condition` or `forward`"), "a public route has no caller to check or mint for; remove those keys or make the route require a token");
        ok = false;
    }
    let condition = match raw
        .condition
        .as_deref()
        .map(crate::condition::Condition::compile)
    {
        None => None,
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            check.error(
                &at("condition"),
                format!("route `{name}` condition does not compile: {e}"),
                format!(
                    "write a CEL expression over {}",
                    crate::condition::VARIABLES.join(", ")
                ),
            );
            ok = false;
            None
        }
    };
    let forward = raw
        .forward
        .as_ref()
        .map_or_else(crate::policy::Forward::default, |f| forward(check, i, f));
    let websocket = match &raw.websocket {
        None | Some(raw::OrBool::Bool(false)) => None,
        Some(w) => {
            if methods
                .as_ref()
                .is_some_and(|ms| !ms.contains(&Method::GET))
            {
                check.error(
                    &at("websocket"),
                    format!("route `{name}` accepts WebSocket upgrades but not GET"),
                    "a WebSocket handshake is a GET: add GET to `match.method`, or remove `websocket`",
                );
                ok = false;
            }
            if let Some(u) = upstream.as_ref().filter(|u| !u.protocol.carries_http1()) {
                check.error(
                    &at("websocket"),
                    format!("route `{name}` accepts WebSocket upgrades, but upstream `{}` speaks only HTTP/2", u.name),
                    "a WebSocket handshake is HTTP/1.1: give the upstream `protocol: http1` or `auto`, or remove `websocket`",
                );
                ok = false;
            }
            let bounds = websocket(check, i, w, raw.public);
            ok &= bounds.is_some();
            bounds
        }
    };
    let cors = match &raw.cors {
        None => global_cors.cloned(),
        Some(raw::OrBool::Bool(false)) => None,
        Some(raw::OrBool::Bool(true)) => {
            check.error(
                &at("cors"),
                format!("route `{name}` says `cors: true`"),
                "a route has the server file's `cors:` unless it says otherwise: remove this, write `false` for none, or give the route a block of its own",
            );
            ok = false;
            None
        }
        Some(raw::OrBool::Map(c)) => {
            let at = [Step::Key("routes"), Step::Index(i), Step::Key("cors")];
            let policy = super::cors(check, &at, c, methods.as_deref());
            ok &= policy.is_some();
            policy.map(Arc::new)
        }
    };
    if let Some(u) = &upstream {
        // Outside `{...}` parameters, the template must already be in the upstream's folded
        // form, or its own requests would be refused as folding onto another route.
        let statics: String = path
            .split('{')
            .map(|part| part.split_once('}').map_or(part, |(_, rest)| rest))
            .collect();
        let cased = u.folds_case && statics.bytes().any(|b| b.is_ascii_uppercase());
        let slashed = u.folds_trailing_slash && path.len() > 1 && path.ends_with('/');
        if cased || slashed {
            check.error(
                &at_match("path"),
                format!("route `{name}` path `{path}` is not in the form its upstream folds paths to"),
                "the upstream has `folds_case` / `folds_trailing_slash`: write the path in lower case without a trailing `/`",
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(Route {
        name: name.clone(),
        methods,
        host,
        path: path.clone(),
        upstream: upstream?,
        access,
        organization,
        condition,
        forward,
        max_body_bytes: raw.max_body_bytes,
        matrix_params: raw.matrix_params,
        websocket,
        cors,
    })
}

/// The bounds of an enabled `websocket:` key; `None` (errors reported) when one is invalid.
pub(super) fn websocket(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::WebSocket,
    public: bool,
) -> Option<crate::policy::WebSocketBounds> {
    let at = |key: &'static str| {
        [
            Step::Key("routes"),
            Step::Index(i),
            Step::Key("websocket"),
            Step::Key(key),
        ]
    };
    let given = match raw {
        raw::OrBool::Map(b) => b,
        raw::OrBool::Bool(_) => &raw::WebSocketBounds::default(),
    };
    let errors = check.errors.len();
    let positive = |check: &mut Check<'_>, key: &'static str, value: Option<&str>| {
        // An unparsable value is reported by `duration` (and is not zero).
        let d = value.map(|v| check.duration(&at(key), Some(v), Duration::MAX));
        if d.is_some_and(|d| d.is_zero()) {
            check.error(
                &at(key),
                format!("`{key}` must be longer than 0s"),
                "write a duration like `30s`, `5m` or `1h`",
            );
        }
        d
    };
    let idle_timeout = positive(check, "idle_timeout", given.idle_timeout.as_deref())
        .unwrap_or(defaults::WEBSOCKET_IDLE_TIMEOUT);
    let max_lifetime = positive(check, "max_lifetime", given.max_lifetime.as_deref());
    // A public route has no token whose expiry would end its connections.
    let max_lifetime = match (max_lifetime, public) {
        (None, true) => Some(defaults::PUBLIC_WEBSOCKET_MAX_LIFETIME),
        (m, _) => m,
    };
    (check.errors.len() == errors).then_some(crate::policy::WebSocketBounds {
        idle_timeout,
        max_lifetime,
    })
}

pub(super) fn organization(
    check: &mut Check<'_>,
    i: usize,
    name: &str,
    path: &str,
    raw: &raw::Organization,
) -> Option<crate::policy::OrgSource> {
    use crate::policy::OrgSource;
    let at = [
        Step::Key("routes"),
        Step::Index(i),
        Step::Key("organization"),
    ];
    let hint = "write `{ from: path, param: org }`, `{ from: header, name: X-Org-Id }`, `{ from: query, param: org }`, `{ from: host }` or `{ from: claim, claim: org_id }`";
    let source = match (raw.from, &raw.param, &raw.name, &raw.claim) {
        (raw::OrgFrom::Path, Some(p), None, None) => {
            if !path.contains(&format!("{{{p}}}")) {
                check.error(&at, format!("route `{name}` takes its organization from path parameter `{p}`, which its path `{path}` does not have"), format!("add `{{{p}}}` to the path, or name one of its parameters"));
                return None;
            }
            OrgSource::Path(p.clone())
        }
        (raw::OrgFrom::Query, Some(p), None, None) => OrgSource::Query(p.clone()),
        (raw::OrgFrom::Header, None, Some(h), None) => {
            match http::HeaderName::from_bytes(h.as_bytes()) {
                Ok(h) => OrgSource::Header(h),
                Err(_) => {
                    check.error(&at, format!("`{h}` is not a header name"), hint);
                    return None;
                }
            }
        }
        (raw::OrgFrom::Host, None, None, None) => OrgSource::Host,
        (raw::OrgFrom::Claim, None, None, Some(c)) => OrgSource::Claim(c.clone()),
        _ => {
            check.error(
                &at,
                format!("route `{name}` has an incomplete or mixed `organization`"),
                hint,
            );
            return None;
        }
    };
    Some(source)
}

pub(super) fn forward(
    check: &mut Check<'_>,
    i: usize,
    raw: &raw::Forward,
) -> crate::policy::Forward {
    use crate::policy::{Forward, ForwardScopes};
    let at = |key: &'static str| {
        [
            Step::Key("routes"),
            Step::Index(i),
            Step::Key("forward"),
            Step::Key(key),
        ]
    };
    let defaults = Forward::default();
    let scopes = match &raw.scopes {
        None => defaults.scopes,
        Some(raw::ForwardScopes::Keyword(k)) if k == "required" => ForwardScopes::Required,
        Some(raw::ForwardScopes::Keyword(k)) if k == "effective" => ForwardScopes::Effective,
        Some(raw::ForwardScopes::Keyword(k)) => {
            check.error(
                &at("scopes"),
                format!("`{k}` is not a forward scope rule"),
                "write `required`, `effective`, or a list of scopes",
            );
            defaults.scopes
        }
        Some(raw::ForwardScopes::List(l)) => ForwardScopes::List(l.clone()),
    };
    let ttl = check.duration(&at("ttl"), raw.ttl.as_deref(), defaults.ttl);
    if ttl.is_zero() || ttl > defaults::MAX_FORWARD_TTL {
        check.error(
            &at("ttl"),
            "`ttl` must be between 1s and 24h",
            "minted tokens are short-lived; 5m is a good default",
        );
    }
    let claims = raw
        .claims
        .iter()
        .map(|c| match c {
            raw::ForwardClaim::Same(n) => (n.clone(), n.clone()),
            raw::ForwardClaim::Renamed(r) => (r.from.clone(), r.to.clone()),
        })
        .collect::<Vec<_>>();
    const RESERVED: &[&str] = &[
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "scope",
        "client_id",
        "org_id",
        "token_use",
        "act",
        "sub_id",
        "resource",
        "bound_path",
        "bound_methods",
    ];
    for (_, to) in &claims {
        if RESERVED.contains(&to.as_str()) {
            check.error(
                &at("claims"),
                format!("a forwarded claim cannot be named `{to}`"),
                format!(
                    "scopegate sets {}; pick another name with `{{ from: ..., as: ... }}`",
                    RESERVED.join(", ")
                ),
            );
        }
    }
    Forward {
        scopes,
        ttl,
        claims,
    }
}

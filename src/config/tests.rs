//! Loading configuration from YAML strings: a valid file loads, and each broken one fails with
//! the right message at the right line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Method;

use super::{Combine, Config, ConfigError, KeysSource, ScopesFormat, Source, from_sources};

mod client_tls;
mod cors;
mod postgres;
mod protocol;
mod state;
mod websocket;
mod workers;
use crate::policy::Access;

/// Lines 1-9 of every server file in these tests; the issuer's remaining keys follow on line 10.
const HEAD: &str = r#"listen: { proxy: "127.0.0.1:0", admin: "127.0.0.1:0" }
policies: [policy.yaml]
signing: { issuer: "https://gw.example.com", keys: [{ kid: k, generate: true }] }
upstreams:
  api: { url: "http://127.0.0.1:3000" }
  other: { url: "http://127.0.0.1:3001/v1/", audience: "https://other.example.com" }
issuers:
  corp:
    issuer: https://idp.example.com/
"#;

/// The issuer's keys on lines 10 and 11.
const ISSUER_TAIL: &str = "    jwks_url: https://idp.example.com/jwks.json
    audiences: [api]
";

/// A valid server file (11 lines).
fn server() -> String {
    format!("{HEAD}{ISSUER_TAIL}")
}

/// The valid server file with `more` appended from line 12 on.
fn server_with(more: &str) -> String {
    format!("{HEAD}{ISSUER_TAIL}{more}")
}

/// A server file whose issuer keys from line 10 on are `tail`.
fn server_issuer(tail: &str) -> String {
    format!("{HEAD}{tail}")
}

/// A policy with one valid route, `/x`, on lines 2-5.
const POLICY: &str = r#"routes:
  - name: x
    match: { method: GET, path: /x }
    upstream: api
    require: { scopes: [read:x] }
"#;

fn source(path: &str, text: &str) -> Source {
    Source {
        path: PathBuf::from(path),
        text: text.to_string(),
    }
}

fn load(server: &str, policies: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    let policies: Vec<Source> = policies.iter().map(|(p, t)| source(p, t)).collect();
    from_sources(&source("scopegate.yaml", server), Path::new("."), &policies).map_err(|e| e.0)
}

/// Loads, expecting exactly one error, and returns it.
fn one_error(server: &str, policies: &[(&str, &str)]) -> ConfigError {
    let errors = match load(server, policies) {
        Ok(_) => panic!("the configuration loaded, but should have failed"),
        Err(e) => e,
    };
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    errors.into_iter().next().unwrap()
}

/// Asserts that `error` is in `file` at `line` and that its message contains `text`.
fn assert_error(error: &ConfigError, file: &str, line: usize, text: &str) {
    assert!(
        error.message.contains(text),
        "message `{}` lacks `{text}`",
        error.message
    );
    assert_eq!(error.file, PathBuf::from(file), "{error}");
    assert_eq!(error.line.map(|(l, _)| l), Some(line), "{error}");
}

/// A policy file holding one route, `body` being its keys after `name` (indented 4 spaces).
fn policy_route(body: &str) -> String {
    format!("routes:\n  - name: r\n{body}")
}

#[test]
fn minimal_config_loads_and_finds_its_route() {
    let config = load(&server(), &[("policy.yaml", POLICY)]).unwrap();
    let found = config.routes.find(&Method::GET, None, "/x").unwrap();
    assert_eq!(found.route.name, "x");
    assert_eq!(found.route.upstream.name, "api");
    assert_eq!(found.route.upstream.audience, "api");
    match &found.route.access {
        Access::Scopes(rule) => {
            assert_eq!(rule.all, vec!["read:x".to_string()]);
            assert!(rule.any.is_empty());
        }
        Access::Public => panic!("route `x` should require scopes"),
    }
    assert!(config.routes.find(&Method::POST, None, "/x").is_none());
    assert!(config.routes.find(&Method::GET, None, "/y").is_none());

    // Defaults.
    assert_eq!(config.issuers.len(), 1);
    let issuer = &config.issuers[0];
    assert_eq!(issuer.name, "corp");
    assert_eq!(issuer.issuer, "https://idp.example.com/");
    assert!(
        matches!(&issuer.keys, KeysSource::Jwks(u) if u == "https://idp.example.com/jwks.json")
    );
    assert_eq!(issuer.leeway, Duration::from_secs(30));
    assert_eq!(issuer.scopes_claim, "scope");
    assert_eq!(issuer.scopes_format, ScopesFormat::Space);
    assert_eq!(issuer.combine, Combine::Intersect);
    assert_eq!(issuer.audiences, vec!["api".to_string()]);
    let other = &config.upstreams["other"];
    assert_eq!(other.prefix, "/v1");
    assert_eq!(other.audience, "https://other.example.com");
    assert_eq!(config.signing.issuer, "https://gw.example.com");
    assert!(config.permissions.is_none());
}

#[test]
fn unknown_key_in_a_route_is_refused_at_its_line() {
    let policy = policy_route(
        "    match: { method: GET, path: /x }
    upstream: api
    requires: { scopes: [read:x] }
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(&e, "policy.yaml", 5, "unknown field `requires`");
    assert!(e.message.contains("expected one of"), "{}", e.message);
    assert!(e.hint.as_deref().unwrap().contains("fix the spelling"));
}

#[test]
fn undefined_upstream_is_refused_and_the_hint_lists_the_defined_ones() {
    let policy = policy_route(
        "    match: { method: GET, path: /x }
    upstream: nope
    require: {}
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(
        &e,
        "policy.yaml",
        4,
        "route `r` names upstream `nope`, which is not defined",
    );
    assert_eq!(e.hint.as_deref(), Some("defined upstreams: api, other"));
}

#[test]
fn bad_duration_is_refused_at_its_line() {
    let text = server_with("    leeway: soon\n");
    let e = one_error(&text, &[("policy.yaml", POLICY)]);
    assert_error(&e, "scopegate.yaml", 12, "`soon` is not a duration");
}

#[test]
fn symmetric_algorithm_is_refused_at_its_line() {
    let text = server_with("    algorithms: [HS256]\n");
    let e = one_error(&text, &[("policy.yaml", POLICY)]);
    assert_error(&e, "scopegate.yaml", 12, "algorithm `HS256` is not allowed");
}

#[test]
fn plain_http_jwks_url_to_a_remote_host_is_refused() {
    let text = server_issuer(
        "    jwks_url: http://idp.example.com/jwks.json
    audiences: [api]
",
    );
    let e = one_error(&text, &[("policy.yaml", POLICY)]);
    assert_error(&e, "scopegate.yaml", 10, "fetches keys over plain HTTP");

    // Plain HTTP on loopback is fine.
    for url in [
        "http://127.0.0.1:9000/jwks.json",
        "http://localhost:9000/jwks.json",
        "http://[::1]:9000/jwks.json",
    ] {
        let text = server_issuer(&format!("    jwks_url: {url}\n    audiences: [api]\n"));
        assert!(
            load(&text, &[("policy.yaml", POLICY)]).is_ok(),
            "{url} should be accepted"
        );
    }
}

#[test]
fn organization_from_a_path_parameter_the_path_lacks_is_refused() {
    // With a permissions backend, so this is the only problem.
    let text = server_with("permissions: { url: \"https://perms.example.com/check\" }\n");
    let policy = policy_route(
        "    match: { method: GET, path: \"/orgs/{name}/x\" }
    upstream: api
    require: {}
    organization: { from: path, param: org }
",
    );
    let e = one_error(&text, &[("policy.yaml", &policy)]);
    assert_error(
        &e,
        "policy.yaml",
        6,
        "takes its organization from path parameter `org`, which its path `/orgs/{name}/x` does not have",
    );

    // The same route with `{org}` in its path loads.
    let good = policy.replace("{name}", "{org}");
    let config = load(&text, &[("policy.yaml", &good)]).unwrap();
    let found = config
        .routes
        .find(&Method::GET, None, "/orgs/acme/x")
        .unwrap();
    assert_eq!(
        found.route.organization,
        Some(crate::policy::OrgSource::Path("org".into()))
    );
    assert_eq!(found.params, vec![("org", "acme")]);
}

#[test]
fn organization_without_a_permissions_backend_is_refused() {
    let policy = policy_route(
        "    match: { method: GET, path: \"/orgs/{org}/x\" }
    upstream: api
    require: {}
    organization: { from: path, param: org }
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(
        &e,
        "policy.yaml",
        6,
        "resolves an organization, but no permissions backend is configured",
    );
}

#[test]
fn condition_that_does_not_compile_is_refused() {
    let policy = policy_route(
        "    match: { method: GET, path: /x }
    upstream: api
    require: {}
    condition: \"params.org ==\"
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(&e, "policy.yaml", 6, "route `r` condition does not compile");
    assert!(e.hint.as_deref().unwrap().contains("params, org, token"));
}

#[test]
fn condition_with_an_unknown_variable_is_refused() {
    let policy = policy_route(
        "    match: { method: GET, path: /x }
    upstream: api
    require: {}
    condition: \"foo == 1\"
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(&e, "policy.yaml", 6, "unknown variable(s) `foo`");
}

#[test]
fn forwarding_a_reserved_claim_name_is_refused() {
    let policy = policy_route(
        "    match: { method: GET, path: /x }
    upstream: api
    require: {}
    forward:
      claims: [sub]
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(
        &e,
        "policy.yaml",
        7,
        "a forwarded claim cannot be named `sub`",
    );

    // Renaming to a reserved name is refused too; renaming away from one is fine.
    let renamed = policy_route(
        "    match: { method: GET, path: /x }
    upstream: api
    require: {}
    forward:
      claims: [{ from: plan, as: scope }]
",
    );
    let e = one_error(&server(), &[("policy.yaml", &renamed)]);
    assert_error(
        &e,
        "policy.yaml",
        7,
        "a forwarded claim cannot be named `scope`",
    );
    let fine = renamed.replace("as: scope", "as: tier");
    let config = load(&server(), &[("policy.yaml", &fine)]).unwrap();
    let found = config.routes.find(&Method::GET, None, "/x").unwrap();
    assert_eq!(
        found.route.forward.claims,
        vec![("plan".to_string(), "tier".to_string())]
    );
}

#[test]
fn route_name_used_in_two_policy_files_is_refused() {
    let second = r#"routes:
  - name: other
    match: { method: GET, path: /other }
    upstream: api
    public: true
  - name: x
    match: { method: GET, path: /y }
    upstream: api
    public: true
"#;
    let e = one_error(&server(), &[("a.yaml", POLICY), ("b.yaml", second)]);
    assert_error(&e, "b.yaml", 6, "route name `x` is used twice");
    let hint = e.hint.as_deref().unwrap();
    assert!(hint.contains("first defined at a.yaml:2:"), "{hint}");
}

#[test]
fn public_route_with_require_is_refused() {
    let policy = policy_route(
        "    match: { method: GET, path: /x }
    upstream: api
    public: true
    require: { scopes: [read:x] }
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(
        &e,
        "policy.yaml",
        5,
        "route `r` is public and also has `require`",
    );
}

#[test]
fn route_with_neither_public_nor_require_is_refused() {
    let policy = r#"routes:
  - name: ok
    match: { method: GET, path: /ok }
    upstream: api
    public: true
  - name: r
    match: { method: GET, path: /x }
    upstream: api
"#;
    let e = one_error(&server(), &[("policy.yaml", policy)]);
    assert_error(
        &e,
        "policy.yaml",
        6,
        "route `r` has neither `require` nor `public: true`",
    );
}

#[test]
fn every_error_of_one_load_is_reported() {
    let policy = r#"routes:
  - name: a
    match: { method: GET, path: /a }
    upstream: nope
    require: {}
  - name: b
    match: { method: GET, path: /b }
    upstream: api
  - name: c
    match: { method: GET, path: /c }
    upstream: api
    public: true
"#;
    let text = server_with("    leeway: soon\n");
    let errors = load(&text, &[("policy.yaml", policy)]).unwrap_err();
    let mut found: Vec<(String, Option<usize>)> = errors
        .iter()
        .map(|e| (e.file.display().to_string(), e.line.map(|(l, _)| l)))
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            ("policy.yaml".to_string(), Some(4)),
            ("policy.yaml".to_string(), Some(6)),
            ("scopegate.yaml".to_string(), Some(12)),
        ],
        "{errors:#?}"
    );
    assert!(errors.iter().any(|e| e.message.contains("upstream `nope`")));
    assert!(
        errors
            .iter()
            .any(|e| e.message.contains("route `b` has neither"))
    );
    assert!(errors.iter().any(|e| e.message.contains("`soon`")));
}

#[test]
fn an_issuer_that_is_scopegates_own_is_refused() {
    // The IdP on lines 8-11 names scopegate's own signing issuer (plus a trailing slash).
    let server = server().replace(
        "issuer: https://idp.example.com/",
        "issuer: https://gw.example.com/",
    );
    let error = one_error(&server, &[("policy.yaml", POLICY)]);
    assert_error(
        &error,
        "scopegate.yaml",
        9,
        "is scopegate's own `signing.issuer`",
    );
}

#[test]
fn connection_limits_have_defaults_and_a_small_max_connections_lowers_the_per_peer_one() {
    let limits = load(&server(), &[("policy.yaml", POLICY)]).unwrap().limits;
    assert_eq!(
        (
            limits.max_connections,
            limits.max_connections_per_peer,
            limits.header_read_timeout,
            limits.idle_timeout
        ),
        (
            10_000,
            1_000,
            Duration::from_secs(10),
            Duration::from_secs(60)
        )
    );
    let text = server_with("limits: { max_connections: 30 }\n");
    let limits = load(&text, &[("policy.yaml", POLICY)]).unwrap().limits;
    assert_eq!(limits.max_connections_per_peer, 30);
    let text = server_with(
        "limits: { max_connections: 30, max_connections_per_peer: 5, idle_timeout: 1s, header_read_timeout: 500ms }\n",
    );
    let limits = load(&text, &[("policy.yaml", POLICY)]).unwrap().limits;
    assert_eq!(
        (
            limits.max_connections_per_peer,
            limits.idle_timeout,
            limits.header_read_timeout
        ),
        (5, Duration::from_secs(1), Duration::from_millis(500))
    );
}

#[test]
fn a_connection_count_the_listener_cannot_hold_is_refused_at_its_line() {
    for (limits, text) in [
        (
            "  max_connections: 0\n",
            "`max_connections` must be between 1 and",
        ),
        (
            "  max_connections: 2305843009213693952\n",
            "not `2305843009213693952`",
        ),
        (
            "  max_connections: 30\n  max_connections_per_peer: 31\n",
            "`max_connections_per_peer` must be between 1 and `max_connections` (30), not `31`",
        ),
        (
            "  max_connections: 30\n  max_connections_per_peer: 0\n",
            "not `0`",
        ),
    ] {
        let server = server_with(&format!("limits:\n{limits}"));
        let line = 12 + limits.lines().count();
        let e = one_error(&server, &[("policy.yaml", POLICY)]);
        assert_error(&e, "scopegate.yaml", line, text);
    }
}

#[test]
fn a_zero_or_overlong_connection_timeout_is_refused_at_its_line() {
    for (limits, text) in [
        (
            "  header_read_timeout: 0s\n",
            "`header_read_timeout` must be longer than zero and at most 1day, not `0s`",
        ),
        (
            "  idle_timeout: 0ms\n",
            "`idle_timeout` must be longer than zero",
        ),
        ("  idle_timeout: 2days\n", "not `2days`"),
        (
            "  header_read_timeout: 18446744073709551615s\n",
            "not `18446744073709551615s`",
        ),
    ] {
        let server = server_with(&format!("limits:\n{limits}"));
        let e = one_error(&server, &[("policy.yaml", POLICY)]);
        assert_error(&e, "scopegate.yaml", 13, text);
    }
}

/// Regression: a huge concurrency bound made `Semaphore::new` panic at start.
#[test]
fn concurrency_bounds_are_validated_at_load() {
    let server = server().replace(
        "  api: { url: \"http://127.0.0.1:3000\" }",
        "  api: { url: \"http://127.0.0.1:3000\", max_concurrency: 18446744073709551615 }",
    );
    let e = one_error(&server, &[("policy.yaml", POLICY)]);
    assert_error(&e, "scopegate.yaml", 5, "not a usable concurrency bound");
}

/// Regression: the permissions `url:` accepted plain HTTP to any host, unlike key URLs.
#[test]
fn plain_http_permissions_url_to_a_remote_host_is_refused() {
    let e = one_error(
        &server_with("permissions: { url: \"http://perms.example.com/check\" }\n"),
        &[("policy.yaml", POLICY)],
    );
    assert_error(&e, "scopegate.yaml", 12, "not an https URL");
    for url in [
        "https://perms.example.com/check",
        "http://127.0.0.1:9000/check",
    ] {
        let text = server_with(&format!("permissions: {{ url: \"{url}\" }}\n"));
        assert!(
            load(&text, &[("policy.yaml", POLICY)]).is_ok(),
            "{url} should be accepted"
        );
    }
}

/// With an upstream that folds case or a trailing `/`, a route's template must already be in
/// folded form: otherwise its own requests would be refused.
#[test]
fn a_route_to_a_folding_upstream_must_be_in_folded_form() {
    let server = server().replace(
        "  api: { url: \"http://127.0.0.1:3000\" }",
        "  api: { url: \"http://127.0.0.1:3000\", folds_case: true, folds_trailing_slash: true }",
    );
    for bad in ["/Admin/{id}", "/admin/{id}/"] {
        let policy = policy_route(&format!(
            "    match: {{ method: GET, path: \"{bad}\" }}\n    upstream: api\n    public: true\n"
        ));
        let e = one_error(&server, &[("policy.yaml", &policy)]);
        assert!(
            e.to_string().contains("not in the form its upstream folds"),
            "{e}"
        );
    }
    let fine = policy_route(
        "    match: { method: GET, path: \"/admin/{Id}\" }\n    upstream: api\n    public: true\n",
    );
    assert!(load(&server, &[("policy.yaml", &fine)]).is_ok());
}

//! The `cors:` blocks: the server file's applies to every route, a route's own replaces it or
//! `false` turns it off, and every bad value is refused at its line.

use std::time::Duration;

use http::{HeaderName, Method};

use super::{assert_error, load, one_error, policy_route, server, server_with};
use crate::config::defaults;
use crate::policy::{Cors, OriginPattern, Origins};

const ROUTE: &str =
    "    match: { method: [GET, PUT], path: /x }\n    upstream: api\n    require: {}\n";

/// The CORS policy of route `r` at `/x` with the server-file tail `global` and route keys `tail`.
fn policy_of(global: &str, tail: &str) -> Option<Cors> {
    let policy = policy_route(&format!("{ROUTE}{tail}"));
    let config = load(&server_with(global), &[("policy.yaml", &policy)]).unwrap();
    let found = config.routes.find(&Method::GET, None, "/x").unwrap();
    found.route.cors.as_deref().cloned()
}

const GLOBAL: &str =
    "cors:\n  allow_origins: [\"https://app.example.com\", \"https://*.example.org\"]\n";

#[test]
fn the_server_files_policy_applies_with_its_defaults() {
    assert_eq!(policy_of("", ""), None, "no CORS unless configured");
    let p = policy_of(GLOBAL, "").unwrap();
    assert_eq!(
        p,
        Cors {
            origins: Origins::List(vec![
                OriginPattern::Exact("https://app.example.com".into()),
                OriginPattern::Label {
                    scheme: "https://".into(),
                    suffix: ".example.org".into()
                },
            ]),
            methods: None,
            headers: defaults::CORS_ALLOW_HEADERS
                .map(HeaderName::from_static)
                .to_vec(),
            expose: defaults::CORS_EXPOSE_HEADERS
                .map(HeaderName::from_static)
                .to_vec(),
            credentials: false,
            max_age: defaults::CORS_MAX_AGE,
        }
    );
}

#[test]
fn a_route_replaces_the_policy_or_turns_it_off() {
    assert_eq!(policy_of(GLOBAL, "    cors: false\n"), None);
    let own = policy_of(
        GLOBAL,
        "    cors:
      allow_origins: [\"http://localhost:3000\"]
      allow_methods: [PUT]
      allow_headers: [Authorization, X-Request-Id]
      expose_headers: [X-Request-Id, www-authenticate]
      allow_credentials: true
      max_age: 1h
",
    )
    .unwrap();
    assert_eq!(
        own.origins,
        Origins::List(vec![OriginPattern::Exact("http://localhost:3000".into())])
    );
    assert_eq!(own.methods, Some(vec![Method::PUT]));
    assert_eq!(own.headers, ["authorization", "x-request-id"]);
    assert_eq!(
        own.expose,
        ["www-authenticate", "retry-after", "x-request-id"]
    );
    assert!(own.credentials);
    assert_eq!(own.max_age, Duration::from_secs(3600));
    let any = policy_of("", "    cors: { allow_origins: [\"*\"] }\n").unwrap();
    assert_eq!(any.origins, Origins::Any);
}

#[test]
fn bad_server_file_values_are_refused_at_their_line() {
    let error = |block: &str| {
        one_error(
            &server_with(block),
            &[("policy.yaml", &policy_route(ROUTE))],
        )
    };
    // The server file's lines 1-11 are the valid head; `cors:` is line 12.
    let e = error("cors:\n  allow_origins: [\"*\"]\n  allow_credentials: true\n");
    assert_error(
        &e,
        "scopegate.yaml",
        14,
        "`allow_credentials: true` with the `*` origin",
    );
    assert!(e.hint.as_deref().unwrap().contains("list the origins"));
    let e = error("cors:\n  allow_origins:\n    - https://app.example.com\n    - \"*\"\n");
    assert_error(&e, "scopegate.yaml", 15, "`*` is listed with other origins");
    let e = error("cors:\n  allow_origins:\n    - https://app.example.com/\n");
    assert_error(
        &e,
        "scopegate.yaml",
        14,
        "`https://app.example.com/` is not an origin",
    );
    let e = error("cors:\n  allow_origins: [\"https://*.com\"]\n");
    assert_error(
        &e,
        "scopegate.yaml",
        13,
        "`*` may only stand for the first label",
    );
    let e = error("cors:\n  allow_origins: [\"null\"]\n");
    assert_error(&e, "scopegate.yaml", 13, "the `null` origin is shared");
    let e = error("cors:\n  allow_origins: []\n");
    assert_error(&e, "scopegate.yaml", 13, "`allow_origins` is empty");
    let e = error("cors:\n  allow_origins: [\"https://a.example\"]\n  allow_methods: [get]\n");
    assert_error(
        &e,
        "scopegate.yaml",
        14,
        "`get` is not an upper-case method token",
    );
    let e = error("cors:\n  allow_origins: [\"https://a.example\"]\n  allow_methods: [HEAD]\n");
    assert_error(&e, "scopegate.yaml", 14, "`allow_methods` lists HEAD");
    let e =
        error("cors:\n  allow_origins: [\"https://a.example\"]\n  allow_headers:\n    - \"*\"\n");
    assert_error(&e, "scopegate.yaml", 15, "`*` is not a header name");
    let e = error("cors:\n  allow_origins: [\"https://a.example\"]\n  expose_headers: [\"x y\"]\n");
    assert_error(&e, "scopegate.yaml", 14, "`x y` is not a header name");
    let e = error("cors:\n  allow_origins: [\"https://a.example\"]\n  max_age: 2d\n");
    assert_error(&e, "scopegate.yaml", 14, "`max_age` is longer than 24h");
    let e = error("cors:\n  allow_origins: [\"https://a.example\"]\n  allow_origin: x\n");
    assert_error(&e, "scopegate.yaml", 14, "unknown field `allow_origin`");
}

#[test]
fn bad_route_values_are_refused_at_their_line() {
    let error = |tail: &str| {
        one_error(
            &server(),
            &[("policy.yaml", &policy_route(&format!("{ROUTE}{tail}")))],
        )
    };
    let e = error("    cors: true\n");
    assert_error(&e, "policy.yaml", 6, "route `r` says `cors: true`");
    let e = error("    cors: { allow_origins: [\"https://a.example\"], allow_methods: [POST] }\n");
    assert_error(&e, "policy.yaml", 6, "the route does not match `POST`");
    let e = error("    cors:\n      allow_origins: [\"https://a.example:443\"]\n");
    assert_error(&e, "policy.yaml", 7, "port 443 is the scheme's default");
    let e = error("    cors: { allow_orgins: [] }\n");
    assert_error(&e, "policy.yaml", 6, "unknown field `allow_orgins`");
}

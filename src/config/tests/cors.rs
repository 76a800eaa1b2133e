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
                .to_vec()
                .into(),
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
        own.expose.names(),
        ["www-authenticate", "retry-after", "x-request-id"]
    );
    assert!(own.credentials);
    assert_eq!(own.max_age, Duration::from_secs(3600));
    let any = policy_of("", "    cors: { allow_origins: [\"*\"] }\n").unwrap();
    assert_eq!(any.origins, Origins::Any);
}

#[test]
fn bad_server_file_values_are_refused_at_their_line() {
    // The server file's lines 1-11 are the valid head; `cors:` is line 12, `allow_origins` 13.
    let origin = "cors:\n  allow_origins: [\"https://a.example\"]\n";
    let cases = [
        (
            "cors:\n  allow_origins: [\"*\"]\n  allow_credentials: true\n".to_string(),
            14,
            "`allow_credentials: true` with the `*` origin",
        ),
        (
            "cors:\n  allow_origins:\n    - https://app.example.com\n    - \"*\"\n".into(),
            15,
            "`*` is listed with other origins",
        ),
        (
            "cors:\n  allow_origins:\n    - https://app.example.com/\n".into(),
            14,
            "`https://app.example.com/` is not an origin",
        ),
        (
            "cors:\n  allow_origins: [\"https://*.com\"]\n".into(),
            13,
            "`*` may only stand for the first label",
        ),
        (
            "cors:\n  allow_origins: [\"null\"]\n".into(),
            13,
            "the `null` origin is shared",
        ),
        (
            "cors:\n  allow_origins: []\n".into(),
            13,
            "`allow_origins` is empty",
        ),
        (
            format!("{origin}  allow_methods: [get]\n"),
            14,
            "`get` is not an upper-case method token",
        ),
        (
            format!("{origin}  allow_methods: [HEAD]\n"),
            14,
            "`allow_methods` lists HEAD",
        ),
        (
            format!("{origin}  allow_headers:\n    - \"*\"\n"),
            15,
            "`*` is not a header name",
        ),
        (
            format!("{origin}  expose_headers: [\"x y\"]\n"),
            14,
            "`x y` is not a header name",
        ),
        (
            format!("{origin}  max_age: 2d\n"),
            14,
            "`max_age` is longer than 24h",
        ),
        (
            format!("{origin}  allow_origin: x\n"),
            14,
            "unknown field `allow_origin`",
        ),
    ];
    for (block, line, text) in cases {
        let policy = policy_route(ROUTE);
        let e = one_error(&server_with(&block), &[("policy.yaml", &policy)]);
        assert_error(&e, "scopegate.yaml", line, text);
        assert!(e.hint.is_some(), "{e}");
    }
}

#[test]
fn bad_route_values_are_refused_at_their_line() {
    let cases = [
        ("    cors: true\n", 6, "route `r` says `cors: true`"),
        (
            "    cors: { allow_origins: [\"https://a.example\"], allow_methods: [POST] }\n",
            6,
            "the route does not match `POST`",
        ),
        (
            "    cors:\n      allow_origins: [\"https://a.example:443\"]\n",
            7,
            "port 443 is the scheme's default",
        ),
        (
            "    cors: { allow_orgins: [] }\n",
            6,
            "unknown field `allow_orgins`",
        ),
    ];
    for (tail, line, text) in cases {
        let policy = policy_route(&format!("{ROUTE}{tail}"));
        let e = one_error(&server(), &[("policy.yaml", &policy)]);
        assert_error(&e, "policy.yaml", line, text);
    }
}

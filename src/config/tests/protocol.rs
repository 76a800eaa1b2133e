//! The upstream `protocol:` key: its values, its default, and the URLs each fits.

use http::Method;

use super::{assert_error, load, one_error, policy_route, server, source};
use crate::config::from_sources;
use crate::policy::UpstreamProtocol;

/// The server file with upstream `api` (line 5) written as `api`.
fn server_api(api: &str) -> String {
    let line = r#"api: { url: "http://127.0.0.1:3000" }"#;
    assert!(server().contains(line), "the upstream is on line 5");
    server().replace(line, api)
}

fn protocol(api: &str) -> UpstreamProtocol {
    let config = load(&server_api(api), &[("policy.yaml", super::POLICY)]).unwrap();
    config.upstreams["api"].protocol
}

#[test]
fn http1_is_the_default_and_each_protocol_loads_with_the_url_it_fits() {
    assert_eq!(
        protocol(r#"api: { url: "http://127.0.0.1:3000" }"#),
        UpstreamProtocol::Http1
    );
    for (api, expected) in [
        (
            r#"api: { url: "http://a:1", protocol: http1 }"#,
            UpstreamProtocol::Http1,
        ),
        (
            r#"api: { url: "https://a", protocol: http1 }"#,
            UpstreamProtocol::Http1,
        ),
        (
            r#"api: { url: "http://a:1", protocol: h2c }"#,
            UpstreamProtocol::H2c,
        ),
        (
            r#"api: { url: "https://a", protocol: h2 }"#,
            UpstreamProtocol::H2,
        ),
        (
            r#"api: { url: "http://a:1", protocol: auto }"#,
            UpstreamProtocol::Auto,
        ),
        (
            r#"api: { url: "https://a", protocol: auto }"#,
            UpstreamProtocol::Auto,
        ),
    ] {
        assert_eq!(protocol(api), expected, "{api}");
    }
}

#[test]
fn a_protocol_that_does_not_fit_the_url_is_refused_at_its_line() {
    let policy = [("policy.yaml", super::POLICY)];
    let e = one_error(
        &server_api(r#"api: { url: "http://a:1", protocol: h2 }"#),
        &policy,
    );
    assert_error(&e, "scopegate.yaml", 5, "`protocol: h2` is HTTP/2 over TLS");
    assert!(e.hint.as_deref().unwrap().contains("`protocol: h2c`"));
    let e = one_error(
        &server_api(r#"api: { url: "https://a", protocol: h2c }"#),
        &policy,
    );
    assert_error(
        &e,
        "scopegate.yaml",
        5,
        "`protocol: h2c` is plain-text HTTP/2",
    );
    assert!(e.hint.as_deref().unwrap().contains("`protocol: h2`"));
    let e = one_error(
        &server_api(r#"api: { url: "http://a:1", protocol: http2 }"#),
        &policy,
    );
    assert_error(&e, "scopegate.yaml", 5, "unknown variant `http2`");
}

#[test]
fn a_websocket_route_to_an_http2_only_upstream_is_refused() {
    let route = "    match: { method: GET, path: /x }\n    upstream: api\n    require: {}\n    websocket: true\n";
    let policy = policy_route(route);
    let e = one_error(
        &server_api(r#"api: { url: "http://a:1", protocol: h2c }"#),
        &[("policy.yaml", &policy)],
    );
    assert_error(
        &e,
        "policy.yaml",
        6,
        "route `r` accepts WebSocket upgrades, but upstream `api` speaks only HTTP/2",
    );
    // `auto` still carries the upgrade over HTTP/1.1.
    let server = server_api(r#"api: { url: "http://a:1", protocol: auto }"#);
    let policies = [source("policy.yaml", &policy)];
    let config = from_sources(&source("scopegate.yaml", &server), ".".as_ref(), &policies);
    let config = config.unwrap();
    assert!(config.routes.find(&Method::GET, None, "/x").is_some());
}

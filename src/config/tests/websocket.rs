//! The `websocket:` route key: its two shapes, its defaults and its errors.

use std::time::Duration;

use http::Method;

use super::{assert_error, load, one_error, policy_route, server};
use crate::config::defaults;
use crate::policy::WebSocketBounds as Bounds;

/// The bounds of the loaded route `r` at `/x`, written with `body` after its name.
fn bounds(body: &str) -> Option<Bounds> {
    let config = load(&server(), &[("policy.yaml", &policy_route(body))]).unwrap();
    let found = config.routes.find(&Method::GET, None, "/x").unwrap();
    found.route.websocket
}

#[test]
fn websocket_is_off_by_default_and_true_or_a_map_turns_it_on() {
    let route = "    match: { method: GET, path: /x }\n    upstream: api\n    require: {}\n";
    assert_eq!(bounds(route), None);
    assert_eq!(bounds(&format!("{route}    websocket: false\n")), None);
    assert_eq!(
        bounds(&format!("{route}    websocket: true\n")),
        Some(Bounds {
            idle_timeout: defaults::WEBSOCKET_IDLE_TIMEOUT,
            max_lifetime: None,
        }),
        "the minted token's expiry bounds the lifetime"
    );
    assert_eq!(
        bounds(&format!(
            "{route}    websocket: {{ idle_timeout: 30s, max_lifetime: 1h }}\n"
        )),
        Some(Bounds {
            idle_timeout: Duration::from_secs(30),
            max_lifetime: Some(Duration::from_secs(3600)),
        })
    );
    let public = "    match: { method: GET, path: /x }\n    upstream: api\n    public: true\n";
    assert_eq!(
        bounds(&format!("{public}    websocket: true\n")).and_then(|b| b.max_lifetime),
        Some(defaults::PUBLIC_WEBSOCKET_MAX_LIFETIME),
        "a public route has no token to end its connections"
    );
}

#[test]
fn a_websocket_route_without_get_is_refused_at_its_line() {
    let policy = policy_route(
        "    match: { method: [POST, PUT], path: /x }
    upstream: api
    require: {}
    websocket: true
",
    );
    let e = one_error(&server(), &[("policy.yaml", &policy)]);
    assert_error(
        &e,
        "policy.yaml",
        6,
        "route `r` accepts WebSocket upgrades but not GET",
    );
    assert!(e.hint.as_deref().unwrap().contains("add GET"));
}

#[test]
fn websocket_typos_and_bad_values_are_refused_at_their_line() {
    let route = "    match: { method: GET, path: /x }\n    upstream: api\n    require: {}\n";
    let error = |tail: &str| {
        one_error(
            &server(),
            &[("policy.yaml", &policy_route(&format!("{route}{tail}")))],
        )
    };
    let e = error("    websocket:\n      idle_timout: 5m\n");
    assert_error(&e, "policy.yaml", 7, "unknown field `idle_timout`");
    assert!(e.message.contains("`idle_timeout`"), "{}", e.message);
    let e = error("    websocket: yes\n");
    assert_error(&e, "policy.yaml", 6, "expected `true`, `false` or a map");
    let e = error("    websocket: { max_lifetime: soon }\n");
    assert_error(&e, "policy.yaml", 6, "`soon` is not a duration");
    let e = error("    websocket: { idle_timeout: 0s }\n");
    assert_error(
        &e,
        "policy.yaml",
        6,
        "`idle_timeout` must be longer than 0s",
    );
}

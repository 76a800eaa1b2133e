use std::sync::Arc;

use http::Method;

use super::RouteTable;
use crate::policy::{Access, Route};

fn route(name: &str, method: Option<Method>, host: Option<&str>, path: &str) -> Arc<Route> {
    Arc::new(Route {
        methods: method.map(|m| vec![m]),
        host: host.map(Into::into),
        ..Route::for_tests(name, path, Access::Public)
    })
}

fn name(t: &RouteTable, m: Method, host: Option<&str>, path: &str) -> Option<String> {
    t.find(&m, host, path).map(|r| r.route.name.clone())
}

#[test]
fn static_segments_win_over_parameters() {
    let t = RouteTable::build(vec![
        route("by-id", Some(Method::GET), None, "/builds/{id}"),
        route("latest", Some(Method::GET), None, "/builds/latest"),
    ])
    .unwrap();
    assert_eq!(
        name(&t, Method::GET, None, "/builds/latest").as_deref(),
        Some("latest")
    );
    assert_eq!(
        name(&t, Method::GET, None, "/builds/42").as_deref(),
        Some("by-id")
    );
    let m = t.find(&Method::GET, None, "/builds/42").unwrap();
    assert_eq!(m.params, vec![("id", "42")]);
}

#[test]
fn method_specific_before_any_method_and_unmatched_is_none() {
    let t = RouteTable::build(vec![
        route("any", None, None, "/builds"),
        route("post", Some(Method::POST), None, "/builds"),
    ])
    .unwrap();
    assert_eq!(
        name(&t, Method::POST, None, "/builds").as_deref(),
        Some("post")
    );
    assert_eq!(
        name(&t, Method::DELETE, None, "/builds").as_deref(),
        Some("any")
    );
    assert_eq!(
        name(&t, Method::GET, None, "/builds/"),
        None,
        "trailing slash is significant"
    );
    assert_eq!(name(&t, Method::GET, None, "/other"), None);
}

#[test]
fn host_routes_win_and_others_fall_back() {
    let t = RouteTable::build(vec![
        route("generic", None, None, "/x"),
        route("tenant", None, Some("a.example.com"), "/x"),
    ])
    .unwrap();
    assert_eq!(
        name(&t, Method::GET, Some("a.example.com"), "/x").as_deref(),
        Some("tenant")
    );
    assert_eq!(
        name(&t, Method::GET, Some("b.example.com"), "/x").as_deref(),
        Some("generic")
    );
}

#[test]
fn ambiguous_and_duplicate_routes_are_conflicts() {
    let err = RouteTable::build(vec![
        route("a", Some(Method::GET), None, "/orgs/{org}"),
        route("b", Some(Method::GET), None, "/orgs/{name}"),
    ])
    .unwrap_err();
    assert_eq!((err[0].route, err[0].other), (1, 0));
    assert!(err[0].message.contains("ambiguous"), "{}", err[0].message);

    let err = RouteTable::build(vec![
        route("a", Some(Method::GET), None, "/x"),
        route("b", Some(Method::GET), None, "/x"),
    ])
    .unwrap_err();
    assert!(
        err[0].message.contains("same method, host and path"),
        "{}",
        err[0].message
    );

    // Different methods never conflict.
    assert!(
        RouteTable::build(vec![
            route("a", Some(Method::GET), None, "/orgs/{org}"),
            route("b", Some(Method::POST), None, "/orgs/{name}"),
        ])
        .is_ok()
    );
}

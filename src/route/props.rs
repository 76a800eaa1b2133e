//! Route lookup properties (proptest only: the table is built with the crate's test routes, so
//! these live beside the module). Replays `fuzz/corpus/route/` first: each file is a path.

use std::sync::Arc;

use http::Method;
use proptest::prelude::*;

use super::RouteTable;
use crate::policy::{Access, Route};

/// Templates of every kind matchit has: static, parameter, catch-all, prefix and suffix.
const TEMPLATES: &[(&str, Option<Method>, Option<&str>)] = &[
    ("/", None, None),
    ("/admin", Some(Method::GET), None),
    ("/admin/", None, None),
    ("/orgs/{org}", None, None),
    ("/orgs/{org}", Some(Method::DELETE), Some("a.example.com")),
    ("/orgs/{org}/builds", Some(Method::POST), None),
    ("/orgs/{org}/builds/{id}", Some(Method::GET), None),
    ("/orgs/{org}/builds/latest", Some(Method::GET), None),
    ("/orgs/latest/builds/{id}", None, None),
    ("/files/{*rest}", None, None),
    ("/files/", Some(Method::GET), Some("a.example.com")),
    ("/static/{*path}", Some(Method::GET), None),
    ("/a/{x}/b/{y}", None, None),
    ("/users/{id}/keys/{key}", None, Some("a.example.com")),
    ("/reports/{id}.json", None, None),
    ("/reports/{id}.csv", None, None),
    ("/v{version}/status", None, None),
];

fn table() -> RouteTable {
    let routes = TEMPLATES
        .iter()
        .enumerate()
        .map(|(i, (path, method, host))| {
            Arc::new(Route {
                methods: method.clone().map(|m| vec![m]),
                host: host.map(Into::into),
                ..Route::for_tests(&format!("r{i}"), path, Access::Public)
            })
        })
        .collect();
    RouteTable::build(routes).unwrap()
}

fn accepts(route: &Route, method: &Method, host: Option<&str>) -> bool {
    route.methods.as_ref().is_none_or(|ms| ms.contains(method))
        && route.host.as_deref().is_none_or(|h| host == Some(h))
}

/// The params a router holding only `template` captures from `path`, if it matches.
fn alone(template: &str, path: &str) -> Option<Vec<(String, String)>> {
    let mut router = matchit::Router::new();
    router.insert(template, ()).unwrap();
    let found = router.at(path).ok()?;
    Some(
        found
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// For a normalized path: a route found matches that exact path on its own, with the same params,
/// each a slice of the path; it accepts the method and host; a host route wins when one matches;
/// and when some route would take the request, one is found.
/// Returns how many of its lookups found a route.
fn check(table: &RouteTable, raw: &[u8]) -> usize {
    let mut hits = 0;
    let Ok(path) = crate::normalize::normalize(&String::from_utf8_lossy(raw)) else {
        return hits;
    };
    let span = path.as_ptr() as usize..path.as_ptr() as usize + path.len();
    for method in [Method::GET, Method::POST, Method::DELETE] {
        for host in [None, Some("a.example.com"), Some("b.example.com")] {
            let candidates: Vec<&Arc<Route>> = table
                .routes()
                .iter()
                .filter(|r| accepts(r, &method, host) && alone(&r.path, &path).is_some())
                .collect();
            let Some(found) = table.find(&method, host, &path) else {
                assert!(
                    candidates.is_empty(),
                    "{method} {host:?} {path:?}: no route, though {:?} match",
                    candidates.iter().map(|r| &r.path).collect::<Vec<_>>()
                );
                continue;
            };
            hits += 1;
            let route = found.route;
            assert!(accepts(route, &method, host), "{method} {host:?} {path:?}");
            let params: Vec<(String, String)> = found
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            assert_eq!(
                alone(&route.path, &path),
                Some(params),
                "{path:?} under `{}`",
                route.path
            );
            for (_, value) in &found.params {
                let at = value.as_ptr() as usize;
                assert!(
                    span.contains(&at) || value.is_empty(),
                    "{value:?} is not a slice of {path:?}"
                );
            }
            if candidates.iter().any(|r| r.host.is_some()) {
                assert!(
                    route.host.is_some(),
                    "{path:?}: a host route matched but lost"
                );
            }
        }
    }
    hits
}

/// `template` with its parameters replaced by `fills` (a catch-all takes all of them).
fn fill(template: &str, fills: &[String]) -> String {
    let mut out = String::new();
    let mut rest = template;
    let mut fills = fills.iter().cycle();
    while let Some((before, after)) = rest.split_once('{') {
        out.push_str(before);
        let (param, after) = after.split_once('}').unwrap();
        if param.starts_with('*') {
            out.push_str(
                &fills
                    .by_ref()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("/"),
            );
        } else {
            out.push_str(fills.next().unwrap());
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

const SEGMENTS: &[&str] = &[
    "", "orgs", "builds", "latest", "admin", "files", "static", "a", "b", "x", "42", "users",
    "keys", "reports", "status", "v1", "v", "1.json", "1.csv", ".json", "json", ";", "..", ".",
    "%2e", "%41", "%2F", ";x", "{org}", "*",
];

#[test]
fn a_found_route_matches_the_exact_path_and_a_matching_route_is_found() {
    let table = table();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/route");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{} holds too few seeds", dir.display());
    for file in files {
        check(&table, &std::fs::read(&file).unwrap());
    }
    let segment = prop_oneof![
        9 => proptest::sample::select(SEGMENTS).prop_map(str::to_string),
        1 => "[a-z0-9.;%{}*]{0,4}",
    ];
    let random =
        proptest::collection::vec(segment.clone(), 0..7).prop_map(|s| format!("/{}", s.join("/")));
    let templated = (
        proptest::sample::select(TEMPLATES),
        proptest::collection::vec(segment.clone(), 3),
        proptest::collection::vec(segment, 0..2),
    )
        .prop_map(|((template, _, _), fills, extra)| {
            let mut path = fill(template, &fills);
            for e in extra {
                path.push('/');
                path.push_str(&e);
            }
            path
        });
    let path = prop_oneof![random, templated];
    let config = proptest::test_runner::Config {
        cases: 1000,
        failure_persistence: None,
        ..Default::default()
    };
    let hits = std::sync::atomic::AtomicUsize::new(0);
    proptest!(config, |(path in path)| {
        hits.fetch_add(check(&table, path.as_bytes()), std::sync::atomic::Ordering::Relaxed);
    });
    // The generator must reach routes, or the property says nothing.
    let hits = hits.into_inner();
    assert!(hits > 1000, "only {hits} of 9000 lookups found a route");
}

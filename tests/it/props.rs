//! The fuzz targets' properties on stable: each test replays its checked-in corpus
//! (`fuzz/corpus/<target>/`), then checks proptest's inputs, built from the fragments attacks
//! are made of, with the very checkers cargo-fuzz runs (`fuzz/checks.rs`).

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

#[path = "../../fuzz/checks.rs"]
mod checks;

/// Runs `check` on every file of `fuzz/corpus/<target>/`, naming the file that fails, then on
/// `cases` inputs of `inputs`, of which at least a tenth must be accepted: a generator that never
/// reaches the accepting branch checks nothing.
fn property<S>(target: &str, check: fn(&[u8]) -> bool, cases: u32, inputs: S)
where
    S: Strategy,
    S::Value: AsRef<[u8]>,
{
    replay(target, check);
    let accepted = AtomicU32::new(0);
    let mut runner = TestRunner::new(Config {
        cases,
        // A failing case is shrunk and reported; add it to the corpus, the regression store.
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&inputs, |input| {
        if check(input.as_ref()) {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{target}: {e}");
    }
    let accepted = accepted.into_inner();
    assert!(
        accepted >= cases / 10,
        "{target}: only {accepted} of {cases} generated inputs were accepted"
    );
}

fn replay(target: &str, check: fn(&[u8]) -> bool) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{} holds too few seeds", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("corpus file {} fails its property", file.display());
        }
    }
}

/// One of `choices`.
fn one_of(choices: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    proptest::sample::select(choices).prop_map(str::to_string)
}

/// Strings made of `fragments` (weighted heavily) and any other character.
fn made_of(
    fragments: &'static [&'static str],
    max: usize,
) -> impl Strategy<Value = String> + Clone {
    let piece = prop_oneof![
        9 => one_of(fragments),
        1 => any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..max).prop_map(|p| p.concat())
}

const PATH: &[&str] = &[
    "/", "/", "/", "//", ".", "..", ";", ";x=1", "%", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C",
    "%00", "%25", "%41", "%7e", "%7E", "%3B", "%3b", "%e9", "%C3%A9", "\\", "a", "Z", "0", "~",
    "-", "_", "admin", "static", "?", "#", "é", "\u{0}", " ", "%%", "%2", "%g0",
];

#[test]
fn normalize_is_idempotent_and_forwards_what_it_authorizes() {
    let paths = (made_of(PATH, 12), proptest::bool::weighted(0.9))
        .prop_map(|(path, absolute)| if absolute { format!("/{path}") } else { path });
    property("normalize", checks::normalize, 2000, paths);
}

const HOST: &[&str] = &[
    "a",
    "A",
    "z",
    "0",
    "9",
    "-",
    "_",
    ".",
    ".",
    ":",
    ":",
    "[",
    "]",
    "::",
    "::1",
    "fe80::1",
    "::ffff:",
    "1.2.3.4",
    "127.0.0.1",
    "ffff",
    "%25",
    "%",
    "@",
    "user@",
    "/",
    " ",
    "\t",
    "é",
    "80",
    "443",
    "0",
    "65535",
    "65536",
    "080",
    "example",
    "EXAMPLE",
    "com",
    "\n",
    "\n",
    "http://",
    "https://",
    "*",
];

#[test]
fn a_valid_host_is_canonical_and_the_request_host_is_the_header_or_target() {
    let label = prop_oneof![
        3 => one_of(&["api", "API", "example", "Example", "com", "a-b", "x_y", "0"]),
        1 => made_of(HOST, 3),
    ];
    let port = proptest::option::of(made_of(&["80", "443", "0", "65535", "65536", "08", "1"], 2));
    let name = prop_oneof![
        (proptest::collection::vec(label, 1..4), proptest::bool::ANY)
            .prop_map(|(labels, dot)| labels.join(".") + if dot { "." } else { "" }),
        one_of(&[
            "[::1]",
            "[0:0::1]",
            "[::ffff:1.2.3.4]",
            "[FE80::1]",
            "[::]",
            "1.2.3.4"
        ]),
    ];
    let host = (name, port).prop_map(|(name, port)| match port {
        Some(port) => format!("{name}:{port}"),
        None => name,
    });
    let target = prop_oneof![
        one_of(&[
            "",
            "/",
            "*",
            "http://user@api.example.com/",
            "api.example.com:443"
        ]),
        host.clone().prop_map(|h| format!("http://{h}/x")),
    ];
    let request = (
        host.clone(),
        target,
        proptest::collection::vec(host.clone(), 0..2),
    )
        .prop_map(|(header, target, more)| [vec![header, target], more].concat().join("\n"));
    let inputs = prop_oneof![host, request, made_of(HOST, 12)];
    property("host", checks::host, 2000, inputs);
}

const QUERY: &[&str] = &[
    "org", "org", "org", "ORG", "Org", "oRg", "o", "O", "r", "R", "g", "G", "%6F", "%6f", "%4F",
    "%72", "%52", "%67", "%47", "=", "=", "&", "&", "%", "%26", "%3D", "[", "]", "%5B", "%5D", ".",
    "%2E", ";", "+", "%2B", "%20", " ", "acme", "x", "_", "-", "%00", "é", "%C3%A9", "%",
];

#[test]
fn an_accepted_query_organization_is_what_first_and_last_wins_parsers_read() {
    let key = prop_oneof![
        6 => one_of(&["page", "orgs", "org_id", "x", "", "o"]),
        3 => one_of(&["org", "ORG", "%6Frg", "org[]", "org.x", "org%5B0%5D"]),
        1 => made_of(QUERY, 4),
    ];
    let value = prop_oneof![
        3 => one_of(&["acme", "ac%6De", "a.b-c_d~e:f", "", "a+b", "%"]),
        1 => made_of(QUERY, 4),
    ];
    let separator = prop_oneof![8 => Just("&"), 1 => Just("&&"), 1 => Just(";")];
    let pair = (key, proptest::option::of(value.clone()), separator.clone()).prop_map(
        |(key, value, separator)| match value {
            Some(value) => format!("{key}={value}{separator}"),
            None => format!("{key}{separator}"),
        },
    );
    // One `org` among other parameters, some of them variants of it.
    let pairs = (
        value,
        separator,
        proptest::collection::vec(pair, 0..3),
        0usize..3,
    )
        .prop_map(|(value, separator, mut others, at)| {
            others.insert(at.min(others.len()), format!("org={value}{separator}"));
            others.concat()
        });
    let inputs = prop_oneof![3 => pairs, 1 => made_of(QUERY, 16)];
    property("query_org", checks::query_org, 2000, inputs);
}

/// Values of forward-auth describing headers: methods, targets, URLs and hosts, good and bad.
const ORIGINAL: &[&str] = &[
    "GET",
    "DELETE",
    "get",
    "PO ST",
    "",
    " ",
    "/",
    "/admin",
    "/admin/users?x=1",
    "?",
    "#",
    "/a#b",
    "//evil.example",
    "*",
    "http://",
    "https://",
    "api.example.com",
    "API.Example.com.",
    ":443",
    ":0",
    "[::1]",
    "@",
    "user@",
    "/envoy",
    "/envoy/",
    "%2F",
    "é",
    "\t",
    "..",
    ";",
];

/// What each ingress sends (the header lines of `checks::forward_auth`), for inputs to start from.
const ASKS: &[&[&str]] = &[
    &["0DELETE", "1/admin/users?x=1", "3API.example.com"],
    &["0GET", "2http://api.example.com/orgs/1?x=1"],
    &["0GET", "2https://api.example.com:8443/a", "1/a"],
    &["4PUT", "5/orgs/1", "6api.example.com.:443"],
    &["7api.example.com"],
    &[],
];

const CHECK_TARGETS: &[&str] = &[
    "/",
    "/envoy",
    "/envoy/",
    "/envoy/orgs/1?x=1",
    "/envoyx/a",
    "/envoy//a",
    "http://api.example.com/envoy/a",
    "*",
];

#[test]
fn a_forward_auth_convention_reads_only_its_own_headers_and_exactly_them() {
    let header = (0u8..8, made_of(ORIGINAL, 4))
        .prop_map(|(name, value)| format!("{}{}", char::from(b'0' + name), value));
    let input = (
        proptest::sample::select(CHECK_TARGETS),
        proptest::sample::select(ASKS),
        proptest::collection::vec((0usize..4, header.clone()), 0..2),
        proptest::collection::vec(header, 0..3),
    )
        .prop_map(|(target, ask, replaced, added)| {
            let mut lines: Vec<String> = ask.iter().map(|l| l.to_string()).collect();
            for (at, header) in replaced {
                if let Some(line) = lines.get_mut(at) {
                    *line = header;
                }
            }
            lines.extend(added);
            lines.insert(0, target.to_string());
            lines.join("\n")
        });
    property("forward_auth", checks::forward_auth, 1000, input);
}

const CLAIMS: &[&str] = &[
    "sub",
    "exp",
    "scope",
    "scp",
    "act",
    "token_use",
    "aud",
    "jti",
    "bound_path",
    "alg",
    "typ",
    "kid",
    "jwk",
    "x5c",
    "crit",
    "cty",
];

/// JSON values of every kind, nested, with the claim and header names as object keys.
fn json() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        made_of(&["", " ", "a", "read", "write", "HS256", "none", "JWT"], 4).prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::vec((proptest::sample::select(CLAIMS), inner), 0..6).prop_map(
                |entries| Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                )
            ),
        ]
    })
}

#[test]
fn a_token_of_any_shape_never_panics_and_a_principal_keeps_its_claims() {
    let object = proptest::collection::vec((proptest::sample::select(CLAIMS), json()), 0..8)
        .prop_map(|entries| {
            let object: serde_json::Map<String, Value> = entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            serde_json::to_vec(&object).unwrap()
        });
    // Claims that pass the type checks, with one claim of any shape added or replaced.
    let principal = (proptest::sample::select(CLAIMS), json()).prop_map(|(claim, value)| {
        let mut object =
            serde_json::json!({"sub": "alice", "exp": 4102444800u64, "scope": "a b", "scp": ["a"]});
        object[claim] = value;
        serde_json::to_vec(&object).unwrap()
    });
    let compact = made_of(&[".", "e30", "eyJ", "=", "eyJhbGciOiJFUzI1NiJ9"], 8);
    let token = (object.clone(), compact.clone()).prop_map(|(json, tail)| {
        let part = URL_SAFE_NO_PAD.encode(&json);
        format!("{part}.{part}.{tail}").into_bytes()
    });
    let inputs = prop_oneof![
        object,
        principal,
        token,
        compact.prop_map(String::into_bytes)
    ];
    property("token", checks::token, 1000, inputs);
}

/// Labels of an origin pattern's host: mostly valid, some not.
const ORIGIN_LABEL: &[&str] = &[
    "a", "example", "com", "pr-7", "xn--p1ai", "0", "b", "org", "a", "example", "com", "A", "a_b",
    "-a", "", "*", "a/b", "u@a", "é",
];

/// What an origin's `*` may be replaced by, valid and not.
const ORIGIN_STAR: &[&str] = &[
    "a", "pr-7", "x1", "A", "a.b", "", "a/", "a:1", "@", "-", "*",
];

#[test]
fn an_origin_pattern_matches_only_its_own_origins() {
    let scheme = prop_oneof![
        8 => one_of(&["https://", "http://"]),
        1 => one_of(&["ftp://", "https:/", ""]),
    ];
    let star = prop_oneof![6 => one_of(&["*.", ""]), 1 => one_of(&["*", "a*."])];
    let host = proptest::collection::vec(one_of(ORIGIN_LABEL), 1..4).prop_map(|l| l.join("."));
    let port = prop_oneof![
        6 => one_of(&["", ":8443", ":3000"]),
        1 => one_of(&[":443", ":80", ":0", ":08", ":99999", ":"]),
    ];
    let pattern = (scheme, star, host, port).prop_map(|(s, star, h, p)| format!("{s}{star}{h}{p}"));
    let inputs = (
        pattern,
        one_of(ORIGIN_STAR),
        made_of(ORIGIN_STAR, 4),
        any::<bool>(),
    )
        .prop_map(|(pattern, label, noise, filled)| {
            let origin = if filled {
                pattern.replacen('*', &label, 1)
            } else {
                format!("https://{noise}")
            };
            format!("{pattern}\n{origin}")
        });
    property("origin", checks::origin, 2000, inputs);
}

use std::time::Duration;

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::policy::{Cors, OriginPattern, OriginPatternError, Origins};

fn policy(origins: &[&str]) -> Cors {
    Cors {
        origins: Origins::List(
            origins
                .iter()
                .map(|o| OriginPattern::parse(o).unwrap())
                .collect(),
        ),
        methods: None,
        headers: vec![header::AUTHORIZATION, header::CONTENT_TYPE],
        expose: vec![header::WWW_AUTHENTICATE, header::RETRY_AFTER].into(),
        credentials: false,
        max_age: Duration::from_secs(600),
    }
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    map
}

fn ask(policy: &Cors, pairs: &[(&str, &str)]) -> Result<HeaderMap, CorsError> {
    let h = headers(pairs);
    let preflight = Preflight::of(&Method::OPTIONS, &h).expect("a preflight");
    answer(policy, &preflight)
}

#[test]
fn exact_origins_match_byte_for_byte() {
    let p = OriginPattern::parse("https://app.example.com").unwrap();
    assert!(p.matches("https://app.example.com"));
    for other in [
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://app.example.com.evil.com",
        "https://evil-app.example.com",
        "https://APP.example.com",
        "https://app.example.com/",
        "null",
    ] {
        assert!(!p.matches(other), "{other}");
    }
    let port = OriginPattern::parse("http://127.0.0.1:3000").unwrap();
    assert!(port.matches("http://127.0.0.1:3000"));
    assert!(!port.matches("http://127.0.0.1:30000"));
    assert!(
        OriginPattern::parse("http://[::1]:8080")
            .unwrap()
            .matches("http://[::1]:8080")
    );
}

#[test]
fn a_pattern_stands_for_exactly_one_label() {
    let p = OriginPattern::parse("https://*.example.com").unwrap();
    assert!(p.matches("https://a.example.com"));
    assert!(p.matches("https://pr-42.example.com"));
    for other in [
        "https://example.com",
        "https://.example.com",
        "https://a.b.example.com",
        "https://a.example.com:8443",
        "http://a.example.com",
        "https://evil.com/.example.com",
        "https://a_b.example.com",
        "https://-a.example.com",
        "https://a.example.com.evil.com",
        "https://aexample.com",
    ] {
        assert!(!p.matches(other), "{other}");
    }
    let port = OriginPattern::parse("https://*.example.com:8443").unwrap();
    assert!(port.matches("https://a.example.com:8443"));
    assert!(!port.matches("https://a.example.com"));
}

#[test]
fn origins_browsers_never_send_are_refused_at_load() {
    use OriginPatternError as E;
    for (text, error) in [
        ("null", E::Null),
        ("app.example.com", E::Shape),
        ("ftp://app.example.com", E::Shape),
        (
            "https://app.example.com/",
            E::Host("app.example.com/".into()),
        ),
        ("https://App.example.com", E::Host("App.example.com".into())),
        (
            "https://user@app.example.com",
            E::Host("user@app.example.com".into()),
        ),
        ("https://app.example.com:443", E::DefaultPort(443)),
        ("http://localhost:80", E::DefaultPort(80)),
        ("http://localhost:0", E::Port("0".into())),
        ("http://localhost:080", E::Port("080".into())),
        ("http://localhost:99999", E::Port("99999".into())),
        ("https://*.com", E::Wildcard),
        ("https://*", E::Wildcard),
        ("https://a.*.example.com", E::Wildcard),
        ("https://*app.example.com", E::Wildcard),
        ("https://*.*.example.com", E::Wildcard),
        ("http://[::0001]:8080", E::Host("[::0001]".into())),
    ] {
        assert_eq!(OriginPattern::parse(text), Err(error), "{text}");
    }
}

#[test]
fn a_preflight_is_options_with_an_origin_and_a_requested_method() {
    let full = headers(&[
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "PUT"),
    ]);
    assert!(Preflight::of(&Method::OPTIONS, &full).is_some());
    assert!(Preflight::of(&Method::GET, &full).is_none());
    let no_method = headers(&[("origin", "https://app.example.com")]);
    assert!(Preflight::of(&Method::OPTIONS, &no_method).is_none());
    let no_origin = headers(&[("access-control-request-method", "PUT")]);
    assert!(Preflight::of(&Method::OPTIONS, &no_origin).is_none());
}

#[test]
fn an_allowed_preflight_gets_its_grant() {
    let grant = ask(
        &policy(&["https://app.example.com"]),
        &[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
            (
                "access-control-request-headers",
                "authorization,Content-Type",
            ),
        ],
    )
    .unwrap();
    let get = |n: HeaderName| grant.get(n).unwrap().to_str().unwrap().to_string();
    assert_eq!(
        get(header::ACCESS_CONTROL_ALLOW_ORIGIN),
        "https://app.example.com"
    );
    assert_eq!(get(header::ACCESS_CONTROL_ALLOW_METHODS), "PUT");
    assert_eq!(
        get(header::ACCESS_CONTROL_ALLOW_HEADERS),
        "authorization, content-type"
    );
    assert_eq!(get(header::ACCESS_CONTROL_MAX_AGE), "600");
    assert_eq!(get(header::VARY), "Origin");
    assert!(!grant.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
}

#[test]
fn a_preflight_is_refused_for_its_origin_method_or_headers() {
    let mut p = policy(&["https://app.example.com"]);
    p.methods = Some(vec![Method::GET, Method::POST]);
    let app = ("origin", "https://app.example.com");
    let get = ("access-control-request-method", "GET");
    assert!(ask(&p, &[app, get]).is_ok());
    assert!(ask(&p, &[app, ("access-control-request-method", "HEAD")]).is_ok());
    assert_eq!(
        ask(&p, &[("origin", "https://evil.example.com"), get]),
        Err(CorsError::Origin)
    );
    assert_eq!(
        ask(&p, &[app, app, get]),
        Err(CorsError::Origin),
        "two origins"
    );
    assert_eq!(
        ask(&p, &[app, ("access-control-request-method", "DELETE")]),
        Err(CorsError::Method)
    );
    assert_eq!(
        ask(&p, &[app, ("access-control-request-method", "BAD METHOD")]),
        Err(CorsError::Method)
    );
    assert_eq!(
        ask(
            &p,
            &[
                app,
                get,
                ("access-control-request-headers", "authorization, x-admin")
            ]
        ),
        Err(CorsError::Headers)
    );
    assert_eq!(
        ask(
            &p,
            &[app, get, ("access-control-request-headers", "bad header")]
        ),
        Err(CorsError::Headers)
    );
}

#[test]
fn any_origin_is_answered_with_a_star_unless_credentials_are_allowed() {
    let mut p = policy(&[]);
    p.origins = Origins::Any;
    let asked = [
        ("origin", "https://anyone.example"),
        ("access-control-request-method", "GET"),
    ];
    let grant = ask(&p, &asked).unwrap();
    assert_eq!(grant[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let mut with = policy(&["https://anyone.example"]);
    with.credentials = true;
    let grant = ask(&with, &asked).unwrap();
    assert_eq!(
        grant[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://anyone.example"
    );
    assert_eq!(grant[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
}

#[test]
fn an_answer_gets_the_policy_headers_and_loses_the_upstreams() {
    let p = policy(&["https://app.example.com"]);
    let upstream = || {
        headers(&[
            ("access-control-allow-origin", "*"),
            ("access-control-allow-credentials", "true"),
            ("vary", "accept-encoding"),
            ("content-type", "application/json"),
        ])
    };
    let mut allowed = upstream();
    let app = HeaderValue::from_static("https://app.example.com");
    decorate(&p, Some(&app), &mut allowed);
    assert_eq!(
        allowed
            .get_all(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .iter()
            .collect::<Vec<_>>(),
        ["https://app.example.com"]
    );
    assert!(!allowed.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
    assert_eq!(
        allowed[header::ACCESS_CONTROL_EXPOSE_HEADERS],
        "www-authenticate, retry-after"
    );
    assert_eq!(
        allowed.get_all(header::VARY).iter().collect::<Vec<_>>(),
        ["accept-encoding", "Origin"]
    );
    assert_eq!(allowed[header::CONTENT_TYPE], "application/json");

    for origin in [
        Some(HeaderValue::from_static("https://evil.example.com")),
        None,
    ] {
        let mut refused = upstream();
        decorate(&p, origin.as_ref(), &mut refused);
        assert!(
            refused
                .keys()
                .all(|k| !k.as_str().starts_with("access-control-")),
            "{refused:?}"
        );
        assert!(refused.get_all(header::VARY).iter().any(|v| v == "Origin"));
    }
}

#[test]
fn vary_is_added_once() {
    let mut h = headers(&[("vary", "Accept-Encoding, origin")]);
    vary(&mut h);
    assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    let mut star = headers(&[("vary", "*")]);
    vary(&mut star);
    assert_eq!(star.get_all(header::VARY).iter().count(), 1);
}

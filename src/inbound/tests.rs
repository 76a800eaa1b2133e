use super::*;

#[test]
fn only_standard_upper_case_and_configured_methods_are_judged() {
    let rules = RequestRules {
        extension_methods: vec![Method::from_bytes(b"PROPFIND").unwrap()],
        ..Default::default()
    };
    for m in [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND",
    ] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(rules.routing_method(&method), Ok(method.clone()), "{m}");
    }
    // Regression: a lowercase `delete` missed the DELETE routes and fell through to an
    // any-method route, and was forwarded lowercase.
    for m in ["get", "delete", "Get", "FOO", "CONNECT", "propfind"] {
        let method = Method::from_bytes(m.as_bytes()).unwrap();
        assert_eq!(
            rules.routing_method(&method),
            Err(RequestError::Method),
            "{m}"
        );
    }
    // Regression: HEAD fell through to a catch-all; it is judged exactly as GET.
    assert_eq!(rules.routing_method(&Method::HEAD), Ok(Method::GET));
}

#[test]
fn queries_with_method_overrides_or_non_ascii_bytes_are_refused() {
    assert_eq!(check_query(None), Ok(()));
    assert_eq!(check_query(Some("a=1&b=%C3%A4")), Ok(()));
    for q in [
        "_method=DELETE",
        "a=1&_METHOD=put",
        "%5Fmethod=PATCH",
        "_method",
    ] {
        assert_eq!(
            check_query(Some(q)),
            Err(RequestError::MethodOverride),
            "{q}"
        );
    }
    assert_eq!(
        check_query(Some("a=\u{e4}")),
        Err(RequestError::QueryEncoding)
    );
}

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    m
}

#[test]
fn override_headers_are_stripped_and_underscore_aliases_dropped() {
    let rules = RequestRules::default();
    let mut h = map(&[
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-port", "1"),
        ("x_org", "globex"),
        ("x-org", "acme"),
        ("x_scopegate_subject", "root"),
        ("x_forwarded_host", "evil"),
        ("x_http_method_override", "DELETE"),
        ("x_tenant", "kept: nothing else folds to it"),
        ("accept", "*/*"),
    ]);
    rules.rewrite_headers(&mut h, Some(&HeaderName::from_static("x-org")));
    let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
    left.sort_unstable();
    assert_eq!(left, ["accept", "x-org", "x_tenant"]);
}

#[test]
fn the_decision_header_cannot_be_shadowed_by_its_underscore_spelling() {
    let rules = RequestRules::default();
    let mut h = map(&[("x_org", "globex")]);
    rules.rewrite_headers(&mut h, Some(&HeaderName::from_static("x-org")));
    assert!(h.is_empty());
}

#[test]
fn cookie_crumbs_are_joined_and_header_count_is_bounded() {
    let rules = RequestRules::default();
    let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
    rules.rewrite_headers(&mut h, None);
    assert_eq!(h.get_all("cookie").iter().count(), 1);
    assert_eq!(h["cookie"], "a=1; b=2");
    let many: Vec<(String, String)> = (0..101).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        rules.check_headers(&map(&pairs)),
        Err(RequestError::TooManyHeaders(100))
    );
    assert_eq!(rules.check_headers(&map(&pairs[..100])), Ok(()));
}

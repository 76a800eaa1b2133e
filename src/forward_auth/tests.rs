use super::*;

fn ask(
    convention: Option<Convention>,
    headers: &[(&str, &str)],
) -> Result<Original, OriginalError> {
    ask_at(convention, "/", headers)
}

fn ask_at(
    convention: Option<Convention>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Original, OriginalError> {
    let config = ForwardAuthConfig {
        convention,
        ..Default::default()
    };
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    config.original(
        "127.0.0.1".parse().unwrap(),
        &Method::GET,
        &path.parse().unwrap(),
        &map,
    )
}

const NGINX: [(&str, &str); 3] = [
    ("x-original-method", "DELETE"),
    ("x-original-uri", "/admin/users?x=1"),
    ("x-original-host", "API.example.com"),
];

#[test]
fn nginx_reads_exactly_the_headers_nginx_sets() {
    let o = ask(Some(Convention::Nginx), &NGINX).unwrap();
    assert_eq!(o.method, Method::DELETE);
    assert_eq!(o.uri, "/admin/users?x=1");
    assert_eq!(o.host.authority(), "api.example.com");
}

/// Regression (critical): a client's own `X-Original-URL: /public/x` passed through nginx's
/// `auth_request` made scopegate judge `/public/x` while nginx forwarded `DELETE /admin/users`.
#[test]
fn a_client_x_original_url_never_picks_the_judged_path() {
    let mut headers = NGINX.to_vec();
    headers.push(("x-original-url", "http://api.example.com/public/x"));
    assert_eq!(
        ask(Some(Convention::Nginx), &headers),
        Err(OriginalError::Conflicting("x-original-url"))
    );
    assert!(
        ask(None, &headers).is_err(),
        "auto refuses two conventions too"
    );
}

/// Regression: a client's `X-Forwarded-Host` was trusted in the nginx convention, and without it
/// the host fell back to the check request's own `Host` (nginx's upstream address).
#[test]
fn nginx_host_comes_from_x_original_host_only() {
    let mut headers = NGINX.to_vec();
    headers.push(("x-forwarded-host", "admin.example.com"));
    assert_eq!(
        ask(Some(Convention::Nginx), &headers),
        Err(OriginalError::Conflicting("x-forwarded-host"))
    );
    let without_host = [NGINX[0], NGINX[1], ("host", "127.0.0.1:9000")];
    assert_eq!(
        ask(Some(Convention::Nginx), &without_host),
        Err(OriginalError::Malformed("x-original-host"))
    );
}

/// Regression: a check request without a method header was read as GET.
#[test]
fn a_missing_method_is_refused_not_read_as_get() {
    assert_eq!(
        ask(Some(Convention::Nginx), &NGINX[1..]),
        Err(OriginalError::Malformed("x-original-method"))
    );
    assert_eq!(
        ask(
            Some(Convention::Traefik),
            &[("x-forwarded-uri", "/a"), ("x-forwarded-host", "a.example")]
        ),
        Err(OriginalError::Malformed("x-forwarded-method"))
    );
}

#[test]
fn repeated_or_malformed_describing_headers_are_refused() {
    let mut twice = NGINX.to_vec();
    twice.push(("x-original-uri", "/public"));
    assert_eq!(
        ask(Some(Convention::Nginx), &twice),
        Err(OriginalError::Malformed("x-original-uri"))
    );
    for uri in ["http://evil/x", "admin", "*"] {
        let headers = [NGINX[0], ("x-original-uri", uri), NGINX[2]];
        assert_eq!(
            ask(Some(Convention::Nginx), &headers),
            Err(OriginalError::Malformed("x-original-uri")),
            "{uri}"
        );
    }
    let bad_host = [NGINX[0], NGINX[1], ("x-original-host", "a.example/x")];
    assert_eq!(
        ask(Some(Convention::Nginx), &bad_host),
        Err(OriginalError::Malformed("x-original-host"))
    );
}

#[test]
fn ingress_nginx_reads_the_full_url() {
    let headers = [
        ("x-original-method", "GET"),
        ("x-original-url", "https://API.example.com./orgs/a?b=1"),
    ];
    let o = ask(Some(Convention::IngressNginx), &headers).unwrap();
    assert_eq!(o.uri, "/orgs/a?b=1");
    assert_eq!(o.host.authority(), "api.example.com");
    // ingress-nginx with `auth-method` also sets X-Original-URI: the same target is fine.
    let mut with_uri = headers.to_vec();
    with_uri.push(("x-original-uri", "/orgs/a?b=1"));
    assert!(ask(Some(Convention::IngressNginx), &with_uri).is_ok());
    let mut forged = headers.to_vec();
    forged.push(("x-original-uri", "/public"));
    assert_eq!(
        ask(Some(Convention::IngressNginx), &forged),
        Err(OriginalError::Conflicting("x-original-uri"))
    );
    let relative = [("x-original-method", "GET"), ("x-original-url", "/orgs/a")];
    assert_eq!(
        ask(Some(Convention::IngressNginx), &relative),
        Err(OriginalError::Malformed("x-original-url"))
    );
}

/// Regression: Traefik and Caddy copy client headers into the check request, so a client could
/// add `X-Original-URI: /public` to describe a request it is not making.
#[test]
fn traefik_refuses_the_nginx_family() {
    let headers = [
        ("x-forwarded-method", "GET"),
        ("x-forwarded-uri", "/orgs/a"),
        ("x-forwarded-host", "a.example"),
    ];
    assert!(ask(Some(Convention::Traefik), &headers).is_ok());
    for forged in [
        "x-original-uri",
        "x-original-url",
        "x-original-method",
        "x-original-host",
    ] {
        let mut h = headers.to_vec();
        h.push((forged, "/public"));
        assert!(
            matches!(
                ask(Some(Convention::Traefik), &h),
                Err(OriginalError::Conflicting(_))
            ),
            "{forged}"
        );
    }
}

#[test]
fn envoy_uses_the_check_request_itself_and_refuses_describing_headers() {
    let o = ask_at(
        Some(Convention::Envoy),
        "/envoy/orgs/a?x=1",
        &[("host", "a.example:8443")],
    )
    .unwrap();
    assert_eq!(o.uri, "/orgs/a?x=1");
    assert_eq!(o.host.authority(), "a.example:8443");
    assert_eq!(
        ask_at(
            Some(Convention::Envoy),
            "/envoy/orgs/a",
            &[("host", "a.example"), ("x-forwarded-uri", "/public")]
        ),
        Err(OriginalError::Conflicting("x-forwarded-uri"))
    );
    assert_eq!(
        ask_at(
            Some(Convention::Envoy),
            "/other/orgs/a",
            &[("host", "a.example")]
        ),
        Err(OriginalError::Malformed("path prefix"))
    );
}

#[test]
fn auto_detects_only_one_family_and_untrusted_peers_are_refused() {
    assert!(ask(None, &NGINX).is_ok());
    let config = ForwardAuthConfig::default();
    assert_eq!(
        config.original(
            "10.1.2.3".parse().unwrap(),
            &Method::GET,
            &"/".parse().unwrap(),
            &HeaderMap::new()
        ),
        Err(OriginalError::UntrustedPeer)
    );
}

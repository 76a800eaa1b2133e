//! The properties of scopegate's parsers of untrusted input, written once: each function takes
//! one fuzz input and panics when a property fails. The cargo-fuzz targets in `fuzz_targets/`
//! call them through this crate's library; `tests/it/props.rs` includes this file (`#[path]`)
//! and calls them on proptest's inputs and on every file of `fuzz/corpus/<target>/`, so stable
//! `cargo test` checks the same properties.
//!
//! Inputs are bytes in the layout each function documents, so one corpus file serves both. Each
//! returns whether the input was accepted, so a property test can tell that its generator
//! reaches the interesting branch.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use scopegate::config::{Combine, IssuerConfig, KeysSource, ScopesFormat};
use scopegate::forward_auth::{Convention, ForwardAuthConfig, Original};
use scopegate::host::Host;
use scopegate::policy::OrgSource;
use serde_json::Value;

/// `normalize`: the input (lossy UTF-8) is a request path. Never panics; the output is a fixed
/// point; it has no `//`, no `.`/`..` segment (also not before a `;`), no `\`, only ASCII, and
/// every `%` starts an upper-case escape of a reserved byte other than `/`, `\` and NUL; a path
/// that `http` accepts is forwarded exactly as normalized (what is authorized is forwarded).
pub fn normalize(data: &[u8]) -> bool {
    let raw = String::from_utf8_lossy(data);
    let Ok(out) = scopegate::normalize::normalize(&raw) else {
        return false;
    };
    assert_eq!(
        scopegate::normalize::normalize(&out).as_deref(),
        Ok(out.as_str()),
        "not idempotent: {raw:?} -> {out:?}"
    );
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    assert!(out.is_ascii(), "{raw:?} -> {out:?}");
    assert!(!out.contains("//"), "{raw:?} -> {out:?}");
    assert!(!out.contains('\\'), "{raw:?} -> {out:?}");
    for segment in out.split('/') {
        let name = segment.split(';').next().unwrap_or_default();
        assert!(
            name != "." && name != "..",
            "dot segment: {raw:?} -> {out:?}"
        );
    }
    let upper = out.to_ascii_uppercase();
    for encoded in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(encoded), "{encoded}: {raw:?} -> {out:?}");
    }
    let bytes = out.as_bytes();
    for (i, _) in out.match_indices('%') {
        let byte = match (bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(&hi), Some(&lo)) => upper_hex(hi).zip(upper_hex(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        assert!(
            byte.is_some_and(|c| !is_unreserved(c) && !matches!(c, b'/' | b'\\' | 0)),
            "escape at {i} is not an upper-case reserved byte: {raw:?} -> {out:?}"
        );
    }
    // The upstream request is built from the normalized path: it must carry exactly that path.
    if let Ok(pq) = raw.parse::<http::uri::PathAndQuery>()
        && pq.query().is_none()
        && pq.path() == raw
    {
        let forwarded = Uri::builder()
            .scheme("http")
            .authority("upstream:1")
            .path_and_query(out.as_str())
            .build();
        assert!(
            forwarded
                .as_ref()
                .is_ok_and(|u| u.path() == out && u.query().is_none()),
            "forwarded {forwarded:?}, authorized {out:?} (raw {raw:?})"
        );
    }
    true
}

fn upper_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// `host`: `Host::parse` of the whole input, then `of_request` of the input read as lines: the
/// first is a `Host` header, the second the request target, any further ones more `Host`
/// headers. Never panics; every host is canonical (see [`canonical`]); `of_request` answers the
/// header's host or the target's, never one with userinfo, and no host only for HTTP/1.0.
pub fn host(data: &[u8]) -> bool {
    let mut accepted = false;
    if let Ok(h) = Host::parse(data) {
        canonical(&h);
        accepted = true;
    }
    let mut lines = data.split(|&b| b == b'\n');
    let mut headers = HeaderMap::new();
    let first = lines.next().and_then(|v| HeaderValue::from_bytes(v).ok());
    let target = lines
        .next()
        .and_then(|t| Uri::try_from(t).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    for value in first
        .into_iter()
        .chain(lines.filter_map(|v| HeaderValue::from_bytes(v).ok()))
    {
        headers.append(http::header::HOST, value);
    }
    let values: Vec<&HeaderValue> = headers.get_all(http::header::HOST).iter().collect();
    for version in [http::Version::HTTP_10, http::Version::HTTP_11] {
        match scopegate::host::of_request(version, &target, &headers) {
            Ok(Some(h)) => {
                accepted = true;
                canonical(&h);
                let from_header = values.first().map(|v| Host::parse(v.as_bytes()));
                let from_target = target.authority().map(|a| {
                    assert!(!a.as_str().contains('@'), "userinfo accepted: {a}");
                    Host::parse(a.as_str().as_bytes())
                });
                assert!(values.len() <= 1, "{} Host headers accepted", values.len());
                assert_eq!(
                    Some(Ok(h)),
                    from_header.or(from_target),
                    "the host is the header's, else the target's"
                );
            }
            Ok(None) => assert!(
                version == http::Version::HTTP_10
                    && values.is_empty()
                    && target.authority().is_none(),
                "no host for {version:?} {target} {values:?}"
            ),
            Err(_) => {}
        }
    }
    accepted
}

/// A validated host is a fixed point of `Host::parse`, lower-case ASCII, its name has a `:`
/// only when it is IPv6, and its authority is one `http` reads with that very name as host.
fn canonical(h: &Host) {
    let authority = h.authority();
    assert_eq!(
        Host::parse(authority.as_bytes()).as_ref(),
        Ok(h),
        "not canonical"
    );
    assert!(
        authority.is_ascii() && !authority.bytes().any(|b| b.is_ascii_uppercase()),
        "not lower-case ASCII: {authority:?}"
    );
    let name = h.name();
    let ipv6 = authority.starts_with('[');
    assert!(!name.is_empty() && !name.ends_with('.'), "{authority:?}");
    if ipv6 {
        assert!(name.parse::<Ipv6Addr>().is_ok(), "{authority:?}");
    } else {
        assert!(!name.contains(':'), "`:` in the name of {authority:?}");
    }
    let parsed = authority.parse::<http::uri::Authority>();
    let host_part = if ipv6 {
        format!("[{name}]")
    } else {
        name.to_string()
    };
    assert!(
        parsed
            .as_ref()
            .is_ok_and(|a| a.as_str() == authority && a.host() == host_part),
        "{authority:?} reads as {parsed:?}"
    );
}

/// `query_org`: the input (lossy UTF-8) is a query. Never panics; when the `org` query
/// parameter is accepted, `form_urlencoded` finds exactly one key equal to `org` ignoring case,
/// none that is an array or object form of it, and that key's value is the organization: a
/// first-wins and a last-wins framework read what scopegate judged.
pub fn query_org(data: &[u8]) -> bool {
    const NAME: &str = "org";
    let query = String::from_utf8_lossy(data);
    let resolved =
        OrgSource::Query(NAME.into()).resolve(&HeaderMap::new(), Some(&query), None, &[], None);
    let Ok(org) = resolved else { return false };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let values: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(NAME))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(values, [org.as_str()], "{query:?}");
    for (key, _) in &pairs {
        let variant = key
            .get(..NAME.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(NAME))
            && matches!(key.as_bytes().get(NAME.len()), Some(b'[' | b'.'));
        assert!(
            !variant,
            "variant `{key}` beside the organization: {query:?}"
        );
    }
    true
}

/// The headers an ingress may use to describe the original request, and `Host`.
const DESCRIBING: [&str; 8] = [
    "x-original-method",
    "x-original-uri",
    "x-original-url",
    "x-original-host",
    "x-forwarded-method",
    "x-forwarded-uri",
    "x-forwarded-host",
    "host",
];

/// The describing headers each pinned convention sets itself (the table in `forward_auth.rs`).
const CONVENTIONS: [(Convention, &[&str]); 4] = [
    (
        Convention::Nginx,
        &["x-original-method", "x-original-uri", "x-original-host"],
    ),
    (
        Convention::IngressNginx,
        &["x-original-method", "x-original-url", "x-original-uri"],
    ),
    (
        Convention::Traefik,
        &["x-forwarded-method", "x-forwarded-uri", "x-forwarded-host"],
    ),
    (Convention::Envoy, &[]),
];

/// `forward_auth`: the input is lines; the first is the check request's own target, each other
/// is a header: its first byte picks the name (`b'0' + i` is `DESCRIBING[i]`, any byte modulo 8)
/// and the rest is the value. Never panics; a pinned convention accepts a request only when no
/// describing header outside its own list is present, and reads exactly what the ingress set;
/// `auto` accepts only what some pinned convention accepts, alike; an accepted request has an
/// origin-form target and a canonical host.
pub fn forward_auth(data: &[u8]) -> bool {
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines
        .next()
        .and_then(|t| Uri::try_from(t).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((&pick, value)) = line.split_first() else {
            continue;
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            let name = DESCRIBING[usize::from(pick % 8)];
            headers.append(HeaderName::from_static(name), value);
        }
    }
    let ask = |convention| {
        ForwardAuthConfig {
            convention,
            ..Default::default()
        }
        .original(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            &Method::GET,
            &target,
            &headers,
        )
    };
    let one = |name: &str| {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    };
    let mut pinned = Vec::new();
    for (convention, sets) in CONVENTIONS {
        let answer = ask(Some(convention));
        if let Ok(original) = &answer {
            origin_form(original);
            let foreign = DESCRIBING[..7]
                .iter()
                .find(|n| !sets.contains(n) && headers.contains_key(**n));
            assert_eq!(foreign, None, "{convention:?} accepted a foreign header");
            let (uri, host) = match convention {
                Convention::Nginx => (one("x-original-uri"), one("x-original-host")),
                Convention::Traefik => (one("x-forwarded-uri"), one("x-forwarded-host")),
                _ => (None, None),
            };
            if let Some(uri) = uri {
                assert_eq!(original.uri.to_string(), uri, "judged another target");
            }
            if let Some(host) = host {
                assert_eq!(
                    Host::parse(host.as_bytes()).as_ref(),
                    Ok(&original.host),
                    "judged another host"
                );
            }
        }
        pinned.push(answer);
    }
    if let Ok(original) = ask(None) {
        assert!(
            pinned.iter().any(|p| p.as_ref() == Ok(&original)),
            "auto accepted what no pinned convention accepts: {original:?}"
        );
    }
    pinned.iter().any(Result::is_ok)
}

fn origin_form(original: &Original) {
    let uri = &original.uri;
    assert!(
        uri.scheme().is_none() && uri.authority().is_none() && uri.path().starts_with('/'),
        "not origin-form: {uri}"
    );
    canonical(&original.host);
}

/// `token`: the input is a compact token for `jsonwebtoken::decode_header`, the JSON of a token
/// header (decoded behind base64url), and, when it is a JSON object, a claims set for
/// `principal_from_claims` with either scopes format. Never panics; an accepted principal has
/// the claims' non-empty `sub` and `exp`, sorted distinct non-empty scopes, a bounded token id.
pub fn token(data: &[u8]) -> bool {
    let compact = jsonwebtoken::decode_header(String::from_utf8_lossy(data).as_ref());
    let header = jsonwebtoken::decode_header(format!("{}.e30.", URL_SAFE_NO_PAD.encode(data)));
    let mut accepted = compact.is_ok() || header.is_ok();
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(data) else {
        return accepted;
    };
    let _ = scopegate::token::act_depth(&claims);
    for (scopes_claim, scopes_format) in
        [("scope", ScopesFormat::Space), ("scp", ScopesFormat::Array)]
    {
        let issuer = Arc::new(IssuerConfig {
            name: "fuzz".into(),
            issuer: "https://idp.example.com/".into(),
            keys: KeysSource::Local,
            algorithms: vec![jsonwebtoken::Algorithm::ES256],
            audiences: vec!["api".into()],
            leeway: Duration::from_secs(30),
            scopes_claim: scopes_claim.into(),
            scopes_format,
            typ: None,
            refresh_interval: Duration::from_secs(300),
            unknown_kid_cooldown: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            combine: Combine::Intersect,
            max_token_age: Duration::from_secs(100 * 365 * 24 * 3600),
            tls: None,
            insecure_http: false,
        });
        let Ok(p) = scopegate::verify::principal_from_claims(&issuer, claims.clone()) else {
            continue;
        };
        accepted = true;
        assert_eq!(Some(&*p.subject), claims.get("sub").and_then(Value::as_str));
        assert!(!p.subject.is_empty());
        assert_eq!(
            Some(p.expires_at),
            claims.get("exp").and_then(Value::as_u64)
        );
        assert!(p.scopes.windows(2).all(|w| w[0] < w[1]), "{:?}", p.scopes);
        if scopes_format == ScopesFormat::Space {
            assert!(p.scopes.iter().all(|s| !s.is_empty() && !s.contains(' ')));
        }
        assert!(p.token_id.len() <= 128);
    }
    accepted
}

/// `origin`: two lines (lossy UTF-8), an `allow_origins` entry for `OriginPattern::parse`, then
/// an `Origin` header value. Never panics; an accepted pattern without `*` matches exactly its
/// own text; one with `*` never matches itself, and matches an origin only when the origin is
/// the pattern with `*` replaced by one lower-case DNS label (so never another scheme, port, a
/// deeper or empty name, a path or userinfo).
pub fn origin(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(data);
    let (pattern, origin) = text.split_once('\n').unwrap_or((&text, ""));
    let Ok(parsed) = scopegate::policy::OriginPattern::parse(pattern) else {
        return false;
    };
    assert_eq!(
        parsed.matches(pattern),
        !pattern.contains('*'),
        "{pattern:?}"
    );
    if parsed.matches(origin) {
        match pattern.split_once('*') {
            None => assert_eq!(origin, pattern),
            Some((scheme, suffix)) => {
                let label = origin
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_suffix(suffix))
                    .unwrap_or_else(|| panic!("{pattern:?} matched {origin:?}"));
                assert!(
                    (1..=63).contains(&label.len())
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                    "{pattern:?} matched {origin:?}"
                );
            }
        }
    }
    true
}

//! What a request must look like before it is judged, and what of it never reaches an upstream:
//! the method (standard upper-case tokens and configured extensions only; HEAD is judged as
//! GET), the query (ASCII only, no `_method` override), and the header steps that keep the
//! forwarded request the one that was decided — override headers stripped, `_` aliases of
//! other headers dropped, HTTP/2 cookie crumbs joined, the header count bounded.

#[cfg(test)]
mod tests;

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Why a request is refused before it is judged (400; 431 for too many headers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Not a standard upper-case method nor a configured extension method.
    #[error("the request method is not accepted")]
    Method,
    /// The query has bytes outside ASCII (an upstream would decode them in its own charset).
    #[error("the query contains bytes outside ASCII")]
    QueryEncoding,
    /// A `_method` query parameter (Rails, Laravel, Symfony would act on another method).
    #[error("the query carries a method override (`_method`)")]
    MethodOverride,
    /// More header fields than an HTTP/1.1 client may send.
    #[error("the request has more than {0} header fields")]
    TooManyHeaders(usize),
    /// `Connection` names a header the decision used, which would remove it upstream.
    #[error("the Connection header names a header this decision used")]
    ConnectionStripsDecision,
}

/// The methods every route table knows.
const STANDARD: [Method; 8] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
    Method::OPTIONS,
    Method::TRACE,
];

/// Headers stripped from every forwarded request by default: each asks an upstream framework to
/// act on another method or URL than the one scopegate authorized.
pub const DEFAULT_STRIPPED: [&str; 8] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-url",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-port",
    "x-forwarded-path",
];

/// Headers scopegate owns: a client's copy is always dropped before scopegate sets its own.
pub const OWNED_PREFIX: &str = "x-scopegate-";

/// Headers scopegate sets or owns upstream: their `_` spellings are always dropped.
const SET_BY_SCOPEGATE: [&str; 6] = [
    "authorization",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "forwarded",
];

/// The request rules of the server file (`requests:`), validated at load.
#[derive(Debug, Clone)]
pub struct RequestRules {
    /// Upper-case extension methods (WebDAV `PROPFIND`, ...) accepted besides the standard ones.
    pub extension_methods: Vec<Method>,
    /// Headers removed before forwarding.
    pub strip_headers: Vec<HeaderName>,
    /// The most header fields a request may carry (HTTP/2 and HTTP/1.1 alike).
    pub max_header_count: usize,
}

impl Default for RequestRules {
    fn default() -> Self {
        Self {
            extension_methods: Vec::new(),
            strip_headers: DEFAULT_STRIPPED
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect(),
            max_header_count: 100,
        }
    }
}

impl RequestRules {
    /// The method routes and decisions see: the request's own, HEAD judged as GET (a HEAD is a
    /// GET without a body, so it must be allowed exactly when the GET is).
    pub fn routing_method(&self, method: &Method) -> Result<Method, RequestError> {
        if *method == Method::HEAD {
            return Ok(Method::GET);
        }
        if STANDARD.contains(method) || self.extension_methods.contains(method) {
            return Ok(method.clone());
        }
        Err(RequestError::Method)
    }

    /// The request's headers before anything else reads them: bounded in count.
    pub fn check_headers(&self, headers: &HeaderMap) -> Result<(), RequestError> {
        if headers.len() > self.max_header_count {
            return Err(RequestError::TooManyHeaders(self.max_header_count));
        }
        Ok(())
    }

    /// The header steps of forwarding, in order: override headers, `_` aliases, cookie crumbs.
    pub fn rewrite_headers(&self, headers: &mut HeaderMap, decision_header: Option<&HeaderName>) {
        for name in &self.strip_headers {
            headers.remove(name);
        }
        drop_underscore_aliases(headers, decision_header);
        join_cookies(headers);
    }
}

/// A query an upstream reads as the one that was judged: ASCII, and no `_method` parameter.
pub fn check_query(query: Option<&str>) -> Result<(), RequestError> {
    let Some(query) = query else { return Ok(()) };
    if !query.is_ascii() {
        return Err(RequestError::QueryEncoding);
    }
    if form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k.eq_ignore_ascii_case("_method")) {
        return Err(RequestError::MethodOverride);
    }
    Ok(())
}

/// The CGI spelling of a header name (`X_Foo` and `x-foo` are both `HTTP_X_FOO` to WSGI, PHP
/// and CGI servers), lower-case with `-`.
fn folded(name: &str) -> String {
    name.replace('_', "-")
}

/// Drops each header with `_` in its name whose CGI spelling is another header of the request,
/// one scopegate sets, one it strips, or the decision's own header: an upstream that folds
/// names would otherwise read the client's value in place of the real one.
fn drop_underscore_aliases(headers: &mut HeaderMap, decision_header: Option<&HeaderName>) {
    if !headers.keys().any(|k| k.as_str().contains('_')) {
        return;
    }
    let aliases: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .filter(|k| {
            let f = folded(k.as_str());
            headers.keys().any(|other| other.as_str() == f)
                || SET_BY_SCOPEGATE.contains(&f.as_str())
                || DEFAULT_STRIPPED.contains(&f.as_str())
                || f.starts_with(OWNED_PREFIX)
                || decision_header.is_some_and(|d| d.as_str() == f)
        })
        .cloned()
        .collect();
    for name in aliases {
        headers.remove(name);
    }
}

/// HTTP/2 clients may split `Cookie` into one field per crumb; an HTTP/1.1 upstream must get
/// one field (RFC 9113 section 8.2.3), or frameworks read only the first.
fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(_), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let joined: Vec<u8> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    } else {
        headers.remove(header::COOKIE);
    }
}

/// Whether the request's `Connection` header names `name` (and so would remove it upstream).
pub(crate) fn connection_names(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim().eq_ignore_ascii_case(name.as_str()))
}

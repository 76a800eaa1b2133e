//! CORS for browser callers in proxy mode: recognizes a preflight, answers it from a route's
//! policy (the grant headers, or which of origin, method and headers is refused), and gives every
//! other answer of a route with a policy its response headers. scopegate owns the
//! `Access-Control-*` headers of such a route: the upstream's are dropped. Which route a preflight
//! is for is decided by the pipeline's own checks and match, not here; a preflight grants nothing
//! but the browser's permission to send the real request, which still needs its token.

#[cfg(test)]
mod tests;

use http::Method;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::policy::{Cors, Origins, joined};

/// Why a preflight is refused (403, without any grant header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    /// No single `Origin`, or one the route's policy does not allow.
    #[error("this origin may not call this route from a browser")]
    Origin,
    /// The method asked for is not a method token, or not one the policy allows.
    #[error("the preflight asks for a method this route does not allow cross-origin")]
    Method,
    /// A request header asked for is not one the policy allows.
    #[error("the preflight asks for request headers this route does not allow")]
    Headers,
}

impl CorsError {
    /// The preflight outcome this is, for metrics.
    pub fn outcome(self) -> &'static str {
        &self.code()["cors_".len()..]
    }

    /// The problem code of the refusal.
    pub fn code(self) -> &'static str {
        match self {
            CorsError::Origin => "cors_origin_not_allowed",
            CorsError::Method => "cors_method_not_allowed",
            CorsError::Headers => "cors_headers_not_allowed",
        }
    }
}

/// A CORS preflight: `OPTIONS` with an `Origin` and an `Access-Control-Request-Method`.
#[derive(Debug)]
pub(crate) struct Preflight<'a> {
    /// The `Origin`, when there is exactly one.
    pub origin: Option<&'a HeaderValue>,
    /// The method asked for, when it is one method token.
    pub method: Option<Method>,
    headers: &'a HeaderMap,
}

impl<'a> Preflight<'a> {
    /// The preflight a request is, if it is one.
    pub(crate) fn of(method: &Method, headers: &'a HeaderMap) -> Option<Self> {
        if *method != Method::OPTIONS
            || !headers.contains_key(header::ORIGIN)
            || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        Some(Self {
            origin: origin(headers),
            method: one(headers, &header::ACCESS_CONTROL_REQUEST_METHOD)
                .and_then(|m| Method::from_bytes(m.as_bytes()).ok()),
            headers,
        })
    }
}

/// The request's origin: its one `Origin` header (none when absent or repeated).
pub(crate) fn origin(headers: &HeaderMap) -> Option<&HeaderValue> {
    one(headers, &header::ORIGIN)
}

fn one<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// The answer to a preflight for a route with `policy`: its grant headers, or why not.
pub(crate) fn answer(policy: &Cors, preflight: &Preflight<'_>) -> Result<HeaderMap, CorsError> {
    let origin = preflight
        .origin
        .filter(|o| allowed(&policy.origins, o))
        .ok_or(CorsError::Origin)?;
    let method = preflight
        .method
        .as_ref()
        .filter(|m| {
            // HEAD is judged as GET, as everywhere.
            let judged = if **m == Method::HEAD { &Method::GET } else { m };
            policy.methods.as_ref().is_none_or(|ms| ms.contains(judged))
        })
        .ok_or(CorsError::Method)?;
    let mut asked = Vec::new();
    for value in preflight
        .headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
    {
        let list = value.to_str().map_err(|_| CorsError::Headers)?;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| CorsError::Headers)?;
            if !policy.headers.contains(&name) {
                return Err(CorsError::Headers);
            }
            asked.push(name);
        }
    }
    let mut grant = HeaderMap::new();
    allow_origin(policy, origin, &mut grant);
    if let Ok(m) = HeaderValue::from_str(method.as_str()) {
        grant.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
    }
    if let Some(h) = joined(&asked) {
        grant.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h);
    }
    grant.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from(policy.max_age.as_secs()),
    );
    vary(&mut grant);
    Ok(grant)
}

/// Gives an answer (the upstream's or scopegate's own) of a route with `policy` its CORS
/// headers: the upstream's `Access-Control-*` dropped, `Vary: Origin` always (caches must not
/// hand one origin's answer to another), and for an allowed `origin` the permission to read it.
pub(crate) fn decorate(policy: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    let upstream: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in upstream {
        headers.remove(name);
    }
    vary(headers);
    if let Some(origin) = origin.filter(|o| allowed(&policy.origins, o)) {
        allow_origin(policy, origin, headers);
        if let Some(exposed) = policy.expose.value() {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }
}

/// Adds `Vary: Origin`, unless the answer already varies by it (or by everything).
pub(crate) fn vary(headers: &mut HeaderMap) {
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*" || v.trim().eq_ignore_ascii_case("origin"));
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

fn allowed(origins: &Origins, origin: &HeaderValue) -> bool {
    origin.to_str().is_ok_and(|o| origins.allow(o))
}

fn allow_origin(policy: &Cors, origin: &HeaderValue, headers: &mut HeaderMap) {
    let value = match (&policy.origins, policy.credentials) {
        (Origins::Any, false) => HeaderValue::from_static("*"),
        _ => origin.clone(),
    };
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    if policy.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

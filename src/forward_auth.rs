//! Forward-auth (decision) mode: ingress controllers ask scopegate whether to let a request
//! through, and copy the minted `Authorization` from the answer.
//!
//! The trust boundary is the ingress. Every ingress below passes the client's own headers into
//! the check request, so scopegate reads the original request only from the headers that the
//! configured ingress itself sets (it overwrites any client copy of those), and refuses a check
//! request that carries a describing header the ingress does not set: the client wrote it.
//!
//! | convention | method | path | host | refused when present |
//! |---|---|---|---|---|
//! | `nginx` (`auth_request`) | `X-Original-Method` | `X-Original-URI` | `X-Original-Host` | `X-Original-URL`, `X-Forwarded-*` |
//! | `ingress-nginx` (`auth-url`) | `X-Original-Method` | `X-Original-URL` (an `X-Original-URI` must agree) | `X-Original-URL` | `X-Original-Host`, `X-Forwarded-*` |
//! | `traefik` / `caddy` | `X-Forwarded-Method` | `X-Forwarded-Uri` | `X-Forwarded-Host` | `X-Original-*` |
//! | `envoy` (`ext_authz` HTTP) | the check's own | the check's own, under a prefix | `Host` | `X-Original-*`, `X-Forwarded-Uri/-Method/-Host` |
//!
//! Every header a convention reads is required (a missing method is refused, not read as GET).
//! `auto` detects the convention per request from the headers present and is weaker (a client
//! can pick the convention where the ingress sets none of them); it must be asked for.

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method, Uri};
use ipnet::IpNet;

use crate::host::Host;

/// Forward-auth settings.
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    /// Peers whose original-request headers are believed.
    pub trusted_peers: Vec<IpNet>,
    /// Where Envoy's ext_authz puts the original path (`/envoy/orgs/1` is `/orgs/1`).
    pub envoy_prefix: String,
    /// The one convention to accept; `None` detects it per request (`auto`).
    pub convention: Option<Convention>,
}

/// How an ingress describes the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// nginx `auth_request`: `X-Original-Method`, `X-Original-URI`, `X-Original-Host`.
    Nginx,
    /// ingress-nginx `auth-url`: `X-Original-Method` and the full `X-Original-URL`.
    IngressNginx,
    /// `X-Forwarded-Method`, `X-Forwarded-Uri`, `X-Forwarded-Host` (Traefik, Caddy).
    Traefik,
    /// The check request's own method and path, under `envoy_prefix`, and its `Host`.
    Envoy,
}

const X_ORIGINAL_METHOD: &str = "x-original-method";
const X_ORIGINAL_URI: &str = "x-original-uri";
const X_ORIGINAL_URL: &str = "x-original-url";
const X_ORIGINAL_HOST: &str = "x-original-host";
const X_FORWARDED_METHOD: &str = "x-forwarded-method";
const X_FORWARDED_URI: &str = "x-forwarded-uri";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// Every header some ingress uses to describe the original request.
const DESCRIBING: [&str; 7] = [
    X_ORIGINAL_METHOD,
    X_ORIGINAL_URI,
    X_ORIGINAL_URL,
    X_ORIGINAL_HOST,
    X_FORWARDED_METHOD,
    X_FORWARDED_URI,
    X_FORWARDED_HOST,
];

impl Convention {
    /// The describing headers this ingress sets itself (all of them, every time).
    fn sets(self) -> &'static [&'static str] {
        match self {
            Convention::Nginx => &[X_ORIGINAL_METHOD, X_ORIGINAL_URI, X_ORIGINAL_HOST],
            // With `auth-method` set, ingress-nginx sets X-Original-URI too; it must agree.
            Convention::IngressNginx => &[X_ORIGINAL_METHOD, X_ORIGINAL_URL, X_ORIGINAL_URI],
            Convention::Traefik => &[X_FORWARDED_METHOD, X_FORWARDED_URI, X_FORWARDED_HOST],
            Convention::Envoy => &[],
        }
    }

    /// The convention whose headers a request carries, for `auto`.
    fn detect(headers: &HeaderMap) -> Result<Self, OriginalError> {
        let has = |n: &str| headers.contains_key(n);
        // ingress-nginx sets X-Original-URI beside X-Original-URL (with `auth-method`).
        let found: Vec<Convention> = [
            (has(X_ORIGINAL_URL), Convention::IngressNginx),
            (
                has(X_ORIGINAL_URI) && !has(X_ORIGINAL_URL),
                Convention::Nginx,
            ),
            (has(X_FORWARDED_URI), Convention::Traefik),
        ]
        .into_iter()
        .filter_map(|(present, c)| present.then_some(c))
        .collect();
        match found.as_slice() {
            [] => Ok(Convention::Envoy),
            [one] => Ok(*one),
            _ => Err(OriginalError::Conflicting(
                "more than one convention's headers",
            )),
        }
    }
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self {
            trusted_peers: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            envoy_prefix: "/envoy".to_string(),
            convention: Some(Convention::Nginx),
        }
    }
}

/// The request an ingress asks about.
#[derive(Debug, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    /// Origin form: path and query.
    pub uri: Uri,
    /// The validated host the client asked for.
    pub host: Host,
}

/// Why the original request could not be read (the answer is 400 or 403, never 200).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginalError {
    /// The peer is not trusted to speak for the original request.
    #[error("this peer is not trusted to ask for decisions")]
    UntrustedPeer,
    /// A header the convention sets is missing, repeated or malformed.
    #[error("the original request is not described correctly: `{0}`")]
    Malformed(&'static str),
    /// A describing header the ingress does not set is present: the client could have written it.
    #[error("the check request carries `{0}`, which the configured ingress does not set")]
    Conflicting(&'static str),
}

fn one<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<&'a str, OriginalError> {
    let mut values = headers.get_all(HeaderName::from_static(name)).iter();
    match (values.next(), values.next()) {
        // `http` drops a `#fragment` that the ingress forwards: `/public#/../admin` judged `/public`.
        (Some(v), None) if !v.as_bytes().contains(&b'#') => {
            v.to_str().map_err(|_| OriginalError::Malformed(name))
        }
        _ => Err(OriginalError::Malformed(name)),
    }
}

fn method(headers: &HeaderMap, name: &'static str) -> Result<Method, OriginalError> {
    Method::from_bytes(one(headers, name)?.as_bytes()).map_err(|_| OriginalError::Malformed(name))
}

fn host(value: &str, name: &'static str) -> Result<Host, OriginalError> {
    Host::parse(value.as_bytes()).map_err(|_| OriginalError::Malformed(name))
}

impl ForwardAuthConfig {
    /// Reads the original request from a decision request of `peer`.
    pub fn original(
        &self,
        peer: IpAddr,
        method_: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Original, OriginalError> {
        self.trust(peer)?;
        let convention = match self.convention {
            Some(pinned) => pinned,
            None => Convention::detect(headers)?,
        };
        let sets = convention.sets();
        if let Some(foreign) = DESCRIBING
            .iter()
            .find(|n| !sets.contains(n) && headers.contains_key(**n))
        {
            return Err(OriginalError::Conflicting(foreign));
        }
        match convention {
            Convention::Nginx => Ok(Original {
                method: method(headers, X_ORIGINAL_METHOD)?,
                uri: origin_form(one(headers, X_ORIGINAL_URI)?, X_ORIGINAL_URI)?,
                host: host(one(headers, X_ORIGINAL_HOST)?, X_ORIGINAL_HOST)?,
            }),
            Convention::IngressNginx => {
                let raw = one(headers, X_ORIGINAL_URL)?;
                let url: Uri = raw
                    .parse()
                    .map_err(|_| OriginalError::Malformed(X_ORIGINAL_URL))?;
                let authority = url
                    .authority()
                    .filter(|a| url.scheme().is_some() && !a.as_str().contains('@'))
                    .ok_or(OriginalError::Malformed(X_ORIGINAL_URL))?;
                let pq = url
                    .path_and_query()
                    .ok_or(OriginalError::Malformed(X_ORIGINAL_URL))?;
                if headers.contains_key(X_ORIGINAL_URI) && one(headers, X_ORIGINAL_URI)? != pq {
                    return Err(OriginalError::Conflicting(X_ORIGINAL_URI));
                }
                Ok(Original {
                    method: method(headers, X_ORIGINAL_METHOD)?,
                    uri: origin_form(pq.as_str(), X_ORIGINAL_URL)?,
                    host: host(authority.as_str(), X_ORIGINAL_URL)?,
                })
            }
            Convention::Traefik => Ok(Original {
                method: method(headers, X_FORWARDED_METHOD)?,
                uri: origin_form(one(headers, X_FORWARDED_URI)?, X_FORWARDED_URI)?,
                host: host(one(headers, X_FORWARDED_HOST)?, X_FORWARDED_HOST)?,
            }),
            Convention::Envoy => self.envoy_original(method_, uri, headers),
        }
    }

    /// The original request of an Envoy `ext_authz` gRPC check from `peer`, as its attributes
    /// describe it: method, request target and host, with the client's headers, which must not
    /// describe another request (a client could have written them).
    pub fn described(
        &self,
        peer: IpAddr,
        method: &str,
        target: &str,
        host: &str,
        headers: &HeaderMap,
    ) -> Result<Original, OriginalError> {
        self.trust(peer)?;
        if let Some(foreign) = DESCRIBING.iter().find(|n| headers.contains_key(**n)) {
            return Err(OriginalError::Conflicting(foreign));
        }
        // Envoy sends the target as the client wrote it; `http` would drop a `#fragment`.
        if target.contains('#') {
            return Err(OriginalError::Malformed("path"));
        }
        Ok(Original {
            method: Method::from_bytes(method.as_bytes())
                .map_err(|_| OriginalError::Malformed("method"))?,
            uri: origin_form(target, "path")?,
            host: self::host(host, "host")?,
        })
    }

    /// Whether `peer` may ask for decisions (an IPv4-mapped IPv6 address counts as IPv4).
    fn trust(&self, peer: IpAddr) -> Result<(), OriginalError> {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        if self.trusted_peers.iter().any(|n| n.contains(&peer)) {
            Ok(())
        } else {
            Err(OriginalError::UntrustedPeer)
        }
    }

    fn envoy_original(
        &self,
        method_: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Original, OriginalError> {
        let rest = uri
            .path()
            .strip_prefix(self.envoy_prefix.as_str())
            .filter(|r| r.starts_with('/'))
            .ok_or(OriginalError::Malformed("path prefix"))?;
        let pq = match uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest.to_string(),
        };
        // Envoy's check request is HTTP/1.1 with the original authority as its Host.
        let host = crate::host::of_request(http::Version::HTTP_11, uri, headers)
            .map_err(|_| OriginalError::Malformed("host"))?
            .ok_or(OriginalError::Malformed("host"))?;
        Ok(Original {
            method: method_.clone(),
            uri: origin_form(&pq, "path")?,
            host,
        })
    }
}

/// An origin-form target (`/path?query`), refusing anything else.
fn origin_form(raw: &str, name: &'static str) -> Result<Uri, OriginalError> {
    if !raw.starts_with('/') || !raw.is_ascii() {
        return Err(OriginalError::Malformed(name));
    }
    let uri: Uri = raw.parse().map_err(|_| OriginalError::Malformed(name))?;
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(OriginalError::Malformed(name));
    }
    Ok(uri)
}

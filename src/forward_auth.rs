//! Forward-auth (decision) mode: ingress controllers ask scopegate whether to let a request
//! through, and copy the minted `Authorization` from the answer. The original request is read
//! from the convention the caller speaks, only when the peer is trusted:
//!
//! - nginx `auth_request` / ingress-nginx `auth-url`: `X-Original-Method` and `X-Original-URI`
//!   (or ingress-nginx's full `X-Original-URL`);
//! - Traefik `forwardAuth` and Caddy `forward_auth`: `X-Forwarded-Method`, `X-Forwarded-Uri`,
//!   `X-Forwarded-Host`, `X-Forwarded-Proto`;
//! - Envoy `ext_authz` (HTTP service): the check request's own method and path, under a prefix.
//!
//! The URI they carry goes through the same normalization and pipeline as in proxy mode.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, Method, Uri};
use ipnet::IpNet;

/// Forward-auth settings.
#[derive(Debug, Clone)]
pub struct ForwardAuthConfig {
    /// Peers whose original-request headers are believed.
    pub trusted_peers: Vec<IpNet>,
    /// Where Envoy's ext_authz puts the original path (`/envoy/orgs/1` is `/orgs/1`).
    pub envoy_prefix: String,
    /// The one convention to accept; `None` detects it per request.
    pub convention: Option<Convention>,
}

/// How an ingress describes the original request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// `X-Original-Method` + `X-Original-URI` (or `X-Original-URL`).
    Nginx,
    /// `X-Forwarded-Method` + `X-Forwarded-Uri` + `X-Forwarded-Host` (Traefik, Caddy).
    Traefik,
    /// The check request's own method and path, under `envoy_prefix`.
    Envoy,
}

impl Default for ForwardAuthConfig {
    fn default() -> Self {
        Self {
            trusted_peers: ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect(),
            envoy_prefix: "/envoy".to_string(),
            convention: None,
        }
    }
}

/// The request an ingress asks about.
#[derive(Debug, PartialEq, Eq)]
pub struct Original {
    pub method: Method,
    pub uri: Uri,
    /// The host the client asked for, when the convention carries it.
    pub host: Option<String>,
    /// Which convention it came in.
    pub convention: &'static str,
}

/// Why the original request could not be read (the answer is 400 or 403, never 200).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginalError {
    /// The peer is not trusted to speak for the original request.
    #[error("this peer is not trusted to ask for decisions")]
    UntrustedPeer,
    /// A header of the convention is missing, repeated or malformed.
    #[error("the original request is not described correctly: {0}")]
    Malformed(&'static str),
}

fn one<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, OriginalError> {
    let mut values = headers.get_all(HeaderName::from_static(name)).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(Some)
            .map_err(|_| OriginalError::Malformed(name)),
        (Some(_), Some(_)) => Err(OriginalError::Malformed(name)),
    }
}

fn method(value: Option<&str>, name: &'static str) -> Result<Method, OriginalError> {
    // An auth subrequest without a method header defaults to GET, as nginx sends no body anyway.
    value.map_or(Ok(Method::GET), |m| {
        Method::from_bytes(m.as_bytes()).map_err(|_| OriginalError::Malformed(name))
    })
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
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        if !self.trusted_peers.iter().any(|n| n.contains(&peer)) {
            return Err(OriginalError::UntrustedPeer);
        }
        let host_header = headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let nginx =
            headers.contains_key("x-original-url") || headers.contains_key("x-original-uri");
        let traefik = headers.contains_key("x-forwarded-uri");
        // Traefik and Caddy pass the client's own headers into the check request, and nginx may
        // too: a client could add the other family's headers to describe a request it is not
        // making. Both families at once is therefore refused, never guessed.
        let convention = match (self.convention, nginx, traefik) {
            (_, true, true) => {
                return Err(OriginalError::Malformed(
                    "both x-original-* and x-forwarded-uri",
                ));
            }
            (Some(pinned), _, _) => pinned,
            (None, true, false) => Convention::Nginx,
            (None, false, true) => Convention::Traefik,
            (None, false, false) => Convention::Envoy,
        };
        match convention {
            Convention::Nginx => nginx_original(headers, host_header),
            Convention::Traefik => traefik_original(headers),
            Convention::Envoy => self.envoy_original(method_, uri, host_header),
        }
    }

    fn envoy_original(
        &self,
        method_: &Method,
        uri: &Uri,
        host_header: Option<String>,
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
        Ok(Original {
            method: method_.clone(),
            uri: pq.parse().map_err(|_| OriginalError::Malformed("path"))?,
            host: host_header,
            convention: "envoy",
        })
    }
}

fn nginx_original(
    headers: &HeaderMap,
    host_header: Option<String>,
) -> Result<Original, OriginalError> {
    if let Some(url) = one(headers, "x-original-url")? {
        let uri: Uri = url
            .parse()
            .map_err(|_| OriginalError::Malformed("x-original-url"))?;
        return Ok(Original {
            method: method(one(headers, "x-original-method")?, "x-original-method")?,
            host: uri.host().map(str::to_string),
            uri: path_only(&uri, "x-original-url")?,
            convention: "nginx",
        });
    }
    let raw = one(headers, "x-original-uri")?.ok_or(OriginalError::Malformed("x-original-uri"))?;
    let uri: Uri = raw
        .parse()
        .map_err(|_| OriginalError::Malformed("x-original-uri"))?;
    Ok(Original {
        method: method(one(headers, "x-original-method")?, "x-original-method")?,
        uri: path_only(&uri, "x-original-uri")?,
        host: one(headers, "x-forwarded-host")?
            .map(str::to_string)
            .or(host_header),
        convention: "nginx",
    })
}

fn traefik_original(headers: &HeaderMap) -> Result<Original, OriginalError> {
    let raw =
        one(headers, "x-forwarded-uri")?.ok_or(OriginalError::Malformed("x-forwarded-uri"))?;
    let uri: Uri = raw
        .parse()
        .map_err(|_| OriginalError::Malformed("x-forwarded-uri"))?;
    Ok(Original {
        method: method(one(headers, "x-forwarded-method")?, "x-forwarded-method")?,
        uri: path_only(&uri, "x-forwarded-uri")?,
        host: one(headers, "x-forwarded-host")?.map(str::to_string),
        convention: "traefik",
    })
}

/// The origin-form part of a URI (path and query), refusing anything else.
fn path_only(uri: &Uri, name: &'static str) -> Result<Uri, OriginalError> {
    let pq = uri.path_and_query().ok_or(OriginalError::Malformed(name))?;
    if !pq.path().starts_with('/') {
        return Err(OriginalError::Malformed(name));
    }
    pq.as_str()
        .parse()
        .map_err(|_| OriginalError::Malformed(name))
}

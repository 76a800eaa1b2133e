//! Host validation: the one place that turns a `Host` header, an HTTP/2 `:authority` or an
//! ingress's host header into the canonical host that is both judged (host routes, organization
//! from host) and forwarded (`X-Forwarded-Host`).
//!
//! Accepted: a DNS name (letters, digits, `-`, `_`, dot-separated labels of 1 to 63 bytes,
//! 253 bytes at most), an IPv4 address, or an IPv6 address in brackets; then optionally `:port`
//! (1 to 5 digits, at most 65535). The canonical form is lower-case with one trailing dot
//! removed (`API.Example.com.:443` is `api.example.com:443`). Anything else (userinfo, a path,
//! spaces, percent-encoding, an empty label, bytes outside ASCII) is refused: an upstream or
//! a virtual-host router could read such a value as another host.

#[cfg(test)]
mod tests;

use std::net::Ipv6Addr;

/// A validated, canonical host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// `name[:port]`, lower-case, the name without a trailing dot, IPv6 in brackets.
    authority: String,
    /// Where the name ends in `authority` (the port, if any, follows `:`).
    name_end: usize,
    /// Whether the name is an IPv6 literal (in brackets in `authority`).
    ipv6: bool,
}

/// Why a host was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Not a valid `host[:port]`.
    #[error("the host is not a valid host name with an optional port")]
    Invalid,
    /// Two `Host` headers.
    #[error("the request has more than one Host header")]
    Repeated,
    /// The request target's authority (absolute form, or HTTP/2 `:authority`) names another
    /// host than the `Host` header.
    #[error("the request target and the Host header name different hosts")]
    Mismatch,
    /// An HTTP/1.1 request without any host.
    #[error("the request has no Host header")]
    Missing,
}

const MAX_NAME_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;

impl Host {
    /// Parses and canonicalizes `value` (`host[:port]`).
    pub fn parse(value: &[u8]) -> Result<Self, HostError> {
        if value.is_empty() || !value.is_ascii() {
            return Err(HostError::Invalid);
        }
        let (name, port) = if value[0] == b'[' {
            let close = value
                .iter()
                .position(|&b| b == b']')
                .ok_or(HostError::Invalid)?;
            let rest = &value[close + 1..];
            let port = match rest {
                [] => None,
                [b':', port @ ..] => Some(port),
                _ => return Err(HostError::Invalid),
            };
            (&value[..=close], port)
        } else {
            match value.iter().rposition(|&b| b == b':') {
                Some(i) => (&value[..i], Some(&value[i + 1..])),
                None => (value, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => Some(port_number(p)?),
        };
        let (name, ipv6) = if name.first() == Some(&b'[') {
            (ipv6_name(name)?, true)
        } else {
            (dns_name(name)?, false)
        };
        let name_end = name.len();
        let mut authority = name;
        if let Some(p) = port {
            authority.push(':');
            authority.push_str(&p.to_string());
        }
        Ok(Self {
            authority,
            name_end,
            ipv6,
        })
    }

    /// The host name alone: lower-case, no port, no trailing dot, IPv6 without brackets.
    pub fn name(&self) -> &str {
        let name = &self.authority[..self.name_end];
        if self.ipv6 {
            name.trim_start_matches('[').trim_end_matches(']')
        } else {
            name
        }
    }

    /// `name[:port]` as forwarded.
    pub fn authority(&self) -> &str {
        &self.authority
    }
}

fn port_number(digits: &[u8]) -> Result<u16, HostError> {
    if digits.is_empty() || digits.len() > 5 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HostError::Invalid);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u16>().ok())
        .filter(|p| *p > 0)
        .ok_or(HostError::Invalid)
}

fn ipv6_name(bracketed: &[u8]) -> Result<String, HostError> {
    let inner = bracketed
        .strip_prefix(b"[")
        .and_then(|r| r.strip_suffix(b"]"))
        .ok_or(HostError::Invalid)?;
    let text = std::str::from_utf8(inner).map_err(|_| HostError::Invalid)?;
    // Zone identifiers and IPvFuture are not hosts a client should be asking for.
    let addr: Ipv6Addr = text.parse().map_err(|_| HostError::Invalid)?;
    Ok(format!("[{addr}]"))
}

fn dns_name(name: &[u8]) -> Result<String, HostError> {
    let name = name.strip_suffix(b".").unwrap_or(name);
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(HostError::Invalid);
    }
    for label in name.split(|&b| b == b'.') {
        if label.is_empty()
            || label.len() > MAX_LABEL_BYTES
            || !label
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
        {
            return Err(HostError::Invalid);
        }
    }
    let text = std::str::from_utf8(name).map_err(|_| HostError::Invalid)?;
    Ok(text.to_ascii_lowercase())
}

/// The host of a proxied request: its one `Host` header and the target's authority (absolute
/// form, HTTP/2 `:authority`), which must agree when both are present. `None` only for
/// HTTP/1.0 requests that name no host.
pub fn of_request(
    version: http::Version,
    uri: &http::Uri,
    headers: &http::HeaderMap,
) -> Result<Option<Host>, HostError> {
    let mut values = headers.get_all(http::header::HOST).iter();
    let header = match (values.next(), values.next()) {
        (_, Some(_)) => return Err(HostError::Repeated),
        (Some(v), None) => Some(Host::parse(v.as_bytes())?),
        (None, None) => None,
    };
    let target = match uri.authority() {
        None => None,
        // Userinfo (`user@host`) is never a host to route on.
        Some(a) if a.as_str().contains('@') => return Err(HostError::Invalid),
        Some(a) => Some(Host::parse(a.as_str().as_bytes())?),
    };
    match (header, target) {
        (Some(h), Some(t)) if h != t => Err(HostError::Mismatch),
        (Some(h), _) => Ok(Some(h)),
        (None, Some(t)) => Ok(Some(t)),
        (None, None) if version <= http::Version::HTTP_10 => Ok(None),
        (None, None) => Err(HostError::Missing),
    }
}

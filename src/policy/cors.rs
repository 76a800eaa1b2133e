//! A validated CORS policy (the server file's `cors:`, or a route's own): which browser origins
//! may call a route and what their pages may send and read. Origins are compared as the browser
//! serializes them (`scheme://host[:port]`), exactly, never as substrings; a pattern stands for
//! one DNS label (`https://*.example.com`).

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

/// One CORS policy, validated at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    pub origins: Origins,
    /// Methods a preflight may ask for; `None`: any method the route matches.
    pub methods: Option<Vec<Method>>,
    /// Request headers a preflight may ask for (besides the CORS-safelisted ones).
    pub headers: Vec<HeaderName>,
    /// Response headers the page may read, `WWW-Authenticate` and `Retry-After` included.
    pub expose: HeaderList,
    /// Whether the page may send cookies and read the answer (`Access-Control-Allow-Credentials`).
    pub credentials: bool,
    /// How long a browser may cache a preflight's answer.
    pub max_age: Duration,
}

/// Header names, and the one header value that lists them (`a, b`), joined once at load: an
/// answer copies the value instead of joining the names again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderList {
    names: Vec<HeaderName>,
    value: Option<HeaderValue>,
}

impl From<Vec<HeaderName>> for HeaderList {
    fn from(names: Vec<HeaderName>) -> Self {
        let value = joined(&names);
        Self { names, value }
    }
}

impl HeaderList {
    pub fn names(&self) -> &[HeaderName] {
        &self.names
    }

    /// The names as one header value; `None` for an empty list.
    pub fn value(&self) -> Option<&HeaderValue> {
        self.value.as_ref()
    }
}

/// `a, b, c`, or `None` for an empty list.
pub fn joined(names: &[HeaderName]) -> Option<HeaderValue> {
    let text = names
        .iter()
        .map(HeaderName::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    (!text.is_empty())
        .then(|| HeaderValue::from_str(&text).ok())
        .flatten()
}

/// The origins a policy allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Every origin (`*`); never with credentials.
    Any,
    List(Vec<OriginPattern>),
}

impl Origins {
    /// Whether `origin` (an `Origin` header's value) is allowed.
    pub fn allow(&self, origin: &str) -> bool {
        match self {
            Origins::Any => true,
            Origins::List(patterns) => patterns.iter().any(|p| p.matches(origin)),
        }
    }
}

/// One allowed origin, or a family of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginPattern {
    /// A serialized origin, compared byte for byte: `https://app.example.com:8443`.
    Exact(String),
    /// `scheme://*.domain[:port]`: any one DNS label in place of `*` (`https://a.example.com`,
    /// not `https://example.com` nor `https://a.b.example.com`).
    Label {
        /// `https://`.
        scheme: String,
        /// `.example.com:8443`: what follows the label.
        suffix: String,
    },
}

/// Why an origin pattern is refused at load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginPatternError {
    /// Not `http://` or `https://` followed by a host.
    #[error("an origin is `http://` or `https://` and a host, nothing before or after")]
    Shape,
    /// The host has characters a browser never serializes (upper case, `_`, a path...).
    #[error("`{0}` is not a host as a browser serializes it (lower case, no path or `/`)")]
    Host(String),
    /// A port that is the scheme's default, which browsers leave out of the origin.
    #[error("port {0} is the scheme's default: browsers leave it out of the `Origin` header")]
    DefaultPort(u16),
    /// A port that is not a number from 1 to 65535 without leading zeros.
    #[error("`{0}` is not a port")]
    Port(String),
    /// A `*` anywhere but as the whole first label, or before fewer than two labels.
    #[error("`*` may only stand for the first label, before at least two more (`*.example.com`)")]
    Wildcard,
    /// `null`, which every sandboxed document and local file shares.
    #[error("the `null` origin is shared by every sandboxed page and local file")]
    Null,
}

impl OriginPattern {
    /// Parses one entry of `allow_origins` (not `*`, which is [`Origins::Any`]).
    pub fn parse(text: &str) -> Result<Self, OriginPatternError> {
        if text == "null" {
            return Err(OriginPatternError::Null);
        }
        let (scheme, rest, default) = if let Some(rest) = text.strip_prefix("https://") {
            ("https://", rest, 443)
        } else if let Some(rest) = text.strip_prefix("http://") {
            ("http://", rest, 80)
        } else {
            return Err(OriginPatternError::Shape);
        };
        let (host, port) = split_port(rest)?;
        if port == Some(default) {
            return Err(OriginPatternError::DefaultPort(default));
        }
        match host.strip_prefix("*.") {
            Some(domain) => {
                if domain.contains('*') || domain.split('.').count() < 2 || !is_dns_name(domain) {
                    return Err(OriginPatternError::Wildcard);
                }
                Ok(OriginPattern::Label {
                    scheme: scheme.to_string(),
                    suffix: rest[1..].to_string(),
                })
            }
            None if host.contains('*') => Err(OriginPatternError::Wildcard),
            None if is_dns_name(host) || is_ip_literal(host) => {
                Ok(OriginPattern::Exact(text.to_string()))
            }
            None => Err(OriginPatternError::Host(host.to_string())),
        }
    }

    /// Whether `origin` (an `Origin` header's value) is this one, or one of this family.
    pub fn matches(&self, origin: &str) -> bool {
        match self {
            OriginPattern::Exact(o) => o == origin,
            OriginPattern::Label { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(is_label),
        }
    }
}

/// `host` and its port (`None` when there is none), from `host[:port]`.
fn split_port(rest: &str) -> Result<(&str, Option<u16>), OriginPatternError> {
    // An IPv6 literal has colons of its own, inside its brackets.
    let after_host = rest.rfind(']').map_or(0, |i| i + 1);
    let Some(colon) = rest[after_host..].find(':').map(|i| i + after_host) else {
        return Ok((rest, None));
    };
    let digits = &rest[colon + 1..];
    let port = digits
        .parse::<u16>()
        .ok()
        .filter(|p| {
            *p > 0 && !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit())
        })
        .ok_or_else(|| OriginPatternError::Port(digits.to_string()))?;
    Ok((&rest[..colon], Some(port)))
}

/// One DNS label as browsers serialize it: lower-case letters, digits and inner `-`.
fn is_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn is_dns_name(host: &str) -> bool {
    host.len() <= 253 && host.split('.').all(is_label)
}

/// An IPv4 address, or an IPv6 one in brackets, in the form browsers serialize.
fn is_ip_literal(host: &str) -> bool {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.to_string() == v6),
        None => host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.to_string() == host),
    }
}

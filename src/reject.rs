//! Every reason a request is not forwarded, and the one function that renders each as an HTTP
//! answer: status, `WWW-Authenticate` (RFC 6750) and an `application/problem+json` body
//! (RFC 9457). Bodies say which check failed; they never echo a token or internal detail.

#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::mint::MintError;
use crate::normalize::PathError;
use crate::org::OrgError;
use crate::proxy::UpstreamError;
use crate::verify::AuthError;
use crate::websocket::UpgradeError;

/// Why a request was denied or could not be served.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    /// The path failed normalization (400).
    #[error(transparent)]
    Path(#[from] PathError),
    /// No route matches: default deny (404).
    #[error("no route matches this request")]
    NoRoute,
    /// Authentication failed (401; 400 for several Authorization headers; 503 without keys).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The token lacks a scope the route requires (403).
    #[error("the token lacks a scope this route requires")]
    InsufficientScope {
        /// The route's rule as a space-delimited list, for the `scope` parameter.
        required: String,
    },
    /// The upstream failed (502/504).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The route needs an organization the request does not name validly (400).
    #[error(transparent)]
    Organization(#[from] OrgError),
    /// The caller is not a member of the organization (403).
    #[error("the caller is not a member of this organization")]
    NotMember,
    /// The route's condition is false or could not be evaluated (403).
    #[error("the route's condition does not hold for this request")]
    ConditionFailed,
    /// The permissions backend failed and no usable stale answer exists (503).
    #[error("the permissions backend is unavailable")]
    PermissionsUnavailable,
    /// The caller is over its budget of permissions-cache misses (429 with `Retry-After`).
    #[error("too many requests for organizations not looked up yet; retry later")]
    Throttled(std::time::Duration),
    /// The request body is larger than the route allows (413).
    #[error("the request body is larger than this route allows")]
    BodyTooLarge,
    /// An exchanged token used outside its audience or bound path (403).
    #[error("the token is not valid for this resource")]
    WrongResource,
    /// Forward-auth: the original request is not described by a trusted peer (403) or is
    /// malformed (400).
    #[error(transparent)]
    ForwardAuth(#[from] crate::forward_auth::OriginalError),
    /// The request's host is invalid, repeated or contradicts the target (400).
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// The request could be read differently upstream (400; 431 for too many headers).
    #[error(transparent)]
    Request(#[from] crate::inbound::RequestError),
    /// A protocol upgrade other than an allowed WebSocket (400).
    #[error(transparent)]
    Upgrade(#[from] crate::websocket::UpgradeError),
    /// The token to forward could not be minted (500; 401 when the caller's token just expired).
    #[error(transparent)]
    Mint(#[from] MintError),
}

impl Rejection {
    /// Whether this failure came after the gateway allowed the request (the upstream failed):
    /// it counts as an allow in metrics and the audit log, with the upstream's status.
    pub fn after_allow(&self) -> bool {
        matches!(self, Rejection::Upstream(_))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Path(_) => StatusCode::BAD_REQUEST,
            Rejection::Host(_) => StatusCode::BAD_REQUEST,
            Rejection::Request(crate::inbound::RequestError::TooManyHeaders(_)) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Rejection::Request(_) => StatusCode::BAD_REQUEST,
            Rejection::NoRoute => StatusCode::NOT_FOUND,
            Rejection::Auth(AuthError::MultipleHeaders) => StatusCode::BAD_REQUEST,
            Rejection::Auth(AuthError::KeysUnavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Auth(_) => StatusCode::UNAUTHORIZED,
            Rejection::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            Rejection::Upstream(UpstreamError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            Rejection::Upstream(UpstreamError::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Upstream(UpstreamError::BodyStalled) => StatusCode::REQUEST_TIMEOUT,
            Rejection::Upstream(_) => StatusCode::BAD_GATEWAY,
            Rejection::Organization(_) => StatusCode::BAD_REQUEST,
            Rejection::WrongResource => StatusCode::FORBIDDEN,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::ForwardAuth(crate::forward_auth::OriginalError::UntrustedPeer) => {
                StatusCode::FORBIDDEN
            }
            Rejection::ForwardAuth(_) => StatusCode::BAD_REQUEST,
            Rejection::NotMember | Rejection::ConditionFailed => StatusCode::FORBIDDEN,
            Rejection::PermissionsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            Rejection::Upgrade(_) => StatusCode::BAD_REQUEST,
            Rejection::Mint(MintError::Expired) => StatusCode::UNAUTHORIZED,
            Rejection::Mint(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short stable code for the problem body, metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::Path(_) => "bad_path",
            Rejection::Host(_) => "bad_host",
            Rejection::Request(crate::inbound::RequestError::Method) => "bad_method",
            Rejection::Request(crate::inbound::RequestError::TooManyHeaders(_)) => {
                "too_many_headers"
            }
            Rejection::Request(_) => "ambiguous_request",
            Rejection::NoRoute => "no_route",
            Rejection::Auth(e) => match e {
                AuthError::Missing => "missing_token",
                AuthError::MultipleHeaders => "multiple_authorization",
                AuthError::NotBearer => "not_bearer",
                AuthError::KeysUnavailable => "keys_unavailable",
                AuthError::Expired => "token_expired",
                AuthError::NotYetValid => "token_not_yet_valid",
                _ => "invalid_token",
            },
            Rejection::InsufficientScope { .. } => "insufficient_scope",
            Rejection::Upstream(UpstreamError::Timeout) => "upstream_timeout",
            Rejection::Upstream(UpstreamError::Busy) => "upstream_busy",
            Rejection::Upstream(UpstreamError::BodyStalled) => "body_stalled",
            Rejection::Upstream(_) => "upstream_unavailable",
            Rejection::Organization(_) => "organization_unresolved",
            Rejection::WrongResource => "wrong_resource",
            Rejection::BodyTooLarge => "body_too_large",
            Rejection::ForwardAuth(crate::forward_auth::OriginalError::UntrustedPeer) => {
                "untrusted_peer"
            }
            Rejection::ForwardAuth(crate::forward_auth::OriginalError::Conflicting(_)) => {
                "forged_original_request"
            }
            Rejection::ForwardAuth(_) => "bad_original_request",
            Rejection::NotMember => "not_member",
            Rejection::ConditionFailed => "condition_failed",
            Rejection::PermissionsUnavailable => "permissions_unavailable",
            Rejection::Throttled(_) => "too_many_lookups",
            Rejection::Upgrade(UpgradeError::Unsupported) => "upgrade_unsupported",
            Rejection::Upgrade(UpgradeError::Malformed) => "bad_upgrade",
            Rejection::Upgrade(UpgradeError::NotAllowed) => "upgrade_not_allowed",
            Rejection::Mint(MintError::Expired) => "token_expired",
            Rejection::Mint(_) => "mint_failed",
        }
    }

    /// The answer to send.
    pub fn to_response(&self) -> Response<Bytes> {
        let status = self.status();
        let detail = self.to_string();
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/problem+json")
            .header(header::CACHE_CONTROL, "no-store");
        let challenge = match self {
            Rejection::Auth(AuthError::Missing | AuthError::NotBearer) => {
                Some(r#"Bearer realm="scopegate""#.to_string())
            }
            Rejection::Auth(AuthError::MultipleHeaders) => Some(format!(
                r#"Bearer realm="scopegate", error="invalid_request", error_description="{detail}""#
            )),
            Rejection::Auth(AuthError::KeysUnavailable) => None,
            Rejection::Auth(_) => Some(format!(
                r#"Bearer realm="scopegate", error="invalid_token", error_description="{}""#,
                quoted(&detail)
            )),
            Rejection::NotMember | Rejection::ConditionFailed | Rejection::WrongResource => {
                Some(format!(
                    r#"Bearer realm="scopegate", error="insufficient_scope", error_description="{}""#,
                    quoted(&detail)
                ))
            }
            Rejection::Mint(MintError::Expired) => Some(format!(
                r#"Bearer realm="scopegate", error="invalid_token", error_description="{}""#,
                quoted(&detail)
            )),
            Rejection::InsufficientScope { required } => Some(format!(
                r#"Bearer realm="scopegate", error="insufficient_scope", error_description="{}", scope="{}""#,
                quoted(&detail),
                quoted(required)
            )),
            _ => None,
        };
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            builder = builder.header(header::WWW_AUTHENTICATE, c);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            builder = builder.header(header::RETRY_AFTER, "5");
        }
        if let Rejection::Throttled(wait) = self {
            builder = builder.header(header::RETRY_AFTER, wait.as_secs().max(1));
        }
        let mut body = serde_json::json!({
            "type": "about:blank",
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": detail,
            "code": self.code(),
        });
        if let Rejection::InsufficientScope { required } = self {
            body["required_scope"] = serde_json::Value::String(required.clone());
        }
        builder
            .body(Bytes::from(body.to_string()))
            .unwrap_or_else(|_| Response::new(Bytes::from_static(b"{}")))
    }
}

impl From<crate::decide::Denial> for Rejection {
    fn from(denial: crate::decide::Denial) -> Self {
        use crate::decide::Denial;
        match denial {
            Denial::NoCaller => Rejection::Auth(AuthError::Missing),
            Denial::NotMember => Rejection::NotMember,
            Denial::InsufficientScope { required } => Rejection::InsufficientScope { required },
            Denial::ConditionFailed => Rejection::ConditionFailed,
        }
    }
}

/// Makes text safe inside a quoted-string of an auth-param.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

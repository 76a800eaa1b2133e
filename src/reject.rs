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
    /// Shared state refused the token (401), or could not be asked (503).
    #[error(transparent)]
    State(#[from] crate::store::StateError),
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
    /// A CORS preflight for a route whose policy does not allow its origin, method or headers
    /// (403, without any grant header).
    #[error(transparent)]
    Cors(#[from] crate::cors::CorsError),
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
        self.kind().0
    }

    /// A short stable code for the problem body, metrics and logs.
    pub fn code(&self) -> &'static str {
        self.kind().1
    }

    /// The one table: each rejection's status, problem code and RFC 6750 challenge.
    fn kind(&self) -> (StatusCode, &'static str, Challenge) {
        use crate::forward_auth::OriginalError;
        use crate::inbound::RequestError;
        use crate::store::StateError;
        use Challenge::{InsufficientScope, InvalidRequest, InvalidToken, Realm};
        match self {
            Rejection::Path(_) => (StatusCode::BAD_REQUEST, "bad_path", Challenge::None),
            Rejection::Host(_) => (StatusCode::BAD_REQUEST, "bad_host", Challenge::None),
            Rejection::Request(RequestError::Method) => {
                (StatusCode::BAD_REQUEST, "bad_method", Challenge::None)
            }
            Rejection::Request(RequestError::TooManyHeaders(_)) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too_many_headers",
                Challenge::None,
            ),
            Rejection::Request(_) => (
                StatusCode::BAD_REQUEST,
                "ambiguous_request",
                Challenge::None,
            ),
            Rejection::NoRoute => (StatusCode::NOT_FOUND, "no_route", Challenge::None),
            Rejection::Auth(e) => match e {
                AuthError::Missing => (StatusCode::UNAUTHORIZED, "missing_token", Realm),
                AuthError::NotBearer => (StatusCode::UNAUTHORIZED, "not_bearer", Realm),
                AuthError::MultipleHeaders => (
                    StatusCode::BAD_REQUEST,
                    "multiple_authorization",
                    InvalidRequest,
                ),
                AuthError::KeysUnavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "keys_unavailable",
                    Challenge::None,
                ),
                AuthError::Expired => (StatusCode::UNAUTHORIZED, "token_expired", InvalidToken),
                AuthError::NotYetValid => (
                    StatusCode::UNAUTHORIZED,
                    "token_not_yet_valid",
                    InvalidToken,
                ),
                _ => (StatusCode::UNAUTHORIZED, "invalid_token", InvalidToken),
            },
            Rejection::InsufficientScope { .. } => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                InsufficientScope,
            ),
            Rejection::NotMember => (StatusCode::FORBIDDEN, "not_member", InsufficientScope),
            Rejection::ConditionFailed => {
                (StatusCode::FORBIDDEN, "condition_failed", InsufficientScope)
            }
            Rejection::WrongResource => {
                (StatusCode::FORBIDDEN, "wrong_resource", InsufficientScope)
            }
            Rejection::Upstream(UpstreamError::Timeout) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                Challenge::None,
            ),
            Rejection::Upstream(UpstreamError::Busy) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "upstream_busy",
                Challenge::None,
            ),
            Rejection::Upstream(UpstreamError::BodyStalled) => {
                (StatusCode::REQUEST_TIMEOUT, "body_stalled", Challenge::None)
            }
            Rejection::Upstream(_) => (
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                Challenge::None,
            ),
            Rejection::Organization(_) => (
                StatusCode::BAD_REQUEST,
                "organization_unresolved",
                Challenge::None,
            ),
            Rejection::State(StateError::Revoked) => {
                (StatusCode::UNAUTHORIZED, "token_revoked", InvalidToken)
            }
            Rejection::State(StateError::UsedUp) => {
                (StatusCode::UNAUTHORIZED, "token_used_up", InvalidToken)
            }
            Rejection::State(StateError::Unavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "state_unavailable",
                Challenge::None,
            ),
            Rejection::BodyTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                Challenge::None,
            ),
            Rejection::ForwardAuth(OriginalError::UntrustedPeer) => {
                (StatusCode::FORBIDDEN, "untrusted_peer", Challenge::None)
            }
            Rejection::ForwardAuth(OriginalError::Conflicting(_)) => (
                StatusCode::BAD_REQUEST,
                "forged_original_request",
                Challenge::None,
            ),
            Rejection::ForwardAuth(_) => (
                StatusCode::BAD_REQUEST,
                "bad_original_request",
                Challenge::None,
            ),
            Rejection::PermissionsUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "permissions_unavailable",
                Challenge::None,
            ),
            Rejection::Throttled(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_lookups",
                Challenge::None,
            ),
            Rejection::Upgrade(e) => (
                StatusCode::BAD_REQUEST,
                match e {
                    UpgradeError::Unsupported => "upgrade_unsupported",
                    UpgradeError::Malformed => "bad_upgrade",
                    UpgradeError::NotAllowed => "upgrade_not_allowed",
                },
                Challenge::None,
            ),
            Rejection::Cors(e) => (StatusCode::FORBIDDEN, e.code(), Challenge::None),
            Rejection::Mint(MintError::Expired) => {
                (StatusCode::UNAUTHORIZED, "token_expired", InvalidToken)
            }
            Rejection::Mint(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "mint_failed",
                Challenge::None,
            ),
        }
    }

    /// The answer to send.
    pub fn to_response(&self) -> Response<Bytes> {
        let (status, code, challenge) = self.kind();
        let detail = self.to_string();
        let mut builder = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/problem+json")
            .header(header::CACHE_CONTROL, "no-store");
        let challenge = match challenge {
            Challenge::None => None,
            Challenge::Realm => Some(r#"Bearer realm="scopegate""#.to_string()),
            Challenge::InvalidRequest => Some(format!(
                r#"Bearer realm="scopegate", error="invalid_request", error_description="{}""#,
                quoted(&detail)
            )),
            Challenge::InvalidToken => Some(format!(
                r#"Bearer realm="scopegate", error="invalid_token", error_description="{}""#,
                quoted(&detail)
            )),
            Challenge::InsufficientScope => Some(match self {
                Rejection::InsufficientScope { required } => format!(
                    r#"Bearer realm="scopegate", error="insufficient_scope", error_description="{}", scope="{}""#,
                    quoted(&detail),
                    quoted(required)
                ),
                _ => format!(
                    r#"Bearer realm="scopegate", error="insufficient_scope", error_description="{}""#,
                    quoted(&detail)
                ),
            }),
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
            "code": code,
        });
        if let Rejection::InsufficientScope { required } = self {
            body["required_scope"] = serde_json::Value::String(required.clone());
        }
        builder
            .body(Bytes::from(body.to_string()))
            .unwrap_or_else(|_| Response::new(Bytes::from_static(b"{}")))
    }
}

impl Rejection {
    /// The answer to a gRPC request (`content_type` is its own): [`to_response`]'s status as a
    /// gRPC code ([`crate::grpc::code`]), its problem code and detail as `grpc-message`.
    ///
    /// [`to_response`]: Self::to_response
    pub fn to_grpc_response(&self, content_type: HeaderValue) -> Response<Bytes> {
        let message = format!("{} ({})", self, self.code());
        crate::grpc::answer(self.to_response(), content_type, &message)
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

/// Which RFC 6750 `WWW-Authenticate` challenge a rejection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    /// No credentials, or not a bearer token: the realm alone (RFC 6750 section 3.1).
    Realm,
    InvalidRequest,
    InvalidToken,
    /// With the required scopes when the rule is known.
    InsufficientScope,
}

/// Makes text safe inside a quoted-string of an auth-param.
fn quoted(s: &str) -> String {
    s.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

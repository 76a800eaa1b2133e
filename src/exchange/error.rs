//! The token endpoint's errors: an RFC 6749 `error` code, a description that names the check
//! that failed, and the failure underneath for the log.

use http::StatusCode;

/// An RFC 6749 section 5.2 error. Its description never echoes client input (a scope, an
/// audience, a grant type the client sent): it names which check failed.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {description}")]
pub(crate) struct ExchangeError {
    pub code: ErrorCode,
    pub description: String,
    /// The failure underneath, for the log; never sent to the client.
    #[source]
    pub cause: Option<Cause>,
}

/// The RFC 6749 / RFC 8693 `error` codes the token endpoint answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    ServerError,
    /// RFC 7009: the revocation could not be recorded now (503).
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// 401 for a failed client authentication (with a Basic challenge), 500 for a fault of
    /// scopegate's, 400 for everything else (RFC 6749 section 5.2).
    pub(super) fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What failed underneath an exchange error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Cause {
    /// The subject token did not verify.
    #[error(transparent)]
    SubjectToken(#[from] crate::verify::AuthError),
    /// The `resource` path is ambiguous.
    #[error(transparent)]
    Resource(#[from] crate::normalize::PathError),
    /// The issued token could not be signed.
    #[error(transparent)]
    Sign(#[from] crate::signing::SignError),
}

pub(crate) fn err(code: ErrorCode, description: impl Into<String>) -> ExchangeError {
    ExchangeError {
        code,
        description: description.into(),
        cause: None,
    }
}

impl ExchangeError {
    /// The same error, with what failed underneath.
    pub(crate) fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }
}

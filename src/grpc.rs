//! gRPC refusals: a gRPC client reads a non-200 HTTP answer as a transport failure (`UNKNOWN`,
//! or its own guess), so a request with `content-type: application/grpc*` that scopegate refuses
//! gets a gRPC answer instead: HTTP 200, trailers-only, with `grpc-status` and `grpc-message`.
//! The code comes from the HTTP status of the refusal (one table, [`code`]); the challenge and
//! `Retry-After` stay as metadata.

#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

/// The request's content type when it is gRPC (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`...), to answer in the same type.
pub(crate) fn requested(headers: &HeaderMap) -> Option<HeaderValue> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let prefix = b"application/grpc";
    let bytes = value.as_bytes();
    (bytes.len() >= prefix.len() && bytes[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| value.clone())
}

/// gRPC status codes (grpc/doc/statuscodes.md) scopegate answers with.
pub(crate) mod codes {
    pub(crate) const INVALID_ARGUMENT: u8 = 3;
    pub(crate) const DEADLINE_EXCEEDED: u8 = 4;
    pub(crate) const PERMISSION_DENIED: u8 = 7;
    pub(crate) const RESOURCE_EXHAUSTED: u8 = 8;
    pub(crate) const UNIMPLEMENTED: u8 = 12;
    pub(crate) const INTERNAL: u8 = 13;
    pub(crate) const UNAVAILABLE: u8 = 14;
    pub(crate) const UNAUTHENTICATED: u8 = 16;
    pub(crate) const UNKNOWN: u8 = 2;
}

/// The gRPC code of a refusal with this HTTP status. It follows gRPC's own HTTP-to-gRPC mapping
/// (401, 403, 404, 429 and 502-504) except where scopegate knows more: a malformed request (400)
/// is `INVALID_ARGUMENT` rather than `INTERNAL`, a request over a size bound (413, 431) or over
/// its budget of lookups (429) `RESOURCE_EXHAUSTED`, a stalled request body (408)
/// `DEADLINE_EXCEEDED`, and a failure to mint (500) `INTERNAL`.
pub(crate) fn code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => codes::INVALID_ARGUMENT,
        401 => codes::UNAUTHENTICATED,
        403 => codes::PERMISSION_DENIED,
        404 => codes::UNIMPLEMENTED,
        408 => codes::DEADLINE_EXCEEDED,
        413 | 429 | 431 => codes::RESOURCE_EXHAUSTED,
        500 => codes::INTERNAL,
        502..=504 => codes::UNAVAILABLE,
        _ => codes::UNKNOWN,
    }
}

/// `http` (scopegate's HTTP answer to a refused request) as a trailers-only gRPC answer of
/// `content_type`; `message` becomes `grpc-message`.
pub(crate) fn answer(
    http: Response<Bytes>,
    content_type: HeaderValue,
    message: &str,
) -> Response<Bytes> {
    let (mut parts, _) = http.into_parts();
    let code = code(parts.status);
    parts.status = StatusCode::OK;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, content_type);
    parts
        .headers
        .insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(m) = HeaderValue::from_str(&percent_encoded(message)) {
        parts.headers.insert("grpc-message", m);
    }
    Response::from_parts(parts, Bytes::new())
}

/// `grpc-message` encoding: bytes outside printable ASCII, and `%`, as `%XX`.
fn percent_encoded(text: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::verify::AuthError;

fn answer(r: &Rejection) -> (StatusCode, String, serde_json::Value) {
    let response = r.to_response();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = serde_json::from_slice(response.body()).unwrap();
    (response.status(), challenge, body)
}

#[test]
fn every_answer_is_a_problem_document_with_its_code_and_status() {
    let all = [
        Rejection::NoRoute,
        Rejection::Auth(AuthError::Expired),
        Rejection::Auth(AuthError::MultipleHeaders),
        Rejection::Auth(AuthError::KeysUnavailable),
        Rejection::InsufficientScope {
            required: "a b".into(),
        },
        Rejection::NotMember,
        Rejection::ConditionFailed,
        Rejection::PermissionsUnavailable,
        Rejection::Throttled(Duration::from_secs(3)),
        Rejection::BodyTooLarge,
        Rejection::WrongResource,
        Rejection::Upstream(UpstreamError::Timeout),
        Rejection::Upstream(UpstreamError::BodyStalled),
        Rejection::Host(crate::host::HostError::Repeated),
        Rejection::Request(crate::inbound::RequestError::Method),
        Rejection::Request(crate::inbound::RequestError::TooManyHeaders(100)),
        Rejection::Path(PathError::MatrixParameter),
    ];
    for r in &all {
        let response = r.to_response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let (status, _, body) = answer(r);
        assert_eq!(status, r.status());
        assert_eq!(body["status"], status.as_u16());
        assert_eq!(body["code"], r.code());
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
}

#[test]
fn challenges_follow_rfc_6750() {
    let (status, challenge, _) = answer(&Rejection::Auth(AuthError::Missing));
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenge, r#"Bearer realm="scopegate""#);
    let (_, challenge, _) = answer(&Rejection::Auth(AuthError::BadSignature));
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    let (status, challenge, body) = answer(&Rejection::InsufficientScope {
        required: "read:builds".into(),
    });
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(challenge.contains(r#"error="insufficient_scope""#));
    assert!(challenge.contains(r#"scope="read:builds""#));
    assert_eq!(body["required_scope"], "read:builds");
    let (_, challenge, _) = answer(&Rejection::PermissionsUnavailable);
    assert!(
        challenge.is_empty(),
        "no challenge for a server-side failure"
    );
}

#[test]
fn waits_are_announced() {
    let unavailable = Rejection::PermissionsUnavailable.to_response();
    assert_eq!(unavailable.headers()[header::RETRY_AFTER], "5");
    let throttled = Rejection::Throttled(Duration::from_secs(7)).to_response();
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()[header::RETRY_AFTER], "7");
}

#[test]
fn decisions_map_to_their_answers() {
    use crate::decide::Denial;
    assert_eq!(
        Rejection::from(Denial::NoCaller).status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(Rejection::from(Denial::NotMember).code(), "not_member");
    assert_eq!(
        Rejection::from(Denial::ConditionFailed).code(),
        "condition_failed"
    );
    let r = Rejection::from(Denial::InsufficientScope {
        required: "x".into(),
    });
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

/// Only failures after the allow (the upstream) count as allowed in metrics and audit.
#[test]
fn only_upstream_failures_come_after_the_allow() {
    assert!(Rejection::Upstream(UpstreamError::Unavailable).after_allow());
    assert!(!Rejection::NotMember.after_allow());
    assert!(!Rejection::Throttled(Duration::from_secs(1)).after_allow());
}

/// A gRPC request's refusal keeps the HTTP answer's decision: its status as the gRPC code, its
/// detail and problem code as the message, its challenge as metadata.
#[test]
fn grpc_answers_carry_the_code_of_the_http_status() {
    let grpc = HeaderValue::from_static("application/grpc");
    for (r, code) in [
        (Rejection::Auth(AuthError::Missing), "16"),
        (Rejection::Auth(AuthError::Expired), "16"),
        (
            Rejection::InsufficientScope {
                required: "a".into(),
            },
            "7",
        ),
        (Rejection::NotMember, "7"),
        (Rejection::NoRoute, "12"),
        (Rejection::Upstream(UpstreamError::Unavailable), "14"),
        (Rejection::Upstream(UpstreamError::Timeout), "14"),
        (Rejection::Upstream(UpstreamError::Busy), "14"),
        (Rejection::PermissionsUnavailable, "14"),
        (Rejection::Throttled(Duration::from_secs(2)), "8"),
        (Rejection::Path(PathError::DotSegment), "3"),
    ] {
        let response = r.to_grpc_response(grpc.clone());
        assert_eq!(response.status(), StatusCode::OK, "{r:?}");
        assert_eq!(response.headers()["grpc-status"], code, "{r:?}");
        let message = response.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains(r.code()), "{message}");
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE),
            r.to_response().headers().get(header::WWW_AUTHENTICATE)
        );
    }
}

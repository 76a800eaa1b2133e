use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use super::*;

fn with_type(value: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
    headers
}

#[test]
fn every_grpc_content_type_is_recognized_and_nothing_else() {
    for grpc in [
        "application/grpc",
        "application/grpc+proto",
        "Application/GRPC+json",
        "application/grpc-web+proto",
    ] {
        assert_eq!(requested(&with_type(grpc)).unwrap(), grpc);
    }
    for other in ["application/json", "application/grp", "text/grpc"] {
        assert!(requested(&with_type(other)).is_none(), "{other}");
    }
    assert!(requested(&HeaderMap::new()).is_none());
}

#[test]
fn refusal_statuses_map_to_the_documented_codes() {
    for (status, expected) in [
        (400, codes::INVALID_ARGUMENT),
        (401, codes::UNAUTHENTICATED),
        (403, codes::PERMISSION_DENIED),
        (404, codes::UNIMPLEMENTED),
        (408, codes::DEADLINE_EXCEEDED),
        (413, codes::RESOURCE_EXHAUSTED),
        (429, codes::RESOURCE_EXHAUSTED),
        (431, codes::RESOURCE_EXHAUSTED),
        (500, codes::INTERNAL),
        (502, codes::UNAVAILABLE),
        (503, codes::UNAVAILABLE),
        (504, codes::UNAVAILABLE),
        (418, codes::UNKNOWN),
    ] {
        assert_eq!(
            code(StatusCode::from_u16(status).unwrap()),
            expected,
            "{status}"
        );
    }
}

#[test]
fn an_answer_is_trailers_only_with_status_message_and_the_http_metadata() {
    let http = Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::CONTENT_TYPE, "application/problem+json")
        .header(header::CONTENT_LENGTH, "12")
        .header(header::WWW_AUTHENTICATE, r#"Bearer realm="scopegate""#)
        .body(bytes::Bytes::from_static(b"{\"a\":\"b\"}"))
        .unwrap();
    let grpc = answer(
        http,
        HeaderValue::from_static("application/grpc+proto"),
        "no token, 100% sure\n",
    );
    assert_eq!(grpc.status(), StatusCode::OK);
    assert!(grpc.body().is_empty());
    let h = grpc.headers();
    assert_eq!(h[header::CONTENT_TYPE], "application/grpc+proto");
    assert_eq!(h["grpc-status"], "16");
    assert_eq!(h["grpc-message"], "no token, 100%25 sure%0A");
    assert_eq!(h[header::WWW_AUTHENTICATE], r#"Bearer realm="scopegate""#);
    assert!(!h.contains_key(header::CONTENT_LENGTH));
}

//! Path safety: what is authorized is exactly what is forwarded, and every ambiguous encoding
//! is refused with 400 before authentication.

use http::StatusCode;

use crate::util::Harness;

#[tokio::test]
async fn the_upstream_sees_the_normalized_path_and_the_query_untouched() {
    let h = Harness::start().await;
    let token = h.token("read:builds");
    let a = h.get("//orgs//%61cme/builds?x=%2F&y=..", &token).await;
    assert_eq!(a.status, StatusCode::OK);
    let echo = a.json();
    assert_eq!(echo["path"], "/orgs/acme/builds");
    assert_eq!(
        echo["query"], "x=%2F&y=..",
        "the query is forwarded as sent and never matched"
    );
}

#[tokio::test]
async fn every_ambiguous_encoding_is_a_400() {
    let h = Harness::start().await;
    let auth = format!("Authorization: Bearer {}\r\n", h.token("read:builds"));
    let cases = [
        "/files/a%2Fb",
        "/files/a%2fb",
        "/files/a%5Cb",
        "/files/a%00b",
        "/files/a\\b",
        "/files/a%zz",
        "/files/a%",
        "/files/../orgs/acme/builds",
        "/files/./x",
        "/files/%2e%2e/orgs/acme/builds",
        "/files/%2E/x",
        "/files/.%2e/x",
    ];
    for path in cases {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        let status = crate::util::raw_status(h.gateway.proxy_addr, &request).await;
        assert_eq!(status, 400, "{path}");
    }
    // Without a token too: path checks come first, so nothing about the route leaks.
    let status = crate::util::raw_status(
        h.gateway.proxy_addr,
        "GET /files/a%2Fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn unreserved_escapes_decode_once_and_other_escapes_stay() {
    let h = Harness::start().await;
    let token = h.token("");
    let a = h.get("/files/%7Euser/a%20b/%2561", &token).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["path"], "/files/~user/a%20b/%2561");
}

#[tokio::test]
async fn trailing_slash_and_case_are_significant() {
    let h = Harness::start().await;
    let token = h.token("read:builds");
    assert_eq!(
        h.get("/orgs/acme/builds/", &token).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.get("/ORGS/acme/builds", &token).await.status,
        StatusCode::NOT_FOUND
    );
    // Case inside a parameter is kept and forwarded.
    assert_eq!(
        h.get("/orgs/ACME/builds", &token).await.json()["path"],
        "/orgs/ACME/builds"
    );
}

#[tokio::test]
async fn unmatched_routes_are_404_even_with_a_good_token() {
    let h = Harness::start().await;
    let a = h
        .get("/admin/secrets", &h.token("read:builds create:builds"))
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.code(), "no_route");
    // A method no route allows is unmatched too.
    let a = h
        .client
        .send(
            http::Method::DELETE,
            &h.url("/orgs/acme/builds"),
            &[],
            Default::default(),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

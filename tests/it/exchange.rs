//! Token exchange (RFC 8693): user story 01 played whole, and each way an exchange is refused.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::util::{Answer, CLIENT_SECRET, Harness, now, scenario};

pub(crate) const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

pub(crate) fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

pub(crate) fn form(fields: &[(&str, &str)]) -> Bytes {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        f.append_pair(k, v);
    }
    Bytes::from(f.finish())
}

/// `POST /oauth2/token` as the builds API, with `subject_token` and `extra` fields.
pub(crate) async fn exchange(h: &Harness, subject_token: &str, extra: &[(&str, &str)]) -> Answer {
    let mut fields = vec![
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", subject_token),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
    ];
    fields.extend_from_slice(extra);
    let auth = basic("builds-api", CLIENT_SECRET);
    h.client
        .send(
            Method::POST,
            &h.url("/oauth2/token"),
            &[FORM, ("authorization", &auth)],
            form(&fields),
        )
        .await
}

fn claims_of(token: &str) -> Value {
    crate::util::jwt_claims(token)
}

/// The exchange of story 01: the builds API's callback token for build 42.
pub(crate) const BOUND: [(&str, &str); 2] = [
    ("audience", "https://builds.example.com"),
    ("resource", "https://api.example.com/builds/42"),
];

/// The callback token for build 42, exchanged from `subject`.
pub(crate) async fn callback(h: &Harness, subject: &str) -> String {
    let a = exchange(h, subject, &BOUND).await;
    a.expect_status(StatusCode::OK);
    a.json()["access_token"].as_str().unwrap().to_string()
}

/// The user's token: alice in buildco, valid for `secs`.
pub(crate) fn user_token(h: &Harness, secs: i64) -> String {
    let mut c = h.claims("read:builds create:builds update:builds");
    c["org_id"] = json!("buildco");
    c["exp"] = json!(now() + secs);
    h.sign("ec", &c)
}

#[tokio::test]
async fn story_01_a_build_job_calls_back_after_the_users_token_expired() {
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let user = user_token(&h, 3);

    // 1. The user starts a build through the gateway; the API receives a minted token.
    let created = h.call(Method::POST, "/builds", &user, &[]).await;
    assert_eq!(created.status, StatusCode::OK);
    let received = created.json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();

    // 2. The API exchanges the token it received for a callback token for build 42 only.
    let a = exchange(
        &h,
        &received,
        &[
            ("scope", "update:builds"),
            ("audience", "https://builds.example.com"),
            ("resource", "https://api.example.com/builds/42"),
        ],
    )
    .await;
    a.expect_status(StatusCode::OK);
    assert_eq!(a.header("cache-control"), "no-store");
    let answer = a.json();
    assert_eq!(
        answer["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(answer["token_type"], "Bearer");
    assert_eq!(answer["scope"], "update:builds");
    assert_eq!(
        answer["expires_in"],
        6 * 3600,
        "the rule's lifetime, beyond the user's token"
    );
    let callback = answer["access_token"].as_str().unwrap().to_string();
    let c = claims_of(&callback);
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["act"], json!({"sub": "builds-api"}));
    assert_eq!(c["aud"], "https://builds.example.com");
    assert_eq!(c["bound_path"], "/builds/42");

    // 3. The user's token expires (3 s, plus the issuer's 5 s leeway) as the gateway's clock
    // moves on.
    h.clock.advance(Duration::from_secs(10));
    assert_eq!(
        h.call(Method::PUT, "/builds/42", &user, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );

    // 4. Hours later (here: seconds), the job calls back with the exchanged token.
    let done = h.call(Method::PUT, "/builds/42", &callback, &[]).await;
    done.expect_status(StatusCode::OK);
    let echo = done.json();
    assert_eq!(echo["token_verified"], true, "{}", echo["token_error"]);
    let minted = &echo["token_claims"];
    assert_eq!(minted["sub"], "alice", "the upstream sees the user");
    assert_eq!(minted["scope"], "update:builds");
    assert_eq!(minted["token_use"], "upstream");
    assert_ne!(
        echo["headers"]["authorization"].as_str().unwrap(),
        format!("Bearer {callback}"),
        "a fresh minted token, not the callback token"
    );

    // 5. The callback token opens only its own build.
    let other = h.call(Method::PUT, "/builds/43", &callback, &[]).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.code(), "wrong_resource");
    assert_eq!(
        h.call(Method::GET, "/builds/42", &callback, &[])
            .await
            .status,
        StatusCode::FORBIDDEN,
        "nor another scope"
    );
}

#[tokio::test]
async fn exchange_refusals_follow_rfc_6749() {
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let user = user_token(&h, 300);
    let bound = BOUND;

    // A scope the subject token lacks.
    let mut c = h.claims("read:builds");
    c["org_id"] = json!("buildco");
    let a = exchange(
        &h,
        &h.sign("ec", &c),
        &[bound[0], bound[1], ("scope", "update:builds")],
    )
    .await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_scope"))
    );
    // A scope the rule does not allow.
    let a = exchange(&h, &user, &[bound[0], bound[1], ("scope", "create:builds")]).await;
    assert_eq!(a.json()["error"], "invalid_scope");
    // A wrong client secret: 401 invalid_client with a Basic challenge.
    let fields = form(&[
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", &user),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
    ]);
    let a = h
        .client
        .send(
            Method::POST,
            &h.url("/oauth2/token"),
            &[FORM, ("authorization", &basic("builds-api", "wrong"))],
            fields.clone(),
        )
        .await;
    assert_eq!(
        (a.status, a.json()["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_client"))
    );
    assert!(a.header("www-authenticate").starts_with("Basic"));
    // client_secret_post works as well as Basic.
    let mut post = fields.to_vec();
    post.extend_from_slice(format!("&client_id=builds-api&client_secret={CLIENT_SECRET}&audience=https%3A%2F%2Fbuilds.example.com&resource=https%3A%2F%2Fapi.example.com%2Fbuilds%2F7").as_bytes());
    let a = h
        .client
        .send(
            Method::POST,
            &h.url("/oauth2/token"),
            &[FORM],
            Bytes::from(post),
        )
        .await;
    a.expect_status(StatusCode::OK);
    // Lifetime above the rule's cap is capped; below it is honored.
    let a = exchange(&h, &user, &[bound[0], bound[1], ("expires_in", "99999999")]).await;
    assert_eq!(a.json()["expires_in"], 6 * 3600);
    let a = exchange(&h, &user, &[bound[0], bound[1], ("expires_in", "600")]).await;
    assert_eq!(a.json()["expires_in"], 600);
    // A resource outside the binding template, an unknown audience, a wrong grant type.
    let a = exchange(
        &h,
        &user,
        &[bound[0], ("resource", "https://api.example.com/orgs/1")],
    )
    .await;
    assert_eq!(a.json()["error"], "invalid_target");
    let a = exchange(&h, &user, &[("audience", "https://elsewhere.example.com")]).await;
    assert_eq!(a.json()["error"], "invalid_target");
    let a = h
        .client
        .send(
            Method::POST,
            &h.url("/oauth2/token"),
            &[FORM, ("authorization", &basic("builds-api", CLIENT_SECRET))],
            form(&[("grant_type", "client_credentials")]),
        )
        .await;
    assert_eq!(a.json()["error"], "unsupported_grant_type");
    // An invalid subject token, and one over the token size bound.
    let a = exchange(&h, "not-a-token", &bound).await;
    assert_eq!(a.json()["error"], "invalid_grant");
    let a = exchange(&h, &"x".repeat(9000), &bound).await;
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(
        a.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("larger than 8192 bytes")
    );
    let metrics = String::from_utf8_lossy(&h.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains(r#"scopegate_token_exchanges_total{client="builds-api",result="ok"} 3"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"scopegate_token_exchanges_total{client="unauthenticated",result="invalid_client"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn act_chains_deeper_than_configured_are_refused() {
    // Scenario gateways allow one `act` level.
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let bound = BOUND;
    let once = callback(&h, &user_token(&h, 300)).await;
    // Exchanging the exchanged token again would make the chain two deep.
    let a = exchange(&h, &once, &bound).await;
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(
        a.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("delegation chain")
    );
}

#[tokio::test]
async fn a_token_minted_for_an_upstream_never_opens_the_front_door() {
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let created = h
        .call(Method::POST, "/builds", &user_token(&h, 300), &[])
        .await;
    let leaked = created.json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(claims_of(&leaked)["token_use"], "upstream");
    let a = h.call(Method::POST, "/builds", &leaked, &[]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(
        a.header("www-authenticate")
            .contains("issued for an upstream"),
        "{}",
        a.header("www-authenticate")
    );
}

#[tokio::test]
async fn the_discovery_document_names_the_token_endpoint() {
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let doc = h
        .client
        .get(&h.url("/.well-known/openid-configuration"), &[])
        .await
        .json();
    assert_eq!(
        doc["token_endpoint"],
        format!("http://{}/oauth2/token", h.gateway.proxy_addr)
    );
}

/// Regression: minted upstream tokens dropped `act` and the binding, so the token the API
/// received for a callback token could be exchanged again into a fresh, unbound token:
/// `max_act_depth` limited nothing and a callback token renewed itself forever.
#[tokio::test]
async fn delegation_survives_minting_and_cannot_be_laundered_by_exchanging_again() {
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let bound = BOUND;
    let callback = callback(&h, &user_token(&h, 300)).await;
    let done = h.call(Method::PUT, "/builds/42", &callback, &[]).await;
    done.expect_status(StatusCode::OK);
    let minted = done.json()["token_claims"].clone();
    assert_eq!(minted["act"], json!({"sub": "builds-api"}), "{minted}");
    assert_eq!(minted["bound_path"], "/builds/42");
    assert_eq!(minted["resource"], "https://api.example.com/builds/42");
    assert_eq!(minted["sub_id"]["iss"], h.issuer.url.as_str());
    assert_eq!(minted["bound_methods"], json!(["PUT"]));
    // The rule binds the method too.
    let get = h.call(Method::GET, "/builds/42", &callback, &[]).await;
    assert_eq!(get.code(), "wrong_resource");
    let received = done.json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    // The token the API received carries the chain: exchanging it again is two deep.
    let a = exchange(&h, &received, &bound).await;
    assert_eq!(a.json()["error"], "invalid_grant", "{}", a.text());
    // Nor without naming the resource: no fresh, unbound token.
    let a = exchange(&h, &received, &bound[..1]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json()["access_token"].is_null(), "{}", a.text());
}

/// A bound subject token passes its binding on: the same resource may be named again, another
/// one may not.
#[tokio::test]
async fn a_bound_subject_cannot_be_rebound_to_another_resource() {
    let mut options = scenario(&["builds.yaml"]);
    options.server_extra = options
        .server_extra
        .replace("max_act_depth: 1", "max_act_depth: 3");
    let h = Harness::with(options).await;
    let bound = BOUND;
    let callback = callback(&h, &user_token(&h, 300)).await;
    let other = exchange(
        &h,
        &callback,
        &[
            ("audience", "https://builds.example.com"),
            ("resource", "https://api.example.com/builds/43"),
        ],
    )
    .await;
    assert_eq!(other.json()["error"], "invalid_target", "{}", other.text());
    let again = exchange(&h, &callback, &bound).await;
    again.expect_status(StatusCode::OK);
    let c = claims_of(again.json()["access_token"].as_str().unwrap());
    assert_eq!(c["bound_path"], "/builds/42");
    assert_eq!(
        c["act"],
        json!({"sub": "builds-api", "act": {"sub": "builds-api"}})
    );
    assert_eq!(
        h.call(
            Method::PUT,
            "/builds/43",
            again.json()["access_token"].as_str().unwrap(),
            &[]
        )
        .await
        .code(),
        "wrong_resource"
    );
}

/// Regression: token-endpoint errors echoed client input (the requested scope, audience, grant
/// type) back into `error_description`.
#[tokio::test]
async fn token_endpoint_errors_do_not_echo_client_input() {
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let user = user_token(&h, 300);
    for (extra, marker) in [
        (
            vec![("audience", "https://INJECTED-AUD.example")],
            "INJECTED-AUD",
        ),
        (
            vec![
                ("audience", "https://builds.example.com"),
                ("resource", "https://api.example.com/builds/42"),
                ("scope", "INJECTED-SCOPE"),
            ],
            "INJECTED-SCOPE",
        ),
        (
            vec![("requested_token_type", "urn:INJECTED-TYPE")],
            "INJECTED-TYPE",
        ),
    ] {
        let a = exchange(&h, &user, &extra).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
        assert!(!a.text().contains(marker), "{}", a.text());
    }
}

/// Regression: failed client authentication at `/oauth2/token` was not limited, so a client
/// secret could be guessed at full speed. After `max_auth_failures_per_minute` failures an
/// address gets 429 for the rest of the minute, even with the right secret.
#[tokio::test]
async fn guessing_a_client_secret_is_slowed_down() {
    let mut options = scenario(&["builds.yaml"]);
    options.server_extra = options.server_extra.replace(
        "max_act_depth: 1",
        "max_act_depth: 1, max_auth_failures_per_minute: 3",
    );
    let h = Harness::with(options).await;
    let user = user_token(&h, 300);
    let fields = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", user.as_str()),
        (
            "subject_token_type",
            "urn:ietf:params:oauth:token-type:access_token",
        ),
        ("audience", "https://builds.example.com"),
        ("resource", "https://api.example.com/builds/42"),
    ];
    for guess in 0..3 {
        let wrong = basic("builds-api", &format!("wrong-secret-number-{guess}"));
        let a = h
            .client
            .send(
                Method::POST,
                &h.url("/oauth2/token"),
                &[FORM, ("authorization", &wrong)],
                form(&fields),
            )
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "guess {guess}");
    }
    let a = exchange(&h, &user, &fields[3..]).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
    assert_eq!(a.header("retry-after"), "60");
    assert!(a.json()["access_token"].is_null());
    assert!(
        crate::util::metrics(h.gateway.admin_addr)
            .await
            .contains("scopegate_limit_rejections_total{limit=\"client_auth_failures\"} 1")
    );
}

//! The user stories of DESIGN.md, end to end on the repository's scenario policies. The upstream
//! verifies every minted token through scopegate's discovery document and JWKS over HTTP.

use http::{Method, StatusCode};
use serde_json::json;

use crate::util::{Answer, Harness, Options, now, scenario};

const ALICE_PROJECTS: &str = "read:projects write:projects delete:projects";

/// The minted token's claims, after checking the upstream verified it.
fn minted(a: &Answer) -> serde_json::Value {
    a.expect_status(StatusCode::OK);
    let echo = a.json();
    assert_eq!(
        echo["token_verified"], true,
        "the upstream could not verify: {}",
        echo["token_error"]
    );
    assert_eq!(echo["token_header"]["typ"], "at+jwt");
    echo["token_claims"].clone()
}

#[tokio::test]
async fn seed02_the_same_user_gets_per_organization_scopes() {
    let h = Harness::with(scenario(&["organizations.yaml"])).await;
    let token = h.token(ALICE_PROJECTS);

    let acme = minted(&h.get("/orgs/acme/projects", &token).await);
    assert_eq!(
        acme["scope"], "delete:projects read:projects write:projects",
        "admin in acme"
    );
    assert_eq!(acme["org_id"], "acme");
    assert_eq!(acme["aud"], "https://projects.example.com");
    assert_eq!(acme["sub"], "alice");
    assert_eq!(acme["client_id"], "cli");

    let globex = minted(&h.get("/orgs/globex/projects", &token).await);
    assert_eq!(globex["scope"], "read:projects", "viewer in globex");
    assert_eq!(globex["org_id"], "globex");

    // A write to globex is 403; the same write to acme goes through.
    let a = h
        .call(Method::POST, "/orgs/globex/projects", &token, &[])
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), "insufficient_scope");
    assert!(
        a.header("www-authenticate")
            .contains(r#"scope="write:projects""#)
    );
    assert_eq!(
        h.call(Method::POST, "/orgs/acme/projects", &token, &[])
            .await
            .status,
        StatusCode::OK
    );

    // `forward.scopes: required` on delete: only the scope the route needs.
    let deleted = minted(
        &h.call(Method::DELETE, "/orgs/acme/projects/7", &token, &[])
            .await,
    );
    assert_eq!(deleted["scope"], "delete:projects");
}

#[tokio::test]
async fn not_a_member_is_403() {
    let h = Harness::with(scenario(&["organizations.yaml"])).await;
    let a = h
        .get("/orgs/initech/projects", &h.token(ALICE_PROJECTS))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.code(), "not_member");
    assert!(a.header("www-authenticate").contains("insufficient_scope"));
}

#[tokio::test]
async fn scopegate_serves_a_discovery_document_jwt_authorizers_can_use() {
    let h = Harness::with(scenario(&["organizations.yaml"])).await;
    let a = h
        .client
        .send(
            Method::GET,
            &h.url("/.well-known/openid-configuration"),
            &[],
            Default::default(),
        )
        .await;
    let doc = a.json();
    let issuer = format!("http://{}", h.gateway.proxy_addr);
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    let jwks = h
        .client
        .send(
            Method::GET,
            doc["jwks_uri"].as_str().unwrap(),
            &[],
            Default::default(),
        )
        .await
        .json();
    let key = &jwks["keys"][0];
    assert_eq!(
        (
            key["kid"].as_str(),
            key["alg"].as_str(),
            key["use"].as_str()
        ),
        (Some("sg-1"), Some("ES256"), Some("sig"))
    );
    assert!(key.get("d").is_none(), "no private material is published");
}

#[tokio::test]
async fn seed03_resource_claims_gate_the_path_and_only_forwarded_claims_are_minted() {
    let h = Harness::with(scenario(&["countries.yaml"])).await;
    let token = h.token("read:shipments create:shipments");
    let org = [("x-organization", "eu-logistics")];

    let nl = minted(
        &h.call(Method::GET, "/countries/nl/shipments", &token, &org)
            .await,
    );
    assert_eq!(nl["allowed_countries"], json!(["nl", "de", "be"]));
    assert!(
        nl.get("cost_centers").is_none(),
        "a claim the route does not forward stays out: {nl}"
    );
    assert_eq!(nl["scope"], "read:shipments");

    let fr = h
        .call(Method::GET, "/countries/fr/shipments", &token, &org)
        .await;
    assert_eq!(fr.status, StatusCode::FORBIDDEN);
    assert_eq!(fr.code(), "condition_failed");

    // The create route forwards the same claim under another name.
    let created = minted(
        &h.call(Method::POST, "/countries/de/shipments", &token, &org)
            .await,
    );
    assert_eq!(created["countries"], json!(["nl", "de", "be"]));
    assert!(created.get("allowed_countries").is_none());

    // No organization header: the route cannot resolve one.
    let a = h.get("/countries/nl/shipments", &token).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "organization_unresolved");
    // Two of them is ambiguous, also refused.
    let a = h
        .call(
            Method::GET,
            "/countries/nl/shipments",
            &token,
            &[org[0], ("x-organization", "other")],
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn organization_from_a_token_claim() {
    let h = Harness::with(scenario(&["builds.yaml"])).await;
    let mut c = h.claims("create:builds read:builds");
    c["org_id"] = json!("buildco");
    let created = minted(
        &h.call(Method::POST, "/builds", &h.sign("ec", &c), &[])
            .await,
    );
    assert_eq!(created["org_id"], "buildco");
    assert_eq!(
        created["scope"], "create:builds read:builds",
        "builds-create forwards every effective scope"
    );
    c.as_object_mut().unwrap().remove("org_id");
    let a = h
        .call(Method::POST, "/builds", &h.sign("ec", &c), &[])
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.code(), "organization_unresolved");
}

#[tokio::test]
async fn combine_intersect_never_gains_a_scope_and_replace_takes_the_grants() {
    // intersect (default): alice is admin in acme, but her token consented to read only.
    let h = Harness::with(scenario(&["organizations.yaml"])).await;
    let read_only = h.token("read:projects");
    assert_eq!(
        minted(&h.get("/orgs/acme/projects", &read_only).await)["scope"],
        "read:projects"
    );
    assert_eq!(
        h.call(Method::POST, "/orgs/acme/projects", &read_only, &[])
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    // replace: an IdP that issues no API scopes; the grants alone decide.
    let h = Harness::with(Options {
        issuer_extra: "    combine: replace".into(),
        ..scenario(&["organizations.yaml"])
    })
    .await;
    let no_scopes = h.token("openid profile");
    assert_eq!(
        minted(&h.get("/orgs/acme/projects", &no_scopes).await)["scope"],
        "delete:projects read:projects write:projects"
    );
    assert_eq!(
        minted(&h.get("/orgs/globex/projects", &no_scopes).await)["scope"],
        "read:projects"
    );
}

#[tokio::test]
async fn the_minted_exp_never_exceeds_the_original() {
    let h = Harness::with(scenario(&["organizations.yaml"])).await;
    // A token with 30 s left, on a route whose ttl is 5 m.
    let mut c = h.claims(ALICE_PROJECTS);
    let exp = now() + 30;
    c["exp"] = json!(exp);
    let m = minted(&h.get("/orgs/acme/projects", &h.sign("ec", &c)).await);
    assert!(
        m["exp"].as_i64().unwrap() <= exp,
        "minted exp {} > original {exp}",
        m["exp"]
    );
    // A token with an hour left, on a route whose ttl is 1 m: the ttl wins.
    let token = h.token(ALICE_PROJECTS);
    let m = minted(
        &h.call(Method::DELETE, "/orgs/acme/projects/1", &token, &[])
            .await,
    );
    let lifetime = m["exp"].as_i64().unwrap() - m["iat"].as_i64().unwrap();
    assert!((59..=60).contains(&lifetime), "lifetime {lifetime}");
}

#[tokio::test]
async fn public_routes_forward_no_authorization_at_all() {
    let h = Harness::start().await;
    let a = h
        .call(Method::GET, "/public", &h.token("read:builds"), &[])
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.json()["headers"].get("authorization").is_none(),
        "a token scopegate did not mint never goes upstream"
    );
}

#[tokio::test]
async fn minted_tokens_are_reused_from_a_bounded_cache() {
    let mut o = scenario(&["organizations.yaml"]);
    o.limits = "limits: { mint_cache_entries: 5 }".into();
    let h = Harness::with(o).await;
    let token = h.token(ALICE_PROJECTS);
    let first =
        h.get("/orgs/acme/projects", &token).await.json()["headers"]["authorization"].clone();
    let second =
        h.get("/orgs/acme/projects", &token).await.json()["headers"]["authorization"].clone();
    assert_eq!(
        first, second,
        "the same caller, org and scopes reuse the minted token"
    );
    for i in 0..30 {
        let mut c = h.claims("read:builds");
        c["sub"] = json!(format!("user-{i}"));
        assert_eq!(
            h.get("/orgs/acme/builds", &h.sign("ec", &c)).await.status,
            StatusCode::OK
        );
    }
    let cached = h.gateway.cache_sizes().await.minted_tokens;
    assert!(
        (1..=5).contains(&cached),
        "mint cache holds {cached}, bound 5"
    );
}

#[tokio::test]
async fn key_rotation_old_tokens_verify_while_listed_and_new_tokens_use_the_new_key() {
    // Two replicas during a rolling rotation share the issuer name and the key files: the old
    // one signs with `old`; the new one signs with `new` and still publishes `old`.
    let dir = std::env::temp_dir().join(format!("scopegate-rotation-{}", std::process::id()));
    for kid in ["old", "new"] {
        let (ok, _, err) =
            crate::util::scopegate(&["keygen", "--kid", kid, "--out", dir.to_str().unwrap()]);
        assert!(ok, "{err}");
    }
    let signing =
        |keys: &str| format!("signing: {{ issuer: \"https://gw.example.com\", keys: [{keys}] }}");
    let key = |kid: &str| format!("{{ kid: {kid}, file: \"{}/{kid}.pem\" }}", dir.display());
    let before = Harness::with(Options {
        signing: Some(signing(&key("old"))),
        ..scenario(&["organizations.yaml"])
    })
    .await;
    let after = Harness::with(Options {
        signing: Some(signing(&format!("{}, {}", key("new"), key("old")))),
        ..scenario(&["organizations.yaml"])
    })
    .await;

    let old_token = before
        .get("/orgs/acme/projects", &before.token(ALICE_PROJECTS))
        .await
        .json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    let new_answer = after
        .get("/orgs/acme/projects", &after.token(ALICE_PROJECTS))
        .await
        .json();
    let new_token = new_answer["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(
        jsonwebtoken::decode_header(&old_token)
            .unwrap()
            .kid
            .as_deref(),
        Some("old")
    );
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .unwrap()
            .kid
            .as_deref(),
        Some("new"),
        "the first listed key signs"
    );

    // Both verify against the new replica's JWKS, fetched over HTTP.
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(
        after
            .client
            .send(
                Method::GET,
                &after.url("/.well-known/jwks.json"),
                &[],
                Default::default(),
            )
            .await
            .json(),
    )
    .unwrap();
    for token in [&old_token, &new_token] {
        let kid = jsonwebtoken::decode_header(token).unwrap().kid.unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(jwks.find(&kid).unwrap()).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_issuer(&["https://gw.example.com"]);
        v.set_audience(&["https://projects.example.com"]);
        jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
    }
}

#[tokio::test]
async fn organization_from_a_query_parameter_or_the_first_host_label() {
    let mut o = scenario(&["organizations.yaml"]);
    o.policy = r#"
routes:
  - name: by-query
    match: { method: GET, path: /projects }
    upstream: projects-api
    organization: { from: query, param: org }
    require: { scopes: [read:projects] }
    forward: { scopes: effective }
  - name: by-host
    match: { method: GET, path: /tenant/projects }
    upstream: projects-api
    organization: { from: host }
    require: { scopes: [read:projects] }
    forward: { scopes: effective }
"#
    .into();
    let h = Harness::with(o).await;
    let token = h.token(ALICE_PROJECTS);
    let acme = minted(&h.get("/projects?org=acme&x=1", &token).await);
    assert_eq!(
        (acme["org_id"].as_str(), acme["scope"].as_str()),
        (
            Some("acme"),
            Some("delete:projects read:projects write:projects")
        )
    );
    let globex = minted(&h.get("/projects?org=globex", &token).await);
    assert_eq!(globex["scope"], "read:projects");
    let a = h.get("/projects?org=acme&org=globex", &token).await;
    assert_eq!(
        (a.status, a.code()),
        (
            StatusCode::BAD_REQUEST,
            "organization_unresolved".to_string()
        ),
        "a repeated parameter is ambiguous"
    );
    let a = h.get("/projects?org=ac%20me", &token).await;
    assert_eq!(
        a.code(),
        "organization_unresolved",
        "an organization must be a plain identifier"
    );

    let by_host = h
        .call(
            Method::GET,
            "/tenant/projects",
            &token,
            &[("host", "globex.api.example.com")],
        )
        .await;
    let claims = minted(&by_host);
    assert_eq!(
        (claims["org_id"].as_str(), claims["scope"].as_str()),
        (Some("globex"), Some("read:projects"))
    );
    let a = h
        .call(
            Method::GET,
            "/tenant/projects",
            &token,
            &[("host", "localhost")],
        )
        .await;
    assert_eq!(
        a.code(),
        "organization_unresolved",
        "a host without a subdomain names no organization"
    );
}

//! The permissions backends behind their cache: coalescing, bounds, failures, hot reload.

use std::time::Duration;

use http::{Method, StatusCode};

use crate::util::perms::PermsApi;
use crate::util::{Harness, Options, scenario};

fn http_backend(api: &PermsApi, extra: &str) -> Options {
    let mut o = scenario(&["organizations.yaml"]);
    o.server_extra = format!(
        "permissions: {{ url: \"{}\", timeout: 500ms{extra} }}",
        api.url
    );
    o
}

/// GETs every path at once with `token`; the answers come from the returned tasks.
fn spawn_gets(
    h: &Harness,
    token: &str,
    paths: impl Iterator<Item = String>,
) -> Vec<tokio::task::JoinHandle<crate::util::Answer>> {
    paths
        .map(|path| {
            let (client, url, bearer) = (h.client.clone(), h.url(&path), format!("Bearer {token}"));
            tokio::spawn(async move {
                client
                    .send(
                        Method::GET,
                        &url,
                        &[("authorization", &bearer)],
                        Default::default(),
                    )
                    .await
            })
        })
        .collect()
}

#[tokio::test]
async fn concurrent_misses_for_one_key_make_one_backend_call() {
    let api = PermsApi::start().await;
    api.set_delay(Duration::from_millis(200));
    let h = Harness::with(http_backend(&api, "")).await;
    let token = h.token("read:projects");
    let tasks = spawn_gets(
        &h,
        &token,
        (0..100).map(|_| "/orgs/acme/projects".to_string()),
    );
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(
        api.calls(),
        1,
        "100 concurrent requests for one (subject, org) share one backend call"
    );
    let metrics = String::from_utf8_lossy(&h.admin_get("/metrics").await.body).into_owned();
    assert!(
        metrics.contains(r#"scopegate_permissions_lookups_total{result="miss"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn not_a_member_answers_are_cached_briefly() {
    let api = PermsApi::start().await;
    let h = Harness::with(http_backend(&api, ", negative_ttl: 300ms")).await;
    let token = h.token("read:projects");
    for _ in 0..3 {
        assert_eq!(
            h.get("/orgs/initech/projects", &token).await.code(),
            "not_member"
        );
    }
    assert_eq!(api.calls(), 1);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        h.get("/orgs/initech/projects", &token).await.code(),
        "not_member"
    );
    assert_eq!(api.calls(), 2, "the negative answer expired");
}

#[tokio::test]
async fn backend_down_with_deny_is_503_with_retry_after() {
    let api = PermsApi::start().await;
    api.set_down(true);
    let h = Harness::with(http_backend(&api, "")).await;
    let a = h
        .get("/orgs/acme/projects", &h.token("read:projects"))
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.code(), "permissions_unavailable");
    assert_eq!(a.header("retry-after"), "5");
}

#[tokio::test]
async fn backend_down_with_stale_serves_the_last_answer_up_to_the_bound() {
    let api = PermsApi::start().await;
    let h = Harness::with(http_backend(
        &api,
        ", max_ttl: 100ms, on_error: stale, stale_for: 1500ms",
    ))
    .await;
    let token = h.token("read:projects");
    assert_eq!(
        h.get("/orgs/acme/projects", &token).await.status,
        StatusCode::OK
    );
    api.set_down(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = h.get("/orgs/acme/projects", &token).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "served stale while the backend is down"
    );
    assert!(
        api.calls() >= 2,
        "the fresh entry had expired, so the backend was tried"
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let a = h.get("/orgs/acme/projects", &token).await;
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "too old to serve"
    );
    // A key never seen is denied at once.
    assert_eq!(
        h.get("/orgs/globex/projects", &token).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn a_backend_slower_than_the_timeout_is_503() {
    let api = PermsApi::start().await;
    api.set_delay(Duration::from_millis(1500));
    let h = Harness::with(http_backend(&api, "")).await;
    let started = std::time::Instant::now();
    let a = h
        .get("/orgs/acme/projects", &h.token("read:projects"))
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "answered at the 500 ms timeout, not after the backend"
    );
}

#[tokio::test]
async fn the_permissions_cache_is_bounded() {
    let api = PermsApi::start().await;
    let h = Harness::with(http_backend(&api, ", cache_entries: 5")).await;
    let token = h.token("read:projects");
    for i in 0..30 {
        assert_eq!(
            h.get(&format!("/orgs/open-{i}/projects"), &token)
                .await
                .status,
            StatusCode::OK
        );
    }
    let cached = h.gateway.cache_sizes().await.permissions;
    assert!(
        (1..=5).contains(&cached),
        "permissions cache holds {cached}, bound 5"
    );
}

#[tokio::test]
async fn the_file_backend_reloads_and_keeps_the_last_good_data() {
    let dir = std::env::temp_dir().join(format!("scopegate-perms-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("orgs.yaml");
    std::fs::write(
        &data,
        "organizations:\n  acme:\n    members:\n      bob: { roles: [project-viewer] }\n",
    )
    .unwrap();
    let mut o = scenario(&["organizations.yaml"]);
    o.server_extra = format!("permissions: {{ files: [\"{}\"] }}", data.display());
    let h = Harness::with(o).await;
    let token = h.token("read:projects");
    assert_eq!(
        h.get("/orgs/acme/projects", &token).await.code(),
        "not_member"
    );

    std::fs::write(
        &data,
        "organizations:\n  acme:\n    members:\n      alice: { roles: [project-viewer] }\n",
    )
    .unwrap();
    let allowed =
        wait_for(|| async { h.get("/orgs/acme/projects", &token).await.status == StatusCode::OK })
            .await;
    assert!(allowed, "the change was picked up");

    std::fs::write(&data, "organizations: [this is: not valid").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        h.get("/orgs/acme/projects", &token).await.status,
        StatusCode::OK,
        "a broken file keeps the last good data"
    );
}

/// Polls `f` for up to 6 s.
async fn wait_for<F, Fut>(f: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..60 {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Regression: the file backend ignored the issuer and minted tokens carried only `sub`, so a
/// second (partner) IdP's `alice` got corp-alice's grants and the upstream could not tell them
/// apart. Identity is (issuer, subject): in the data, in the backend query and in `sub_id`.
#[tokio::test]
async fn the_same_sub_from_another_issuer_is_another_person() {
    use jsonwebtoken::Algorithm;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let partner = scopegate::dev_issuer::DevIssuer::start(stopped)
        .await
        .unwrap();
    partner.add_key("p", Algorithm::ES256).unwrap();
    let data = std::env::temp_dir().join(format!(
        "scopegate-issuers-{}-{}.yaml",
        std::process::id(),
        crate::util::closed_port().port()
    ));
    // The scenario gateway with `data` as its file backend and the partner IdP as a second issuer.
    let two_issuers = |text: &str| {
        std::fs::write(&data, text).unwrap();
        let mut o = scenario(&["organizations.yaml"]);
        o.server_extra = format!("permissions: {{ files: [\"{}\"] }}", data.display());
        o.issuers_extra = format!(
            "  partner:\n    issuer: {}\n    jwks_url: {}\n    algorithms: [ES256]\n    audiences: [api]\n",
            partner.url,
            partner.jwks_url()
        );
        o
    };
    let o = two_issuers(
        "issuer: test\norganizations:\n  acme:\n    members:\n      alice: { roles: [project-admin] }\n",
    );
    let h = Harness::with(o).await;
    let corp = h
        .get("/orgs/acme/projects", &h.token("read:projects"))
        .await;
    corp.expect_status(StatusCode::OK);
    let claims = &corp.json()["token_claims"];
    assert_eq!(claims["sub"], "alice");
    assert_eq!(
        claims["sub_id"],
        serde_json::json!({"format": "iss_sub", "iss": h.issuer.url, "sub": "alice"})
    );
    let mut c = h.claims("read:projects");
    c["iss"] = partner.url.clone().into();
    let partner_alice = partner.sign("p", &c).unwrap();
    let a = h.get("/orgs/acme/projects", &partner_alice).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text());
    assert_eq!(a.code(), "not_member");

    // With two issuers, a data file must say whose users it lists.
    let o = two_issuers("organizations:\n  acme:\n    members:\n      alice: {}\n");
    let text = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\npolicies: []\nsigning: {{ issuer: \"http://127.0.0.1:1\", keys: [{{ kid: k, generate: true }}] }}\n{}\nissuers:\n  test: {{ issuer: \"{}\", jwks_url: \"{}\", audiences: [api] }}\n{}\nupstreams: {{}}\n",
        o.server_extra,
        h.issuer.url,
        h.issuer.jwks_url(),
        o.issuers_extra
    );
    let err = scopegate::config::from_sources(
        &scopegate::config::Source {
            path: "scopegate.yaml".into(),
            text,
        },
        &crate::util::repo(),
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`issuer:` is required"), "{err}");
    let _ = std::fs::remove_file(&data);
}

/// Regression (amplification): one valid token naming 200 random organizations made 87
/// backend calls and pushed a legitimate member to 503. Each caller has a budget of cache
/// misses; over it, 429 with Retry-After, and other callers keep their backend slots.
#[tokio::test]
async fn one_caller_naming_many_organizations_cannot_take_the_backend() {
    let api = PermsApi::start().await;
    api.set_delay(Duration::from_millis(300));
    let h = Harness::with(http_backend(
        &api,
        ", max_concurrency: 4, miss_budget: { burst: 5, per_second: 1, concurrency: 2 }",
    ))
    .await;
    let mut c = h.claims("read:projects");
    c["sub"] = "mallory".into();
    let mallory = h.sign("ec", &c);
    let attack = spawn_gets(
        &h,
        &mallory,
        (0..40).map(|i| format!("/orgs/org{i}/projects")),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let alice = h
        .get("/orgs/acme/projects", &h.token("read:projects"))
        .await;
    alice.expect_status(StatusCode::OK);
    let mut throttled = 0;
    for t in attack {
        let a = t.await.unwrap();
        if a.status == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
            assert!(a.header("retry-after").parse::<u64>().unwrap() >= 1);
            assert_eq!(a.code(), "too_many_lookups");
        } else {
            assert_eq!(a.status, StatusCode::FORBIDDEN, "not a member");
        }
    }
    assert!(throttled >= 35, "only {throttled} of 40 were throttled");
    assert!(api.calls() <= 6, "{} backend calls", api.calls());
}

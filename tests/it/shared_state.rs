//! Shared state in Redis, with two replicas on one real Redis: revocation (RFC 7009 and the
//! admin API), limited-use tokens, shared limits, and Redis stopped mid-run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use scopegate::serve::Running;
use serde_json::json;

use crate::exchange::{BOUND, FORM, basic, callback, exchange, form, user_token};
use crate::util::redis::Redis;
use crate::util::{Answer, CLIENT_SECRET, Harness, Options, now, scenario};

/// A signing key both replicas load, so each accepts the other's exchanged tokens.
fn signing_key(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("scopegate-state-{name}-{}", std::process::id()));
    let (ok, _, err) =
        crate::util::scopegate(&["keygen", "--kid", "k", "--out", dir.to_str().unwrap()]);
    assert!(ok, "{err}");
    let file: PathBuf = dir.join("k.pem");
    format!(
        "signing: {{ issuer: \"https://gw.example.com\", keys: [{{ kid: k, file: \"{}\" }}] }}",
        file.display()
    )
}

/// Seeds 01 and 02 with the file backend, token exchange and `state.redis`; `edit` changes the
/// server file's extra text (the `permissions:` line, say).
fn options(redis: &Redis, name: &str, uses: bool, edit: &dyn Fn(String) -> String) -> Options {
    let mut o = scenario(&["builds.yaml", "organizations.yaml"]);
    if uses {
        for (_, text) in &mut o.more_policies {
            *text = text.replace("    max_ttl: 6h\n", "    max_ttl: 6h\n    uses: 1\n");
        }
        assert!(o.more_policies.iter().any(|(_, t)| t.contains("uses: 1")));
    }
    o.server_extra = edit(format!(
        "{}\nstate: {{ redis: {{ url: \"{}\" }} }}",
        o.server_extra,
        redis.url()
    ));
    o.signing = Some(signing_key(name));
    o
}

/// Two replicas of the same configuration.
async fn replicas(o: &Options) -> (Harness, Running) {
    let a = Harness::with(o.clone()).await;
    let b = a.replica(o).await;
    (a, b)
}

/// `method path` with `token` on the replica at `on`.
async fn call(h: &Harness, on: &Running, method: Method, path: &str, token: &str) -> Answer {
    let url = format!("http://{}{path}", on.proxy_addr);
    h.client
        .send(
            method,
            &url,
            &[("authorization", &format!("Bearer {token}"))],
            Bytes::new(),
        )
        .await
}

/// Polls until `check` holds, within `limit`; returns how long it took.
async fn within<F: std::future::Future<Output = bool>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> Duration {
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn admin_post(h: &Harness, on: &Running, query: &[(&str, &str)]) -> Answer {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(k, v);
    }
    let url = format!("http://{}/revoke?{}", on.admin_addr, q.finish());
    h.client.send(Method::POST, &url, &[], Bytes::new()).await
}

async fn revoke_endpoint(h: &Harness, client: (&str, &str), token: &str) -> Answer {
    h.client
        .send(
            Method::POST,
            &h.url("/oauth2/revoke"),
            &[FORM, ("authorization", &basic(client.0, client.1))],
            form(&[("token", token), ("token_type_hint", "access_token")]),
        )
        .await
}

#[tokio::test]
async fn a_token_revoked_on_one_replica_is_refused_on_the_other_within_a_second() {
    let redis = Redis::start();
    let o = options(&redis, "revoke", false, &|s| s);
    let (a, b) = replicas(&o).await;
    let callback_token = callback(&a, &user_token(&a, 300)).await;
    for on in [&a.gateway, &b] {
        let r = call(&a, on, Method::PUT, "/builds/42", &callback_token).await;
        r.expect_status(StatusCode::OK);
    }
    let discovery = a
        .client
        .get(&a.url("/.well-known/openid-configuration"), &[])
        .await;
    assert_eq!(
        discovery.json()["revocation_endpoint"],
        "https://gw.example.com/oauth2/revoke"
    );

    // Only the client the token was issued to may revoke it; nonsense is a quiet 200.
    let stranger = revoke_endpoint(&a, ("builds-api", "wrong"), &callback_token).await;
    stranger.expect_status(StatusCode::UNAUTHORIZED);
    let idp_token = a.token("read:builds");
    let not_issued = revoke_endpoint(&a, ("builds-api", CLIENT_SECRET), &idp_token).await;
    not_issued.expect_status(StatusCode::BAD_REQUEST);
    assert_eq!(not_issued.json()["error"], "unauthorized_client");
    revoke_endpoint(&a, ("builds-api", CLIENT_SECRET), "not-a-token")
        .await
        .expect_status(StatusCode::OK);
    call(&a, &b, Method::PUT, "/builds/42", &callback_token)
        .await
        .expect_status(StatusCode::OK);

    let revoked = revoke_endpoint(&a, ("builds-api", CLIENT_SECRET), &callback_token).await;
    revoked.expect_status(StatusCode::OK);
    let took = within(Duration::from_secs(1), "replica b refuses", || async {
        let r = call(&a, &b, Method::PUT, "/builds/42", &callback_token).await;
        r.status == StatusCode::UNAUTHORIZED && r.code() == "token_revoked"
    })
    .await;
    eprintln!("revocation reached the other replica in {took:?}");
    let here = call(&a, &a.gateway, Method::PUT, "/builds/42", &callback_token).await;
    here.expect_status(StatusCode::UNAUTHORIZED);
    assert!(here.header("www-authenticate").contains("invalid_token"));
    assert_eq!(here.code(), "token_revoked");

    // A replica started after the revocation learns it when it subscribes.
    let late = a.replica(&o).await;
    let r = call(&a, &late, Method::PUT, "/builds/42", &callback_token).await;
    assert_eq!(r.code(), "token_revoked");
    let metrics = crate::util::metrics(a.gateway.admin_addr).await;
    assert!(
        metrics.contains("scopegate_revocations_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("scopegate_state_up 1"));
}

#[tokio::test]
async fn the_admin_api_revokes_a_user_everywhere_or_within_one_organization() {
    let redis = Redis::start();
    let (a, b) = replicas(&options(&redis, "admin", false, &|s| s)).await;
    let mut claims = a.claims("read:projects");
    claims["iat"] = json!(now() - 5);
    claims["jti"] = json!("idp-token-1");
    let token = a.sign("ec", &claims);
    for org in ["acme", "globex"] {
        let r = call(
            &a,
            &b,
            Method::GET,
            &format!("/orgs/{org}/projects"),
            &token,
        )
        .await;
        r.expect_status(StatusCode::OK);
    }
    let issuer = a.issuer.url.clone();

    // Within one organization: that organization's requests only.
    let r = admin_post(
        &a,
        &b,
        &[("iss", &issuer), ("sub", "alice"), ("org", "acme")],
    )
    .await;
    r.expect_status(StatusCode::OK);
    assert_eq!(r.json()["kind"], "subject");
    within(Duration::from_secs(1), "acme refused on a", || async {
        let r = call(&a, &a.gateway, Method::GET, "/orgs/acme/projects", &token).await;
        r.code() == "token_revoked"
    })
    .await;
    call(&a, &a.gateway, Method::GET, "/orgs/globex/projects", &token)
        .await
        .expect_status(StatusCode::OK);

    // Everywhere: every token alice holds now, on every replica; a token issued later works.
    // A held token cannot be laundered through token exchange either.
    let user = user_token(&a, 300);
    exchange(&a, &user, &BOUND)
        .await
        .expect_status(StatusCode::OK);
    let r = admin_post(&a, &a.gateway, &[("iss", &issuer), ("sub", "alice")]).await;
    r.expect_status(StatusCode::OK);
    let before = r.json()["before"].as_i64().unwrap();
    within(Duration::from_secs(1), "globex refused on b", || async {
        let r = call(&a, &b, Method::GET, "/orgs/globex/projects", &token).await;
        r.code() == "token_revoked"
    })
    .await;
    let laundered = exchange(&a, &user, &BOUND).await;
    laundered.expect_status(StatusCode::BAD_REQUEST);
    assert_eq!(laundered.json()["error"], "invalid_grant");
    while now() <= before {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut later = a.claims("read:projects");
    later["iat"] = json!(now());
    let fresh = a.sign("ec", &later);
    call(&a, &b, Method::GET, "/orgs/globex/projects", &fresh)
        .await
        .expect_status(StatusCode::OK);
    // Another subject of the same issuer is untouched.
    let mut carol = a.claims("read:projects");
    carol["sub"] = json!("carol");
    carol["iat"] = json!(now() - 5);
    call(
        &a,
        &b,
        Method::GET,
        "/orgs/acme/projects",
        &a.sign("ec", &carol),
    )
    .await
    .expect_status(StatusCode::OK);

    // One token by its jti.
    let mut one = a.claims("read:projects");
    one["sub"] = json!("carol");
    one["jti"] = json!("carol-1");
    let carols = a.sign("ec", &one);
    call(&a, &b, Method::GET, "/orgs/acme/projects", &carols)
        .await
        .expect_status(StatusCode::OK);
    admin_post(&a, &a.gateway, &[("jti", "carol-1")])
        .await
        .expect_status(StatusCode::OK);
    within(
        Duration::from_secs(1),
        "carol's token refused on b",
        || async {
            let r = call(&a, &b, Method::GET, "/orgs/acme/projects", &carols).await;
            r.code() == "token_revoked"
        },
    )
    .await;
    admin_post(&a, &b, &[("sub", "alice")])
        .await
        .expect_status(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_one_time_token_is_accepted_exactly_once_across_replicas() {
    let redis = Redis::start();
    let (a, b) = replicas(&options(&redis, "uses", true, &|s| s)).await;
    let once = callback(&a, &user_token(&a, 300)).await;
    assert_eq!(crate::util::jwt_claims(&once)["max_uses"], 1);
    let attempts = (0..100).map(|i| {
        let on = if i % 2 == 0 { &a.gateway } else { &b };
        call(&a, on, Method::PUT, "/builds/42", &once)
    });
    let answers = futures_util::future::join_all(attempts).await;
    let accepted = answers
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let used_up = answers
        .iter()
        .filter(|r| r.code() == "token_used_up")
        .count();
    assert_eq!((accepted, used_up), (1, 99));
    // Exchanging it is a use too: a spent one-time token cannot be multiplied.
    let multiplied = exchange(&a, &once, &BOUND).await;
    multiplied.expect_status(StatusCode::BAD_REQUEST);
    assert!(
        multiplied.json()["error_description"]
            .as_str()
            .unwrap()
            .contains("used")
    );

    // A second token of the same rule has its own count.
    let another = callback(&a, &user_token(&a, 300)).await;
    call(&a, &b, Method::PUT, "/builds/42", &another)
        .await
        .expect_status(StatusCode::OK);
    let again = call(&a, &a.gateway, Method::PUT, "/builds/42", &another).await;
    again.expect_status(StatusCode::UNAUTHORIZED);
    assert_eq!(again.code(), "token_used_up");
}

#[tokio::test]
async fn redis_stopped_mid_run_fails_closed_and_service_resumes_when_it_returns() {
    let mut redis = Redis::start();
    let (a, b) = replicas(&options(&redis, "down", true, &|s| s)).await;
    let once = callback(&a, &user_token(&a, 300)).await;
    call(&a, &b, Method::PUT, "/builds/42", &once)
        .await
        .expect_status(StatusCode::OK);
    let token = a.token("read:projects");
    call(&a, &a.gateway, Method::GET, "/orgs/acme/projects", &token)
        .await
        .expect_status(StatusCode::OK);

    redis.stop();
    // A token not checked yet, and one checked over a second ago with the channel down: both
    // need Redis, which is down: 503, never an allow.
    let fresh = a.sign("ec", &a.claims("read:projects"));
    let down = call(&a, &a.gateway, Method::GET, "/orgs/acme/projects", &fresh).await;
    down.expect_status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.code(), "state_unavailable");
    assert!(!down.header("retry-after").is_empty());
    // Within a second of the channel's loss; the bound is loose because the echo upstream may
    // stall on its own key fetches.
    within(
        Duration::from_secs(10),
        "the checked token is re-checked",
        || async {
            let r = call(&a, &a.gateway, Method::GET, "/orgs/acme/projects", &token).await;
            r.status == StatusCode::SERVICE_UNAVAILABLE
        },
    )
    .await;
    let another = a.sign("ec", &a.claims("read:projects"));
    let r = call(&a, &b, Method::GET, "/orgs/acme/projects", &another).await;
    assert_eq!(r.code(), "state_unavailable");
    let ready = a.admin_get("/readyz").await;
    ready.expect_status(StatusCode::OK);
    assert!(ready.text().contains("unavailable"), "{}", ready.text());
    let metrics = crate::util::metrics(a.gateway.admin_addr).await;
    assert!(metrics.contains("scopegate_state_up 0"), "{metrics}");
    assert!(metrics.contains("scopegate_state_failures_total{feature=\"revocation\"}"));

    redis.restart();
    let took = within(Duration::from_secs(10), "service resumes", || async {
        let r = call(&a, &b, Method::GET, "/orgs/acme/projects", &another).await;
        r.status == StatusCode::OK
    })
    .await;
    eprintln!("service resumed {took:?} after Redis returned");
    // What Redis kept holds: the one-time token stays spent.
    let r = call(&a, &a.gateway, Method::PUT, "/builds/42", &once).await;
    assert_eq!(r.code(), "token_used_up");
}

#[tokio::test]
async fn an_idp_token_may_pass_unchecked_while_redis_is_down_if_configured_but_a_one_time_token_never()
 {
    let mut redis = Redis::start();
    let allow = |s: String| s.replace("redis: {", "redis: { idp_tokens_when_unavailable: allow,");
    let h = Harness::with(options(&redis, "allow", true, &allow)).await;
    let once = callback(&h, &user_token(&h, 300)).await;
    redis.stop();
    h.get("/orgs/acme/projects", &h.token("read:projects"))
        .await
        .expect_status(StatusCode::OK);
    let r = h.call(Method::PUT, "/builds/42", &once, &[]).await;
    r.expect_status(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "state_unavailable");
    let metrics = crate::util::metrics(h.gateway.admin_addr).await;
    assert!(metrics.contains("scopegate_state_failures_total{feature=\"revocation_allowed\"}"));
}

#[tokio::test]
async fn limits_count_across_replicas() {
    let redis = Redis::start();
    let budget = |s: String| {
        s.replace(
            "permissions: { files:",
            "permissions: { miss_budget: { per_second: 0.1, burst: 2 }, files:",
        )
    };
    let o = options(&redis, "limits", false, &budget);
    assert!(o.server_extra.contains("miss_budget"));
    let (a, b) = replicas(&o).await;

    // Failed client authentication: 10 a minute per address, wherever they land.
    for i in 0..10 {
        let url = if i % 2 == 0 {
            a.url("/oauth2/token")
        } else {
            format!("http://{}/oauth2/token", b.proxy_addr)
        };
        let r = a
            .client
            .send(
                Method::POST,
                &url,
                &[FORM, ("authorization", &basic("builds-api", "wrong"))],
                form(&[("grant_type", "x")]),
            )
            .await;
        r.expect_status(StatusCode::UNAUTHORIZED);
    }
    let r = revoke_endpoint(&a, ("builds-api", CLIENT_SECRET), "x").await;
    r.expect_status(StatusCode::TOO_MANY_REQUESTS);
    assert!(!r.header("retry-after").is_empty());

    // The permissions miss budget: a burst of 2 misses per caller, shared.
    let token = a.token("read:projects");
    for (on, org) in [(&a.gateway, "o1"), (&b, "o2")] {
        let r = call(
            &a,
            on,
            Method::GET,
            &format!("/orgs/{org}/projects"),
            &token,
        )
        .await;
        r.expect_status(StatusCode::FORBIDDEN);
    }
    let r = call(&a, &a.gateway, Method::GET, "/orgs/o3/projects", &token).await;
    r.expect_status(StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = r.header("retry-after").parse().unwrap();
    assert!((1..=20).contains(&wait), "retry after {wait}s");
}

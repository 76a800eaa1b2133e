use std::time::Duration;

use serde_json::{Map, Value, json};

use super::*;

const SECRET: &str = "a-long-enough-client-secret";

fn config() -> ExchangeConfig {
    ExchangeConfig {
        clients: [("job".to_string(), secret_hash(SECRET.as_bytes()))].into(),
        rules: vec![Rule {
            name: "callback".into(),
            client: "job".into(),
            audience: "https://builds".into(),
            scopes: vec!["update".into()],
            max_ttl: Duration::from_secs(3600),
            bind: Some(Bind::new("/builds/{id}").unwrap()),
            bind_methods: Some(vec!["PUT".into()]),
            uses: None,
        }],
        max_act_depth: 2,
        max_auth_failures_per_minute: 3,
    }
}

fn subject(claims: Value) -> Principal {
    Principal {
        scopes: vec!["read".into(), "update".into()].into(),
        ..Principal::for_tests(claims, 300)
    }
}

fn form(fields: &[(&str, &str)]) -> Form {
    let mut f = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        f.append_pair(k, v);
    }
    Form::parse(f.finish().as_bytes())
}

const BOUND: [(&str, &str); 1] = [("resource", "https://api.example/builds/42")];

fn grant(claims: Value, fields: &[(&str, &str)]) -> Result<Map<String, Value>, ExchangeError> {
    config()
        .grant("job", &subject(claims), &form(fields))
        .map(|g| g.claims)
}

#[test]
fn an_exchanged_token_is_narrow_bound_and_names_its_actor() {
    let c = grant(json!({"azp": "web"}), &BOUND).unwrap();
    assert_eq!(c["scope"], "update");
    assert_eq!(c["aud"], "https://builds");
    assert_eq!(c["act"], json!({"sub": "job"}));
    assert_eq!(c["bound_path"], "/builds/42");
    assert_eq!(c["bound_methods"], json!(["PUT"]));
    assert_eq!(c["client_id"], "web");
    assert_eq!(c["sub_id"]["iss"], "https://idp.example");
    assert_eq!(c["token_use"], EXCHANGE_TOKEN_USE);
}

#[test]
fn a_bound_subject_keeps_its_binding() {
    let bound = json!({"bound_path": "/builds/42", "resource": "https://api.example/builds/42"});
    assert!(
        grant(bound.clone(), &BOUND).is_ok(),
        "the same resource again"
    );
    let other = grant(bound, &[("resource", "https://api.example/builds/43")]).unwrap_err();
    assert_eq!(other.code, "invalid_target");
}

#[test]
fn the_act_chain_is_bounded() {
    let deep = json!({"act": {"sub": "a", "act": {"sub": "b"}}});
    assert_eq!(grant(deep, &BOUND).unwrap_err().code, "invalid_grant");
    assert!(grant(json!({"act": {"sub": "a"}}), &BOUND).is_ok());
}

#[test]
fn scopes_beyond_the_rule_or_the_subject_are_refused_without_echoing_them() {
    for scope in ["read", "admin-INJECTED"] {
        let e = grant(json!({}), &[BOUND[0], ("scope", scope)]).unwrap_err();
        assert_eq!(e.code, "invalid_scope");
        assert!(!e.description.contains(scope), "{}", e.description);
    }
}

#[test]
fn clients_authenticate_with_one_method_and_the_right_secret() {
    let config = config();
    let headers = |v: &str| {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        h
    };
    use base64::Engine;
    let basic = |id: &str, secret: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
        )
    };
    assert_eq!(
        config
            .authenticate(&headers(&basic("job", SECRET)), &Form::default())
            .unwrap(),
        "job"
    );
    let wrong = config.authenticate(
        &headers(&basic("job", "nope-nope-nope-nope")),
        &Form::default(),
    );
    assert_eq!(wrong.unwrap_err().code, "invalid_client");
    let post = form(&[("client_id", "job"), ("client_secret", SECRET)]);
    assert!(config.authenticate(&http::HeaderMap::new(), &post).is_ok());
    let both = config.authenticate(&headers(&basic("job", SECRET)), &post);
    assert_eq!(both.unwrap_err().code, "invalid_request");
}

#[test]
fn failed_authentications_are_counted_per_address() {
    let failures = AuthFailures::new(3);
    let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    assert!(!failures.record(a));
    assert!(!failures.record(a));
    assert!(!failures.blocked(a));
    assert!(
        failures.record(a),
        "the third failure reaches the limit (logged once)"
    );
    assert!(failures.blocked(a));
    assert!(!failures.record(a), "beyond the limit: not logged again");
    assert!(!failures.blocked(b), "another address has its own count");
}

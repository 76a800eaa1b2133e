//! `state: { redis: … }`: TLS wherever someone could sit on the path, no password in errors, and
//! `uses:` only where something counts the uses.

use super::{POLICY, assert_error, load, one_error, server_with};

fn with(redis: &str) -> String {
    server_with(&format!("state: {{ redis: {redis} }}\n"))
}

#[test]
fn a_loopback_redis_is_accepted_and_a_remote_one_needs_tls() {
    for url in [
        "redis://127.0.0.1:6379",
        "redis://:secret@localhost:6379/2",
        "redis+unix:///run/redis/redis.sock",
        "rediss://redis.example.com:6380",
    ] {
        let text = with(&format!("{{ url: \"{url}\", key_prefix: \"prod:\" }}"));
        let config = load(&text, &[("policy.yaml", POLICY)]);
        assert!(config.is_ok(), "{url} should be accepted: {config:?}");
    }
    let remote = "redis://:hunter2@redis.example.com:6379";
    let e = one_error(
        &with(&format!("{{ url: \"{remote}\" }}")),
        &[("policy.yaml", POLICY)],
    );
    assert_error(
        &e,
        "scopegate.yaml",
        12,
        "not loopback would be reached without TLS",
    );
    assert!(!e.to_string().contains("hunter2"), "no password: {e}");
    let flagged = with(&format!(
        "{{ url: \"{remote}\", insecure_plaintext: true }}"
    ));
    let config = load(&flagged, &[("policy.yaml", POLICY)]).unwrap();
    assert_eq!(config.insecure_http, vec!["state".to_string()]);
}

#[test]
fn unchecked_certificates_and_tls_without_rediss_are_refused() {
    let e = one_error(
        &with("{ url: \"rediss://redis.example.com:6380/#insecure\" }"),
        &[("policy.yaml", POLICY)],
    );
    assert_error(&e, "scopegate.yaml", 12, "`#insecure`");
    let e = one_error(
        &with("{ url: \"redis://127.0.0.1:6379\", tls: { ca_file: ca.pem } }"),
        &[("policy.yaml", POLICY)],
    );
    assert_error(&e, "scopegate.yaml", 12, "not `rediss://`");
    let e = one_error(
        &with("{ url: \"http://redis\" }"),
        &[("policy.yaml", POLICY)],
    );
    assert_error(&e, "scopegate.yaml", 12, "not a Redis URL");
}

const EXCHANGE: &str = "exchange: { clients: { job: { secret_env: PATH } } }\n";

fn policy_with_uses(uses: u32) -> String {
    format!(
        "{POLICY}exchange:\n  - name: callback\n    client: job\n    audience: https://other.example.com\n    scopes: [update]\n    max_ttl: 1h\n    uses: {uses}\n"
    )
}

#[test]
fn uses_needs_shared_state_and_at_least_one_use() {
    let policy = policy_with_uses(1);
    let line = policy.lines().count();
    let e = one_error(&server_with(EXCHANGE), &[("policy.yaml", &policy)]);
    assert_error(&e, "policy.yaml", line, "`uses` needs shared state");
    let shared = format!("{EXCHANGE}state: {{ redis: {{ url: \"redis://127.0.0.1:6379\" }} }}\n");
    let config = load(&server_with(&shared), &[("policy.yaml", &policy)]).unwrap();
    let rules = &config.exchange.as_ref().unwrap().rules;
    assert_eq!(rules[0].uses, Some(1));
    let e = one_error(
        &server_with(&shared),
        &[("policy.yaml", &policy_with_uses(0))],
    );
    assert_error(&e, "policy.yaml", line, "`uses: 0`");
}

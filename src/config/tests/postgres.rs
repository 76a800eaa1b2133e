//! `permissions: { postgres: … }`: a parsed connection string, plaintext only to loopback or a
//! Unix socket unless the file says `insecure_plaintext: true`.

use super::{POLICY, assert_error, load, one_error, server_with};

fn with(postgres: &str) -> String {
    server_with(&format!("permissions: {{ postgres: {postgres} }}\n"))
}

#[test]
fn a_loopback_or_unix_socket_database_is_accepted() {
    for url in [
        "postgresql://scopegate:secret@127.0.0.1:5432/permissions",
        "postgresql://scopegate@localhost/permissions",
        "postgresql://scopegate@[::1]:5433/permissions",
        "host=/var/run/postgresql user=scopegate dbname=permissions",
    ] {
        let text = with(&format!("{{ url: \"{url}\", pool_size: 4 }}"));
        assert!(
            load(&text, &[("policy.yaml", POLICY)]).is_ok(),
            "{url} should be accepted"
        );
    }
}

#[test]
fn a_remote_database_without_tls_needs_the_explicit_flag() {
    let remote = "postgresql://scopegate:hunter2@db.example.com/permissions";
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
    assert!(
        !e.to_string().contains("hunter2"),
        "the password is never repeated: {e}"
    );
    let allowed = with(&format!(
        "{{ url: \"{remote}\", insecure_plaintext: true }}"
    ));
    let config = load(&allowed, &[("policy.yaml", POLICY)]).unwrap();
    assert_eq!(config.insecure_http, vec!["permissions".to_string()]);
    let tls = with(&format!("{{ url: \"{remote}\", tls: {{}} }}"));
    let config = load(&tls, &[("policy.yaml", POLICY)]).unwrap();
    assert!(config.insecure_http.is_empty(), "TLS is not plaintext");
}

#[test]
fn a_server_name_override_is_refused_towards_postgres() {
    let e = one_error(
        &with("{ url: \"postgresql://db.example.com/p\", tls: { server_name: db.internal } }"),
        &[("policy.yaml", POLICY)],
    );
    assert_error(&e, "scopegate.yaml", 12, "`server_name` is not supported");
}

#[test]
fn sslmode_require_and_bad_strings_are_refused_at_their_line() {
    for (url, text) in [
        (
            "postgresql://scopegate@127.0.0.1/p?sslmode=require",
            "`sslmode=require` needs a `tls:` block",
        ),
        (
            "postgresql://scopegate@127.0.0.1:notaport/p",
            "not a PostgreSQL connection string",
        ),
    ] {
        let e = one_error(
            &with(&format!("{{ url: \"{url}\" }}")),
            &[("policy.yaml", POLICY)],
        );
        assert_error(&e, "scopegate.yaml", 12, text);
    }
}

#[test]
fn two_backends_at_once_are_refused() {
    let text = server_with(
        "permissions: { url: \"http://127.0.0.1:9000/check\", postgres: { url: \"postgresql://127.0.0.1/p\" } }\n",
    );
    let e = one_error(&text, &[("policy.yaml", POLICY)]);
    assert_error(
        &e,
        "scopegate.yaml",
        12,
        "exactly one of `files`, `url` and `postgres`",
    );
}

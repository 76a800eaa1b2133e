//! Targets' `tls:` blocks and `insecure_http`: what loads, and each error at its line.

use std::path::PathBuf;

use super::{HEAD, ISSUER_TAIL, POLICY, assert_error, load, one_error, server_issuer, server_with};

/// A folder holding a CA (`ca.pem`), a client certificate it signed (`client.pem`,
/// `client-key.pem`) and a file that is not PEM (`junk.pem`).
fn files(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "scopegate-client-tls-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["scopegate".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), client.pem()).unwrap();
    std::fs::write(dir.join("client-key.pem"), client_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    dir
}

/// The server file with an upstream `secure` on line 7 whose `tls:` map is `tls`.
fn with_upstream_tls(tls: &str) -> String {
    let secure = format!("  secure: {{ url: \"https://127.0.0.1:8443\", tls: {tls} }}\nissuers:\n");
    format!("{}{ISSUER_TAIL}", HEAD.replacen("issuers:\n", &secure, 1))
}

#[test]
fn a_full_tls_block_loads() {
    let dir = files("full");
    let d = dir.display();
    let text = with_upstream_tls(&format!(
        "{{ ca_file: \"{d}/ca.pem\", ca_only: true, client_cert: \"{d}/client.pem\", client_key: \"{d}/client-key.pem\", server_name: api.internal, min_version: \"1.3\" }}"
    ));
    let config = load(&text, &[("policy.yaml", POLICY)]).unwrap();
    let tls = config.upstreams["secure"].tls.as_ref().unwrap();
    assert_eq!(
        tls.server_name.as_ref().map(|n| n.to_str().into_owned()),
        Some("api.internal".to_string())
    );
    assert!(tls.config.client_auth_cert_resolver.has_certs());
    assert!(config.upstreams["api"].tls.is_none());
}

#[test]
fn tls_errors_are_refused_at_their_line_with_a_hint() {
    let dir = files("errors");
    let d = dir.display();
    let cases = [
        (
            format!("{{ ca_file: \"{d}/missing.pem\" }}"),
            "no CA certificate can be read",
        ),
        (
            format!("{{ ca_file: \"{d}/junk.pem\" }}"),
            "no CA certificate can be read",
        ),
        (
            "{ ca_only: true }".to_string(),
            "`ca_only` without a `ca_file` trusts nothing",
        ),
        (
            format!("{{ client_cert: \"{d}/client.pem\" }}"),
            "needs both `client_cert` and `client_key`",
        ),
        (
            format!("{{ client_cert: \"{d}/client.pem\", client_key: \"{d}/ca.pem\" }}"),
            "no private key can be read",
        ),
        (
            "{ server_name: \"not a name!\" }".to_string(),
            "is not a DNS name or an IP address",
        ),
        (
            "{ min_version: \"1.1\" }".to_string(),
            "unknown variant `1.1`",
        ),
        ("{ ca_flie: x.pem }".to_string(), "unknown field `ca_flie`"),
    ];
    for (tls, message) in cases {
        let e = one_error(&with_upstream_tls(&tls), &[("policy.yaml", POLICY)]);
        assert_error(&e, "scopegate.yaml", 7, message);
        assert!(e.hint.is_some(), "{e}");
    }
}

#[test]
fn tls_on_a_plain_http_upstream_is_refused() {
    let text = with_upstream_tls("{}").replace("https://127.0.0.1:8443", "http://127.0.0.1:8080");
    let e = one_error(&text, &[("policy.yaml", POLICY)]);
    assert_error(
        &e,
        "scopegate.yaml",
        7,
        "sets `tls` but its URL is plain http",
    );
}

#[test]
fn insecure_http_allows_an_in_cluster_idp_and_names_it() {
    let remote = "    jwks_url: http://keycloak.auth.svc:8080/jwks.json\n    audiences: [api]\n";
    let e = one_error(&server_issuer(remote), &[("policy.yaml", POLICY)]);
    assert!(
        e.hint.as_deref().unwrap().contains("insecure_http: true"),
        "{e}"
    );
    let config = load(
        &server_issuer(&format!("{remote}    insecure_http: true\n")),
        &[("policy.yaml", POLICY)],
    )
    .unwrap();
    assert_eq!(config.insecure_http, ["issuer/corp"]);
    // On loopback it is not insecure: nothing to warn about.
    let local = "    jwks_url: http://127.0.0.1:9/jwks.json\n    audiences: [api]\n    insecure_http: true\n";
    assert!(
        load(&server_issuer(local), &[("policy.yaml", POLICY)])
            .unwrap()
            .insecure_http
            .is_empty()
    );
    // The permissions API too.
    let perms = "permissions: { url: \"http://perms.internal/check\", insecure_http: true }\n";
    let config = load(&server_with(perms), &[("policy.yaml", POLICY)]).unwrap();
    assert_eq!(config.insecure_http, ["permissions"]);
    let e = one_error(
        &server_with("permissions: { url: \"http://perms.internal/check\" }\n"),
        &[("policy.yaml", POLICY)],
    );
    assert_error(&e, "scopegate.yaml", 12, "is not an https URL");
}

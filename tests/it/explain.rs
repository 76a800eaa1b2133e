//! `scopegate explain` (why was this denied?) and policy tests run by `scopegate check`.

use std::path::PathBuf;

use crate::util::{repo, scopegate};

/// A server file in a fresh folder over `policies` (a folder or file path), with the
/// repository's permissions data and a generated signing key.
fn server(name: &str, policies: &std::path::Path) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("scopegate-explain-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), "a-long-enough-client-secret").unwrap();
    let data = repo().join("policies/data");
    let text = format!(
        "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\npolicies: [\"{}\"]\n\
         signing: {{ issuer: \"https://gw.example.com\", keys: [{{ kid: k, generate: true }}] }}\n\
         permissions: {{ files: [\"{d}/builds.yaml\", \"{d}/organizations.yaml\", \"{d}/countries.yaml\"] }}\n\
         exchange: {{ clients: {{ builds-api: {{ secret_file: secret }} }} }}\n\
         issuers:\n  corp: {{ issuer: \"https://idp.example.com/\", jwks_url: \"https://idp.example.com/jwks\", audiences: [api] }}\n\
         upstreams:\n  demo: {{ url: \"http://127.0.0.1:3000\" }}\n  builds-api: {{ url: \"http://127.0.0.1:3000\", audience: \"https://builds.example.com\" }}\n\
         \x20 projects-api: {{ url: \"http://127.0.0.1:3000\", audience: \"https://projects.example.com\" }}\n  shipments-api: {{ url: \"http://127.0.0.1:3000\" }}\n",
        policies.display(),
        d = data.display(),
    );
    let path = dir.join("scopegate.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn explain_shows_why_a_request_is_denied() {
    let config = server("why", &repo().join("policies"));
    let c = config.to_str().unwrap();
    let claims = r#"{"sub": "alice", "scope": "read:projects write:projects"}"#;
    let (ok, out, err) = scopegate(&[
        "explain",
        "--config",
        c,
        "--method",
        "POST",
        "--url",
        "/orgs/globex/projects",
        "--claims",
        claims,
    ]);
    assert!(!ok, "denied requests exit non-zero");
    for line in [
        "route          projects-create",
        "params         org=globex",
        "organization   globex",
        "decision       deny (403 insufficient_scope)",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}{err}");
    }
    // The same request, allowed in acme, shows the claims that would be minted.
    let (ok, out, _) = scopegate(&[
        "explain",
        "--config",
        c,
        "--method",
        "POST",
        "--url",
        "/orgs/acme/projects",
        "--claims",
        claims,
        "--json",
    ]);
    assert!(ok);
    let trace: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(trace["decision"], "allow");
    assert_eq!(
        trace["minted_claims"]["scope"],
        "read:projects write:projects"
    );
    assert_eq!(trace["minted_claims"]["org_id"], "acme");
    // Simulated grants, and "not a member".
    let (_, out, _) = scopegate(&[
        "explain",
        "--config",
        c,
        "--url",
        "/orgs/x/projects",
        "--claims",
        claims,
        "--grants",
        r#"{"roles": ["project-viewer"]}"#,
        "--json",
    ]);
    let trace: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            trace["decision"].as_str(),
            trace["effective_scopes"].clone()
        ),
        (Some("allow"), serde_json::json!(["read:projects"]))
    );
    let (_, out, _) = scopegate(&[
        "explain",
        "--config",
        c,
        "--url",
        "/orgs/x/projects",
        "--claims",
        claims,
        "--grants",
        "null",
    ]);
    assert!(out.contains("not_member"), "{out}");
}

#[test]
fn explain_names_the_near_misses_of_a_404() {
    let config = server("404", &repo().join("policies"));
    let (ok, out, _) = scopegate(&[
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--method",
        "PATCH",
        "--url",
        "/orgs/acme/projects",
    ]);
    assert!(!ok);
    assert!(out.contains("route          (none)"), "{out}");
    assert!(
        out.contains("near miss    projects-list: method PATCH is not GET"),
        "{out}"
    );
    assert!(
        out.contains("near miss    projects-create: method PATCH is not POST"),
        "{out}"
    );
}

#[test]
fn check_runs_policy_tests_and_fails_on_a_broken_expectation() {
    let config = server("tests", &repo().join("policies"));
    let (ok, out, err) = scopegate(&["check", "--config", config.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("7 policy tests"), "{out}");

    // A policy change that breaks an expectation: viewers may now create.
    let dir = std::env::temp_dir().join(format!("scopegate-explain-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = std::fs::read_to_string(repo().join("policies/organizations.yaml"))
        .unwrap()
        .replace(
            "project-viewer: [read:projects]",
            "project-viewer: [read:projects, write:projects]",
        );
    std::fs::write(dir.join("organizations.yaml"), policy).unwrap();
    let config = server("tests-broken", &dir.join("organizations.yaml"));
    let (ok, _, err) = scopegate(&["check", "--config", config.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("organizations.yaml:"), "{err}");
    assert!(err.contains("test `the same user is a viewer in globex and cannot create there` failed: expected deny, got allow"), "{err}");
    assert!(err.contains("1 of 5 policy tests failed"), "{err}");
}

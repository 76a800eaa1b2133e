//! `scopegate check`: the shipped configuration passes; each broken configuration fails with the
//! file, line and hint a user needs.

use crate::util::{repo, scopegate};

#[test]
fn the_example_config_and_every_shipped_policy_pass() {
    // The example expects its key from a Kubernetes Secret; make one with `keygen` and point a
    // copy of the example at it (and at the repository's policies).
    let dir = tempdir("deploy");
    let (ok, out, err) = scopegate(&[
        "keygen",
        "--alg",
        "ES256",
        "--kid",
        "scopegate-1",
        "--out",
        dir.join("keys").to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("kid: scopegate-1"), "{out}");
    let example = std::fs::read_to_string(repo().join("deploy/scopegate.yaml")).unwrap();
    let policies = repo().join("policies");
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(
        dir.join("secrets/builds-api"),
        "a-long-enough-client-secret\n",
    )
    .unwrap();
    let copy = example
        .replace("/etc/scopegate/", &format!("{}/", dir.display()))
        .replace("../policies", policies.to_str().unwrap());
    let server = dir.join("scopegate.yaml");
    std::fs::write(&server, copy).unwrap();
    let (ok, out, err) = scopegate(&["check", "--config", server.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains(": ok ("), "{out}");

    // Each policy file on its own, too.
    for entry in std::fs::read_dir(&policies).unwrap() {
        let policy = entry.unwrap().path();
        if policy.is_dir() {
            continue;
        }
        let server = dir.join("one.yaml");
        std::fs::write(
            &server,
            format!(
                "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}\npolicies: [\"{}\"]\n\
                 signing: {{ issuer: \"https://gw.example.com\", keys: [{{ kid: k, file: keys/scopegate-1.pem }}] }}\n\
                 permissions: {{ files: [\"{data}/builds.yaml\", \"{data}/organizations.yaml\", \"{data}/countries.yaml\"] }}\n\
                 exchange: {{ clients: {{ builds-api: {{ secret_file: secrets/builds-api }} }} }}\n\
                 issuers:\n  corp: {{ issuer: \"https://idp.example.com/\", jwks_url: \"https://idp.example.com/jwks\", audiences: [api] }}\n\
                 upstreams:\n  demo: {{ url: \"http://127.0.0.1:3000\" }}\n  builds-api: {{ url: \"http://127.0.0.1:3000\", audience: \"https://builds.example.com\" }}\n\
                 \x20 projects-api: {{ url: \"http://127.0.0.1:3000\" }}\n  shipments-api: {{ url: \"http://127.0.0.1:3000\" }}\n",
                policy.display(),
                data = policies.join("data").display(),
            ),
        )
        .unwrap();
        let (ok, _, err) = scopegate(&["check", "--config", server.to_str().unwrap()]);
        assert!(ok, "{}: {err}", policy.display());
    }
}

#[test]
fn keygen_refuses_to_overwrite_a_key() {
    let dir = tempdir("keygen");
    let out = dir.join("k");
    let args = [
        "keygen",
        "--alg",
        "EdDSA",
        "--kid",
        "ed-1",
        "--out",
        out.to_str().unwrap(),
    ];
    assert!(scopegate(&args).0);
    let (ok, _, err) = scopegate(&args);
    assert!(!ok);
    assert!(err.contains("cannot create"), "{err}");
    let pem = std::fs::read_to_string(out.join("ed-1.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("ed-1.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the private key is readable by its owner only"
        );
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("scopegate-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn broken_configs_fail_with_file_line_and_hint() {
    let cases: &[(&str, &[&str])] = &[
        (
            "unknown-field",
            &[
                "policies/builds.yaml:4:5: routes[0]: unknown field `upstrem`, expected one of",
                "hint: fix the spelling",
            ],
        ),
        (
            "undefined-upstream",
            &[
                "policies/builds.yaml:9:5: route `create-build` names upstream `builds`, which is not defined",
                "hint: defined upstreams: builds-api",
            ],
        ),
        (
            "bad-duration",
            &[
                "scopegate.yaml:8:5: `soon` is not a duration",
                "hint: write a duration like",
            ],
        ),
        (
            "duplicate-route",
            &[
                "policies/b.yaml:2:",
                "route name `list-builds` is used twice",
                "first defined at",
                "policies/a.yaml:2:",
            ],
        ),
        (
            "ambiguous-routes",
            &[
                "policies/orgs.yaml:6:",
                "route `org-by-name` (`/orgs/{name}`) is ambiguous with route `org-by-id` (`/orgs/{id}`)",
                "orgs.yaml:2:",
            ],
        ),
        (
            "hmac-algorithm",
            &[
                "scopegate.yaml:7:",
                "algorithm `HS256` is not allowed",
                "never `none` or HS*",
            ],
        ),
        (
            "missing-tls-files",
            &[
                "scopegate.yaml:11:",
                "cannot read a PEM certificate chain",
                "hint: point `tls.cert`",
            ],
        ),
        (
            "missing-ca-file",
            &[
                "scopegate.yaml:12:7:",
                "no CA certificate can be read from `/etc/scopegate/ca/missing-ca.crt`",
                "hint: point `ca_file` at a PEM file",
            ],
        ),
        (
            "plain-http-jwks",
            &[
                "scopegate.yaml:6:5:",
                "fetches keys over plain HTTP",
                "only for loopback",
            ],
        ),
        (
            "yaml-syntax",
            &[
                "policies/builds.yaml:4:5:",
                "did not find expected ',' or '}'",
            ],
        ),
        (
            "no-access-rule",
            &[
                "policies/builds.yaml:2:",
                "route `open-by-mistake` has neither `require` nor `public: true`",
            ],
        ),
        (
            "cors-policy",
            &[
                "scopegate.yaml:15:",
                "`allow_credentials: true` with the `*` origin",
                "hint: browsers refuse credentials for any origin",
                "policies/builds.yaml:8:",
                "`https://*.com` is not an origin",
                "policies/builds.yaml:9:",
                "the route does not match `POST`",
            ],
        ),
        (
            "websocket-without-get",
            &[
                "policies/chat.yaml:6:",
                "route `chat` accepts WebSocket upgrades but not GET",
                "hint: a WebSocket handshake is a GET",
            ],
        ),
        (
            "h2-over-plain-http",
            &[
                "scopegate.yaml:9:",
                "`protocol: h2` is HTTP/2 over TLS, but the upstream URL is `http://`",
                "hint: for a plain-text HTTP/2 (gRPC) server use `protocol: h2c`",
            ],
        ),
    ];
    let root = repo().join("tests/configs/broken");
    let mut seen = 0;
    for (case, expected) in cases {
        let (ok, _, err) = scopegate(&[
            "check",
            "--config",
            root.join(case).join("scopegate.yaml").to_str().unwrap(),
        ]);
        assert!(!ok, "{case}: check passed");
        for text in *expected {
            assert!(err.contains(text), "{case}: expected `{text}` in:\n{err}");
        }
        seen += 1;
    }
    // Every fixture folder has an expectation here.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), seen);
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let (ok, _, err) = scopegate(&["check", "--config", "/nonexistent/scopegate.yaml"]);
    assert!(!ok);
    assert!(
        err.contains("/nonexistent/scopegate.yaml: cannot read file"),
        "{err}"
    );
}

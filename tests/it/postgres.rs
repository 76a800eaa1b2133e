//! The `postgres` permissions backend against a real PostgreSQL server: the schema applied by
//! `scopegate db migrate`, seed 02's grants read from the database, a malformed row, and the
//! database going away and coming back.

use http::StatusCode;

use crate::util::postgres::Postgres;
use crate::util::{Harness, Options, jwt_claims, scenario, scopegate};

/// Seed 02's data (policies/data/organizations.yaml) as rows, for callers of `issuer`.
fn seed_02(issuer: &str) -> String {
    format!(
        "INSERT INTO scopegate_organizations (name) VALUES ('acme'), ('globex');
         INSERT INTO scopegate_memberships (issuer, subject, organization, roles) VALUES
           ('{issuer}', 'alice', 'acme', '{{project-admin}}'),
           ('{issuer}', 'carol', 'acme', '{{project-viewer}}'),
           ('{issuer}', 'alice', 'globex', '{{project-viewer}}');"
    )
}

fn gateway(pg: &Postgres, extra: &str) -> Options {
    let mut o = scenario(&["organizations.yaml"]);
    o.server_extra = format!(
        "permissions: {{ postgres: {{ url: \"{}\", pool_size: 4{extra} }}, timeout: 1s }}",
        pg.url()
    );
    o
}

/// `scopegate db migrate` with a server file naming the database.
fn migrate(pg: &Postgres) {
    let dir = std::env::temp_dir().join(format!("scopegate-migrate-{}", pg.port));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("scopegate.yaml");
    std::fs::write(
        &file,
        format!("permissions:\n  postgres:\n    url: \"{}\"\n", pg.url()),
    )
    .unwrap();
    let (ok, out, err) = scopegate(&["db", "migrate", "--config", file.to_str().unwrap()]);
    assert!(ok, "db migrate failed: {out}{err}");
    // Applying it again changes nothing and does not fail.
    let (again, _, err) = scopegate(&["db", "migrate", "--config", file.to_str().unwrap()]);
    assert!(again, "a second migrate failed: {err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A database with the schema and seed 02's rows, and a gateway reading it.
async fn seeded() -> (Postgres, Harness) {
    let pg = Postgres::start();
    migrate(&pg);
    let h = Harness::with(gateway(&pg, "")).await;
    pg.execute(&seed_02(&h.issuer.url)).await;
    (pg, h)
}

#[tokio::test]
async fn seed_02_grants_come_from_the_database() {
    let (_pg, h) = seeded().await;
    let all = h.token("read:projects write:projects delete:projects");

    let a = h.get("/orgs/acme/projects", &all).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let minted = a.json()["headers"]["authorization"]
        .as_str()
        .unwrap()
        .trim_start_matches("Bearer ")
        .to_string();
    assert_eq!(
        jwt_claims(&minted)["scope"],
        "delete:projects read:projects write:projects",
        "the admin role's scopes, from the row"
    );
    let create = h
        .call(http::Method::POST, "/orgs/globex/projects", &all, &[])
        .await;
    assert_eq!(create.status, StatusCode::FORBIDDEN, "a viewer in globex");
    assert_eq!(create.code(), "insufficient_scope");
    let other = h.get("/orgs/initech/projects", &all).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "no row: not a member");
    assert_eq!(other.code(), "not_member");
}

#[tokio::test]
async fn a_malformed_row_is_a_counted_failure_never_an_allow() {
    let pg = Postgres::start();
    migrate(&pg);
    // A query of the operator's own whose rows break the contract: a null roles array
    // (acme), claims that are a JSON array (globex).
    let h = Harness::with(gateway(
        &pg,
        ", query: \"SELECT roles, scopes, claims, NULL::int AS ttl FROM odd WHERE issuer = $1 AND subject = $2 AND organization = $3\"",
    ))
    .await;
    pg.execute(&format!(
        "CREATE TABLE odd (issuer text, subject text, organization text, roles text[], scopes text[], claims jsonb);
         INSERT INTO odd VALUES ('{0}', 'alice', 'acme', NULL, '{{}}', '{{}}'),
                                ('{0}', 'alice', 'globex', '{{project-admin}}', '{{}}', '[1]');",
        h.issuer.url
    ))
    .await;
    let token = h.token("read:projects");
    for org in ["acme", "globex"] {
        let a = h.get(&format!("/orgs/{org}/projects"), &token).await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{org}: {}",
            a.text()
        );
        assert_eq!(a.code(), "permissions_unavailable");
    }
    let metrics = h.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("scopegate_permissions_backend_errors_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_database_down_is_503_and_service_resumes_when_it_returns() {
    let (pg, h) = seeded().await;
    let token = h.token("read:projects");
    assert_eq!(
        h.get("/orgs/acme/projects", &token).await.status,
        StatusCode::OK
    );
    pg.stop();
    // globex is not cached yet: its lookup needs the database.
    let down = h.get("/orgs/globex/projects", &token).await;
    assert_eq!(down.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(down.code(), "permissions_unavailable");
    assert_eq!(down.header("retry-after"), "5");
    pg.restart();
    let back = h.get("/orgs/globex/projects", &token).await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.text());
}

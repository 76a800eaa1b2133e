//! The `postgres` permissions backend against a real PostgreSQL server: the schema applied by
//! `scopegate db migrate`, seed 02's grants read from the database, a malformed row, and the
//! database going away and coming back.

use http::StatusCode;

use crate::util::postgres::Postgres;
use crate::util::{Harness, Options, scenario, scopegate};

/// Seed 02's data (policies/data/organizations.yaml) as rows, for callers of `issuer`.
fn seed_02(issuer: &str) -> String {
    format!(
        "INSERT INTO scopegate_organizations (name) VALUES ('acme'), ('globex') ON CONFLICT DO NOTHING;
         INSERT INTO scopegate_memberships (issuer, subject, organization, roles) VALUES
           ('{issuer}', 'alice', 'acme', '{{project-admin}}'),
           ('{issuer}', 'carol', 'acme', '{{project-viewer}}'),
           ('{issuer}', 'alice', 'globex', '{{project-viewer}}');"
    )
}

fn gateway(pg: &Postgres, extra: &str) -> Options {
    let mut o = scenario(&["organizations.yaml", "countries.yaml"]);
    o.server_extra = format!(
        "permissions: {{ postgres: {{ url: \"{}\", pool_size: 4{extra} }}, timeout: 1s }}",
        pg.url()
    );
    o
}

/// `scopegate db migrate` with a whole (minimal) server file naming the database.
fn migrate(pg: &Postgres) {
    migrate_with(pg, "");
}

/// [`migrate`], with `extra` keys in the `postgres:` block (`, tls: {...}`).
fn migrate_with(pg: &Postgres, extra: &str) {
    let dir = std::env::temp_dir().join(format!("scopegate-migrate-{}", pg.port));
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join("policies/x.yaml"),
        "routes:\n  - name: x\n    match: { method: GET, path: \"/orgs/{org}/x\" }\n    upstream: api\n    organization: { from: path, param: org }\n    require: { scopes: [read:x] }\n",
    )
    .unwrap();
    let file = dir.join("scopegate.yaml");
    std::fs::write(
        &file,
        format!(
            "listen: {{ proxy: \"127.0.0.1:0\", admin: \"127.0.0.1:0\" }}
policies: [policies]
issuers:
  idp: {{ issuer: \"https://idp.example\", jwks_url: \"https://idp.example/jwks.json\", algorithms: [ES256], audiences: [api] }}
upstreams:
  api: {{ url: \"http://127.0.0.1:9\" }}
signing: {{ issuer: \"https://gw.example\", keys: [ {{ kid: g1, generate: true }} ] }}
permissions: {{ postgres: {{ url: \"{}\"{extra} }} }}
",
            pg.url()
        ),
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
    assert_eq!(
        a.minted_claims()["scope"],
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

/// Two replicas on one database with `listen: true` and answers cached for five minutes: a
/// role taken away, and a membership added, reach both within a second.
#[tokio::test]
async fn a_membership_change_reaches_every_replica_within_a_second() {
    let pg = Postgres::start();
    migrate(&pg);
    let listening = ", listen: true }, default_ttl: 5m, negative_ttl: 5m, timeout: 1s }";
    let options = |pg: &Postgres| {
        let mut o = gateway(pg, "");
        o.server_extra = o.server_extra.replace(" }, timeout: 1s }", listening);
        o
    };
    let a = Harness::with(options(&pg)).await;
    let b = Harness::with(options(&pg)).await;
    // Both replicas trust the same issuer URL only if they share it: each harness has its own
    // development issuer, so the rows name both.
    for h in [&a, &b] {
        pg.execute(&seed_02(&h.issuer.url)).await;
    }
    // Past the seed's own notifications and their second drop one lookup timeout later: from
    // here on only the change below can drop what the replicas cache next.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let write = |h: &Harness| h.token("read:projects write:projects");
    for h in [&a, &b] {
        let created = h
            .call(http::Method::POST, "/orgs/acme/projects", &write(h), &[])
            .await;
        assert_eq!(created.status, StatusCode::OK, "an admin in acme");
        let other = h.get("/orgs/initech/projects", &write(h)).await;
        assert_eq!(other.code(), "not_member", "cached as not a member");
    }
    let changed = std::time::Instant::now();
    pg.execute(
        "UPDATE scopegate_memberships SET roles = '{project-viewer}' \
         WHERE subject = 'alice' AND organization = 'acme';
         INSERT INTO scopegate_organizations (name) VALUES ('initech');
         INSERT INTO scopegate_memberships (issuer, subject, organization, roles)
           SELECT DISTINCT issuer, 'alice', 'initech', '{project-viewer}'::text[] FROM scopegate_memberships;",
    )
    .await;
    for h in [&a, &b] {
        loop {
            let created = h
                .call(http::Method::POST, "/orgs/acme/projects", &write(h), &[])
                .await;
            let joined = h.get("/orgs/initech/projects", &write(h)).await;
            if created.status == StatusCode::FORBIDDEN && joined.status == StatusCode::OK {
                break;
            }
            assert!(
                changed.elapsed() < std::time::Duration::from_secs(1),
                "the change did not reach a replica within 1 s: create {}, initech {}",
                created.status,
                joined.status
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// The listening connection killed by the database (a failover, an idle-session reaper): the
/// replica reconnects, and a change made while it was not listening still takes effect, because
/// it drops every cached answer once it listens again.
#[tokio::test]
async fn a_lost_listener_reconnects_and_misses_no_change() {
    let pg = Postgres::start();
    migrate(&pg);
    let mut o = gateway(&pg, ", listen: true");
    o.server_extra = o
        .server_extra
        .replace("timeout: 1s }", "default_ttl: 5m, timeout: 1s }");
    let h = Harness::with(o).await;
    pg.execute(&seed_02(&h.issuer.url)).await;
    // Past the seed's notifications and their second drop one lookup timeout later, so the
    // admin answer cached next stays cached unless something drops it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let write = h.token("read:projects write:projects");
    let create = || h.call(http::Method::POST, "/orgs/acme/projects", &write, &[]);
    assert_eq!(create().await.status, StatusCode::OK, "cached as an admin");
    pg.execute(
        // Waits (up to 5 s) until the backend has exited: the update must not reach it.
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
           WHERE query = 'LISTEN scopegate_memberships';
         UPDATE scopegate_memberships SET roles = '{project-viewer}'
           WHERE subject = 'alice' AND organization = 'acme';",
    )
    .await;
    let changed = std::time::Instant::now();
    while create().await.status != StatusCode::FORBIDDEN {
        assert!(
            changed.elapsed() < std::time::Duration::from_secs(5),
            "the replica kept the revoked role after losing its listener"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let metrics = h.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("scopegate_permissions_change_listener_up 1"),
        "listening again: {metrics}"
    );
}

/// A database behind a private CA: reached over TLS with `tls: { ca_file, ca_only: true }` (the
/// pool's connection shows in `pg_stat_ssl`), refused with the public roots only.
#[tokio::test]
async fn a_private_ca_database_is_reached_over_tls_only() {
    let ca = crate::util::pki::Ca::new();
    let leaf = ca.issue(&["127.0.0.1"]);
    let pg = Postgres::start_tls((&leaf.cert.pem(), &leaf.key.serialize_pem()));
    let dir = crate::util::pki::folder("postgres");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let private = format!(
        ", tls: {{ ca_file: \"{}\", ca_only: true }}",
        ca_file.display()
    );
    migrate_with(&pg, &private);
    let h = Harness::with(gateway(&pg, &private)).await;
    pg.execute(&seed_02(&h.issuer.url)).await;
    let token = h.token("read:projects");
    let a = h.get("/orgs/acme/projects", &token).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let encrypted: Vec<bool> = client
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
               WHERE a.query LIKE 'SELECT roles, scopes%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(encrypted, vec![true], "the pool's connection is TLS");

    let public_roots = Harness::with(gateway(&pg, ", tls: {}")).await;
    let refused = public_roots
        .get("/orgs/acme/projects", &public_roots.token("read:projects"))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "an untrusted certificate"
    );
    assert_eq!(refused.code(), "permissions_unavailable");
}

/// Seed 03 with its resource claims in a `jsonb` column: the route condition reads them and
/// the minted token carries the one claim the route forwards.
#[tokio::test]
async fn seed_03_resource_claims_come_from_the_database() {
    let pg = Postgres::start();
    migrate(&pg);
    let h = Harness::with(gateway(&pg, "")).await;
    pg.execute(&format!(
        "INSERT INTO scopegate_organizations (name) VALUES ('eu-logistics');
         INSERT INTO scopegate_memberships (issuer, subject, organization, roles, claims) VALUES
           ('{}', 'alice', 'eu-logistics', '{{shipper}}',
            '{{\"allowed_countries\": [\"nl\", \"de\", \"be\"], \"cost_centers\": [\"cc-1\"]}}');",
        h.issuer.url
    ))
    .await;
    let token = h.token("read:shipments");
    let org = [("x-organization", "eu-logistics")];
    let nl = h
        .call(http::Method::GET, "/countries/nl/shipments", &token, &org)
        .await;
    assert_eq!(nl.status, StatusCode::OK, "{}", nl.text());
    let claims = nl.minted_claims();
    assert_eq!(
        claims["allowed_countries"],
        serde_json::json!(["nl", "de", "be"])
    );
    assert!(
        claims.get("cost_centers").is_none(),
        "only the forwarded claim"
    );
    let fr = h
        .call(http::Method::GET, "/countries/fr/shipments", &token, &org)
        .await;
    assert_eq!(fr.status, StatusCode::FORBIDDEN);
    assert_eq!(fr.code(), "condition_failed");
}

/// A role name no policy defines (a typo in the data) grants nothing, and says so: a warning
/// and a count per backend answer, not per request.
#[tokio::test]
async fn an_unknown_role_in_a_row_grants_nothing_and_is_counted() {
    let (pg, h) = seeded().await;
    pg.execute(&format!(
        "INSERT INTO scopegate_organizations (name) VALUES ('initech');
         INSERT INTO scopegate_memberships (issuer, subject, organization, roles) VALUES
           ('{}', 'alice', 'initech', '{{project-viewer, projct-admin}}');",
        h.issuer.url
    ))
    .await;
    let token = h.token("read:projects write:projects");
    for _ in 0..3 {
        let read = h.get("/orgs/initech/projects", &token).await;
        assert_eq!(read.status, StatusCode::OK, "the known role still counts");
    }
    let create = h
        .call(http::Method::POST, "/orgs/initech/projects", &token, &[])
        .await;
    assert_eq!(
        create.code(),
        "insufficient_scope",
        "the typo grants nothing"
    );
    let metrics = h.admin_get("/metrics").await.text();
    assert!(
        metrics.contains("scopegate_permissions_unknown_roles_total 1"),
        "{metrics}"
    );
}

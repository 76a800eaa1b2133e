//! The cold org row on PostgreSQL: a real server (the end-to-end tests' helper), the schema that
//! `scopegate db schema` prints, and `bench` a builder in `acme` and in `o0000000`.. as rows.

use crate::postgres::Postgres;

/// A database holding `count` organizations for the `bench` subject of `issuer`.
pub(crate) fn cold_orgs(issuer: &str, count: usize) -> Result<Postgres, String> {
    let pg = Postgres::start();
    let schema = std::process::Command::new(env!("CARGO_BIN_EXE_scopegate"))
        .args(["db", "schema"])
        .output()
        .map_err(|e| format!("scopegate db schema: {e}"))?;
    let schema = String::from_utf8(schema.stdout).map_err(|e| e.to_string())?;
    // Set-based inserts: 600k rows take seconds, not minutes.
    let rows = format!(
        "{schema}
         INSERT INTO scopegate_organizations (name)
           SELECT 'o' || lpad(g::text, 7, '0') FROM generate_series(0, {last}) g
           UNION ALL SELECT 'acme';
         INSERT INTO scopegate_memberships (issuer, subject, organization, roles)
           SELECT '{issuer}', 'bench', name, '{{builder}}' FROM scopegate_organizations;
         ANALYZE;",
        last = count.saturating_sub(1)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(pg.execute(&rows));
    Ok(pg)
}

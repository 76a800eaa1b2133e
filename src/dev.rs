//! `scopegate dev`: the whole picture on one machine with nothing to set up. Starts a
//! development issuer, the echo upstream and the gateway on the embedded demo policy, then prints
//! ready-to-paste requests: one allowed, one denied for scope (403), one with an expired token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use jsonwebtoken::Algorithm;
use serde_json::json;
use tokio::sync::watch;

use crate::config::{self, Source};
use crate::dev_issuer::DevIssuer;

/// The policies `dev` runs, compiled in so it works from any folder: (path, text).
pub(crate) const POLICIES: &[(&str, &str)] = &[
    ("policies/demo.yaml", include_str!("../policies/demo.yaml")),
    (
        "policies/builds.yaml",
        include_str!("../policies/builds.yaml"),
    ),
    (
        "policies/organizations.yaml",
        include_str!("../policies/organizations.yaml"),
    ),
    (
        "policies/countries.yaml",
        include_str!("../policies/countries.yaml"),
    ),
];

/// The permissions data of the scenario policies: (file name, text).
pub(crate) const DATA: &[(&str, &str)] = &[
    ("builds.yaml", include_str!("../policies/data/builds.yaml")),
    (
        "organizations.yaml",
        include_str!("../policies/data/organizations.yaml"),
    ),
    (
        "countries.yaml",
        include_str!("../policies/data/countries.yaml"),
    ),
];

/// The development secret of the demo `builds-api` exchange client.
pub(crate) const DEV_CLIENT_SECRET: &str = "dev-builds-api-secret-not-for-production";

/// The audience the demo issuer's tokens carry and the demo gateway accepts.
pub(crate) const DEMO_AUDIENCE: &str = "scopegate-demo";

/// Why `dev` could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DevError {
    #[error("cannot start a development server: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot generate the development key: {0}")]
    Key(#[from] crate::keys::KeyError),
    #[error("the embedded demo configuration is invalid:\n{0}")]
    Config(#[from] config::ConfigErrors),
    #[error(transparent)]
    Serve(#[from] crate::serve::ServeError),
}

/// Runs until Ctrl-C.
pub(crate) async fn run(listen: SocketAddr, admin: SocketAddr) -> Result<(), DevError> {
    let (stop, stopped) = watch::channel(false);
    let issuer = DevIssuer::start(stopped.clone()).await?;
    issuer.add_key("dev-1", Algorithm::ES256)?;
    // The echo verifies what it receives against scopegate's discovery document, like a real
    // upstream would (only possible when the gateway's port is known in advance).
    let discovery = (listen.port() != 0)
        .then(|| {
            format!("http://{listen}/.well-known/openid-configuration")
                .parse()
                .ok()
        })
        .flatten();
    let echo =
        crate::echo::start_verifying(SocketAddr::from(([127, 0, 0, 1], 0)), stopped, discovery)
            .await?;
    // The permissions data goes to a temporary folder, so it can be edited to see hot reload.
    let data_dir = std::env::temp_dir().join(format!("scopegate-dev-{}", std::process::id()));
    std::fs::create_dir_all(&data_dir)?;
    for (name, text) in DATA {
        std::fs::write(data_dir.join(name), text)?;
    }
    // The token-exchange client secret of the demo builds API.
    std::fs::write(data_dir.join("builds-api.secret"), DEV_CLIENT_SECRET)?;
    let server = Source {
        path: PathBuf::from("<dev>/scopegate.yaml"),
        text: server_yaml(listen, admin, &issuer, echo),
    };
    let policies: Vec<Source> = POLICIES
        .iter()
        .map(|(p, t)| Source {
            path: PathBuf::from(p),
            text: t.to_string(),
        })
        .collect();
    let config = config::from_sources(&server, &data_dir, &policies)?;
    let running = crate::serve::start(config).await?;
    println!(
        "{}",
        instructions(&issuer, running.proxy_addr, running.admin_addr, &data_dir)
    );
    let _ = tokio::signal::ctrl_c().await;
    let _ = stop.send(true);
    running.shutdown().await;
    Ok(())
}

fn server_yaml(
    listen: SocketAddr,
    admin: SocketAddr,
    issuer: &DevIssuer,
    echo: SocketAddr,
) -> String {
    format!(
        r#"listen: {{ proxy: "{listen}", admin: "{admin}" }}
policies: [policies]
signing:
  issuer: http://{listen}
  keys: [{{ kid: dev-signing, alg: ES256, generate: true }}]
permissions:
  files: [builds.yaml, organizations.yaml, countries.yaml]
exchange:
  clients:
    builds-api: {{ secret_file: builds-api.secret }}
issuers:
  dev:
    issuer: {url}
    jwks_url: {jwks}
    algorithms: [ES256]
    audiences: [{DEMO_AUDIENCE}]
upstreams:
  demo: {{ url: "http://{echo}" }}
  builds-api: {{ url: "http://{echo}", audience: "https://builds.example.com" }}
  projects-api: {{ url: "http://{echo}", audience: "https://projects.example.com" }}
  shipments-api: {{ url: "http://{echo}", audience: "https://shipments.example.com" }}
"#,
        url = issuer.url,
        jwks = issuer.jwks_url(),
    )
}

fn token(issuer: &DevIssuer, scope: &str, exp_offset: i64) -> String {
    let now = crate::token::unix_now() as i64;
    let claims = json!({
        "iss": issuer.url, "sub": "alice", "aud": DEMO_AUDIENCE, "scope": scope,
        "iat": now, "exp": now + exp_offset, "azp": "demo-cli", "org_id": "buildco",
    });
    issuer.sign("dev-1", &claims).unwrap_or_default()
}

fn instructions(issuer: &DevIssuer, proxy: SocketAddr, admin: SocketAddr, data: &Path) -> String {
    let reader = token(issuer, "read:builds", 3600);
    let writer = token(issuer, "read:builds create:builds", 3600);
    let expired = token(issuer, "read:builds create:builds", -3600);
    let alice = token(
        issuer,
        "read:projects write:projects delete:projects read:shipments create:shipments",
        3600,
    );
    format!(
        r#"scopegate dev is running.
  gateway  http://{proxy}   (policies: demo, builds, organizations, countries)
  admin    http://{admin}/metrics  /healthz  /readyz
  issuer   {iss}  (development keys, audience `{DEMO_AUDIENCE}`)
  minted   http://{proxy}/.well-known/openid-configuration  (scopegate's own issuer documents)
  data     {data}  (permissions; edit a file and it reloads)

The upstream echoes what it received: `token_claims` is the down-scoped token scopegate minted
in place of yours.

# 200: a token with read:builds lists builds
curl -s http://{proxy}/orgs/acme/builds -H "Authorization: Bearer {reader}"

# 200: a token with create:builds creates one (the body streams through)
curl -s -X POST http://{proxy}/orgs/acme/builds -H "Authorization: Bearer {writer}" -d '{{"ref":"main"}}'

# 403 insufficient_scope: the read-only token cannot create
curl -si -X POST http://{proxy}/orgs/acme/builds -H "Authorization: Bearer {reader}" -d '{{"ref":"main"}}'

# 401 invalid_token: an expired token
curl -si http://{proxy}/orgs/acme/builds -H "Authorization: Bearer {expired}"

# 401: no token; 404: no route; 400: an encoded slash
curl -si http://{proxy}/orgs/acme/builds
curl -si http://{proxy}/nowhere -H "Authorization: Bearer {reader}"
curl -si http://{proxy}/orgs/acme%2Fother/builds -H "Authorization: Bearer {reader}"

# 200: alice is admin in acme: the minted `scope` has read, write and delete
curl -s http://{proxy}/orgs/acme/projects -H "Authorization: Bearer {alice}"

# 200: the same token in globex, where she is a viewer: the minted `scope` is read:projects
curl -s http://{proxy}/orgs/globex/projects -H "Authorization: Bearer {alice}"

# 403: so she cannot create a project in globex
curl -si -X POST http://{proxy}/orgs/globex/projects -H "Authorization: Bearer {alice}"

# 200: shipments in nl, one of her allowed countries (the minted token carries allowed_countries)
curl -s http://{proxy}/countries/nl/shipments -H "X-Organization: eu-logistics" -H "Authorization: Bearer {alice}"

# 403 condition_failed: fr is not
curl -si http://{proxy}/countries/fr/shipments -H "X-Organization: eu-logistics" -H "Authorization: Bearer {alice}"

Press Ctrl-C to stop."#,
        iss = issuer.url,
        data = data.display(),
    )
}

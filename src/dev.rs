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

/// The demo policy, compiled in so `dev` works from any folder.
pub const DEMO_POLICY: &str = include_str!("../policies/demo.yaml");

/// The audience the demo issuer's tokens carry and the demo gateway accepts.
pub const DEMO_AUDIENCE: &str = "scopegate-demo";

/// Why `dev` could not start.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
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
pub async fn run(listen: SocketAddr, admin: SocketAddr) -> Result<(), DevError> {
    let (stop, stopped) = watch::channel(false);
    let issuer = DevIssuer::start(stopped.clone()).await?;
    issuer.add_key("dev-1", Algorithm::ES256)?;
    let echo = crate::echo::start(SocketAddr::from(([127, 0, 0, 1], 0)), stopped).await?;
    let server = Source {
        path: PathBuf::from("<dev>/scopegate.yaml"),
        text: server_yaml(listen, admin, &issuer, echo),
    };
    let policy = Source {
        path: PathBuf::from("policies/demo.yaml"),
        text: DEMO_POLICY.to_string(),
    };
    let config = config::from_sources(&server, Path::new("."), &[policy])?;
    let running = crate::serve::start(config).await?;
    println!(
        "{}",
        instructions(&issuer, running.proxy_addr, running.admin_addr)
    );
    let _ = tokio::signal::ctrl_c().await;
    let _ = stop.send(true);
    running.shutdown();
    Ok(())
}

fn server_yaml(
    listen: SocketAddr,
    admin: SocketAddr,
    issuer: &DevIssuer,
    echo: SocketAddr,
) -> String {
    format!(
        "listen: {{ proxy: \"{listen}\", admin: \"{admin}\" }}\n\
         policies: [policies/demo.yaml]\n\
         issuers:\n  dev:\n    issuer: {url}\n    jwks_url: {jwks}\n    algorithms: [ES256]\n    audiences: [{DEMO_AUDIENCE}]\n\
         upstreams:\n  demo:\n    url: http://{echo}\n",
        url = issuer.url,
        jwks = issuer.jwks_url(),
    )
}

fn token(issuer: &DevIssuer, scope: &str, exp_offset: i64) -> String {
    let now = crate::verify::unix_now() as i64;
    let claims = json!({
        "iss": issuer.url, "sub": "alice", "aud": DEMO_AUDIENCE, "scope": scope,
        "iat": now, "exp": now + exp_offset, "azp": "demo-cli",
    });
    issuer.sign("dev-1", &claims).unwrap_or_default()
}

fn instructions(issuer: &DevIssuer, proxy: SocketAddr, admin: SocketAddr) -> String {
    let reader = token(issuer, "read:builds", 3600);
    let writer = token(issuer, "read:builds create:builds", 3600);
    let expired = token(issuer, "read:builds create:builds", -3600);
    format!(
        r#"scopegate dev is running.
  gateway  http://{proxy}   (policy: policies/demo.yaml)
  admin    http://{admin}/metrics  /healthz  /readyz
  issuer   {iss}  (development keys, audience `{DEMO_AUDIENCE}`)

Try these (the upstream echoes what it received, including the token's claims):

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

Press Ctrl-C to stop."#,
        iss = issuer.url,
    )
}

//! The command line: `serve`, `check` and `dev`. Maps results to exit codes; everything else
//! lives in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// scopegate: a reverse-proxy authorization gateway for REST APIs.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The server configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a configuration and its policy files; exits non-zero on any error.
    Check {
        /// The server configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a new signing key (PKCS#8 PEM, mode 0600) and print its `signing.keys` entry.
    Keygen {
        /// ES256 (default), EdDSA or RS256.
        #[arg(long, default_value = "ES256")]
        alg: String,
        /// The folder to write `<kid>.pem` into.
        #[arg(long)]
        out: PathBuf,
        /// The key id (default: the algorithm and the current time).
        #[arg(long)]
        kid: Option<String>,
    },
    /// Explain the decision for one request, step by step ("why 403?"). Exits 0 when allowed,
    /// 2 when denied, 1 on error.
    Explain {
        /// The server configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The request method.
        #[arg(long, default_value = "GET")]
        method: String,
        /// The request URL or path (with query).
        #[arg(long)]
        url: String,
        /// A bearer token, verified as the gateway would (fetches the issuer's keys).
        #[arg(long, conflicts_with = "claims")]
        token: Option<String>,
        /// The caller's claims as JSON, taken as verified.
        #[arg(long)]
        claims: Option<String>,
        /// A request header `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The permissions backend's answer as JSON (`{"roles": [...]}`, or `null` for "not a
        /// member"); without it the configured backend is asked.
        #[arg(long)]
        grants: Option<String>,
        /// Print the trace as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the JSON Schema of a configuration file kind (for editors and CI).
    Schema {
        /// Which file.
        #[arg(value_enum, default_value = "server")]
        kind: crate::config::SchemaKind,
    },
    /// The PostgreSQL permissions backend's schema.
    Db {
        #[command(subcommand)]
        action: DbAction,
    },
    /// Run the demo: a development issuer, an echo upstream and the gateway, nothing to set up.
    Dev {
        /// Gateway address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin (metrics, health) address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
enum DbAction {
    /// Print the schema (tables for organizations and memberships) as SQL.
    Schema,
    /// Apply the schema (idempotent) to the database of `permissions.postgres.url`.
    Migrate {
        /// The server configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Installs the log subscriber: `RUST_LOG` if set, else `level`; JSON lines or text, to stderr.
pub fn init_logging(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour codes only for a person at a terminal: in a log file or a collector they are noise,
    // and writing them cost about a fifth of a proxied request's instructions.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let format = if json {
        crate::audit::sink::Format::Json
    } else {
        crate::audit::sink::Format::Text
    };
    crate::audit::sink::install(format, std::io::stderr());
    // A second call (tests running commands in one process) keeps the first subscriber.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// Runs the parsed command line on a single-threaded runtime: it runs the commands and the
/// gateway's control work (admin listener, reloads, key refreshes); `serve` accepts and serves
/// requests on serving threads of its own, one per core or `workers:` (see [`crate::cores`]).
pub fn main(cli: Cli) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => {
            let code = runtime.block_on(run(cli));
            crate::audit::sink::flush();
            code
        }
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command line.
async fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(false, "scopegate=info");
    }
    match cli.command {
        Command::Check { config } => match crate::config::load(&config) {
            Ok(c) => {
                let tests = c.tests.clone();
                let summary = format!(
                    "{} routes, {} issuers, {} upstreams, {} policy tests",
                    c.routes.routes().len(),
                    c.issuers.len(),
                    c.upstreams.len(),
                    c.tests.len()
                );
                let gateway = crate::gateway::Gateway::new(c, crate::metrics::Metrics::new());
                let failures = crate::explain::run_tests(&gateway, &tests).await;
                for f in &failures {
                    eprintln!("error: {f}");
                }
                if !failures.is_empty() {
                    eprintln!("{} of {} policy tests failed", failures.len(), tests.len());
                    return ExitCode::FAILURE;
                }
                println!("{}: ok ({summary})", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config: path } => {
            let config = match crate::config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(config.log.json, &config.log.level);
            let watched = config.watched.clone();
            match crate::serve::start(config).await {
                Ok(running) => {
                    crate::reload::spawn(
                        running.shared.clone(),
                        path,
                        watched,
                        std::time::Duration::from_secs(2),
                    );
                    terminated().await;
                    tracing::info!("shutting down: draining open requests");
                    running.shutdown().await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Explain {
            config,
            method,
            url,
            token,
            claims,
            headers,
            grants,
            json,
        } => {
            match explain_command(
                &config, &method, &url, token, claims, &headers, grants, json,
            )
            .await
            {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(2),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema { kind } => {
            use std::io::Write;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{:#}", crate::config::schema(kind));
            ExitCode::SUCCESS
        }
        Command::Keygen { alg, out, kid } => match keygen(&alg, &out, kid) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Db {
            action: DbAction::Schema,
        } => {
            use std::io::Write;
            let _ = write!(
                std::io::stdout(),
                "{}",
                crate::permissions::postgres::SCHEMA
            );
            ExitCode::SUCCESS
        }
        Command::Db {
            action: DbAction::Migrate { config },
        } => match migrate(&config).await {
            Ok(()) => {
                println!("schema applied");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Dev { listen, admin } => match crate::dev::run(listen, admin).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `db migrate`: the database of the server file's `permissions.postgres`, with its TLS
/// settings; the file must load (`scopegate check` passes).
async fn migrate(config: &std::path::Path) -> anyhow::Result<()> {
    let loaded = crate::config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let database = loaded.permissions.and_then(|p| p.database).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no `permissions.postgres`; the schema is for the postgres backend",
            config.display()
        )
    })?;
    crate::permissions::postgres::migrate(&database)
        .await
        .map_err(|e| anyhow::anyhow!("applying the schema: {e}"))
}

/// Generates a key into `out/<kid>.pem`; refuses to overwrite an existing file.
fn keygen(alg: &str, out: &std::path::Path, kid: Option<String>) -> anyhow::Result<String> {
    use std::io::Write;
    let algorithm = crate::keys::signing_algorithm(alg)?;
    let kid =
        kid.unwrap_or_else(|| format!("{}-{}", alg.to_ascii_lowercase(), crate::token::unix_now()));
    if kid.is_empty()
        || !kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        anyhow::bail!("key id `{kid}` must be letters, digits, `-`, `_` or `.`");
    }
    let key = crate::keys::SigningKey::generate(kid.clone(), algorithm)?;
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{kid}.pem"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot create `{}`: {e}", path.display()))?;
    file.write_all(key.private_pem().as_bytes())?;
    Ok(format!(
        "wrote {}\nadd it to the server file (the first key signs, all are published):\n\nsigning:\n  keys:\n    - {{ kid: {kid}, alg: {alg}, file: {} }}",
        path.display(),
        path.display()
    ))
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
async fn terminated() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs `explain`; `Ok(true)` when the request would be allowed.
#[allow(
    clippy::too_many_arguments,
    reason = "one argument per command-line flag"
)]
async fn explain_command(
    config: &std::path::Path,
    method: &str,
    url: &str,
    token: Option<String>,
    claims: Option<String>,
    headers: &[String],
    grants: Option<String>,
    json: bool,
) -> anyhow::Result<bool> {
    let config = crate::config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let gateway = crate::gateway::Gateway::new(config, crate::metrics::Metrics::new());
    let mut header_map = http::HeaderMap::new();
    for h in headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header `{h}` is not `Name: value`"))?;
        header_map.append(
            http::HeaderName::from_bytes(k.trim().as_bytes())?,
            http::HeaderValue::from_str(v.trim())?,
        );
    }
    if let Some(t) = token {
        header_map.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {t}"))?,
        );
    }
    let claims = claims
        .map(|c| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&c))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--claims is not a JSON object: {e}"))?;
    let grants = match grants.as_deref() {
        None => None,
        Some("null") => Some(None),
        Some(g) => Some(Some(
            serde_json::from_str(g).map_err(|e| anyhow::anyhow!("--grants: {e}"))?,
        )),
    };
    let described = crate::described::Described {
        method: http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())?,
        uri: url.parse()?,
        headers: header_map,
        claims,
        grants,
    };
    let trace = crate::explain::explain(&gateway, &described).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&trace)?);
    } else {
        print!("{}", trace.render());
    }
    Ok(trace.decision == "allow")
}

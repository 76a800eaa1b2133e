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
    /// Print the JSON Schema of a configuration file kind (for editors and CI).
    Schema {
        /// Which file.
        #[arg(value_enum, default_value = "server")]
        kind: crate::config::SchemaKind,
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

/// Installs the log subscriber: `RUST_LOG` if set, else `level`; JSON lines or text, to stderr.
pub fn init_logging(json: bool, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(false, "scopegate=info");
    }
    match cli.command {
        Command::Check { config } => match crate::config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} routes, {} issuers, {} upstreams)",
                    config.display(),
                    c.routes.routes().len(),
                    c.issuers.len(),
                    c.upstreams.len()
                );
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
        Command::Dev { listen, admin } => match crate::dev::run(listen, admin).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Generates a key into `out/<kid>.pem`; refuses to overwrite an existing file.
fn keygen(alg: &str, out: &std::path::Path, kid: Option<String>) -> anyhow::Result<String> {
    use std::io::Write;
    let algorithm = crate::keys::signing_algorithm(alg)?;
    let kid = kid
        .unwrap_or_else(|| format!("{}-{}", alg.to_ascii_lowercase(), crate::verify::unix_now()));
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

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

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
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
        Command::Serve { config } => {
            let config = match crate::config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match crate::serve::start(config).await {
                Ok(running) => {
                    let _ = tokio::signal::ctrl_c().await;
                    running.shutdown();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Dev { listen, admin } => match crate::dev::run(listen, admin).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

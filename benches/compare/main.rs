//! Issue 11's comparison bench: scopegate (the release binary, as a separate process) against
//! nginx as a plain reverse proxy and HAProxy verifying the same RS256 tokens, every row in one
//! run on one machine, all in front of the same one-worker nginx upstream. Run `benches/run`
//! (it installs nginx, HAProxy, wrk and oha when missing, then runs this); see
//! benches/README.md for the rows and how the goals map to them.
//!
//! `BENCH_SECONDS` (default 10) per measured run after a 2 s warm-up; `BENCH_ONLY=a,b` runs
//! the rows whose name contains one of these (and the rows they are compared with);
//! `BENCH_WORKERS` (default `1,2`); `BENCH_TOKENS` (distinct RS256 tokens, default 600000 or
//! 50000 per second of a run); `BENCH_ORGS` (organizations of the cold org row, default 300000
//! or 50000 per second of a run); `BENCH_MEMORY_TOKENS` (default 500000).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark harness")]

#[path = "../common/mod.rs"]
mod common;
mod database;
mod floor;
mod load;
#[path = "../../tests/it/util/postgres.rs"]
#[allow(
    unreachable_pub,
    reason = "the end-to-end tests' helper, written for their crate"
)]
mod postgres;
mod rows;
mod servers;
mod settings;
mod tokens;

use std::process::ExitCode;

/// The allocator scopegate uses, for the floor proxy (and the harness, which does not care).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(floor::ARG) {
        return match floor::serve(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("floor proxy: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match settings::Settings::from_env().and_then(rows::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ncompare bench aborted: {e}");
            ExitCode::FAILURE
        }
    }
}

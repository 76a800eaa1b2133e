//! The `scopegate` binary: parses the command line and hands it to the library, which starts
//! the runtime and maps the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// The allocator: requests allocate and free many small buffers across threads, which mimalloc
/// does in fewer instructions than glibc's malloc (benches/README.md has the figures).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    scopegate::cli::main(scopegate::cli::Cli::parse())
}

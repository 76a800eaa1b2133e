use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = scopegate::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(scopegate::cli::run(cli))
}

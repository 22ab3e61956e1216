#![forbid(unsafe_code)]
//! The `activity-store` binary: parse flags, run, turn errors into messages and exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,async_nats=warn,sqlx=warn")
            }),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let cli = activity_store::cli::Cli::parse();
    match activity_store::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error's message already carries its cause.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

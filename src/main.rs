#![forbid(unsafe_code)]
//! The `activity-store` binary: parse flags, run, turn errors into messages and exit codes.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = activity_store::cli::Cli::parse();
    let serves = cli.command.serves();
    if !serves {
        // A command that prints and ends behaves as a Unix tool: `| head` ends it quietly
        // (SIGPIPE), never with a panic. The servers keep Rust's default, so a closed socket
        // is an error, not the end of the process.
        sigpipe::reset();
    }
    // sqlx's slow-statement warnings belong in a server's log, not in a command's output.
    let default = if serves {
        "info,async_nats=warn,sqlx=warn"
    } else {
        "info,async_nats=warn,sqlx=error"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match activity_store::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every error's message already carries its cause.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

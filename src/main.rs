//! The `singapay-sync` binary: parses the command line and runs the command (`commands`).

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = singapay_sync::cli::Cli::parse();
    match singapay_sync::commands::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

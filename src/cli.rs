//! Command line (clap), DESIGN §8.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// singapay-sync: mirror SingaPay Payment Links into a local ledger and notify finance and ERPs.
#[derive(Debug, Parser)]
#[command(name = "singapay-sync", version, about)]
pub struct Cli {
    /// Config file (default: $SINGAPAY_SYNC_CONFIG, else /etc/singapay-sync/config.toml).
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: scheduled passes, deliveries, admin HTTP. Stops cleanly on SIGTERM/SIGINT.
    Run,
    /// One pass per account now, then deliver what is due; prints a summary; exit 1 on failure.
    Sync {
        /// Only this account.
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply ledger migrations and exit.
    Migrate,
    /// Validate the config (exit 2 listing every problem); `--online` also fetches a SingaPay token.
    CheckConfig {
        /// Also check the credentials against SingaPay.
        #[arg(long)]
        online: bool,
    },
    /// Serve the SingaPay sandbox (an in-memory stand-in for the API).
    Sandbox {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8788")]
        listen: SocketAddr,
        /// Links to seed for account 01K7P073Q8RE2A9PQT8Q7MXPN4.
        #[arg(long, default_value_t = 103)]
        links: usize,
    },
    /// The end-to-end demo: sandbox, webhook receiver, daemon, payments, deliveries. No network.
    Demo,
}

//! Command line (clap). The commands themselves are in `commands`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::types::{Channel, DeliveryState};

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
        /// Delete the links found missing even beyond `sync.max_deletions` (after a human
        /// checked that SingaPay really lost them). Needs `--account`.
        #[arg(long, requires = "account")]
        confirm_deletions: bool,
        /// Read the whole Payment Link History, not only `sync.history_window` (catches a
        /// change to an older payment).
        #[arg(long)]
        full: bool,
    },
    /// Apply ledger migrations and exit.
    Migrate,
    /// Validate the config (exit 2 listing every problem); `--online` also fetches a SingaPay
    /// token.
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
        /// Extra generated Payment Link History rows (paid; settled unless recent).
        #[arg(long, default_value_t = 0)]
        history: usize,
        /// How many of the generated rows were created in the last 6 days.
        #[arg(long, default_value_t = 0)]
        recent: usize,
    },
    /// The end-to-end demo: sandbox, webhook receiver, daemon, payments, deliveries. No network.
    Demo,
    /// Inspect deliveries and retry dead or disabled ones (works on the ledger directly; a running
    /// daemon picks retried deliveries up within its idle interval).
    Deliveries {
        /// What to do.
        #[command(subcommand)]
        action: DeliveriesCommand,
    },
    /// Manage webhook subscribers disabled by a 410 Gone.
    Subscribers {
        /// What to do.
        #[command(subcommand)]
        action: SubscribersCommand,
    },
    /// Payment links: list and show the mirror; create, update and delete through SingaPay
    /// (validated first, exactly one link per reff_no, mirrored and delivered at once).
    Links {
        /// What to do.
        #[command(subcommand)]
        action: LinksCommand,
    },
    /// The payment method codes the account can whitelist (from SingaPay).
    PaymentMethods {
        /// Account whose merchant's methods to list (default: the first configured).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Export the ledger for accounting (works on the ledger directly).
    Export {
        /// What to export.
        #[command(subcommand)]
        what: ExportCommand,
    },
}

/// The fields of `links create` and `links update`, named after SingaPay's (seeds 000, 003).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LinkFields {
    /// `title`.
    #[arg(long)]
    pub title: Option<String>,
    /// `total_amount`, Rupiah (`150000` or `150000.00`); with items, their sum if omitted.
    #[arg(long, value_name = "RUPIAH")]
    pub amount: Option<String>,
    /// An item, `NAME:QTY:PRICE` (repeat for more).
    #[arg(long = "item", value_name = "NAME:QTY:PRICE")]
    pub items: Vec<String>,
    /// `max_usage` (1 to 1,000,000).
    #[arg(long)]
    pub max_usage: Option<i64>,
    /// `expired_at`: RFC 3339 (`2026-12-31T23:59:00+07:00`) or 13-digit milliseconds.
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
    /// `whitelisted_payment_method`, comma-separated codes (`VA_BRI,QRIS`).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// `redirect_url` (https).
    #[arg(long)]
    pub redirect_url: Option<String>,
    /// `required_customer_detail`.
    #[arg(long)]
    pub required_customer_detail: Option<bool>,
}

/// `links …`.
#[derive(Debug, Subcommand)]
pub enum LinksCommand {
    /// The mirrored links, newest first.
    List {
        /// Account (default: the first configured).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// One mirrored link.
    Show {
        /// Link id.
        id: i64,
        /// Account (default: the first configured).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a link at SingaPay (exit 1 on refusal, 2 on an invalid request).
    Create {
        /// `reff_no`: the merchant reference (at most 40 characters, no spaces or `/`).
        #[arg(long)]
        reff_no: String,
        /// The fields.
        #[command(flatten)]
        fields: LinkFields,
        /// Account (default: the first configured).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Update a link at SingaPay (only the fields given).
    Update {
        /// Link id.
        id: i64,
        /// `status`: open, closed or expired.
        #[arg(long)]
        status: Option<String>,
        /// The fields.
        #[command(flatten)]
        fields: LinkFields,
        /// Account (default: the first configured).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a link at SingaPay (refused when it has payments).
    Delete {
        /// Link id.
        id: i64,
        /// Account (default: the first configured).
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `export …`.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Every mirrored payment (one row per Payment Link History record) to stdout, oldest first.
    Payments {
        /// Only this account.
        #[arg(long, value_name = "ID")]
        account: Option<String>,
        /// Only payments paid (an unpaid attempt: created) on or after this Jakarta day
        /// (`2026-11-01`).
        #[arg(long, value_name = "DATE")]
        from: Option<String>,
        /// Only payments paid (created) on or before this Jakarta day.
        #[arg(long, value_name = "DATE")]
        to: Option<String>,
        /// Only this status (`paid`, `pending`, `failed`, `expired`, …).
        #[arg(long)]
        status: Option<String>,
        /// `csv` (RFC 4180, a header line) or `json` (one object per line).
        #[arg(long, value_enum, default_value_t = ExportFormat::Csv)]
        format: ExportFormat,
    },
}

/// `export payments --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// CSV.
    Csv,
    /// JSON lines.
    Json,
}

/// `deliveries …`.
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        /// Only this state.
        #[arg(long, value_enum)]
        state: Option<DeliveryState>,
        /// Only this subscriber.
        #[arg(long)]
        subscriber: Option<String>,
        /// Only this channel.
        #[arg(long, value_enum)]
        channel: Option<Channel>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Make a dead or disabled delivery due now.
    Retry {
        /// Delivery id.
        id: i64,
    },
}

/// `subscribers …`.
#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// Re-enable a subscriber disabled by a 410 Gone: its parked deliveries become due now.
    Enable {
        /// `[[webhooks]].name`.
        name: String,
    },
}

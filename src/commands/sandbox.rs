//! `sandbox`: serve the SingaPay stand-in until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::sandbox::{
    SANDBOX_CLIENT_ID, SANDBOX_CLIENT_SECRET, SANDBOX_PARTNER_ID, SEED_ACCOUNT, Sandbox,
    SandboxOptions,
};
use crate::telemetry::{self, LogFormat};

/// Serves a sandbox seeded with `links` links and `history` extra history rows (`recent` of
/// them in the last 6 days) on `listen`.
pub(super) async fn run(
    listen: SocketAddr,
    links: usize,
    history: usize,
    recent: usize,
) -> anyhow::Result<ExitCode> {
    telemetry::init(Some(LogFormat::Text), "info");
    let stop = super::shutdown_on_signal();
    let sb = Sandbox::new(SandboxOptions {
        links,
        history,
        recent_history: recent,
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!(
        "SingaPay sandbox on http://{} (account {SEED_ACCOUNT}, {links} links, {history} extra history rows; partner_id \
         {SANDBOX_PARTNER_ID}, client_id {SANDBOX_CLIENT_ID}, client_secret {SANDBOX_CLIENT_SECRET})",
        listener.local_addr()?,
    );
    sb.serve(listener, stop).await?;
    Ok(ExitCode::SUCCESS)
}

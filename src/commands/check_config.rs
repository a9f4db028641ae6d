//! `check-config [--online]`: the configuration is valid (else `load` already exited 2); with
//! `--online`, SingaPay also accepts its credentials (a token is fetched).

use std::process::ExitCode;

use crate::config::Config;
use crate::singapay::SingapayClient;

/// Prints what the configuration holds; exit 1 if SingaPay refuses the credentials.
pub(super) async fn run(cfg: &Config, online: bool) -> anyhow::Result<ExitCode> {
    if online {
        let client = SingapayClient::new((&cfg.singapay).into())?;
        if let Err(e) = client.check_credentials().await {
            eprintln!("SingaPay refused the credentials: {e}");
            return Ok(ExitCode::FAILURE);
        }
        println!("SingaPay accepted the credentials.");
    }
    println!(
        "configuration OK: {} account(s), {} webhook(s), e-mail {}",
        cfg.accounts.len(),
        cfg.webhooks.len(),
        if cfg.email.is_some() { "on" } else { "off" }
    );
    Ok(ExitCode::SUCCESS)
}

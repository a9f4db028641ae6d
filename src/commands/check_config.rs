//! `check-config [--online]`: the configuration is valid (else `load` already exited 2); with
//! `--online`, SingaPay also accepts every credential (a token is fetched for each).

use std::process::ExitCode;

use crate::config::Config;

/// Prints what the configuration holds; exit 1 if SingaPay refuses any credential.
pub(super) async fn run(cfg: &Config, online: bool) -> anyhow::Result<ExitCode> {
    if online {
        let client = cfg.singapay_client()?;
        let mut refused = 0;
        for (name, result) in client.check_credentials().await {
            match result {
                Ok(()) => println!("SingaPay accepted credential {name}."),
                Err(e) => {
                    refused += 1;
                    eprintln!("SingaPay refused credential {name}: {e}");
                }
            }
        }
        if refused > 0 {
            return Ok(ExitCode::FAILURE);
        }
    }
    println!(
        "configuration OK: {} account(s), {} credential(s), {} webhook(s), e-mail {}",
        cfg.accounts.len(),
        cfg.credentials.len() + usize::from(cfg.singapay.has_credential()),
        cfg.webhooks.len(),
        if cfg.email.is_some() { "on" } else { "off" }
    );
    Ok(ExitCode::SUCCESS)
}

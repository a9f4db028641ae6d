//! `export payments [--account ID] [--from DATE] [--to DATE] [--status S] [--format csv|json]`:
//! the payments of the ledger to stdout (docs/ARCHITECTURE.md, "Export"), streamed from the
//! ledger row by row.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{ExportCommand, ExportFormat};
use crate::config::Config;
use crate::export::{Encoder, Format, filter};
use crate::ledger::Ledger;

/// Writes the export; exit 2 (every problem listed) on a bad filter, 1 if the ledger fails
/// midway (what was written stays written, the error names the cause).
pub(super) async fn run(cfg: &Config, what: &ExportCommand) -> anyhow::Result<ExitCode> {
    let ExportCommand::Payments {
        account,
        from,
        to,
        status,
        format,
    } = what;
    let f = match filter(
        account.as_deref(),
        from.as_deref(),
        to.as_deref(),
        status.as_deref(),
    ) {
        Ok(f) => f,
        Err(problems) => {
            for p in problems {
                eprintln!("{p}");
            }
            return Ok(ExitCode::from(2));
        }
    };
    let ledger = Ledger::connect(&cfg.ledger).await?;
    let mut enc = Encoder::new(match format {
        ExportFormat::Csv => Format::Csv,
        ExportFormat::Json => Format::JsonLines,
    });
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    out.write_all(&enc.head().map_err(anyhow::Error::msg)?)?;
    let mut rows = ledger.export_payments(f);
    while let Some(r) = rows.recv().await {
        out.write_all(&enc.row(&r?).map_err(anyhow::Error::msg)?)?;
    }
    out.write_all(&enc.tail())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

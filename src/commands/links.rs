//! `links list|show|create|update|delete` and `payment-methods`: the mirror, and link management
//! through the same service as the admin API (`manage::Manager`), in this process; deliveries
//! the write owes are sent before the command returns. Human output by default, `--json` for
//! scripts. Exit 0 done, 1 refused or failed, 2 invalid request or account.

use std::process::ExitCode;

use serde_json::{Map, Value, json};

use crate::app::App;
use crate::cli::{LinkFields, LinksCommand};
use crate::config::Config;
use crate::manage::ManageError;
use crate::telemetry;
use crate::types::{AccountId, LinkId};

/// The account of `--account`, else the first configured; `Err(2)` when it is not configured.
fn account_of(cfg: &Config, given: Option<&str>) -> Result<AccountId, ExitCode> {
    let first = cfg.accounts.first().map(|a| a.id.clone());
    match given.map(AccountId::parse) {
        None => first.ok_or(ExitCode::from(2)),
        Some(Ok(a)) if cfg.accounts.iter().any(|c| c.id == a) => Ok(a),
        Some(Ok(a)) => {
            eprintln!("account {a} is not in the configuration");
            Err(ExitCode::from(2))
        }
        Some(Err(e)) => {
            eprintln!("{e}");
            Err(ExitCode::from(2))
        }
    }
}

/// The request body of `fields` (SingaPay's field names; numbers kept as the text given).
fn body_of(fields: &LinkFields) -> Map<String, Value> {
    let mut b = Map::new();
    if let Some(t) = &fields.title {
        b.insert("title".into(), json!(t));
    }
    if let Some(a) = &fields.amount {
        b.insert("total_amount".into(), json!(a));
    }
    if !fields.items.is_empty() {
        let items: Vec<Value> = fields
            .items
            .iter()
            .map(|i| {
                let mut parts = i.rsplitn(3, ':');
                let price = parts.next().unwrap_or_default();
                let qty = parts.next().unwrap_or_default();
                let name = parts.next().unwrap_or_default();
                json!({"name": name, "quantity": qty, "unit_price": price})
            })
            .collect();
        b.insert("items".into(), Value::Array(items));
    }
    if let Some(m) = fields.max_usage {
        b.insert("max_usage".into(), json!(m));
    }
    if let Some(e) = &fields.expires {
        b.insert("expired_at".into(), json!(e));
    }
    if let Some(m) = &fields.methods {
        b.insert("whitelisted_payment_method".into(), json!(m));
    }
    if let Some(r) = &fields.redirect_url {
        b.insert("redirect_url".into(), json!(r));
    }
    if let Some(r) = fields.required_customer_detail {
        b.insert("required_customer_detail".into(), json!(r));
    }
    b
}

/// One line about a link.
fn line(l: &Value) -> String {
    format!(
        "{:>8}  {:<32} {:<9} {:>14}  usage {}/{}  {}",
        l["id"],
        l["reff_no"].as_str().unwrap_or(""),
        l["status_computed"].as_str().unwrap_or(""),
        l["total_amount"].as_str().unwrap_or(""),
        l["current_usage"],
        l["max_usage"],
        l["title"].as_str().unwrap_or("")
    )
}

/// Prints a refusal (or JSON of it) and gives its exit code.
fn refused(e: ManageError, as_json: bool) -> ExitCode {
    let api: crate::http::ApiError = e.into();
    let (code, body) = api.parts();
    if as_json {
        println!("{body}");
    } else {
        eprintln!(
            "refused: {}",
            body["error"]["message"].as_str().unwrap_or("")
        );
        if let Some(fields) = body["error"]["fields"].as_object() {
            for (f, why) in fields {
                eprintln!("  {f}: {why}");
            }
        }
        if body["link"].is_object() {
            eprintln!("  existing link: {}", line(&body["link"]));
        }
    }
    if code == 422 {
        ExitCode::from(2)
    } else {
        ExitCode::FAILURE
    }
}

fn print_link(v: &Value, as_json: bool, what: &str) {
    if as_json {
        println!("{v}");
    } else {
        println!("{what}: {}", line(&v["link"]));
        if let Some(url) = v["link"]["payment_url"].as_str() {
            println!("  {url}");
        }
    }
}

/// `links …`.
pub(super) async fn run(cfg: Config, action: &LinksCommand) -> anyhow::Result<ExitCode> {
    telemetry::init(cfg.log.format, &cfg.log.level);
    let given = match action {
        LinksCommand::List { account, .. }
        | LinksCommand::Show { account, .. }
        | LinksCommand::Create { account, .. }
        | LinksCommand::Update { account, .. }
        | LinksCommand::Delete { account, .. } => account.as_deref(),
    };
    let account = match account_of(&cfg, given) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let app = App::build_beside_daemon(cfg).await?;
    let code = match action {
        LinksCommand::List { limit, json, .. } => {
            let (links, total) = app.ledger.list_links(&account, *limit, 0).await?;
            for l in &links {
                let v = serde_json::to_value(&l.link)?;
                if *json {
                    println!("{v}");
                } else {
                    println!("{}", line(&v));
                }
            }
            if !*json {
                println!("{} of {total} links", links.len());
            }
            ExitCode::SUCCESS
        }
        LinksCommand::Show { id, json, .. } => {
            match app.ledger.get_link(&account, LinkId(*id)).await? {
                Some(l) => {
                    let v =
                        json!({"link": l.link, "deleted_at": l.deleted_at, "sequence": l.sequence});
                    print_link(&v, *json, "link");
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!("link {id} is not mirrored");
                    ExitCode::FAILURE
                }
            }
        }
        LinksCommand::Create {
            reff_no,
            fields,
            json,
            ..
        } => {
            let mut body = body_of(fields);
            body.insert("reff_no".into(), json!(reff_no));
            match app
                .manager
                .create(&account, &Value::Object(body), None)
                .await
            {
                Ok((_, v)) => {
                    print_link(&v, *json, "created");
                    ExitCode::SUCCESS
                }
                Err(e) => refused(e, *json),
            }
        }
        LinksCommand::Update {
            id,
            status,
            fields,
            json,
            ..
        } => {
            let mut body = body_of(fields);
            if let Some(s) = status {
                body.insert("status".into(), json!(s));
            }
            match app
                .manager
                .update(&account, LinkId(*id), &Value::Object(body))
                .await
            {
                Ok(v) => {
                    print_link(&v, *json, "updated");
                    ExitCode::SUCCESS
                }
                Err(e) => refused(e, *json),
            }
        }
        LinksCommand::Delete { id, json, .. } => {
            match app.manager.delete(&account, LinkId(*id)).await {
                Ok(v) => {
                    print_link(&v, *json, "deleted");
                    ExitCode::SUCCESS
                }
                Err(e) => refused(e, *json),
            }
        }
    };
    // What the write owes the subscribers goes out now.
    let sent = app.dispatcher.dispatch_due().await?;
    tracing::info!(?sent, "links.dispatched");
    app.ledger.close().await;
    Ok(code)
}

/// `payment-methods [--account ID] [--json]`: the methods of the account's credential.
pub(super) async fn payment_methods(
    cfg: Config,
    given: Option<&str>,
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    telemetry::init(cfg.log.format, &cfg.log.level);
    let account = match account_of(&cfg, given) {
        Ok(a) => a,
        Err(code) => return Ok(code),
    };
    let app = App::build_beside_daemon(cfg).await?;
    let code = match app.manager.payment_methods(Some(&account)).await {
        Ok(methods) => {
            if as_json {
                println!("{}", json!({ "payment_methods": methods }));
            } else {
                for m in &methods {
                    println!(
                        "{:<20} {:<22} {}",
                        m.code,
                        m.name,
                        m.group.as_deref().unwrap_or("")
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => refused(e, as_json),
    };
    app.ledger.close().await;
    Ok(code)
}

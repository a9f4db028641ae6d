//! What the benches share: the sandbox as a separate process, its request log, this process's
//! peak RSS, counts from the environment.

#![allow(dead_code)] // each bench uses part of it

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `singapay-sync sandbox` running as its own process (killed on drop).
pub struct Sandbox(Child);

impl Sandbox {
    /// `singapay-sync sandbox` on a free port with `links` links and `history` generated
    /// history rows (`recent` of them in the last 6 days): the process and its base URL, once
    /// it answers.
    pub async fn start(links: usize, history: usize, recent: usize) -> (Sandbox, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new(env!("CARGO_BIN_EXE_singapay-sync"))
            .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--links", &links.to_string()])
            .args(["--history", &history.to_string()])
            .args(["--recent", &recent.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the sandbox");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..2000 {
            if reqwest::get(format!("{base}/_sandbox/clock")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (Sandbox(child), base)
    }

    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// This process's peak resident set (`VmHWM`), MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// The requests the sandbox logged since its log was last cleared: `(list, history)`.
pub async fn requests(http: &reqwest::Client, base: &str) -> (usize, usize) {
    let log: Vec<serde_json::Value> = http
        .get(format!("{base}/_sandbox/requests"))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("log JSON");
    let count = |part: &str| {
        log.iter()
            .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(part)))
            .count()
    };
    (
        count("/payment-link-manage/"),
        count("/payment-link-histories/"),
    )
}

pub async fn clear_requests(http: &reqwest::Client, base: &str) {
    http.delete(format!("{base}/_sandbox/requests"))
        .send()
        .await
        .expect("clear log");
}

pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

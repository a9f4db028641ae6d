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

    pub fn pid(&self) -> u32 {
        self.0.id()
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

/// The sandbox's request log since it was last cleared (`{method, path, query, status}` each).
pub async fn request_log(http: &reqwest::Client, base: &str) -> Vec<serde_json::Value> {
    http.get(format!("{base}/_sandbox/requests"))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("log JSON")
}

/// The requests the sandbox logged since its log was last cleared: `(list, history)`.
pub async fn requests(http: &reqwest::Client, base: &str) -> (usize, usize) {
    let log = request_log(http, base).await;
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

/// CPU seconds (user + system) used so far by process `pid` (`None`: this one), every thread
/// counted, those that ended too: the kernel's scheduler clock of the process
/// (`clock_getcpuclockid(3)`, `clock_gettime(2)`), kept in nanoseconds. (`/proc/PID/stat`'s
/// fields, which the benches read before 2026-12-07, tick in 1/100 s: 4% of a 0.25 s delivery
/// step.) NaN if the clock cannot be read (the process is gone).
pub fn cpu_seconds(pid: Option<u32>) -> f64 {
    let mut clock: libc::clockid_t = libc::CLOCK_PROCESS_CPUTIME_ID;
    if let Some(pid) = pid {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return f64::NAN;
        };
        // SAFETY: `clock` is a valid place for the clock id; the call only writes it.
        if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
            return f64::NAN;
        }
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid place for the time; the call only writes it.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Writes every dirty page of the machine's files back to disk (`sync(2)`) before a measured
/// step starts, so that the kernel's write-back of an earlier step's files (a baseline's 150 MB
/// ledger, flushed some 30 s after it was written, `vm.dirty_expire_centisecs`) does not run on
/// the two cores during a later step, whichever it happens to be.
pub fn settle() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// The median of `v` (NaN when empty).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The benches' account (the sandbox's seeded one).
pub const ACCOUNT: &str = "01K7P073Q8RE2A9PQT8Q7MXPN4";

/// A daemon configuration against the sandbox at `base` with its ledger at `ledger`: pages of
/// 100, 4 at a time, the seeded account, an admin listener on a free port; `extra` is appended
/// (more sections).
pub fn bench_config(
    base: &str,
    ledger: &std::path::Path,
    extra: &str,
) -> singapay_sync::config::Config {
    let toml = format!(
        r#"
[ledger]
{}
[singapay]
base_url = "{base}"
partner_id = "sandbox-partner-id"
client_id = "sandbox-client-id"
client_secret = "sandbox-client-secret"
per_page = 100
concurrency = 4
[[accounts]]
id = "{ACCOUNT}"
[http]
listen = "127.0.0.1:0"
admin_token = "bench-admin-token-0123456789"
{extra}"#,
        ledger_key(ledger)
    );
    singapay_sync::config::Config::from_toml_str(&toml).expect("config")
}

/// CPU seconds used so far by this process's threads whose name starts with `prefix` (e.g.
/// `sqlx-sqlite` for SQLite's worker threads): the first field of each one's
/// `/proc/self/task/TID/schedstat` (nanoseconds on a core). Threads that ended are not counted:
/// take it around a step during which they all live.
#[allow(dead_code)]
pub fn threads_cpu_seconds(prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .map(|t| schedstat_seconds(&t.path()).unwrap_or(f64::NAN))
        .sum()
}

/// The time on a core of the task (thread or one-threaded process) whose `/proc` directory is
/// `dir`: the first field of its `schedstat`, nanoseconds, in seconds. `None` if unreadable.
fn schedstat_seconds(dir: &std::path::Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("schedstat")).ok()?;
    let ns = text.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(ns * 1e-9)
}

/// The CPU seconds of each process of the PostgreSQL server on this machine (every process
/// whose `comm` is `postgres`: the postmaster, its background workers and one backend per
/// connection), by pid: `/proc/PID/schedstat`'s time on a core, nanoseconds (a PostgreSQL
/// process has one thread). Empty off PostgreSQL (`BENCH_LEDGER`) or where `/proc` cannot be
/// read. Meaningful when `BENCH_PG` is this machine's server (the default, 127.0.0.1).
pub fn postgres_cpu() -> std::collections::HashMap<u32, f64> {
    let mut cpu = std::collections::HashMap::new();
    if !on_postgres() {
        return cpu;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return cpu;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !std::fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim_end() == "postgres")
        {
            continue;
        }
        if let Some(seconds) = schedstat_seconds(&p.path()) {
            cpu.insert(pid, seconds);
        }
    }
    cpu
}

/// The CPU seconds the PostgreSQL server's processes spent since `before` (a [`postgres_cpu`]
/// snapshot): each live process's growth, one started since counted from zero. A process that
/// ended in between is missed; the ledger's pool keeps its connections through a step. 0 off
/// PostgreSQL.
pub fn postgres_cpu_since(before: &std::collections::HashMap<u32, f64>) -> f64 {
    postgres_cpu()
        .into_iter()
        .map(|(pid, now)| now - before.get(&pid).copied().unwrap_or(0.0))
        .sum()
}

/// Whether the benches run on PostgreSQL: `BENCH_LEDGER=postgres` (the server of
/// `BENCH_PG`, default `postgres://postgres@127.0.0.1:5432/test`; a database per ledger).
pub fn on_postgres() -> bool {
    std::env::var("BENCH_LEDGER").is_ok_and(|v| v == "postgres")
}

/// The name of the ledger backend the benches run on, for their headers.
pub fn backend_name() -> &'static str {
    if on_postgres() {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}

/// A fresh PostgreSQL database's URL (`singapay_b_<ulid>` on the `BENCH_PG` server).
pub fn fresh_postgres_database() -> String {
    let server = std::env::var("BENCH_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(singapay_sync::ledger::create_postgres_database(
                &server,
                "singapay_b_",
            ))
            .expect("PostgreSQL database")
    })
    .join()
    .expect("database thread")
}

/// The `[ledger]` key of a bench ledger: the SQLite file `ledger`, or on PostgreSQL a fresh
/// database (`ledger` unused).
pub fn ledger_key(ledger: &std::path::Path) -> String {
    if on_postgres() {
        format!("url = \"{}\"", fresh_postgres_database())
    } else {
        format!("path = \"{}\"", ledger.display())
    }
}

/// Instruction counts of the daemon's side alone, under valgrind's callgrind (its counts do not
/// move with the machine's load: the same binary and inputs give the same count within a
/// fraction of a percent). The bench runs itself again, smaller, under
/// `valgrind --tool=callgrind`; every measured step calls [`callgrind::begin`] and
/// [`callgrind::end`], on entering which callgrind zeroes its counters (`--zero-before`) and
/// dumps them (`--dump-before`): one dump per step, the instructions of every thread of this
/// process. The sandbox and the delivery receiver are processes of their own and are not
/// traced (no `--trace-children`). `perf stat -e instructions` would be cheaper but answers
/// `<not supported>` on VMs that expose no hardware counters, as this one does.
pub mod callgrind {
    use std::process::Command;

    /// Set in the environment of the bench run under callgrind.
    const COUNTING: &str = "SINGAPAY_BENCH_COUNTING";

    /// Where callgrind zeroes its counters: called as a measured step starts.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn singapay_bench_step_begin() {
        std::hint::black_box(1u8);
    }

    /// Where callgrind dumps its counters: called as a measured step ends.
    #[unsafe(no_mangle)]
    #[inline(never)]
    pub extern "C" fn singapay_bench_step_end() {
        std::hint::black_box(2u8);
    }

    /// Whether the instruction counts are wanted: not under callgrind already, and `var` (e.g.
    /// `SYNC_BENCH_INSTRUCTIONS`) not set to `0`.
    pub fn wanted(var: &str) -> bool {
        !counting() && !std::env::var(var).is_ok_and(|v| v == "0")
    }

    /// Whether this process is the bench run under callgrind.
    pub fn counting() -> bool {
        std::env::var_os(COUNTING).is_some()
    }

    /// Marks the start of a measured step (outside callgrind, only a call).
    pub fn begin() {
        singapay_bench_step_begin();
    }

    /// Marks the end of the measured step `name`; under callgrind, prints `callgrind-step NAME`
    /// so that the parent can name the dump.
    pub fn end(name: &str) {
        singapay_bench_step_end();
        if counting() {
            println!("callgrind-step {name}");
        }
    }

    /// Runs this bench binary again under callgrind with `env` added to its environment and
    /// returns each measured step's name and instructions (`Ir`), in order; `Err` says why not
    /// (valgrind missing, the run failed, no dumps).
    pub fn run(env: &[(&str, String)]) -> Result<Vec<(String, u64)>, String> {
        let version = Command::new("valgrind").arg("--version").output();
        if !version.is_ok_and(|o| o.status.success()) {
            return Err("valgrind not found (Debian's package valgrind)".into());
        }
        let exe = std::env::current_exe().map_err(|e| format!("this bench's path: {e}"))?;
        let dir = std::env::temp_dir().join(format!("singapay-sync-cg-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out_file = dir.join("cg.out");
        let output = Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out_file.display()))
            .arg("--zero-before=singapay_bench_step_begin")
            .arg("--dump-before=singapay_bench_step_end")
            .arg(&exe)
            .arg("--bench")
            .env(COUNTING, "1")
            .env("SINGAPAY_BENCH_EXE", &exe)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .map_err(|e| format!("valgrind: {e}"))?;
        let result = if output.status.success() {
            let names: Vec<String> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|l| l.strip_prefix("callgrind-step ").map(str::to_owned))
                .collect();
            // Dump k of `--dump-before` is `cg.out.k`, numbered from 1 in order.
            names
                .into_iter()
                .enumerate()
                .map(|(k, name)| {
                    let part = dir.join(format!("cg.out.{}", k + 1));
                    let text = std::fs::read_to_string(&part)
                        .map_err(|e| format!("{}: {e}", part.display()))?;
                    // `summary:` is the part's whole cost (`totals:` only what it lists).
                    let total = text
                        .lines()
                        .find_map(|l| l.strip_prefix("summary:"))
                        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                        .ok_or_else(|| format!("{}: no summary line", part.display()))?;
                    Ok((name, total))
                })
                .collect::<Result<Vec<_>, String>>()
        } else {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            Err(format!(
                "the run under callgrind failed ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ))
        };
        let _ = std::fs::remove_dir_all(&dir);
        result.and_then(|r| {
            if r.is_empty() {
                Err("callgrind dumped no step".into())
            } else {
                Ok(r)
            }
        })
    }

    /// Each step named in `variants` against the `floor` step run just before it (or, for a
    /// variant run before any floor, the first one after it): `(name, median instructions,
    /// median ratio to that floor)` in the order of `variants`, from [`run`]'s steps; the
    /// floor's own median comes first as ratio 1.
    pub fn paired(
        steps: &[(String, u64)],
        floor: &str,
        variants: &[&str],
    ) -> Vec<(String, f64, f64)> {
        let of_floor: Vec<f64> = steps
            .iter()
            .filter(|(n, _)| n == floor)
            .map(|(_, i)| *i as f64)
            .collect();
        let first_floor = of_floor.first().copied();
        let mut rows = vec![(floor.to_owned(), super::median(of_floor), 1.0)];
        for v in variants {
            let (mut counts, mut ratios, mut last_floor) = (Vec::new(), Vec::new(), None);
            for (name, ir) in steps {
                if name == floor {
                    last_floor = Some(*ir as f64);
                } else if name == v {
                    counts.push(*ir as f64);
                    if let Some(f) = last_floor.or(first_floor) {
                        ratios.push(*ir as f64 / f);
                    }
                }
            }
            rows.push((
                (*v).to_owned(),
                super::median(counts),
                super::median(ratios),
            ));
        }
        rows
    }
}

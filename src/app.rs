//! Wiring: [`App::build`] turns a [`Config`] into a running-ready handle;
//! [`App::run_until_stopped`] runs the daemon (cron pollers, dispatcher, admin HTTP) until the
//! shutdown token fires.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::ledger::Ledger;
use crate::notify::dispatcher::{EmailGroup, EmailSettings, WebhookTarget};
use crate::notify::email::Mailer;
use crate::notify::{Dispatcher, RetrySchedule, Route, Routing};
use crate::sync::{PageHook, PassOptions, SyncContext, SyncError, SyncSummary, Syncer};
use crate::time::{Clock, SystemClock};
use crate::types::Channel;
use crate::types::{AccountId, Trigger};

/// The process-wide Prometheus recorder (installed once; later apps share it).
pub(crate) fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Durations as histograms (summaries cannot be aggregated across instances or
            // alerted on by bucket): passes take seconds to minutes, deliveries milliseconds.
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("singapay_sync_pass_duration_seconds".into()),
                    &[
                        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("singapay_sync_delivery_duration_seconds".into()),
                        &[
                            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0,
                        ],
                    )
                });
            let Ok(builder) = builder else {
                return None;
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|_| handle)
        })
        .clone()
}

/// A built application: ledger open and migrated, clients ready, admin listener bound.
pub struct App {
    /// The configuration it was built from.
    pub config: Config,
    /// The ledger.
    pub ledger: Ledger,
    /// Starts and coalesces passes.
    pub(crate) syncer: Arc<Syncer>,
    /// The outbox dispatcher.
    pub dispatcher: Arc<Dispatcher>,
    /// Link management (create, update, delete through the daemon).
    pub manager: Arc<crate::manage::Manager>,
    /// The clock.
    pub(crate) clock: Arc<dyn Clock>,
    work: CancellationToken,
    listener: Option<TcpListener>,
    /// The inbound (doorbell) listener, when `[inbound]` is configured and bound.
    inbound_listener: Option<TcpListener>,
    /// Wakes the inbound processor (a notification was stored).
    inbound_wake: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("ledger", &self.config.ledger.path)
            .field("listen", &self.local_addr())
            .field("inbound", &self.inbound_addr())
            .finish()
    }
}

/// The routing (who gets which event) of a config.
pub(crate) fn routing(config: &Config) -> Routing {
    let mut routes: Vec<Route> = config
        .webhooks
        .iter()
        .map(|w| Route {
            name: w.name.clone(),
            channel: Channel::Webhook,
            events: w.events.clone(),
        })
        .collect();
    if let Some(e) = &config.email {
        routes.extend(e.recipients.iter().map(|r| Route {
            name: r.name.clone(),
            channel: Channel::Email,
            events: r.events.clone(),
        }));
    }
    Routing { routes }
}

impl App {
    /// Builds the app with the system clock. See [`App::build_with_clock`].
    pub async fn build(config: Config) -> anyhow::Result<App> {
        Self::build_with_clock(config, Arc::new(SystemClock), true).await
    }

    /// Opens the ledger (applying migrations, marking runs a crash left `running` as failed),
    /// builds the SingaPay client, the dispatcher and the syncer, and, if `bind`, binds the admin
    /// listener (`http.listen`; port 0 picks a free one).
    ///
    /// Errors: ledger, TLS or bind failures, with context.
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
        bind: bool,
    ) -> anyhow::Result<App> {
        Self::build_inner(config, clock, bind, true).await
    }

    /// Builds the app beside a daemon that may be running on the same ledger (the `links` and
    /// `payment-methods` commands): like [`App::build_with_clock`] without a listener, but it
    /// leaves other processes' runs and delivery claims alone (only a starting daemon may call
    /// them abandoned).
    ///
    /// Errors: ledger or TLS failures, with context.
    pub async fn build_beside_daemon(config: Config) -> anyhow::Result<App> {
        Self::build_inner(config, Arc::new(SystemClock), false, false).await
    }

    async fn build_inner(
        config: Config,
        clock: Arc<dyn Clock>,
        bind: bool,
        recover: bool,
    ) -> anyhow::Result<App> {
        let ledger = Ledger::connect(&config.ledger).await.with_context(|| {
            if config.ledger.postgres.is_some() {
                // Not the URL: it may hold a password.
                "opening the PostgreSQL ledger (ledger.url)".to_string()
            } else {
                format!("opening the ledger {}", config.ledger.path.display())
            }
        })?;
        // On PostgreSQL other instances may be running passes and sending right now: their runs
        // are ended by whoever next takes the account's lock, their claims only once the lease
        // lapsed (the dispatcher checks at every turn).
        if recover && !ledger.is_postgres() {
            let abandoned = ledger.fail_abandoned_runs(clock.now()).await?;
            if abandoned > 0 {
                warn!(abandoned, "sync.abandoned_runs_marked_failed");
            }
            let interrupted = ledger.recover_interrupted_attempts(None).await?;
            if interrupted > 0 {
                warn!(
                    interrupted,
                    "delivery.interrupted: deliveries claimed when the daemon stopped are sent again"
                );
                metrics::counter!("singapay_sync_deliveries_interrupted_total")
                    .increment(interrupted);
            }
        }
        let client = config.singapay_client()?;
        let email = match &config.email {
            None => None,
            Some(e) => Some(EmailSettings {
                mailer: Mailer::from_url(&e.smtp_url, e.timeout).map_err(anyhow::Error::msg)?,
                from: e.from.clone(),
                groups: e
                    .recipients
                    .iter()
                    .map(|r| (r.name.clone(), EmailGroup { to: r.to.clone() }))
                    .collect(),
            }),
        };
        let dispatcher = Arc::new(
            Dispatcher::new(
                ledger.clone(),
                config
                    .webhooks
                    .iter()
                    .map(|w| WebhookTarget {
                        name: w.name.clone(),
                        url: w.url.clone(),
                        secret: w.secret.clone(),
                    })
                    .collect(),
                email,
                RetrySchedule {
                    delays: config.delivery.retry_schedule.clone(),
                    jitter: 0.2,
                },
                config.delivery.timeout,
                config.delivery.concurrency,
                Arc::clone(&clock),
            )
            .map_err(anyhow::Error::msg)
            .map(|d| {
                let d = d.with_per_subscriber_limit(config.delivery.per_subscriber_concurrency);
                if ledger.is_postgres() {
                    d.with_lease(config.ledger.lease)
                } else {
                    d
                }
            })?,
        );
        let work = CancellationToken::new();
        let ctx = Arc::new(SyncContext {
            ledger: ledger.clone(),
            client,
            routing: routing(&config),
            per_page: config.singapay.per_page,
            concurrency: config.singapay.concurrency,
            notify_on_baseline: config.sync.notify_on_baseline,
            clock: Arc::clone(&clock),
            wake: Some(Arc::clone(&dispatcher.wake)),
            max_deletions: config.sync.max_deletions,
            history_window: config.sync.history_window,
            page_hook: std::sync::OnceLock::new(),
            passed: Arc::new(tokio::sync::Notify::new()),
        });
        let syncer = Syncer::new(ctx, work.clone());
        let manager = Arc::new(crate::manage::Manager::new(Arc::clone(&syncer)));
        let listener = if bind {
            Some(
                TcpListener::bind(config.http.listen)
                    .await
                    .with_context(|| format!("binding http.listen {}", config.http.listen))?,
            )
        } else {
            None
        };
        let inbound_listener = match (&config.inbound, bind) {
            (Some(i), true) => Some(
                TcpListener::bind(i.listen)
                    .await
                    .with_context(|| format!("binding inbound.listen {}", i.listen))?,
            ),
            _ => None,
        };
        Ok(App {
            config,
            ledger,
            syncer,
            dispatcher,
            manager,
            clock,
            work,
            listener,
            inbound_listener,
            inbound_wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    /// The bound admin address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The bound inbound (doorbell) address, when `[inbound]` is configured.
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The candidate keys of SingaPay's webhook signatures: `inbound.keys`, then every
    /// credential's client secret (DOC2 webhooks "Security and signature": which key signs is
    /// not settled, so every one is tried; DESIGN §16: any merchant's webhook may arrive).
    fn inbound_keys(&self) -> Vec<secrecy::SecretString> {
        let mut keys = self
            .config
            .inbound
            .as_ref()
            .map(|i| i.keys.clone())
            .unwrap_or_default();
        keys.extend(self.config.client_secrets());
        keys
    }

    fn inbound_processor(&self) -> crate::inbound::processor::Processor {
        crate::inbound::processor::Processor {
            ledger: self.ledger.clone(),
            syncer: Arc::clone(&self.syncer),
            accounts: self.config.accounts.iter().map(|a| a.id.clone()).collect(),
            clock: Arc::clone(&self.clock),
            wake: Arc::clone(&self.inbound_wake),
            lease: self.config.ledger.lease,
        }
    }

    /// Processes the stored notifications due now, once (tests; the daemon drains them
    /// continuously). Returns how many were taken.
    ///
    /// Errors: the ledger failed.
    pub async fn process_inbound(&self) -> Result<usize, crate::ledger::LedgerError> {
        self.inbound_processor().drain_once().await
    }

    /// One pass of each configured account (or only `only`), accounts concurrently. Used by the
    /// `sync` command and tests (which then call [`Dispatcher::dispatch_due`]).
    pub async fn sync_all(
        &self,
        only: Option<&AccountId>,
    ) -> Vec<(AccountId, Result<SyncSummary, SyncError>)> {
        self.sync_all_with(only, PassOptions::default()).await
    }

    /// One scheduled pass of each configured account, as the cron fires them (on a shared
    /// PostgreSQL ledger an account another instance already took for this slot is skipped:
    /// [`SyncError::Busy`] with that run). Used by the benches of several instances.
    pub async fn sync_scheduled(&self) -> Vec<(AccountId, Result<SyncSummary, SyncError>)> {
        let passes = self.config.accounts.iter().map(|a| async move {
            let r = self
                .syncer
                .sync_now(&a.id, Trigger::Schedule, PassOptions::default())
                .await;
            (a.id.clone(), r)
        });
        futures_util::future::join_all(passes).await
    }

    /// [`App::sync_all`] with options (`sync --confirm-deletions`).
    pub async fn sync_all_with(
        &self,
        only: Option<&AccountId>,
        opts: PassOptions,
    ) -> Vec<(AccountId, Result<SyncSummary, SyncError>)> {
        let passes = self
            .config
            .accounts
            .iter()
            .filter(|a| only.is_none_or(|o| *o == a.id))
            .map(|a| async move {
                let r = self.syncer.sync_now(&a.id, Trigger::Manual, opts).await;
                (a.id.clone(), r)
            });
        futures_util::future::join_all(passes).await
    }

    /// Sets the hook called before each page of every pass is diffed (tests inject faults with
    /// it; at most once, later calls are ignored).
    pub fn set_page_hook(&self, hook: PageHook) {
        let _ = self.syncer.context().page_hook.set(hook);
    }

    /// Runs the daemon until `shutdown` fires: admin HTTP, one cron poller per account, the
    /// dispatcher; tells systemd READY=1 when up and pings its watchdog while the dispatcher and
    /// the schedulers show progress. On shutdown, stops taking work, lets the page and delivery
    /// batch in flight finish, and returns `Ok`.
    ///
    /// Errors: the scheduler cannot start; or a loop (dispatcher, admin listener, schedulers)
    /// stopped or panicked on its own: the rest is stopped and the error says which, so that the
    /// process exits non-zero and systemd restarts it.
    pub async fn run_until_stopped(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let listener = self
            .listener
            .take()
            .context("the admin listener was not bound (build with bind = true)")?;
        let addr = listener.local_addr().ok();
        let state = crate::http::AdminState {
            ledger: self.ledger.clone(),
            syncer: Arc::clone(&self.syncer),
            wake: Arc::clone(&self.dispatcher.wake),
            admin_token: self.config.http.admin_token.clone(),
            accounts: self.config.accounts.clone(),
            clock: Arc::clone(&self.clock),
            metrics: metrics_handle(),
            manager: Arc::clone(&self.manager),
        };
        let http_stop = CancellationToken::new();
        let limits = crate::http::Limits {
            header_timeout: self.config.http.header_timeout,
            request_timeout: self.config.http.request_timeout,
            concurrency: 64,
            body_limit: 64 * 1024,
        };
        let mut http = tokio::spawn(crate::http::serve(
            listener,
            crate::http::router(state),
            limits,
            http_stop.clone(),
        ));
        let (mut sched, heartbeat) = crate::sync::schedule::start(
            Arc::clone(&self.syncer),
            self.config
                .accounts
                .iter()
                .map(|a| (a.id.clone(), a.schedule.clone()))
                .collect(),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        let dispatcher = Arc::clone(&self.dispatcher);
        let work = self.work.clone();
        let mut disp = tokio::spawn(async move { dispatcher.run(work, DISPATCH_IDLE).await });
        // The doorbell: its own listener with the admin listener's limits, and the queue's
        // consumer. Without `[inbound]`, a task that waits for the stop (so `select!` below
        // has one shape).
        let inbound_stop = CancellationToken::new();
        let mut inbound = match (self.inbound_listener.take(), &self.config.inbound) {
            (Some(l), Some(cfg)) => {
                let bell = crate::inbound::Doorbell {
                    ledger: self.ledger.clone(),
                    verifier: Arc::new(crate::inbound::signature::Verifier::new(
                        cfg.path.clone(),
                        self.inbound_keys(),
                        cfg.tolerance,
                    )),
                    clock: Arc::clone(&self.clock),
                    wake: Arc::clone(&self.inbound_wake),
                };
                info!(listen = ?l.local_addr().ok(), path = %cfg.path, "inbound.listening");
                tokio::spawn(crate::http::serve(
                    l,
                    crate::inbound::router(cfg.route(), bell),
                    limits,
                    inbound_stop.clone(),
                ))
            }
            _ => {
                let stop = inbound_stop.clone();
                tokio::spawn(async move {
                    stop.cancelled().await;
                    Ok(())
                })
            }
        };
        let mut processor = tokio::spawn(self.inbound_processor().run(self.work.clone()));
        let mut expiry = tokio::spawn(
            crate::sync::expiry::ExpiryTimer {
                syncer: Arc::clone(&self.syncer),
                accounts: self.config.accounts.iter().map(|a| a.id.clone()).collect(),
                wake: Arc::clone(&self.syncer.context().passed),
            }
            .run(self.work.clone()),
        );
        let retention = tokio::spawn(crate::maintenance::run(
            self.ledger.clone(),
            self.config.ledger.clone(),
            Arc::clone(&self.clock),
            self.work.clone(),
        ));

        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        let watchdog = watchdog_task(
            shutdown.clone(),
            Arc::clone(&self.dispatcher),
            heartbeat.clone(),
        );
        info!(listen = ?addr, accounts = self.config.accounts.len(), "daemon.ready");

        // Which loop ended on its own, if one did (its handle is then spent).
        let (died, disp_done, http_done) = tokio::select! {
            _ = shutdown.cancelled() => (None, false, false),
            r = &mut processor => {
                (Some(format!("the inbound processor stopped: {}", ended(r))), false, false)
            }
            r = &mut expiry => {
                (Some(format!("the expiry timer stopped: {}", ended(r))), false, false)
            }
            r = &mut inbound => {
                (Some(format!("the inbound listener stopped: {}", served(r))), false, false)
            }
            r = &mut disp => (Some(format!("the dispatcher stopped: {}", ended(r))), true, false),
            r = &mut http => {
                (Some(format!("the admin listener stopped: {}", served(r))), false, true)
            }
            _ = stalled(&heartbeat) => (Some("the schedulers stopped ticking".to_string()), false, false),
        };
        if let Some(why) = &died {
            error!(why = %why, "daemon.loop_died");
        }
        info!("daemon.stopping");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        if let Err(e) = sched.shutdown().await {
            warn!(error = %e, "daemon.scheduler_shutdown_failed");
        }
        self.work.cancel();
        inbound_stop.cancel();
        // A loop that already ended (and was reported above) is not awaited again.
        for (name, task) in [("processor", processor), ("expiry", expiry)] {
            if !task.is_finished()
                && let Err(e) = task.await
            {
                error!(task = name, error = %e, "daemon.task_panicked");
            }
        }
        self.syncer.wait().await;
        if let Err(e) = retention.await {
            error!(error = %e, "daemon.retention_panicked");
        }
        if !disp_done && let Err(e) = disp.await {
            error!(error = %e, "daemon.dispatcher_panicked");
        }
        http_stop.cancel();
        if !http_done {
            match http.await {
                Ok(Err(e)) => error!(error = %e, "daemon.http_failed"),
                Err(e) => error!(error = %e, "daemon.http_panicked"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(w) = watchdog {
            w.abort();
        }
        self.ledger.close().await;
        info!("daemon.stopped");
        match died {
            None => Ok(()),
            Some(why) => Err(anyhow::anyhow!(why)),
        }
    }
}

/// How long the dispatcher sleeps at most when nothing is due.
const DISPATCH_IDLE: Duration = Duration::from_secs(30);

/// Why a task that should have run forever ended.
fn ended(r: Result<(), tokio::task::JoinError>) -> String {
    match r {
        Ok(()) => "it returned".into(),
        Err(e) if e.is_panic() => format!(
            "it panicked: {}",
            crate::sync::pass::panic_message(&*e.into_panic())
        ),
        Err(e) => e.to_string(),
    }
}

/// Why a listener's task ended.
fn served(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> String {
    match r {
        Ok(Ok(())) => "without an error".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(e) => ended(Err(e)),
    }
}

/// Resolves when the schedulers have not ticked for 6 heartbeats.
async fn stalled(heartbeat: &crate::sync::schedule::Heartbeat) {
    let limit = crate::sync::schedule::HEARTBEAT_EVERY * 6;
    loop {
        tokio::time::sleep(crate::sync::schedule::HEARTBEAT_EVERY).await;
        if heartbeat.since() > limit {
            return;
        }
    }
}

/// Pings systemd's watchdog (`WatchdogSec=`) every half period, but only while the dispatcher
/// made progress within two idle intervals and the schedulers ticked within three heartbeats: a
/// daemon whose loops are stuck is restarted instead of being kept alive.
fn watchdog_task(
    stop: CancellationToken,
    dispatcher: Arc<Dispatcher>,
    heartbeat: crate::sync::schedule::Heartbeat,
) -> Option<tokio::task::JoinHandle<()>> {
    let every = sd_notify::watchdog_enabled()? / 2;
    if every.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(every) => {
                    let dispatching = dispatcher.since_progress() < DISPATCH_IDLE * 2;
                    let ticking = heartbeat.since() < crate::sync::schedule::HEARTBEAT_EVERY * 3;
                    if dispatching && ticking {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    } else {
                        warn!(dispatching, ticking, "daemon.watchdog_withheld");
                    }
                }
            }
        }
    }))
}

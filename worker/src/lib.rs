//! The orgadmin worker: the outbox sender, import jobs and scheduled sweeps.
//! All enter the same domain services as the gRPC handlers.

pub mod health;
pub mod imports;
pub mod mail;
pub mod smtp;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use orgadmin_domain::model::now_millis;
use orgadmin_domain::{Config, Domain};
use tokio::sync::{Mutex, watch};
use tokio_cron_scheduler::{Job, JobScheduler};
use tracing::Instrument;

/// A sweep runs once per scheduled tick across all replicas: the tick's
/// second is the period each replica tries to claim.
const TICK_CLAIM_MS: i64 = 1000;
/// A sweep running longer than this is worth a warning at each tick it
/// makes the worker skip.
const LONG_SWEEP_MS: i64 = 60_000;

/// What the worker reads from configuration that the configuration's own
/// checks do not: the sweep schedule, the mail transport and sender. The
/// service runs it before it serves in `standalone`, so a mistake stops the
/// start instead of leaving a service whose worker never ran.
pub fn check_config(config: &Config) -> anyhow::Result<()> {
    schedule_job(&config.reactivation_schedule, |_| async {})?;
    mail::Transport::from_config(config)?;
    mail::sender(config)?;
    Ok(())
}

/// The sweep's job on `schedule` (six fields, seconds first).
fn schedule_job<F>(schedule: &str, tick: impl Fn(bool) -> F + Send + Sync + 'static) -> anyhow::Result<Job>
where
    F: Future<Output = ()> + Send + 'static,
{
    Job::new_async(schedule, move |_, _| Box::pin(tick(true))).map_err(|e| {
        anyhow::anyhow!(
            "ORGADMIN_REACTIVATION_SCHEDULE={schedule:?} is not a schedule (six fields, seconds first): {e}"
        )
    })
}

/// Runs the outbox sender and the scheduler until `shutdown` resolves, then
/// stops both cleanly (a batch or sweep in flight is finished). Returns an
/// error when the sender or the import runner ends before that (a panic):
/// the process then exits, and its supervisor restarts it, instead of living
/// on without mail or imports.
pub async fn run(domain: Domain, config: &Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let worker_id = format!("{}-{}", hostname(), uuid::Uuid::now_v7().simple());
    let (stop_tx, stop_rx) = watch::channel(false);
    // Everything that can fail on configuration fails before a loop starts.
    let outbox = mail::Outbox::from_config(domain.clone(), config, worker_id.clone())?;

    let batch = config.reactivation_batch_size;
    // One sweep at a time in this process; a slow sweep skips the next tick
    // instead of piling up.
    let sweeping = Arc::new(Mutex::new(()));
    // When the sweep now running started (ms), for the warning below.
    let sweep_started = Arc::new(AtomicI64::new(0));
    let last_purge = Arc::new(AtomicI64::new(0));
    let sweep = {
        let domain = domain.clone();
        let sweeping = sweeping.clone();
        let worker_id = worker_id.clone();
        let sweep_started = sweep_started.clone();
        move |claim: bool| {
            let domain = domain.clone();
            let sweeping = sweeping.clone();
            let worker_id = worker_id.clone();
            let sweep_started = sweep_started.clone();
            let last_purge = last_purge.clone();
            async move {
                let Ok(_running) = sweeping.try_lock() else {
                    // A tick now and then falls into a sweep; a sweep that
                    // outlasts many ticks (a lock it waits on, a huge
                    // backlog) holds up reactivations, the CRL and expiry
                    // warnings, and says so.
                    let running_ms = now_millis() - sweep_started.load(Ordering::Relaxed);
                    if running_ms > LONG_SWEEP_MS {
                        tracing::warn!(running_ms, "a sweep is still running; this tick is skipped");
                    }
                    return;
                };
                sweep_started.store(now_millis(), Ordering::Relaxed);
                let now = now_millis();
                if claim {
                    match domain
                        .claim_sweep_period("timed-reactivation", TICK_CLAIM_MS, now, &worker_id)
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => {
                            tracing::error!(error = %e, "could not claim the sweep period");
                            return;
                        }
                    }
                }
                let started = std::time::Instant::now();
                let swept = async {
                    if let Err(e) = domain.reactivate_due_users(now, batch).await {
                        tracing::error!(error = %e, "timed reactivation sweep failed");
                    }
                    certificate_sweep(&domain, now).await;
                    purge_if_due(&domain, now, &last_purge).await;
                };
                // A sweep is a root span of its own: no request queued it.
                let span = if orgadmin_domain::telemetry::traces_enabled() {
                    tracing::info_span!("sweep", otel.kind = "internal", sweep = "timed-reactivation")
                } else {
                    tracing::Span::none()
                };
                swept.instrument(span).await;
                orgadmin_domain::metrics::sweep_finished("timed-reactivation", started.elapsed());
            }
        }
    };

    let job = schedule_job(&config.reactivation_schedule, sweep.clone())?;
    let mut scheduler = JobScheduler::new().await?;
    scheduler.add(job).await?;

    let mut sender = tokio::spawn(outbox.run(stop_rx.clone()));
    let mut importer = tokio::spawn(imports::run(
        domain.clone(),
        worker_id.clone(),
        std::time::Duration::from_millis(config.import_poll_interval_ms),
        stop_rx,
    ));
    scheduler.start().await?;
    tracing::info!(worker = %worker_id, schedule = %config.reactivation_schedule, "worker started");
    // Catch up at once on what came due while no worker ran (safe to run
    // beside another replica: the sweep claims its rows).
    sweep(false).await;
    tokio::pin!(shutdown);
    let ended_early = tokio::select! {
        () = &mut shutdown => None,
        ended = &mut sender => Some(("outbox sender", ended)),
        ended = &mut importer => Some(("import runner", ended)),
    };
    scheduler.shutdown().await?;
    let _ = stop_tx.send(true);
    if let Some((name, ended)) = ended_early {
        let why = match ended {
            Ok(()) => "it returned".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::error!(loop_name = name, %why, "a worker loop ended; the worker stops");
        // The other loop finishes what it holds; its end was not awaited.
        let other = if name == "outbox sender" { importer } else { sender };
        let _ = other.await;
        let _idle = sweeping.lock().await;
        anyhow::bail!("the {name} ended unexpectedly ({why})");
    }
    sender.await?;
    importer.await?;
    // Wait for a sweep in progress to commit before returning.
    let _idle = sweeping.lock().await;
    tracing::info!("worker stopped");
    Ok(())
}

/// R-CERT-5 and R-CERT-7 on the sweep's tick: a new CRL when one is due,
/// certificates past their end EXPIRED, orders whose pickup expired
/// deleted, expiry warnings. Each step is safe
/// beside another replica (conditional updates), and one failing does not
/// stop the others.
async fn certificate_sweep(domain: &Domain, now: i64) {
    if domain.certificate_authority().is_none() {
        return;
    }
    if let Err(e) = domain.refresh_crl_if_due(now).await {
        tracing::error!(error = %e, "could not re-sign the CRL");
    }
    match domain.expire_certificates(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(expired = n, "certificates expired"),
        Err(e) => tracing::error!(error = %e, "certificate expiry sweep failed"),
    }
    match domain.end_unclaimed_orders(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(deleted = n, "certificate orders whose pickup expired deleted"),
        Err(e) => tracing::error!(error = %e, "deleting certificate orders whose pickup expired failed"),
    }
    match domain.warn_expiring_certificates(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(warned = n, "certificate expiry warnings queued"),
        Err(e) => tracing::error!(error = %e, "certificate expiry warnings failed"),
    }
}

/// How often the sweep purges ended sessions: hourly is plenty for rows
/// kept a week, and the purge reads the whole sessions table.
const PURGE_EVERY_MS: i64 = 60 * 60 * 1000;

/// Ended sessions, expired login challenges and the other ended records
/// (`Domain::purge_ended_sessions`) deleted, hourly (safe beside
/// another replica: deleting what is gone deletes nothing).
/// `last_purge`: when this worker last purged (ms; 0: not yet).
async fn purge_if_due(domain: &Domain, now: i64, last_purge: &AtomicI64) {
    let last = last_purge.load(Ordering::Relaxed);
    if last != 0 && now - last < PURGE_EVERY_MS {
        return;
    }
    last_purge.store(now, Ordering::Relaxed);
    match domain.purge_ended_sessions(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            deleted = n,
            "ended sessions, links, requests to join and sent mails purged"
        ),
        Err(e) => tracing::error!(error = %e, "the purge of ended sessions failed"),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".into())
}

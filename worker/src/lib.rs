//! The orgadmin worker: scheduled sweeps (and, later, outbox and jobs) that
//! enter the same domain services as the gRPC handlers.

use std::future::Future;
use std::sync::Arc;

use orgadmin_domain::model::now_millis;
use orgadmin_domain::{Config, Domain};
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};

/// Runs the scheduler until `shutdown` resolves, then stops it cleanly.
pub async fn run(domain: Domain, config: &Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let batch = config.reactivation_batch_size;
    // One sweep at a time in this process; a slow sweep skips the next tick
    // instead of piling up. Across processes the row locks split the work.
    let sweeping = Arc::new(Mutex::new(()));
    let sweep = {
        let domain = domain.clone();
        let sweeping = sweeping.clone();
        move || {
            let domain = domain.clone();
            let sweeping = sweeping.clone();
            async move {
                let Ok(_running) = sweeping.try_lock() else {
                    return;
                };
                if let Err(e) = domain.reactivate_due_users(now_millis(), batch).await {
                    tracing::error!(error = %e, "timed reactivation sweep failed");
                }
            }
        }
    };

    let mut scheduler = JobScheduler::new().await?;
    let tick = sweep.clone();
    scheduler
        .add(Job::new_async(config.reactivation_schedule.as_str(), move |_, _| {
            Box::pin(tick())
        })?)
        .await?;
    scheduler.start().await?;
    tracing::info!(schedule = %config.reactivation_schedule, "worker started");
    // Catch up at once on what came due while no worker ran.
    sweep().await;
    shutdown.await;
    scheduler.shutdown().await?;
    // Wait for a sweep in progress to commit before returning.
    let _idle = sweeping.lock().await;
    tracing::info!("worker stopped");
    Ok(())
}

//! The import runner (R-BULK-3): claims queued import jobs one at a time and
//! runs each to its end through the domain, and now and then deletes the
//! files of jobs past their retention.

use std::time::{Duration, Instant};

use orgadmin_domain::Domain;
use orgadmin_domain::model::now_millis;
use orgadmin_domain::telemetry;
use tokio::sync::watch;
use tracing::Instrument;

/// How often the files of finished jobs are looked at.
const PURGE_EVERY: Duration = Duration::from_secs(60);

pub async fn run(domain: Domain, worker_id: String, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut last_purge: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        if last_purge.is_none_or(|at| at.elapsed() >= PURGE_EVERY) {
            last_purge = Some(Instant::now());
            match domain.purge_import_files(now_millis()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "import files past their retention deleted"),
                Err(e) => tracing::error!(error = %e, "could not delete old import files"),
            }
        }
        match domain.claim_import(&worker_id).await {
            Ok(Some(claimed)) => {
                let job_id = claimed.id;
                let flag = stop.clone();
                let should_stop = move || *flag.borrow();
                // The run joins the trace of the CreateImport call.
                let span = if telemetry::traces_enabled() {
                    let span = tracing::info_span!("import.run", otel.kind = "consumer", import = %job_id);
                    telemetry::adopt_remote_parent(&span, claimed.traceparent.as_deref(), None);
                    span
                } else {
                    tracing::Span::none()
                };
                let ran = domain
                    .run_import(job_id, &worker_id, &should_stop)
                    .instrument(span)
                    .await;
                if let Err(e) = ran {
                    // The claim's lease runs out and the job resumes from
                    // its last checkpoint, here or on another worker.
                    tracing::error!(import = %job_id, error = %e, "import stopped by an error; it resumes after its lease");
                } else {
                    // There may be more work: look again at once.
                    continue;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "could not look for queued imports"),
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            // A stop sender gone is a stop too (see the outbox's loop).
            changed = stop.changed() => if changed.is_err() { break },
        }
    }
}

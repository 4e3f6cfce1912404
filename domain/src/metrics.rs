//! The metrics orgadmin exports over OTLP (R-OPS-3), in one place so a name
//! is spelled once. Names follow the OpenTelemetry semantic conventions where
//! one exists (`rpc.server.duration`, `db.client.connection.wait_time`);
//! orgadmin's own start with `orgadmin.`. Every recording is skipped while
//! metrics are off (`telemetry::metrics_enabled`), so an install without an
//! OTLP endpoint pays nothing.

use std::sync::LazyLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram};

use crate::telemetry::metrics_enabled;

pub struct Instruments {
    rpc_duration: Histogram<f64>,
    rpc_shed: Counter<u64>,
    pool_wait: Histogram<f64>,
    outbox_depth: Gauge<u64>,
    outbox_oldest_age: Gauge<f64>,
    mails: Counter<u64>,
    import_rows: Counter<u64>,
    jobs_claimed: Counter<u64>,
    sweep_duration: Histogram<f64>,
    certificates_issued: Counter<u64>,
}

/// Milliseconds buckets for call latency: a GetUser is well under 1 ms, an
/// argon2 check about 50, an import upload seconds.
const LATENCY_MS_BUCKETS: [f64; 16] = [
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
];

/// Built on first use, after `telemetry::init` set the global meter provider.
static INSTRUMENTS: LazyLock<Instruments> = LazyLock::new(|| {
    let meter = opentelemetry::global::meter("orgadmin");
    Instruments {
        rpc_duration: meter
            .f64_histogram("rpc.server.duration")
            .with_unit("ms")
            .with_description("Duration of inbound gRPC calls, by method and status code")
            .with_boundaries(LATENCY_MS_BUCKETS.to_vec())
            .build(),
        rpc_shed: meter
            .u64_counter("orgadmin.rpc.shed")
            .with_unit("{call}")
            .with_description("Calls refused with RESOURCE_EXHAUSTED because the in-flight bound was reached")
            .build(),
        pool_wait: meter
            .f64_histogram("db.client.connection.wait_time")
            .with_unit("ms")
            .with_description("Time from asking the pool for a connection to an open write transaction")
            .with_boundaries(LATENCY_MS_BUCKETS.to_vec())
            .build(),
        outbox_depth: meter
            .u64_gauge("orgadmin.outbox.depth")
            .with_unit("{mail}")
            .with_description("Mails waiting to be sent (pending, including those waiting for a retry)")
            .build(),
        outbox_oldest_age: meter
            .f64_gauge("orgadmin.outbox.oldest_age")
            .with_unit("s")
            .with_description("Age of the oldest mail not yet sent")
            .build(),
        mails: meter
            .u64_counter("orgadmin.mail.deliveries")
            .with_unit("{mail}")
            .with_description("Delivery attempts by outcome: sent, failed (retried later), parked (given up)")
            .build(),
        import_rows: meter
            .u64_counter("orgadmin.import.rows")
            .with_unit("{row}")
            .with_description("Import rows processed, by outcome (applied, failed)")
            .build(),
        jobs_claimed: meter
            .u64_counter("orgadmin.jobs.claimed")
            .with_unit("{job}")
            .with_description("Work claimed by this worker: import jobs, mail batches")
            .build(),
        sweep_duration: meter
            .f64_histogram("orgadmin.sweep.duration")
            .with_unit("s")
            .with_description("Duration of a scheduled sweep")
            .build(),
        certificates_issued: meter
            .u64_counter("orgadmin.certificates.issued")
            .with_unit("{certificate}")
            .with_description("Certificates issued, by kind")
            .build(),
    }
});

fn instruments() -> Option<&'static Instruments> {
    metrics_enabled().then(|| &*INSTRUMENTS)
}

/// One finished gRPC call. `service` and `method` come from the request path.
pub fn rpc_finished(service: &'static str, method: &'static str, grpc_status: i64, elapsed: Duration) {
    if let Some(m) = instruments() {
        m.rpc_duration.record(
            elapsed.as_secs_f64() * 1000.0,
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
                KeyValue::new("rpc.grpc.status_code", grpc_status),
            ],
        );
    }
}

pub fn rpc_shed(service: &'static str, method: &'static str) {
    if let Some(m) = instruments() {
        m.rpc_shed.add(
            1,
            &[
                KeyValue::new("rpc.service", service),
                KeyValue::new("rpc.method", method),
            ],
        );
    }
}

pub fn pool_wait(backend: &'static str, elapsed: Duration) {
    if let Some(m) = instruments() {
        m.pool_wait
            .record(elapsed.as_secs_f64() * 1000.0, &[KeyValue::new("db.system", backend)]);
    }
}

pub fn outbox_backlog(depth: u64, oldest_age: Duration) {
    if let Some(m) = instruments() {
        m.outbox_depth.record(depth, &[]);
        m.outbox_oldest_age.record(oldest_age.as_secs_f64(), &[]);
    }
}

/// `outcome`: "sent", "sent_again" (delivered once more by a claim that
/// outlived its lease: a duplicate with the same Message-ID), "failed" (will
/// be retried), "parked", or "expired" (parked unsent: its content, a login
/// code or a single-use link, died before it could be delivered).
pub fn mail_delivery(outcome: &'static str) {
    if let Some(m) = instruments() {
        m.mails.add(1, &[KeyValue::new("outcome", outcome)]);
    }
}

pub fn import_rows(applied: u64, failed: u64) {
    if let Some(m) = instruments() {
        if applied > 0 {
            m.import_rows.add(applied, &[KeyValue::new("outcome", "applied")]);
        }
        if failed > 0 {
            m.import_rows.add(failed, &[KeyValue::new("outcome", "failed")]);
        }
    }
}

/// `job`: "import" or "mail_batch".
pub fn job_claimed(job: &'static str, count: u64) {
    if let Some(m) = instruments()
        && count > 0
    {
        m.jobs_claimed.add(count, &[KeyValue::new("job", job)]);
    }
}

pub fn sweep_finished(sweep: &'static str, elapsed: Duration) {
    if let Some(m) = instruments() {
        m.sweep_duration
            .record(elapsed.as_secs_f64(), &[KeyValue::new("sweep", sweep)]);
    }
}

pub fn certificate_issued(kind: &str) {
    if let Some(m) = instruments() {
        m.certificates_issued.add(1, &[KeyValue::new("kind", kind.to_owned())]);
    }
}

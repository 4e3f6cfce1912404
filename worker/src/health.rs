//! gRPC health of the worker process, for its own Deployment's liveness and
//! readiness probes: `grpc.health.v1` on `worker_health_listen`, the overall
//! status ("") SERVING while the worker runs and NOT_SERVING from the moment
//! it is told to stop (while it finishes what is in flight).
//!
//! Only the `orgadmin-worker` binary serves it: a worker run inside
//! `orgadmin-service standalone` is covered by the service's own health.

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// The running health server.
pub struct Health {
    reporter: HealthReporter,
    local_addr: std::net::SocketAddr,
    stop: watch::Sender<bool>,
    served: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Health {
    /// Binds `listen` (failing at once, with the variable's name, when it
    /// cannot) and serves SERVING until [`Health::stop`].
    pub async fn start(listen: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen} (ORGADMIN_WORKER_HEALTH_LISTEN)"))?;
        let local_addr = listener.local_addr()?;
        let (reporter, service) = tonic_health::server::health_reporter();
        reporter.set_service_status("", ServingStatus::Serving).await;
        let (stop, mut stopped) = watch::channel(false);
        let served = tokio::spawn(Server::builder().add_service(service).serve_with_incoming_shutdown(
            TcpListenerStream::new(listener),
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ));
        tracing::info!(listen = %local_addr, "worker health listening");
        Ok(Self {
            reporter,
            local_addr,
            stop,
            served,
        })
    }

    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// The reporter, to say NOT_SERVING when shutdown begins.
    pub fn reporter(&self) -> HealthReporter {
        self.reporter.clone()
    }

    /// Ends the health server (after the worker has stopped).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.served.await??;
        Ok(())
    }
}

/// Reports NOT_SERVING: the worker is draining and takes no new work.
pub async fn not_serving(reporter: &HealthReporter) {
    reporter.set_service_status("", ServingStatus::NotServing).await;
}

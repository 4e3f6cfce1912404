//! `orgadmin-service`: serve gRPC, run migrations, or run the whole system
//! (service and worker) in one process on the embedded default.

use std::path::Path;

use anyhow::Context;
use clap::{Parser, Subcommand};
use orgadmin_domain::{Config, Domain};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser)]
#[command(
    name = "orgadmin-service",
    version,
    about = "orgadmin gRPC service",
    long_about = "orgadmin gRPC service. Configured by the environment (DATABASE_URL, ORGADMIN_*, SMTP_URL) or the TOML file named by ORGADMIN_CONFIG; see README.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC (the default). Migrates by itself on the embedded default.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Service and worker in one process: the embedded default's one command.
    Standalone,
}

/// glibc's malloc/free took ~12% of the server's CPU under GetUser load
/// (perf, BENCHMARKS.md); mimalloc's thread-local free lists are cheaper.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = match Config::load() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("orgadmin-service: {message}");
            std::process::exit(2);
        }
    };
    let telemetry = match orgadmin_domain::telemetry::init(&config.log_format, "orgadmin-service") {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("orgadmin-service: {message}");
            std::process::exit(2);
        }
    };
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => Domain::from_config(&config, true)
            .await
            .map(|_| tracing::info!("migrations applied"))
            .map_err(anyhow::Error::msg),
        Command::Serve => run(config, false).await,
        Command::Standalone => run(config, true).await,
    };
    // The last spans (the shutdown's) leave before the process does.
    telemetry.shutdown();
    outcome
}

async fn run(config: Config, with_worker: bool) -> anyhow::Result<()> {
    if with_worker {
        orgadmin_worker::check_config(&config)?;
    }
    let domain = Domain::from_config(&config, config.is_embedded())
        .await
        .map_err(anyhow::Error::msg)?;
    if config.is_embedded() {
        announce_operator_token(&domain, &config.data_dir).await?;
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, database = if config.is_embedded() { "sqlite" } else { "postgres" }, "orgadmin-service listening");

    let (stop_tx, stop_rx) = watch::channel(false);
    // A worker that fails stops the service with it (the exit says why):
    // serving on without mail and imports would hide it.
    let (worker_failed_tx, mut worker_failed) = watch::channel(false);
    let worker = with_worker.then(|| {
        let domain = domain.clone();
        let config = config.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let outcome = orgadmin_worker::run(domain, &config, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
            if outcome.is_err() {
                let _ = worker_failed_tx.send(true);
            }
            outcome
        })
    });
    let (http_stop_tx, mut http_stop_rx) = watch::channel(false);
    let certificate_http = if config.certificate_http_listen.is_empty() {
        None
    } else {
        let http_listener = TcpListener::bind(&config.certificate_http_listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (ORGADMIN_CERTIFICATE_HTTP_LISTEN)",
                    config.certificate_http_listen
                )
            })?;
        tracing::info!(listen = %http_listener.local_addr()?, "CRL, CA certificate, OCSP and the self-service pages served over HTTP");
        Some(tokio::spawn(orgadmin_service::serve_certificate_http(
            domain.clone(),
            http_listener,
            async move {
                let _ = http_stop_rx.wait_for(|s| *s).await;
            },
        )))
    };
    // Caught from here on, before the server first polls its stop.
    let stop = orgadmin_domain::telemetry::shutdown_signal();
    let sign_ins = domain.clone();
    let connections = orgadmin_service::ConnectionLimits {
        max_connections: config.max_grpc_connections,
        idle_timeout: std::time::Duration::from_secs(config.grpc_idle_timeout_seconds),
        announce_stop_for: std::time::Duration::from_secs(config.shutdown_delay_seconds),
        ..Default::default()
    };
    orgadmin_service::serve_with_limits(domain, listener, config.max_in_flight, connections, async move {
        tokio::select! {
            () = stop => {}
            // Without a worker (or once it ended well) the sender is gone:
            // `Err`, which this pattern leaves out.
            Ok(_) = worker_failed.wait_for(|failed| *failed) => {
                tracing::error!("the worker stopped with an error; the service stops with it");
            }
        }
        let _ = stop_tx.send(true);
    })
    .await?;
    // The pages and the CRL stay up while gRPC announces its stop and drains.
    let _ = http_stop_tx.send(true);
    // Sign-ins whose callers left still record their tries.
    if !sign_ins.finish_sign_ins(std::time::Duration::from_secs(10)).await {
        tracing::warn!("sign-ins still running at shutdown were cut short");
    }
    if let Some(http) = certificate_http {
        http.await??;
    }
    if let Some(worker) = worker {
        worker.await??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// First start of the embedded default: make the operator token, keep only
/// its hash in the database, show it once and leave it in a file only the
/// owner can read.
async fn announce_operator_token(domain: &Domain, data_dir: &Path) -> anyhow::Result<()> {
    let Some(secret) = domain
        .bootstrap_operator_token()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?
    else {
        return Ok(());
    };
    let path = data_dir.join("operator-token");
    let _ = std::fs::remove_file(&path);
    orgadmin_domain::config::write_private_file(&path, &format!("{secret}\n")).map_err(anyhow::Error::msg)?;
    // Printed, not logged: log lines never carry a token.
    println!(
        "Operator token (shown once; also in {}, readable by you only):\n{secret}",
        path.display()
    );
    Ok(())
}

//! `orgadmin-worker`: the worker as its own process (its own Deployment).
//! It leaves migrations to the service.

use clap::Parser;
use orgadmin_domain::telemetry::shutdown_signal;
use orgadmin_domain::{Config, Domain};
use orgadmin_worker::health::{self, Health};

/// No arguments: everything comes from configuration. Parsing them anyway
/// answers --help and --version, and refuses anything else, before the
/// worker touches a database or a folder.
#[derive(Parser)]
#[command(
    name = "orgadmin-worker",
    version,
    about = "orgadmin worker: sends outbox mail and runs the scheduled sweeps",
    long_about = "orgadmin worker: sends outbox mail and runs the scheduled sweeps. Takes no arguments; configured like orgadmin-service by the environment (DATABASE_URL, ORGADMIN_*, SMTP_URL) or the TOML file named by ORGADMIN_CONFIG. Leaves migrations to `orgadmin-service migrate`."
)]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    let config = match Config::load() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("orgadmin-worker: {message}");
            std::process::exit(2);
        }
    };
    let telemetry = match orgadmin_domain::telemetry::init(&config.log_format, "orgadmin-worker") {
        Ok(telemetry) => telemetry,
        Err(message) => {
            eprintln!("orgadmin-worker: {message}");
            std::process::exit(2);
        }
    };
    let outcome = work(&config).await;
    // The last spans (a mail sent while stopping) leave before the process does.
    telemetry.shutdown();
    outcome
}

async fn work(config: &Config) -> anyhow::Result<()> {
    let domain = Domain::from_config(config, false).await.map_err(anyhow::Error::msg)?;
    // Probes see SERVING once the database answered, and NOT_SERVING from
    // the stop signal on, while the worker finishes what it holds.
    // The stop signal is caught from before health answers on.
    let stop = shutdown_signal();
    let health = Health::start(&config.worker_health_listen).await?;
    let reporter = health.reporter();
    orgadmin_worker::run(domain, config, async move {
        stop.await;
        health::not_serving(&reporter).await;
    })
    .await?;
    health.stop().await
}

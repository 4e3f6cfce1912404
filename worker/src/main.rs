//! `orgadmin-worker`: the worker as its own process (its own Deployment).
//! It leaves migrations to the service.

use orgadmin_domain::telemetry::{init_logging, shutdown_signal};
use orgadmin_domain::{Config, Domain};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = match Config::load() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("orgadmin-worker: {message}");
            std::process::exit(2);
        }
    };
    init_logging(&config.log_format);
    let domain = Domain::from_config(&config, false).await.map_err(anyhow::Error::msg)?;
    orgadmin_worker::run(domain, &config, shutdown_signal()).await
}

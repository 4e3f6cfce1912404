//! Server wiring: the orgadmin services, gRPC health per service, server
//! reflection v1 and v1alpha, bounded messages, graceful shutdown.

use std::future::Future;
use std::time::Duration;

use orgadmin_domain::Domain;
use orgadmin_proto::v1::access_service_server::AccessServiceServer;
use orgadmin_proto::v1::auth_service_server::AuthServiceServer;
use orgadmin_proto::v1::certificate_service_server::CertificateServiceServer;
use orgadmin_proto::v1::import_service_server::ImportServiceServer;
use orgadmin_proto::v1::notification_service_server::NotificationServiceServer;
use orgadmin_proto::v1::organisation_service_server::OrganisationServiceServer;
use orgadmin_proto::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::connections::{ConnectionLimits, guarded_incoming};
use crate::handlers::access::AccessHandler;
use crate::handlers::auth::AuthHandler;
use crate::handlers::certificates::CertificateHandler;
use crate::handlers::imports::ImportHandler;
use crate::handlers::notifications::NotificationHandler;
use crate::handlers::organisations::OrganisationHandler;
use crate::handlers::users::UserHandler;
use crate::shed::InFlight;

/// How often an open connection is pinged, and how long its answer may
/// take.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(60);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// No orgadmin request comes near this; import files stream in chunks of
/// at most 1 MiB.
pub(crate) const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting
/// and lets in-flight calls finish. At most `max_in_flight` calls of the
/// orgadmin services run at once (see `shed`); connections as
/// `ConnectionLimits::default()` says.
pub async fn serve(
    domain: Domain,
    listener: TcpListener,
    max_in_flight: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_limits(domain, listener, max_in_flight, ConnectionLimits::default(), shutdown).await
}

/// `serve`, with the connections guarded by `connections` (see
/// `connections`).
pub async fn serve_with_limits(
    domain: Domain,
    listener: TcpListener,
    max_in_flight: usize,
    connections: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_services(&reporter, ServingStatus::Serving).await;

    // The google.rpc descriptors too: error details (BadRequest, ErrorInfo,
    // ...) travel as Any, and a client such as grpcurl decodes them by asking
    // reflection for their type.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(orgadmin_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(orgadmin_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let organisations = OrganisationServiceServer::new(OrganisationHandler { domain: domain.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let users = UserServiceServer::new(UserHandler { domain: domain.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let notifications = NotificationServiceServer::new(NotificationHandler { domain: domain.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let auth = AuthServiceServer::new(AuthHandler { domain: domain.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let imports = ImportServiceServer::new(ImportHandler { domain: domain.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let certificates = CertificateServiceServer::new(CertificateHandler { domain: domain.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let access = AccessServiceServer::new(AccessHandler { domain: domain.clone() })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let probe = tokio::spawn(probe_database(domain, reporter.clone()));
    let probe_on_error = probe.abort_handle();
    let announce_stop_for = connections.announce_stop_for;
    let draining = async move {
        shutdown.await;
        // Stop the probe first, so it cannot report SERVING again.
        probe.abort();
        let _ = probe.await;
        set_services(&reporter, ServingStatus::NotServing).await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
        if !announce_stop_for.is_zero() {
            tracing::info!(
                seconds = announce_stop_for.as_secs_f64(),
                "stopping: health NOT_SERVING, still serving while endpoints learn of it"
            );
            tokio::time::sleep(announce_stop_for).await;
        }
        tracing::info!("shutting down: no new connections, finishing in-flight calls");
    };

    let in_flight = InFlight::new(max_in_flight);
    let served = Server::builder()
        // A connection whose peer vanished (no FIN: a pod's node gone, a
        // NAT's state dropped) answers no ping and ends, giving back its
        // place among `connections.max_connections`. Clients' own pings
        // (tonic's and grpc-go's are off by default) need no permission.
        .http2_keepalive_interval(Some(HTTP2_PING_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_PING_TIMEOUT))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(in_flight.wrap(organisations))
        .add_service(in_flight.wrap(users))
        .add_service(in_flight.wrap(auth))
        .add_service(in_flight.wrap(notifications))
        .add_service(in_flight.wrap(imports))
        .add_service(in_flight.wrap(certificates))
        .add_service(in_flight.wrap(access))
        .serve_with_incoming_shutdown(guarded_incoming(listener, connections), draining)
        .await;
    probe_on_error.abort();
    served?;
    Ok(())
}

/// The names under which health reports the orgadmin services.
const SERVICES: [&str; 7] = [
    <OrganisationServiceServer<OrganisationHandler> as NamedService>::NAME,
    <UserServiceServer<UserHandler> as NamedService>::NAME,
    <AuthServiceServer<AuthHandler> as NamedService>::NAME,
    <NotificationServiceServer<NotificationHandler> as NamedService>::NAME,
    <ImportServiceServer<ImportHandler> as NamedService>::NAME,
    <CertificateServiceServer<CertificateHandler> as NamedService>::NAME,
    <AccessServiceServer<AccessHandler> as NamedService>::NAME,
];

async fn set_services(reporter: &HealthReporter, status: ServingStatus) {
    for service in SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// How often the health probe asks the database, and how long it waits for
/// an answer. The probe queues for a pool connection like a call does, so it
/// waits as long as a call would (the pool's 5 s acquire timeout): a busy
/// pool under load does not read as an outage, while a database that cannot
/// answer in that time cannot serve calls either. A refused or cut
/// connection fails at once.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Readiness follows the database: while it does not answer, each orgadmin
/// service reports NOT_SERVING (a load balancer or Kubernetes readiness probe
/// sends calls elsewhere), and SERVING again once it does. The overall status
/// "" is left alone: it is liveness, and restarting the process would not
/// bring the database back.
async fn probe_database(domain: Domain, reporter: HealthReporter) {
    let mut serving = true;
    let mut ticks = tokio::time::interval(PROBE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let answer = tokio::time::timeout(PROBE_TIMEOUT, domain.ping_database()).await;
        let reachable = matches!(answer, Ok(Ok(())));
        if reachable == serving {
            continue;
        }
        serving = reachable;
        if reachable {
            tracing::info!("database reachable again: services SERVING");
            set_services(&reporter, ServingStatus::Serving).await;
        } else {
            let error = match answer {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {PROBE_TIMEOUT:?}"),
            };
            tracing::error!(%error, "database unreachable: services NOT_SERVING");
            set_services(&reporter, ServingStatus::NotServing).await;
        }
    }
}

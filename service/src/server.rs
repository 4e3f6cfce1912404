//! Server wiring: the orgadmin services, gRPC health per service, server
//! reflection v1 and v1alpha, bounded messages, graceful shutdown.

use std::future::Future;

use orgadmin_domain::Domain;
use orgadmin_proto::v1::auth_service_server::AuthServiceServer;
use orgadmin_proto::v1::notification_service_server::NotificationServiceServer;
use orgadmin_proto::v1::organisation_service_server::OrganisationServiceServer;
use orgadmin_proto::v1::user_service_server::UserServiceServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use crate::handlers::auth::AuthHandler;
use crate::handlers::notifications::NotificationHandler;
use crate::handlers::organisations::OrganisationHandler;
use crate::handlers::users::UserHandler;
use crate::shed::InFlight;

/// No orgadmin request comes near this; bulk uploads will stream in chunks.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting
/// and lets in-flight calls finish. At most `max_in_flight` calls of the
/// orgadmin services run at once (see `shed`).
pub async fn serve(
    domain: Domain,
    listener: TcpListener,
    max_in_flight: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<OrganisationServiceServer<OrganisationHandler>>()
        .await;
    reporter.set_serving::<UserServiceServer<UserHandler>>().await;
    reporter.set_serving::<AuthServiceServer<AuthHandler>>().await;
    reporter
        .set_serving::<NotificationServiceServer<NotificationHandler>>()
        .await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(orgadmin_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(orgadmin_proto::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
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
    let auth = AuthServiceServer::new(AuthHandler { domain })
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    let draining = async move {
        shutdown.await;
        tracing::info!("shutting down: health NOT_SERVING, finishing in-flight calls");
        reporter
            .set_not_serving::<OrganisationServiceServer<OrganisationHandler>>()
            .await;
        reporter.set_not_serving::<UserServiceServer<UserHandler>>().await;
        reporter.set_not_serving::<AuthServiceServer<AuthHandler>>().await;
        reporter
            .set_not_serving::<NotificationServiceServer<NotificationHandler>>()
            .await;
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
    };

    let in_flight = InFlight::new(max_in_flight);
    Server::builder()
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(in_flight.wrap(organisations))
        .add_service(in_flight.wrap(users))
        .add_service(in_flight.wrap(auth))
        .add_service(in_flight.wrap(notifications))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), draining)
        .await?;
    Ok(())
}

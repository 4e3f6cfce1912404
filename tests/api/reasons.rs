//! Every `ErrorInfo.reason` of `Reason::ALL` is asserted by some test: a new
//! reason without one fails `every_reason_is_asserted_by_a_test`. The
//! scenarios here cover the reasons no other scenario reaches.

use std::path::Path;

use orgadmin_domain::error::Reason;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use sea_orm::TransactionTrait;
use tonic::Code;

both_backends!(
    reasons_no_other_scenario_reaches,
    a_pool_held_to_the_last_connection_is_busy,
    without_a_ca_certificates_are_refused,
    a_pickup_after_the_address_changed_is_refused
);

/// The test sources that may assert a reason: every integration scenario
/// and the domain's unit tests (what follows `#[cfg(test)]`).
fn test_sources() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = String::new();
    for entry in std::fs::read_dir(root.join("api")).unwrap() {
        let path = entry.unwrap().path();
        text.push_str(&std::fs::read_to_string(&path).unwrap());
    }
    let domain = root.join("../domain/src");
    let mut stack = vec![domain];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some((_, tests)) = std::fs::read_to_string(&path).unwrap().split_once("#[cfg(test)]") {
                text.push_str(tests);
            }
        }
    }
    text
}

#[test]
fn every_reason_is_asserted_by_a_test() {
    let sources = test_sources();
    assert!(Reason::ALL.len() >= 30, "only {} reasons listed", Reason::ALL.len());
    let missing: Vec<&str> = Reason::ALL
        .iter()
        .map(|r| r.as_str())
        .filter(|r| !sources.contains(&format!("\"{r}\"")))
        .collect();
    assert!(missing.is_empty(), "reasons no test asserts: {missing:?}");
}

async fn reasons_no_other_scenario_reaches(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let before = app.fingerprint().await;

    // UNAUTHENTICATED, PERMISSION_DENIED, NOT_FOUND.
    let anonymous = app.auth().who_am_i(req("", pb::WhoAmIRequest {})).await;
    assert_eq!(
        reason(&assert_code(anonymous, Code::Unauthenticated)),
        "UNAUTHENTICATED"
    );
    let (plain, plain_token) = app.member(&fixture, "Plain", &[]).await;
    let before_denied = app.fingerprint().await;
    let denied = app
        .users()
        .create_user(req(&plain_token, new_user(&fixture.org.id, "Ny", &[])))
        .await;
    assert_eq!(
        reason(&assert_code(denied, Code::PermissionDenied)),
        "PERMISSION_DENIED"
    );
    let missing = app
        .users()
        .get_user(req(
            &token,
            pb::GetUserRequest {
                id: uuid::Uuid::now_v7().to_string(),
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(missing, Code::NotFound)), "NOT_FOUND");
    assert_eq!(app.fingerprint().await, before_denied);
    assert_ne!(app.fingerprint().await, before, "the member was made");

    // USER_NOT_DEACTIVATED: only a deactivated user comes back.
    let active = app
        .users()
        .reactivate_user(req(
            &token,
            pb::ReactivateUserRequest {
                id: plain.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(active, Code::FailedPrecondition)),
        "USER_NOT_DEACTIVATED"
    );

    // NO_CPR_NUMBER: a birth-date user activates with a code, not a link.
    let coded = app
        .users()
        .create_user(req(
            &token,
            pb::CreateUserRequest {
                cpr: String::new(),
                birth_date: "1977-07-07".into(),
                ..new_user(&fixture.org.id, "Kode", &[])
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let no_cpr = app
        .users()
        .send_activation(req(
            &token,
            pb::SendActivationRequest {
                user_id: coded.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(no_cpr, Code::FailedPrecondition)), "NO_CPR_NUMBER");

    // ALREADY_ANONYMOUS: an anonymous user asks to become anonymous.
    let (_, hidden_token) = app
        .create_and_activate(
            &token,
            pb::CreateUserRequest {
                anonymous: true,
                ..new_user(&fixture.org.id, "Skjult", &[])
            },
        )
        .await;
    let again = app
        .users()
        .request_anonymity(req(
            &hidden_token,
            pb::RequestAnonymityRequest {
                reason: "Beskyttet adresse, igen".into(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(again, Code::FailedPrecondition)),
        "ALREADY_ANONYMOUS"
    );

    // USER_NOT_ACTIVE: a request approved after its user was deactivated.
    let asked = app
        .users()
        .request_anonymity(req(
            &plain_token,
            pb::RequestAnonymityRequest {
                reason: "Beskyttet adresse, tak".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .anonymity_request
        .unwrap();
    app.users()
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: plain.id.clone(),
                until: None,
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let approved = app
        .users()
        .decide_anonymity_request(req(
            &token,
            pb::DecideAnonymityRequestRequest {
                id: asked.id,
                approve: true,
                note: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(approved, Code::FailedPrecondition)),
        "USER_NOT_ACTIVE"
    );

    // USER_DELETED: a deleted user is changed no more.
    app.users()
        .delete_user(req(
            &token,
            pb::DeleteUserRequest {
                id: coded.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let late = app
        .users()
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    surname: "Sen".into(),
                    ..coded.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["surname".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(late, Code::FailedPrecondition)), "USER_DELETED");

    // EMAIL_VERIFICATION_UNKNOWN: a link nobody was sent.
    let unknown = app
        .users()
        .verify_email(req(
            "",
            pb::VerifyEmailRequest {
                token: "oat_never-sent".into(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(unknown, Code::FailedPrecondition)),
        "EMAIL_VERIFICATION_UNKNOWN"
    );

    // ADMINISTRATORS_ABOVE_LIMIT: the maximum cannot go below the seats held.
    app.users()
        .create_user(req(
            &fixture.admin_token,
            new_user(&fixture.org.id, "Anden", &[pb::Role::OrganisationAdmin]),
        ))
        .await
        .unwrap();
    let lowered = app
        .orgs()
        .update_organisation_settings(req(
            &token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(pb::OrganisationSettings {
                    organisation_id: fixture.org.id.clone(),
                    max_administrators: 1,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["max_administrators".into()],
                }),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(lowered, Code::FailedPrecondition)),
        "ADMINISTRATORS_ABOVE_LIMIT"
    );
    app.finish().await;
}

/// DATABASE_BUSY: every connection of the pool is held (here by the test),
/// so a call waits its 5 s for one and is told to retry.
async fn a_pool_held_to_the_last_connection_is_busy(backend: Backend) {
    let app = TestApp::start_limited(backend, Default::default(), 1, 256).await;
    let fixture = app.org_with_admin().await;
    let held = app.domain.db().begin().await.unwrap();
    let started = std::time::Instant::now();
    let busy = app
        .users()
        .get_user(req(
            &fixture.admin_token,
            pb::GetUserRequest {
                id: fixture.admin.id.clone(),
            },
        ))
        .await;
    let status = assert_code(busy, Code::Unavailable);
    assert_eq!(reason(&status), "DATABASE_BUSY");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(4),
        "it waited for a connection"
    );
    held.rollback().await.unwrap();
    app.users()
        .get_user(req(
            &fixture.admin_token,
            pb::GetUserRequest {
                id: fixture.admin.id.clone(),
            },
        ))
        .await
        .expect("served once the connection is back");
    app.finish().await;
}

/// CA_NOT_CONFIGURED: a server whose domain has no CA refuses to order a
/// certificate and to sign the first CRL, and changes nothing.
async fn without_a_ca_certificates_are_refused(backend: Backend) {
    use orgadmin_proto::v1::certificate_service_client::CertificateServiceClient;
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(orgadmin_service::serve(
        app.domain.clone().with_ca(None),
        listener,
        16,
        async move {
            let _ = stopped.await;
        },
    ));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut certs = CertificateServiceClient::new(channel);
    let before = app.fingerprint().await;
    let order = certs
        .order_certificate(req(
            &fixture.admin_token,
            pb::OrderCertificateRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::CertificateKind::Employee as i32,
                holder_id: fixture.admin.id.clone(),
                usages: vec![pb::CertificateUsage::Authentication as i32],
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(order, Code::FailedPrecondition)),
        "CA_NOT_CONFIGURED"
    );
    // No CRL was signed yet, and none can be.
    let crl = certs.get_crl(req(&fixture.admin_token, pb::GetCrlRequest {})).await;
    assert_eq!(reason(&assert_code(crl, Code::FailedPrecondition)), "CA_NOT_CONFIGURED");
    assert_eq!(app.fingerprint().await, before);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    app.finish().await;
}

/// EMAIL_NOT_VERIFIED at pickup: the order named the holder's verified
/// address for the certificate; the holder's address changed since, so the
/// pickup is refused (the certificate would carry an address no longer
/// theirs) and changes nothing. It is no field of the pickup request, so
/// no INVALID_ARGUMENT.
async fn a_pickup_after_the_address_changed_is_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let (holder, holder_token) = app.member(&fixture, "Holder", &[]).await;
    app.certs()
        .order_certificate(req(
            &token,
            pb::OrderCertificateRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::CertificateKind::Employee as i32,
                holder_id: holder.id.clone(),
                usages: vec![pb::CertificateUsage::EmailEncryption as i32],
                email: holder.email.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let pickup = app.mailed_token("certificate_pickup", &holder.email).await;
    let new_address = unique_email("holder.ny");
    app.users()
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    email: new_address.clone(),
                    ..holder.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["email".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .unwrap();
    let link = app.mailed_token("email_verification", &new_address).await;
    app.pass_email_change_holds().await;
    app.users()
        .verify_email(req("", pb::VerifyEmailRequest { token: link }))
        .await
        .unwrap();
    let before = app.fingerprint().await;
    let refused = app
        .certs()
        .issue_certificate(req(
            &holder_token,
            pb::IssueCertificateRequest {
                token: pickup,
                csr_pem: p256_csr(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(refused, Code::FailedPrecondition)),
        "EMAIL_NOT_VERIFIED"
    );
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

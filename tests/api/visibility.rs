//! A user outside the caller's view (another organisation's, or a
//! non-administrator for the operator) reads as missing: the same NOT_FOUND
//! as an id that names no user, so ids cannot be probed.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use tonic::Code;

both_backends!(
    users_outside_the_view_read_as_missing,
    records_outside_the_view_read_as_missing
);

async fn users_outside_the_view_read_as_missing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let other = app.org_with_admin().await;
    let (plain, plain_token) = app.member(&fixture, "Plain", &[]).await;
    let missing = uuid::Uuid::now_v7().to_string();
    let get = |token: &str, id: &str| {
        let mut users = app.users();
        let request = req(token, pb::GetUserRequest { id: id.to_owned() });
        async move { users.get_user(request).await }
    };
    let answer = |status: tonic::Status| (status.code(), reason(&status));

    // Another organisation's administrator: existing and missing alike.
    let existing = assert_code(get(&other.admin_token, &plain.id).await, Code::NotFound);
    let absent = assert_code(get(&other.admin_token, &missing).await, Code::NotFound);
    assert_eq!(answer(existing.clone()), answer(absent.clone()));
    assert_eq!(
        existing.message().replace(&plain.id, "<id>"),
        absent.message().replace(&missing, "<id>"),
        "the same words"
    );
    // The operator sees administrators only (R-ACC-6).
    let by_operator = assert_code(get(OPERATOR_TOKEN, &plain.id).await, Code::NotFound);
    assert_eq!(answer(by_operator), answer(absent));
    get(OPERATOR_TOKEN, &fixture.admin.id)
        .await
        .expect("the operator reads an administrator");
    // Within the organisation the user is no secret: a refusal is a refusal.
    assert_code(get(&plain_token, &fixture.admin.id).await, Code::PermissionDenied);

    // Writes on such a user read as missing too, and change nothing.
    let before = app.fingerprint().await;
    let deactivate = app
        .users()
        .deactivate_user(req(
            &other.admin_token,
            pb::DeactivateUserRequest {
                id: plain.id.clone(),
                until: None,
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await;
    assert_code(deactivate, Code::NotFound);
    let history = app
        .users()
        .list_user_history(req(
            &other.admin_token,
            pb::ListUserHistoryRequest {
                user_id: plain.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_code(history, Code::NotFound);
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

/// The same for an organisation's units, its people's API tokens and their
/// anonymity requests: another organisation's administrator (and, for a
/// person's records, the operator) gets the NOT_FOUND an unknown id gets.
/// Before, these answered PERMISSION_DENIED for a real id, which told that
/// it existed.
async fn records_outside_the_view_read_as_missing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let other = app.org_with_admin().await;
    let (plain, plain_token) = app.member(&fixture, "Plain", &[]).await;
    let unit = app
        .orgs()
        .create_unit(req(
            &fixture.admin_token,
            pb::CreateUnitRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::UnitKind::Department as i32,
                name: "Lager".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("a unit")
        .into_inner()
        .unit
        .unwrap();
    let token = app
        .auth()
        .create_api_token(req(
            &plain_token,
            pb::CreateApiTokenRequest {
                user_id: plain.id.clone(),
                name: "eget".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("Plain's own token")
        .into_inner()
        .api_token
        .unwrap();
    let anonymity = app
        .users()
        .request_anonymity(req(
            &plain_token,
            pb::RequestAnonymityRequest {
                reason: "beskyttet adresse efter dom".into(),
            },
        ))
        .await
        .expect("an anonymity request")
        .into_inner()
        .anonymity_request
        .unwrap();
    let missing = uuid::Uuid::now_v7().to_string();
    let update_unit = |token: &str, id: &str| {
        let mut orgs = app.orgs();
        let request = req(
            token,
            pb::UpdateUnitRequest {
                unit: Some(pb::Unit {
                    id: id.to_owned(),
                    name: "Overtaget".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["name".into()],
                }),
            },
        );
        async move { orgs.update_unit(request).await.map(drop) }
    };
    let delete_unit = |token: &str, id: &str| {
        let mut orgs = app.orgs();
        let request = req(token, pb::DeleteUnitRequest { id: id.to_owned() });
        async move { orgs.delete_unit(request).await.map(drop) }
    };
    let revoke_token = |token: &str, id: &str| {
        let mut auth = app.auth();
        let request = req(token, pb::RevokeApiTokenRequest { id: id.to_owned() });
        async move { auth.revoke_api_token(request).await.map(drop) }
    };
    let decide = |token: &str, id: &str| {
        let mut users = app.users();
        let request = req(
            token,
            pb::DecideAnonymityRequestRequest {
                id: id.to_owned(),
                approve: false,
                note: "afvist".into(),
            },
        );
        async move { users.decide_anonymity_request(request).await.map(drop) }
    };
    // (what, existing's answer, a missing id's answer, the existing id)
    let before = app.fingerprint().await;
    let answers = vec![
        (
            "UpdateUnit by another organisation",
            update_unit(&other.admin_token, &unit.id).await,
            update_unit(&other.admin_token, &missing).await,
            unit.id.clone(),
        ),
        (
            "DeleteUnit by another organisation",
            delete_unit(&other.admin_token, &unit.id).await,
            delete_unit(&other.admin_token, &missing).await,
            unit.id.clone(),
        ),
        (
            "RevokeApiToken by another organisation",
            revoke_token(&other.admin_token, &token.id).await,
            revoke_token(&other.admin_token, &missing).await,
            token.id.clone(),
        ),
        (
            "RevokeApiToken of an ordinary user by the operator",
            revoke_token(OPERATOR_TOKEN, &token.id).await,
            revoke_token(OPERATOR_TOKEN, &missing).await,
            token.id.clone(),
        ),
        (
            "DecideAnonymityRequest by another organisation",
            decide(&other.admin_token, &anonymity.id).await,
            decide(&other.admin_token, &missing).await,
            anonymity.id.clone(),
        ),
        (
            "DecideAnonymityRequest by the operator",
            decide(OPERATOR_TOKEN, &anonymity.id).await,
            decide(OPERATOR_TOKEN, &missing).await,
            anonymity.id.clone(),
        ),
    ];
    for (what, existing, absent, id) in answers {
        let existing = assert_code(existing, Code::NotFound);
        let absent = assert_code(absent, Code::NotFound);
        assert_eq!(
            existing.message().replace(&id, "<id>"),
            absent.message().replace(&missing, "<id>"),
            "{what}: the same words"
        );
    }
    assert_eq!(app.fingerprint().await, before, "a refused call changed data");
    // Inside the organisation a refusal stays a refusal.
    assert_code(delete_unit(&plain_token, &unit.id).await, Code::PermissionDenied);
    app.finish().await;
}

//! A user outside the caller's view (another organisation's, or a
//! non-administrator for the operator) reads as missing: the same NOT_FOUND
//! as an id that names no user, so ids cannot be probed.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use tonic::Code;

both_backends!(users_outside_the_view_read_as_missing);

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

//! Requests to join an organisation (R-ORG-3, R-ACC-9): only where the
//! organisation allows it, nothing reaches it before the address is
//! confirmed, user administrators decide, approval creates the user through
//! CreateUser's write, the person is told either way, and both steps are
//! in history.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::reason;
use orgadmin_tests::*;
use sea_orm::ConnectionTrait;
use tonic::Code;

both_backends!(a_person_asks_to_join_confirms_and_is_decided);

fn asking(cvr: &str, first: &str, email: &str) -> pb::RequestToJoinRequest {
    pb::RequestToJoinRequest {
        organisation_cvr: cvr.to_owned(),
        first_name: first.to_owned(),
        surname: "Nielsen".into(),
        email: email.to_owned(),
        birth_date: "1990-05-17".into(),
        language: pb::Language::Da as i32,
        reason: "Jeg er ny på lageret i Vejle".into(),
    }
}

async fn ask(app: &TestApp, request: pb::RequestToJoinRequest) -> Result<(), tonic::Status> {
    app.access().request_to_join(req("", request)).await.map(drop)
}

async fn confirm(app: &TestApp, token: &str) -> Result<pb::JoinRequest, tonic::Status> {
    app.access()
        .confirm_join_request(req(
            "",
            pb::ConfirmJoinRequestRequest {
                token: token.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().join_request.expect("join request"))
}

async fn listed(app: &TestApp, token: &str, org: &str) -> Result<Vec<pb::JoinRequest>, tonic::Status> {
    app.access()
        .list_join_requests(req(
            token,
            pb::ListJoinRequestsRequest {
                organisation_id: org.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().join_requests)
}

async fn decide(
    app: &TestApp,
    token: &str,
    id: &str,
    approve: bool,
    unit_id: &str,
) -> Result<pb::DecideJoinRequestResponse, tonic::Status> {
    app.access()
        .decide_join_request(req(
            token,
            pb::DecideJoinRequestRequest {
                id: id.to_owned(),
                approve,
                note: if approve { String::new() } else { "Ukendt person".into() },
                unit_id: unit_id.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn notifications(app: &TestApp, token: &str) -> usize {
    app.notes()
        .list_notifications(req(token, pb::ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications
        .into_iter()
        .filter(|n| n.kind == pb::NotificationKind::JoinRequest as i32)
        .count()
}

/// Seed 001's "anmod om at blive tilknyttet": refused while the setting is
/// off; a request unconfirmed is nobody's business; confirmed, the user
/// administrators hear of it; one is approved (the user made, with the
/// code shown once), one rejected (nobody made); each person is mailed.
async fn a_person_asks_to_join_confirms_and_is_decided(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let org = fixture.org.id.clone();
    let cvr = fixture.org.cvr.clone();
    let (_, ua_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (_, plain_token) = app.member(&fixture, "Plain", &[]).await;
    let hall = app.unit(&fixture, "Lager", "").await;
    let anna = unique_email("anna");

    let before = app.fingerprint().await;
    let closed = assert_code(ask(&app, asking(&cvr, "Anna", &anna)).await, Code::FailedPrecondition);
    assert_eq!(reason(&closed), "JOIN_REQUESTS_NOT_ALLOWED");
    assert_code(ask(&app, asking(&unique_cvr(), "Anna", &anna)).await, Code::NotFound);
    let short = assert_code(
        ask(
            &app,
            pb::RequestToJoinRequest {
                reason: "kort".into(),
                birth_date: "1990-02-30".into(),
                ..asking(&cvr, "Anna", &anna)
            },
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&short), ["birth_date", "reason"]);
    assert!(app.fingerprint().await == before, "refused requests changed data");

    app.change_settings(&fixture, "join_requests_allowed", |s| s.join_requests_allowed = true)
        .await;
    ask(&app, asking(&cvr, "Anna", &anna)).await.unwrap();
    let first_link = app.mailed_token("join_confirmation", &anna).await;
    // The mail carries no text the asker chose (anyone may have it sent to
    // any address): no greeting by the name given.
    let texts = app.mail_texts("join_confirmation", &anna).await;
    assert!(texts.iter().all(|text| !text.contains("Anna")), "{texts:?}");
    // Unconfirmed: listed to nobody, told to nobody.
    assert!(listed(&app, &ua_token, &org).await.unwrap().is_empty());
    assert_eq!(notifications(&app, &ua_token).await, 0);
    // Asking again at once mails nothing more (the link still works), and
    // nobody rewrites another's request.
    ask(&app, asking(&cvr, "Mallory", &anna)).await.unwrap();
    let mailed =
        |to: &str| format!("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'join_confirmation' AND recipient = '{to}'");
    assert_eq!(app.count(&mailed(&anna)).await, 1);
    // A quarter of an hour later, asking again mails a fresh link; the
    // first one is dead.
    let db = app.domain.db();
    db.execute_unprepared("UPDATE join_requests SET mailed_at = 0")
        .await
        .unwrap();
    ask(&app, asking(&cvr, "Mallory", &anna)).await.unwrap();
    assert_eq!(app.count(&mailed(&anna)).await, 2);
    let link = app.mailed_token("join_confirmation", &anna).await;
    assert_ne!(link, first_link);
    let dead = assert_code(confirm(&app, &first_link).await, Code::FailedPrecondition);
    assert_eq!(reason(&dead), "JOIN_CONFIRMATION_UNKNOWN");

    let open = confirm(&app, &link).await.unwrap();
    assert_eq!(open.state(), pb::JoinRequestState::Open);
    assert_eq!((open.first_name.as_str(), open.email.as_str()), ("Anna", anna.as_str()));
    // A link works once.
    let used = assert_code(confirm(&app, &link).await, Code::FailedPrecondition);
    assert_eq!(reason(&used), "JOIN_CONFIRMATION_UNKNOWN");
    assert_eq!(
        notifications(&app, &ua_token).await,
        1,
        "the user administrator is told"
    );
    let seen = listed(&app, &ua_token, &org).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, open.id);
    assert_code(listed(&app, &plain_token, &org).await, Code::PermissionDenied);
    // Nobody but a user administrator decides.
    assert_code(
        decide(&app, &plain_token, &open.id, true, "").await,
        Code::PermissionDenied,
    );

    let approved = decide(&app, &ua_token, &open.id, true, &hall.id).await.unwrap();
    let request = approved.join_request.unwrap();
    assert_eq!(request.state(), pb::JoinRequestState::Approved);
    assert!(!approved.activation_code.is_empty(), "the code is shown once");
    let user = app.user(&ua_token, &request.user_id).await;
    assert_eq!(
        (user.email.as_str(), user.unit_id.as_str(), user.state()),
        (anna.as_str(), hall.id.as_str(), pb::UserState::PendingActivation)
    );
    assert_eq!(
        app.history_of(&ua_token, &user.id, pb::HistoryActivity::JoinRequestApproved)
            .await
            .len(),
        1
    );
    let again = assert_code(
        decide(&app, &ua_token, &open.id, false, "").await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&again), "JOIN_REQUEST_DECIDED");
    // Anna activates with the code and her birth date.
    app.users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                code: approved.activation_code.clone(),
                birth_date: "1990-05-17".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("activate with the code");

    // Bo is rejected: nobody is made, he is told.
    let bo = unique_email("bo");
    ask(&app, asking(&cvr, "Bo", &bo)).await.unwrap();
    let bo_link = app.mailed_token("join_confirmation", &bo).await;
    let bo_request = confirm(&app, &bo_link).await.unwrap();
    // While his confirmed request waits, asking again mails nothing.
    db.execute_unprepared("UPDATE join_requests SET mailed_at = 0")
        .await
        .unwrap();
    ask(&app, asking(&cvr, "Bo", &bo)).await.unwrap();
    assert_eq!(app.count(&mailed(&bo)).await, 1);
    let users_before = app.count("SELECT COUNT(*) FROM users").await;
    let rejected = decide(&app, &ua_token, &bo_request.id, false, "").await.unwrap();
    assert_eq!(rejected.join_request.unwrap().state(), pb::JoinRequestState::Rejected);
    assert!(rejected.activation_code.is_empty());
    assert_eq!(app.count("SELECT COUNT(*) FROM users").await, users_before);
    for person in [&anna, &bo] {
        let told = app
            .count(&format!(
                "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'rights_request_decided' AND recipient = '{person}'"
            ))
            .await;
        assert_eq!(told, 1, "{person} is told");
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM history_events WHERE activity IN ('JOIN_REQUESTED', 'JOIN_REQUEST_REJECTED')")
            .await,
        3
    );

    // Decided, no request keeps the birth date it was asked with.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM join_requests WHERE state IN ('APPROVED', 'REJECTED') AND birth_date <> ''")
            .await,
        0
    );

    // A link past its day is refused.
    let cai = unique_email("cai");
    ask(&app, asking(&cvr, "Cai", &cai)).await.unwrap();
    let cai_link = app.mailed_token("join_confirmation", &cai).await;
    db.execute_unprepared("UPDATE join_requests SET expires_at = 0 WHERE state = 'UNCONFIRMED'")
        .await
        .unwrap();
    let expired = assert_code(confirm(&app, &cai_link).await, Code::FailedPrecondition);
    assert_eq!(reason(&expired), "JOIN_CONFIRMATION_EXPIRED");

    // Turned off between asking and confirming: the link opens nothing.
    // Turned off after confirming: the open request can be rejected, not
    // approved (the organisation no longer admits anyone that way).
    let dan = unique_email("dan");
    ask(&app, asking(&cvr, "Dan", &dan)).await.unwrap();
    let dan_link = app.mailed_token("join_confirmation", &dan).await;
    let eva = unique_email("eva");
    ask(&app, asking(&cvr, "Eva", &eva)).await.unwrap();
    let eva_request = confirm(&app, &app.mailed_token("join_confirmation", &eva).await)
        .await
        .unwrap();
    let fay = unique_email("fay");
    ask(&app, asking(&cvr, "Fay", &fay)).await.unwrap();
    let fay_request = confirm(&app, &app.mailed_token("join_confirmation", &fay).await)
        .await
        .unwrap();
    app.change_settings(&fixture, "join_requests_allowed", |s| s.join_requests_allowed = false)
        .await;
    let closed = assert_code(confirm(&app, &dan_link).await, Code::FailedPrecondition);
    assert_eq!(reason(&closed), "JOIN_REQUESTS_NOT_ALLOWED");
    let before = app.fingerprint().await;
    let closed = assert_code(
        decide(&app, &ua_token, &eva_request.id, true, "").await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&closed), "JOIN_REQUESTS_NOT_ALLOWED");
    assert!(app.fingerprint().await == before, "a refused approval changed data");
    decide(&app, &ua_token, &fay_request.id, false, "")
        .await
        .expect("an open request is still rejected");
    app.finish().await;
}

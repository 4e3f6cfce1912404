//! R-ORG-4 and R-ORG-5 as revised by the second pass: a deactivation with an
//! end time keeps its licence and administrator seat for the return, so the
//! timed reactivation never exceeds a limit; only ACTIVE administrators count
//! as the organisation's last one.

use std::time::Duration;

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::Timestamp;
use tonic::Code;

both_backends!(
    timed_deactivation_keeps_its_licence_for_the_return,
    timed_deactivation_keeps_its_administrator_seat,
    pending_administrator_is_not_an_active_one,
    a_user_who_never_activated_returns_to_pending,
);

pub(crate) async fn deactivate(
    app: &TestApp,
    token: &str,
    id: &str,
    until: Option<Timestamp>,
) -> Result<pb::User, tonic::Status> {
    app.users()
        .deactivate_user(req(
            token,
            pb::DeactivateUserRequest {
                id: id.to_owned(),
                until,
                reason: "orlov".into(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

/// The probe's case: 3 licences, a user deactivated until +1 s, another
/// created meanwhile, the sweep brings the first back: 4 of 3. Now the
/// create is refused and the sweep cannot exceed the limit.
async fn timed_deactivation_keeps_its_licence_for_the_return(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(3), None).await;
    let token = fixture.admin_token.clone();
    let (anna, _) = app.member(&fixture, "Anna", &[]).await;
    let (_bent, _) = app.member(&fixture, "Bent", &[]).await;

    deactivate(&app, &token, &anna.id, Some(in_ms(800))).await.unwrap();
    assert_eq!(
        app.licences_used(&token, &fixture.org.id).await,
        3,
        "the seat is reserved"
    );
    let before = app.fingerprint().await;
    let over = app
        .users()
        .create_user(req(&token, new_user(&fixture.org.id, "Carl", &[])))
        .await;
    assert_eq!(
        reason(&assert_code(over, Code::FailedPrecondition)),
        "LICENCE_LIMIT_REACHED"
    );
    assert_eq!(app.fingerprint().await, before, "a refused create changes nothing");

    tokio::time::sleep(Duration::from_millis(900)).await;
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(app.domain.reactivate_due_users(now, 10).await.unwrap(), 1);
    assert_eq!(app.licences_used(&token, &fixture.org.id).await, 3, "3 of 3, never 4");
    assert_eq!(app.licence_counter_drift().await, Vec::<String>::new());

    // Open-ended deactivation frees the licence; then the way back needs a
    // free one, whether by reactivation or by giving the deactivation an end.
    deactivate(&app, &token, &anna.id, None).await.unwrap();
    assert_eq!(app.licences_used(&token, &fixture.org.id).await, 2);
    let (_carl, _) = app.member(&fixture, "Carl", &[]).await;
    let back = app
        .users()
        .reactivate_user(req(
            &token,
            pb::ReactivateUserRequest {
                id: anna.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(back, Code::FailedPrecondition)),
        "LICENCE_LIMIT_REACHED"
    );
    let timed = deactivate(&app, &token, &anna.id, Some(in_ms(60_000))).await;
    assert_eq!(
        reason(&assert_code(timed, Code::FailedPrecondition)),
        "LICENCE_LIMIT_REACHED"
    );

    // A timed deactivation changed to open-ended gives its seat back, and
    // reactivating a timed one by hand takes nothing new.
    let (dora, _) = {
        app.users()
            .delete_user(req(
                &token,
                pb::DeleteUserRequest {
                    id: _carl.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap();
        app.member(&fixture, "Dora", &[]).await
    };
    deactivate(&app, &token, &dora.id, Some(in_ms(60_000))).await.unwrap();
    assert_eq!(app.licences_used(&token, &fixture.org.id).await, 3);
    let back = app
        .users()
        .reactivate_user(req(
            &token,
            pb::ReactivateUserRequest {
                id: dora.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(back.state, pb::UserState::Active as i32);
    assert_eq!(app.licences_used(&token, &fixture.org.id).await, 3);
    app.finish().await;
}

async fn timed_deactivation_keeps_its_administrator_seat(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(None, Some(2)).await;
    let token = fixture.admin_token.clone();
    let (second, _) = app
        .create_and_activate(
            &token,
            new_user(&fixture.org.id, "Anden", &[pb::Role::OrganisationAdmin]),
        )
        .await;
    deactivate(&app, &token, &second.id, Some(in_ms(800))).await.unwrap();
    // The seat is kept for the return: no third administrator meanwhile.
    let third = app
        .users()
        .create_user(req(
            &token,
            new_user(&fixture.org.id, "Tredje", &[pb::Role::OrganisationAdmin]),
        ))
        .await;
    assert_eq!(
        reason(&assert_code(third, Code::FailedPrecondition)),
        "MAX_ADMINISTRATORS_REACHED"
    );
    let (plain, _) = app.member(&fixture, "Plain", &[]).await;
    let promoted = app
        .users()
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    roles: vec![pb::Role::OrganisationAdmin as i32],
                    ..plain.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["roles".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(promoted, Code::FailedPrecondition)),
        "MAX_ADMINISTRATORS_REACHED"
    );
    tokio::time::sleep(Duration::from_millis(900)).await;
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(app.domain.reactivate_due_users(now, 10).await.unwrap(), 1);
    let admins = app
        .users()
        .list_users(req(
            &token,
            pb::ListUsersRequest {
                organisation_id: fixture.org.id.clone(),
                role: pb::Role::OrganisationAdmin as i32,
                state: pb::UserState::Active as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(admins.len(), 2, "back to 2 of at most 2 administrators, never 3");
    app.finish().await;
}

/// R-ORG-5: an active administrator may not leave while the only other one
/// is still pending activation (that one cannot act).
async fn pending_administrator_is_not_an_active_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let pending = new_user(&fixture.org.id, "Ventende", &[pb::Role::OrganisationAdmin]);
    let (email, cpr) = (pending.email.clone(), pending.cpr.clone());
    app.users().create_user(req(&token, pending)).await.unwrap();

    let before = app.fingerprint().await;
    let alone = deactivate(&app, &token, &fixture.admin.id, None).await;
    assert_eq!(
        reason(&assert_code(alone, Code::FailedPrecondition)),
        "LAST_ORGANISATION_ADMIN"
    );
    let gone = app
        .users()
        .delete_user(req(
            &token,
            pb::DeleteUserRequest {
                id: fixture.admin.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(gone, Code::FailedPrecondition)),
        "LAST_ORGANISATION_ADMIN"
    );
    assert_eq!(app.fingerprint().await, before, "refusals change nothing");

    // Once the other administrator has activated, the first may go.
    app.activate_by_link(&email, &cpr).await;
    deactivate(&app, &token, &fixture.admin.id, Some(in_ms(60_000)))
        .await
        .unwrap();
    app.finish().await;
}

/// The sweep's other branch: a user deactivated before activating comes back
/// waiting for activation, not ACTIVE, and history says so.
async fn a_user_who_never_activated_returns_to_pending(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let waiting = app
        .users()
        .create_user(req(&token, new_user(&fixture.org.id, "Venter", &[])))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    deactivate(&app, &token, &waiting.id, Some(in_ms(300))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(app.domain.reactivate_due_users(now, 10).await.unwrap(), 1);
    let back = app
        .users()
        .get_user(req(&token, pb::GetUserRequest { id: waiting.id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(back.state, pb::UserState::PendingActivation as i32);
    let history = app
        .users()
        .list_user_history(req(
            &token,
            pb::ListUserHistoryRequest {
                user_id: waiting.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history[0].activity(), pb::HistoryActivity::UserReactivated);
    assert_eq!(history[0].actor_name, "system (timed-reactivation)");
    assert!(
        history[0]
            .changes
            .iter()
            .any(|c| c.field == "state" && c.after == "PENDING_ACTIVATION")
    );
    app.finish().await;
}

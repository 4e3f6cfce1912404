use std::time::Duration;

use orgadmin_domain::Config;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::{FieldMask, Timestamp};
use sea_orm::ConnectionTrait;
use tonic::Code;

both_backends!(
    licences_are_counted_and_freed,
    licences_hold_under_concurrent_creates_and_sweeps,
    last_administrator_is_protected,
    timed_deactivation_ends_by_the_worker,
    a_sweep_batch_past_sqlites_bound_values_ends_every_leave,
    deletion_is_final_and_follows_policy,
    anonymity_closes_no_profile_where_users_are_never_deleted,
    a_deleted_profile_forgets_the_person,
    the_same_deactivation_again_changes_nothing,
    history_pages_and_filters,
    tokens_authenticate_expire_and_revoke,
    lost_rights_take_effect_at_once,
);

async fn get(app: &TestApp, token: &str, id: &str) -> pb::User {
    app.users()
        .get_user(req(token, pb::GetUserRequest { id: id.to_owned() }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

async fn licences_are_counted_and_freed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(3), None).await;
    let mut users = app.users();
    let token = fixture.admin_token.clone();
    let (a, _) = app.member(&fixture, "Anna", &[]).await;
    let (b, _) = app.member(&fixture, "Bent", &[]).await;
    let before = app.fingerprint().await;
    let over = users
        .create_user(req(&token, new_user(&fixture.org.id, "Carl", &[])))
        .await;
    let status = assert_code(over, Code::FailedPrecondition);
    assert_eq!(reason(&status), "LICENCE_LIMIT_REACHED");
    assert!(
        status.message().contains("all 3 licences"),
        "the error names the limit: {}",
        status.message()
    );
    assert_eq!(app.fingerprint().await, before);

    // Deactivating frees a licence; reactivating needs one again.
    users
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: a.id.clone(),
                until: None,
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let org = app
        .orgs()
        .get_organisation(req(
            &token,
            pb::GetOrganisationRequest {
                id: fixture.org.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    assert_eq!(org.licences_used, 2);
    let (carl, _) = app.member(&fixture, "Carl", &[]).await;
    let back = users
        .reactivate_user(req(
            &token,
            pb::ReactivateUserRequest {
                id: a.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(back, Code::FailedPrecondition)),
        "LICENCE_LIMIT_REACHED"
    );
    // Deleting frees one for good.
    users
        .delete_user(req(
            &token,
            pb::DeleteUserRequest {
                id: b.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let back = users
        .reactivate_user(req(
            &token,
            pb::ReactivateUserRequest {
                id: a.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        back.state,
        pb::UserState::Active as i32,
        "activated before: back to active"
    );
    assert_ne!(carl.id, a.id);
    app.finish().await;
}

/// The licence counter is taken as the last statement of a create, without a
/// lock held across the create: racing creates must still stop exactly at the
/// limit, and the timed-reactivation sweep must count returning users.
async fn licences_hold_under_concurrent_creates_and_sweeps(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(6), None).await;
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..16 {
        let mut users = app.users();
        let (token, org) = (fixture.admin_token.clone(), fixture.org.id.clone());
        racing.spawn(async move {
            users
                .create_user(req(&token, new_user(&org, &format!("Racer{i}"), &[])))
                .await
        });
    }
    let (mut created, mut refused) = (0, 0);
    while let Some(outcome) = racing.join_next().await {
        match outcome.unwrap() {
            Ok(_) => created += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
                assert_eq!(reason(&status), "LICENCE_LIMIT_REACHED");
                refused += 1;
            }
        }
    }
    assert_eq!((created, refused), (5, 11), "the administrator holds one of 6 licences");
    assert_eq!(app.licence_counter_drift().await, Vec::<String>::new());

    // A timed deactivation frees a licence; the sweep that ends it takes it back.
    let listed = app
        .users()
        .list_users(req(
            &fixture.admin_token,
            pb::ListUsersRequest {
                organisation_id: fixture.org.id.clone(),
                page_size: 50,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    let racer = listed.iter().find(|u| u.first_name.starts_with("Racer")).unwrap();
    app.users()
        .deactivate_user(req(
            &fixture.admin_token,
            pb::DeactivateUserRequest {
                id: racer.id.clone(),
                until: Some(in_ms(300)),
                reason: "orlov".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_eq!(app.licence_counter_drift().await, Vec::<String>::new());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(app.domain.reactivate_due_users(now, 10).await.unwrap(), 1);
    assert_eq!(app.licence_counter_drift().await, Vec::<String>::new());
    let full = app
        .users()
        .create_user(req(&fixture.admin_token, new_user(&fixture.org.id, "Late", &[])))
        .await;
    assert_eq!(
        reason(&assert_code(full, Code::FailedPrecondition)),
        "LICENCE_LIMIT_REACHED"
    );
    app.finish().await;
}

/// One sweep batch of 3,100 returns writes 3,100 history events: more
/// bound values than SQLite takes in one statement (32,766). The events go
/// in statements under the limit, so any allowed batch size works.
async fn a_sweep_batch_past_sqlites_bound_values_ends_every_leave(backend: Backend) {
    const LEAVES: usize = 3_100;
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(Some(LEAVES as i32 + 1), None).await;
    let job = crate::imports::created_from(
        &app,
        &fixture.admin_token,
        &fixture.org.id,
        &crate::imports::create_rows(LEAVES, "orlov"),
    )
    .await;
    let errors = app.import_errors(&fixture.admin_token, &job.id).await;
    assert_eq!((job.applied, job.failed), (LEAVES as i64, 0), "{:?}", errors.first());
    let ended = chrono::Utc::now().timestamp_millis() - 1_000;
    app.domain
        .db()
        .execute_unprepared(&format!(
            "UPDATE users SET state = 'DEACTIVATED', deactivated_until = {ended} WHERE state = 'PENDING_ACTIVATION'"
        ))
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(
        app.domain.reactivate_due_users(now, 5_000).await.expect("one batch"),
        LEAVES as u64
    );
    let still_away = app
        .count("SELECT COUNT(*) FROM users WHERE state = 'DEACTIVATED'")
        .await;
    assert_eq!(still_away, 0);
    app.finish().await;
}

async fn last_administrator_is_protected(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin_limits(None, Some(2)).await;
    let mut users = app.users();
    let token = fixture.admin_token.clone();
    let admin_id = fixture.admin.id.clone();
    let before = app.fingerprint().await;
    let deactivate = users
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: admin_id.clone(),
                until: None,
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(deactivate, Code::FailedPrecondition)),
        "LAST_ORGANISATION_ADMIN"
    );
    let delete = users
        .delete_user(req(
            &token,
            pb::DeleteUserRequest {
                id: admin_id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(delete, Code::FailedPrecondition)),
        "LAST_ORGANISATION_ADMIN"
    );
    let demote = users
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    roles: vec![pb::Role::UserAdmin as i32],
                    ..fixture.admin.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["roles".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(demote, Code::FailedPrecondition)),
        "LAST_ORGANISATION_ADMIN"
    );
    assert_eq!(app.fingerprint().await, before, "refused calls changed nothing");

    // A second administrator, then the maximum of 2 stops a third.
    let (second, _) = app.member(&fixture, "Anden", &[pb::Role::OrganisationAdmin]).await;
    let third = users
        .create_user(req(
            &token,
            new_user(&fixture.org.id, "Tredje", &[pb::Role::OrganisationAdmin]),
        ))
        .await;
    assert_eq!(
        reason(&assert_code(third, Code::FailedPrecondition)),
        "MAX_ADMINISTRATORS_REACHED"
    );
    // With two, one may go.
    let demoted = users
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    roles: vec![pb::Role::User as i32],
                    ..second.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["roles".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(demoted.roles, vec![pb::Role::User as i32]);
    app.finish().await;
}

async fn timed_deactivation_ends_by_the_worker(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (user, user_session) = app.member(&fixture, "Orlov", &[]).await;
    let user_token = app.own_api_token(&user_session, &user.id).await;
    let (stays, _) = app.member(&fixture, "Forbliver", &[]).await;
    let token = fixture.admin_token.clone();
    let until = in_ms(1500);
    let deactivated = app
        .users()
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: user.id.clone(),
                until: Some(until),
                reason: "barsel".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(deactivated.state, pb::UserState::Deactivated as i32);
    assert_eq!(
        deactivated.deactivated_until.as_ref().map(|t| t.seconds),
        Some(until.seconds)
    );
    app.users()
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: stays.id.clone(),
                until: None,
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    // A deactivated user cannot act.
    let refused = app.auth().who_am_i(req(&user_token, pb::WhoAmIRequest {})).await;
    assert_code(refused, Code::Unauthenticated);
    // Reads report it until the worker runs.
    assert_eq!(
        get(&app, &token, &user.id).await.state,
        pb::UserState::Deactivated as i32
    );

    // The real worker, with a one-second schedule.
    let config = Config {
        reactivation_schedule: "* * * * * *".into(),
        ..Config::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn({
        let domain = app.domain.clone();
        async move {
            orgadmin_worker::run(domain, &config, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    let mut state = 0;
    for _ in 0..80 {
        state = get(&app, &token, &user.id).await.state;
        if state != pb::UserState::Deactivated as i32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop.send(());
    worker.await.unwrap().unwrap();
    assert_eq!(state, pb::UserState::Active as i32, "the period ended by itself");
    let back = get(&app, &token, &user.id).await;
    assert!(back.deactivated_until.is_none());
    assert_eq!(
        get(&app, &token, &stays.id).await.state,
        pb::UserState::Deactivated as i32,
        "no end time: stays deactivated"
    );
    app.auth()
        .who_am_i(req(&user_token, pb::WhoAmIRequest {}))
        .await
        .expect("the user's API token works again");
    let session = app.auth().who_am_i(req(&user_session, pb::WhoAmIRequest {})).await;
    assert_code(session, Code::Unauthenticated);

    let history = app
        .users()
        .list_user_history(req(
            &token,
            pb::ListUserHistoryRequest {
                user_id: user.id.clone(),
                activities: vec![pb::HistoryActivity::UserReactivated as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].actor, "system:timed-reactivation");
    assert!(
        history[0]
            .changes
            .iter()
            .any(|c| c.field == "state" && c.after == "ACTIVE")
    );
    app.finish().await;
}

async fn deletion_is_final_and_follows_policy(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut users = app.users();
    let token = fixture.admin_token.clone();
    let (user, user_token) = app.member(&fixture, "Slet", &[]).await;

    // DEACTIVATE_ONLY refuses deletion.
    let settings = app
        .orgs()
        .get_organisation_settings(req(
            &token,
            pb::GetOrganisationSettingsRequest {
                organisation_id: fixture.org.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    app.orgs()
        .update_organisation_settings(req(
            &token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(pb::OrganisationSettings {
                    deletion_policy: pb::DeletionPolicy::DeactivateOnly as i32,
                    ..settings.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["deletion_policy".into()],
                }),
            },
        ))
        .await
        .unwrap();
    let before = app.fingerprint().await;
    let refused = users
        .delete_user(req(
            &token,
            pb::DeleteUserRequest {
                id: user.id.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(refused, Code::FailedPrecondition)),
        "DELETION_NOT_ALLOWED"
    );
    assert_eq!(app.fingerprint().await, before);

    let settings = app
        .orgs()
        .get_organisation_settings(req(
            &token,
            pb::GetOrganisationSettingsRequest {
                organisation_id: fixture.org.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    app.orgs()
        .update_organisation_settings(req(
            &token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(pb::OrganisationSettings {
                    deletion_policy: pb::DeletionPolicy::AllowDelete as i32,
                    ..settings
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["deletion_policy".into()],
                }),
            },
        ))
        .await
        .unwrap();
    // The user's token works, and is now in the 1 s authentication cache.
    app.auth()
        .who_am_i(req(&user_token, pb::WhoAmIRequest {}))
        .await
        .expect("the token works before the deletion");
    let deleted = users
        .delete_user(req(
            &token,
            pb::DeleteUserRequest {
                id: user.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(deleted.state, pb::UserState::Deleted as i32);
    assert_code(
        app.auth().who_am_i(req(&user_token, pb::WhoAmIRequest {})).await,
        Code::Unauthenticated,
    );
    for status in [
        users
            .reactivate_user(req(
                &token,
                pb::ReactivateUserRequest {
                    id: user.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        users
            .deactivate_user(req(
                &token,
                pb::DeactivateUserRequest {
                    id: user.id.clone(),
                    until: None,
                    reason: String::new(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
        users
            .delete_user(req(
                &token,
                pb::DeleteUserRequest {
                    id: user.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(|_| ()),
    ] {
        assert_code(status, Code::FailedPrecondition);
    }
    // The e-mail is free for a new person, who gets a new profile.
    let again = pb::CreateUserRequest {
        email: user.email.clone(),
        ..new_user(&fixture.org.id, "Ny", &[])
    };
    let fresh = users
        .create_user(req(&token, again))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_ne!(fresh.id, user.id);
    app.finish().await;
}

/// What a deleted profile still holds of the person, in the database: its
/// CPR number (hash, ciphertext), birth date, and every credential and link.
pub(crate) async fn held_of(app: &TestApp, user_id: &str) -> Vec<String> {
    let id: uuid::Uuid = user_id.parse().unwrap();
    let mut held = Vec::new();
    let row = app
        .row_where(
            "SELECT (cpr_hash IS NOT NULL) OR (cpr_ciphertext IS NOT NULL) OR (birth_date IS NOT NULL) FROM users WHERE id =",
            id,
        )
        .await;
    if row.try_get_by_index::<bool>(0).expect("a flag") {
        held.push("users: CPR number or birth date".to_owned());
    }
    for table in [
        "password_credentials",
        "totp_credentials",
        "login_challenges",
        "activation_secrets",
    ] {
        let row = app
            .row_where(&format!("SELECT COUNT(*) FROM {table} WHERE user_id ="), id)
            .await;
        let rows = row.try_get_by_index::<i64>(0).expect("a count");
        if rows > 0 {
            held.push(format!("{table}: {rows}"));
        }
    }
    let row = app
        .row_where(
            "SELECT COUNT(*) FROM rights_requests WHERE state = 'OPEN' AND requester_id =",
            id,
        )
        .await;
    if row.try_get_by_index::<i64>(0).expect("a count") > 0 {
        held.push("rights_requests: open".to_owned());
    }
    held
}

/// R-USR-5, R-USR-9: a deleted profile never signs in or activates again,
/// so it keeps neither the person's CPR number nor their birth date nor any
/// credential: a database dump must not carry them for people who are
/// gone. Deleted by DeleteUser, and closed for anonymity (the new profile
/// takes the CPR number with it).
async fn a_deleted_profile_forgets_the_person(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let plant_app = |user_id: &str| {
        let id: uuid::Uuid = user_id.parse().unwrap();
        app.execute_bound(
            "INSERT INTO totp_credentials (user_id, secret_sealed, created_at, confirmed_at) VALUES ($1, 'x', 1, 1)",
            vec![id.into()],
        )
    };

    let (leaving, email) = app.member_with_password(&fixture, "Lise", &[]).await;
    let session = app.login(&email, TEST_PASSWORD).await.expect("logged in").session_token;
    let asked = app
        .access()
        .request_rights(req(
            &session,
            pb::RequestRightsRequest {
                requested: Some(pb::request_rights_request::Requested::Role(pb::Role::UserAdmin as i32)),
                reason: "Jeg overtager brugeradministrationen".into(),
            },
        ))
        .await
        .expect("asked")
        .into_inner()
        .rights_request
        .expect("the request");
    plant_app(&leaving.id).await;
    app.request_password_reset(&email).await;
    let held = held_of(&app, &leaving.id).await;
    assert_eq!(
        held.len(),
        5,
        "the test's person holds a CPR number, a password, an app and links: {held:?}"
    );
    // An address change waits for its confirmation; its mail waits to go.
    let moving_to = unique_email("lise.ny");
    let mut moving = app.user(&fixture.admin_token, &leaving.id).await;
    moving.email = moving_to.clone();
    app.users()
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(moving),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("an address change asked");
    assert_eq!(app.mail_texts("email_verification", &moving_to).await.len(), 1);
    assert_eq!(
        app.mail_texts("password_reset", &email).await.len(),
        1,
        "a reset mail waits to go"
    );
    // Someone asks to join the organisation with the same address: the
    // confirmation is theirs, not the profile's, and goes all the same.
    app.ask_to_join(&fixture, "Lise", &email).await;
    assert_eq!(app.mail_texts("join_confirmation", &email).await.len(), 1);
    // One of their mails was parked (the relay refused it): the operator
    // still sees it after the deletion, and cannot send it.
    app.execute_bound(
        "UPDATE outbox_mails SET state = 'FAILED', last_error = '550 5.1.1 mailbox full' \
         WHERE kind = 'welcome' AND recipient = $1",
        vec![email.clone().into()],
    )
    .await;
    app.delete_user(&fixture.admin_token, &leaving.id)
        .await
        .expect("deleted");
    let parked = app.parked_mails().await;
    let welcome = parked
        .iter()
        .find(|m| m.kind == "welcome")
        .expect("the parked mail is still listed");
    let refused = app
        .notes()
        .retry_mail(req(OPERATOR_TOKEN, pb::RetryMailRequest { id: welcome.id.clone() }))
        .await;
    assert_eq!(reason(&assert_code(refused, Code::FailedPrecondition)), "MAIL_EXPIRED");
    let kept = app
        .row_where(
            "SELECT payload FROM outbox_mails WHERE id =",
            welcome.id.parse().unwrap(),
        )
        .await;
    assert_eq!(
        kept.try_get::<String>("", "payload").unwrap(),
        "",
        "its content was kept"
    );
    // The mail that had not gone yet does not go: its link no longer
    // works, and the address may be someone else's by the time it would.
    assert!(
        app.mail_texts("password_reset", &email).await.is_empty(),
        "a mail to a deleted person waits to go"
    );
    assert!(
        app.mail_texts("email_verification", &moving_to).await.is_empty(),
        "a mail to the address a deleted person was moving to waits to go"
    );
    assert_eq!(
        app.mail_texts("join_confirmation", &email).await.len(),
        1,
        "the confirmation of someone asking to join with the address was dropped"
    );
    assert_eq!(
        held_of(&app, &leaving.id).await,
        Vec::<String>::new(),
        "a deleted profile still holds"
    );
    let shown = app.user(&fixture.admin_token, &leaving.id).await;
    assert_eq!(shown.state, pb::UserState::Deleted as i32);
    assert!(shown.cpr_masked.is_empty(), "a deleted profile shows a CPR number");
    // Their open request ends with them: no one decides it, nothing is
    // mailed to their address (which may be someone else's by now).
    let open = app
        .access()
        .list_rights_requests(req(
            &fixture.admin_token,
            pb::ListRightsRequestsRequest {
                organisation_id: fixture.org.id.clone(),
                open_only: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .rights_requests;
    assert!(
        open.iter().all(|r| r.id != asked.id),
        "a deleted person's request is still open"
    );
    let late = app
        .access()
        .decide_rights_request(req(
            &fixture.admin_token,
            pb::DecideRightsRequestRequest {
                id: asked.id.clone(),
                approve: false,
                note: String::new(),
            },
        ))
        .await;
    assert_code(late, Code::FailedPrecondition);
    // Ended as a decision ends one: with its event in the person's history.
    let ended = app
        .history_of(
            &fixture.admin_token,
            &leaving.id,
            pb::HistoryActivity::RightsRequestRejected,
        )
        .await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(app.mail_texts("rights_request_decided", &email).await.is_empty());

    let (closing, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let session = app.login(&email, TEST_PASSWORD).await.expect("logged in").session_token;
    let asked = app.ask_anonymity(&session).await;
    plant_app(&closing.id).await;
    let decided = app
        .approve_anonymity(&fixture.admin_token, &asked)
        .await
        .expect("approved");
    assert_eq!(
        held_of(&app, &closing.id).await,
        Vec::<String>::new(),
        "a closed profile still holds"
    );
    let fresh = decided.new_user.expect("the new profile");
    assert!(!fresh.cpr_masked.is_empty(), "the CPR number moves to the new profile");
    app.finish().await;
}

async fn history_pages_and_filters(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut users = app.users();
    let token = fixture.admin_token.clone();
    let (user, _) = app.member(&fixture, "Historik", &[]).await;
    let mut current = user.clone();
    for i in 0..5 {
        current = users
            .update_user(req(
                &token,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        phone: format!("+45 1234 56{i:02}"),
                        ..current.clone()
                    }),
                    update_mask: Some(FieldMask {
                        paths: vec!["phone".into()],
                    }),
                    cpr: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
    }
    users
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: user.id.clone(),
                until: None,
                reason: "test".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let mid = chrono::Utc::now().timestamp_millis();
    tokio::time::sleep(Duration::from_millis(20)).await;
    users
        .reactivate_user(req(
            &token,
            pb::ReactivateUserRequest {
                id: user.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    // 9 events: created, token, 5 updates, deactivated, reactivated.
    let mut seen = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = users
            .list_user_history(req(
                &token,
                pb::ListUserHistoryRequest {
                    user_id: user.id.clone(),
                    page_size: 4,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 4);
        seen.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(seen.len(), 9);
    assert_eq!(seen[0].activity(), pb::HistoryActivity::UserReactivated);
    assert_eq!(seen[8].activity(), pb::HistoryActivity::UserCreated);
    let times: Vec<i64> = seen
        .iter()
        .map(|e| {
            e.occur_time.as_ref().unwrap().seconds * 1000 + i64::from(e.occur_time.as_ref().unwrap().nanos / 1_000_000)
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let updates = users
        .list_user_history(req(
            &token,
            pb::ListUserHistoryRequest {
                user_id: user.id.clone(),
                activities: vec![pb::HistoryActivity::UserUpdated as i32],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(updates.len(), 5);
    let since = users
        .list_user_history(req(
            &token,
            pb::ListUserHistoryRequest {
                user_id: user.id.clone(),
                start_time: Some(Timestamp {
                    seconds: mid / 1000,
                    nanos: ((mid % 1000) * 1_000_000) as i32,
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        since
            .iter()
            .map(|e| e.activity().as_str_name().trim_start_matches("HISTORY_ACTIVITY_"))
            .collect::<Vec<_>>(),
        vec!["USER_REACTIVATED"]
    );
    let backwards = users
        .list_user_history(req(
            &token,
            pb::ListUserHistoryRequest {
                user_id: user.id.clone(),
                start_time: Some(in_ms(0)),
                end_time: Some(in_ms(-1000)),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(backwards, Code::InvalidArgument)),
        vec!["end_time"]
    );
    app.finish().await;
}

async fn tokens_authenticate_expire_and_revoke(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut auth = app.auth();
    assert_code(
        auth.who_am_i(req("", pb::WhoAmIRequest {})).await,
        Code::Unauthenticated,
    );
    assert_code(
        auth.who_am_i(req("oat_made-up", pb::WhoAmIRequest {})).await,
        Code::Unauthenticated,
    );
    let mut raw = tonic::Request::new(pb::WhoAmIRequest {});
    raw.metadata_mut()
        .insert("authorization", fixture.admin_token.parse().unwrap());
    assert_code(auth.who_am_i(raw).await, Code::Unauthenticated);

    // API tokens are the caller's own (R-AUTH-1): the user makes them with
    // the session their activation gave them.
    let (user, session) = app.member(&fixture, "Token", &[]).await;
    let short = auth
        .create_api_token(req(
            &session,
            pb::CreateApiTokenRequest {
                user_id: user.id.clone(),
                name: "kort".into(),
                expire_time: Some(in_ms(1000)),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    auth.who_am_i(req(&short.secret, pb::WhoAmIRequest {}))
        .await
        .expect("fresh token works");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_code(
        auth.who_am_i(req(&short.secret, pb::WhoAmIRequest {})).await,
        Code::Unauthenticated,
    );

    let long = auth
        .create_api_token(req(
            &session,
            pb::CreateApiTokenRequest {
                user_id: user.id.clone(),
                name: "lang".into(),
                expire_time: None,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let listed = auth
        .list_api_tokens(req(
            &fixture.admin_token,
            pb::ListApiTokensRequest {
                organisation_id: fixture.org.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_tokens;
    assert!(listed.iter().any(|t| t.id == long.api_token.as_ref().unwrap().id));
    // Used (and so cached for 1 s) right before it is revoked.
    auth.who_am_i(req(&long.secret, pb::WhoAmIRequest {}))
        .await
        .expect("the token works before it is revoked");
    let revoked = auth
        .revoke_api_token(req(
            &fixture.admin_token,
            pb::RevokeApiTokenRequest {
                id: long.api_token.unwrap().id,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_token
        .unwrap();
    assert!(revoked.revoke_time.is_some());
    // The list shows live credentials only (every login leaves a session).
    let listed = auth
        .list_api_tokens(req(
            &fixture.admin_token,
            pb::ListApiTokensRequest {
                organisation_id: fixture.org.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_tokens;
    assert!(
        listed.iter().all(|t| t.id != revoked.id && t.revoke_time.is_none()),
        "{listed:?}"
    );
    assert_code(
        auth.who_am_i(req(&long.secret, pb::WhoAmIRequest {})).await,
        Code::Unauthenticated,
    );

    let too_long = auth
        .create_api_token(req(
            &session,
            pb::CreateApiTokenRequest {
                user_id: user.id.clone(),
                name: "x".into(),
                expire_time: Some(in_ms(3 * 366 * 86_400_000)),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(too_long, Code::InvalidArgument)),
        vec!["expire_time"]
    );
    let no_name = auth
        .create_api_token(req(
            &session,
            pb::CreateApiTokenRequest {
                user_id: user.id.clone(),
                name: String::new(),
                expire_time: None,
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(bad_fields(&assert_code(no_name, Code::InvalidArgument)), vec!["name"]);
    app.finish().await;
}

/// The authentication cache must not let a caller keep rights it just lost.
async fn lost_rights_take_effect_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (helper, helper_token) = app.member(&fixture, "Hjælper", &[pb::Role::UserAdmin]).await;
    // Authenticated (and cached) as a user administrator.
    app.users()
        .create_user(req(&helper_token, new_user(&fixture.org.id, "Ny", &[])))
        .await
        .unwrap();
    let helper = app
        .users()
        .get_user(req(&fixture.admin_token, pb::GetUserRequest { id: helper.id }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    app.users()
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    roles: vec![pb::Role::User as i32],
                    ..helper.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["roles".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .unwrap();
    let denied = app
        .users()
        .create_user(req(&helper_token, new_user(&fixture.org.id, "Nej", &[])))
        .await;
    assert_code(denied, Code::PermissionDenied);
    // Still authenticated (and cached) right before the deactivation.
    app.auth()
        .who_am_i(req(&helper_token, pb::WhoAmIRequest {}))
        .await
        .expect("the token works before the deactivation");
    app.users()
        .deactivate_user(req(
            &fixture.admin_token,
            pb::DeactivateUserRequest {
                id: helper.id.clone(),
                until: None,
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert_code(
        app.auth().who_am_i(req(&helper_token, pb::WhoAmIRequest {})).await,
        Code::Unauthenticated,
    );
    app.finish().await;
}

/// The reactivation sweep writes a user without the organisation's lock.
/// An UpdateUser without an etag (so with nothing to be stale against) that
/// ran while the sweep held the row read it unlocked, and its versioned
/// write then found the sweep's version: ABORTED (STALE_ETAG), and an
/// import's edit row failed the same way. Now the write locks the row and
/// reads it as the sweep left it. (The sweep in progress is played by a
/// session that has written the row as the sweep does and not committed.)
/// PostgreSQL only: SQLite has one writer at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_waits_for_a_sweep_holding_the_user() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (anna, _) = app.member(&fixture, "Anna", &[]).await;
    let sweep = app
        .in_progress(&[format!(
            "UPDATE users SET version = version + 1, updated_at = updated_at + 1 WHERE id = '{}'",
            anna.id
        )])
        .await;
    let updating = {
        let (mut users, token, id) = (app.users(), fixture.admin_token.clone(), anna.id.clone());
        tokio::spawn(async move {
            users
                .update_user(req(
                    &token,
                    pb::UpdateUserRequest {
                        user: Some(pb::User {
                            id,
                            surname: "Holm".into(),
                            ..Default::default()
                        }),
                        update_mask: Some(FieldMask {
                            paths: vec!["surname".into()],
                        }),
                        cpr: String::new(),
                    },
                ))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!updating.is_finished(), "the update did not wait for the row");
    sweep.commit().await;
    let updated = updating
        .await
        .unwrap()
        .expect("no etag given: nothing is stale")
        .into_inner();
    assert_eq!(updated.user.unwrap().surname, "Holm");
    app.finish().await;
}

/// A DeactivateUser whose answer was lost is sent again (no etag): the
/// same period and reason change nothing, so nothing is written and
/// history shows one deactivation. Another reason is a change.
async fn the_same_deactivation_again_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (member, _) = app.member(&fixture, "Orlov", &[]).await;
    let until = in_ms(30 * 24 * 60 * 60 * 1000);
    let deactivate = |reason: &str| {
        let mut users = app.users();
        let request = pb::DeactivateUserRequest {
            id: member.id.clone(),
            until: Some(until),
            reason: reason.to_owned(),
            ..Default::default()
        };
        let token = fixture.admin_token.clone();
        async move {
            users
                .deactivate_user(req(&token, request))
                .await
                .map(|r| r.into_inner())
        }
    };
    deactivate("orlov").await.expect("deactivated");
    let before = app.fingerprint().await;
    deactivate("orlov").await.expect("the retry");
    deactivate("").await.expect("the same without a reason");
    assert_eq!(
        app.fingerprint().await,
        before,
        "the same deactivation again changed something"
    );
    let events = app
        .history_of(&fixture.admin_token, &member.id, pb::HistoryActivity::UserDeactivated)
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    deactivate("orlov, forlænget").await.expect("another reason");
    let events = app
        .history_of(&fixture.admin_token, &member.id, pb::HistoryActivity::UserDeactivated)
        .await;
    assert_eq!(events.len(), 2, "{events:?}");
    app.finish().await;
}

/// R-ORG-3 against R-USR-10: approving an anonymity request closes the old
/// profile for good (DELETED: its e-mail and CPR number move to the new
/// one), which an organisation that deactivates and never deletes, for
/// traceability, has ruled out. Approval then deleted the profile all the
/// same. Now it is refused and changes nothing (rejecting still ends the
/// request), and a new request is refused at once rather than left to wait.
async fn anonymity_closes_no_profile_where_users_are_never_deleted(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (user, user_token) = app.member(&fixture, "Skjult", &[]).await;
    let ask = || async {
        app.users()
            .request_anonymity(req(
                &user_token,
                pb::RequestAnonymityRequest {
                    reason: "Beskyttet adresse efter flytning".into(),
                },
            ))
            .await
    };
    let asked = ask().await.unwrap().into_inner().anonymity_request.unwrap();
    app.change_settings(&fixture, "deletion_policy", |s| {
        s.deletion_policy = pb::DeletionPolicy::DeactivateOnly as i32
    })
    .await;
    let decide = |approve: bool| {
        let id = asked.id.clone();
        let token = fixture.admin_token.clone();
        let app = &app;
        async move {
            app.users()
                .decide_anonymity_request(req(
                    &token,
                    pb::DecideAnonymityRequestRequest {
                        id,
                        approve,
                        note: String::new(),
                    },
                ))
                .await
        }
    };
    let before = app.fingerprint().await;
    assert_eq!(
        reason(&assert_code(decide(true).await, Code::FailedPrecondition)),
        "DELETION_NOT_ALLOWED"
    );
    assert_eq!(app.fingerprint().await, before, "a refused approval changes nothing");
    assert_eq!(
        get(&app, &fixture.admin_token, &user.id).await.state,
        pb::UserState::Active as i32
    );
    let rejected = decide(false).await.unwrap().into_inner();
    assert!(rejected.new_user.is_none());
    assert_eq!(
        reason(&assert_code(ask().await, Code::FailedPrecondition)),
        "DELETION_NOT_ALLOWED"
    );
    app.finish().await;
}

//! History names people: each event keeps the actor's name and e-mail as
//! they were when they acted.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;

both_backends!(
    history_names_the_actor_as_they_were,
    the_operator_reads_no_ordinary_person_in_an_administrators_history
);

async fn history(app: &TestApp, token: &str, user_id: &str) -> Vec<pb::HistoryEvent> {
    app.users()
        .list_user_history(req(
            token,
            pb::ListUserHistoryRequest {
                user_id: user_id.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events
}

async fn history_names_the_actor_as_they_were(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let (anna, _) = app.member(&fixture, "Anna", &[]).await;

    let events = history(&app, &token, &anna.id).await;
    let created = events
        .iter()
        .find(|e| e.activity() == pb::HistoryActivity::UserCreated)
        .unwrap();
    assert_eq!(created.actor, format!("user:{}", fixture.admin.id));
    assert_eq!(created.actor_name, "Admin Jørgensen");
    assert_eq!(created.actor_email, fixture.admin.email);
    let activated = events
        .iter()
        .find(|e| e.activity() == pb::HistoryActivity::UserActivated)
        .unwrap();
    assert_eq!(activated.actor_name, "Anna Jørgensen", "she activated herself");

    // The administrator changes name and address; what they did before keeps
    // the old ones, what they do now carries the new ones.
    let renamed = app
        .users()
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    first_name: "Adminna".into(),
                    surname: "Ærø".into(),
                    ..fixture.admin.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["first_name".into(), "surname".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    // Past the authentication cache (1 s), which holds the caller's name.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    app.users()
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    surname: "Ny".into(),
                    ..anna.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["surname".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .unwrap();
    let events = history(&app, &token, &anna.id).await;
    assert_eq!(events[0].activity(), pb::HistoryActivity::UserUpdated);
    assert_eq!(events[0].actor_name, "Adminna Ærø");
    let created = events
        .iter()
        .find(|e| e.activity() == pb::HistoryActivity::UserCreated)
        .unwrap();
    assert_eq!(created.actor_name, "Admin Jørgensen", "as they were at the time");
    assert_eq!(renamed.first_name, "Adminna");

    // The filter takes activities history can hold; UNSPECIFIED or a number
    // the contract does not know is an error, not an empty page.
    let typo = app
        .users()
        .list_user_history(req(
            &token,
            pb::ListUserHistoryRequest {
                user_id: anna.id.clone(),
                activities: vec![
                    pb::HistoryActivity::UserUpdated as i32,
                    pb::HistoryActivity::Unspecified as i32,
                    9999,
                ],
                ..Default::default()
            },
        ))
        .await;
    let status = assert_code(typo, tonic::Code::InvalidArgument);
    assert_eq!(bad_fields(&status), vec!["activities[1]", "activities[2]"]);

    // The operator and the worker are named for what they are.
    let admin_history = history(&app, OPERATOR_TOKEN, &fixture.admin.id).await;
    let by_operator = admin_history
        .iter()
        .find(|e| e.activity() == pb::HistoryActivity::UserCreated)
        .unwrap();
    assert_eq!(by_operator.actor_name, "operator");
    assert_eq!(by_operator.actor_email, "");
    // The worker's sweep ends a timed deactivation, and is named so.
    let (away, _) = app.member(&fixture, "Orlov", &[]).await;
    crate::seats::deactivate(&app, &fixture.admin_token, &away.id, Some(in_ms(200)))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let now = chrono::Utc::now().timestamp_millis();
    assert_eq!(app.domain.reactivate_due_users(now, 10).await.unwrap(), 1);
    let back = history(&app, &fixture.admin_token, &away.id).await;
    let by_worker = back
        .iter()
        .find(|e| e.activity() == pb::HistoryActivity::UserReactivated)
        .unwrap();
    assert_eq!(
        (
            by_worker.actor.as_str(),
            by_worker.actor_name.as_str(),
            by_worker.actor_email.as_str()
        ),
        ("system:timed-reactivation", "system (timed-reactivation)", "")
    );
    app.finish().await;
}

/// R-ACC-6: the operator sees an organisation's administrators, not its
/// other people, and an administrator's history is no way round that. A
/// colleague who changed the administrator's settings through a share is
/// named to the operator only as `user`; the administrator reads their
/// name and address. Before, the operator got both.
async fn the_operator_reads_no_ordinary_person_in_an_administrators_history(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin = &fixture.admin;
    let (bo, bo_token) = app.member(&fixture, "Bo", &[]).await;
    app.access()
        .share_access(req(
            &fixture.admin_token,
            pb::ShareAccessRequest {
                owner_user_id: admin.id.clone(),
                grantee_user_id: bo.id.clone(),
                access: pb::ShareAccessLevel::Edit as i32,
            },
        ))
        .await
        .expect("shared to edit");
    app.notes()
        .update_notification_preferences(acting_as(
            &admin.id,
            req(
                &bo_token,
                pb::UpdateNotificationPreferencesRequest {
                    preferences: vec![pb::NotificationPreference {
                        kind: pb::NotificationKind::AnonymityRequest as i32,
                        channel: pb::DeliveryChannel::InApp as i32,
                    }],
                },
            ),
        ))
        .await
        .expect("Bo changes the administrator's settings through the share");
    let by_bo = |events: &[pb::HistoryEvent]| {
        events
            .iter()
            .find(|e| e.activity() == pb::HistoryActivity::NotificationPreferencesChanged)
            .cloned()
            .expect("the change is in the history")
    };
    let seen_by_admin = by_bo(&history(&app, &fixture.admin_token, &admin.id).await);
    assert_eq!(seen_by_admin.actor, format!("user:{}", bo.id));
    assert_eq!(seen_by_admin.actor_email, bo.email);

    let seen_by_operator = history(&app, OPERATOR_TOKEN, &admin.id).await;
    let event = by_bo(&seen_by_operator);
    assert_eq!(event.actor, "user");
    assert_eq!((event.actor_name.as_str(), event.actor_email.as_str()), ("", ""));
    let shown = format!("{seen_by_operator:?}");
    assert!(!shown.contains(&bo.email), "the operator reads Bo's address: {shown}");
    assert!(
        !seen_by_operator.iter().any(|e| e.actor == format!("user:{}", bo.id)),
        "{shown}"
    );
    // The administrators who acted stay named.
    assert!(
        seen_by_operator
            .iter()
            .any(|e| e.actor == format!("user:{}", admin.id) && e.actor_email == admin.email),
        "{seen_by_operator:#?}"
    );
    app.finish().await;
}

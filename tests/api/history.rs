//! History names people: each event keeps the actor's name and e-mail as
//! they were when they acted.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;

both_backends!(history_names_the_actor_as_they_were);

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

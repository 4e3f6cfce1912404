//! R-USR-6: changing a user's e-mail re-verifies it. The new address waits
//! until the single-use link mailed to it is opened; the old one stays in
//! force meanwhile; users carry an e-mail-verified flag.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use tonic::Code;

both_backends!(
    a_new_address_takes_over_once_verified,
    an_unactivated_user_changes_address_at_once,
    an_administrators_change_is_held_and_can_be_withdrawn,
    a_link_from_before_the_hold_is_held,
);

async fn change_email(app: &TestApp, token: &str, user: &pb::User, email: &str) -> Result<pb::User, tonic::Status> {
    app.users()
        .update_user(req(
            token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    email: email.to_owned(),
                    ..user.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["email".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

async fn verify(app: &TestApp, token: &str) -> Result<pb::User, tonic::Status> {
    app.users()
        .verify_email(req(
            "",
            pb::VerifyEmailRequest {
                token: token.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().user.unwrap())
}

async fn get(app: &TestApp, token: &str, id: &str) -> pb::User {
    app.users()
        .get_user(req(token, pb::GetUserRequest { id: id.to_owned() }))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
}

async fn a_new_address_takes_over_once_verified(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let (anna, anna_session) = app.member(&fixture, "Anna", &[]).await;
    assert!(anna.email_verified, "activation by the mailed link proved the address");
    let old = anna.email.clone();
    let new = unique_email("anna.ny");

    // Another live user's address is refused at once, changing nothing.
    let before = app.fingerprint().await;
    let taken = change_email(&app, &token, &anna, &fixture.admin.email).await;
    assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "EMAIL_TAKEN");
    assert_eq!(app.fingerprint().await, before);

    // A reset link mailed to the old address before the change ...
    app.request_password_reset(&old).await;
    let reset_link = app.mailed_token("password_reset", &old).await;
    let changed = change_email(&app, &token, &anna, &new).await.unwrap();
    assert_eq!(changed.email, old, "the old address stays in force");
    assert_eq!(changed.pending_email, new);
    assert!(changed.email_verified, "the address in force is still the verified one");
    let link = app.mailed_token("email_verification", &new).await;
    // Asked by an administrator: Anna hears of it at the address in force,
    // which names the new one (an administrator's own mailbox would show).
    let notices = app.mail_texts("email_change_notice", &old).await;
    assert_eq!(notices.len(), 1, "one notice to the address in force");
    assert!(notices[0].contains(&new), "{}", notices[0]);
    assert!(app.mail_texts("email_change_notice", &new).await.is_empty());
    // The link is no activation secret, and it works once.
    let misuse = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                token: link.clone(),
                cpr: unique_cpr(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(misuse, Code::FailedPrecondition)),
        "ACTIVATION_UNKNOWN"
    );
    assert_eq!(get(&app, &token, &anna.id).await.email, old);

    // Asked by an administrator: held for three days, which the notice
    // names; the link does nothing meanwhile.
    let held = verify(&app, &link).await;
    let held = assert_code(held, Code::FailedPrecondition);
    assert_eq!(reason(&held), "EMAIL_CHANGE_HELD");
    assert_eq!(get(&app, &token, &anna.id).await.email, old);
    assert!(notices[0].contains(" UTC"), "{}", notices[0]);
    // The hold ends at the minute the notice names, not seconds after it.
    let usable_from = app
        .count("SELECT MAX(usable_from) FROM activation_secrets WHERE kind = 'EMAIL'")
        .await;
    assert_eq!(
        usable_from % 60_000,
        0,
        "a hold that ends between the minutes mails name"
    );
    assert!(
        notices[0].contains(&orgadmin_domain::mail::date_time(usable_from)),
        "{}",
        notices[0]
    );
    app.pass_email_change_holds().await;
    let verified = verify(&app, &link).await.unwrap();
    assert_eq!(verified.email, new);
    assert_eq!(verified.pending_email, "");
    assert!(verified.email_verified);
    // The link's holder learns whose address it is, and nothing more of
    // the record (whoever reads that mailbox may not be Anna).
    assert_eq!(
        verified,
        pb::User {
            id: anna.id.clone(),
            organisation_id: fixture.org.id.clone(),
            email: new.clone(),
            email_verified: true,
            ..Default::default()
        }
    );
    let again = verify(&app, &link).await;
    assert_code(again, Code::FailedPrecondition);
    // ... no longer sets the password: whoever reads the old mailbox (often
    // why the address changed) must not.
    let old_mailbox = app
        .auth()
        .reset_password(req(
            "",
            pb::ResetPasswordRequest {
                token: reset_link,
                password: "en ny og lang adgangskode".into(),
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(old_mailbox, Code::FailedPrecondition)),
        "PASSWORD_RESET_EXPIRED"
    );
    // Her session still works and history says she verified it herself.
    let history = app
        .users()
        .list_user_history(req(
            &anna_session,
            pb::ListUserHistoryRequest {
                user_id: anna.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(history[0].activity(), pb::HistoryActivity::EmailVerified);
    assert_eq!(history[0].actor, format!("user:{}", anna.id));
    assert!(
        history[0]
            .changes
            .iter()
            .any(|c| c.field == "email" && c.before == old && c.after == new)
    );
    assert_eq!(history[1].activity(), pb::HistoryActivity::UserUpdated);
    assert!(
        history[1]
            .changes
            .iter()
            .any(|c| c.field == "pending_email" && c.after == new)
    );

    // A waiting change is withdrawn by giving the address in force again: its
    // link stops working.
    let current = get(&app, &token, &anna.id).await;
    let third = unique_email("anna.tredje");
    change_email(&app, &token, &current, &third).await.unwrap();
    let third_link = app.mailed_token("email_verification", &third).await;
    let current = get(&app, &token, &anna.id).await;
    let withdrawn = change_email(&app, &token, &current, &new).await.unwrap();
    assert_eq!(withdrawn.pending_email, "");
    let late = verify(&app, &third_link).await;
    assert_eq!(
        reason(&assert_code(late, Code::FailedPrecondition)),
        "ACTIVATION_REPLACED"
    );
    assert_eq!(get(&app, &token, &anna.id).await.email, new);
    app.finish().await;
}

async fn an_unactivated_user_changes_address_at_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let request = new_user(&fixture.org.id, "Bo", &[]);
    let (old, cpr) = (request.email.clone(), request.cpr.clone());
    let bo = app
        .users()
        .create_user(req(&token, request))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!bo.email_verified);
    let old_link = app.activation_link_token(&old).await;
    let new = unique_email("bo.rettet");
    let changed = change_email(&app, &token, &bo, &new).await.unwrap();
    assert_eq!(changed.email, new, "not activated yet: the address changes at once");
    assert_eq!(changed.pending_email, "");
    // The activation link follows the address; the old one stops working.
    let stale = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                token: old_link,
                cpr: cpr.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(stale, Code::FailedPrecondition)),
        "ACTIVATION_REPLACED"
    );
    let activated = app.activate_by_link(&new, &cpr).await.user.unwrap();
    assert_eq!(activated.email, new);
    assert!(activated.email_verified);

    // Activation by a handed-over code proves no address.
    let coded = app
        .users()
        .create_user(req(
            &token,
            pb::CreateUserRequest {
                cpr: String::new(),
                birth_date: "1991-02-03".into(),
                ..new_user(&fixture.org.id, "Kode", &[])
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let done = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                code: coded.activation_code,
                birth_date: "1991-02-03".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(!done.email_verified);
    app.finish().await;
}

/// A user administrator who moves a person's address to a mailbox of
/// their own could verify it at once and reset the person's password:
/// sign in as them. A change asked by someone else is held (three days by
/// default): the link does nothing meanwhile, the notice at the address in
/// force says until when, and the person's organisation administrator
/// withdraws it by giving that address again. A change the person asks for
/// themselves works at once.
async fn an_administrators_change_is_held_and_can_be_withdrawn(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (ulla, user_admin_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (anna, anna_session) = app.member(&fixture, "Anna", &[]).await;
    let old = anna.email.clone();
    let takeover = unique_email("ulla.privat");
    let before = std::time::SystemTime::now();
    change_email(&app, &user_admin_token, &anna, &takeover).await.unwrap();
    let link = app.mailed_token("email_verification", &takeover).await;
    let held = assert_code(verify(&app, &link).await, Code::FailedPrecondition);
    assert_eq!(reason(&held), "EMAIL_CHANGE_HELD");
    // The address in force is still the old one: a reset asked for by
    // either address is mailed there, never to the held one.
    let resets_to =
        |to: &str| format!("SELECT COUNT(*) FROM outbox_mails WHERE kind = 'password_reset' AND recipient = '{to}'");
    app.request_password_reset(&takeover).await;
    app.request_password_reset(&old).await;
    assert_eq!(app.count(&resets_to(&takeover)).await, 0);
    assert_eq!(app.count(&resets_to(&old)).await, 1);
    // The link's own mail says from when it works.
    let verification = app.mail_texts("email_verification", &takeover).await.remove(0);
    let in_three_days = chrono::DateTime::<chrono::Utc>::from(before) + chrono::Duration::hours(72);
    assert!(
        verification.contains(&in_three_days.format("%Y-%m-%d").to_string()),
        "{verification}"
    );
    // The notice names the day the link starts to work: three days on.
    let notice = app.mail_texts("email_change_notice", &old).await.remove(0);
    assert!(
        notice.contains(&in_three_days.format("%Y-%m-%d").to_string()),
        "{notice}"
    );
    // Anna's organisation administrator withdraws it (giving the address
    // in force again): the link is dead for good.
    let current = get(&app, &fixture.admin_token, &anna.id).await;
    let withdrawn = change_email(&app, &fixture.admin_token, &current, &old).await.unwrap();
    assert_eq!(withdrawn.pending_email, "");
    app.pass_email_change_holds().await;
    let dead = assert_code(verify(&app, &link).await, Code::FailedPrecondition);
    assert_eq!(reason(&dead), "ACTIVATION_REPLACED", "{dead:?}");
    assert_eq!(get(&app, &anna_session, &anna.id).await.email, old);
    // A change one asks for oneself (here the user administrator's own
    // address) works at once and sends no notice.
    let ulla_now = get(&app, &user_admin_token, &ulla.id).await;
    let hers = unique_email("ulla.ny");
    change_email(&app, &user_admin_token, &ulla_now, &hers).await.unwrap();
    let own_link = app.mailed_token("email_verification", &hers).await;
    assert_eq!(verify(&app, &own_link).await.unwrap().email, hers);
    assert!(app.mail_texts("email_change_notice", &ulla.email).await.is_empty());
    app.finish().await;
}

/// Migration 76 holds the verification links open at the upgrade: who
/// asked for their change was not recorded, and an administrator's made
/// the day before must not be confirmable at once after it.
async fn a_link_from_before_the_hold_is_held(backend: Backend) {
    use orgadmin_migrations::{Migrator, MigratorTrait};
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin = fixture.admin_token.clone();
    let me = get(&app, &admin, &fixture.admin.id).await;
    let mine = unique_email("karen.ny");
    // Her own change: no hold when made.
    change_email(&app, &admin, &me, &mine).await.unwrap();
    let link = app.mailed_token("email_verification", &mine).await;
    let db = app.domain.db();
    app.undo_migrations_from("m20261206_000076_hold_email_changes_asked_by_others")
        .await;
    Migrator::up(db, None).await.expect("up again");
    let held = assert_code(verify(&app, &link).await, Code::FailedPrecondition);
    assert_eq!(reason(&held), "EMAIL_CHANGE_HELD", "{held:?}");
    app.pass_email_change_holds().await;
    assert_eq!(verify(&app, &link).await.unwrap().email, mine);

    // After the upgrade, pods of the older release still serve for a while
    // and write links with no start (nor any hold): such a link is held.
    let me = get(&app, &admin, &fixture.admin.id).await;
    let later = unique_email("karen.senere");
    change_email(&app, &admin, &me, &later).await.unwrap();
    let link = app.mailed_token("email_verification", &later).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM activation_secrets WHERE kind = 'EMAIL' AND usable_from IS NULL")
            .await,
        0,
        "a link without its start"
    );
    app.execute_bound(
        "UPDATE activation_secrets SET usable_from = NULL WHERE kind = $1",
        vec!["EMAIL".into()],
    )
    .await;
    let held = assert_code(verify(&app, &link).await, Code::FailedPrecondition);
    assert_eq!(reason(&held), "EMAIL_CHANGE_HELD", "{held:?}");
    app.pass_email_change_holds().await;
    assert_eq!(verify(&app, &link).await.unwrap().email, later);
    app.finish().await;
}

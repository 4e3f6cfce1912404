//! R-AUTH-1 and R-USR-3: nobody obtains a credential that acts as another
//! person; a person's first credential comes from their own activation; the
//! activation miss limit holds under any concurrency; CPR numbers are written
//! one way.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;

both_backends!(
    activation_hands_the_person_a_session_of_their_own,
    no_one_mints_a_token_for_another_person,
    parallel_activation_guesses_lock_at_exactly_the_limit,
    cpr_numbers_are_written_one_way_and_born_already,
    a_user_administrator_cannot_take_over_an_administrators_login,
    activation_codes_are_stored_keyed,
    configured_operator_tokens_retire_the_generated_one,
);

async fn activation_hands_the_person_a_session_of_their_own(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let request = new_user(&fixture.org.id, "Sofie", &[]);
    let (email, cpr) = (request.email.clone(), request.cpr.clone());
    let created = app.created_user(&fixture.admin_token, request).await;
    let link = app.activation_link_token(&email).await;
    let reply = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                token: link.clone(),
                cpr: cpr.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.user.as_ref().unwrap().state, pb::UserState::Active as i32);
    let session = reply.session_token.clone();
    assert!(
        session.starts_with("oat_") && session.len() > 40,
        "a real secret: {session}"
    );
    let expires = reply.session_expire_time.expect("the session expires").seconds;
    let now = chrono::Utc::now().timestamp();
    assert!(expires > now && expires <= now + 12 * 3600 + 5, "12 hours by default");

    // The session acts as the person who activated, and as nobody else.
    let me = app.who_am_i(&session).await.unwrap();
    assert_eq!(me.user_id, created.id);
    // With it they make their own API token; history names them.
    let own = app.own_api_token(&session, &created.id).await;
    assert_eq!(app.who_am_i(&own).await.unwrap().user_id, created.id);

    // Shown once: only its hash is stored, and the link cannot be used again.
    let db = app.domain.db();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT token_hash, kind FROM api_tokens".to_owned(),
        ))
        .await
        .unwrap();
    assert!(
        rows.iter()
            .any(|r| r.try_get_by_index::<String>(1).unwrap() == "SESSION")
    );
    for row in rows {
        let hash: String = row.try_get_by_index(0).unwrap();
        assert!(!hash.contains(&session) && !session.contains(&hash));
    }
    let again = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                token: link,
                cpr,
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(again, Code::FailedPrecondition)), "ACTIVATION_USED");
    app.finish().await;
}

/// The probe's case: the operator minted a token for an administrator and
/// with it read ordinary users; an administrator minted one for a plain user.
async fn no_one_mints_a_token_for_another_person(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (plain, plain_token) = app.member(&fixture, "Plain", &[]).await;
    let before = app.fingerprint().await;
    for (granter, target) in [
        (OPERATOR_TOKEN, &fixture.admin.id),
        (fixture.admin_token.as_str(), &plain.id),
        (plain_token.as_str(), &fixture.admin.id),
    ] {
        let minted = app
            .auth()
            .create_api_token(req(
                granter,
                pb::CreateApiTokenRequest {
                    user_id: target.clone(),
                    name: "som en anden".into(),
                    expire_time: None,
                    ..Default::default()
                },
            ))
            .await;
        assert_code(minted, Code::PermissionDenied);
    }
    assert_eq!(app.fingerprint().await, before, "denied calls change nothing");
    // Each person makes their own.
    let own = app.own_api_token(&plain_token, &plain.id).await;
    assert_eq!(app.who_am_i(&own).await.unwrap().user_id, plain.id);
    app.finish().await;
}

/// 30 parallel wrong birth dates against one code: exactly 5 are counted
/// (the limit) and lock it; the right date afterwards is refused.
async fn parallel_activation_guesses_lock_at_exactly_the_limit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let created = app
        .users()
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                cpr: String::new(),
                birth_date: "1990-05-17".into(),
                ..new_user(&fixture.org.id, "Gætter", &[])
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let code = created.activation_code.clone();
    let mut guesses = tokio::task::JoinSet::new();
    for day in 1..=30 {
        let mut users = app.users();
        let code = code.clone();
        guesses.spawn(async move {
            users
                .activate_user(req(
                    "",
                    pb::ActivateUserRequest {
                        code,
                        birth_date: format!("1980-01-{day:02}"),
                        ..Default::default()
                    },
                ))
                .await
        });
    }
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    while let Some(outcome) = guesses.join_next().await {
        let status = outcome.unwrap().expect_err("every guess is wrong");
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        *reasons.entry(reason(&status)).or_default() += 1;
    }
    assert_eq!(reasons.get("ACTIVATION_MISMATCH"), Some(&5), "{reasons:?}");
    assert_eq!(reasons.get("ACTIVATION_LOCKED"), Some(&25), "{reasons:?}");
    let db = app.domain.db();
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT failed_attempts FROM activation_secrets WHERE kind = 'CODE'".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get_by_index::<i32>(0).unwrap(), 5);
    let right = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                code,
                birth_date: "1990-05-17".into(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(right, Code::FailedPrecondition)),
        "ACTIVATION_LOCKED"
    );
    let user = app
        .users()
        .get_user(req(
            &fixture.admin_token,
            pb::GetUserRequest {
                id: created.user.unwrap().id,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.state, pb::UserState::PendingActivation as i32);
    app.finish().await;
}

async fn cpr_numbers_are_written_one_way_and_born_already(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let before = app.fingerprint().await;
    for bad in [
        "01-01-80-12-34",
        "0101-801234",
        "010180 1234",
        "0101304123",
        "010130-4123",
    ] {
        let created = app
            .users()
            .create_user(req(
                &fixture.admin_token,
                pb::CreateUserRequest {
                    cpr: bad.into(),
                    ..new_user(&fixture.org.id, "Cpr", &[])
                },
            ))
            .await;
        let status = assert_code(created, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), vec!["cpr".to_owned()], "{bad}: {status:?}");
        let activated = app
            .users()
            .activate_user(req(
                "",
                pb::ActivateUserRequest {
                    token: "oat_unknown".into(),
                    cpr: bad.into(),
                    ..Default::default()
                },
            ))
            .await;
        let status = assert_code(activated, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), vec!["cpr".to_owned()], "{bad}: {status:?}");
    }
    assert_eq!(app.fingerprint().await, before);
    // Both accepted forms name the same person.
    let dashed = unique_cpr();
    let dashed = format!("{}-{}", &dashed[..6], &dashed[6..]);
    app.users()
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                cpr: dashed.clone(),
                ..new_user(&fixture.org.id, "Streg", &[])
            },
        ))
        .await
        .unwrap();
    let twin = app
        .users()
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                cpr: dashed.replace('-', ""),
                ..new_user(&fixture.org.id, "Tvilling", &[])
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(twin, Code::AlreadyExists)), "CPR_TAKEN");
    app.finish().await;
}

/// R-AUTH-1: how an administrator signs in is changed only by someone who
/// may change roles. A user administrator could move an organisation
/// administrator's address to a mailbox of their own, verify it there,
/// remove the authenticator app, reset the password to that mailbox and
/// sign in as them; or activate a pending administrator with a CPR number,
/// a code or an anonymity approval of their own choosing. Ordinary users
/// stay theirs to look after; the organisation administrator can still do
/// all of it.
async fn a_user_administrator_cannot_take_over_an_administrators_login(backend: Backend) {
    use prost_types::FieldMask;
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (_, user_admin) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (otto, otto_session) = app.member(&fixture, "Otto", &[pb::Role::OrganisationAdmin]).await;
    let (plain, _) = app.member(&fixture, "Pia", &[]).await;
    let change_email = |token: &str, user: &pb::User| {
        let mut users = app.users();
        let request = pb::UpdateUserRequest {
            user: Some(pb::User {
                email: unique_email("ny.adresse"),
                ..user.clone()
            }),
            update_mask: Some(FieldMask {
                paths: vec!["email".into()],
            }),
            cpr: String::new(),
        };
        let token = token.to_owned();
        async move {
            users
                .update_user(req(&token, request))
                .await
                .map(|r| r.into_inner().user.unwrap())
        }
    };
    let before = app.fingerprint().await;
    let refused = assert_code(change_email(&user_admin, &otto).await, Code::PermissionDenied);
    assert!(refused.message().contains("signs in"), "{refused:?}");
    assert_code(
        app.users()
            .remove_authenticator(req(
                &user_admin,
                pb::RemoveAuthenticatorRequest {
                    user_id: otto.id.clone(),
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "the refusals changed nothing");
    let asked = app.ask_anonymity(&otto_session).await;
    let before = app.fingerprint().await;
    assert_code(app.approve_anonymity(&user_admin, &asked).await, Code::PermissionDenied);
    assert_eq!(app.fingerprint().await, before, "the refusal changed nothing");

    // A pending administrator: no code, no link, no CPR number from a user
    // administrator.
    let pending = app
        .users()
        .create_user(req(
            &fixture.admin_token,
            new_user(&fixture.org.id, "Vera", &[pb::Role::RightsAdmin]),
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let before_pending = app.fingerprint().await;
    assert_code(
        app.users()
            .send_activation(req(
                &user_admin,
                pb::SendActivationRequest {
                    user_id: pending.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );
    assert_code(change_email(&user_admin, &pending).await, Code::PermissionDenied);
    assert_eq!(app.fingerprint().await, before_pending, "the refusals changed nothing");
    // Nor in a batch: the administrator is listed back, nothing is sent.
    // An id given twice is one person, mailed once.
    let batch = |token: &str| {
        let mut imports = app.imports();
        let request = pb::BatchSendActivationRequest {
            organisation_id: fixture.org.id.clone(),
            user_ids: vec![pending.id.clone(), pending.id.clone()],
            ..Default::default()
        };
        let token = token.to_owned();
        async move {
            imports
                .batch_send_activation(req(&token, request))
                .await
                .unwrap()
                .into_inner()
        }
    };
    let refused = batch(&user_admin).await;
    assert_eq!(refused.needs_administrator_user_ids, [pending.id.as_str()]);
    assert!(refused.queued_user_ids.is_empty(), "{refused:?}");
    assert_eq!(app.fingerprint().await, before_pending, "the batch sent a link");
    let sent = batch(&fixture.admin_token).await;
    assert_eq!(sent.queued_user_ids, [pending.id.as_str()]);
    assert!(sent.needs_administrator_user_ids.is_empty(), "{sent:?}");

    // Links issued while a person was ordinary (perhaps to an address the
    // user administrator chose) end when they become an administrator.
    let request = new_user(&fixture.org.id, "Nina", &[]);
    let (nina_email, nina_cpr) = (request.email.clone(), request.cpr.clone());
    let nina = app.created_user(&user_admin, request).await;
    let first_link = app.activation_link_token(&nina_email).await;
    app.users()
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    roles: vec![pb::Role::RightsAdmin as i32],
                    ..nina.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["roles".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .expect("promoted by an organisation administrator");
    let activate = |token: String| {
        let mut users = app.users();
        let cpr = nina_cpr.clone();
        async move {
            users
                .activate_user(req(
                    "",
                    pb::ActivateUserRequest {
                        token,
                        cpr,
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    assert_code(activate(first_link.clone()).await, Code::FailedPrecondition);
    // No new link by itself, not even to the address on record (the user
    // administrator chose it, and knows the CPR number): an organisation
    // administrator sends one.
    assert_eq!(app.activation_link_token(&nina_email).await, first_link);
    // Nor by spelling her address with other capitals (no change of how
    // she signs in, so not checked as one): it used to mail a new link.
    let activation_mails = "SELECT COUNT(*) FROM outbox_mails WHERE kind = 'activation'";
    let mails_before = app.count(activation_mails).await;
    let (local, domain) = nina_email.split_once('@').unwrap();
    let nina_email = format!("{}@{domain}", local.to_uppercase());
    app.users()
        .update_user(req(
            &user_admin,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: nina.id.clone(),
                    email: nina_email.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["email".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .expect("the same address, other capitals");
    assert_eq!(app.count(activation_mails).await, mails_before, "a link was mailed");
    app.users()
        .send_activation(req(
            &fixture.admin_token,
            pb::SendActivationRequest {
                user_id: nina.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("an organisation administrator sends the link");
    let second_link = app.activation_link_token(&nina_email).await;
    assert_ne!(second_link, first_link);
    activate(second_link)
        .await
        .expect("the link the organisation administrator sent");
    // Unchanged values are no change (an import's edit rows repeat them).
    app.users()
        .update_user(req(
            &user_admin,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    first_name: "Otto Karl".into(),
                    ..otto.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["email".into(), "first_name".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .expect("the same address with a new first name");
    let otto = app.user(&fixture.admin_token, &otto.id).await;
    // Ordinary users stay the user administrator's; administrators the
    // organisation administrator's.
    change_email(&user_admin, &plain)
        .await
        .expect("an ordinary user's address");
    let moved = change_email(&fixture.admin_token, &otto)
        .await
        .expect("by an organisation administrator");
    assert!(!moved.pending_email.is_empty());
    app.users()
        .send_activation(req(
            &fixture.admin_token,
            pb::SendActivationRequest {
                user_id: pending.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("by an organisation administrator");
    app.approve_anonymity(&fixture.admin_token, &asked)
        .await
        .expect("approved by an organisation administrator");
    app.finish().await;
}

/// The rule above holds against a promotion in progress: removing an
/// authenticator app waits for a change of roles that is being written and
/// is then refused, where it read the person as ordinary before the lock
/// and removed the new administrator's second factor. (The promotion in
/// progress is played by a session that holds the organisation's lock, as
/// UpdateUser does, and has written the role.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_in_progress_is_waited_for() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (_, user_admin) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (ida, _) = app.member(&fixture, "Ida", &[]).await;
    let has_app = format!("SELECT COUNT(*) FROM totp_credentials WHERE user_id = '{}'", ida.id);
    app.domain
        .db()
        .execute_unprepared(&format!(
            "INSERT INTO totp_credentials (user_id, secret_sealed, created_at, confirmed_at) VALUES ('{}', 'x', 1, 1)",
            ida.id
        ))
        .await
        .unwrap();
    let promotion = app
        .in_progress(&[
            format!(
                "SELECT id FROM organisations WHERE id = '{}' FOR UPDATE",
                fixture.org.id
            ),
            format!(
                "INSERT INTO user_roles (user_id, role, organisation_id) VALUES ('{}', 'RIGHTS_ADMIN', '{}')",
                ida.id, fixture.org.id
            ),
        ])
        .await;
    let removing = {
        let (mut users, token, user_id) = (app.users(), user_admin.clone(), ida.id.clone());
        tokio::spawn(async move {
            users
                .remove_authenticator(req(&token, pb::RemoveAuthenticatorRequest { user_id }))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !removing.is_finished(),
        "the removal did not wait for the promotion in progress"
    );
    promotion.commit().await;
    assert_code(removing.await.unwrap(), Code::PermissionDenied);
    assert_eq!(app.count(&has_app).await, 1, "the new administrator keeps their app");
    app.finish().await;
}

/// An API token made with a session while a password reset of its maker
/// is ending that session is refused. The reset ends every session and API
/// token the person made in one statement, which cannot see a token
/// inserted and not yet committed: made with a stolen session during the
/// victim's reset, the token outlived the reset by two years. (The reset
/// in progress is played by a session that has locked the person's row
/// and revoked their credentials, as ResetPassword does, and not
/// committed.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_while_a_reset_ends_its_session_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (victim, session) = app.member(&fixture, "Vera", &[]).await;
    let reset = app
        .in_progress(&[
            format!("SELECT id FROM users WHERE id = '{}' FOR NO KEY UPDATE", victim.id),
            format!(
                "UPDATE api_tokens SET revoked_at = 1 WHERE user_id = '{}' AND revoked_at IS NULL",
                victim.id
            ),
        ])
        .await;
    let minting = {
        let mut auth = app.auth();
        let (session, user_id) = (session.clone(), victim.id.clone());
        tokio::spawn(async move {
            auth.create_api_token(req(
                &session,
                pb::CreateApiTokenRequest {
                    user_id,
                    name: "bagdør".into(),
                    ..Default::default()
                },
            ))
            .await
        })
    };
    app.until_waiting_on_a_lock("users").await;
    reset.commit().await;
    assert_code(minting.await.unwrap(), Code::Unauthenticated);
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM api_tokens WHERE user_id = '{}' AND revoked_at IS NULL",
            victim.id
        ))
        .await,
        0,
        "no credential outlives the reset"
    );
    app.finish().await;
}

/// An activation code (about 49 bits) is stored under a hash keyed with the
/// look-up key: its proof, the birth date, is stored in clear, so a plain
/// hash in a dump gave every open code to one pass over all codes. A code
/// made before (stored under its plain hash) still activates until it
/// expires.
async fn activation_codes_are_stored_keyed(backend: Backend) {
    use orgadmin_domain::secrets::token_hash;

    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let coded = |name: &str| pb::CreateUserRequest {
        cpr: String::new(),
        birth_date: "1990-06-07".into(),
        ..new_user(&fixture.org.id, name, &[])
    };
    let create = |request: pb::CreateUserRequest| {
        let mut users = app.users();
        let token = fixture.admin_token.clone();
        async move {
            users
                .create_user(req(&token, request))
                .await
                .expect("created")
                .into_inner()
                .activation_code
        }
    };
    let activate = |code: String| {
        let mut users = app.users();
        async move {
            users
                .activate_user(req(
                    "",
                    pb::ActivateUserRequest {
                        code,
                        birth_date: "1990-06-07".into(),
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    let code = create(coded("Nøgle")).await;
    let plain = |code: &str| {
        format!(
            "SELECT COUNT(*) FROM activation_secrets WHERE secret_hash = '{}'",
            token_hash(code)
        )
    };
    assert_eq!(app.count(&plain(&code)).await, 0, "the code's plain hash is stored");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM activation_secrets WHERE kind = 'CODE'")
            .await,
        1
    );
    activate(code.clone()).await.expect("the code activates");

    // A code stored the old way, under its plain hash.
    let old = create(coded("Gammel")).await;
    app.domain
        .db()
        .execute_unprepared(&format!(
            "UPDATE activation_secrets SET secret_hash = '{}' WHERE kind = 'CODE' AND used_at IS NULL",
            token_hash(&old)
        ))
        .await
        .unwrap();
    assert_eq!(app.count(&plain(&old)).await, 1);
    activate(old.to_lowercase().replace('-', " "))
        .await
        .expect("an old code activates");
    app.finish().await;
}

/// The embedded default generates an operator token on its first start,
/// with no end and no RPC to revoke it. An operator who then configures
/// tokens of their own (ORGADMIN_OPERATOR_TOKENS, the rotation recipe)
/// retires it: a leaked copy of `data/operator-token` must not act on.
async fn configured_operator_tokens_retire_the_generated_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = app.domain.db().clone();
    let embedded = orgadmin_domain::Domain::new(db.clone(), test_vault(), &[]);
    let generated = embedded
        .bootstrap_operator_token()
        .await
        .expect("bootstrap")
        .expect("a token on the first start");
    embedded
        .authenticate(&generated)
        .await
        .expect("the generated token acts while nothing is configured");
    let configured = orgadmin_domain::Domain::new(db, test_vault(), &["oat_a_configured_operator_token".to_owned()]);
    assert!(
        configured.authenticate(&generated).await.is_err(),
        "the generated token still acts beside configured ones"
    );
    configured
        .authenticate("oat_a_configured_operator_token")
        .await
        .expect("the configured token acts");
    app.finish().await;
}

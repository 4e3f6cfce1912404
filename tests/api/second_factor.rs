//! R-AUTH-3: the second factor of a login (a code mailed through the outbox
//! and read here off the real SMTP server, or an authenticator app's code
//! computed here by RFC 6238), wrong codes counting towards the lock, the
//! shorter password a second factor allows, and sessions: listed, revoked,
//! ended when idle.

use std::time::Duration;

use orgadmin_domain::DomainSettings;
use orgadmin_domain::passwords::PasswordSettings;
use orgadmin_domain::totp;
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use tonic::Code;

both_backends!(
    mailed_code_completes_a_login_where_the_organisation_requires_it,
    authenticator_app_codes_complete_a_login,
    wrong_codes_count_towards_the_lock,
    sessions_are_listed_revoked_and_end_when_idle,
    a_code_its_caller_gave_up_on_is_still_recorded,
    a_login_begun_before_a_deactivation_does_not_finish_after_it,
    a_login_code_is_never_mailed_after_it_expired,
);

async fn verify(app: &TestApp, challenge: &str, code: &str) -> Result<pb::VerifyLoginCodeResponse, tonic::Status> {
    app.auth()
        .verify_login_code(req(
            "",
            pb::VerifyLoginCodeRequest {
                challenge_token: challenge.to_owned(),
                code: code.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Deactivation ends the person's sessions (a laptop left open); a login
/// waiting for its second step is one on its way. Reactivated within the
/// challenge's ten minutes (seed 001's unlock: deactivate, then activate),
/// the code mailed before must not open a session.
async fn a_login_begun_before_a_deactivation_does_not_finish_after_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    app.require_second_factor(&fixture).await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let challenge = app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    let code = app.mailed_login_code(&email).await;
    for deactivate in [true, false] {
        let mut users = app.users();
        if deactivate {
            users
                .deactivate_user(req(
                    &fixture.admin_token,
                    pb::DeactivateUserRequest {
                        id: anna.id.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("deactivated");
        } else {
            users
                .reactivate_user(req(
                    &fixture.admin_token,
                    pb::ReactivateUserRequest {
                        id: anna.id.clone(),
                        ..Default::default()
                    },
                ))
                .await
                .expect("reactivated");
        }
    }
    assert_code(
        verify(&app, &challenge.challenge_token, &code).await,
        Code::Unauthenticated,
    );
    // A login begun now goes through.
    let again = app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    let code = app.mailed_login_code(&email).await;
    verify(&app, &again.challenge_token, &code)
        .await
        .expect("a new login's code");
    app.finish().await;
}

async fn mailed_code_completes_a_login_where_the_organisation_requires_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(0);
    let fixture = app.org_with_admin().await;
    app.require_second_factor(&fixture).await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let worker = TestWorker::start(&app, worker_config(&app, &sink.url()));

    // The right password: no session yet, a challenge.
    let first = app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    assert!(first.session_token.is_empty(), "a session before the second factor");
    assert_eq!(first.second_factor(), pb::SecondFactorMethod::MailCode);
    assert_eq!(first.user_id, anna.id);
    assert!(first.challenge_expire_time.is_some());
    let code = sink.wait_for_login_code(&email, 1).await;
    let mail = sink.received().into_iter().find(|m| m.text.contains(&code)).unwrap();
    assert!(!mail.text.contains(TEST_PASSWORD) && !mail.html.contains(TEST_PASSWORD));
    assert!(mail.html.contains(&code));

    // Bad input is refused by field; a wrong code like any refusal.
    let malformed = assert_code(
        verify(&app, &first.challenge_token, "12ab").await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&malformed), vec!["code".to_string()]);
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    let wrong = assert_code(
        verify(&app, &first.challenge_token, wrong_code).await,
        Code::Unauthenticated,
    );
    let unknown = assert_code(verify(&app, "oat_not_a_challenge", &code).await, Code::Unauthenticated);
    assert_eq!(wrong.message(), unknown.message(), "refusals read alike");
    let failed = app
        .history_of(&fixture.admin_token, &anna.id, pb::HistoryActivity::SecondFactorFailed)
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(changed_to(&failed[0], "peer"), Some("127.0.0.1"));

    // The right code (spaces forgiven) starts the session, once.
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let session = verify(&app, &first.challenge_token, &spaced)
        .await
        .expect("the mailed code");
    assert_eq!(session.user_id, anna.id);
    assert_eq!(app.who_am_i(&session.session_token).await.unwrap().user_id, anna.id);
    assert_code(verify(&app, &first.challenge_token, &code).await, Code::Unauthenticated);
    let requested = app
        .history_of(
            &fixture.admin_token,
            &anna.id,
            pb::HistoryActivity::SecondFactorRequested,
        )
        .await;
    assert_eq!(changed_to(&requested[0], "method"), Some("MAIL_CODE"));
    let logins = app
        .history_of(&fixture.admin_token, &anna.id, pb::HistoryActivity::LoginSucceeded)
        .await;
    assert_eq!(logins.len(), 1);
    assert_eq!(changed_to(&logins[0], "second_factor"), Some("MAIL_CODE"));

    // A code belongs to its own login: the first one does not complete a second.
    let second = app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    assert_code(
        verify(&app, &second.challenge_token, &code).await,
        Code::Unauthenticated,
    );
    let next = sink.wait_for_login_code(&email, 2).await;
    verify(&app, &second.challenge_token, &next)
        .await
        .expect("the second code");

    // With a second factor required, 8 characters are enough (NIST).
    let request = new_user(&fixture.org.id, "Bo", &[]);
    let (bo_email, bo_cpr) = (request.email.clone(), request.cpr.clone());
    app.users()
        .create_user(req(&fixture.admin_token, request))
        .await
        .unwrap();
    app.activate_by_link_with_password(&bo_email, &bo_cpr, "Kvist9Lygte")
        .await;
    let bo = app
        .login(&bo_email, "Kvist9Lygte")
        .await
        .expect("short password accepted");
    assert_eq!(bo.second_factor(), pb::SecondFactorMethod::MailCode);
    worker.stop().await;
    app.finish().await;
}

/// The code an app shows for `secret` (base32) at `offset` steps from now.
fn app_code(secret: &str, offset: i64) -> String {
    let key = totp::base32_decode(secret).expect("base32 secret");
    let now = chrono::Utc::now().timestamp();
    totp::code_for_step(&key, totp::step_at(now) + offset, totp::DIGITS)
}

async fn authenticator_app_codes_complete_a_login(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let session = app.login(&email, TEST_PASSWORD).await.unwrap().session_token;
    let nothing_pending = assert_code(
        app.auth()
            .confirm_totp(req(&session, pb::ConfirmTotpRequest { code: "123456".into() }))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&nothing_pending), "NO_AUTHENTICATOR_PENDING");

    let enrolment = app
        .auth()
        .enroll_totp(req(&session, pb::EnrollTotpRequest {}))
        .await
        .expect("enrol")
        .into_inner();
    assert!(enrolment.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(enrolment.otpauth_uri.contains(&format!("secret={}", enrolment.secret)));
    assert_eq!(
        totp::base32_decode(&enrolment.secret).unwrap().len(),
        totp::SECRET_BYTES
    );
    // Until confirmed, logins do not ask for it.
    let plain = app.login(&email, TEST_PASSWORD).await.unwrap();
    assert!(!plain.session_token.is_empty());

    // A code from another secret is refused by field; the app's is taken.
    let wrong = assert_code(
        app.auth()
            .confirm_totp(req(
                &session,
                pb::ConfirmTotpRequest {
                    code: app_code("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 0),
                },
            ))
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&wrong), vec!["code".to_string()]);
    app.auth()
        .confirm_totp(req(
            &session,
            pb::ConfirmTotpRequest {
                code: app_code(&enrolment.secret, 0),
            },
        ))
        .await
        .expect("confirm with the app's code");
    let enrolled = app
        .history_of(
            &fixture.admin_token,
            &anna.id,
            pb::HistoryActivity::AuthenticatorEnrolled,
        )
        .await;
    assert_eq!(enrolled.len(), 1);
    let again = assert_code(
        app.auth().enroll_totp(req(&session, pb::EnrollTotpRequest {})).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&again), "AUTHENTICATOR_ENROLLED");

    // Now every login asks for the app's code (the organisation requires
    // nothing: the person chose it). The step the confirmation used is
    // spent; the next step's code is within the window.
    let challenged = app.login(&email, TEST_PASSWORD).await.unwrap();
    assert_eq!(challenged.second_factor(), pb::SecondFactorMethod::Totp);
    assert!(challenged.session_token.is_empty());
    let code = app_code(&enrolment.secret, 1);
    let done = verify(&app, &challenged.challenge_token, &code)
        .await
        .expect("the app's code");
    app.who_am_i(&done.session_token).await.expect("the session works");
    // A code works once, even within its window and with a fresh challenge.
    let replay = app.login(&email, TEST_PASSWORD).await.unwrap();
    assert_code(
        verify(&app, &replay.challenge_token, &code).await,
        Code::Unauthenticated,
    );
    let logins = app
        .history_of(&fixture.admin_token, &anna.id, pb::HistoryActivity::LoginSucceeded)
        .await;
    assert_eq!(changed_to(&logins[0], "second_factor"), Some("TOTP"));

    // A lost phone: the user administrator removes the app; a plain user
    // may not remove anyone's.
    let (_, bo_session) = app.member(&fixture, "Bo", &[]).await;
    let before = app.fingerprint().await;
    let denied = app
        .users()
        .remove_authenticator(req(
            &bo_session,
            pb::RemoveAuthenticatorRequest {
                user_id: anna.id.clone(),
            },
        ))
        .await;
    assert!(matches!(
        denied.map_err(|s| s.code()),
        Err(Code::PermissionDenied | Code::NotFound)
    ));
    assert_eq!(app.fingerprint().await, before, "a denied removal changed data");
    app.users()
        .remove_authenticator(req(
            &fixture.admin_token,
            pb::RemoveAuthenticatorRequest {
                user_id: anna.id.clone(),
            },
        ))
        .await
        .expect("remove the app");
    let removed = app
        .history_of(
            &fixture.admin_token,
            &anna.id,
            pb::HistoryActivity::AuthenticatorRemoved,
        )
        .await;
    assert_eq!(removed.len(), 1);
    let after = app.login(&email, TEST_PASSWORD).await.unwrap();
    assert!(
        !after.session_token.is_empty(),
        "no second factor once the app is removed"
    );
    app.finish().await;
}

async fn wrong_codes_count_towards_the_lock(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        DomainSettings {
            passwords: PasswordSettings {
                max_failures: 5,
                code_attempts: 3,
                ..PasswordSettings::default()
            },
            ..DomainSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin().await;
    app.require_second_factor(&fixture).await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;

    // Ten wrong codes at once: the challenge's three tries are taken before
    // any code is compared, so exactly three are checked.
    let challenge = app.login(&email, TEST_PASSWORD).await.unwrap().challenge_token;
    let code = app.mailed_login_code(&email).await;
    let mut guesses = tokio::task::JoinSet::new();
    for guess in (0..11)
        .map(|i| format!("{:06}", 900_000 + i))
        .filter(|g| *g != code)
        .take(10)
    {
        let mut auth = app.auth();
        let challenge = challenge.clone();
        guesses.spawn(async move {
            auth.verify_login_code(req(
                "",
                pb::VerifyLoginCodeRequest {
                    challenge_token: challenge,
                    code: guess,
                },
            ))
            .await
        });
    }
    while let Some(answer) = guesses.join_next().await {
        assert_code(answer.unwrap(), Code::Unauthenticated);
    }
    let failed = app
        .history_of(&fixture.admin_token, &anna.id, pb::HistoryActivity::SecondFactorFailed)
        .await;
    assert_eq!(failed.len(), 3, "the challenge's tries were passed");
    assert_code(verify(&app, &challenge, &code).await, Code::Unauthenticated);

    // The password's try is not given back by a new login: that one (the
    // fifth try) locks the account, and the answer reads like a wrong password.
    let locked = assert_code(app.login(&email, TEST_PASSWORD).await, Code::Unauthenticated);
    assert!(locked.message().contains("locked"));
    let locks = app
        .history_of(&fixture.admin_token, &anna.id, pb::HistoryActivity::LoginLocked)
        .await;
    assert_eq!(locks.len(), 1);

    // The user administrator unlocks; the next login completes.
    app.users()
        .unlock_login(req(
            &fixture.admin_token,
            pb::UnlockLoginRequest {
                user_id: anna.id.clone(),
            },
        ))
        .await
        .expect("unlock");
    let challenge = app.login(&email, TEST_PASSWORD).await.unwrap().challenge_token;
    let code = app.mailed_login_code(&email).await;
    verify(&app, &challenge, &code).await.expect("login after unlock");
    app.finish().await;
}

async fn sessions(app: &TestApp, token: &str, user_id: &str) -> Result<Vec<pb::Session>, tonic::Status> {
    app.auth()
        .list_sessions(req(
            token,
            pb::ListSessionsRequest {
                user_id: user_id.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().sessions)
}

async fn sessions_are_listed_revoked_and_end_when_idle(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        DomainSettings {
            session_idle_ms: 2000,
            // Every call reads the token afresh, so every use is seen (with
            // the cache, a use is noted at most a cache lifetime late).
            auth_cache_ttl_ms: 0,
            ..DomainSettings::default()
        },
    )
    .await;
    let fixture = app.org_with_admin().await;
    // An API token ends by its expiry only: the administrator's, to look
    // at the list after every session has gone idle.
    let admin_api = app.own_api_token(&fixture.admin_token, &fixture.admin.id).await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let laptop = app.login(&email, TEST_PASSWORD).await.unwrap().session_token;
    let phone = app.login(&email, TEST_PASSWORD).await.unwrap().session_token;

    // Her own sessions; the one asked with is marked. The activation's
    // session has been idle for longer than allowed by now, or is listed.
    let own = sessions(&app, &laptop, "").await.expect("own sessions");
    assert!(own.len() >= 2);
    assert_eq!(own.iter().filter(|s| s.current).count(), 1);
    let seconds = |t: &Option<prost_types::Timestamp>| t.as_ref().expect("timestamp").seconds;
    assert!(
        own.iter()
            .all(|s| s.user_id == anna.id && seconds(&s.idle_expire_time) <= seconds(&s.expire_time))
    );
    let by_admin = sessions(&app, &fixture.admin_token, &anna.id)
        .await
        .expect("the administrator sees them");
    assert_eq!(by_admin.len(), own.len());
    assert!(by_admin.iter().all(|s| !s.current));

    // Another plain user sees none of them and ends none of them.
    let (_, bo_session) = app.member(&fixture, "Bo", &[]).await;
    assert!(sessions(&app, &bo_session, &anna.id).await.is_err());
    let phone_id = sessions(&app, &phone, "")
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.current)
        .unwrap()
        .id;
    let before = app.fingerprint().await;
    assert_code(
        app.auth()
            .revoke_session(req(&bo_session, pb::RevokeSessionRequest { id: phone_id.clone() }))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "a denied revocation changed data");

    // She ends her phone's session from the laptop.
    app.auth()
        .revoke_session(req(&laptop, pb::RevokeSessionRequest { id: phone_id.clone() }))
        .await
        .expect("revoke");
    assert_code(app.who_am_i(&phone).await, Code::Unauthenticated);
    app.who_am_i(&laptop).await.expect("the laptop goes on");
    let revoked = app
        .history_of(&fixture.admin_token, &anna.id, pb::HistoryActivity::SessionRevoked)
        .await;
    assert_eq!(revoked.len(), 1);

    // Used every 300 ms a session lives past its idle time; left alone, it ends.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.who_am_i(&laptop).await.expect("a session in use stays");
    }
    tokio::time::sleep(Duration::from_millis(2600)).await;
    assert_code(app.who_am_i(&laptop).await, Code::Unauthenticated);
    // ListApiTokens lists the live ones: none of hers is, idle or revoked.
    let listed = app
        .auth()
        .list_api_tokens(req(
            &admin_api,
            pb::ListApiTokensRequest {
                organisation_id: fixture.org.id.clone(),
            },
        ))
        .await
        .expect("the administrator lists the organisation's tokens")
        .into_inner()
        .api_tokens;
    assert!(
        listed.iter().all(|t| t.user_id != anna.id),
        "an idle session is listed as live: {listed:?}"
    );
    app.finish().await;
}

/// A caller that gives up on a second-factor code (a deadline, a dropped
/// call) does not cut the check apart: the challenge's and the account's
/// tries are taken first, and the wrong code is still recorded
/// (SecondFactorFailed), as for a caller that waits.
async fn a_code_its_caller_gave_up_on_is_still_recorded(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    app.require_second_factor(&fixture).await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let challenge = app.login(&email, TEST_PASSWORD).await.unwrap().challenge_token;
    let code = app.mailed_login_code(&email).await;
    let wrong = if code == "000000" { "000001" } else { "000000" };
    // Polled once, to its first wait, then dropped. (Not a zero timeout:
    // on a loaded machine its timer fired only after the check had ended,
    // and the timeout then answered with the check's result.)
    {
        use std::future::Future;
        let mut check = std::pin::pin!(
            app.domain
                .verify_login_code(&challenge, wrong, Some("192.0.2.8".into()))
        );
        // Almost always pending here. Once in a full CI run (15th session)
        // it had ended within that poll; then nothing was cut, and the
        // record below holds all the same. Without `to_the_end` the poll
        // stops at the first statement and the record never comes.
        let _ = std::future::poll_fn(|cx| std::task::Poll::Ready(check.as_mut().poll(cx))).await;
    }
    let started = std::time::Instant::now();
    while app
        .history_of(&fixture.admin_token, &anna.id, pb::HistoryActivity::SecondFactorFailed)
        .await
        .is_empty()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the abandoned wrong code was never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.finish().await;
}

/// An enrolment started while the person's app is being confirmed does not
/// undo the confirmation. EnrollTotp read the pending enrolment, then
/// replaced it by deleting whatever the person had: behind a ConfirmTotp
/// that committed in between, it deleted the confirmed app and left a
/// pending one, so logins stopped asking for the second factor the person
/// had just set up. (The confirmation in progress is played by a session
/// that has confirmed the row and not yet committed.) SQLite has one writer
/// at a time, so only PostgreSQL can interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolment_behind_a_confirmation_does_not_undo_it() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let session = app.login(&email, TEST_PASSWORD).await.unwrap().session_token;
    app.auth()
        .enroll_totp(req(&session, pb::EnrollTotpRequest {}))
        .await
        .expect("enrol");

    let confirmation = app
        .in_progress(&[format!(
            "UPDATE totp_credentials SET confirmed_at = 1 WHERE user_id = '{}'",
            anna.id
        )])
        .await;
    let enrolling = {
        let (mut auth, session) = (app.auth(), session.clone());
        tokio::spawn(async move { auth.enroll_totp(req(&session, pb::EnrollTotpRequest {})).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !enrolling.is_finished(),
        "the enrolment did not wait for the confirmation in progress"
    );
    confirmation.commit().await;
    let again = assert_code(enrolling.await.unwrap(), Code::FailedPrecondition);
    assert_eq!(reason(&again), "AUTHENTICATOR_ENROLLED");
    assert_eq!(
        app.count(&format!(
            "SELECT COUNT(*) FROM totp_credentials WHERE user_id = '{}' AND confirmed_at = 1",
            anna.id
        ))
        .await,
        1,
        "the confirmed app is still the person's"
    );
    app.finish().await;
}

/// A code checked while the person is being deactivated gets no session:
/// the verification read the person unlocked, so a deactivation that
/// committed just after the read ended every session but this one, still
/// to be written, and it worked again once the person was reactivated.
/// (The deactivation is played by a transaction that has set the state and
/// ended the sessions, not yet committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_verified_while_the_person_is_deactivated_gets_no_session() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    app.require_second_factor(&fixture).await;
    let (anna, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let challenge = app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    let code = app.mailed_login_code(&email).await;
    let deactivating = app
        .in_progress(&[
            format!("UPDATE users SET state = 'DEACTIVATED' WHERE id = '{}'", anna.id),
            format!(
                "UPDATE api_tokens SET revoked_at = 1 WHERE user_id = '{}' AND kind = 'SESSION' AND revoked_at IS NULL",
                anna.id
            ),
        ])
        .await;
    let verifying = {
        let mut auth = app.auth();
        let challenge_token = challenge.challenge_token.clone();
        tokio::spawn(async move {
            auth.verify_login_code(req("", pb::VerifyLoginCodeRequest { challenge_token, code }))
                .await
        })
    };
    app.until_waiting_on_a_lock("users").await;
    deactivating.commit().await;
    let answer = verifying.await.unwrap();
    assert!(
        answer.is_err(),
        "a deactivated person's code opened a session: {answer:?}"
    );
    let sessions_open = format!(
        "SELECT COUNT(*) FROM api_tokens WHERE user_id = '{}' AND kind = 'SESSION' AND revoked_at IS NULL",
        anna.id
    );
    assert_eq!(
        app.count(&sessions_open).await,
        0,
        "a session outlived the deactivation"
    );
}

/// A login code is worth its minutes: a relay down (or greylisting) past
/// them must not deliver it later, dead, telling the person hours on that
/// someone knows their password. Two ways a mail outlives its code: a
/// failed try whose retry would come after the end (parked at that try),
/// and a mail nobody tried before the end (parked by the next claim).
/// Either way it is parked unsent, visible to the operator, and RetryMail
/// refuses it.
async fn a_login_code_is_never_mailed_after_it_expired(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        DomainSettings {
            passwords: PasswordSettings {
                // Long enough for a worker on a busy CI machine to start,
                // claim and fail one try (or deliver) within it.
                code_ttl_ms: 5000,
                ..PasswordSettings::default()
            },
            ..DomainSettings::default()
        },
    )
    .await;
    let mut sink = SmtpSink::start(0);
    let fixture = app.org_with_admin().await;
    app.require_second_factor(&fixture).await;
    let (_, email) = app.member_with_password(&fixture, "Anna", &[]).await;
    let parked_codes = || async {
        app.notes()
            .list_failed_mails(req(OPERATOR_TOKEN, pb::ListFailedMailsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .mails
            .into_iter()
            .filter(|m| m.kind == "login_code")
            .collect::<Vec<_>>()
    };

    // A failed try whose retry (a minute on) would come after the code's
    // end: parked at that try, not a minute later.
    sink.pause();
    let slow_retries = orgadmin_domain::Config {
        mail_retry_base_ms: 60_000,
        ..worker_config(&app, &sink.url())
    };
    let worker = TestWorker::start(&app, slow_retries);
    app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    let mut waited = 0;
    let first = loop {
        let parked = parked_codes().await;
        if !parked.is_empty() || waited == 100 {
            break parked;
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(first.len(), 1, "parked at its first failed try: {first:?}");
    assert_eq!(first[0].attempts, 1);
    assert!(first[0].last_error.contains("expired"), "{}", first[0].last_error);
    worker.stop().await;

    // A mail nobody tried before its end: the relay is back, the worker
    // starts after the code died.
    sink.resume();
    app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    tokio::time::sleep(Duration::from_millis(5200)).await;
    let worker = TestWorker::start(&app, worker_config(&app, &sink.url()));
    let mut waited = 0;
    let parked = loop {
        let parked = parked_codes().await;
        if parked.len() == 2 || waited == 100 {
            break parked;
        }
        waited += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(parked.len(), 2, "{parked:?}");
    let second = parked.iter().find(|m| m.id != first[0].id).unwrap();
    assert_eq!(second.attempts, 0, "never tried: {second:?}");
    assert!(second.last_error.contains("expired"), "{}", second.last_error);
    assert!(sink.login_codes(&email).is_empty(), "a dead code was mailed");

    let refused = app
        .notes()
        .retry_mail(req(OPERATOR_TOKEN, pb::RetryMailRequest { id: second.id.clone() }))
        .await;
    assert_eq!(reason(&assert_code(refused, Code::FailedPrecondition)), "MAIL_EXPIRED");

    // A code the relay takes in time still arrives.
    app.login(&email, TEST_PASSWORD).await.expect("password accepted");
    sink.wait_for_login_code(&email, 1).await;
    worker.stop().await;
    app.finish().await;
}

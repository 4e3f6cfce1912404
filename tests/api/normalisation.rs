//! One stored form of what people type (issue 8, defects 4-6 and R-USR-8):
//! login ids unique without regard to case or Unicode form, a text search
//! that folds every letter, birth dates in one written form, and one e-mail
//! address rule for the RPC and the mailer. Migration 15 brings existing rows
//! there.

use orgadmin_migrations::{Migrator, MigratorTrait};
use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use sea_orm::{ConnectionTrait, Statement, Value};
use tonic::Code;

both_backends!(
    login_ids_are_unique_without_regard_to_case_or_form,
    search_folds_every_letter,
    birth_dates_have_one_written_form,
    addresses_a_mailer_reads_differently_are_refused,
    mail_goes_to_exactly_the_accepted_address,
    migration_keys_existing_rows,
    names_of_only_invisible_characters_are_refused,
);

const NFD_A_RING: &str = "A\u{30A}";

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn create(app: &TestApp, token: &str, request: pb::CreateUserRequest) -> Result<pb::User, tonic::Status> {
    app.users()
        .create_user(req(token, request))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

async fn update(app: &TestApp, token: &str, user: pb::User, paths: &[&str]) -> Result<pb::User, tonic::Status> {
    app.users()
        .update_user(req(
            token,
            pb::UpdateUserRequest {
                user: Some(user),
                update_mask: mask(paths),
                cpr: String::new(),
            },
        ))
        .await
        .map(|r| r.into_inner().user.expect("user"))
}

/// Runs SQL with bound values on the test database (a row as an older
/// version of the code, or a hand edit, would have left it).
async fn sql(app: &TestApp, text: &str, values: Vec<Value>) {
    let db = app.domain.db();
    let backend = db.get_database_backend();
    let text = match backend {
        sea_orm::DbBackend::Postgres => {
            let mut n = 0;
            text.chars()
                .map(|c| {
                    if c == '?' {
                        n += 1;
                        format!("${n}")
                    } else {
                        c.to_string()
                    }
                })
                .collect()
        }
        _ => text.to_owned(),
    };
    db.execute_raw(Statement::from_sql_and_values(backend, text, values))
        .await
        .expect("SQL");
}

fn uuid(id: &str) -> Value {
    uuid::Uuid::parse_str(id).expect("uuid").into()
}

async fn login_ids_are_unique_without_regard_to_case_or_form(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (org, token) = (fixture.org.id.clone(), fixture.admin_token.clone());
    let n = next_number();

    // The local part keeps its case, the domain is lower-cased; names in NFC.
    let first = create(
        &app,
        &token,
        pb::CreateUserRequest {
            email: format!("Case.Test.{n}@Probe.DK"),
            username: format!("\u{C5}se.{n}"),
            first_name: format!("{NFD_A_RING}se"),
            ..new_user(&org, "Case", &[])
        },
    )
    .await
    .unwrap();
    assert_eq!(first.email, format!("Case.Test.{n}@probe.dk"));
    assert_eq!(first.first_name, "\u{C5}se", "stored in NFC");
    assert_eq!(first.username, format!("\u{C5}se.{n}"));

    let before = app.fingerprint().await;
    for email in [format!("case.test.{n}@probe.dk"), format!("CASE.TEST.{n}@PROBE.DK")] {
        let taken = create(
            &app,
            &token,
            pb::CreateUserRequest {
                email,
                ..new_user(&org, "Again", &[])
            },
        )
        .await;
        assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "EMAIL_TAKEN");
    }
    for username in [
        format!("{NFD_A_RING}SE.{n}"),
        format!("\u{C5}SE.{n}"),
        format!("\u{E5}se.{n}"),
    ] {
        let taken = create(
            &app,
            &token,
            pb::CreateUserRequest {
                username,
                ..new_user(&org, "Again", &[])
            },
        )
        .await;
        assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "USERNAME_TAKEN");
    }
    assert_eq!(app.fingerprint().await, before, "refused creates changed nothing");

    // An IDN domain in NFD and in upper-case NFC is one address.
    create(
        &app,
        &token,
        pb::CreateUserRequest {
            email: format!("anna.{n}@\u{C6}blega\u{30A}rden.dk"),
            ..new_user(&org, "Anna", &[])
        },
    )
    .await
    .unwrap();
    let taken = create(
        &app,
        &token,
        pb::CreateUserRequest {
            email: format!("ANNA.{n}@\u{C6}BLEG\u{C5}RDEN.DK"),
            ..new_user(&org, "Anna", &[])
        },
    )
    .await;
    assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "EMAIL_TAKEN");

    // Updates: another user cannot take the address in another case; a user
    // may change the case of their own.
    let other = create(&app, &token, new_user(&org, "Other", &[])).await.unwrap();
    let taken = update(
        &app,
        &token,
        pb::User {
            email: format!("case.TEST.{n}@probe.dk"),
            ..other.clone()
        },
        &["email"],
    )
    .await;
    assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "EMAIL_TAKEN");
    let taken = update(
        &app,
        &token,
        pb::User {
            username: format!("{NFD_A_RING}se.{n}"),
            ..other.clone()
        },
        &["username"],
    )
    .await;
    assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "USERNAME_TAKEN");
    let own = update(
        &app,
        &token,
        pb::User {
            email: format!("CASE.test.{n}@probe.dk"),
            surname: format!("{NFD_A_RING}berg"),
            ..first.clone()
        },
        &["email", "surname"],
    )
    .await
    .unwrap();
    assert_eq!(own.email, format!("CASE.test.{n}@probe.dk"));
    assert_eq!(own.surname, "\u{C5}berg", "stored in NFC");
    app.finish().await;
}

async fn search(app: &TestApp, token: &str, org: &str, text: &str) -> Vec<String> {
    let mut names: Vec<String> = app
        .users()
        .list_users(req(
            token,
            pb::ListUsersRequest {
                organisation_id: org.to_owned(),
                text: text.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .users
        .into_iter()
        .map(|u| format!("{} {}", u.first_name, u.surname))
        .collect();
    names.sort();
    names
}

async fn search_folds_every_letter(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (org, token) = (fixture.org.id.clone(), fixture.admin_token.clone());
    for (first, surname) in [("Karen", "\u{C6}r\u{F8}"), ("\u{C5}se", "Hansen"), ("Jens", "Olsen")] {
        create(
            &app,
            &token,
            pb::CreateUserRequest {
                surname: surname.into(),
                ..new_user(&org, first, &[])
            },
        )
        .await
        .unwrap();
    }
    let karen = vec!["Karen \u{C6}r\u{F8}".to_owned()];
    assert_eq!(search(&app, &token, &org, "\u{E6}r\u{F8}").await, karen);
    assert_eq!(search(&app, &token, &org, "\u{C6}R\u{D8}").await, karen);
    assert_eq!(search(&app, &token, &org, "kAREN \u{E6}R").await, karen);
    // A search typed in NFD finds a name stored in NFC.
    let aase = vec!["\u{C5}se Hansen".to_owned()];
    assert_eq!(search(&app, &token, &org, &format!("{NFD_A_RING}SE")).await, aase);
    assert_eq!(search(&app, &token, &org, "\u{E5}se").await, aase);
    // Words match within one field, never across two.
    assert!(search(&app, &token, &org, "hansenjens").await.is_empty());
    assert!(search(&app, &token, &org, "\u{F8}karen").await.is_empty());
    app.finish().await;
}

async fn birth_dates_have_one_written_form(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (org, token) = (fixture.org.id.clone(), fixture.admin_token.clone());
    let by_date = |date: &str| pb::CreateUserRequest {
        cpr: String::new(),
        birth_date: date.into(),
        ..new_user(&org, "Dato", &[])
    };
    let before = app.fingerprint().await;
    for typed in [
        "1990-5-17",
        "+1990-05-17",
        "1990-05-7",
        "19900517",
        "1990-05-17T00:00:00",
    ] {
        let refused = create(&app, &token, by_date(typed)).await;
        assert_eq!(
            bad_fields(&assert_code(refused, Code::InvalidArgument)),
            vec!["birth_date"],
            "{typed}"
        );
    }
    assert_eq!(app.fingerprint().await, before);
    let created = app
        .users()
        .create_user(req(&token, by_date("1990-05-17")))
        .await
        .unwrap()
        .into_inner();
    let user = created.user.unwrap();
    assert_eq!(user.birth_date, "1990-05-17");
    for typed in ["1990-5-17", "+1990-05-17"] {
        let refused = update(
            &app,
            &token,
            pb::User {
                birth_date: typed.into(),
                ..user.clone()
            },
            &["birth_date"],
        )
        .await;
        assert_eq!(
            bad_fields(&assert_code(refused, Code::InvalidArgument)),
            vec!["user.birth_date"],
            "{typed}"
        );
    }

    // A row written before dates were canonical still activates with the
    // date in its one form: activation compares dates, not spellings.
    sql(
        &app,
        "UPDATE users SET birth_date = ? WHERE id = ?",
        vec!["1990-5-17".into(), uuid(&user.id)],
    )
    .await;
    let activated = app
        .users()
        .activate_user(pb::ActivateUserRequest {
            code: created.activation_code.clone(),
            birth_date: "1990-05-17".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(activated.state, pb::UserState::Active as i32);
    app.finish().await;
}

/// Addresses that lettre (or another mail program) would read as a different
/// mailbox, a list, or not at all.
const MISREAD: &[&str] = &[
    "x<evil@attacker.dk>",
    "Anna <anna@firma.dk>",
    "a,evil@b.dk",
    "anna@firma.dk,evil@attacker.dk",
    "anna@firma.dk;evil@attacker.dk",
    "\"evil@attacker.dk\"@firma.dk",
    "\"a b\"@firma.dk",
    "anna(evil@attacker.dk)@firma.dk",
    "anna@firma.dk (evil@attacker.dk)",
    "anna@[127.0.0.1]",
    "anna@127.0.0.1",
    "anna@localhost",
    "x\u{FF1C}evil@attacker.dk\u{FF1E}",
    "anna@firma\u{FF61}dk",
];

async fn addresses_a_mailer_reads_differently_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (org, token) = (fixture.org.id.clone(), fixture.admin_token.clone());
    let user = create(&app, &token, new_user(&org, "Mail", &[])).await.unwrap();
    let before = app.fingerprint().await;
    for email in MISREAD {
        let refused = create(
            &app,
            &token,
            pb::CreateUserRequest {
                email: (*email).into(),
                ..new_user(&org, "Mail", &[])
            },
        )
        .await;
        assert_eq!(
            bad_fields(&assert_code(refused, Code::InvalidArgument)),
            vec!["email"],
            "{email}"
        );
        let refused = update(
            &app,
            &token,
            pb::User {
                email: (*email).into(),
                ..user.clone()
            },
            &["email"],
        )
        .await;
        assert_eq!(
            bad_fields(&assert_code(refused, Code::InvalidArgument)),
            vec!["user.email"],
            "{email}"
        );
    }
    assert_eq!(app.fingerprint().await, before, "refused calls changed nothing");
    app.finish().await;
}

async fn mail_goes_to_exactly_the_accepted_address(backend: Backend) {
    let app = TestApp::start(backend).await;
    let sink = SmtpSink::start(0);
    let worker = TestWorker::start(&app, worker_config(&app, &sink.url()));
    let fixture = app.org_with_admin().await;
    let (org, token) = (fixture.org.id.clone(), fixture.admin_token.clone());
    let n = next_number();

    // Symbols of the local part, a name a header parser would split at the
    // comma, an IDN domain (sent as Punycode: the test server, like many,
    // does not speak SMTPUTF8).
    let unusual = create(
        &app,
        &token,
        pb::CreateUserRequest {
            email: format!("O'Brien+ny.{n}@\u{C6}blega\u{30A}rden.dk"),
            first_name: "Hansen, Anna (x@y.dk)".into(),
            ..new_user(&org, "x", &[])
        },
    )
    .await
    .unwrap();
    assert_eq!(unusual.email, format!("O'Brien+ny.{n}@\u{E6}bleg\u{E5}rden.dk"));
    let sent_to = format!("O'Brien+ny.{n}@xn--blegrden-d0af.dk");
    let mails = sink.wait_for(&sent_to, 1).await;
    assert_eq!(mails[0].to, vec![sent_to.clone()], "exactly that address, nobody else");

    // A row that holds an address from before the one rule (or a hand
    // edit): the worker reads it by the same rule, so it parks the mail
    // instead of sending it to the address inside the brackets.
    let plain = create(&app, &token, new_user(&org, "Plain", &[])).await.unwrap();
    sink.wait_for(&plain.email, 1).await;
    let evil = "x<evil@attacker.dk>";
    sql(
        &app,
        "UPDATE users SET email = ? WHERE id = ?",
        vec![evil.into(), uuid(&plain.id)],
    )
    .await;
    app.users()
        .send_activation(req(
            &token,
            pb::SendActivationRequest {
                user_id: plain.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let failed = app.parked_mails().await;
    assert_eq!(failed.len(), 1, "the mail to {evil:?} is parked, at once");
    // (A member's address: the operator sees its domain only, R-ACC-6.)
    assert_eq!(failed[0].recipient, "x***@attacker.dk>");
    assert!(failed[0].last_error.contains("not valid"), "{}", failed[0].last_error);
    assert_eq!(failed[0].attempts, 1, "an address that cannot be read is not retried");
    let received = sink.received();
    assert!(
        received
            .iter()
            .all(|m| m.to.iter().all(|t| t.contains("firma.dk") || *t == sent_to)),
        "nothing went elsewhere: {:?}",
        received.iter().map(|m| &m.to).collect::<Vec<_>>()
    );
    worker.stop().await;
    app.finish().await;
}

/// Undoes migration 15 (and any after it), leaves rows as the old code could
/// have written them, and migrates again.
async fn migration_keys_existing_rows(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (org, token) = (fixture.org.id.clone(), fixture.admin_token.clone());
    let n = next_number();
    let older = create(
        &app,
        &token,
        pb::CreateUserRequest {
            email: format!("dup.{n}@firma.dk"),
            username: format!("dup{n}"),
            surname: "\u{C6}r\u{F8}".into(),
            ..new_user(&org, "Karen", &[])
        },
    )
    .await
    .unwrap();
    let newer = create(&app, &token, new_user(&org, "Newer", &[])).await.unwrap();
    let dated = create(
        &app,
        &token,
        pb::CreateUserRequest {
            cpr: String::new(),
            birth_date: "1985-03-04".into(),
            ..new_user(&org, "Dated", &[])
        },
    )
    .await
    .unwrap();

    let db = app.domain.db();
    app.undo_migrations_from("m20261202_000015_add_user_normalised_keys")
        .await;
    // What the old unique indexes let through: the same address and username
    // in another case; a name in NFD; a birth date as typed.
    sql(
        &app,
        "UPDATE users SET email = ?, username = ? WHERE id = ?",
        vec![
            format!("DUP.{n}@Firma.dk").into(),
            format!("DUP{n}").into(),
            uuid(&newer.id),
        ],
    )
    .await;
    sql(
        &app,
        "UPDATE users SET first_name = ? WHERE id = ?",
        vec![format!("{NFD_A_RING}se").into(), uuid(&older.id)],
    )
    .await;
    sql(
        &app,
        "UPDATE users SET birth_date = ? WHERE id = ?",
        vec!["1985-3-4".into(), uuid(&dated.id)],
    )
    .await;
    Migrator::up(db, None).await.expect("up again, over the duplicates");

    // The older user holds the keys; the newer duplicate holds none.
    let keys = |id: &str| {
        let id = uuid(id);
        async move {
            let backend = db.get_database_backend();
            let text = match backend {
                sea_orm::DbBackend::Postgres => "SELECT email_key, username_key FROM users WHERE id = $1",
                _ => "SELECT email_key, username_key FROM users WHERE id = ?",
            };
            let row = db
                .query_one_raw(Statement::from_sql_and_values(backend, text, [id]))
                .await
                .unwrap()
                .unwrap();
            (
                row.try_get_by_index::<Option<String>>(0).unwrap(),
                row.try_get_by_index::<Option<String>>(1).unwrap(),
            )
        }
    };
    assert_eq!(
        keys(&older.id).await,
        (Some(format!("dup.{n}@firma.dk")), Some(format!("dup{n}")))
    );
    assert_eq!(keys(&newer.id).await, (None, None));
    let get = |id: String| {
        let app = &app;
        let token = token.clone();
        async move {
            app.users()
                .get_user(req(&token, pb::GetUserRequest { id }))
                .await
                .unwrap()
                .into_inner()
                .user
                .unwrap()
        }
    };
    assert_eq!(get(older.id.clone()).await.first_name, "\u{C5}se", "names in NFC");
    assert_eq!(get(dated.id.clone()).await.birth_date, "1985-03-04");
    assert_eq!(
        search(&app, &token, &org, "\u{C6}R\u{D8}").await,
        vec!["\u{C5}se \u{C6}r\u{F8}".to_owned()],
        "search_text backfilled"
    );

    // No further duplicate; the newer one is sorted out by a new address.
    let taken = create(
        &app,
        &token,
        pb::CreateUserRequest {
            email: format!("Dup.{n}@FIRMA.dk"),
            ..new_user(&org, "Third", &[])
        },
    )
    .await;
    assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "EMAIL_TAKEN");
    let newer = get(newer.id.clone()).await;
    let taken = update(
        &app,
        &token,
        pb::User {
            username: format!("dUp{n}"),
            ..newer.clone()
        },
        &["username"],
    )
    .await;
    assert_eq!(reason(&assert_code(taken, Code::AlreadyExists)), "USERNAME_TAKEN");
    let fixed = update(
        &app,
        &token,
        pb::User {
            email: format!("newer.{n}@firma.dk"),
            username: format!("newer{n}"),
            ..newer
        },
        &["email", "username"],
    )
    .await
    .unwrap();
    assert_eq!(
        keys(&fixed.id).await,
        (Some(format!("newer.{n}@firma.dk")), Some(format!("newer{n}")))
    );
    app.finish().await;
}

/// A name of zero-width characters looks empty everywhere it is shown.
async fn names_of_only_invisible_characters_are_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let before = app.fingerprint().await;
    let created = app
        .users()
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                first_name: "\u{200B}\u{200D}".into(),
                surname: "\u{FEFF}".into(),
                ..new_user(&fixture.org.id, "Usynlig", &[])
            },
        ))
        .await;
    let status = assert_code(created, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), vec!["first_name".to_owned(), "surname".to_owned()]);
    let organisation = app
        .orgs()
        .create_organisation(req(
            OPERATOR_TOKEN,
            pb::CreateOrganisationRequest {
                name: "\u{2060}".into(),
                cvr: unique_cvr(),
                ..Default::default()
            },
        ))
        .await;
    let status = assert_code(organisation, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), vec!["name".to_owned()]);
    assert_eq!(app.fingerprint().await, before);
    app.finish().await;
}

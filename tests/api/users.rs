use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use sea_orm::ConnectionTrait;
use tonic::Code;

both_backends!(
    first_user_of_operator_becomes_administrator,
    user_bad_input_names_each_field,
    user_create_idempotent_and_unique,
    user_update_with_etag_and_history,
    cpr_is_never_stored_or_returned_in_clear,
    list_users_filters_and_pages,
    a_page_token_goes_on_only_with_its_own_filters,
    a_name_stored_before_a_rule_does_not_block_updates,
);

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn first_user_of_operator_becomes_administrator(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    assert_eq!(
        fixture.admin.state,
        pb::UserState::Active as i32,
        "activated by the fixture"
    );
    let roles = &fixture.admin.roles;
    assert!(roles.contains(&(pb::Role::OrganisationAdmin as i32)), "{roles:?}");
    assert!(roles.contains(&(pb::Role::UserAdmin as i32)), "{roles:?}");

    // The first user is a person: a service account would have become an
    // active administrator nobody is (no activation, no one behind it).
    let empty = app.create_org(None, None).await;
    let before = app.fingerprint().await;
    let account = app
        .users()
        .create_user(req(
            OPERATOR_TOKEN,
            pb::CreateUserRequest {
                organisation_id: empty.id.clone(),
                first_name: "Lønsystem".into(),
                surname: "Integration".into(),
                email: unique_email("loen-api"),
                service_account: true,
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        reason(&assert_code(account, Code::FailedPrecondition)),
        "SERVICE_ACCOUNT"
    );
    assert_eq!(app.fingerprint().await, before);

    // Later, the operator creates administrators only, and only while the
    // organisation has no active one: with one, the operator could appoint
    // an administrator they sign in as (the code of a birth-date person
    // comes back to them) and see every user.
    let before = app.fingerprint().await;
    let plain = app
        .users()
        .create_user(req(OPERATOR_TOKEN, new_user(&fixture.org.id, "Plain", &[])))
        .await;
    assert_code(plain, Code::PermissionDenied);
    let coded_admin = |org: &str, name: &str| pb::CreateUserRequest {
        cpr: String::new(),
        birth_date: "1980-03-04".into(),
        ..new_user(org, name, &[pb::Role::OrganisationAdmin])
    };
    let second = app
        .users()
        .create_user(req(OPERATOR_TOKEN, coded_admin(&fixture.org.id, "Second")))
        .await;
    let refused = assert_code(second, Code::PermissionDenied);
    assert!(
        refused.message().contains("active administrator"),
        "{}",
        refused.message()
    );
    assert_eq!(app.fingerprint().await, before);
    // Nor does the operator get the code of an administrator the
    // organisation's own administrators appointed.
    let appointed = app
        .users()
        .create_user(req(&fixture.admin_token, coded_admin(&fixture.org.id, "Udpeget")))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let before = app.fingerprint().await;
    let code = app
        .users()
        .create_activation_code(req(
            OPERATOR_TOKEN,
            pb::CreateActivationCodeRequest {
                user_id: appointed.id.clone(),
            },
        ))
        .await;
    assert_code(code, Code::PermissionDenied);
    assert_eq!(app.fingerprint().await, before);
    // An organisation whose only administrator has not activated (a wrong
    // address, a lost code) is one the operator may still help: another
    // administrator, a new code.
    let stranded = app.create_org(None, None).await;
    let first = app
        .users()
        .create_user(req(OPERATOR_TOKEN, coded_admin(&stranded.id, "Første")))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let second_admin = app
        .users()
        .create_user(req(OPERATOR_TOKEN, coded_admin(&stranded.id, "Anden")))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(second_admin.roles, vec![pb::Role::OrganisationAdmin as i32]);
    let new_code = app
        .users()
        .create_activation_code(req(
            OPERATOR_TOKEN,
            pb::CreateActivationCodeRequest {
                user_id: first.id.clone(),
            },
        ))
        .await
        .expect("a new code for the stranded administrator")
        .into_inner();
    assert!(!new_code.activation_code.is_empty());

    let who = app
        .auth()
        .who_am_i(req(&fixture.admin_token, pb::WhoAmIRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(who.user_id, fixture.admin.id);
    assert!(!who.operator);
    app.finish().await;
}

async fn user_bad_input_names_each_field(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut users = app.users();
    let org = fixture.org.id.clone();
    let base = new_user(&org, "Anna", &[]);
    let cases: Vec<(pb::CreateUserRequest, Vec<&str>)> = vec![
        (
            pb::CreateUserRequest {
                first_name: "".into(),
                ..base.clone()
            },
            vec!["first_name"],
        ),
        (
            pb::CreateUserRequest {
                surname: " ".into(),
                ..base.clone()
            },
            vec!["surname"],
        ),
        (
            pb::CreateUserRequest {
                first_name: "x".repeat(101),
                ..base.clone()
            },
            vec!["first_name"],
        ),
        (
            pb::CreateUserRequest {
                email: "anna.firma.dk".into(),
                ..base.clone()
            },
            vec!["email"],
        ),
        (
            pb::CreateUserRequest {
                email: "anna@firma".into(),
                ..base.clone()
            },
            vec!["email"],
        ),
        (
            pb::CreateUserRequest {
                cpr: "123456789".into(),
                ..base.clone()
            },
            vec!["cpr"],
        ),
        (
            pb::CreateUserRequest {
                cpr: "3213851234".into(),
                ..base.clone()
            },
            vec!["cpr"],
        ),
        (
            pb::CreateUserRequest {
                cpr: "2902001234".into(),
                ..base.clone()
            },
            vec!["cpr"],
        ),
        (
            pb::CreateUserRequest {
                cpr: "".into(),
                birth_date: "".into(),
                ..base.clone()
            },
            vec!["cpr"],
        ),
        (
            pb::CreateUserRequest {
                birth_date: "1990-01-01".into(),
                ..base.clone()
            },
            vec!["cpr"],
        ),
        (
            pb::CreateUserRequest {
                cpr: "".into(),
                birth_date: "01-01-1990".into(),
                ..base.clone()
            },
            vec!["birth_date"],
        ),
        (
            pb::CreateUserRequest {
                cpr: "".into(),
                birth_date: "2999-01-01".into(),
                ..base.clone()
            },
            vec!["birth_date"],
        ),
        (
            pb::CreateUserRequest {
                phone: "12ab".into(),
                ..base.clone()
            },
            vec!["phone"],
        ),
        (
            pb::CreateUserRequest {
                username: "a b".into(),
                ..base.clone()
            },
            vec!["username"],
        ),
        (
            pb::CreateUserRequest {
                external_ids: vec!["1".into(), "2".into(), "3".into(), "4".into()],
                ..base.clone()
            },
            vec!["external_ids"],
        ),
        (
            pb::CreateUserRequest {
                language: 7,
                ..base.clone()
            },
            vec!["language"],
        ),
        (
            pb::CreateUserRequest {
                // Once ROLE_OPERATOR, now reserved: no role of a user.
                roles: vec![1],
                ..base.clone()
            },
            vec!["roles[0]"],
        ),
        (
            pb::CreateUserRequest {
                unit_id: "nope".into(),
                ..base.clone()
            },
            vec!["unit_id"],
        ),
        (
            pb::CreateUserRequest {
                unit_id: uuid::Uuid::now_v7().to_string(),
                ..base.clone()
            },
            vec!["unit_id"],
        ),
        (
            pb::CreateUserRequest {
                first_name: "".into(),
                email: "x".into(),
                cpr: "1".into(),
                ..base.clone()
            },
            vec!["first_name", "email", "cpr"],
        ),
    ];
    let before = app.fingerprint().await;
    for (request, fields) in cases {
        let status = assert_code(
            users.create_user(req(&fixture.admin_token, request.clone())).await,
            Code::InvalidArgument,
        );
        assert_eq!(bad_fields(&status), fields, "for {request:?}");
        assert!(
            !status.message().contains(&request.cpr) || request.cpr.len() < 6,
            "no CPR echoed: {}",
            status.message()
        );
    }
    assert_eq!(app.fingerprint().await, before, "bad input changed nothing");

    let created = users
        .create_user(req(&fixture.admin_token, base))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let anonymous_later = users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    anonymous: true,
                    ..created.clone()
                }),
                update_mask: mask(&["anonymous"]),
                cpr: String::new(),
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(anonymous_later, Code::InvalidArgument)),
        vec!["update_mask"]
    );
    let no_mask = users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(created.clone()),
                update_mask: None,
                cpr: String::new(),
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(no_mask, Code::InvalidArgument)),
        vec!["update_mask"]
    );
    let bad_email = users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    email: "nope".into(),
                    ..created.clone()
                }),
                update_mask: mask(&["email"]),
                cpr: String::new(),
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(bad_email, Code::InvalidArgument)),
        vec!["user.email"]
    );
    let past = users
        .deactivate_user(req(
            &fixture.admin_token,
            pb::DeactivateUserRequest {
                id: created.id.clone(),
                until: Some(prost_types::Timestamp { seconds: 1, nanos: 0 }),
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(bad_fields(&assert_code(past, Code::InvalidArgument)), vec!["until"]);
    // Past the end of what a protobuf Timestamp may hold (9999-12-31):
    // stored, it broke every JSON client that listed the user.
    let before = app.fingerprint().await;
    let beyond = users
        .deactivate_user(req(
            &fixture.admin_token,
            pb::DeactivateUserRequest {
                id: created.id.clone(),
                until: Some(prost_types::Timestamp {
                    seconds: 253_402_300_800,
                    nanos: 0,
                }),
                reason: String::new(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(bad_fields(&assert_code(beyond, Code::InvalidArgument)), vec!["until"]);
    assert_eq!(app.fingerprint().await, before, "a refused deactivation changed data");
    app.finish().await;
}

async fn user_create_idempotent_and_unique(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut users = app.users();
    let request = pb::CreateUserRequest {
        request_id: "import-7f3a".into(),
        ..new_user(&fixture.org.id, "Søren", &[])
    };
    let first = users
        .create_user(req(&fixture.admin_token, request.clone()))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let retry = users
        .create_user(req(&fixture.admin_token, request.clone()))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(
        first.id, retry.id,
        "a retry with the same request id returns the same user"
    );
    let listed = users
        .list_users(req(
            &fixture.admin_token,
            pb::ListUsersRequest {
                organisation_id: fixture.org.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(listed.len(), 2, "admin and Søren, once");
    // The same request id for another person (another address) is another
    // request: refused, not answered with Søren.
    let reused = users
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                request_id: request.request_id.clone(),
                ..new_user(&fixture.org.id, "Karen", &[])
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(reused, Code::AlreadyExists)), "REQUEST_ID_REUSED");

    let same_email = pb::CreateUserRequest {
        email: request.email.clone(),
        ..new_user(&fixture.org.id, "Other", &[])
    };
    assert_eq!(
        reason(&assert_code(
            users.create_user(req(&fixture.admin_token, same_email)).await,
            Code::AlreadyExists
        )),
        "EMAIL_TAKEN"
    );
    let same_cpr = pb::CreateUserRequest {
        cpr: request.cpr.clone(),
        ..new_user(&fixture.org.id, "Other", &[])
    };
    assert_eq!(
        reason(&assert_code(
            users.create_user(req(&fixture.admin_token, same_cpr)).await,
            Code::AlreadyExists
        )),
        "CPR_TAKEN"
    );

    // A birth-date user, with Swedish letters intact.
    let birth = pb::CreateUserRequest {
        cpr: String::new(),
        birth_date: "1984-02-29".into(),
        first_name: "Åsa".into(),
        surname: "Öberg".into(),
        ..new_user(&fixture.org.id, "Asa", &[])
    };
    let birth = users
        .create_user(req(&fixture.admin_token, birth))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(birth.birth_date, "1984-02-29");
    assert_eq!((birth.first_name.as_str(), birth.surname.as_str()), ("Åsa", "Öberg"));
    assert!(birth.cpr_masked.is_empty());
    // Søren's address corrected meanwhile: the retry still names Søren (by
    // the address the first create gave), and gets him back.
    let mut corrected = first.clone();
    corrected.email = unique_email("soeren.rettet");
    users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(corrected),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("the address corrected");
    let late = users
        .create_user(req(&fixture.admin_token, request.clone()))
        .await
        .expect("a retry after the correction")
        .into_inner()
        .user
        .unwrap();
    assert_eq!(late.id, first.id);
    app.finish().await;
}

async fn user_update_with_etag_and_history(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut users = app.users();
    let (user, _) = app.member(&fixture, "Mette", &[]).await;
    let changed = pb::User {
        first_name: "Mette-Marie".into(),
        phone: "+45 12 34 56 78".into(),
        ..user.clone()
    };
    let updated = users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(changed.clone()),
                update_mask: mask(&["first_name", "phone"]),
                cpr: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.first_name, "Mette-Marie");
    assert_ne!(updated.etag, user.etag);

    let before = app.fingerprint().await;
    let stale = users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    surname: "Lost".into(),
                    ..user.clone()
                }),
                update_mask: mask(&["surname"]),
                cpr: String::new(),
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(stale, Code::Aborted)), "STALE_ETAG");
    assert_eq!(app.fingerprint().await, before);

    // The CPR number changes through its own field and never shows in history.
    let new_cpr = unique_cpr();
    let recpr = users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(updated.clone()),
                update_mask: mask(&["cpr"]),
                cpr: new_cpr.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(recpr.cpr_masked, format!("{}-XXXX", &new_cpr[..6]));

    let history = users
        .list_user_history(req(
            &fixture.admin_token,
            pb::ListUserHistoryRequest {
                user_id: user.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    let activities: Vec<&str> = history
        .iter()
        .map(|e| e.activity().as_str_name().trim_start_matches("HISTORY_ACTIVITY_"))
        .collect();
    assert_eq!(
        activities,
        vec!["USER_UPDATED", "USER_UPDATED", "USER_ACTIVATED", "USER_CREATED"],
        "newest first"
    );
    let rename = &history[1];
    assert_eq!(rename.actor, format!("user:{}", fixture.admin.id));
    let first_name = rename.changes.iter().find(|c| c.field == "first_name").unwrap();
    assert_eq!(
        (first_name.before.as_str(), first_name.after.as_str()),
        ("Mette", "Mette-Marie")
    );
    for event in &history {
        for change in &event.changes {
            assert!(!change.before.contains(&new_cpr[6..]) || change.field != "cpr");
            assert!(!change.after.contains(&new_cpr), "no CPR in history");
        }
    }
    app.finish().await;
}

/// The forms in which `cpr` shows in `value`: the clear number, its dashed
/// form (DDMMYY-XXXX), and its last four digits on their own (next to no
/// letter or digit, and not followed by a dash: a UUID group is not a CPR
/// number's tail).
fn cpr_forms_in(value: &[u8], cpr: &str) -> Vec<&'static str> {
    let contains = |needle: &[u8]| value.windows(needle.len()).any(|w| w == needle);
    let last_four = &cpr.as_bytes()[6..];
    let alone = (0..value.len().saturating_sub(3)).any(|i| {
        value[i..i + 4] == *last_four
            && (i == 0 || !value[i - 1].is_ascii_alphanumeric())
            && value
                .get(i + 4)
                .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'-')
    });
    let mut forms = Vec::new();
    if contains(cpr.as_bytes()) {
        forms.push("clear");
    }
    if contains(format!("{}-{}", &cpr[..6], &cpr[6..]).as_bytes()) {
        forms.push("dashed");
    }
    if alone {
        forms.push("last four");
    }
    forms
}

/// Every (table, column, form) of the database where `cpr` shows.
async fn cpr_in_database(app: &TestApp, cpr: &str) -> Vec<(String, String, &'static str)> {
    let tables = app.dump().await;
    let mut found = Vec::new();
    for table in &tables {
        for row in &table.rows {
            for (column, value) in table.columns.iter().zip(row) {
                for form in cpr_forms_in(value.as_deref().unwrap_or_default(), cpr) {
                    found.push((table.name.clone(), column.clone(), form));
                }
            }
        }
    }
    found
}

async fn cpr_is_never_stored_or_returned_in_clear(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    // Last four digits that no other user of the suite has (`unique_cpr`
    // ends in 1000-3999) and no timestamp or count holds.
    let (first_cpr, second_cpr) = ("0703854821", "1508854937");
    let mut users = app.users();
    let user = users
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                cpr: first_cpr.into(),
                ..new_user(&fixture.org.id, "Hemmelig", &[])
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.cpr_masked, "070385-XXXX");
    // A new number through UpdateUser: the old one must not linger either
    // (in history's `before`, say).
    let user = users
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(user),
                update_mask: mask(&["cpr"]),
                cpr: second_cpr.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(user.cpr_masked, "150885-XXXX");
    let history = users
        .list_user_history(req(
            &fixture.admin_token,
            pb::ListUserHistoryRequest {
                user_id: user.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let listed = users
        .list_users(req(
            &fixture.admin_token,
            pb::ListUsersRequest {
                organisation_id: fixture.org.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        history
            .events
            .iter()
            .any(|e| e.changes.iter().any(|c| c.field == "cpr"))
    );
    for cpr in [first_cpr, second_cpr] {
        for (what, text) in [
            ("the user", format!("{user:?}")),
            ("the history", format!("{history:?}")),
            ("the list", format!("{listed:?}")),
        ] {
            assert_eq!(cpr_forms_in(text.as_bytes(), cpr), Vec::<&str>::new(), "{what}: {text}");
        }
    }

    // A third number through an import file: the file is kept for days
    // after its run (the retention), so its pieces are stored sealed.
    let imported_cpr = "2104854763";
    app.upload_import(
        &fixture.admin_token,
        crate::imports::spec(&fixture.org.id, pb::ImportKind::Create),
        crate::imports::file(
            crate::imports::HEADER_DA,
            &[crate::imports::row(&[
                (1, imported_cpr),
                (3, &unique_email("importeret")),
                (4, "Karen"),
                (5, "Ærø"),
                (9, "da"),
            ])],
        )
        .as_bytes(),
        1 << 20,
    )
    .await
    .expect("upload");
    app.run_imports().await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM import_jobs WHERE state = 'SUCCEEDED' AND applied = 1")
            .await,
        1,
        "the import ran from its sealed file"
    );
    assert!(
        app.count("SELECT COUNT(*) FROM import_chunks").await > 0,
        "the file is kept"
    );

    // Every column of every table, on both databases: no number, in any
    // form.
    let tables = app.dump().await;
    for (table, column) in [
        ("users", "cpr_hash"),
        ("users", "cpr_ciphertext"),
        ("history_events", "changes"),
        ("outbox_mails", "payload"),
        ("activation_secrets", "secret_hash"),
        ("import_chunks", "data"),
    ] {
        assert!(
            tables
                .iter()
                .any(|t| t.name == table && t.columns.iter().any(|c| c == column)),
            "the scan reads {table}.{column}"
        );
    }
    assert!(tables.len() >= 12, "every table: {}", tables.len());
    for cpr in [first_cpr, second_cpr, imported_cpr] {
        assert_eq!(
            cpr_in_database(&app, cpr).await,
            vec![],
            "CPR number {cpr} stored in clear"
        );
    }

    // The scan can fail: each form, planted in one value, is found there.
    let db = app.domain.db();
    for (planted, forms) in [
        (first_cpr.to_owned(), vec!["clear"]),
        (
            format!("{}-{}", &first_cpr[..6], &first_cpr[6..]),
            vec!["dashed", "last four"],
        ),
        (format!("XXXXXX-{}", &first_cpr[6..]), vec!["last four"]),
        (format!("slut {}", &first_cpr[6..]), vec!["last four"]),
    ] {
        let sql = format!(
            "UPDATE organisations SET billing_reference = '{planted}' WHERE cvr = '{}'",
            fixture.org.cvr
        );
        db.execute_unprepared(&sql).await.unwrap();
        let expected: Vec<_> = forms
            .iter()
            .map(|form| ("organisations".to_owned(), "billing_reference".to_owned(), *form))
            .collect();
        assert_eq!(cpr_in_database(&app, first_cpr).await, expected, "planted {planted:?}");
    }
    app.finish().await;
}

async fn list_users_filters_and_pages(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut users = app.users();
    let mut orgs = app.orgs();
    let token = fixture.admin_token.clone();
    let org = fixture.org.id.clone();
    let unit = |parent: &str, name: &str| pb::CreateUnitRequest {
        organisation_id: org.clone(),
        parent_id: parent.to_owned(),
        kind: pb::UnitKind::Department as i32,
        name: name.into(),
        number: String::new(),
        ..Default::default()
    };
    let top = orgs
        .create_unit(req(&token, unit("", "Drift")))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();
    let sub = orgs
        .create_unit(req(&token, unit(&top.id, "Drift Syd")))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();
    let other = orgs
        .create_unit(req(&token, unit("", "Salg")))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();

    let mk = |first: &str, unit: &str, roles: &[pb::Role]| pb::CreateUserRequest {
        unit_id: unit.to_owned(),
        ..new_user(&org, first, roles)
    };
    let kasper = users
        .create_user(req(&token, mk("Kasper", &top.id, &[])))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let lise = users
        .create_user(req(&token, mk("Lise", &sub.id, &[pb::Role::RightsAdmin])))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    let ole = users
        .create_user(req(&token, mk("Ole", &other.id, &[])))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    users
        .deactivate_user(req(
            &token,
            pb::DeactivateUserRequest {
                id: ole.id.clone(),
                until: None,
                reason: "orlov".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();

    let list = |filter: pb::ListUsersRequest| {
        let mut users = users.clone();
        let token = token.clone();
        async move { users.list_users(req(&token, filter)).await.unwrap().into_inner() }
    };
    let ids = |page: &pb::ListUsersResponse| page.users.iter().map(|u| u.id.clone()).collect::<Vec<_>>();
    let base = pb::ListUsersRequest {
        organisation_id: org.clone(),
        ..Default::default()
    };

    let subtree = list(pb::ListUsersRequest {
        unit_id: top.id.clone(),
        ..base.clone()
    })
    .await;
    assert_eq!(
        ids(&subtree),
        vec![kasper.id.clone(), lise.id.clone()],
        "a unit covers its subtree"
    );
    let deactivated = list(pb::ListUsersRequest {
        state: pb::UserState::Deactivated as i32,
        ..base.clone()
    })
    .await;
    assert_eq!(ids(&deactivated), vec![ole.id.clone()]);
    let rights = list(pb::ListUsersRequest {
        role: pb::Role::RightsAdmin as i32,
        ..base.clone()
    })
    .await;
    assert_eq!(ids(&rights), vec![lise.id.clone()]);
    let text = list(pb::ListUsersRequest {
        text: "lise JØRG".into(),
        ..base.clone()
    })
    .await;
    assert_eq!(
        ids(&text),
        vec![lise.id.clone()],
        "words match names case-insensitively"
    );
    let by_mail = list(pb::ListUsersRequest {
        text: "kasper.".into(),
        ..base.clone()
    })
    .await;
    assert_eq!(ids(&by_mail), vec![kasper.id.clone()]);
    let wildcard = list(pb::ListUsersRequest {
        text: "%".into(),
        ..base.clone()
    })
    .await;
    assert!(wildcard.users.is_empty(), "LIKE wildcards are literal");

    // Pages of 2 over 4 users, in creation order.
    let page1 = list(pb::ListUsersRequest {
        page_size: 2,
        ..base.clone()
    })
    .await;
    let page2 = list(pb::ListUsersRequest {
        page_size: 2,
        page_token: page1.next_page_token.clone(),
        ..base.clone()
    })
    .await;
    let mut all = ids(&page1);
    all.extend(ids(&page2));
    assert_eq!(all, vec![fixture.admin.id.clone(), kasper.id, lise.id, ole.id]);
    let page3 = list(pb::ListUsersRequest {
        page_size: 2,
        page_token: page2.next_page_token.clone(),
        ..base.clone()
    })
    .await;
    assert!(page3.users.is_empty() || page2.next_page_token.is_empty());

    let too_big = users
        .list_users(req(
            &token,
            pb::ListUsersRequest {
                page_size: 501,
                ..base.clone()
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(too_big, Code::InvalidArgument)),
        vec!["page_size"]
    );
    // A page token of another list is refused.
    let foreign = users
        .list_users(req(
            &token,
            pb::ListUsersRequest {
                page_token: "b3JnYW5pc2F0aW9uc3wwMTlhMjAxMC0zMGJhLTc2YzYtYTBmNS04YTUyNmQ1Nzg0YTk".into(),
                ..base.clone()
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(foreign, Code::InvalidArgument)),
        vec!["page_token"]
    );
    app.finish().await;
}

/// Two sends of one CreateUser (the same request id), the second before the
/// first has answered: both answer with the one user made. The second's
/// INSERT waited on the first's row and skipped it as an e-mail clash, and
/// answered EMAIL_TAKEN to a client that only retried. (The first is held
/// before its commit by a session holding the organisation's row, which
/// the licence count at the end of every create updates.) PostgreSQL only:
/// SQLite has one writer at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_sent_while_the_first_send_runs_answers_with_its_user() {
    use std::time::Duration;
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let request = pb::CreateUserRequest {
        request_id: "hr-sync-42".into(),
        ..new_user(&fixture.org.id, "Søren", &[])
    };
    let holding = app
        .in_progress(&[format!(
            "SELECT 1 FROM organisations WHERE id = '{}' FOR UPDATE",
            fixture.org.id
        )])
        .await;
    let send = || {
        let (mut users, token, request) = (app.users(), fixture.admin_token.clone(), request.clone());
        tokio::spawn(async move { users.create_user(req(&token, request)).await })
    };
    let first = send();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = send();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!first.is_finished() && !second.is_finished(), "the sends did not wait");
    holding.commit().await;
    let first = first.await.unwrap().expect("the first send").into_inner();
    let second = second.await.unwrap().expect("the second send").into_inner();
    assert_eq!(first.user.unwrap().id, second.user.unwrap().id);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM users WHERE create_request_id = 'hr-sync-42'")
            .await,
        1
    );
    assert_eq!(app.licences_used(&fixture.admin_token, &fixture.org.id).await, 2);
    app.finish().await;
}

/// A user created in a unit that is deleted as the create runs: the unit
/// was checked before the delete committed and the insert failed on the
/// foreign key after, answered INTERNAL. Now ABORTED (CHANGED_MEANWHILE),
/// and the retry says what is wrong now. (The delete is played by a
/// session holding the organisation's row, not yet committed.)
/// PostgreSQL only: SQLite has one writer at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_created_in_a_unit_deleted_meanwhile_is_told_so() {
    use std::time::Duration;
    use tonic_types::StatusExt;
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let unit = app.unit(&fixture, "Lager", "").await;
    let deleting = app
        .in_progress(&[
            format!(
                "SELECT id FROM organisations WHERE id = '{}' FOR UPDATE",
                fixture.org.id
            ),
            format!("DELETE FROM units WHERE id = '{}'", unit.id),
        ])
        .await;
    let request = pb::CreateUserRequest {
        unit_id: unit.id.clone(),
        ..new_user(&fixture.org.id, "Flyttet", &[])
    };
    let create = || {
        let (mut users, token, request) = (app.users(), fixture.admin_token.clone(), request.clone());
        tokio::spawn(async move { users.create_user(req(&token, request)).await })
    };
    let creating = create();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!creating.is_finished(), "the create did not wait");
    deleting.commit().await;
    let refused = assert_code(creating.await.unwrap(), Code::Aborted);
    assert_eq!(
        refused.get_error_details().error_info().unwrap().reason,
        "CHANGED_MEANWHILE"
    );
    let again = assert_code(create().await.unwrap(), Code::InvalidArgument);
    assert_eq!(bad_fields(&again), vec!["unit_id"]);
    assert_eq!(app.licences_used(&fixture.admin_token, &fixture.org.id).await, 1);
    app.finish().await;
}

/// `giver`, signed in (so cached), being stripped of every role by a
/// transaction that holds the organisation's lock, not yet committed.
async fn demoted(app: &TestApp, fixture: &OrgFixture, giver: &pb::User, giver_token: &str) -> InProgress {
    app.who_am_i(giver_token).await.expect("the giver is signed in");
    app.in_progress(&[
        format!(
            "SELECT id FROM organisations WHERE id = '{}' FOR UPDATE",
            fixture.org.id
        ),
        format!("DELETE FROM user_roles WHERE user_id = '{}'", giver.id),
    ])
    .await
}

/// A role given by someone whose own organisation administrator role is
/// being taken from them is refused. Checked only on the caller as
/// authenticated, the change waited for the organisation's lock and went
/// through once the demotion committed: a demoted administrator could still
/// make a colleague one (who could then restore them). (The demotion is
/// played by a transaction that holds the organisation's lock and has taken
/// the role, not yet committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_given_while_the_giver_is_demoted_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (giver, giver_token) = app.member(&fixture, "Ole", &[pb::Role::OrganisationAdmin]).await;
    let (xenia, _) = app.member(&fixture, "Xenia", &[]).await;
    let demoting = demoted(&app, &fixture, &giver, &giver_token).await;
    let giving = {
        let (mut users, id) = (app.users(), xenia.id.clone());
        tokio::spawn(async move {
            users
                .update_user(req(
                    &giver_token,
                    pb::UpdateUserRequest {
                        user: Some(pb::User {
                            id,
                            roles: vec![pb::Role::OrganisationAdmin as i32],
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["roles".into()],
                        }),
                        ..Default::default()
                    },
                ))
                .await
        })
    };
    app.until_waiting_on_a_lock("organisations").await;
    demoting.commit().await;
    let answer = giving.await.unwrap();
    assert_eq!(
        answer.map(drop).unwrap_err().code(),
        Code::PermissionDenied,
        "a demoted administrator gave a role"
    );
    assert_eq!(app.user(&fixture.admin_token, &xenia.id).await.roles, xenia.roles);

    // The same for a new user with a role (a user administrator creates).
    let (giver, giver_token) = app
        .member(&fixture, "Olga", &[pb::Role::OrganisationAdmin, pb::Role::UserAdmin])
        .await;
    let demoting = demoted(&app, &fixture, &giver, &giver_token).await;
    let request = new_user(&fixture.org.id, "Yrsa", &[pb::Role::UserAdmin]);
    let email = request.email.clone();
    let creating = {
        let mut users = app.users();
        tokio::spawn(async move { users.create_user(req(&giver_token, request)).await })
    };
    app.until_waiting_on_a_lock("organisations").await;
    demoting.commit().await;
    let answer = creating.await.unwrap();
    assert_eq!(
        answer.map(drop).unwrap_err().code(),
        Code::PermissionDenied,
        "a demoted administrator made an administrator"
    );
    let made = format!("SELECT COUNT(*) FROM users WHERE email = '{email}'");
    assert_eq!(app.count(&made).await, 0);
}

/// AIP-158: a page token is good for the request that got it. With other
/// filters it would go on from a place in another list of rows (skipping
/// or repeating some): refused, naming page_token. The same request goes
/// on.
async fn a_page_token_goes_on_only_with_its_own_filters(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    for name in ["Aase", "Bent"] {
        app.member(&fixture, name, &[]).await;
    }
    let list = |state: pb::UserState, page_token: String| {
        let mut users = app.users();
        let (token, org) = (fixture.admin_token.clone(), fixture.org.id.clone());
        async move {
            users
                .list_users(req(
                    &token,
                    pb::ListUsersRequest {
                        organisation_id: org,
                        page_size: 1,
                        page_token,
                        state: state as i32,
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = list(pb::UserState::Active, String::new())
        .await
        .expect("the first page");
    assert!(!first.next_page_token.is_empty(), "three active users, one a page");
    let second = list(pb::UserState::Active, first.next_page_token.clone())
        .await
        .expect("the same request goes on");
    assert_ne!(second.users[0].id, first.users[0].id);
    let other = list(pb::UserState::PendingActivation, first.next_page_token).await;
    let refused = assert_code(other, Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["page_token"]);
    app.finish().await;
}

/// Names with < or > were refused from one release on. A person whose name
/// was stored with one before is not stuck: an update that sends the name
/// back as it is (a client that sends the whole person) goes through; a
/// new name follows the rule.
async fn a_name_stored_before_a_rule_does_not_block_updates(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (member, _) = app.member(&fixture, "Gammel", &[]).await;
    let id: uuid::Uuid = member.id.parse().unwrap();
    app.execute_bound(
        "UPDATE users SET first_name = 'Anna <fra før>' WHERE id = $1",
        vec![id.into()],
    )
    .await;
    let stored = app.user(&fixture.admin_token, &member.id).await;
    let update = |first_name: &str| {
        let mut users = app.users();
        let request = pb::UpdateUserRequest {
            user: Some(pb::User {
                first_name: first_name.to_owned(),
                phone: "+4512345678".into(),
                ..stored.clone()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["first_name".into(), "phone".into()],
            }),
            ..Default::default()
        };
        let token = fixture.admin_token.clone();
        async move { users.update_user(req(&token, request)).await }
    };
    let kept = update("Anna <fra før>")
        .await
        .expect("the stored name sent back as it is");
    assert_eq!(kept.into_inner().user.unwrap().phone, "+4512345678");
    let refused = assert_code(update("Anna <ny@firma.dk>").await, Code::InvalidArgument);
    assert_eq!(bad_fields(&refused), ["user.first_name"]);
    app.finish().await;
}

/// An update without an etag that sends a person's name back as it read it,
/// while a rename of that person commits, ends with the name it sent: the
/// sent value wins, as every other field's does. The name was compared with
/// the user as read before the locks, so it counted as no change, the
/// rename stayed, and the call answered as if its name had been applied.
/// (The rename is played by a session that has written the row and not
/// committed; the update waits for its lock.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_sent_back_during_a_rename_is_the_one_kept() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (anna, _) = app.member(&fixture, "Anna", &[]).await;
    let renaming = app
        .in_progress(&[format!(
            "UPDATE users SET first_name = 'Anne', version = version + 1 WHERE id = '{}'",
            anna.id
        )])
        .await;
    let updating = {
        let (mut users, token, mut sent) = (app.users(), fixture.admin_token.clone(), anna.clone());
        sent.surname = "Holm".into();
        sent.etag = String::new();
        tokio::spawn(async move {
            users
                .update_user(req(
                    &token,
                    pb::UpdateUserRequest {
                        user: Some(sent),
                        update_mask: mask(&["first_name", "surname"]),
                        ..Default::default()
                    },
                ))
                .await
        })
    };
    app.until_waiting_on_a_lock("users").await;
    renaming.commit().await;
    let answered = updating.await.unwrap().expect("the update").into_inner().user.unwrap();
    let stored = app.user(&fixture.admin_token, &anna.id).await;
    assert_eq!(
        (stored.first_name.as_str(), stored.surname.as_str()),
        ("Anna", "Holm"),
        "the name the update sent was not the one kept"
    );
    assert_eq!(answered.first_name, stored.first_name, "the answer is what is stored");
    app.finish().await;
}

/// An anonymity request approved by a user administrator whose roles are
/// being taken from them is refused, as a join or rights decision is.
/// Checked only on the caller as authenticated, the approval waited for the
/// organisation's lock and went through once the demotion committed: the
/// old profile was closed and a new one made by someone who no longer may.
/// (The demotion is played by a transaction that holds the organisation's
/// lock and has taken the roles, not yet committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymity_decision_while_the_decider_is_demoted_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (decider, decider_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (bo, email) = app.member_with_password(&fixture, "Bo", &[]).await;
    let session = app.login(&email, TEST_PASSWORD).await.expect("logged in").session_token;
    let request = app.ask_anonymity(&session).await;
    let demoting = demoted(&app, &fixture, &decider, &decider_token).await;
    let deciding = {
        let mut users = app.users();
        tokio::spawn(async move {
            users
                .decide_anonymity_request(req(
                    &decider_token,
                    pb::DecideAnonymityRequestRequest {
                        id: request,
                        approve: true,
                        note: String::new(),
                    },
                ))
                .await
        })
    };
    app.until_waiting_on_a_lock("organisations").await;
    demoting.commit().await;
    let answer = deciding.await.unwrap();
    assert_eq!(
        answer.map(drop).unwrap_err().code(),
        Code::PermissionDenied,
        "a demoted user administrator approved an anonymity request"
    );
    assert_eq!(
        app.user(&fixture.admin_token, &bo.id).await.state,
        pb::UserState::Active as i32,
        "the old profile was closed"
    );
    app.finish().await;
}

/// BatchSendActivation checks its caller as they are under the
/// organisation's lock, as SendActivation does. Checked on the caller as
/// authenticated, a batch that waited for the lock while the caller's
/// administrator roles were being taken went through once the demotion
/// committed, and mailed a pending administrator their link (R-AUTH-1:
/// only someone who may change roles sends it). (The demotion is played by
/// a transaction that holds the organisation's lock and has taken the
/// roles, not yet committed.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_activation_links_from_a_demoted_administrator_is_refused() {
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let (sender, sender_token) = app
        .member(&fixture, "Ole", &[pb::Role::OrganisationAdmin, pb::Role::UserAdmin])
        .await;
    let pending = new_user(&fixture.org.id, "Vera", &[pb::Role::UserAdmin]);
    let pending_id = app
        .users()
        .create_user(req(&fixture.admin_token, pending.clone()))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap()
        .id;
    assert_eq!(app.mail_subjects("activation", &pending.email).await.len(), 1);
    // The pending administrator's batch, sent by `token`, once the lock is free.
    let batch = |token: String| {
        let (mut imports, org, id) = (app.imports(), fixture.org.id.clone(), pending_id.clone());
        tokio::spawn(async move {
            imports
                .batch_send_activation(req(
                    &token,
                    pb::BatchSendActivationRequest {
                        organisation_id: org,
                        user_ids: vec![id],
                        ..Default::default()
                    },
                ))
                .await
        })
    };
    let demoting = demoted(&app, &fixture, &sender, &sender_token).await;
    let sending = batch(sender_token);
    app.until_waiting_on_a_lock("organisations").await;
    demoting.commit().await;
    let answer = sending.await.unwrap();
    assert_eq!(
        answer.map(drop).unwrap_err().code(),
        Code::PermissionDenied,
        "a demoted administrator sent activation links"
    );
    assert_eq!(
        app.mail_subjects("activation", &pending.email).await.len(),
        1,
        "a link was mailed"
    );

    // Left a user administrator only: the batch goes through, but an
    // administrator's link is no longer theirs to send (R-AUTH-1).
    let (sender, sender_token) = app
        .member(&fixture, "Ida", &[pb::Role::OrganisationAdmin, pb::Role::UserAdmin])
        .await;
    app.who_am_i(&sender_token).await.expect("the sender is signed in");
    let demoting = app
        .in_progress(&[
            format!(
                "SELECT id FROM organisations WHERE id = '{}' FOR UPDATE",
                fixture.org.id
            ),
            format!(
                "DELETE FROM user_roles WHERE user_id = '{}' AND role = 'ORGANISATION_ADMIN'",
                sender.id
            ),
        ])
        .await;
    let sending = batch(sender_token);
    app.until_waiting_on_a_lock("organisations").await;
    demoting.commit().await;
    let outcome = sending
        .await
        .unwrap()
        .expect("a user administrator's batch")
        .into_inner();
    assert_eq!(
        outcome.needs_administrator_user_ids,
        vec![pending_id.clone()],
        "{outcome:?}"
    );
    assert!(outcome.queued_user_ids.is_empty(), "{outcome:?}");
    assert_eq!(
        app.mail_subjects("activation", &pending.email).await.len(),
        1,
        "a link was mailed"
    );
    app.finish().await;
}

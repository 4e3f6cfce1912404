use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use tonic::Code;

both_backends!(
    organisation_create_get_list_update,
    organisation_bad_input_changes_nothing,
    settings_and_licence_count,
    unit_tree,
    a_unit_whose_users_were_deleted_can_be_deleted,
    identification_means_stay_within_the_organisations,
);

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn organisation_create_get_list_update(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut orgs = app.orgs();
    let created = app.create_org(None, None).await;
    assert_eq!(created.licence_count, 50);
    assert_eq!(created.etag, "1");

    let got = orgs
        .get_organisation(req(
            OPERATOR_TOKEN,
            pb::GetOrganisationRequest { id: created.id.clone() },
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    assert_eq!(got.cvr, created.cvr);
    assert!(got.name.starts_with("Værksted"), "Danish letters intact: {}", got.name);

    // Keyset pages: 2 + 1 over three organisations, no repeats.
    app.create_org(None, None).await;
    app.create_org(None, None).await;
    let first = orgs
        .list_organisations(req(
            OPERATOR_TOKEN,
            pb::ListOrganisationsRequest {
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.organisations.len(), 2);
    assert!(!first.next_page_token.is_empty());
    let second = orgs
        .list_organisations(req(
            OPERATOR_TOKEN,
            pb::ListOrganisationsRequest {
                page_size: 2,
                page_token: first.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.organisations.len(), 1);
    assert!(second.next_page_token.is_empty());
    assert!(!first.organisations.iter().any(|o| o.id == second.organisations[0].id));
    let bad_token = orgs
        .list_organisations(req(
            OPERATOR_TOKEN,
            pb::ListOrganisationsRequest {
                page_size: 2,
                page_token: "bm9wZQ".into(),
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(bad_token, Code::InvalidArgument)),
        vec!["page_token"]
    );

    // Update with the current etag, then with the stale one.
    let mut change = created.clone();
    change.name = "Nyt Navn A/S".into();
    let updated = orgs
        .update_organisation(req(
            OPERATOR_TOKEN,
            pb::UpdateOrganisationRequest {
                organisation: Some(change.clone()),
                update_mask: mask(&["name"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    assert_eq!(updated.name, "Nyt Navn A/S");
    assert_eq!(updated.etag, "2");
    change.name = "Tabt Opdatering".into();
    let stale = orgs
        .update_organisation(req(
            OPERATOR_TOKEN,
            pb::UpdateOrganisationRequest {
                organisation: Some(change),
                update_mask: mask(&["name"]),
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(stale, Code::Aborted)), "STALE_ETAG");
    let after = orgs
        .get_organisation(req(
            OPERATOR_TOKEN,
            pb::GetOrganisationRequest { id: created.id.clone() },
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    assert_eq!(after.name, "Nyt Navn A/S");

    // A member sees their own organisation only.
    let fixture = app.org_with_admin().await;
    let own = orgs
        .list_organisations(req(&fixture.admin_token, pb::ListOrganisationsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.organisations.len(), 1);
    assert_eq!(own.organisations[0].id, fixture.org.id);
    assert_eq!(own.organisations[0].licences_used, 1);
    app.finish().await;
}

async fn organisation_bad_input_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut orgs = app.orgs();
    let before = app.fingerprint().await;
    let cases: Vec<(pb::CreateOrganisationRequest, Vec<&str>)> = vec![
        (
            pb::CreateOrganisationRequest {
                name: "A".into(),
                cvr: "1234567".into(),
                ..Default::default()
            },
            vec!["cvr"],
        ),
        (
            pb::CreateOrganisationRequest {
                name: "A".into(),
                cvr: "10150818".into(),
                ..Default::default()
            },
            vec!["cvr"],
        ),
        (
            pb::CreateOrganisationRequest {
                name: "A".into(),
                cvr: "1015081x".into(),
                ..Default::default()
            },
            vec!["cvr"],
        ),
        (
            pb::CreateOrganisationRequest {
                name: "  ".into(),
                cvr: "10150817".into(),
                ..Default::default()
            },
            vec!["name"],
        ),
        (
            pb::CreateOrganisationRequest {
                name: "A".into(),
                cvr: "10150817".into(),
                ean_numbers: vec!["5798000416605".into()],
                ..Default::default()
            },
            vec!["ean_numbers[0]"],
        ),
        (
            pb::CreateOrganisationRequest {
                name: "".into(),
                cvr: "".into(),
                licence_count: Some(0),
                ..Default::default()
            },
            vec!["name", "cvr", "licence_count"],
        ),
        (
            pb::CreateOrganisationRequest {
                name: "A".into(),
                cvr: "10150817".into(),
                max_administrators: Some(-1),
                ..Default::default()
            },
            vec!["max_administrators"],
        ),
        (
            pb::CreateOrganisationRequest {
                name: "A".into(),
                cvr: "10150817".into(),
                deletion_policy: 9,
                ..Default::default()
            },
            vec!["deletion_policy"],
        ),
    ];
    for (request, fields) in cases {
        let status = assert_code(
            orgs.create_organisation(req(OPERATOR_TOKEN, request.clone())).await,
            Code::InvalidArgument,
        );
        assert_eq!(bad_fields(&status), fields, "for {request:?}");
        assert_eq!(reason(&status), "INVALID_ARGUMENT");
    }
    assert_eq!(app.fingerprint().await, before, "bad input changed nothing");

    let ok = pb::CreateOrganisationRequest {
        name: "Første".into(),
        cvr: "10150817".into(),
        ean_numbers: vec!["5798000416604".into()],
        ..Default::default()
    };
    orgs.create_organisation(req(OPERATOR_TOKEN, ok.clone())).await.unwrap();
    let again = assert_code(
        orgs.create_organisation(req(OPERATOR_TOKEN, ok)).await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&again), "CVR_TAKEN");
    let missing = orgs
        .get_organisation(req(
            OPERATOR_TOKEN,
            pb::GetOrganisationRequest {
                id: uuid::Uuid::now_v7().to_string(),
            },
        ))
        .await;
    assert_code(missing, Code::NotFound);
    let not_uuid = orgs
        .get_organisation(req(OPERATOR_TOKEN, pb::GetOrganisationRequest { id: "abc".into() }))
        .await;
    assert_eq!(bad_fields(&assert_code(not_uuid, Code::InvalidArgument)), vec!["id"]);
    app.finish().await;
}

async fn settings_and_licence_count(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut orgs = app.orgs();
    let settings = orgs
        .get_organisation_settings(req(
            &fixture.admin_token,
            pb::GetOrganisationSettingsRequest {
                organisation_id: fixture.org.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(settings.deletion_policy, pb::DeletionPolicy::AllowDelete as i32);

    let mut change = settings.clone();
    change.deletion_policy = pb::DeletionPolicy::DeactivateOnly as i32;
    change.max_administrators = 3;
    change.join_requests_allowed = true;
    change.certificate_kinds = vec![
        pb::CertificateKind::Employee as i32,
        pb::CertificateKind::Organisation as i32,
    ];
    change.billing = Some(pb::BillingDetails {
        name: "Bogholderiet".into(),
        address: "Åboulevarden 1, 8000 Aarhus".into(),
        // Stored as checked: trimmed (it was stored with its line break).
        email: " faktura@firma.dk\r\n".into(),
        reference: "PO-1".into(),
    });
    let updated = orgs
        .update_organisation_settings(req(
            &fixture.admin_token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(change.clone()),
                update_mask: mask(&[
                    "deletion_policy",
                    "max_administrators",
                    "join_requests_allowed",
                    "certificate_kinds",
                    "billing",
                ]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .settings
        .unwrap();
    assert_eq!(updated.deletion_policy, pb::DeletionPolicy::DeactivateOnly as i32);
    assert_eq!(updated.max_administrators, 3);
    assert!(updated.join_requests_allowed);
    assert_eq!(updated.billing.as_ref().unwrap().address, "Åboulevarden 1, 8000 Aarhus");
    assert_eq!(updated.billing.as_ref().unwrap().email, "faktura@firma.dk");
    // The old etag is stale now.
    let stale = orgs
        .update_organisation_settings(req(
            &fixture.admin_token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(change),
                update_mask: mask(&["max_administrators"]),
            },
        ))
        .await;
    assert_code(stale, Code::Aborted);
    // Unknown and forbidden mask paths.
    let licence_via_settings = orgs
        .update_organisation_settings(req(
            &fixture.admin_token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(updated.clone()),
                update_mask: mask(&["licence_count"]),
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(licence_via_settings, Code::InvalidArgument)),
        vec!["update_mask"]
    );
    let bad_email = {
        let mut s = updated.clone();
        s.billing.as_mut().unwrap().email = "ikke-en-adresse".into();
        orgs.update_organisation_settings(req(
            &fixture.admin_token,
            pb::UpdateOrganisationSettingsRequest {
                settings: Some(s),
                update_mask: mask(&["billing"]),
            },
        ))
        .await
    };
    assert_eq!(
        bad_fields(&assert_code(bad_email, Code::InvalidArgument)),
        vec!["settings.billing.email"]
    );

    // Licence count: operators only, never below what is in use.
    let denied = orgs
        .set_licence_count(req(
            &fixture.admin_token,
            pb::SetLicenceCountRequest {
                organisation_id: fixture.org.id.clone(),
                licence_count: 10,
            },
        ))
        .await;
    assert_code(denied, Code::PermissionDenied);
    let set = orgs
        .set_licence_count(req(
            OPERATOR_TOKEN,
            pb::SetLicenceCountRequest {
                organisation_id: fixture.org.id.clone(),
                licence_count: 10,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .organisation
        .unwrap();
    assert_eq!(set.licence_count, 10);
    app.member(&fixture, "Bo", &[]).await;
    let below = orgs
        .set_licence_count(req(
            OPERATOR_TOKEN,
            pb::SetLicenceCountRequest {
                organisation_id: fixture.org.id.clone(),
                licence_count: 1,
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(below, Code::FailedPrecondition)), "LICENCES_IN_USE");
    let zero = orgs
        .set_licence_count(req(
            OPERATOR_TOKEN,
            pb::SetLicenceCountRequest {
                organisation_id: fixture.org.id.clone(),
                licence_count: 0,
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(zero, Code::InvalidArgument)),
        vec!["licence_count"]
    );
    app.finish().await;
}

async fn unit_tree(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut orgs = app.orgs();
    let token = fixture.admin_token.clone();
    let org = fixture.org.id.clone();
    let create = |parent: &str, kind: pb::UnitKind, name: &str, number: &str| pb::CreateUnitRequest {
        organisation_id: org.clone(),
        parent_id: parent.to_owned(),
        kind: kind as i32,
        name: name.to_owned(),
        number: number.to_owned(),
        ..Default::default()
    };
    let sales = orgs
        .create_unit(req(&token, create("", pb::UnitKind::Department, "Salg", "")))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();
    let north = orgs
        .create_unit(req(
            &token,
            create(&sales.id, pb::UnitKind::Department, "Salg Nord", ""),
        ))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();
    let plant = orgs
        .create_unit(req(
            &token,
            create("", pb::UnitKind::ProductionUnit, "Værksted Århus", "1012345678"),
        ))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();
    orgs.create_unit(req(&token, create("", pb::UnitKind::TaxUnit, "SE", "12345678")))
        .await
        .unwrap();

    for (request, field) in [
        (create("", pb::UnitKind::ProductionUnit, "P", "123"), "number"),
        (create("", pb::UnitKind::TaxUnit, "SE", "123456789"), "number"),
        (create("", pb::UnitKind::ProductionUnit, "P", ""), "number"),
        (create("", pb::UnitKind::Department, "D", "1234"), "number"),
        (create("", pb::UnitKind::Unspecified, "D", ""), "kind"),
        (create("", pb::UnitKind::Department, "", ""), "name"),
        (
            create(&uuid::Uuid::now_v7().to_string(), pb::UnitKind::Department, "D", ""),
            "parent_id",
        ),
    ] {
        let status = assert_code(orgs.create_unit(req(&token, request)).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), vec![field]);
    }
    let duplicate = orgs
        .create_unit(req(
            &token,
            create("", pb::UnitKind::ProductionUnit, "Igen", "1012345678"),
        ))
        .await;
    assert_eq!(
        reason(&assert_code(duplicate, Code::AlreadyExists)),
        "UNIT_NUMBER_TAKEN"
    );

    let units = orgs
        .list_units(req(
            &token,
            pb::ListUnitsRequest {
                organisation_id: org.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .units;
    assert_eq!(units.len(), 4);
    let pos = |id: &str| units.iter().position(|u| u.id == id).unwrap();
    assert!(pos(&sales.id) < pos(&north.id), "parents before children");
    assert_eq!(units[pos(&plant.id)].number, "1012345678");

    // A unit cannot move under its own subtree.
    let mut moved = sales.clone();
    moved.parent_id = north.id.clone();
    let cycle = orgs
        .update_unit(req(
            &token,
            pb::UpdateUnitRequest {
                unit: Some(moved),
                update_mask: mask(&["parent_id"]),
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(cycle, Code::InvalidArgument)),
        vec!["unit.parent_id"]
    );
    let mut renamed = north.clone();
    renamed.name = "Salg Nordjylland".into();
    let renamed = orgs
        .update_unit(req(
            &token,
            pb::UpdateUnitRequest {
                unit: Some(renamed),
                update_mask: mask(&["name"]),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .unit
        .unwrap();
    assert_eq!(renamed.name, "Salg Nordjylland");
    let in_use = orgs
        .delete_unit(req(&token, pb::DeleteUnitRequest { id: sales.id.clone() }))
        .await;
    assert_eq!(reason(&assert_code(in_use, Code::FailedPrecondition)), "UNIT_IN_USE");
    orgs.delete_unit(req(&token, pb::DeleteUnitRequest { id: north.id.clone() }))
        .await
        .unwrap();
    orgs.delete_unit(req(&token, pb::DeleteUnitRequest { id: sales.id.clone() }))
        .await
        .unwrap();
    let units = orgs
        .list_units(req(
            &token,
            pb::ListUnitsRequest {
                organisation_id: org.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .units;
    assert_eq!(units.len(), 2);
    app.finish().await;
}

/// A deleted profile keeps its unit for the record but holds no place in
/// it: the unit can be deleted once only deleted profiles are left. A
/// deactivated user still holds theirs. Before, DeleteUnit answered
/// UNIT_IN_USE for ever (a deleted user cannot be moved).
async fn a_unit_whose_users_were_deleted_can_be_deleted(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = &fixture.admin_token;
    let unit = app.unit(&fixture, "Lager", "").await;
    let (gone, _) = app.member_in(&fixture, "Gone", &unit.id).await;
    let (resting, _) = app.member_in(&fixture, "Resting", &unit.id).await;
    let mut users = app.users();
    users
        .delete_user(req(
            token,
            pb::DeleteUserRequest {
                id: gone.id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .expect("deleted");
    users
        .deactivate_user(req(
            token,
            pb::DeactivateUserRequest {
                id: resting.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("deactivated");
    let mut orgs = app.orgs();
    let in_use = orgs
        .delete_unit(req(token, pb::DeleteUnitRequest { id: unit.id.clone() }))
        .await;
    let status = assert_code(in_use, Code::FailedPrecondition);
    assert_eq!(reason(&status), "UNIT_IN_USE");
    assert!(status.message().contains(" 1 users"), "{}", status.message());
    users
        .delete_user(req(
            token,
            pb::DeleteUserRequest {
                id: resting.id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .expect("deleted");
    orgs.delete_unit(req(token, pb::DeleteUnitRequest { id: unit.id.clone() }))
        .await
        .expect("only deleted profiles were left in the unit");
    app.finish().await;
}

/// R-ORG-3: the identification means an organisation administrator allows
/// bound a person's: a create or an update beyond them is refused (naming
/// the field and the means) and changes nothing, and narrowing them takes
/// the withdrawn means from everyone holding one, in history.
async fn identification_means_stay_within_the_organisations(backend: Backend) {
    use pb::IdentificationMeans as Means;
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin = &fixture.admin_token;
    let mut users = app.users();
    let people = "SELECT COUNT(*) FROM users";
    let before = app.count(people).await;

    // A new organisation allows MitID only.
    let beyond = users
        .create_user(req(
            admin,
            pb::CreateUserRequest {
                identification_means: vec![Means::Mitid as i32, Means::Password as i32],
                ..new_user(&fixture.org.id, "Ida", &[])
            },
        ))
        .await;
    let status = assert_code(beyond, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), vec!["identification_means"]);
    assert!(status.message().contains("PASSWORD"), "{status:?}");
    assert!(!status.message().contains("MITID,"), "{status:?}");
    assert_eq!(app.count(people).await, before);

    app.change_settings(&fixture, "allowed_identification_means", |s| {
        s.allowed_identification_means = vec![Means::Mitid as i32, Means::Password as i32, Means::NemlogIn as i32]
    })
    .await;
    let ida = app
        .created_user(
            admin,
            pb::CreateUserRequest {
                identification_means: vec![Means::Mitid as i32, Means::Password as i32],
                ..new_user(&fixture.org.id, "Ida", &[])
            },
        )
        .await;
    let bo = app
        .created_user(
            admin,
            pb::CreateUserRequest {
                identification_means: vec![Means::NemlogIn as i32],
                ..new_user(&fixture.org.id, "Bo", &[])
            },
        )
        .await;
    let plain = app.created_user(admin, new_user(&fixture.org.id, "Ib", &[])).await;

    // An update beyond them is refused and changes nothing.
    let beyond = users
        .update_user(req(
            admin,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    identification_means: vec![Means::LocalIdp as i32],
                    ..ida.clone()
                }),
                update_mask: mask(&["identification_means"]),
                cpr: String::new(),
            },
        ))
        .await;
    let status = assert_code(beyond, Code::InvalidArgument);
    assert_eq!(bad_fields(&status), vec!["user.identification_means"]);
    assert!(status.message().contains("LOCAL_IDP"), "{status:?}");
    assert_eq!(app.user(admin, &ida.id).await, ida);

    // Narrowed to MitID: Ida keeps MitID, Bo keeps nothing, Ib is untouched.
    let settings = app
        .change_settings(&fixture, "allowed_identification_means", |s| {
            s.allowed_identification_means = vec![Means::Mitid as i32]
        })
        .await;
    assert_eq!(settings.allowed_identification_means, vec![Means::Mitid as i32]);
    let ida_after = app.user(admin, &ida.id).await;
    assert_eq!(ida_after.identification_means, vec![Means::Mitid as i32]);
    assert_ne!(ida_after.etag, ida.etag);
    assert!(app.user(admin, &bo.id).await.identification_means.is_empty());
    assert_eq!(app.user(admin, &plain.id).await, plain);
    let events = app.history_of(admin, &bo.id, pb::HistoryActivity::UserUpdated).await;
    let [event] = events.as_slice() else {
        panic!("one update of Bo: {events:?}")
    };
    assert_eq!(event.actor, format!("user:{}", fixture.admin.id));
    let change = event
        .changes
        .iter()
        .find(|c| c.field == "identification_means")
        .expect("the means in history");
    assert!(
        change.before.contains("NEMLOG_IN") && !change.after.contains("NEMLOG_IN"),
        "{change:?}"
    );
    assert_eq!(
        app.count(
            "select count(*) from history_events where activity = 'SETTINGS_UPDATED' and changes like '%\"after\":\"2\",\"before\":\"\",\"field\":\"people_losing_identification_means\"%'"
        )
        .await,
        1
    );

    // An edit that repeats what a person holds adds nothing and is no
    // refusal, even beyond the allowed means: here Ib holds NemLog-in from
    // before the rule (played by writing the row).
    app.execute_bound(
        "UPDATE users SET identification_means = $1 WHERE email = $2",
        vec![r#"["MITID","NEMLOG_IN"]"#.into(), plain.email.clone().into()],
    )
    .await;
    let ib = app.user(admin, &plain.id).await;
    let repeated = users
        .update_user(req(
            admin,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    surname: "Holm".into(),
                    ..ib.clone()
                }),
                update_mask: mask(&["surname", "identification_means"]),
                cpr: String::new(),
            },
        ))
        .await
        .expect("the means Ib holds, repeated")
        .into_inner()
        .user
        .unwrap();
    assert_eq!(repeated.identification_means, ib.identification_means);
    // Saving the settings again unchanged takes nothing from anyone,
    // not even a means held beyond it.
    let ib = app.user(admin, &plain.id).await;
    app.change_settings(&fixture, "allowed_identification_means", |_| {})
        .await;
    assert_eq!(app.user(admin, &plain.id).await, ib);
    // Migration 77 makes each organisation allow what its people hold, so
    // nobody loses a means by the upgrade.
    assert_eq!(
        orgadmin_migrations::allow_the_means_people_hold(app.domain.db())
            .await
            .unwrap(),
        1
    );
    let settings = app.settings(&fixture).await;
    assert_eq!(
        settings.allowed_identification_means,
        vec![Means::Mitid as i32, Means::NemlogIn as i32]
    );
    assert_eq!(
        orgadmin_migrations::allow_the_means_people_hold(app.domain.db())
            .await
            .unwrap(),
        0,
        "nothing more to allow"
    );
}

/// Narrowing the allowed means while the reactivation sweep (which writes
/// users without the organisation's lock) holds a person who holds a
/// withdrawn means: the narrowing waits for the sweep and takes the means
/// from the row as the sweep left it. Written per person over rows read
/// unlocked, it found the row changed and failed with STALE_ETAG about a
/// user the caller never named. (The sweep in progress is played by a
/// session that has written the row and not committed.) PostgreSQL only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowing_the_means_waits_for_a_sweep_holding_a_person() {
    use pb::IdentificationMeans as Means;
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let admin = fixture.admin_token.clone();
    app.change_settings(&fixture, "allowed_identification_means", |s| {
        s.allowed_identification_means = vec![Means::Mitid as i32, Means::NemlogIn as i32]
    })
    .await;
    let bo = app
        .created_user(
            &admin,
            pb::CreateUserRequest {
                identification_means: vec![Means::NemlogIn as i32],
                ..new_user(&fixture.org.id, "Bo", &[])
            },
        )
        .await;
    let sweep = app
        .in_progress(&[format!(
            "UPDATE users SET version = version + 1, updated_at = updated_at + 1 WHERE id = '{}'",
            bo.id
        )])
        .await;
    let narrowing = {
        let (app_orgs, settings) = (app.orgs(), app.settings(&fixture).await);
        let admin = admin.clone();
        tokio::spawn(async move {
            let mut orgs = app_orgs;
            orgs.update_organisation_settings(req(
                &admin,
                pb::UpdateOrganisationSettingsRequest {
                    settings: Some(pb::OrganisationSettings {
                        allowed_identification_means: vec![Means::Mitid as i32],
                        ..settings
                    }),
                    update_mask: mask(&["allowed_identification_means"]),
                },
            ))
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!narrowing.is_finished(), "the narrowing did not wait for the row");
    sweep.commit().await;
    narrowing.await.unwrap().expect("narrowed, the sweep waited for");
    assert!(app.user(&admin, &bo.id).await.identification_means.is_empty());
    app.finish().await;
}

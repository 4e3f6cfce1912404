//! Admin levels (R-ACC-2, R-ACC-4): what a level held on a unit lets its
//! holder do to users inside and outside its subtree, the delegation
//! ceilings, two keys, revocation, and concurrent revocations.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::reason as reason_of;
use orgadmin_tests::*;
use prost_types::FieldMask;
use tonic::Code;

both_backends!(
    a_retried_grant_is_made_once,
    a_level_on_a_unit_covers_its_subtree_only,
    ceilings_and_two_keys,
    two_level_one_administrators_revoking_each_other_leave_one,
    grants_pass_on_within_their_options_and_revoke_in_cascade,
    a_grant_made_while_its_parent_is_revoked_never_outlives_it,
    two_administrators_demoting_each_other_leave_one,
    rights_requests_are_decided_by_a_colleague_and_applied,
    a_role_is_asked_for_and_decided_by_an_organisation_administrator,
    a_grant_on_one_resource_passes_on_that_resource_only,
    a_service_account_delegates_nothing,
    how_a_person_who_delegates_signs_in_is_an_administrators_call,
    a_stand_in_gets_no_delegation_from_whoever_holds_its_code
);

const READ: i32 = pb::GrantAction::Read as i32;
const EDIT: i32 = pb::GrantAction::Edit as i32;

fn grant_request(
    grantee: &pb::User,
    right: &str,
    unit_id: &str,
    actions: &[i32],
    grantable: &[i32],
    may_authorise: bool,
) -> pb::CreateGrantRequest {
    pb::CreateGrantRequest {
        grantee_user_id: grantee.id.clone(),
        right: right.to_owned(),
        unit_id: unit_id.to_owned(),
        actions: actions.to_vec(),
        grantable_actions: grantable.to_vec(),
        may_authorise,
        grantee_group_id: String::new(),
        resource: String::new(),
        request_id: String::new(),
    }
}

async fn grant(app: &TestApp, token: &str, request: pb::CreateGrantRequest) -> Result<pb::Grant, tonic::Status> {
    app.access()
        .create_grant(req(token, request))
        .await
        .map(|r| r.into_inner().grant.expect("grant"))
}

async fn grants(app: &TestApp, token: &str, org: &str) -> Result<Vec<pb::Grant>, tonic::Status> {
    app.access()
        .list_grants(req(
            token,
            pb::ListGrantsRequest {
                organisation_id: org.to_owned(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().grants)
}

/// An organisation with units North (with sub-unit North-East) and South,
/// and a plain member in each of North-East and South.
struct Units {
    fixture: OrgFixture,
    north: pb::Unit,
    north_east: pb::Unit,
    south: pb::Unit,
    anna: pb::User,
    bo: pb::User,
}

async fn units(app: &TestApp) -> Units {
    let fixture = app.org_with_admin().await;
    let north = app.unit(&fixture, "North", "").await;
    let north_east = app.unit(&fixture, "North-East", &north.id).await;
    let south = app.unit(&fixture, "South", "").await;
    let (anna, _) = app.member_in(&fixture, "Anna", &north_east.id).await;
    let (bo, _) = app.member_in(&fixture, "Bo", &south.id).await;
    Units {
        fixture,
        north,
        north_east,
        south,
        anna,
        bo,
    }
}

fn rename(user: &pb::User, first_name: &str) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user: Some(pb::User {
            id: user.id.clone(),
            first_name: first_name.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["first_name".into()],
        }),
        cpr: String::new(),
    }
}

fn move_to(user: &pb::User, unit_id: &str) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        user: Some(pb::User {
            id: user.id.clone(),
            unit_id: unit_id.to_owned(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask {
            paths: vec!["unit_id".into()],
        }),
        cpr: String::new(),
    }
}

async fn listed_ids(app: &TestApp, token: &str, org: &str) -> Vec<String> {
    let mut ids: Vec<String> = app
        .users()
        .list_users(req(
            token,
            pb::ListUsersRequest {
                organisation_id: org.to_owned(),
                page_size: 500,
                ..Default::default()
            },
        ))
        .await
        .expect("list users")
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.id)
        .collect();
    ids.sort();
    ids
}

async fn a_level_on_a_unit_covers_its_subtree_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let w = units(&app).await;
    let org = w.fixture.org.id.clone();
    let admin = w.fixture.admin_token.clone();
    let (editor, editor_token) = app.member_in(&w.fixture, "Editor", &w.north.id).await;
    let (viewer, viewer_token) = app.member_in(&w.fixture, "Viewer", &w.north.id).await;

    // Before any level, a plain member sees no other user.
    assert_code(
        app.users()
            .get_user(req(&editor_token, pb::GetUserRequest { id: w.anna.id.clone() }))
            .await,
        Code::PermissionDenied,
    );
    let granted = app
        .grant_level(&admin, &editor.id, 3, &w.north.id)
        .await
        .expect("grant level 3");
    assert_eq!((granted.level, granted.unit_id.as_str()), (3, w.north.id.as_str()));
    app.grant_level(&admin, &viewer.id, 4, &w.north.id)
        .await
        .expect("grant level 4");

    let me = app.who_am_i(&editor_token).await.unwrap();
    assert_eq!(me.admin_levels.len(), 1);
    assert_eq!(
        (me.admin_levels[0].level, me.admin_levels[0].unit_id.as_str()),
        (3, w.north.id.as_str())
    );

    // Level 3 on North: Anna (North-East, below North) is in scope, Bo
    // (South) is not.
    app.users()
        .get_user(req(&editor_token, pb::GetUserRequest { id: w.anna.id.clone() }))
        .await
        .expect("a level 3 reads a user of its subtree");
    app.users()
        .update_user(req(&editor_token, rename(&w.anna, "Annemette")))
        .await
        .expect("a level 3 edits a user of its subtree");
    let before = app.fingerprint().await;
    assert_code(
        app.users()
            .get_user(req(&editor_token, pb::GetUserRequest { id: w.bo.id.clone() }))
            .await,
        Code::PermissionDenied,
    );
    assert_code(
        app.users().update_user(req(&editor_token, rename(&w.bo, "Bent"))).await,
        Code::PermissionDenied,
    );
    // Moving a user out of the subtree, or creating one outside it or in
    // no unit, is beyond a scoped level.
    assert_code(
        app.users()
            .update_user(req(&editor_token, move_to(&w.anna, &w.south.id)))
            .await,
        Code::PermissionDenied,
    );
    for unit in [w.south.id.as_str(), ""] {
        let request = pb::CreateUserRequest {
            unit_id: unit.to_owned(),
            ..new_user(&org, "Outside", &[])
        };
        assert_code(
            app.users().create_user(req(&editor_token, request)).await,
            Code::PermissionDenied,
        );
    }
    // Nor does a level make anyone an organisation administrator.
    assert_code(
        app.grant_level(&editor_token, &w.anna.id, 4, &w.north_east.id).await,
        Code::PermissionDenied,
    );
    assert!(app.fingerprint().await == before, "denied calls changed data");

    // A level acts on ordinary users only: the level 4 holder and an
    // organisation administrator placed in North are read, never changed.
    let (north_admin, _) = app
        .create_and_activate(
            &admin,
            pb::CreateUserRequest {
                unit_id: w.north.id.clone(),
                ..new_user(&org, "NorthAdmin", &[pb::Role::OrganisationAdmin])
            },
        )
        .await;
    let before = app.fingerprint().await;
    for administrator in [&viewer, &north_admin] {
        app.users()
            .get_user(req(
                &editor_token,
                pb::GetUserRequest {
                    id: administrator.id.clone(),
                },
            ))
            .await
            .expect("a level reads an administrator in its scope");
        assert_code(
            app.users()
                .update_user(req(&editor_token, rename(administrator, "Overtaken")))
                .await,
            Code::PermissionDenied,
        );
        assert_code(
            app.users()
                .send_password_reset(req(
                    &editor_token,
                    pb::SendPasswordResetRequest {
                        user_id: administrator.id.clone(),
                    },
                ))
                .await,
            Code::PermissionDenied,
        );
    }
    assert!(
        app.fingerprint().await == before,
        "denied calls on administrators changed data"
    );

    // Inside the subtree: create, move within it, deactivate.
    let created = app
        .users()
        .create_user(req(
            &editor_token,
            pb::CreateUserRequest {
                unit_id: w.north_east.id.clone(),
                ..new_user(&org, "Inside", &[])
            },
        ))
        .await
        .expect("a level 3 creates a user in its subtree")
        .into_inner()
        .user
        .unwrap();
    app.users()
        .update_user(req(&editor_token, move_to(&created, &w.north.id)))
        .await
        .expect("a move within the subtree");

    // The list shows the subtree's users only: Anna, the new user, and the
    // two level holders placed in North.
    let mut expected = vec![
        w.anna.id.clone(),
        created.id.clone(),
        editor.id.clone(),
        viewer.id.clone(),
        north_admin.id.clone(),
    ];
    expected.sort();
    assert_eq!(listed_ids(&app, &editor_token, &org).await, expected);
    assert_eq!(listed_ids(&app, &viewer_token, &org).await, expected);
    assert!(listed_ids(&app, &admin, &org).await.contains(&w.bo.id));

    // Level 4 views and changes nothing.
    app.users()
        .get_user(req(&viewer_token, pb::GetUserRequest { id: w.anna.id.clone() }))
        .await
        .expect("a level 4 reads");
    let before = app.fingerprint().await;
    assert_code(
        app.users()
            .update_user(req(&viewer_token, rename(&w.anna, "Ann")))
            .await,
        Code::PermissionDenied,
    );
    assert!(app.fingerprint().await == before);

    // History names the level on the grantee.
    let events = app
        .history_of(&admin, &editor.id, pb::HistoryActivity::AdminLevelGranted)
        .await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        changed_to(&events[0], "admin_level"),
        Some(format!("3 on unit {}", w.north.id).as_str())
    );

    // A unit a level is held on is not deleted from under it.
    let deleted = assert_code(
        app.orgs()
            .delete_unit(req(&admin, pb::DeleteUnitRequest { id: w.north.id.clone() }))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason(&deleted), "UNIT_IN_USE");

    // Revoked, the level stops working at once (this replica's cache is
    // cleared).
    app.access()
        .revoke_admin_level(req(&admin, pb::RevokeAdminLevelRequest { id: granted.id.clone() }))
        .await
        .expect("revoke");
    assert_code(
        app.users()
            .get_user(req(&editor_token, pb::GetUserRequest { id: w.anna.id.clone() }))
            .await,
        Code::PermissionDenied,
    );
    assert_eq!(
        app.history_of(&admin, &editor.id, pb::HistoryActivity::AdminLevelRevoked)
            .await
            .len(),
        1
    );
    app.finish().await;
}

async fn ceilings_and_two_keys(backend: Backend) {
    let app = TestApp::start(backend).await;
    let w = units(&app).await;
    let org = w.fixture.org.id.clone();
    let admin = w.fixture.admin_token.clone();
    let (second, second_token) = app.member_in(&w.fixture, "Level2", &w.north.id).await;
    let (first, first_token) = app.member_in(&w.fixture, "Level1", &w.north.id).await;
    let (colleague, colleague_token) = app.member_in(&w.fixture, "Colleague", &w.north_east.id).await;
    app.grant_level(&admin, &second.id, 2, &w.north.id).await.unwrap();
    app.grant_level(&admin, &first.id, 1, "").await.unwrap();

    let before = app.fingerprint().await;
    // Seed 003: the level-2 administrator who tries to grant level 2.
    for level in [1, 2] {
        assert_code(
            app.grant_level(&second_token, &colleague.id, level, &w.north.id).await,
            Code::PermissionDenied,
        );
    }
    // Nor wider than their scope: the organisation, a sibling unit, or a
    // person placed outside it.
    assert_code(
        app.grant_level(&second_token, &colleague.id, 3, "").await,
        Code::PermissionDenied,
    );
    assert_code(
        app.grant_level(&second_token, &colleague.id, 3, &w.south.id).await,
        Code::PermissionDenied,
    );
    assert_code(
        app.grant_level(&second_token, &w.bo.id, 3, &w.north.id).await,
        Code::PermissionDenied,
    );
    // Two keys: nobody grants themselves, whatever they hold.
    let own = assert_code(
        app.grant_level(&first_token, &first.id, 2, &w.north.id).await,
        Code::PermissionDenied,
    );
    assert!(own.message().contains("themselves"), "{own:?}");
    assert_code(
        app.grant_level(&admin, &w.fixture.admin.id, 1, "").await,
        Code::PermissionDenied,
    );
    // Bad input names its field.
    let bad = assert_code(
        app.grant_level(&admin, &colleague.id, 5, "").await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&bad), ["level"]);
    let bad = assert_code(
        app.grant_level(&admin, &colleague.id, 3, &uuid::Uuid::now_v7().to_string())
            .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&bad), ["unit_id"]);
    assert!(app.fingerprint().await == before, "denied calls changed data");

    // Within the ceiling and scope: level 2 grants 3 and 4 below it.
    let third = app
        .grant_level(&second_token, &colleague.id, 3, &w.north_east.id)
        .await
        .expect("level 2 grants level 3 within its subtree");
    // The same scope again changes the level: 4, still within the ceiling;
    // a level 1 lifts it to 1 (it grants 1-4 on the organisation).
    let changed = app
        .grant_level(&second_token, &colleague.id, 4, &w.north_east.id)
        .await
        .unwrap();
    assert_eq!((changed.id.as_str(), changed.level), (third.id.as_str(), 4));
    app.grant_level(&first_token, &colleague.id, 1, &w.north_east.id)
        .await
        .expect("level 1 grants level 1");
    // Level 2 may neither change nor revoke a level 1.
    assert_code(
        app.grant_level(&second_token, &colleague.id, 3, &w.north_east.id).await,
        Code::PermissionDenied,
    );
    assert_code(
        app.access()
            .revoke_admin_level(req(&second_token, pb::RevokeAdminLevelRequest { id: third.id.clone() }))
            .await,
        Code::PermissionDenied,
    );
    // The colleague (now level 1 on North-East) lets a further colleague
    // grant on: two keys, each acting on someone else.
    let (next, _) = app.member_in(&w.fixture, "Next", &w.north_east.id).await;
    app.grant_level(&colleague_token, &next.id, 2, &w.north_east.id)
        .await
        .expect("a level 1 on a unit grants level 2 there");

    // Listing: everyone sees their own levels; a level 2 on North sees the
    // levels of the people placed in North's subtree, the administrator all.
    let list = |token: String, user_id: String| {
        let app = &app;
        let org = org.clone();
        async move {
            app.access()
                .list_admin_levels(req(
                    &token,
                    pb::ListAdminLevelsRequest {
                        organisation_id: org,
                        user_id,
                        ..Default::default()
                    },
                ))
                .await
                .map(|r| r.into_inner().admin_levels)
        }
    };
    // A level on North held by Bo, who is placed in South: the administrator
    // sees it; North's level 2 sees the levels of the people placed in its
    // subtree only, as it sees those people.
    let bos = app
        .grant_level(&admin, &w.bo.id, 4, &w.north.id)
        .await
        .expect("an administrator grants anywhere");
    assert_eq!(list(admin.clone(), String::new()).await.unwrap().len(), 5);
    let seen_by_second = list(second_token.clone(), String::new()).await.unwrap();
    assert_eq!(
        seen_by_second.len(),
        4,
        "level 2 on North sees its own, the colleague's, the next's and the organisation-wide level 1 \
         of the first, who is placed in North: {seen_by_second:?}"
    );
    assert!(seen_by_second.iter().all(|l| l.id != bos.id), "{seen_by_second:?}");
    let (_, plain_token) = app.member_in(&w.fixture, "Plain", &w.south.id).await;
    assert_code(list(plain_token.clone(), String::new()).await, Code::PermissionDenied);
    let mine = list(colleague_token.clone(), colleague.id.clone()).await.unwrap();
    assert_eq!(mine.len(), 1);

    // Anyone gives up their own level.
    app.access()
        .revoke_admin_level(req(
            &colleague_token,
            pb::RevokeAdminLevelRequest { id: third.id.clone() },
        ))
        .await
        .expect("giving up one's own level");
    assert!(list(colleague_token, colleague.id.clone()).await.unwrap().is_empty());
    app.finish().await;
}

/// R-ACC-4, invariants under concurrency: two level 1 administrators revoke
/// each other's level at the same moment. Each checks the other's right
/// under the organisation's lock, so exactly one succeeds: the second finds
/// its own level gone.
async fn two_level_one_administrators_revoking_each_other_leave_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    for _ in 0..3 {
        let (a, a_token) = app.member(&fixture, "Ada", &[]).await;
        let (b, b_token) = app.member(&fixture, "Bea", &[]).await;
        let a_level = app.grant_level(&fixture.admin_token, &a.id, 1, "").await.unwrap();
        let b_level = app.grant_level(&fixture.admin_token, &b.id, 1, "").await.unwrap();
        let revoke = |token: String, id: String| {
            let mut client = app.access();
            async move {
                client
                    .revoke_admin_level(req(&token, pb::RevokeAdminLevelRequest { id }))
                    .await
            }
        };
        let (first, second) = tokio::join!(revoke(a_token, b_level.id.clone()), revoke(b_token, a_level.id.clone()));
        let succeeded = [first.is_ok(), second.is_ok()].iter().filter(|ok| **ok).count();
        assert_eq!(succeeded, 1, "{first:?} / {second:?}");
        for result in [first, second] {
            if let Err(status) = result {
                assert!(
                    matches!(status.code(), Code::PermissionDenied | Code::NotFound),
                    "{status:?}"
                );
            }
        }
        let left = app
            .access()
            .list_admin_levels(req(
                &fixture.admin_token,
                pb::ListAdminLevelsRequest {
                    organisation_id: fixture.org.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .admin_levels;
        let holders: Vec<&str> = left
            .iter()
            .filter(|l| l.user_id == a.id || l.user_id == b.id)
            .map(|l| l.user_id.as_str())
            .collect();
        assert_eq!(holders.len(), 1, "{left:?}");
        for level in left {
            app.access()
                .revoke_admin_level(req(&fixture.admin_token, pb::RevokeAdminLevelRequest { id: level.id }))
                .await
                .unwrap();
        }
    }
    app.finish().await;
}

async fn grants_pass_on_within_their_options_and_revoke_in_cascade(backend: Backend) {
    let app = TestApp::start(backend).await;
    let w = units(&app).await;
    let org = w.fixture.org.id.clone();
    let (_, rights) = app.member(&w.fixture, "Rights", &[pb::Role::RightsAdmin]).await;
    let (alice, alice_token) = app.member_in(&w.fixture, "Alice", &w.north.id).await;
    let (bob, bob_token) = app.member_in(&w.fixture, "Bob", &w.north_east.id).await;
    let (carol, carol_token) = app.member_in(&w.fixture, "Carol", &w.north_east.id).await;
    let (dave, _) = app.member_in(&w.fixture, "Dave", &w.south.id).await;
    let vat = "tax.vat-returns";

    // A rights administrator grants on nobody's strength.
    let root = grant(
        &app,
        &rights,
        grant_request(&alice, vat, &w.north.id, &[READ, EDIT], &[READ, EDIT], true),
    )
    .await
    .expect("a rights administrator grants");
    assert!(root.parent_grant_id.is_empty());
    // Alice may authorise: she passes read on with its grant option.
    let bobs = grant(
        &app,
        &alice_token,
        grant_request(&bob, vat, &w.north_east.id, &[READ], &[READ], false),
    )
    .await
    .expect("a holder who may authorise passes on a grant option");
    assert_eq!(bobs.parent_grant_id, root.id);
    // Bob may grant read, but not let others grant on.
    let carols = grant(
        &app,
        &bob_token,
        grant_request(&carol, vat, &w.north_east.id, &[READ], &[], false),
    )
    .await
    .expect("a holder with a grant option passes the action on");
    assert_eq!(carols.parent_grant_id, bobs.id);

    let before = app.fingerprint().await;
    let denied = [
        // Bob cannot authorise: no grant options, no authorise flag.
        grant(
            &app,
            &bob_token,
            grant_request(&dave, vat, &w.north_east.id, &[READ], &[READ], false),
        )
        .await,
        grant(
            &app,
            &bob_token,
            grant_request(&dave, vat, &w.north_east.id, &[READ], &[], true),
        )
        .await,
        // Nothing he may not grant: edit.
        grant(
            &app,
            &bob_token,
            grant_request(&dave, vat, &w.north_east.id, &[READ, EDIT], &[], false),
        )
        .await,
        // Nothing wider than his scope, nor another right.
        grant(
            &app,
            &bob_token,
            grant_request(&dave, vat, &w.north.id, &[READ], &[], false),
        )
        .await,
        grant(&app, &bob_token, grant_request(&dave, vat, "", &[READ], &[], false)).await,
        grant(
            &app,
            &bob_token,
            grant_request(&dave, "payroll.read", &w.north_east.id, &[READ], &[], false),
        )
        .await,
        // Carol holds no grant option.
        grant(
            &app,
            &carol_token,
            grant_request(&dave, vat, &w.north_east.id, &[READ], &[], false),
        )
        .await,
        // Two keys: not to oneself, however much one holds.
        grant(
            &app,
            &alice_token,
            grant_request(&alice, vat, &w.north.id, &[READ], &[], false),
        )
        .await,
        grant(
            &app,
            &w.fixture.admin_token,
            grant_request(&w.fixture.admin, vat, "", &[READ], &[], false),
        )
        .await,
    ];
    for (i, result) in denied.into_iter().enumerate() {
        let status = assert_code(result, Code::PermissionDenied);
        assert!(!status.message().is_empty(), "case {i}");
    }
    for (request, field) in [
        (grant_request(&dave, "Tax VAT", "", &[READ], &[], false), "right"),
        (grant_request(&dave, vat, "", &[], &[], false), "actions"),
        (
            grant_request(&dave, vat, "", &[READ], &[EDIT], false),
            "grantable_actions",
        ),
        (grant_request(&dave, vat, "", &[READ, READ], &[], false), "actions[1]"),
        (grant_request(&dave, vat, "", &[7], &[], false), "actions[0]"),
    ] {
        let status = assert_code(grant(&app, &rights, request).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), [field]);
    }
    assert!(app.fingerprint().await == before, "refused grants changed data");

    // Who sees what: administrators all, Bob what he holds and made, Carol
    // what she holds; a member holding nothing sees nothing of others'.
    assert_eq!(grants(&app, &rights, &org).await.unwrap().len(), 3);
    let mut seen_by_bob: Vec<String> = grants(&app, &bob_token, &org)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    seen_by_bob.sort();
    let mut expected = vec![bobs.id.clone(), carols.id.clone()];
    expected.sort();
    assert_eq!(seen_by_bob, expected);
    assert_eq!(grants(&app, &carol_token, &org).await.unwrap().len(), 1);
    let created = app
        .history_of(&w.fixture.admin_token, &carol.id, pb::HistoryActivity::GrantCreated)
        .await;
    assert_eq!(
        changed_to(&created[0], "grant"),
        Some(format!("{vat} read on unit {}", w.north_east.id).as_str())
    );

    // Revoking Alice's grant takes Bob's and Carol's with it.
    let revoked = app
        .access()
        .revoke_grant(req(&rights, pb::RevokeGrantRequest { id: root.id.clone() }))
        .await
        .expect("revoke")
        .into_inner()
        .revoked;
    let mut revoked_ids: Vec<String> = revoked.into_iter().map(|g| g.id).collect();
    revoked_ids.sort();
    let mut all = vec![root.id.clone(), bobs.id.clone(), carols.id.clone()];
    all.sort();
    assert_eq!(revoked_ids, all);
    assert!(grants(&app, &rights, &org).await.unwrap().is_empty());
    let gone = app
        .history_of(&w.fixture.admin_token, &carol.id, pb::HistoryActivity::GrantRevoked)
        .await;
    assert_eq!(changed_to(&gone[0], "revoked_with"), Some(root.id.as_str()));

    // A holder gives up their own; nobody else's without the right.
    let again = grant(&app, &rights, grant_request(&carol, vat, "", &[READ], &[], false))
        .await
        .unwrap();
    assert_code(
        app.access()
            .revoke_grant(req(&bob_token, pb::RevokeGrantRequest { id: again.id.clone() }))
            .await,
        Code::PermissionDenied,
    );
    app.access()
        .revoke_grant(req(&carol_token, pb::RevokeGrantRequest { id: again.id.clone() }))
        .await
        .expect("giving up one's own grant");
    app.finish().await;
}

/// A holder passes a grant on while an administrator revokes the holder's
/// grant at the same moment: either the new grant is made first and goes
/// with the cascade, or the revocation comes first and the new grant is
/// refused. Never a grant whose parent is gone.
async fn a_grant_made_while_its_parent_is_revoked_never_outlives_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let org = fixture.org.id.clone();
    let (holder, holder_token) = app.member(&fixture, "Holder", &[]).await;
    let (next, _) = app.member(&fixture, "Next", &[]).await;
    for _ in 0..5 {
        let root = grant(
            &app,
            &fixture.admin_token,
            grant_request(&holder, "docs.read", "", &[READ], &[READ], false),
        )
        .await
        .unwrap();
        let revoke = {
            let mut access = app.access();
            let (token, id) = (fixture.admin_token.clone(), root.id.clone());
            async move { access.revoke_grant(req(&token, pb::RevokeGrantRequest { id })).await }
        };
        let pass_on = grant(
            &app,
            &holder_token,
            grant_request(&next, "docs.read", "", &[READ], &[], false),
        );
        let (revoked, passed) = tokio::join!(revoke, pass_on);
        revoked.expect("the administrator's revocation");
        if let Err(status) = passed {
            assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        }
        let left = grants(&app, &fixture.admin_token, &org).await.unwrap();
        assert!(left.is_empty(), "a grant outlived its parent: {left:?}");
    }
    app.finish().await;
}

/// Issue 13, invariants under concurrency: the organisation's only two
/// organisation administrators take each other's role at the same moment.
/// One demotion wins; the other finds the last administrator and is refused.
async fn two_administrators_demoting_each_other_leave_one(backend: Backend) {
    let app = TestApp::start(backend).await;
    for _ in 0..3 {
        let fixture = app.org_with_admin().await;
        let (second, second_token) = app.member(&fixture, "Second", &[pb::Role::OrganisationAdmin]).await;
        let demote = |token: String, user: pb::User| {
            let mut users = app.users();
            async move {
                users
                    .update_user(req(
                        &token,
                        pb::UpdateUserRequest {
                            user: Some(pb::User {
                                roles: vec![pb::Role::User as i32],
                                etag: String::new(),
                                ..user
                            }),
                            update_mask: Some(FieldMask {
                                paths: vec!["roles".into()],
                            }),
                            cpr: String::new(),
                        },
                    ))
                    .await
            }
        };
        let (first, other) = tokio::join!(
            demote(fixture.admin_token.clone(), second.clone()),
            demote(second_token, fixture.admin.clone())
        );
        let succeeded = [first.is_ok(), other.is_ok()].iter().filter(|ok| **ok).count();
        assert!(succeeded <= 1, "both demotions went through: {first:?} / {other:?}");
        for result in [first, other] {
            if let Err(status) = result {
                assert!(
                    reason(&status) == "LAST_ORGANISATION_ADMIN" || status.code() == Code::PermissionDenied,
                    "{status:?}"
                );
            }
        }
        let administrators = app
            .users()
            .list_users(req(
                OPERATOR_TOKEN,
                pb::ListUsersRequest {
                    organisation_id: fixture.org.id.clone(),
                    role: pb::Role::OrganisationAdmin as i32,
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .users;
        assert_eq!(administrators.len(), 1, "{administrators:?}");
    }
    app.finish().await;
}

fn level_request(level: i32, unit_id: &str, reason: &str) -> pb::RequestRightsRequest {
    pb::RequestRightsRequest {
        requested: Some(pb::request_rights_request::Requested::AdminLevel(
            pb::RequestedAdminLevel {
                level,
                unit_id: unit_id.to_owned(),
            },
        )),
        reason: reason.to_owned(),
    }
}

fn right_request(right: &str, reason: &str) -> pb::RequestRightsRequest {
    pb::RequestRightsRequest {
        requested: Some(pb::request_rights_request::Requested::Grant(pb::RequestedGrant {
            right: right.to_owned(),
            actions: vec![READ],
            unit_id: String::new(),
        })),
        reason: reason.to_owned(),
    }
}

async fn rights_kind_notifications(app: &TestApp, token: &str) -> usize {
    app.notes()
        .list_notifications(req(token, pb::ListNotificationsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .notifications
        .into_iter()
        .filter(|n| n.kind == pb::NotificationKind::RightsRequest as i32)
        .count()
}

/// R-ACC-9: a member asks for a level (and a right) with a reason; a rights
/// administrator is told, decides, and the level is applied with the
/// decider's rights; the requester is told; nobody decides their own.
async fn rights_requests_are_decided_by_a_colleague_and_applied(backend: Backend) {
    let app = TestApp::start(backend).await;
    let w = units(&app).await;
    let org = w.fixture.org.id.clone();
    let (rights_admin, rights) = app.member(&w.fixture, "Rights", &[pb::Role::RightsAdmin]).await;
    let (asker, asker_token) = app.member_in(&w.fixture, "Asker", &w.north.id).await;
    let (_, other_token) = app.member(&w.fixture, "Other", &[]).await;
    let reason = "Jeg skal oprette sæsonarbejdere i Nord";
    let ask = |token: String, request: pb::RequestRightsRequest| {
        let mut access = app.access();
        async move {
            access
                .request_rights(req(&token, request))
                .await
                .map(|r| r.into_inner().rights_request.expect("request"))
        }
    };
    let decide = |token: String, id: String, approve: bool| {
        let mut access = app.access();
        async move {
            access
                .decide_rights_request(req(
                    &token,
                    pb::DecideRightsRequestRequest {
                        id,
                        approve,
                        note: "Ok for sæsonen".into(),
                    },
                ))
                .await
                .map(|r| r.into_inner().rights_request.expect("request"))
        }
    };

    let before = app.fingerprint().await;
    for (request, field) in [
        (level_request(3, &w.north.id, "kort"), "reason"),
        (level_request(9, &w.north.id, reason), "admin_level.level"),
        (
            level_request(3, &uuid::Uuid::now_v7().to_string(), reason),
            "admin_level.unit_id",
        ),
        (right_request("Tax VAT", reason), "grant.right"),
        (
            pb::RequestRightsRequest {
                requested: None,
                reason: reason.into(),
            },
            "requested",
        ),
    ] {
        let status = assert_code(ask(asker_token.clone(), request).await, Code::InvalidArgument);
        assert_eq!(bad_fields(&status), [field]);
    }
    assert!(app.fingerprint().await == before, "refused requests changed data");

    let asked = ask(asker_token.clone(), level_request(3, &w.north.id, reason))
        .await
        .expect("request");
    assert_eq!(asked.state, pb::RightsRequestState::Open as i32);
    let again = assert_code(
        ask(asker_token.clone(), level_request(3, &w.north.id, reason)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason_of(&again), "RIGHTS_REQUEST_OPEN");
    assert_eq!(
        rights_kind_notifications(&app, &rights).await,
        1,
        "the rights administrator is told"
    );

    // Neither a plain member nor the requester decides; another does.
    let before = app.fingerprint().await;
    assert_code(
        decide(other_token.clone(), asked.id.clone(), true).await,
        Code::PermissionDenied,
    );
    assert_code(
        decide(asker_token.clone(), asked.id.clone(), true).await,
        Code::PermissionDenied,
    );
    assert!(app.fingerprint().await == before);
    let approved = decide(rights.clone(), asked.id.clone(), true).await.expect("approve");
    assert_eq!(approved.state, pb::RightsRequestState::Approved as i32);
    assert_eq!(approved.decision_note, "Ok for sæsonen");
    let me = app.who_am_i(&asker_token).await.unwrap();
    assert_eq!(me.admin_levels.len(), 1, "the approval applied the level: {me:?}");
    assert_eq!(me.admin_levels[0].unit_id, w.north.id);
    let decided_again = assert_code(
        decide(rights.clone(), asked.id.clone(), false).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason_of(&decided_again), "RIGHTS_REQUEST_DECIDED");
    assert_eq!(
        rights_kind_notifications(&app, &asker_token).await,
        1,
        "the requester is told"
    );
    let admin = w.fixture.admin_token.clone();
    for activity in [
        pb::HistoryActivity::RightsRequested,
        pb::HistoryActivity::RightsRequestApproved,
        pb::HistoryActivity::AdminLevelGranted,
    ] {
        assert_eq!(
            app.history_of(&admin, &asker.id, activity).await.len(),
            1,
            "{activity:?}"
        );
    }

    // A rejected right is not granted; a rights administrator's own request
    // waits for a colleague (here the organisation administrator).
    let right = ask(asker_token.clone(), right_request("docs.read", reason))
        .await
        .unwrap();
    let rejected = decide(rights.clone(), right.id.clone(), false).await.unwrap();
    assert_eq!(rejected.state, pb::RightsRequestState::Rejected as i32);
    assert!(grants(&app, &admin, &org).await.unwrap().is_empty());
    let own = ask(rights.clone(), right_request("docs.read", reason)).await.unwrap();
    assert_code(
        decide(rights.clone(), own.id.clone(), true).await,
        Code::PermissionDenied,
    );
    decide(admin.clone(), own.id.clone(), true)
        .await
        .expect("a colleague approves");
    let held = grants(&app, &admin, &org).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].grantee_user_id, rights_admin.id);

    // Who sees what: the rights administrator all three, the asker their two,
    // another member none.
    let listed = |token: String| {
        let mut access = app.access();
        let org = org.clone();
        async move {
            access
                .list_rights_requests(req(
                    &token,
                    pb::ListRightsRequestsRequest {
                        organisation_id: org,
                        ..Default::default()
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .rights_requests
                .len()
        }
    };
    assert_eq!(listed(rights.clone()).await, 3);
    assert_eq!(listed(asker_token.clone()).await, 2);
    assert_eq!(listed(other_token).await, 0);
    app.finish().await;
}

fn role_request(role: pb::Role) -> pb::RequestRightsRequest {
    pb::RequestRightsRequest {
        requested: Some(pb::request_rights_request::Requested::Role(role as i32)),
        reason: "Jeg overtager brugeradministrationen".into(),
    }
}

/// R-ACC-9: a member asks for a role; organisation administrators (who
/// change roles) are told and decide, a rights administrator cannot; the
/// approval goes through UpdateUser's rules, the workshop's maximum of
/// administrators among them.
async fn a_role_is_asked_for_and_decided_by_an_organisation_administrator(backend: Backend) {
    let app = TestApp::start(backend).await;
    // A workshop: at most 2 organisation administrators, the first one
    // already there.
    let fixture = app.org_with_admin_limits(None, Some(2)).await;
    let (_, rights) = app.member(&fixture, "Rights", &[pb::Role::RightsAdmin]).await;
    let (asker, asker_token) = app.member(&fixture, "Asker", &[]).await;
    let (_, late_token) = app.member(&fixture, "Late", &[]).await;
    let ask = |token: &str, request: pb::RequestRightsRequest| {
        let mut access = app.access();
        let token = token.to_owned();
        async move {
            access
                .request_rights(req(&token, request))
                .await
                .map(|r| r.into_inner().rights_request.expect("request"))
        }
    };
    let decide = |token: &str, id: &str| {
        let mut access = app.access();
        let (token, id) = (token.to_owned(), id.to_owned());
        async move {
            access
                .decide_rights_request(req(
                    &token,
                    pb::DecideRightsRequestRequest {
                        id,
                        approve: true,
                        note: String::new(),
                    },
                ))
                .await
                .map(|r| r.into_inner().rights_request.expect("request"))
        }
    };
    // Two keys: an organisation administrator does not give themselves a
    // role through UpdateUser either.
    let mut me = app.user(&fixture.admin_token, &fixture.admin.id).await;
    me.roles.push(pb::Role::RightsAdmin as i32);
    let own = app
        .users()
        .update_user(req(
            &fixture.admin_token,
            pb::UpdateUserRequest {
                user: Some(me),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["roles".into()],
                }),
                ..Default::default()
            },
        ))
        .await;
    let own = assert_code(own, Code::PermissionDenied);
    assert!(own.message().contains("themselves"), "{own:?}");
    // Every member is a user already: that is no request.
    let plain = assert_code(
        ask(&asker_token, role_request(pb::Role::User)).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&plain), ["role"]);

    let asked = ask(&asker_token, role_request(pb::Role::OrganisationAdmin))
        .await
        .unwrap();
    assert_eq!(
        asked.requested,
        Some(pb::rights_request::Requested::Role(pb::Role::OrganisationAdmin as i32))
    );
    assert_eq!(
        rights_kind_notifications(&app, &fixture.admin_token).await,
        1,
        "the organisation administrator is told"
    );
    assert_eq!(rights_kind_notifications(&app, &rights).await, 0);
    // A rights administrator decides rights, not roles.
    let before = app.fingerprint().await;
    assert_code(decide(&rights, &asked.id).await, Code::PermissionDenied);
    assert!(app.fingerprint().await == before);
    let approved = decide(&fixture.admin_token, &asked.id).await.unwrap();
    assert_eq!(approved.state, pb::RightsRequestState::Approved as i32);
    let roles = app.user(&fixture.admin_token, &asker.id).await.roles;
    assert!(roles.contains(&(pb::Role::OrganisationAdmin as i32)), "{roles:?}");
    // Holding it, they cannot ask for it again.
    let held = assert_code(
        ask(&asker_token, role_request(pb::Role::OrganisationAdmin)).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&held), ["role"]);

    // The workshop is full: a third administrator's approval is refused by
    // the same rule as UpdateUser's, and the request stays open.
    let third = ask(&late_token, role_request(pb::Role::OrganisationAdmin))
        .await
        .unwrap();
    let full = assert_code(decide(&fixture.admin_token, &third.id).await, Code::FailedPrecondition);
    assert_eq!(reason_of(&full), "MAX_ADMINISTRATORS_REACHED");
    let still = app
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
    assert_eq!(still.len(), 1);
    assert_eq!(still[0].id, third.id);

    // Deactivated for a while after asking: the role waits for them, as a
    // level or a grant does; approved now, the worker would bring them
    // back an administrator with no one looking again.
    let (leave, leave_token) = app.member(&fixture, "Orlov", &[]).await;
    let on_leave = ask(&leave_token, role_request(pb::Role::UserAdmin)).await.unwrap();
    app.users()
        .deactivate_user(req(
            &fixture.admin_token,
            pb::DeactivateUserRequest {
                id: leave.id.clone(),
                until: Some(in_ms(86_400_000)),
                ..Default::default()
            },
        ))
        .await
        .expect("on leave");
    let before = app.fingerprint().await;
    let away = assert_code(
        decide(&fixture.admin_token, &on_leave.id).await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason_of(&away), "USER_NOT_ACTIVE");
    assert_eq!(app.fingerprint().await, before, "a refused approval changed data");
    app.finish().await;
}

/// R-ACC-3: a grant's scope may be one resource. A holder on the whole
/// scope passes on one resource of it; a holder on one resource passes on
/// that one only, never the whole scope nor another resource.
async fn a_grant_on_one_resource_passes_on_that_resource_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let org = fixture.org.id.clone();
    let admin = fixture.admin_token.clone();
    let (eva, eva_token) = app.member(&fixture, "Eva", &[]).await;
    let (finn, finn_token) = app.member(&fixture, "Finn", &[]).await;
    let (gert, _) = app.member(&fixture, "Gert", &[]).await;
    let on = |grantee: &pb::User, resource: &str, grantable: &[i32]| pb::CreateGrantRequest {
        resource: resource.to_owned(),
        ..grant_request(grantee, "billing.invoices", "", &[READ], grantable, false)
    };
    let bad = assert_code(
        grant(&app, &admin, on(&eva, "faktura 113", &[])).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&bad), ["resource"]);

    // Eva holds the right on everything, with read to pass on and leave to
    // let others pass it on.
    grant(
        &app,
        &admin,
        grant_request(&eva, "billing.invoices", "", &[READ], &[READ], true),
    )
    .await
    .unwrap();
    // She gives Finn invoice 113 only, which he may pass on.
    let finns = grant(&app, &eva_token, on(&finn, "invoice:2026-113", &[READ]))
        .await
        .unwrap();
    assert_eq!(finns.resource, "invoice:2026-113");
    // Finn passes on invoice 113, and nothing wider or else.
    let before = app.fingerprint().await;
    assert_code(
        grant(&app, &finn_token, on(&gert, "", &[])).await,
        Code::PermissionDenied,
    );
    assert_code(
        grant(&app, &finn_token, on(&gert, "invoice:2026-114", &[])).await,
        Code::PermissionDenied,
    );
    assert!(app.fingerprint().await == before);
    let gerts = grant(&app, &finn_token, on(&gert, "invoice:2026-113", &[]))
        .await
        .unwrap();
    assert_eq!(gerts.parent_grant_id, finns.id);
    let listed = app
        .access()
        .list_grants(req(
            &admin,
            pb::ListGrantsRequest {
                organisation_id: org.clone(),
                resource: "invoice:2026-113".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert_eq!(listed.len(), 2);
    let events = app
        .history_of(&admin, &gert.id, pb::HistoryActivity::GrantCreated)
        .await;
    assert!(
        changed_to(&events[0], "grant").is_some_and(|g| g.contains("resource invoice:2026-113")),
        "{events:?}"
    );
    app.finish().await;
}

/// R-ACC-5: colleagues act as a service account through shares, and being
/// shared with gives no admin rights; so the account holds no admin level
/// and passes none of its rights on. Before, an organisation administrator
/// could give the account level 1, and a user administrator (who grants
/// nothing) could then share it with anyone, whose token acted with
/// level 1 under the account's name.
async fn a_service_account_delegates_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin = fixture.admin_token.clone();
    let (_, user_admin) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (finn, finn_token) = app.member(&fixture, "Finn", &[]).await;
    let (eva, _) = app.member(&fixture, "Eva", &[]).await;
    let account = app
        .service_account(&user_admin, &fixture.org.id)
        .await
        .user
        .expect("user");

    // No level, no rights to pass on or to let others pass on.
    let before = app.fingerprint().await;
    let level = assert_code(
        app.grant_level(&admin, &account.id, 1, "").await,
        Code::FailedPrecondition,
    );
    assert_eq!(reason_of(&level), "SERVICE_ACCOUNT");
    let passing = assert_code(
        grant(
            &app,
            &admin,
            grant_request(&account, "payroll.runs", "", &[READ, EDIT], &[READ], false),
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&passing), ["grantable_actions"]);
    let authorising = assert_code(
        grant(
            &app,
            &admin,
            grant_request(&account, "payroll.runs", "", &[READ], &[], true),
        )
        .await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&authorising), ["may_authorise"]);
    assert_eq!(app.fingerprint().await, before, "refused grants changed data");
    // A right to use is what an account is for.
    grant(
        &app,
        &admin,
        grant_request(&account, "payroll.runs", "", &[READ, EDIT], &[], false),
    )
    .await
    .expect("a right the account uses");

    // A level and grant options stored before the rule count for nothing.
    let (org_id, account_id) = (uuid(&fixture.org.id), uuid(&account.id));
    app.execute_bound(
        "INSERT INTO admin_levels (id, organisation_id, user_id, level, unit_id, scope_key, granted_by, granted_at) \
         VALUES ($1, $2, $3, 1, NULL, '', 'legacy', 1)",
        vec![uuid::Uuid::now_v7().into(), org_id.into(), account_id.into()],
    )
    .await;
    app.execute_bound(
        "INSERT INTO grants (id, organisation_id, grantee_id, right_name, unit_id, can_read, can_edit, passes_read, \
         passes_edit, may_authorise, parent_id, granter_id, granted_by, granted_at, grantee_group_id, resource) \
         VALUES ($1, $2, $3, 'tax.vat', NULL, TRUE, TRUE, TRUE, TRUE, TRUE, NULL, NULL, 'legacy', 1, NULL, NULL)",
        vec![uuid::Uuid::now_v7().into(), org_id.into(), account_id.into()],
    )
    .await;
    // Finn acts as the account with a token he made through his share.
    app.access()
        .share_access(req(
            &user_admin,
            pb::ShareAccessRequest {
                owner_user_id: account.id.clone(),
                grantee_user_id: finn.id.clone(),
                access: pb::ShareAccessLevel::Edit as i32,
            },
        ))
        .await
        .expect("shared to edit");
    let token = app
        .auth()
        .create_api_token(acting_as(
            &account.id,
            req(
                &finn_token,
                pb::CreateApiTokenRequest {
                    user_id: account.id.clone(),
                    name: "lønkørsel".into(),
                    ..Default::default()
                },
            ),
        ))
        .await
        .expect("the account's token")
        .into_inner()
        .secret;
    let before = app.fingerprint().await;
    let renamed = app
        .users()
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: eva.id.clone(),
                    surname: "Overtaget".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["surname".into()],
                }),
                ..Default::default()
            },
        ))
        .await;
    assert_code(renamed, Code::PermissionDenied);
    assert_code(app.grant_level(&token, &eva.id, 4, "").await, Code::PermissionDenied);
    assert_code(
        grant(&app, &token, grant_request(&eva, "tax.vat", "", &[READ], &[], false)).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "the account delegated");
    app.finish().await;
}

fn uuid(id: &str) -> uuid::Uuid {
    id.parse().expect("a uuid")
}

/// R-AUTH-1 for those who delegate: whoever moves a person's address to a
/// mailbox of their own can reset the password and sign in as them. For a
/// person who holds an admin level or may pass rights on, that hands over
/// what they may give: a user administrator (who grants nothing) took over
/// a level 1 and granted levels, or took over a holder of a right to pass
/// on and passed it to themselves. So how such a person signs in is
/// changed only by someone who may change roles, as an administrator's is.
async fn how_a_person_who_delegates_signs_in_is_an_administrators_call(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin = fixture.admin_token.clone();
    let (_, user_admin) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let (lars, _) = app.member(&fixture, "Lars", &[]).await;
    let (ida, _) = app.member(&fixture, "Ida", &[]).await;
    let (bo, _) = app.member(&fixture, "Bo", &[]).await;
    app.grant_level(&admin, &lars.id, 3, "").await.expect("level 3");
    grant(
        &app,
        &admin,
        grant_request(&ida, "payroll.runs", "", &[READ], &[READ], false),
    )
    .await
    .expect("a right Ida may pass on");
    grant(
        &app,
        &admin,
        grant_request(&bo, "payroll.runs", "", &[READ], &[], false),
    )
    .await
    .expect("a right Bo only uses");
    let update = |token: String, user: &pb::User, path: &str, value: String| {
        let app = &app;
        let mut changed = pb::User {
            id: user.id.clone(),
            ..Default::default()
        };
        match path {
            "email" => changed.email = value,
            _ => changed.surname = value,
        }
        let path = path.to_owned();
        async move {
            app.users()
                .update_user(req(
                    &token,
                    pb::UpdateUserRequest {
                        user: Some(changed),
                        update_mask: Some(FieldMask { paths: vec![path] }),
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    let before = app.fingerprint().await;
    for person in [&lars, &ida] {
        let status = assert_code(
            update(user_admin.clone(), person, "email", unique_email("ulla.postkasse")).await,
            Code::PermissionDenied,
        );
        assert!(status.message().contains("signs in"), "{}", status.message());
    }
    assert_eq!(app.fingerprint().await, before, "a refused address change changed data");
    // The rest of their record is the user administrator's as before; so
    // is the address of one who only uses a right.
    update(user_admin.clone(), &ida, "surname", "Nielsen".into())
        .await
        .expect("a new surname");
    update(user_admin.clone(), &bo, "email", unique_email("bo.ny"))
        .await
        .expect("the address of one who passes nothing on");
    // An organisation administrator may.
    update(admin.clone(), &lars, "email", unique_email("lars.ny"))
        .await
        .expect("an organisation administrator changes it");

    // Done the other way round: the user administrator moves Bo's address
    // to a mailbox of their own while he delegates nothing, then he starts
    // to (a level, a right to pass on, a group holding one). The waiting
    // change ends there: its link no longer works, and his address stays.
    let verify = |token: String| {
        let mut users = app.users();
        async move { users.verify_email(req("", pb::VerifyEmailRequest { token })).await }
    };
    let group = app
        .access()
        .create_group(req(
            &admin,
            pb::CreateGroupRequest {
                organisation_id: fixture.org.id.clone(),
                name: "Lønkontoret".into(),
                description: "Giver lønkørsler videre".into(),
            },
        ))
        .await
        .expect("a group")
        .into_inner()
        .group
        .expect("group")
        .id;
    grant(
        &app,
        &admin,
        pb::CreateGrantRequest {
            grantee_user_id: String::new(),
            grantee_group_id: group.clone(),
            ..grant_request(&bo, "payroll.runs", "", &[READ], &[READ], false)
        },
    )
    .await
    .expect("the group may pass the right on");
    let new_group = |name: &'static str| {
        let mut access = app.access();
        let request = pb::CreateGroupRequest {
            organisation_id: fixture.org.id.clone(),
            name: name.into(),
            description: "Et hold".into(),
        };
        let admin = admin.clone();
        async move {
            access
                .create_group(req(&admin, request))
                .await
                .expect("a group")
                .into_inner()
                .group
                .expect("group")
                .id
        }
    };
    let add_member = |token: String, group: String, person: String| {
        let mut access = app.access();
        async move {
            access
                .add_group_member(req(
                    &token,
                    pb::AddGroupMemberRequest {
                        group_id: group,
                        user_id: person,
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    let team = new_group("Holdet").await;
    for (name, delegation) in [
        ("Ole", "level"),
        ("Pia", "grant"),
        ("Rie", "group"),
        ("Tor", "grant to the group"),
    ] {
        let (person, _) = app.member(&fixture, name, &[]).await;
        if delegation == "grant to the group" {
            add_member(user_admin.clone(), team.clone(), person.id.clone())
                .await
                .expect("added to a group that passes nothing on");
        }
        let mailbox = unique_email("ulla.egen");
        update(user_admin.clone(), &person, "email", mailbox.clone())
            .await
            .expect("allowed while the person delegates nothing");
        let link = app.mailed_token("email_verification", &mailbox).await;
        match delegation {
            "level" => {
                app.grant_level(&admin, &person.id, 1, "").await.expect("level 1");
            }
            "grant" => {
                grant(
                    &app,
                    &admin,
                    grant_request(&person, "payroll.runs", "", &[READ], &[READ], false),
                )
                .await
                .expect("a right to pass on");
            }
            "group" => {
                // Not by the user administrator: joining the group makes
                // the person delegate, and who may have set up how they
                // sign in must not (two keys, below).
                let before = app.fingerprint().await;
                let status = assert_code(
                    add_member(user_admin.clone(), group.clone(), person.id.clone()).await,
                    Code::PermissionDenied,
                );
                assert!(status.message().contains("pass rights on"), "{}", status.message());
                assert_eq!(app.fingerprint().await, before, "a refused add changed data");
                add_member(admin.clone(), group.clone(), person.id.clone())
                    .await
                    .expect("an organisation administrator adds them");
            }
            _ => {
                grant(
                    &app,
                    &admin,
                    pb::CreateGrantRequest {
                        grantee_user_id: String::new(),
                        grantee_group_id: team.clone(),
                        ..grant_request(&bo, "payroll.runs", "", &[READ], &[READ], false)
                    },
                )
                .await
                .expect("the group may pass the right on");
            }
        }
        assert_code(verify(link).await, Code::FailedPrecondition);
        let now = app
            .users()
            .get_user(req(&admin, pb::GetUserRequest { id: person.id.clone() }))
            .await
            .expect("the person")
            .into_inner()
            .user
            .expect("user");
        assert_eq!(
            (now.email.as_str(), now.pending_email.as_str()),
            (person.email.as_str(), ""),
            "{delegation}"
        );
    }
    // A unit whose system group may pass a right on makes whoever is placed
    // in it delegate: moved there together with a new address, the user
    // administrator is refused; moved there after the address changed,
    // the waiting change ends.
    let plant = app
        .orgs()
        .create_unit(req(
            &admin,
            pb::CreateUnitRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::UnitKind::ProductionUnit as i32,
                name: "Fabrik Vejle".into(),
                number: "1012345678".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("a production unit")
        .into_inner()
        .unit
        .expect("unit");
    let system_group = app
        .access()
        .list_groups(req(
            &admin,
            pb::ListGroupsRequest {
                organisation_id: fixture.org.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("groups")
        .into_inner()
        .groups
        .into_iter()
        .find(|g| g.unit_id == plant.id)
        .expect("the unit's system group");
    grant(
        &app,
        &admin,
        pb::CreateGrantRequest {
            grantee_user_id: String::new(),
            grantee_group_id: system_group.id.clone(),
            ..grant_request(&bo, "payroll.runs", "", &[READ], &[READ], false)
        },
    )
    .await
    .expect("the unit's people may pass the right on");
    // Nor does a user administrator create a person there: the activation
    // (a code to the creator, a link to an address they chose) would hand
    // over someone who delegates from the start.
    let in_plant = || pb::CreateUserRequest {
        unit_id: plant.id.clone(),
        ..new_user(&fixture.org.id, "Vagn", &[])
    };
    let before = app.fingerprint().await;
    assert_code(
        app.users().create_user(req(&user_admin, in_plant())).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "the refused creation changed data");
    app.users()
        .create_user(req(&admin, in_plant()))
        .await
        .expect("an organisation administrator creates them there");
    // A service account delegates nothing, wherever it is placed.
    app.users()
        .create_user(req(
            &user_admin,
            pb::CreateUserRequest {
                organisation_id: fixture.org.id.clone(),
                first_name: "Lager".into(),
                surname: "Integration".into(),
                email: unique_email("lager-api"),
                service_account: true,
                unit_id: plant.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("a service account in the plant");
    let (uma, _) = app.member(&fixture, "Uma", &[]).await;
    let move_to_plant = |token: String, email: Option<String>| {
        let mut users = app.users();
        let mut paths = vec!["unit_id".to_string()];
        let mut user = pb::User {
            id: uma.id.clone(),
            unit_id: plant.id.clone(),
            ..Default::default()
        };
        if let Some(email) = email {
            user.email = email;
            paths.push("email".into());
        }
        async move {
            users
                .update_user(req(
                    &token,
                    pb::UpdateUserRequest {
                        user: Some(user),
                        update_mask: Some(FieldMask { paths }),
                        ..Default::default()
                    },
                ))
                .await
        }
    };
    let before = app.fingerprint().await;
    assert_code(
        move_to_plant(user_admin.clone(), Some(unique_email("ulla.egen"))).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "the refused move changed data");
    let mailbox = unique_email("ulla.egen");
    update(user_admin.clone(), &uma, "email", mailbox.clone())
        .await
        .expect("allowed while Uma delegates nothing");
    let link = app.mailed_token("email_verification", &mailbox).await;
    // Moved alone, too: the user administrator may have set up how Uma
    // signs in (below).
    let before = app.fingerprint().await;
    let status = assert_code(move_to_plant(user_admin.clone(), None).await, Code::PermissionDenied);
    assert!(status.message().contains("pass rights on"), "{}", status.message());
    assert_eq!(app.fingerprint().await, before, "the refused move changed data");
    move_to_plant(admin.clone(), None).await.expect("moved to the plant");
    assert_code(verify(link).await, Code::FailedPrecondition);
    // Moved there by an organisation administrator together with another
    // change of how they sign in (a username): the waiting address change
    // ends too (only a new address used to end it).
    let (ulf, _) = app.member(&fixture, "Ulf", &[]).await;
    let mailbox = unique_email("ulla.egen");
    update(user_admin.clone(), &ulf, "email", mailbox.clone())
        .await
        .expect("allowed while Ulf delegates nothing");
    let link = app.mailed_token("email_verification", &mailbox).await;
    app.users()
        .update_user(req(
            &admin,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    id: ulf.id.clone(),
                    unit_id: plant.id.clone(),
                    username: "ulf.fabrik".into(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["unit_id".into(), "username".into()],
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("moved with a new username");
    assert_code(verify(link).await, Code::FailedPrecondition);

    // A unit moved under the plant brings its people into the plant's
    // system group: what was waiting for them ends too.
    let store = app
        .orgs()
        .create_unit(req(
            &admin,
            pb::CreateUnitRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::UnitKind::Department as i32,
                name: "Lager".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("a unit")
        .into_inner()
        .unit
        .expect("unit");
    let yrsa_request = pb::CreateUserRequest {
        unit_id: store.id.clone(),
        ..new_user(&fixture.org.id, "Yrsa", &[])
    };
    let yrsa_cpr = yrsa_request.cpr.clone();
    let yrsa = app.created_user(&user_admin, yrsa_request).await;
    let yrsa_link = app.activation_link_token(&yrsa.email).await;
    app.orgs()
        .update_unit(req(
            &admin,
            pb::UpdateUnitRequest {
                unit: Some(pb::Unit {
                    id: store.id.clone(),
                    parent_id: plant.id.clone(),
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["parent_id".into()],
                }),
            },
        ))
        .await
        .expect("the store moved under the plant");
    let activated = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                token: yrsa_link,
                cpr: yrsa_cpr,
                ..Default::default()
            },
        ))
        .await;
    assert_code(activated, Code::FailedPrecondition);

    // A pending person who delegates is listed back by a user
    // administrator's BatchSendActivation, not mailed a link.
    let sif_request = new_user(&fixture.org.id, "Sif", &[]);
    let sif_cpr = sif_request.cpr.clone();
    let sif = app.created_user(&user_admin, sif_request).await;
    let sif_link = app.activation_link_token(&sif.email).await;
    app.grant_level(&admin, &sif.id, 3, "")
        .await
        .expect("level 3 while pending");
    // The link the user administrator's creation mailed (to an address
    // they chose, for a CPR number they know) ends; no new one by itself.
    let activated = app
        .users()
        .activate_user(req(
            "",
            pb::ActivateUserRequest {
                token: sif_link.clone(),
                cpr: sif_cpr,
                ..Default::default()
            },
        ))
        .await;
    assert_code(activated, Code::FailedPrecondition);
    assert_eq!(app.activation_link_token(&sif.email).await, sif_link);
    let batch = app
        .imports()
        .batch_send_activation(req(
            &user_admin,
            pb::BatchSendActivationRequest {
                organisation_id: fixture.org.id.clone(),
                user_ids: vec![sif.id.clone()],
                ..Default::default()
            },
        ))
        .await
        .expect("the batch")
        .into_inner();
    assert_eq!(batch.needs_administrator_user_ids, [sif.id.as_str()]);
    app.finish().await;
}

/// A grant or admin level on a unit that is deleted while the write waits
/// for the organisation's lock: the unit was checked before the write's
/// transaction, so the insert met a missing unit (INTERNAL, from its
/// foreign key). Read again under the lock, the answer is NOT_FOUND and
/// nothing is written. (The deletion in progress is played by a session
/// that holds the organisation's lock and has deleted the unit's row.)
/// PostgreSQL only: SQLite has one writer at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_deleted_while_a_grant_on_it_waits_is_not_found() {
    use std::time::Duration;
    let app = TestApp::start(Backend::Postgres).await;
    let fixture = app.org_with_admin().await;
    let admin = fixture.admin_token.clone();
    let (member, _) = app.member_in(&fixture, "Anna", "").await;
    for kind in ["grant", "level"] {
        let unit = app.unit(&fixture, &format!("Doomed {kind}"), "").await;
        let deletion = app
            .in_progress(&[
                format!("SELECT 1 FROM organisations WHERE id = '{}' FOR UPDATE", fixture.org.id),
                format!("DELETE FROM units WHERE id = '{}'", unit.id),
            ])
            .await;
        let writing = {
            let (mut access, admin, member, unit) = (app.access(), admin.clone(), member.clone(), unit.id.clone());
            tokio::spawn(async move {
                match kind {
                    "grant" => access
                        .create_grant(req(
                            &admin,
                            grant_request(&member, "tax.vat-returns", &unit, &[READ], &[], false),
                        ))
                        .await
                        .map(|_| ()),
                    _ => access
                        .grant_admin_level(req(
                            &admin,
                            pb::GrantAdminLevelRequest {
                                user_id: member.id.clone(),
                                level: 3,
                                unit_id: unit,
                            },
                        ))
                        .await
                        .map(|_| ()),
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!writing.is_finished(), "{kind}: the write did not wait for the lock");
        deletion.commit().await;
        let status = assert_code(writing.await.unwrap(), Code::NotFound);
        assert!(status.message().contains(&unit.id), "{kind}: {status:?}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM grants").await, 0);
    assert_eq!(app.count("SELECT COUNT(*) FROM admin_levels").await, 0);
    app.finish().await;
}

/// Two keys against a stand-in: a person created with a birth date has
/// their activation code handed back to whoever created them, who can
/// activate them and sign in as them. That very caller may not then make
/// them delegate (an admin level, a right to pass on, directly or through
/// a group): a level 1 would keep a level after their own was taken away
/// and grant it back through the stand-in; a rights and user
/// administrator would grant themselves through it. A colleague may.
async fn a_stand_in_gets_no_delegation_from_whoever_holds_its_code(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin = fixture.admin_token.clone();
    let coded = |name: &str| pb::CreateUserRequest {
        cpr: String::new(),
        birth_date: "1990-06-07".into(),
        ..new_user(&fixture.org.id, name, &[])
    };
    let create = |token: String, request: pb::CreateUserRequest| {
        let mut users = app.users();
        async move {
            let created = users
                .create_user(req(&token, request))
                .await
                .expect("created")
                .into_inner();
            assert!(!created.activation_code.is_empty(), "the code came back to the creator");
            created.user.expect("user")
        }
    };
    // A level 1 and the person they created.
    let (lone, lone_token) = app.member(&fixture, "Lone", &[]).await;
    app.grant_level(&admin, &lone.id, 1, "").await.expect("level 1");
    let stand_in = create(lone_token.clone(), coded("Stedfortræder")).await;
    let before = app.fingerprint().await;
    let refused = assert_code(
        app.grant_level(&lone_token, &stand_in.id, 3, "").await,
        Code::PermissionDenied,
    );
    assert!(refused.message().contains("two keys"), "{}", refused.message());
    assert_eq!(app.fingerprint().await, before, "a refused level changed data");
    // Nor after asking for a new code of someone another created.
    let other = create(admin.clone(), coded("Anden")).await;
    app.users()
        .create_activation_code(req(
            &lone_token,
            pb::CreateActivationCodeRequest {
                user_id: other.id.clone(),
            },
        ))
        .await
        .expect("a new code, to Lone");
    assert_code(
        app.grant_level(&lone_token, &other.id, 4, "").await,
        Code::PermissionDenied,
    );
    // Nor for a CPR person Lone created: the link went to the address Lone
    // typed (a mailbox of Lone's, with a CPR number made up, would do).
    let cpr_stand_in = app
        .users()
        .create_user(req(&lone_token, new_user(&fixture.org.id, "Cpr", &[])))
        .await
        .expect("created")
        .into_inner()
        .user
        .expect("user");
    assert_code(
        app.grant_level(&lone_token, &cpr_stand_in.id, 4, "").await,
        Code::PermissionDenied,
    );
    // Nor for a person a colleague created whose address (and CPR number)
    // Lone changed while they waited: the new link went to Lone's mailbox.
    let redirected = app
        .created_user(&admin, new_user(&fixture.org.id, "Omdirigeret", &[]))
        .await;
    let own_mailbox = unique_email("lones-egen");
    let made_up_cpr = unique_cpr();
    app.users()
        .update_user(req(
            &lone_token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    email: own_mailbox.clone(),
                    ..redirected.clone()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["email".into(), "cpr".into()],
                }),
                cpr: made_up_cpr.clone(),
            },
        ))
        .await
        .expect("a pending person's address changed");
    app.activate_by_link(&own_mailbox, &made_up_cpr).await;
    let before = app.fingerprint().await;
    assert_code(
        app.grant_level(&lone_token, &redirected.id, 4, "").await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "a refused level changed data");
    // A colleague may; and Lone may for a person a colleague created.
    app.grant_level(&admin, &stand_in.id, 3, "")
        .await
        .expect("a colleague's grant");
    let (cpr_person, _) = app.member(&fixture, "Cecilie", &[]).await;
    app.grant_level(&lone_token, &cpr_person.id, 3, "")
        .await
        .expect("created by a colleague");

    // A rights and user administrator and the person they created.
    let (rasmus, rasmus_token) = app
        .member(&fixture, "Rasmus", &[pb::Role::RightsAdmin, pb::Role::UserAdmin])
        .await;
    let _ = rasmus;
    let puppet = create(rasmus_token.clone(), coded("Dukke")).await;
    let before = app.fingerprint().await;
    assert_code(
        grant(
            &app,
            &rasmus_token,
            grant_request(&puppet, "payroll.runs", "", &[READ], &[READ], false),
        )
        .await,
        Code::PermissionDenied,
    );
    assert_code(
        grant(
            &app,
            &rasmus_token,
            grant_request(&puppet, "payroll.runs", "", &[READ], &[], true),
        )
        .await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "a refused grant changed data");
    // A right it only uses is no delegation.
    grant(
        &app,
        &rasmus_token,
        grant_request(&puppet, "payroll.runs", "", &[READ], &[], false),
    )
    .await
    .expect("a right to use");
    // Through a group: added while the group passes nothing on, then the
    // group given a right to pass on.
    let group = app
        .access()
        .create_group(req(
            &admin,
            pb::CreateGroupRequest {
                organisation_id: fixture.org.id.clone(),
                name: "Lønholdet".into(),
                description: "Kører løn".into(),
            },
        ))
        .await
        .expect("a group")
        .into_inner()
        .group
        .expect("group")
        .id;
    app.access()
        .add_group_member(req(
            &rasmus_token,
            pb::AddGroupMemberRequest {
                group_id: group.clone(),
                user_id: puppet.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("added to a group that passes nothing on");
    let to_group = pb::CreateGrantRequest {
        grantee_user_id: String::new(),
        grantee_group_id: group.clone(),
        ..grant_request(&puppet, "payroll.runs", "", &[READ], &[READ], false)
    };
    let before = app.fingerprint().await;
    assert_code(
        grant(&app, &rasmus_token, to_group.clone()).await,
        Code::PermissionDenied,
    );
    assert_eq!(app.fingerprint().await, before, "a refused group grant changed data");
    grant(&app, &admin, to_group)
        .await
        .expect("a colleague's grant to the group");
    app.finish().await;
}

/// AIP-155: a grant whose answer was lost is sent again with its request
/// id: the retry gets the first grant. A second, identical grant would
/// outlive the one the client knows and revokes, and keep the right. The
/// same id with another request, or from another caller, is refused.
async fn a_retried_grant_is_made_once(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let (bo, _) = app.member(&fixture, "Bo", &[]).await;
    let (_, other_admin) = app.member(&fixture, "Olga", &[pb::Role::OrganisationAdmin]).await;
    let asked = pb::CreateGrantRequest {
        request_id: "grant-faktura-bo".into(),
        ..grant_request(&bo, "billing.invoices", "", &[READ], &[], false)
    };
    let first = grant(&app, &fixture.admin_token, asked.clone()).await.expect("granted");
    let again = grant(&app, &fixture.admin_token, asked.clone())
        .await
        .expect("the retry");
    assert_eq!(again.id, first.id, "a retry made a second grant");
    let held = app
        .row_where("SELECT COUNT(*) FROM grants WHERE grantee_id =", bo.id.parse().unwrap())
        .await
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(held, 1);

    let before = app.fingerprint().await;
    for (token, request) in [
        (
            &fixture.admin_token,
            pb::CreateGrantRequest {
                right: "billing.payments".into(),
                ..asked.clone()
            },
        ),
        (&other_admin, asked.clone()),
    ] {
        let reused = assert_code(grant(&app, token, request).await, Code::AlreadyExists);
        assert_eq!(reason_of(&reused), "REQUEST_ID_REUSED");
    }
    assert_eq!(app.fingerprint().await, before, "a refused retry changed data");
    app.finish().await;
}

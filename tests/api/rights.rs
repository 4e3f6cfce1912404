//! Every RPC × every caller kind × own/other organisation: allowed, or
//! PERMISSION_DENIED (UNAUTHENTICATED without a token; NOT_FOUND for what
//! lies outside the caller's view, see `denial`) with nothing changed.
//! The matrix checks itself: every method of every orgadmin service in the
//! served descriptor set must have a row, and every row a call.

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::FieldMask;
use tonic::{Code, Status};

/// The matrix in parts per backend, so the test threads share it out (one
/// test of it was the run's long pole). The parts are counted from the
/// tests named here and each test takes its own index, so no part can be
/// left without a test.
macro_rules! matrix_in_parts {
    ($($part:ident),+ $(,)?) => {
        both_backends!($($part),+);
        const PART_TESTS: &[&str] = &[$(stringify!($part)),+];
        /// How many parts the matrix is run in: one per test above.
        const PARTS: usize = PART_TESTS.len();
        $(
            async fn $part(backend: Backend) {
                let part = PART_TESTS.iter().position(|name| *name == stringify!($part)).unwrap();
                every_rpc_for_every_role(backend, part).await
            }
        )+
    };
}

matrix_in_parts!(
    every_rpc_for_every_role_part_1,
    every_rpc_for_every_role_part_2,
    every_rpc_for_every_role_part_3,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Operator,
    OrgAdmin,
    UserAdmin,
    RightsAdmin,
    PlainUser,
    OtherOrgAdmin,
    /// Admin level 3 (edits users) on the unit Nord, where every user the
    /// cases act on is placed (R-ACC-2).
    UnitEditor,
    /// Admin level 4 (views users) on Region, Nord's parent: Nord is a
    /// sub-unit of its scope.
    RegionViewer,
    /// Admin level 2 (edits users, grants levels 3-4, shares users'
    /// resources) on Nord.
    UnitDelegator,
    /// Admin level 3 on Syd, Nord's sibling: none of the users is in scope.
    SiblingEditor,
    Nobody,
}

const EVERYONE: &[Who] = &[
    Who::Operator,
    Who::OrgAdmin,
    Who::UserAdmin,
    Who::RightsAdmin,
    Who::PlainUser,
    Who::OtherOrgAdmin,
    Who::UnitEditor,
    Who::RegionViewer,
    Who::UnitDelegator,
    Who::SiblingEditor,
    Who::Nobody,
];

/// A fresh organisation with one user per role, a unit, a deactivated user and
/// a token to revoke; plus another organisation with its administrator. The
/// organisation allows user and organisation certificates and has one of
/// each ORDERED (pickup mailed) and one of each ISSUED: the user ones of the
/// plain user, the organisation ones with its administrator as contact.
struct World {
    org: pb::Organisation,
    unit: pb::Unit,
    plain: pb::User,
    user_admin: pb::User,
    target: pb::User,
    deactivated: pb::User,
    target_token_id: String,
    coded: pb::User,
    coded_code: String,
    pending: pb::User,
    pending_admin: pb::User,
    email_link: String,
    anonymity_request_id: String,
    failed_mail_id: String,
    import_id: String,
    plain_order_id: String,
    plain_pickup: String,
    plain_certificate_id: String,
    org_order_id: String,
    org_certificate_id: String,
    tokens: Vec<(Who, String)>,
    /// The login id of a member who set `TEST_PASSWORD` at activation.
    login_id: String,
    /// The token of a live password reset link of that member.
    reset_token: String,
    /// An active organisation administrator.
    active_admin: pb::User,
    /// The login id of a member of an organisation that requires a second
    /// factor (made once per run: see `with_second_factor_member`).
    code_login_id: String,
    /// Set by `prepare` just before the case that needs it: a fresh login
    /// challenge and its mailed code, the secret of the caller's
    /// authenticator app being enrolled, and a spare session of the
    /// password member.
    challenge: (String, String),
    totp_secret: String,
    spare_session_id: String,
    /// A level 4 on Nord held by a member of Nord, to revoke.
    spare_level_id: String,
    /// A grant the target user holds, to revoke.
    spare_grant_id: String,
    /// An open rights request of the target user, to decide.
    open_rights_request_id: String,
    /// The target user's resources shared (read only) with the plain user,
    /// by the user administrator (R-ACC-5).
    target_share_id: String,
    /// A custom group with the plain user as its member (R-ACC-7).
    group_id: String,
    /// A confirmed request to join the organisation, open (R-ORG-3).
    open_join_request_id: String,
    /// Set by `prepare`: the confirmation token of a fresh request to join.
    join_token: String,
}

/// A request for the right `docs.read`, with `reason`.
fn rights_request(reason: &str) -> pb::RequestRightsRequest {
    pb::RequestRightsRequest {
        requested: Some(pb::request_rights_request::Requested::Grant(pb::RequestedGrant {
            right: "docs.read".into(),
            actions: vec![pb::GrantAction::Read as i32],
            unit_id: String::new(),
        })),
        reason: reason.to_owned(),
    }
}

/// `request` placed in `unit_id`.
fn placed(unit_id: &str, request: pb::CreateUserRequest) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        unit_id: unit_id.to_owned(),
        ..request
    }
}

impl World {
    async fn build(app: &TestApp, certificates: bool) -> Self {
        let fixture = app.org_with_admin().await;
        let other = app.org_with_admin().await;
        // Region > Nord, and Syd beside Region: the users the cases act on
        // are placed in Nord.
        let region = app.unit(&fixture, "Region", "").await;
        let nord = app.unit(&fixture, "Nord", &region.id).await;
        let syd = app.unit(&fixture, "Syd", "").await;
        let member_in = |unit: &pb::Unit, first: &'static str, roles: &'static [pb::Role]| {
            let request = placed(&unit.id, new_user(&fixture.org.id, first, roles));
            app.create_and_activate(&fixture.admin_token, request)
        };
        let (org_admin, org_admin_token) = member_in(&nord, "OrgAdmin", &[pb::Role::OrganisationAdmin]).await;
        let (user_admin, user_admin_token) = member_in(&nord, "UserAdmin", &[pb::Role::UserAdmin]).await;
        let (_, rights_token) = member_in(&nord, "RightsAdmin", &[pb::Role::RightsAdmin]).await;
        let (plain, plain_token) = member_in(&nord, "Plain", &[]).await;
        let mut level_tokens = Vec::new();
        for (who, unit, level) in [
            (Who::UnitEditor, &nord, 3),
            (Who::RegionViewer, &region, 4),
            (Who::SiblingEditor, &syd, 3),
            (Who::UnitDelegator, &nord, 2),
        ] {
            let (holder, token) = member_in(unit, "Level", &[]).await;
            app.grant_level(&fixture.admin_token, &holder.id, level, &unit.id)
                .await
                .expect("grant level");
            level_tokens.push((who, token));
        }
        app.orgs()
            .update_organisation_settings(req(
                &org_admin_token,
                pb::UpdateOrganisationSettingsRequest {
                    settings: Some(pb::OrganisationSettings {
                        organisation_id: fixture.org.id.clone(),
                        certificate_kinds: vec![
                            pb::CertificateKind::Employee as i32,
                            pb::CertificateKind::Organisation as i32,
                        ],
                        join_requests_allowed: true,
                        ..Default::default()
                    }),
                    update_mask: mask(&["certificate_kinds", "join_requests_allowed"]),
                },
            ))
            .await
            .unwrap();
        // Orders and certificates only for the certificate rows: they cost
        // a dozen calls per world, and a world is built again after every
        // allowed call.
        let (plain_order_id, plain_pickup, plain_certificate_id, org_order_id, org_certificate_id) = if certificates {
            let (plain_order_id, plain_pickup) =
                order_with_pickup(app, &user_admin_token, user_order(&fixture.org.id, &plain), &plain).await;
            let plain_certificate_id = issued(
                app,
                &user_admin_token,
                user_order(&fixture.org.id, &plain),
                &plain,
                &plain_token,
            )
            .await;
            let (org_order_id, _) =
                order_with_pickup(app, &org_admin_token, organisation_order(&fixture.org.id), &org_admin).await;
            let org_certificate_id = issued(
                app,
                &org_admin_token,
                organisation_order(&fixture.org.id),
                &org_admin,
                &org_admin_token,
            )
            .await;
            // The first CRL is signed on demand: sign it here, so a GetCrl in a
            // case reads and does not write.
            app.certs()
                .get_crl(req(&org_admin_token, pb::GetCrlRequest {}))
                .await
                .unwrap();
            (
                plain_order_id,
                plain_pickup,
                plain_certificate_id,
                org_order_id,
                org_certificate_id,
            )
        } else {
            Default::default()
        };
        let (_, login_id) = app
            .member_with_password_from(
                &fixture.admin_token,
                placed(&nord.id, new_user(&fixture.org.id, "Password", &[])),
            )
            .await;
        let reset_token = fresh_reset_token(app, &login_id).await;
        let (target, target_session) = member_in(&nord, "Target", &[]).await;
        // Not the target's: a level holder is beyond a level's reach, and
        // the cases act on the target as an ordinary user.
        let (spare, _) = member_in(&nord, "Spare", &[]).await;
        let spare_level_id = app
            .grant_level(&fixture.admin_token, &spare.id, 4, &nord.id)
            .await
            .expect("grant level")
            .id;
        let spare_grant_id = app
            .access()
            .create_grant(req(
                &fixture.admin_token,
                pb::CreateGrantRequest {
                    grantee_user_id: target.id.clone(),
                    right: "docs.read".into(),
                    actions: vec![pb::GrantAction::Read as i32],
                    ..Default::default()
                },
            ))
            .await
            .expect("create grant")
            .into_inner()
            .grant
            .unwrap()
            .id;
        let target_share_id = app
            .access()
            .share_access(req(
                &user_admin_token,
                pb::ShareAccessRequest {
                    owner_user_id: target.id.clone(),
                    grantee_user_id: plain.id.clone(),
                    access: pb::ShareAccessLevel::Read as i32,
                },
            ))
            .await
            .expect("share the target's resources")
            .into_inner()
            .share
            .unwrap()
            .id;
        let open_join_request_id = app
            .access()
            .confirm_join_request(req(
                "",
                pb::ConfirmJoinRequestRequest {
                    token: fresh_join_token(app, &fixture.org.cvr).await,
                },
            ))
            .await
            .expect("confirm a request to join")
            .into_inner()
            .join_request
            .unwrap()
            .id;
        let group_id = app
            .access()
            .create_group(req(
                &org_admin_token,
                pb::CreateGroupRequest {
                    organisation_id: fixture.org.id.clone(),
                    name: "Bogholderi".into(),
                    ..Default::default()
                },
            ))
            .await
            .expect("create group")
            .into_inner()
            .group
            .unwrap()
            .id;
        app.access()
            .add_group_member(req(
                &user_admin_token,
                pb::AddGroupMemberRequest {
                    group_id: group_id.clone(),
                    user_id: plain.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("add group member");
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
        let open_rights_request_id = app
            .access()
            .request_rights(req(&target_session, rights_request("Til fakturaerne i Nord")))
            .await
            .expect("request rights")
            .into_inner()
            .rights_request
            .unwrap()
            .id;
        let (deactivated, _) = member_in(&nord, "Deactivated", &[]).await;
        app.users()
            .deactivate_user(req(
                &fixture.admin_token,
                pb::DeactivateUserRequest {
                    id: deactivated.id.clone(),
                    until: None,
                    reason: String::new(),
                    ..Default::default()
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
                    ..Default::default()
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .unit
            .unwrap();
        let coded_reply = app
            .users()
            .create_user(req(
                &fixture.admin_token,
                pb::CreateUserRequest {
                    cpr: String::new(),
                    birth_date: "1988-08-08".into(),
                    ..placed(&nord.id, new_user(&fixture.org.id, "Coded", &[]))
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let (coded, coded_code) = (coded_reply.user.unwrap(), coded_reply.activation_code);
        // Users still waiting for activation (a plain one and an administrator).
        let pending = app
            .users()
            .create_user(req(
                &fixture.admin_token,
                placed(&nord.id, new_user(&fixture.org.id, "Pending", &[])),
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let pending_admin = app
            .users()
            .create_user(req(
                &fixture.admin_token,
                placed(
                    &nord.id,
                    new_user(&fixture.org.id, "PendingAdmin", &[pb::Role::UserAdmin]),
                ),
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let anonymity_request_id = app
            .users()
            .request_anonymity(req(
                &target_session,
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
        // A change of the plain user's address, waiting for its link.
        let new_address = unique_email("plain.ny");
        app.users()
            .update_user(req(
                &fixture.admin_token,
                pb::UpdateUserRequest {
                    user: Some(pb::User {
                        email: new_address.clone(),
                        ..plain.clone()
                    }),
                    update_mask: mask(&["email"]),
                    cpr: String::new(),
                },
            ))
            .await
            .unwrap();
        let email_link = app.mailed_token("email_verification", &new_address).await;
        // Asked by an administrator: held until this passes.
        app.pass_email_change_holds().await;
        // Park one queued mail as failed, as a 5xx would.
        let claimed = app.domain.claim_due_mails("rights-test", 1, 60_000).await.unwrap();
        let failed_mail_id = claimed[0].claim.id;
        app.domain
            .mark_mail_failed(
                &claimed[0].claim,
                "550 test",
                orgadmin_domain::services::outbox::Failure::Permanent,
                &RETRY,
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
        let import_id = app
            .upload_import(
                &fixture.admin_token,
                import_spec(&fixture.org.id, pb::ImportKind::Create),
                IMPORT_FILE.as_bytes(),
                1 << 20,
            )
            .await
            .unwrap()
            .id;
        World {
            login_id,
            reset_token,
            code_login_id: String::new(),
            challenge: Default::default(),
            totp_secret: String::new(),
            spare_session_id: String::new(),
            spare_level_id,
            spare_grant_id,
            target_share_id,
            group_id,
            open_join_request_id,
            join_token: String::new(),
            open_rights_request_id,
            active_admin: org_admin.clone(),
            import_id,
            plain_order_id,
            plain_pickup,
            plain_certificate_id,
            org_order_id,
            org_certificate_id,
            org,
            unit,
            plain,
            user_admin,
            target,
            deactivated,
            target_token_id,
            coded,
            coded_code,
            pending,
            pending_admin,
            email_link,
            anonymity_request_id,
            failed_mail_id: failed_mail_id.to_string(),
            tokens: [
                (Who::Operator, OPERATOR_TOKEN.to_owned()),
                (Who::OrgAdmin, org_admin_token),
                (Who::UserAdmin, user_admin_token),
                (Who::RightsAdmin, rights_token),
                (Who::PlainUser, plain_token),
                (Who::OtherOrgAdmin, other.admin_token),
                (Who::Nobody, String::new()),
            ]
            .into_iter()
            .chain(level_tokens)
            .collect(),
        }
    }

    fn token(&self, who: Who) -> String {
        self.tokens.iter().find(|(w, _)| *w == who).unwrap().1.clone()
    }

    fn with_second_factor_member(mut self, login_id: &str) -> Self {
        self.code_login_id = login_id.to_owned();
        self
    }
}

/// What a case needs made afresh for each caller, made before the
/// fingerprint is taken (so a denied call is still checked to change
/// nothing). True when it made something (the world is no longer as built).
async fn prepare(app: &TestApp, world: &mut World, rpc: &str, who: Who) -> bool {
    match rpc {
        "VerifyLoginCode" => {
            let login = app.login(&world.code_login_id, TEST_PASSWORD).await.expect("login");
            let code = app.mailed_login_code(&world.code_login_id).await;
            world.challenge = (login.challenge_token, code);
            true
        }
        "ConfirmTotp" => {
            world.totp_secret = match app
                .auth()
                .enroll_totp(req(&world.token(who), pb::EnrollTotpRequest {}))
                .await
            {
                Ok(enrolment) => enrolment.into_inner().secret,
                Err(_) => String::new(),
            };
            true
        }
        "ConfirmJoinRequest" => {
            world.join_token = fresh_join_token(app, &world.org.cvr).await;
            true
        }
        "RevokeSession" => {
            let session = app
                .login(&world.login_id, TEST_PASSWORD)
                .await
                .expect("login")
                .session_token;
            world.spare_session_id = app
                .auth()
                .list_sessions(req(&session, pb::ListSessionsRequest::default()))
                .await
                .expect("own sessions")
                .into_inner()
                .sessions
                .into_iter()
                .find(|s| s.current)
                .expect("the current session")
                .id;
            true
        }
        _ => false,
    }
}

/// The code an authenticator app with `secret` (base32) shows now.
fn app_code(secret: &str) -> String {
    use orgadmin_domain::totp;
    let Some(key) = totp::base32_decode(secret).filter(|k| !k.is_empty()) else {
        return "000000".into();
    };
    totp::code_for_step(&key, totp::step_at(chrono::Utc::now().timestamp()), totp::DIGITS)
}

/// Asks to join the organisation with `cvr` as a new person; returns the
/// confirmation link's token.
async fn fresh_join_token(app: &TestApp, cvr: &str) -> String {
    let email = unique_email("ny");
    app.access()
        .request_to_join(req("", join_request(cvr, &email)))
        .await
        .expect("ask to join");
    app.mailed_token("join_confirmation", &email).await
}

fn join_request(cvr: &str, email: &str) -> pb::RequestToJoinRequest {
    pb::RequestToJoinRequest {
        organisation_cvr: cvr.to_owned(),
        first_name: "Ny".into(),
        surname: "Medarbejder".into(),
        email: email.to_owned(),
        birth_date: "1990-05-17".into(),
        language: 0,
        reason: "Jeg starter på lageret".into(),
    }
}

/// Mails `login_id` a new password reset link; returns its token.
async fn fresh_reset_token(app: &TestApp, login_id: &str) -> String {
    app.request_password_reset(login_id).await;
    app.mailed_token("password_reset", login_id).await
}

/// A user certificate for signing in, held by `holder`.
fn user_order(org: &str, holder: &pb::User) -> pb::OrderCertificateRequest {
    pb::OrderCertificateRequest {
        organisation_id: org.to_owned(),
        kind: pb::CertificateKind::Employee as i32,
        holder_id: holder.id.clone(),
        usages: vec![pb::CertificateUsage::Authentication as i32],
        ..Default::default()
    }
}

/// An organisation certificate for service access; the caller is its contact.
fn organisation_order(org: &str) -> pb::OrderCertificateRequest {
    pb::OrderCertificateRequest {
        organisation_id: org.to_owned(),
        kind: pb::CertificateKind::Organisation as i32,
        label: "Lønsystem".into(),
        usages: vec![pb::CertificateUsage::ServiceAccess as i32],
        ..Default::default()
    }
}

/// Orders as `token`; returns the order's id and the pickup token mailed to
/// `recipient`.
async fn order_with_pickup(
    app: &TestApp,
    token: &str,
    order: pb::OrderCertificateRequest,
    recipient: &pb::User,
) -> (String, String) {
    let id = app
        .certs()
        .order_certificate(req(token, order))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap()
        .id;
    (id, app.mailed_token("certificate_pickup", &recipient.email).await)
}

/// Orders as `token` and picks up as the recipient; returns the ISSUED
/// certificate's id.
async fn issued(
    app: &TestApp,
    token: &str,
    order: pb::OrderCertificateRequest,
    recipient: &pb::User,
    recipient_token: &str,
) -> String {
    let (_, pickup) = order_with_pickup(app, token, order, recipient).await;
    let certificate = app
        .certs()
        .issue_certificate(req(
            recipient_token,
            pb::IssueCertificateRequest {
                token: pickup,
                csr_pem: p256_csr(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    assert_eq!(certificate.state, pb::CertificateState::Issued as i32);
    certificate.id
}

/// A one-row create file.
const IMPORT_FILE: &str = "user_id;cpr;birth_date;email;first_name;surname;username;phone;unit;language;roles;signing_right;identification_means;external_id;legacy_id\r\n;;1990-01-01;fil@firma.dk;Fil;Import;;;;;;;;;\r\n";

fn import_spec(org: &str, kind: pb::ImportKind) -> pb::ImportSpec {
    pb::ImportSpec {
        organisation_id: org.to_owned(),
        kind: kind as i32,
        ..Default::default()
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
                    ..Default::default()
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
                    ..Default::default()
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
                    ..Default::default()
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
                    ..Default::default()
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
                    ..Default::default()
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
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "CreateOwnApiToken" => app
            .auth()
            .create_api_token(req(
                t,
                pb::CreateApiTokenRequest {
                    user_id: world.plain.id.clone(),
                    name: "min".into(),
                    expire_time: None,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "ActivateUser" => app
            .users()
            .activate_user(req(
                t,
                pb::ActivateUserRequest {
                    code: world.coded_code.clone(),
                    birth_date: "1988-08-08".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "VerifyEmail" => app
            .users()
            .verify_email(req(
                t,
                pb::VerifyEmailRequest {
                    token: world.email_link.clone(),
                },
            ))
            .await
            .map(drop),
        "CreateAdministratorToken" => app
            .auth()
            .create_api_token(req(
                t,
                pb::CreateApiTokenRequest {
                    user_id: world.pending_admin.id.clone(),
                    name: "ny".into(),
                    expire_time: None,
                    ..Default::default()
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
        "Login" => app
            .auth()
            .login(req(
                t,
                pb::LoginRequest {
                    login_id: world.login_id.clone(),
                    password: TEST_PASSWORD.into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "Logout" => app.auth().logout(req(t, pb::LogoutRequest {})).await.map(drop),
        "VerifyLoginCode" => app
            .auth()
            .verify_login_code(req(
                t,
                pb::VerifyLoginCodeRequest {
                    challenge_token: world.challenge.0.clone(),
                    code: world.challenge.1.clone(),
                },
            ))
            .await
            .map(drop),
        "EnrollTotp" => app.auth().enroll_totp(req(t, pb::EnrollTotpRequest {})).await.map(drop),
        "ConfirmTotp" => app
            .auth()
            .confirm_totp(req(
                t,
                pb::ConfirmTotpRequest {
                    code: app_code(&world.totp_secret),
                },
            ))
            .await
            .map(drop),
        "ListSessions" | "ListOwnSessions" | "ListAdministratorSessions" => app
            .auth()
            .list_sessions(req(
                t,
                pb::ListSessionsRequest {
                    user_id: match rpc {
                        "ListSessions" => world.plain.id.clone(),
                        "ListAdministratorSessions" => world.active_admin.id.clone(),
                        _ => String::new(),
                    },
                },
            ))
            .await
            .map(drop),
        "RevokeSession" => app
            .auth()
            .revoke_session(req(
                t,
                pb::RevokeSessionRequest {
                    id: world.spare_session_id.clone(),
                },
            ))
            .await
            .map(drop),
        "RemoveAuthenticator" | "RemoveAdministratorAuthenticator" => app
            .users()
            .remove_authenticator(req(
                t,
                pb::RemoveAuthenticatorRequest {
                    user_id: if rpc == "RemoveAuthenticator" {
                        world.plain.id.clone()
                    } else {
                        world.pending_admin.id.clone()
                    },
                },
            ))
            .await
            .map(drop),
        // An unknown login id: allowed for everyone, and it changes nothing
        // (the mail to a known one is in login.rs).
        "RequestPasswordReset" => app
            .auth()
            .request_password_reset(req(
                t,
                pb::RequestPasswordResetRequest {
                    login_id: "nobody@nowhere.invalid".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "ResetPassword" => app
            .auth()
            .reset_password(req(
                t,
                pb::ResetPasswordRequest {
                    token: world.reset_token.clone(),
                    password: "et nyt og langt kodeord".into(),
                },
            ))
            .await
            .map(drop),
        "SendPasswordReset" => app
            .users()
            .send_password_reset(req(
                t,
                pb::SendPasswordResetRequest {
                    user_id: world.plain.id.clone(),
                },
            ))
            .await
            .map(drop),
        "SendAdministratorPasswordReset" => app
            .users()
            .send_password_reset(req(
                t,
                pb::SendPasswordResetRequest {
                    user_id: world.active_admin.id.clone(),
                },
            ))
            .await
            .map(drop),
        "UnlockLogin" => app
            .users()
            .unlock_login(req(
                t,
                pb::UnlockLoginRequest {
                    user_id: world.plain.id.clone(),
                },
            ))
            .await
            .map(drop),
        "UnlockAdministratorLogin" => app
            .users()
            .unlock_login(req(
                t,
                pb::UnlockLoginRequest {
                    user_id: world.pending_admin.id.clone(),
                },
            ))
            .await
            .map(drop),
        "SendActivation" => app
            .users()
            .send_activation(req(
                t,
                pb::SendActivationRequest {
                    user_id: world.pending.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "SendAdministratorActivation" => app
            .users()
            .send_activation(req(
                t,
                pb::SendActivationRequest {
                    user_id: world.pending_admin.id.clone(),
                    ..Default::default()
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
        "MarkNotificationsRead" => app
            .notes()
            .mark_notifications_read(req(
                t,
                pb::MarkNotificationsReadRequest {
                    ids: vec![uuid::Uuid::now_v7().to_string()],
                },
            ))
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
        "CreateImport" => app
            .upload_import(
                t,
                import_spec(&org, pb::ImportKind::Create),
                IMPORT_FILE.as_bytes(),
                1 << 20,
            )
            .await
            .map(drop),
        "CreateLegacyImport" => app
            .upload_import(
                t,
                import_spec(&org, pb::ImportKind::LegacyCreate),
                IMPORT_FILE.as_bytes(),
                1 << 20,
            )
            .await
            .map(drop),
        "GetImport" => app
            .imports()
            .get_import(req(
                t,
                pb::GetImportRequest {
                    id: world.import_id.clone(),
                },
            ))
            .await
            .map(drop),
        "ListImports" => app
            .imports()
            .list_imports(req(
                t,
                pb::ListImportsRequest {
                    organisation_id: org,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "WatchImport" => {
            let mut stream = app
                .imports()
                .watch_import(req(
                    t,
                    pb::WatchImportRequest {
                        id: world.import_id.clone(),
                    },
                ))
                .await?
                .into_inner();
            stream.message().await.map(drop)
        }
        "ListImportErrors" => app
            .imports()
            .list_import_errors(req(
                t,
                pb::ListImportErrorsRequest {
                    id: world.import_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "GetImportReport" => {
            let mut stream = app
                .imports()
                .get_import_report(req(
                    t,
                    pb::GetImportReportRequest {
                        id: world.import_id.clone(),
                    },
                ))
                .await?
                .into_inner();
            stream.message().await.map(drop)
        }
        "CancelImport" => app
            .imports()
            .cancel_import(req(
                t,
                pb::CancelImportRequest {
                    id: world.import_id.clone(),
                },
            ))
            .await
            .map(drop),
        "GetImportTemplate" => app
            .imports()
            .get_import_template(req(
                t,
                pb::GetImportTemplateRequest {
                    kind: pb::ImportKind::Edit as i32,
                    language: pb::Language::Sv as i32,
                },
            ))
            .await
            .map(drop),
        "BatchSendActivation" => app
            .imports()
            .batch_send_activation(req(
                t,
                pb::BatchSendActivationRequest {
                    organisation_id: org,
                    user_ids: vec![world.pending.id.clone()],
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "OrderUserCertificate" => app
            .certs()
            .order_certificate(req(t, user_order(&org, &world.target)))
            .await
            .map(drop),
        "OrderOrganisationCertificate" => app
            .certs()
            .order_certificate(req(t, organisation_order(&org)))
            .await
            .map(drop),
        "IssueCertificate" => app
            .certs()
            .issue_certificate(req(
                t,
                pb::IssueCertificateRequest {
                    token: world.plain_pickup.clone(),
                    csr_pem: p256_csr(),
                },
            ))
            .await
            .map(drop),
        "GetCertificate" => app
            .certs()
            .get_certificate(req(
                t,
                pb::GetCertificateRequest {
                    certificate_id: world.plain_certificate_id.clone(),
                },
            ))
            .await
            .map(drop),
        "SearchCertificates" => app
            .certs()
            .search_certificates(req(
                t,
                pb::SearchCertificatesRequest {
                    organisation_id: org,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "DeleteCertificateOrder" | "DeleteOrganisationCertificateOrder" => app
            .certs()
            .delete_certificate_order(req(
                t,
                pb::DeleteCertificateOrderRequest {
                    certificate_id: if rpc == "DeleteCertificateOrder" {
                        world.plain_order_id.clone()
                    } else {
                        world.org_order_id.clone()
                    },
                },
            ))
            .await
            .map(drop),
        "RenewCertificate" | "RenewOrganisationCertificate" => app
            .certs()
            .renew_certificate(req(
                t,
                pb::RenewCertificateRequest {
                    certificate_id: if rpc == "RenewCertificate" {
                        world.plain_certificate_id.clone()
                    } else {
                        world.org_certificate_id.clone()
                    },
                    csr_pem: p256_renewal_csr(),
                },
            ))
            .await
            .map(drop),
        "RevokeCertificate" | "RevokeOrganisationCertificate" => app
            .certs()
            .revoke_certificate(req(
                t,
                pb::RevokeCertificateRequest {
                    certificate_id: if rpc == "RevokeCertificate" {
                        world.plain_certificate_id.clone()
                    } else {
                        world.org_certificate_id.clone()
                    },
                    reason: pb::RevocationReason::KeyAccessLost as i32,
                    etag: String::new(),
                },
            ))
            .await
            .map(drop),
        "ChangeCertificateContact" | "ChangeOrganisationCertificateContact" => app
            .certs()
            .change_certificate_contact(req(
                t,
                pb::ChangeCertificateContactRequest {
                    certificate_id: if rpc == "ChangeCertificateContact" {
                        world.plain_certificate_id.clone()
                    } else {
                        world.org_certificate_id.clone()
                    },
                    contact_id: world.user_admin.id.clone(),
                    etag: String::new(),
                },
            ))
            .await
            .map(drop),
        "ListCertificateHistory" => app
            .certs()
            .list_certificate_history(req(
                t,
                pb::ListCertificateHistoryRequest {
                    certificate_id: world.plain_certificate_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "ExportCertificates" => {
            let mut stream = app
                .certs()
                .export_certificates(req(
                    t,
                    pb::ExportCertificatesRequest {
                        organisation_id: org,
                        format: pb::ExportFormat::Csv as i32,
                    },
                ))
                .await?
                .into_inner();
            stream.message().await.map(drop)
        }
        "GetCrl" => app.certs().get_crl(req(t, pb::GetCrlRequest {})).await.map(drop),
        // `allowed: false` on a user who may not sign through it: allowed
        // callers get the user back unchanged, so the world stays as it is.
        "SetOrganisationSigning" => app
            .certs()
            .set_organisation_signing(req(
                t,
                pb::SetOrganisationSigningRequest {
                    user_id: world.plain.id.clone(),
                    allowed: false,
                    etag: String::new(),
                },
            ))
            .await
            .map(drop),
        "GrantAdminLevel" => app
            .access()
            .grant_admin_level(req(
                t,
                pb::GrantAdminLevelRequest {
                    user_id: world.target.id.clone(),
                    level: 4,
                    unit_id: String::new(),
                },
            ))
            .await
            .map(drop),
        "ListAdminLevels" => app
            .access()
            .list_admin_levels(req(
                t,
                pb::ListAdminLevelsRequest {
                    organisation_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "RevokeAdminLevel" => app
            .access()
            .revoke_admin_level(req(
                t,
                pb::RevokeAdminLevelRequest {
                    id: world.spare_level_id.clone(),
                },
            ))
            .await
            .map(drop),
        "CreateGrant" => app
            .access()
            .create_grant(req(
                t,
                pb::CreateGrantRequest {
                    grantee_user_id: world.target.id.clone(),
                    right: "docs.edit".into(),
                    actions: vec![pb::GrantAction::Edit as i32],
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "ListGrants" => app
            .access()
            .list_grants(req(
                t,
                pb::ListGrantsRequest {
                    organisation_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "RevokeGrant" => app
            .access()
            .revoke_grant(req(
                t,
                pb::RevokeGrantRequest {
                    id: world.spare_grant_id.clone(),
                },
            ))
            .await
            .map(drop),
        "ShareAccess" => app
            .access()
            .share_access(req(
                t,
                pb::ShareAccessRequest {
                    owner_user_id: world.target.id.clone(),
                    grantee_user_id: world.plain.id.clone(),
                    access: pb::ShareAccessLevel::Edit as i32,
                },
            ))
            .await
            .map(drop),
        "ShareOwnAccess" => {
            // The caller's own resources, with a colleague (the operator,
            // who has none, names the target's).
            let me = app
                .auth()
                .who_am_i(req(t, pb::WhoAmIRequest {}))
                .await
                .map(|r| r.into_inner().user_id)
                .unwrap_or_default();
            let owner = if me.is_empty() { world.target.id.clone() } else { me };
            let grantee = if owner == world.plain.id {
                &world.target
            } else {
                &world.plain
            };
            app.access()
                .share_access(req(
                    t,
                    pb::ShareAccessRequest {
                        owner_user_id: owner,
                        grantee_user_id: grantee.id.clone(),
                        access: pb::ShareAccessLevel::Read as i32,
                    },
                ))
                .await
                .map(drop)
        }
        "ListShares" => app
            .access()
            .list_shares(req(
                t,
                pb::ListSharesRequest {
                    organisation_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "RevokeShare" => app
            .access()
            .revoke_share(req(
                t,
                pb::RevokeShareRequest {
                    id: world.target_share_id.clone(),
                },
            ))
            .await
            .map(drop),
        "CreateGroup" => app
            .access()
            .create_group(req(
                t,
                pb::CreateGroupRequest {
                    organisation_id: org.clone(),
                    name: "Lager".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "ListGroups" => app
            .access()
            .list_groups(req(
                t,
                pb::ListGroupsRequest {
                    organisation_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "DeleteGroup" => app
            .access()
            .delete_group(req(
                t,
                pb::DeleteGroupRequest {
                    id: world.group_id.clone(),
                },
            ))
            .await
            .map(drop),
        "AddGroupMember" => app
            .access()
            .add_group_member(req(
                t,
                pb::AddGroupMemberRequest {
                    group_id: world.group_id.clone(),
                    user_id: world.target.id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "RemoveGroupMember" => app
            .access()
            .remove_group_member(req(
                t,
                pb::RemoveGroupMemberRequest {
                    group_id: world.group_id.clone(),
                    user_id: world.plain.id.clone(),
                },
            ))
            .await
            .map(drop),
        "ListGroupMembers" => app
            .access()
            .list_group_members(req(
                t,
                pb::ListGroupMembersRequest {
                    group_id: world.group_id.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "RequestToJoin" => app
            .access()
            .request_to_join(req(t, join_request(&world.org.cvr, "ny.medarbejder@example.dk")))
            .await
            .map(drop),
        "ConfirmJoinRequest" => app
            .access()
            .confirm_join_request(req(
                t,
                pb::ConfirmJoinRequestRequest {
                    token: world.join_token.clone(),
                },
            ))
            .await
            .map(drop),
        "ListJoinRequests" => app
            .access()
            .list_join_requests(req(
                t,
                pb::ListJoinRequestsRequest {
                    organisation_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "DecideJoinRequest" => app
            .access()
            .decide_join_request(req(
                t,
                pb::DecideJoinRequestRequest {
                    id: world.open_join_request_id.clone(),
                    approve: false,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        // As the target, through the read share the target's resources
        // have with the plain user.
        "GetUserActingAsTarget" => app
            .users()
            .get_user(acting_as(
                &world.target.id,
                req(
                    t,
                    pb::GetUserRequest {
                        id: world.target.id.clone(),
                    },
                ),
            ))
            .await
            .map(drop),
        "UpdatePreferencesActingAsTarget" => app
            .notes()
            .update_notification_preferences(acting_as(
                &world.target.id,
                req(
                    t,
                    pb::UpdateNotificationPreferencesRequest {
                        preferences: vec![pb::NotificationPreference {
                            kind: pb::NotificationKind::AnonymityRequest as i32,
                            channel: pb::DeliveryChannel::InApp as i32,
                        }],
                    },
                ),
            ))
            .await
            .map(drop),
        "UpdateUserActingAsTarget" => app
            .users()
            .update_user(acting_as(
                &world.target.id,
                req(
                    t,
                    pb::UpdateUserRequest {
                        user: Some(pb::User {
                            id: world.target.id.clone(),
                            phone: "+4512345678".into(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["phone"]),
                        ..Default::default()
                    },
                ),
            ))
            .await
            .map(drop),
        "RequestRights" => app
            .access()
            .request_rights(req(t, rights_request("Til kundekartoteket, tak")))
            .await
            .map(drop),
        "ListRightsRequests" => app
            .access()
            .list_rights_requests(req(
                t,
                pb::ListRightsRequestsRequest {
                    organisation_id: org.clone(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        "DecideRightsRequest" => app
            .access()
            .decide_rights_request(req(
                t,
                pb::DecideRightsRequestRequest {
                    id: world.open_rights_request_id.clone(),
                    approve: false,
                    note: String::new(),
                },
            ))
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

use Who::*;

const ORG: &str = "orgadmin.v1.OrganisationService/";
const USR: &str = "orgadmin.v1.UserService/";
const AUT: &str = "orgadmin.v1.AuthService/";
const NOT: &str = "orgadmin.v1.NotificationService/";
const IMP: &str = "orgadmin.v1.ImportService/";
const CRT: &str = "orgadmin.v1.CertificateService/";
const ACC: &str = "orgadmin.v1.AccessService/";
const MEMBERS: &[Who] = &[
    OrgAdmin,
    UserAdmin,
    RightsAdmin,
    PlainUser,
    OtherOrgAdmin,
    UnitEditor,
    RegionViewer,
    UnitDelegator,
    SiblingEditor,
];

/// Whoever presents a token: everyone but `Nobody`, who comes last.
const ANY_CALLER: &[Who] = EVERYONE.split_last().unwrap().1;
/// Every member of the organisation the cases act in.
const OWN_MEMBERS: &[Who] = OPERATOR_AND_OWN_MEMBERS.split_first().unwrap().1;
/// The operator and every member of the organisation the cases act in.
const OPERATOR_AND_OWN_MEMBERS: &[Who] = &[
    Operator,
    OrgAdmin,
    UserAdmin,
    RightsAdmin,
    PlainUser,
    UnitEditor,
    RegionViewer,
    UnitDelegator,
    SiblingEditor,
];

/// The expected policy, written out independently of the domain's table:
/// (case, service prefix, method, who may). A method may have several cases
/// (own user, another user, an administrator).
const MATRIX: &[(&str, &str, &str, &[Who])] = &[
    ("CreateOrganisation", ORG, "CreateOrganisation", &[Operator]),
    ("GetOrganisation", ORG, "GetOrganisation", OPERATOR_AND_OWN_MEMBERS),
    ("ListOrganisations", ORG, "ListOrganisations", ANY_CALLER),
    ("UpdateOrganisation", ORG, "UpdateOrganisation", &[Operator, OrgAdmin]),
    (
        "GetOrganisationSettings",
        ORG,
        "GetOrganisationSettings",
        &[Operator, OrgAdmin, UserAdmin],
    ),
    (
        "UpdateOrganisationSettings",
        ORG,
        "UpdateOrganisationSettings",
        &[OrgAdmin],
    ),
    ("SetLicenceCount", ORG, "SetLicenceCount", &[Operator]),
    ("CreateUnit", ORG, "CreateUnit", &[OrgAdmin]),
    ("ListUnits", ORG, "ListUnits", OPERATOR_AND_OWN_MEMBERS),
    ("UpdateUnit", ORG, "UpdateUnit", &[OrgAdmin]),
    ("DeleteUnit", ORG, "DeleteUnit", &[OrgAdmin]),
    ("CreateUser", USR, "CreateUser", &[UserAdmin]),
    // R-AUTH-1: the operator appoints administrators only while an
    // organisation has no active one (users::first_user_of_operator_becomes_administrator);
    // this one has, and appoints its own.
    ("CreateAdministrator", USR, "CreateUser", &[]),
    // R-ACC-2: a level on Nord or above it reaches the users placed in
    // Nord; level 4 views only; a level on a sibling unit reaches none.
    (
        "GetUser",
        USR,
        "GetUser",
        &[
            OrgAdmin,
            UserAdmin,
            RightsAdmin,
            UnitEditor,
            UnitDelegator,
            RegionViewer,
        ],
    ),
    (
        "GetOwnUser",
        USR,
        "GetUser",
        &[
            OrgAdmin,
            UserAdmin,
            RightsAdmin,
            PlainUser,
            UnitEditor,
            UnitDelegator,
            RegionViewer,
        ],
    ),
    (
        "GetAdministrator",
        USR,
        "GetUser",
        &[
            Operator,
            OrgAdmin,
            UserAdmin,
            RightsAdmin,
            UnitEditor,
            UnitDelegator,
            RegionViewer,
        ],
    ),
    // A level held anywhere lists, and sees its own scope's users only.
    (
        "ListUsers",
        USR,
        "ListUsers",
        &[
            Operator,
            OrgAdmin,
            UserAdmin,
            RightsAdmin,
            UnitEditor,
            UnitDelegator,
            RegionViewer,
            SiblingEditor,
        ],
    ),
    ("UpdateUser", USR, "UpdateUser", &[UserAdmin, UnitEditor, UnitDelegator]),
    ("ChangeRoles", USR, "UpdateUser", &[OrgAdmin]),
    (
        "DeactivateUser",
        USR,
        "DeactivateUser",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    // A level acts on ordinary users only: it reads administrators in its
    // scope but never changes them.
    ("DeactivateAdministrator", USR, "DeactivateUser", &[Operator, UserAdmin]),
    (
        "ReactivateUser",
        USR,
        "ReactivateUser",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    ("DeleteUser", USR, "DeleteUser", &[UserAdmin, UnitEditor, UnitDelegator]),
    (
        "ListUserHistory",
        USR,
        "ListUserHistory",
        &[OrgAdmin, UserAdmin, UnitEditor, UnitDelegator, RegionViewer],
    ),
    (
        "ListOwnHistory",
        USR,
        "ListUserHistory",
        &[OrgAdmin, UserAdmin, PlainUser, UnitEditor, UnitDelegator, RegionViewer],
    ),
    // The secret is the credential: the bearer token does not matter.
    ("ActivateUser", USR, "ActivateUser", EVERYONE),
    ("VerifyEmail", USR, "VerifyEmail", EVERYONE),
    (
        "SendActivation",
        USR,
        "SendActivation",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    // R-AUTH-2, R-ACC-6: user administrators unlock their users; the
    // operator organisation administrators.
    (
        "UnlockLogin",
        USR,
        "UnlockLogin",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    // A user administrator does not unlock an administrator: five more
    // guesses per unlock, for ever (R-AUTH-1's guard, as for the app below).
    ("UnlockAdministratorLogin", USR, "UnlockLogin", &[Operator]),
    (
        "SendPasswordReset",
        USR,
        "SendPasswordReset",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    // R-AUTH-3: a lost phone; the operator for administrators (R-ACC-6).
    (
        "RemoveAuthenticator",
        USR,
        "RemoveAuthenticator",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    // How an administrator signs in is changed only by someone who may
    // change roles (R-AUTH-1): not by a user administrator alone (one who
    // is also an organisation administrator may; the operator looks after
    // administrators, R-ACC-6).
    (
        "RemoveAdministratorAuthenticator",
        USR,
        "RemoveAuthenticator",
        &[Operator],
    ),
    (
        "SendAdministratorPasswordReset",
        USR,
        "SendPasswordReset",
        &[Operator, UserAdmin],
    ),
    ("SendAdministratorActivation", USR, "SendActivation", &[Operator]),
    (
        "CreateActivationCode",
        USR,
        "CreateActivationCode",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    ("RequestAnonymity", USR, "RequestAnonymity", MEMBERS),
    ("ListAnonymityRequests", USR, "ListAnonymityRequests", &[UserAdmin]),
    ("DecideAnonymityRequest", USR, "DecideAnonymityRequest", &[UserAdmin]),
    // R-AUTH-1: nobody, operator or administrator, obtains a credential that
    // acts as another person.
    ("CreateApiToken", AUT, "CreateApiToken", &[]),
    ("CreateAdministratorToken", AUT, "CreateApiToken", &[]),
    ("CreateOwnApiToken", AUT, "CreateApiToken", &[PlainUser]),
    // Administrators list the organisation's, everyone else their own.
    ("ListApiTokens", AUT, "ListApiTokens", OPERATOR_AND_OWN_MEMBERS),
    ("RevokeApiToken", AUT, "RevokeApiToken", &[OrgAdmin]),
    // The password is the credential: the bearer token does not matter.
    ("Login", AUT, "Login", EVERYONE),
    // A person ends their own session; an operator token is no session.
    ("Logout", AUT, "Logout", MEMBERS),
    // The link goes to the person; the token is the credential.
    ("RequestPasswordReset", AUT, "RequestPasswordReset", EVERYONE),
    ("ResetPassword", AUT, "ResetPassword", EVERYONE),
    // The challenge token and the code are the credential.
    ("VerifyLoginCode", AUT, "VerifyLoginCode", EVERYONE),
    // A person enrols an authenticator app for themselves only.
    ("EnrollTotp", AUT, "EnrollTotp", MEMBERS),
    ("ConfirmTotp", AUT, "ConfirmTotp", MEMBERS),
    // Everyone sees their own sessions; user administrators a user's, the
    // operator an administrator's (R-ACC-6).
    ("ListOwnSessions", AUT, "ListSessions", MEMBERS),
    (
        "ListSessions",
        AUT,
        "ListSessions",
        &[UserAdmin, PlainUser, UnitEditor, UnitDelegator],
    ),
    (
        "ListAdministratorSessions",
        AUT,
        "ListSessions",
        &[Operator, OrgAdmin, UserAdmin],
    ),
    (
        "RevokeSession",
        AUT,
        "RevokeSession",
        &[UserAdmin, UnitEditor, UnitDelegator],
    ),
    ("WhoAmI", AUT, "WhoAmI", ANY_CALLER),
    ("ListNotifications", NOT, "ListNotifications", MEMBERS),
    ("MarkNotificationsRead", NOT, "MarkNotificationsRead", MEMBERS),
    ("GetNotificationPreferences", NOT, "GetNotificationPreferences", MEMBERS),
    (
        "UpdateNotificationPreferences",
        NOT,
        "UpdateNotificationPreferences",
        MEMBERS,
    ),
    ("ListFailedMails", NOT, "ListFailedMails", &[Operator]),
    ("RetryMail", NOT, "RetryMail", &[Operator]),
    // R-BULK: user administrators import into their own organisation;
    // legacy imports need an organisation administrator; operators import
    // nothing and see no jobs.
    ("CreateImport", IMP, "CreateImport", &[UserAdmin]),
    ("CreateLegacyImport", IMP, "CreateImport", &[OrgAdmin]),
    ("GetImport", IMP, "GetImport", &[OrgAdmin, UserAdmin]),
    ("ListImports", IMP, "ListImports", &[OrgAdmin, UserAdmin]),
    ("WatchImport", IMP, "WatchImport", &[OrgAdmin, UserAdmin]),
    ("ListImportErrors", IMP, "ListImportErrors", &[OrgAdmin, UserAdmin]),
    ("GetImportReport", IMP, "GetImportReport", &[OrgAdmin, UserAdmin]),
    ("CancelImport", IMP, "CancelImport", &[UserAdmin]),
    ("GetImportTemplate", IMP, "GetImportTemplate", ANY_CALLER),
    ("BatchSendActivation", IMP, "BatchSendActivation", &[UserAdmin]),
    // R-CERT: user administrators manage user certificates, organisation
    // administrators the organisation's own; both read them; operators
    // manage and read none. The holder (or contact person) picks up and
    // renews their own, and a holder revokes their own user certificate
    // (a lost key). The CRL is public.
    ("OrderUserCertificate", CRT, "OrderCertificate", &[UserAdmin]),
    ("OrderOrganisationCertificate", CRT, "OrderCertificate", &[OrgAdmin]),
    // Only the recipient of the pickup mail, signed in as themselves.
    ("IssueCertificate", CRT, "IssueCertificate", &[PlainUser]),
    (
        "GetCertificate",
        CRT,
        "GetCertificate",
        &[OrgAdmin, UserAdmin, PlainUser],
    ),
    ("SearchCertificates", CRT, "SearchCertificates", &[OrgAdmin, UserAdmin]),
    ("DeleteCertificateOrder", CRT, "DeleteCertificateOrder", &[UserAdmin]),
    (
        "DeleteOrganisationCertificateOrder",
        CRT,
        "DeleteCertificateOrder",
        &[OrgAdmin],
    ),
    // Only the recipient renews (the plain user holds the certificate; the
    // organisation administrator is the organisation certificate's contact):
    // the CSR's key becomes the certificate's.
    ("RenewCertificate", CRT, "RenewCertificate", &[PlainUser]),
    ("RenewOrganisationCertificate", CRT, "RenewCertificate", &[OrgAdmin]),
    ("RevokeCertificate", CRT, "RevokeCertificate", &[UserAdmin, PlainUser]),
    ("RevokeOrganisationCertificate", CRT, "RevokeCertificate", &[OrgAdmin]),
    // Another contact person: whoever orders a certificate of the kind.
    (
        "ChangeCertificateContact",
        CRT,
        "ChangeCertificateContact",
        &[UserAdmin],
    ),
    (
        "ChangeOrganisationCertificateContact",
        CRT,
        "ChangeCertificateContact",
        &[OrgAdmin],
    ),
    (
        "ListCertificateHistory",
        CRT,
        "ListCertificateHistory",
        &[OrgAdmin, UserAdmin, PlainUser],
    ),
    ("ExportCertificates", CRT, "ExportCertificates", &[OrgAdmin, UserAdmin]),
    ("GetCrl", CRT, "GetCrl", ANY_CALLER),
    // Signing through the organisation certificate: its owners decide.
    ("SetOrganisationSigning", CRT, "SetOrganisationSigning", &[OrgAdmin]),
    // R-ACC-2: organisation and rights administrators grant and revoke any
    // level; levels 3 and 4 grant none; the level 2 on Nord grants nothing
    // organisation-wide, as this row asks (within its scope:
    // tests/api/access.rs).
    ("GrantAdminLevel", ACC, "GrantAdminLevel", &[OrgAdmin, RightsAdmin]),
    // A level 2 on Nord sees the levels of the people placed there and
    // revokes the levels 3-4 held there (the spare level 4 is).
    (
        "ListAdminLevels",
        ACC,
        "ListAdminLevels",
        &[OrgAdmin, UserAdmin, RightsAdmin, UnitDelegator],
    ),
    (
        "RevokeAdminLevel",
        ACC,
        "RevokeAdminLevel",
        &[OrgAdmin, RightsAdmin, UnitDelegator],
    ),
    // R-ACC-1, R-ACC-3: rights administrators (and organisation
    // administrators) grant and revoke; a member holding no grant option
    // grants nothing (holders passing grants on: tests/api/access.rs).
    // Every member lists grants: administrators all, others their own.
    ("CreateGrant", ACC, "CreateGrant", &[OrgAdmin, RightsAdmin]),
    ("ListGrants", ACC, "ListGrants", OWN_MEMBERS),
    ("RevokeGrant", ACC, "RevokeGrant", &[OrgAdmin, RightsAdmin]),
    // R-ACC-9: every member asks for themselves and sees their own
    // requests; rights (and organisation) administrators decide.
    ("RequestRights", ACC, "RequestRights", MEMBERS),
    ("ListRightsRequests", ACC, "ListRightsRequests", OWN_MEMBERS),
    (
        "DecideRightsRequest",
        ACC,
        "DecideRightsRequest",
        &[OrgAdmin, RightsAdmin],
    ),
    // R-ACC-5: organisation and user administrators (and levels 1-2) share
    // a user's resources; every member their own; the owner, the colleague
    // and whoever may share end a share.
    ("ShareAccess", ACC, "ShareAccess", &[OrgAdmin, UserAdmin, UnitDelegator]),
    ("ShareOwnAccess", ACC, "ShareAccess", OWN_MEMBERS),
    ("ListShares", ACC, "ListShares", OWN_MEMBERS),
    (
        "RevokeShare",
        ACC,
        "RevokeShare",
        &[OrgAdmin, UserAdmin, PlainUser, UnitDelegator],
    ),
    // R-ACC-7 (seed 001): organisation administrators make and delete
    // groups, user administrators fill them; administrators see all groups
    // and their members, every member the groups they are in.
    ("CreateGroup", ACC, "CreateGroup", &[OrgAdmin]),
    ("ListGroups", ACC, "ListGroups", OWN_MEMBERS),
    ("DeleteGroup", ACC, "DeleteGroup", &[OrgAdmin]),
    ("AddGroupMember", ACC, "AddGroupMember", &[OrgAdmin, UserAdmin]),
    ("RemoveGroupMember", ACC, "RemoveGroupMember", &[OrgAdmin, UserAdmin]),
    (
        "ListGroupMembers",
        ACC,
        "ListGroupMembers",
        &[OrgAdmin, UserAdmin, RightsAdmin],
    ),
    // R-ORG-3: anyone (no token needed) asks to join and confirms with the
    // mailed link; organisation and user administrators see the requests,
    // user administrators (who create users) decide them.
    ("RequestToJoin", ACC, "RequestToJoin", EVERYONE),
    ("ConfirmJoinRequest", ACC, "ConfirmJoinRequest", EVERYONE),
    ("ListJoinRequests", ACC, "ListJoinRequests", &[OrgAdmin, UserAdmin]),
    ("DecideJoinRequest", ACC, "DecideJoinRequest", &[UserAdmin]),
    // Only the colleague the target shared with acts as the target, only on
    // the calls a share allows, and only what its access (read) allows.
    ("GetUserActingAsTarget", USR, "GetUser", &[PlainUser]),
    (
        "UpdatePreferencesActingAsTarget",
        NOT,
        "UpdateNotificationPreferences",
        &[],
    ),
    ("UpdateUserActingAsTarget", USR, "UpdateUser", &[]),
];

/// The one user or job a case acts on, as far as visibility goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    NoOneUser,
    PlainUser,
    Administrator,
    /// An import job: only its organisation's members see it.
    ImportJob,
    /// A certificate: only its organisation's members see it.
    Certificate,
    /// A pickup token: another organisation's (and for the operator, every
    /// one) reads as unknown, like a wrong token.
    Pickup,
    /// A group or a request to join: only its organisation's members see
    /// it.
    Group,
    /// A unit: another organisation's members do not see it; the operator
    /// sees organisations' units, and is refused.
    Unit,
}

fn target(case: &str) -> Target {
    match case {
        "GetUser"
        | "GetOwnUser"
        | "UpdateUser"
        | "ChangeRoles"
        | "DeactivateUser"
        | "ReactivateUser"
        | "DeleteUser"
        | "ListUserHistory"
        | "ListOwnHistory"
        | "CreateApiToken"
        | "CreateOwnApiToken"
        | "SendActivation"
        | "UnlockLogin"
        | "SendPasswordReset"
        | "CreateActivationCode"
        | "ListSessions"
        | "RevokeSession"
        | "RemoveAuthenticator"
        | "SetOrganisationSigning"
        | "GrantAdminLevel"
        | "RevokeAdminLevel"
        | "CreateGrant"
        | "RevokeGrant"
        | "DecideRightsRequest"
        | "ShareAccess"
        | "ShareOwnAccess"
        | "RevokeShare"
        | "RevokeApiToken"
        | "DecideAnonymityRequest" => Target::PlainUser,
        "UpdateUnit" | "DeleteUnit" => Target::Unit,
        "GetAdministrator"
        | "DeactivateAdministrator"
        | "CreateAdministratorToken"
        | "SendAdministratorActivation"
        | "UnlockAdministratorLogin"
        | "ListAdministratorSessions"
        | "RemoveAdministratorAuthenticator"
        | "SendAdministratorPasswordReset" => Target::Administrator,
        "GetImport" | "WatchImport" | "ListImportErrors" | "GetImportReport" | "CancelImport" => Target::ImportJob,
        "GetCertificate"
        | "DeleteCertificateOrder"
        | "DeleteOrganisationCertificateOrder"
        | "RenewCertificate"
        | "RenewOrganisationCertificate"
        | "RevokeCertificate"
        | "RevokeOrganisationCertificate"
        | "ChangeCertificateContact"
        | "ChangeOrganisationCertificateContact"
        | "ListCertificateHistory" => Target::Certificate,
        "IssueCertificate" => Target::Pickup,
        "DeleteGroup" | "AddGroupMember" | "RemoveGroupMember" | "ListGroupMembers" | "DecideJoinRequest" => {
            Target::Group
        }
        _ => Target::NoOneUser,
    }
}

/// How a denied call answers: no token is UNAUTHENTICATED; a user outside
/// the caller's view (another organisation's, or an ordinary user for the
/// operator: R-ACC-6) reads as missing, NOT_FOUND, exactly like an id that
/// does not exist; a pickup token of another organisation is unknown,
/// FAILED_PRECONDITION, exactly like a wrong one; anything else is
/// PERMISSION_DENIED.
fn denial(case: &str, who: Who) -> Code {
    match (who, target(case)) {
        (Nobody, _) => Code::Unauthenticated,
        (OtherOrgAdmin, Target::PlainUser | Target::Administrator) => Code::NotFound,
        (Operator, Target::PlainUser) => Code::NotFound,
        (Operator | OtherOrgAdmin, Target::ImportJob | Target::Certificate | Target::Group) => Code::NotFound,
        (OtherOrgAdmin, Target::Unit) => Code::NotFound,
        (Operator | OtherOrgAdmin, Target::Pickup) => Code::FailedPrecondition,
        _ => Code::PermissionDenied,
    }
}

/// Every method of every orgadmin service, from the descriptor set the
/// server serves by reflection.
fn served_methods() -> Vec<String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                methods.push(format!("{}.{}/{}", file.package(), service.name(), method.name()));
            }
        }
    }
    methods
}

#[test]
fn matrix_covers_every_served_method() {
    assert!(!ANY_CALLER.contains(&Nobody) && ANY_CALLER.len() + 1 == EVERYONE.len());
    assert!(!OWN_MEMBERS.contains(&Operator) && OWN_MEMBERS.len() + 1 == OPERATOR_AND_OWN_MEMBERS.len());
    // Every member of an organisation: everyone but the operator and nobody.
    let members: Vec<Who> = EVERYONE
        .iter()
        .copied()
        .filter(|w| !matches!(w, Operator | Nobody))
        .collect();
    assert_eq!(MEMBERS, members.as_slice());
    let methods = served_methods();
    assert!(
        methods.len() >= 35,
        "the descriptor set lists only {} methods",
        methods.len()
    );
    let covered: Vec<String> = MATRIX
        .iter()
        .map(|(_, prefix, method, _)| format!("{prefix}{method}"))
        .collect();
    let missing: Vec<&String> = methods.iter().filter(|m| !covered.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "methods without a row in the rights matrix: {missing:?}"
    );
    let unknown: Vec<&String> = covered.iter().filter(|c| !methods.contains(c)).collect();
    assert!(
        unknown.is_empty(),
        "matrix rows for methods that are not served: {unknown:?}"
    );
}

/// Rows per database: every call fingerprints the whole database, which
/// grows by a world per changing call, so a fresh database every few rows
/// keeps each fingerprint small (one database for all rows took 14 minutes).
const ROWS_PER_DATABASE: usize = 12;

/// Part `part` of the matrix: every `PARTS`th chunk of rows from the
/// `part`th, so every row is in exactly one part.
async fn every_rpc_for_every_role(backend: Backend, part: usize) {
    let mut failures = Vec::new();
    for rows in MATRIX.chunks(ROWS_PER_DATABASE).skip(part).step_by(PARTS) {
        let app = TestApp::start(backend).await;
        check_rows(&app, rows, &mut failures).await;
        app.finish().await;
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn check_rows(app: &TestApp, rows: &[(&str, &str, &str, &[Who])], failures: &mut Vec<String>) {
    let second_factor = app.org_with_admin().await;
    app.require_second_factor(&second_factor).await;
    let (_, code_login_id) = app.member_with_password(&second_factor, "Code", &[]).await;
    // The world the previous row left, when nothing changed it since it was
    // built: as good as a fresh one (the fingerprint says so), and worlds
    // are what this test spends its time on.
    let mut unchanged: Option<(bool, World)> = None;
    // The fingerprint after the last call, while nothing has written since:
    // the next call's "before" (a fingerprint reads every table, and this
    // halves the reads).
    let mut last: Option<Fingerprint> = None;
    for (rpc, service, _, allowed) in rows {
        // A fresh (or untouched) world per RPC, and a new one after every
        // call that changed it; a denied call changes nothing, which the
        // fingerprint checks.
        let certificates = *service == CRT;
        let mut world = match unchanged.take() {
            Some((with_certificates, world)) if with_certificates == certificates => world,
            _ => {
                last = None;
                World::build(app, certificates)
                    .await
                    .with_second_factor_member(&code_login_id)
            }
        };
        let mut changed_since_build = false;
        for who in EVERYONE {
            if prepare(app, &mut world, rpc, *who).await {
                changed_since_build = true;
                last = None;
            }
            let before = match last.take() {
                Some(fingerprint) => fingerprint,
                None => app.fingerprint().await,
            };
            let result = call(app, &world, rpc, &world.token(*who)).await;
            let after = app.fingerprint().await;
            let succeeded = result.is_ok();
            let expected_ok = allowed.contains(who);
            match (&result, expected_ok) {
                (Ok(()), true) => {}
                (Err(status), false) => {
                    let want = denial(rpc, *who);
                    if status.code() != want {
                        failures.push(format!("{rpc} as {who:?}: want {want:?}, got {status:?}"));
                    }
                    if want == Code::FailedPrecondition && reason(status) != "CERTIFICATE_PICKUP_UNKNOWN" {
                        failures.push(format!(
                            "{rpc} as {who:?}: the token should read as unknown: {status:?}"
                        ));
                    }
                    if after != before {
                        failures.push(format!("{rpc} as {who:?}: denied but changed data"));
                    }
                }
                (Ok(()), false) => failures.push(format!("{rpc} as {who:?}: allowed, should be denied")),
                (Err(status), true) => {
                    failures.push(format!("{rpc} as {who:?}: denied, should be allowed: {status:?}"))
                }
            }
            // A call that changed something may have used up the world (a
            // token, an order); a read leaves it as it was: keep it. A login
            // uses nothing up (it adds a session); a reset uses its token,
            // and a new one is all the next caller needs.
            last = Some(after.clone());
            if succeeded && after != before {
                match *rpc {
                    // Each uses only what `prepare` made for it, or (a new
                    // enrolment, a rights request, of the caller's own)
                    // nothing another caller needs.
                    "Login" | "VerifyLoginCode" | "EnrollTotp" | "ConfirmTotp" | "RevokeSession" | "RequestRights"
                    | "ShareAccess" | "ShareOwnAccess" | "CreateGroup" | "AddGroupMember" | "RequestToJoin"
                    | "ConfirmJoinRequest" => changed_since_build = true,
                    "ResetPassword" => {
                        world.reset_token = fresh_reset_token(app, &world.login_id).await;
                        changed_since_build = true;
                        last = None;
                    }
                    _ => {
                        world = World::build(app, certificates)
                            .await
                            .with_second_factor_member(&code_login_id);
                        changed_since_build = false;
                        last = None;
                    }
                }
            }
        }
        if !changed_since_build {
            unchanged = Some((certificates, world));
        }
    }
}

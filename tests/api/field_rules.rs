//! Every field rule, refused through its real RPC (issue 8, "Test audit" and
//! defect 12): INVALID_ARGUMENT, exactly one `BadRequest` field violation
//! whose path is the field's path in the request message (AIP-193:
//! `user.email` on UpdateUser, `email` on CreateUser), and nothing changed.
//!
//! The table is checked against the sources, not against a second list:
//! `every_field_path_has_a_row` reads the domain and service code for the
//! paths their checks name (`Violations::check`/`add`, `DomainError::invalid`,
//! `FieldViolation::new`): a literal, a constant, `format!` with indexes,
//! or a parameter of the function (`field`, `{prefix}…`, `{field}[{i}]`, a
//! pair's `a.0`), followed to every call passing a literal, through as
//! many functions as pass it on; and `.map_err(|e| e.within("x"))` puts
//! `x.` before what the call it wraps emits. It fails when a path has
//! fewer rows (counted by RPC and rule) than call sites that emit it, and
//! when it meets a form it does not read that `UNREAD` does not list. Its
//! own test reads a sample holding each form. Paths named by the generic
//! parsers of `service/src/convert.rs` (`id`, `opt_id`, `millis`, enum
//! values) are not rules of a field and are not followed; a few rows cover
//! them anyway.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use orgadmin_proto::v1 as pb;
use orgadmin_tests::*;
use prost_types::{FieldMask, Timestamp};
use tonic::{Code, Status};

both_backends!(every_field_rule_refuses_through_its_rpc);

/// The request inside a `Call::ActivateUser`.
fn activate_request(call: Call) -> pb::ActivateUserRequest {
    match call {
        Call::ActivateUser(r) => r,
        _ => unreachable!("Ctx::activate makes an ActivateUser call"),
    }
}

/// What the rows refer to: things that exist, read after they were made.
#[derive(Default)]
struct Ctx {
    org: pb::Organisation,
    settings: pb::OrganisationSettings,
    admin: pb::User,
    member: pb::User,
    /// A service account of the organisation (R-ACC-5).
    service_account: pb::User,
    unit: pb::Unit,
    activation_code: String,
    anonymity_request_id: String,
    /// An open rights request of the member.
    rights_request_id: String,
    /// An ISSUED user certificate of the member.
    certificate_id: String,
    /// The pickup token of the member's ORDERED e-mail encryption certificate.
    encryption_pickup: String,
    /// A CSR for an Ed25519 key (which cannot encrypt).
    ed25519_csr: String,
    /// The secret of the member's authenticator app, enrolled, not confirmed.
    totp_secret: String,
    /// A unit of another organisation.
    other_unit: pb::Unit,
    /// The e-mail address of the user `activation_code` activates.
    activation_email: String,
    /// The member's password reset token, mailed, not used.
    reset_token: String,
    /// An organisation certificate carrying its contact person's (the
    /// administrator's) e-mail address.
    organisation_certificate_id: String,
    /// An active member whose e-mail address is not ASCII.
    non_ascii_member_id: String,
}

/// One refused call; the variant names the RPC.
enum Call {
    CreateOrganisation(pb::CreateOrganisationRequest),
    UpdateOrganisation(pb::UpdateOrganisationRequest),
    UpdateOrganisationSettings(pb::UpdateOrganisationSettingsRequest),
    SetLicenceCount(pb::SetLicenceCountRequest),
    CreateUnit(pb::CreateUnitRequest),
    UpdateUnit(pb::UpdateUnitRequest),
    CreateUser(pb::CreateUserRequest),
    UpdateUser(pb::UpdateUserRequest),
    DeactivateUser(pb::DeactivateUserRequest),
    ListUsers(pb::ListUsersRequest),
    ListUserHistory(pb::ListUserHistoryRequest),
    ActivateUser(pb::ActivateUserRequest),
    Login(pb::LoginRequest),
    VerifyLoginCode(pb::VerifyLoginCodeRequest),
    ConfirmTotp(pb::ConfirmTotpRequest),
    RequestPasswordReset(pb::RequestPasswordResetRequest),
    ResetPassword(pb::ResetPasswordRequest),
    VerifyEmail(pb::VerifyEmailRequest),
    RequestAnonymity(pb::RequestAnonymityRequest),
    DecideAnonymityRequest(pb::DecideAnonymityRequestRequest),
    CreateApiToken(pb::CreateApiTokenRequest),
    MarkNotificationsRead(pb::MarkNotificationsReadRequest),
    UpdateNotificationPreferences(pb::UpdateNotificationPreferencesRequest),
    CreateImport(Vec<pb::CreateImportRequest>),
    BatchSendActivation(pb::BatchSendActivationRequest),
    SendActivation(pb::SendActivationRequest),
    OrderCertificate(pb::OrderCertificateRequest),
    IssueCertificate(pb::IssueCertificateRequest),
    SearchCertificates(pb::SearchCertificatesRequest),
    RenewCertificate(pb::RenewCertificateRequest),
    RevokeCertificate(pb::RevokeCertificateRequest),
    ChangeCertificateContact(pb::ChangeCertificateContactRequest),
    GrantAdminLevel(pb::GrantAdminLevelRequest),
    CreateGrant(pb::CreateGrantRequest),
    ListGrants(pb::ListGrantsRequest),
    RequestRights(pb::RequestRightsRequest),
    DecideRightsRequest(pb::DecideRightsRequestRequest),
    ShareAccess(pb::ShareAccessRequest),
    CreateGroup(pb::CreateGroupRequest),
    RequestToJoin(pb::RequestToJoinRequest),
    DecideJoinRequest(pb::DecideJoinRequestRequest),
    AddGroupMember(pb::AddGroupMemberRequest),
    /// GetUser made as the user the headers name (R-ACC-5), each value
    /// sent as is: the header is the field.
    GetUserActingAs(&'static [&'static [u8]], pb::GetUserRequest),
    /// RequestRights made by the administrator.
    RequestRightsAsAdmin(pb::RequestRightsRequest),
}

impl Call {
    fn rpc(&self) -> &'static str {
        match self {
            Call::CreateOrganisation(_) => "CreateOrganisation",
            Call::UpdateOrganisation(_) => "UpdateOrganisation",
            Call::UpdateOrganisationSettings(_) => "UpdateOrganisationSettings",
            Call::SetLicenceCount(_) => "SetLicenceCount",
            Call::CreateUnit(_) => "CreateUnit",
            Call::UpdateUnit(_) => "UpdateUnit",
            Call::CreateUser(_) => "CreateUser",
            Call::UpdateUser(_) => "UpdateUser",
            Call::DeactivateUser(_) => "DeactivateUser",
            Call::ListUsers(_) => "ListUsers",
            Call::ListUserHistory(_) => "ListUserHistory",
            Call::ActivateUser(_) => "ActivateUser",
            Call::Login(_) => "Login",
            Call::VerifyLoginCode(_) => "VerifyLoginCode",
            Call::ConfirmTotp(_) => "ConfirmTotp",
            Call::RequestPasswordReset(_) => "RequestPasswordReset",
            Call::ResetPassword(_) => "ResetPassword",
            Call::VerifyEmail(_) => "VerifyEmail",
            Call::RequestAnonymity(_) => "RequestAnonymity",
            Call::DecideAnonymityRequest(_) => "DecideAnonymityRequest",
            Call::CreateApiToken(_) => "CreateApiToken",
            Call::MarkNotificationsRead(_) => "MarkNotificationsRead",
            Call::UpdateNotificationPreferences(_) => "UpdateNotificationPreferences",
            Call::CreateImport(_) => "CreateImport",
            Call::BatchSendActivation(_) => "BatchSendActivation",
            Call::SendActivation(_) => "SendActivation",
            Call::OrderCertificate(_) => "OrderCertificate",
            Call::IssueCertificate(_) => "IssueCertificate",
            Call::SearchCertificates(_) => "SearchCertificates",
            Call::RenewCertificate(_) => "RenewCertificate",
            Call::RevokeCertificate(_) => "RevokeCertificate",
            Call::ChangeCertificateContact(_) => "ChangeCertificateContact",
            Call::GrantAdminLevel(_) => "GrantAdminLevel",
            Call::CreateGrant(_) => "CreateGrant",
            Call::ListGrants(_) => "ListGrants",
            Call::RequestRights(_) => "RequestRights",
            Call::DecideRightsRequest(_) => "DecideRightsRequest",
            Call::ShareAccess(_) => "ShareAccess",
            Call::CreateGroup(_) => "CreateGroup",
            Call::RequestToJoin(_) => "RequestToJoin",
            Call::DecideJoinRequest(_) => "DecideJoinRequest",
            Call::AddGroupMember(_) => "AddGroupMember",
            Call::GetUserActingAs(..) => "GetUser",
            Call::RequestRightsAsAdmin(_) => "RequestRights",
        }
    }

    /// Sends the call as whoever may make it: the operator for what only the
    /// operator does, the member for their own requests, nobody for what a
    /// secret authorises, else the organisation's administrator.
    async fn send(self, app: &TestApp, admin: &str, member: &str) -> Result<(), Status> {
        let op = OPERATOR_TOKEN;
        match self {
            Call::CreateOrganisation(r) => app.orgs().create_organisation(req(op, r)).await.map(drop),
            Call::UpdateOrganisation(r) => app.orgs().update_organisation(req(admin, r)).await.map(drop),
            Call::UpdateOrganisationSettings(r) => {
                app.orgs().update_organisation_settings(req(admin, r)).await.map(drop)
            }
            Call::SetLicenceCount(r) => app.orgs().set_licence_count(req(op, r)).await.map(drop),
            Call::CreateUnit(r) => app.orgs().create_unit(req(admin, r)).await.map(drop),
            Call::UpdateUnit(r) => app.orgs().update_unit(req(admin, r)).await.map(drop),
            Call::CreateUser(r) => app.users().create_user(req(admin, r)).await.map(drop),
            Call::UpdateUser(r) => app.users().update_user(req(admin, r)).await.map(drop),
            Call::DeactivateUser(r) => app.users().deactivate_user(req(admin, r)).await.map(drop),
            Call::ListUsers(r) => app.users().list_users(req(admin, r)).await.map(drop),
            Call::ListUserHistory(r) => app.users().list_user_history(req(admin, r)).await.map(drop),
            Call::ActivateUser(r) => app.users().activate_user(req("", r)).await.map(drop),
            Call::Login(r) => app.auth().login(req("", r)).await.map(drop),
            Call::VerifyLoginCode(r) => app.auth().verify_login_code(req("", r)).await.map(drop),
            Call::ConfirmTotp(r) => app.auth().confirm_totp(req(member, r)).await.map(drop),
            Call::RequestPasswordReset(r) => app.auth().request_password_reset(req("", r)).await.map(drop),
            Call::ResetPassword(r) => app.auth().reset_password(req("", r)).await.map(drop),
            Call::VerifyEmail(r) => app.users().verify_email(req("", r)).await.map(drop),
            Call::RequestAnonymity(r) => app.users().request_anonymity(req(member, r)).await.map(drop),
            Call::DecideAnonymityRequest(r) => app.users().decide_anonymity_request(req(admin, r)).await.map(drop),
            Call::CreateApiToken(r) => app.auth().create_api_token(req(admin, r)).await.map(drop),
            Call::MarkNotificationsRead(r) => app.notes().mark_notifications_read(req(member, r)).await.map(drop),
            Call::UpdateNotificationPreferences(r) => app
                .notes()
                .update_notification_preferences(req(member, r))
                .await
                .map(drop),
            Call::CreateImport(messages) => app.stream_import(admin, messages).await.map(drop),
            Call::BatchSendActivation(r) => app.imports().batch_send_activation(req(admin, r)).await.map(drop),
            Call::SendActivation(r) => app.users().send_activation(req(admin, r)).await.map(drop),
            Call::OrderCertificate(r) => app.certs().order_certificate(req(admin, r)).await.map(drop),
            // Picked up by the recipient of the pickup mail: the member.
            Call::IssueCertificate(r) => app.certs().issue_certificate(req(member, r)).await.map(drop),
            Call::SearchCertificates(r) => app.certs().search_certificates(req(admin, r)).await.map(drop),
            Call::RenewCertificate(r) => app.certs().renew_certificate(req(admin, r)).await.map(drop),
            Call::RevokeCertificate(r) => app.certs().revoke_certificate(req(admin, r)).await.map(drop),
            Call::ChangeCertificateContact(r) => app.certs().change_certificate_contact(req(admin, r)).await.map(drop),
            Call::GrantAdminLevel(r) => app.access().grant_admin_level(req(admin, r)).await.map(drop),
            Call::CreateGrant(r) => app.access().create_grant(req(admin, r)).await.map(drop),
            Call::ListGrants(r) => app.access().list_grants(req(admin, r)).await.map(drop),
            Call::ShareAccess(r) => app.access().share_access(req(admin, r)).await.map(drop),
            Call::CreateGroup(r) => app.access().create_group(req(admin, r)).await.map(drop),
            // No token: anyone asks to join.
            Call::RequestToJoin(r) => app.access().request_to_join(req("", r)).await.map(drop),
            Call::DecideJoinRequest(r) => app.access().decide_join_request(req(admin, r)).await.map(drop),
            Call::AddGroupMember(r) => app.access().add_group_member(req(admin, r)).await.map(drop),
            Call::GetUserActingAs(owners, r) => {
                let mut request = req(member, r);
                for owner in owners {
                    let value = tonic::metadata::AsciiMetadataValue::try_from(*owner).expect("header");
                    request.metadata_mut().append("x-orgadmin-act-as", value);
                }
                app.users().get_user(request).await.map(drop)
            }
            Call::RequestRightsAsAdmin(r) => app.access().request_rights(req(admin, r)).await.map(drop),
            Call::RequestRights(r) => app.access().request_rights(req(member, r)).await.map(drop),
            Call::DecideRightsRequest(r) => app.access().decide_rights_request(req(admin, r)).await.map(drop),
        }
    }
}

/// One bad value: the field path the refusal must name, what is wrong, and
/// the request carrying it (otherwise valid).
struct Row {
    field: &'static str,
    bad: &'static str,
    /// A fragment of the rule's description, when given: proof that this
    /// rule refused the row, not another one on the same path.
    rule: &'static str,
    call: fn(&Ctx) -> Call,
}

/// A request to join the organisation with `cvr`, valid but for what a
/// row changes.
fn join_request(cvr: &str) -> pb::RequestToJoinRequest {
    pb::RequestToJoinRequest {
        organisation_cvr: cvr.to_owned(),
        first_name: "Anna".into(),
        surname: "Nielsen".into(),
        email: "anna.nielsen@example.dk".into(),
        birth_date: "1990-05-17".into(),
        language: 0,
        reason: "Jeg er ny på lageret".into(),
    }
}

fn long(n: usize) -> String {
    "x".repeat(n)
}

/// Zero-width characters only: no visible character (defect 14).
const INVISIBLE: &str = "\u{200B}\u{200D}\u{FEFF}";
/// Dashes where CPR numbers have none (defect 10).
const CPR_DASHED: &str = "01-01-80-12-34";
/// Born 1 January 2030 (7th digit 4, year 30: the 2000s).
const CPR_FUTURE: &str = "0101304123";
const DATE_UNPADDED: &str = "1990-5-17";
const DATE_FUTURE: &str = "2999-01-01";
const EAN: &str = "5798000416604";
const EAN_SHORT: &str = "579800041660";
const GARBLED_ETAG: &str = "abc";

/// A grant the administrator may make: read of `docs.read` to the member.
fn grant_request(c: &Ctx) -> pb::CreateGrantRequest {
    pb::CreateGrantRequest {
        grantee_user_id: c.member.id.clone(),
        right: "docs.read".into(),
        actions: vec![pb::GrantAction::Read as i32],
        ..Default::default()
    }
}

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

fn past() -> Timestamp {
    in_ms(-60_000)
}

/// CreateImport: `spec` (if any) first, then `chunk` (if not empty).
fn import(spec: Option<pb::ImportSpec>, chunk: Vec<u8>) -> Call {
    let mut messages: Vec<pb::CreateImportRequest> = spec
        .into_iter()
        .map(|spec| pb::CreateImportRequest {
            part: Some(pb::create_import_request::Part::Spec(spec)),
        })
        .collect();
    if !chunk.is_empty() {
        messages.push(pb::CreateImportRequest {
            part: Some(pb::create_import_request::Part::Chunk(chunk)),
        });
    }
    Call::CreateImport(messages)
}

impl Ctx {
    fn import_spec(&self) -> pb::ImportSpec {
        pb::ImportSpec {
            organisation_id: self.org.id.clone(),
            kind: pb::ImportKind::Create as i32,
            ..Default::default()
        }
    }

    fn new_user(&self) -> pb::CreateUserRequest {
        new_user(&self.org.id, "Ny", &[])
    }

    /// CreateUser for a user without a CPR number, born `date`.
    fn new_user_born(&self, date: &str) -> pb::CreateUserRequest {
        pb::CreateUserRequest {
            cpr: String::new(),
            birth_date: date.into(),
            ..self.new_user()
        }
    }

    fn new_organisation(&self) -> pb::CreateOrganisationRequest {
        pb::CreateOrganisationRequest {
            name: "Ny ApS".into(),
            cvr: unique_cvr(),
            ..Default::default()
        }
    }

    /// UpdateUser of the member with `user` changed and `paths` in the mask.
    fn update_user(&self, paths: &[&str], change: impl FnOnce(&mut pb::User)) -> Call {
        let mut user = self.member.clone();
        change(&mut user);
        Call::UpdateUser(pb::UpdateUserRequest {
            user: Some(user),
            update_mask: mask(paths),
            cpr: String::new(),
        })
    }

    fn update_user_cpr(&self, cpr: &str) -> Call {
        Call::UpdateUser(pb::UpdateUserRequest {
            user: Some(self.member.clone()),
            update_mask: mask(&["cpr"]),
            cpr: cpr.into(),
        })
    }

    fn update_organisation(&self, paths: &[&str], change: impl FnOnce(&mut pb::Organisation)) -> Call {
        let mut org = self.org.clone();
        change(&mut org);
        Call::UpdateOrganisation(pb::UpdateOrganisationRequest {
            organisation: Some(org),
            update_mask: mask(paths),
        })
    }

    fn update_settings(&self, paths: &[&str], change: impl FnOnce(&mut pb::OrganisationSettings)) -> Call {
        let mut settings = self.settings.clone();
        change(&mut settings);
        Call::UpdateOrganisationSettings(pb::UpdateOrganisationSettingsRequest {
            settings: Some(settings),
            update_mask: mask(paths),
        })
    }

    fn billing(&self, change: impl FnOnce(&mut pb::BillingDetails)) -> Call {
        self.update_settings(&["billing"], |s| {
            let mut billing = s.billing.clone().unwrap_or_default();
            change(&mut billing);
            s.billing = Some(billing);
        })
    }

    fn new_unit(&self) -> pb::CreateUnitRequest {
        pb::CreateUnitRequest {
            organisation_id: self.org.id.clone(),
            kind: pb::UnitKind::Department as i32,
            name: "Ny afdeling".into(),
            ..Default::default()
        }
    }

    fn update_unit(&self, paths: &[&str], change: impl FnOnce(&mut pb::Unit)) -> Call {
        let mut unit = self.unit.clone();
        change(&mut unit);
        Call::UpdateUnit(pb::UpdateUnitRequest {
            unit: Some(unit),
            update_mask: mask(paths),
        })
    }

    /// Six digits the member's app does not show in this or a neighbouring
    /// time step.
    fn wrong_app_code(&self) -> String {
        use orgadmin_domain::totp;
        let key = totp::base32_decode(&self.totp_secret).expect("secret");
        let now = totp::step_at(chrono::Utc::now().timestamp());
        let shown: Vec<String> = (now - 2..=now + 2)
            .map(|step| totp::code_for_step(&key, step, totp::DIGITS))
            .collect();
        ["000000", "111111", "222222", "333333", "444444", "555555"]
            .into_iter()
            .find(|c| !shown.iter().any(|s| s == c))
            .expect("a code the app does not show")
            .to_owned()
    }

    fn activate(&self, cpr: &str, birth_date: &str) -> Call {
        Call::ActivateUser(pb::ActivateUserRequest {
            code: self.activation_code.clone(),
            cpr: cpr.into(),
            birth_date: birth_date.into(),
            ..Default::default()
        })
    }

    fn deactivate(&self) -> pb::DeactivateUserRequest {
        pb::DeactivateUserRequest {
            id: self.member.id.clone(),
            ..Default::default()
        }
    }

    fn list_users(&self) -> pb::ListUsersRequest {
        pb::ListUsersRequest {
            organisation_id: self.org.id.clone(),
            ..Default::default()
        }
    }

    fn api_token(&self) -> pb::CreateApiTokenRequest {
        pb::CreateApiTokenRequest {
            user_id: self.admin.id.clone(),
            name: "ci".into(),
            ..Default::default()
        }
    }
}

/// A user certificate of the member for signing in.
fn user_certificate(c: &Ctx) -> pb::OrderCertificateRequest {
    pb::OrderCertificateRequest {
        organisation_id: c.org.id.clone(),
        kind: pb::CertificateKind::Employee as i32,
        holder_id: c.member.id.clone(),
        usages: vec![pb::CertificateUsage::Authentication as i32],
        ..Default::default()
    }
}

/// An organisation certificate for service access.
fn organisation_certificate(c: &Ctx) -> pb::OrderCertificateRequest {
    pb::OrderCertificateRequest {
        organisation_id: c.org.id.clone(),
        kind: pb::CertificateKind::Organisation as i32,
        label: "Lønsystem".into(),
        usages: vec![pb::CertificateUsage::ServiceAccess as i32],
        ..Default::default()
    }
}

fn search_certificates(c: &Ctx) -> pb::SearchCertificatesRequest {
    pb::SearchCertificatesRequest {
        organisation_id: c.org.id.clone(),
        ..Default::default()
    }
}

/// A CSR for a new Ed25519 key, by the real `openssl req`.
fn ed25519_csr() -> String {
    let dir = fresh_dir();
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-new", "-newkey", "ed25519", "-nodes", "-keyout", "k.pem", "-subj", "/CN=x", "-out", "r.csr",
        ])
        .current_dir(&dir)
        .output()
        .expect("openssl must be installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read_to_string(dir.join("r.csr")).unwrap()
}

/// A DER element: `tag`, its length, `content`.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(n as u8),
        n if n < 0x100 => out.extend([0x81, n as u8]),
        n => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// An RSA CSR, signed and verifying, whose key's algorithm lacks the NULL
/// parameter the standard gives rsaEncryption: a verifier that ignores the
/// parameters accepts it, the signer does not.
fn rsa_csr_without_null_parameters() -> String {
    let dir = fresh_dir();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        "k.pem",
    ]);
    openssl(&[
        "rsa",
        "-in",
        "k.pem",
        "-RSAPublicKey_out",
        "-outform",
        "DER",
        "-out",
        "pub.der",
    ]);
    let rsa_public_key = std::fs::read(dir.join("pub.der")).unwrap();
    // rsaEncryption, 1.2.840.113549.1.1.1, and no NULL after it.
    let rsa = der(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]);
    let spki = der(
        0x30,
        &[
            der(0x30, &rsa),
            der(0x03, &[&[0x00], rsa_public_key.as_slice()].concat()),
        ]
        .concat(),
    );
    let subject = der(
        0x30,
        &der(
            0x31,
            &der(0x30, &[der(0x06, &[0x55, 0x04, 0x03]), der(0x0c, b"x")].concat()),
        ),
    );
    let info = der(0x30, &[der(0x02, &[0]), subject, spki, vec![0xa0, 0x00]].concat());
    std::fs::write(dir.join("info.der"), &info).unwrap();
    openssl(&["dgst", "-sha256", "-sign", "k.pem", "-out", "sig.bin", "info.der"]);
    let signature = std::fs::read(dir.join("sig.bin")).unwrap();
    // sha256WithRSAEncryption, 1.2.840.113549.1.1.11, with its NULL.
    let signed_with = der(
        0x30,
        &[
            der(0x06, &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b]),
            vec![0x05, 0x00],
        ]
        .concat(),
    );
    let request = der(
        0x30,
        &[info, signed_with, der(0x03, &[&[0x00], signature.as_slice()].concat())].concat(),
    );
    std::fs::write(dir.join("r.der"), &request).unwrap();
    let body = String::from_utf8(openssl(&["base64", "-in", "r.der"])).unwrap();
    format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n")
}

/// The body of a PEM CSR, cut off: not a CSR any more.
const CSR_CUT: &str =
    "-----BEGIN CERTIFICATE REQUEST-----\nMIIBBjCBrQIBADAMMQowCAYDVQQDDAF4\n-----END CERTIFICATE REQUEST-----\n";

fn preference(kind: pb::NotificationKind, channel: pb::DeliveryChannel) -> Call {
    Call::UpdateNotificationPreferences(pb::UpdateNotificationPreferencesRequest {
        preferences: vec![pb::NotificationPreference {
            kind: kind as i32,
            channel: channel as i32,
        }],
    })
}

/// RequestRights by the member for `requested`, with a reason.
fn rights_request(requested: pb::request_rights_request::Requested) -> Call {
    Call::RequestRights(pb::RequestRightsRequest {
        requested: Some(requested),
        reason: "Til regnskabet i Nord".into(),
    })
}

/// The table: every field rule with a bad value, by RPC.
fn rows() -> Vec<Row> {
    macro_rules! row {
        ($field:literal, $bad:literal, $call:expr) => {
            Row {
                field: $field,
                bad: $bad,
                rule: "",
                call: $call,
            }
        };
        ($field:literal, $bad:literal, rule: $rule:literal, $call:expr) => {
            Row {
                field: $field,
                bad: $bad,
                rule: $rule,
                call: $call,
            }
        };
    }
    vec![
        // CreateUser: paths at the top of the request.
        row!("first_name", "101 characters", |c| Call::CreateUser(
            pb::CreateUserRequest {
                first_name: long(101),
                ..c.new_user()
            }
        )),
        row!("first_name", "invisible only", |c| Call::CreateUser(
            pb::CreateUserRequest {
                first_name: INVISIBLE.into(),
                ..c.new_user()
            }
        )),
        row!("first_name", "a right-to-left override", |c| Call::CreateUser(
            pb::CreateUserRequest {
                first_name: "Anna\u{202E}nesnaH".into(),
                ..c.new_user()
            }
        )),
        row!("first_name", "an address of its own in < >", |c| Call::CreateUser(
            pb::CreateUserRequest {
                first_name: "Direktør <direktor@firma.dk>".into(),
                ..c.new_user()
            }
        )),
        row!("first_name", "a line separator", |c| Call::CreateUser(
            pb::CreateUserRequest {
                first_name: "Anna\u{2028}Din konto er spærret".into(),
                ..c.new_user()
            }
        )),
        row!("surname", "101 characters", |c| Call::CreateUser(
            pb::CreateUserRequest {
                surname: long(101),
                ..c.new_user()
            }
        )),
        row!("surname", "invisible only", |c| Call::CreateUser(
            pb::CreateUserRequest {
                surname: INVISIBLE.into(),
                ..c.new_user()
            }
        )),
        row!("email", "two addresses", |c| Call::CreateUser(pb::CreateUserRequest {
            email: "a,evil@b.dk".into(),
            ..c.new_user()
        })),
        row!("email", "display name and address", |c| Call::CreateUser(
            pb::CreateUserRequest {
                email: "x<evil@attacker.dk>".into(),
                ..c.new_user()
            }
        )),
        // A service account (R-ACC-5) is no person: no roles, no identity.
        row!("roles", "a service account's", |c| Call::CreateUser(
            pb::CreateUserRequest {
                service_account: true,
                cpr: String::new(),
                roles: vec![pb::Role::UserAdmin as i32],
                ..c.new_user()
            }
        )),
        row!("cpr", "a service account's", |c| Call::CreateUser(
            pb::CreateUserRequest {
                service_account: true,
                ..c.new_user()
            }
        )),
        row!("identification_means", "a service account's", |c| Call::CreateUser(
            pb::CreateUserRequest {
                service_account: true,
                cpr: String::new(),
                identification_means: vec![pb::IdentificationMeans::Mitid as i32],
                ..c.new_user()
            }
        )),
        row!("identification_means", "a means the organisation does not allow", |c| {
            Call::CreateUser(pb::CreateUserRequest {
                identification_means: vec![pb::IdentificationMeans::Password as i32],
                ..c.new_user()
            })
        }),
        row!("signing_right", "a service account's", |c| Call::CreateUser(
            pb::CreateUserRequest {
                service_account: true,
                cpr: String::new(),
                signing_right: true,
                ..c.new_user()
            }
        )),
        row!("anonymous", "a service account", |c| Call::CreateUser(
            pb::CreateUserRequest {
                service_account: true,
                cpr: String::new(),
                anonymous: true,
                ..c.new_user()
            }
        )),
        row!("username", "a space", |c| Call::CreateUser(pb::CreateUserRequest {
            username: "a b".into(),
            ..c.new_user()
        })),
        row!("phone", "letters", |c| Call::CreateUser(pb::CreateUserRequest {
            phone: "12ab34".into(),
            ..c.new_user()
        })),
        row!("external_ids", "four", |c| Call::CreateUser(pb::CreateUserRequest {
            external_ids: vec!["1".into(), "2".into(), "3".into(), "4".into()],
            ..c.new_user()
        })),
        row!("external_ids", "one of 101 characters", |c| Call::CreateUser(
            pb::CreateUserRequest {
                external_ids: vec![long(101)],
                ..c.new_user()
            }
        )),
        row!("cpr", "dashes anywhere", |c| Call::CreateUser(pb::CreateUserRequest {
            cpr: CPR_DASHED.into(),
            ..c.new_user()
        })),
        row!("cpr", "born in the future", |c| Call::CreateUser(
            pb::CreateUserRequest {
                cpr: CPR_FUTURE.into(),
                ..c.new_user()
            }
        )),
        row!("cpr", "neither CPR number nor birth date", |c| Call::CreateUser(
            pb::CreateUserRequest {
                cpr: String::new(),
                ..c.new_user()
            }
        )),
        row!("birth_date", "unpadded", |c| Call::CreateUser(
            c.new_user_born(DATE_UNPADDED)
        )),
        row!("birth_date", "in the future", |c| Call::CreateUser(
            c.new_user_born(DATE_FUTURE)
        )),
        row!("request_id", "101 characters", |c| Call::CreateUser(
            pb::CreateUserRequest {
                request_id: long(101),
                ..c.new_user()
            }
        )),
        // A NUL, which PostgreSQL cannot store or compare (INTERNAL there,
        // stored on SQLite).
        row!("request_id", "a NUL", |c| Call::CreateUser(pb::CreateUserRequest {
            request_id: "nøgle\0".into(),
            ..c.new_user()
        })),
        row!("unit_id", "no unit of the organisation", |c| Call::CreateUser(
            pb::CreateUserRequest {
                unit_id: uuid::Uuid::now_v7().to_string(),
                ..c.new_user()
            }
        )),
        row!("roles[0]", "ROLE_UNSPECIFIED", |c| Call::CreateUser(
            pb::CreateUserRequest {
                roles: vec![pb::Role::Unspecified as i32],
                ..c.new_user()
            }
        )),
        // UpdateUser: the user's fields under `user.`; the new CPR number is
        // the request's own `cpr`.
        row!("user.first_name", "101 characters", |c| c
            .update_user(&["first_name"], |u| u.first_name = long(101))),
        row!("user.first_name", "invisible only", |c| c
            .update_user(&["first_name"], |u| u.first_name = INVISIBLE.into())),
        row!("user.surname", "101 characters", |c| c
            .update_user(&["surname"], |u| u.surname = long(101))),
        row!("user.surname", "invisible only", |c| c
            .update_user(&["surname"], |u| u.surname = INVISIBLE.into())),
        row!("user.email", "two addresses", |c| c
            .update_user(&["email"], |u| u.email = "a,evil@b.dk".into())),
        row!("user.username", "a space", |c| c
            .update_user(&["username"], |u| u.username = "a b".into())),
        row!("user.phone", "letters", |c| c
            .update_user(&["phone"], |u| u.phone = "12ab34".into())),
        row!("user.external_ids", "four", |c| c.update_user(&["external_ids"], |u| {
            u.external_ids = vec!["1".into(), "2".into(), "3".into(), "4".into()]
        })),
        row!("user.external_ids", "one of 101 characters", |c| c
            .update_user(&["external_ids"], |u| u.external_ids = vec![long(101)])),
        row!("cpr", "dashes anywhere", |c| c.update_user_cpr(CPR_DASHED)),
        row!("cpr", "born in the future", |c| c.update_user_cpr(CPR_FUTURE)),
        row!("user.birth_date", "unpadded", |c| c
            .update_user(&["birth_date"], |u| u.birth_date = DATE_UNPADDED.into())),
        row!("user.birth_date", "in the future", |c| c
            .update_user(&["birth_date"], |u| u.birth_date = DATE_FUTURE.into())),
        row!("user.unit_id", "no unit of the organisation", |c| c
            .update_user(&["unit_id"], |u| u.unit_id =
                uuid::Uuid::now_v7().to_string())),
        row!("user.language", "LANGUAGE_UNSPECIFIED", |c| c
            .update_user(&["language"], |u| u.language =
                pb::Language::Unspecified as i32)),
        row!("user.roles[0]", "ROLE_UNSPECIFIED", |c| c
            .update_user(&["roles"], |u| u.roles =
                vec![pb::Role::Unspecified as i32])),
        row!("user.etag", "not an etag of ours", |c| c.update_user(
            &["first_name"],
            |u| {
                u.first_name = "Ny".into();
                u.etag = GARBLED_ETAG.into();
            }
        )),
        row!("update_mask", "anonymous", |c| c
            .update_user(&["anonymous"], |u| u.anonymous = true)),
        // CreateOrganisation.
        row!("name", "201 characters", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                name: long(201),
                ..c.new_organisation()
            }
        )),
        row!("name", "invisible only", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                name: INVISIBLE.into(),
                ..c.new_organisation()
            }
        )),
        row!("name", "a paragraph separator", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                name: "Firma\u{2029}A/S".into(),
                ..c.new_organisation()
            }
        )),
        row!("cvr", "modulus 11", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                cvr: "10150818".into(),
                ..c.new_organisation()
            }
        )),
        row!("ean_numbers", "21", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                ean_numbers: vec![EAN.into(); 21],
                ..c.new_organisation()
            }
        )),
        row!("ean_numbers[1]", "12 digits", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                ean_numbers: vec![EAN.into(), EAN_SHORT.into()],
                ..c.new_organisation()
            }
        )),
        row!("licence_count", "0", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                licence_count: Some(0),
                ..c.new_organisation()
            }
        )),
        row!("max_administrators", "-1", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                max_administrators: Some(-1),
                ..c.new_organisation()
            }
        )),
        row!("request_id", "101 characters", |c| Call::CreateOrganisation(
            pb::CreateOrganisationRequest {
                request_id: long(101),
                ..c.new_organisation()
            }
        )),
        // UpdateOrganisation: under `organisation.`.
        row!("organisation.name", "201 characters", |c| c
            .update_organisation(&["name"], |o| o.name = long(201))),
        row!("organisation.name", "invisible only", |c| c
            .update_organisation(&["name"], |o| o.name = INVISIBLE.into())),
        row!("organisation.ean_numbers", "21", |c| c
            .update_organisation(&["ean_numbers"], |o| o.ean_numbers =
                vec![EAN.into(); 21])),
        row!("organisation.ean_numbers[1]", "12 digits", |c| c
            .update_organisation(&["ean_numbers"], |o| o.ean_numbers =
                vec![EAN.into(), EAN_SHORT.into()])),
        row!("organisation.etag", "not an etag of ours", |c| c.update_organisation(
            &["name"],
            |o| {
                o.name = "Nyt navn ApS".into();
                o.etag = GARBLED_ETAG.into();
            }
        )),
        // UpdateOrganisationSettings: under `settings.`.
        row!("settings.max_administrators", "1001", |c| c
            .update_settings(&["max_administrators"], |s| s.max_administrators =
                1001)),
        row!("settings.allowed_identification_means", "none", |c| c
            .update_settings(&["allowed_identification_means"], |s| s
                .allowed_identification_means
                .clear())),
        row!("settings.deletion_policy", "DELETION_POLICY_UNSPECIFIED", |c| c
            .update_settings(&["deletion_policy"], |s| s.deletion_policy = 0)),
        row!("settings.billing.name", "201 characters", |c| c
            .billing(|b| b.name = long(201))),
        row!("settings.billing.address", "501 characters", |c| c
            .billing(|b| b.address = long(501))),
        row!("settings.billing.email", "no address", |c| c
            .billing(|b| b.email = "nope".into())),
        row!("settings.billing.reference", "101 characters", |c| c
            .billing(|b| b.reference = long(101))),
        // A NUL, which PostgreSQL cannot store (it answered INTERNAL).
        row!("settings.billing.name", "a NUL", |c| c
            .billing(|b| b.name = "Værksted\0ApS".into())),
        row!("settings.billing.address", "a NUL", |c| c
            .billing(|b| b.address = "Vej 1\n\0 8000 Aarhus".into())),
        row!("settings.billing.reference", "a line break", |c| c
            .billing(|b| b.reference = "PO 1\r\nBcc: x".into())),
        row!("settings.etag", "not an etag of ours", |c| c.update_settings(
            &["max_administrators"],
            |s| {
                s.max_administrators = 3;
                s.etag = GARBLED_ETAG.into();
            }
        )),
        // SetLicenceCount.
        row!("licence_count", "0", |c| Call::SetLicenceCount(
            pb::SetLicenceCountRequest {
                organisation_id: c.org.id.clone(),
                licence_count: 0,
            }
        )),
        // CreateUnit and UpdateUnit.
        row!("name", "201 characters", |c| Call::CreateUnit(pb::CreateUnitRequest {
            name: long(201),
            ..c.new_unit()
        })),
        row!("name", "invisible only", |c| Call::CreateUnit(pb::CreateUnitRequest {
            name: INVISIBLE.into(),
            ..c.new_unit()
        })),
        row!("number", "a department with a number", |c| Call::CreateUnit(
            pb::CreateUnitRequest {
                number: "1234".into(),
                ..c.new_unit()
            }
        )),
        row!("request_id", "101 characters", |c| Call::CreateUnit(
            pb::CreateUnitRequest {
                request_id: long(101),
                ..c.new_unit()
            }
        )),
        row!("unit.name", "201 characters", |c| c
            .update_unit(&["name"], |u| u.name = long(201))),
        row!("unit.name", "invisible only", |c| c
            .update_unit(&["name"], |u| u.name = INVISIBLE.into())),
        row!("unit.parent_id", "under itself", |c| c
            .update_unit(&["parent_id"], |u| u.parent_id = u.id.clone())),
        row!("update_mask", "a field that cannot change", |c| c
            .update_unit(&["kind"], |_| {})),
        // DeactivateUser: its etag is the request's own.
        row!("until", "in the past", |c| Call::DeactivateUser(
            pb::DeactivateUserRequest {
                until: Some(past()),
                ..c.deactivate()
            }
        )),
        row!("reason", "501 characters", |c| Call::DeactivateUser(
            pb::DeactivateUserRequest {
                reason: long(501),
                ..c.deactivate()
            }
        )),
        row!("reason", "padded with 3000 spaces", |c| Call::DeactivateUser(
            pb::DeactivateUserRequest {
                reason: format!("orlov{}", " ".repeat(3000)),
                ..c.deactivate()
            }
        )),
        row!("reason", "a NUL, for a deactivation", |c| Call::DeactivateUser(
            pb::DeactivateUserRequest {
                reason: "orlov\0".into(),
                ..c.deactivate()
            }
        )),
        row!("etag", "not an etag of ours", |c| Call::DeactivateUser(
            pb::DeactivateUserRequest {
                etag: GARBLED_ETAG.into(),
                ..c.deactivate()
            }
        )),
        // ActivateUser, with a live code: the proof is refused before the
        // code is looked at, so no attempt is counted.
        row!("cpr", "dashes anywhere", |c| c.activate(CPR_DASHED, "")),
        row!("cpr", "born in the future", |c| c.activate(CPR_FUTURE, "")),
        row!("birth_date", "unpadded", |c| c.activate("", DATE_UNPADDED)),
        row!("birth_date", "in the future", |c| c.activate("", DATE_FUTURE)),
        // The new password is checked before the code is looked at.
        row!("password", "14 characters", |c| Call::ActivateUser(
            pb::ActivateUserRequest {
                password: "fjorten tegn!!".into(),
                ..activate_request(c.activate("", "1980-01-01"))
            }
        )),
        // Login: a missing login id or password is bad input, not a failed
        // login (nothing is counted).
        row!("login_id", "empty", |_| Call::Login(pb::LoginRequest {
            password: "some password of some length".into(),
            ..Default::default()
        })),
        row!("login_id", "a NUL", |_| Call::Login(pb::LoginRequest {
            login_id: "anna\0@firma.dk".into(),
            password: "some password of some length".into(),
            ..Default::default()
        })),
        row!("password", "empty", |c| Call::Login(pb::LoginRequest {
            login_id: c.member.email.clone(),
            ..Default::default()
        })),
        // The second factor of a login, and confirming an authenticator app.
        row!("challenge_token", "empty", |_| Call::VerifyLoginCode(
            pb::VerifyLoginCodeRequest {
                challenge_token: String::new(),
                code: "123456".into(),
            }
        )),
        row!("code", "letters", |_| Call::VerifyLoginCode(
            pb::VerifyLoginCodeRequest {
                challenge_token: "oat_some-challenge".into(),
                code: "12ab56".into(),
            }
        )),
        row!("code", "5 digits", |_| Call::ConfirmTotp(pb::ConfirmTotpRequest {
            code: "12345".into()
        })),
        row!("code", "not the app's code", |c| Call::ConfirmTotp(
            pb::ConfirmTotpRequest {
                code: c.wrong_app_code()
            }
        )),
        row!("login_id", "blank", |_| Call::RequestPasswordReset(
            pb::RequestPasswordResetRequest {
                login_id: "   ".into(),
                ..Default::default()
            }
        )),
        // ResetPassword: the new password is checked before the token.
        row!("token", "empty", |_| Call::ResetPassword(pb::ResetPasswordRequest {
            token: String::new(),
            password: "et nyt og langt kodeord".into(),
        })),
        row!("password", "14 characters", |_| Call::ResetPassword(
            pb::ResetPasswordRequest {
                token: "oat_some-token".into(),
                password: "fjorten tegn!!".into(),
            }
        )),
        // VerifyEmail.
        row!("token", "blank", |_| Call::VerifyEmail(pb::VerifyEmailRequest {
            token: "  ".into()
        })),
        // CreateApiToken.
        row!("name", "empty", |c| Call::CreateApiToken(pb::CreateApiTokenRequest {
            name: String::new(),
            ..c.api_token()
        })),
        row!("request_id", "101 characters", |c| Call::CreateApiToken(
            pb::CreateApiTokenRequest {
                request_id: long(101),
                ..c.api_token()
            }
        )),
        row!("request_id", "a NUL", |c| Call::CreateApiToken(
            pb::CreateApiTokenRequest {
                request_id: "nøgle\0".into(),
                ..c.api_token()
            }
        )),
        row!("expire_time", "in the past", |c| Call::CreateApiToken(
            pb::CreateApiTokenRequest {
                expire_time: Some(past()),
                ..c.api_token()
            }
        )),
        // Anonymity.
        row!("reason", "under 10 characters", |_| Call::RequestAnonymity(
            pb::RequestAnonymityRequest { reason: "kort".into() }
        )),
        row!("reason", "a NUL", |_| Call::RequestAnonymity(
            pb::RequestAnonymityRequest {
                reason: "Jeg vil være anonym\0".into()
            }
        )),
        row!("reason", "a right-to-left override", |_| Call::RequestAnonymity(
            pb::RequestAnonymityRequest {
                reason: "Se fakturaen: https://firma.dk/\u{202E}fdp.exe".into()
            }
        )),
        row!("note", "1001 characters", |c| Call::DecideAnonymityRequest(
            pb::DecideAnonymityRequestRequest {
                id: c.anonymity_request_id.clone(),
                approve: false,
                note: long(1001),
            }
        )),
        // Rights requests.
        row!("role", "the plain user role every member holds", |_| {
            Call::RequestRights(pb::RequestRightsRequest {
                requested: Some(pb::request_rights_request::Requested::Role(pb::Role::User as i32)),
                reason: "Jeg skal hjælpe til".into(),
            })
        }),
        row!("reason", "under 10 characters", |_| Call::RequestRights(
            pb::RequestRightsRequest {
                requested: Some(pb::request_rights_request::Requested::AdminLevel(
                    pb::RequestedAdminLevel {
                        level: 4,
                        unit_id: String::new(),
                    }
                )),
                reason: "kort".into(),
            }
        )),
        row!("requested", "neither a level nor a grant", |_| Call::RequestRights(
            pb::RequestRightsRequest {
                requested: None,
                reason: "Til regnskabet i Nord".into(),
            }
        )),
        row!("note", "1001 characters", |c| Call::DecideRightsRequest(
            pb::DecideRightsRequestRequest {
                id: c.rights_request_id.clone(),
                approve: false,
                note: long(1001),
            }
        )),
        // Lists: page bounds, filters.
        row!("page_size", "negative", |c| Call::ListUsers(pb::ListUsersRequest {
            page_size: -1,
            ..c.list_users()
        })),
        row!("page_size", "over 500", |c| Call::ListUsers(pb::ListUsersRequest {
            page_size: 501,
            ..c.list_users()
        })),
        row!("page_token", "not one of ours", |c| Call::ListUsers(
            pb::ListUsersRequest {
                page_token: "garbage".into(),
                ..c.list_users()
            }
        )),
        row!("text", "101 characters", |c| Call::ListUsers(pb::ListUsersRequest {
            text: long(101),
            ..c.list_users()
        })),
        row!("text", "a NUL", |c| Call::ListUsers(pb::ListUsersRequest {
            text: "Anna\0".into(),
            ..c.list_users()
        })),
        row!("level", "5", |c| Call::GrantAdminLevel(pb::GrantAdminLevelRequest {
            user_id: c.member.id.clone(),
            level: 5,
            unit_id: String::new(),
        })),
        row!("level", "0", |c| Call::GrantAdminLevel(pb::GrantAdminLevelRequest {
            user_id: c.member.id.clone(),
            level: 0,
            unit_id: c.unit.id.clone(),
        })),
        row!("unit_id", "no unit of the organisation", |c| Call::GrantAdminLevel(
            pb::GrantAdminLevelRequest {
                user_id: c.member.id.clone(),
                level: 3,
                unit_id: uuid::Uuid::now_v7().to_string(),
            }
        )),
        row!("grantee_user_id", "the owner", |c| Call::ShareAccess(
            pb::ShareAccessRequest {
                owner_user_id: c.member.id.clone(),
                grantee_user_id: c.member.id.clone(),
                access: pb::ShareAccessLevel::Read as i32,
            }
        )),
        row!("x-orgadmin-act-as", "not a user id", |c| Call::GetUserActingAs(
            &[b"the boss"],
            pb::GetUserRequest { id: c.admin.id.clone() }
        )),
        row!("access", "unspecified", |c| Call::ShareAccess(pb::ShareAccessRequest {
            owner_user_id: c.member.id.clone(),
            grantee_user_id: c.admin.id.clone(),
            access: pb::ShareAccessLevel::Unspecified as i32,
        })),
        row!("name", "blank", |c| Call::CreateGroup(pb::CreateGroupRequest {
            organisation_id: c.org.id.clone(),
            name: " \t ".into(),
            description: String::new(),
        })),
        row!("description", "over 1000 characters", |c| Call::CreateGroup(
            pb::CreateGroupRequest {
                organisation_id: c.org.id.clone(),
                name: "Bogholderi".into(),
                description: long(1001),
            }
        )),
        row!("description", "a NUL", |c| Call::CreateGroup(pb::CreateGroupRequest {
            organisation_id: c.org.id.clone(),
            name: "Bogholderi".into(),
            description: "Løn\0".into(),
        })),
        row!("organisation_cvr", "not 8 digits", |c| Call::AddGroupMember(
            pb::AddGroupMemberRequest {
                group_id: uuid::Uuid::now_v7().to_string(),
                user_id: c.member.id.clone(),
                organisation_cvr: "12".into(),
            }
        )),
        row!("group_id", "no group of the organisation", |c| Call::ListUsers(
            pb::ListUsersRequest {
                organisation_id: c.org.id.clone(),
                group_id: uuid::Uuid::now_v7().to_string(),
                ..Default::default()
            }
        )),
        row!("grantee_user_id", "a user and a group both", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                grantee_group_id: uuid::Uuid::now_v7().to_string(),
                ..grant_request(c)
            }
        )),
        row!("grantee_user_id", "neither a user nor a group", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                grantee_user_id: String::new(),
                ..grant_request(c)
            }
        )),
        row!("user.roles", "an administrative role for a service account", |c| {
            Call::UpdateUser(pb::UpdateUserRequest {
                user: Some(pb::User {
                    roles: vec![pb::Role::UserAdmin as i32],
                    ..c.service_account.clone()
                }),
                update_mask: mask(&["roles"]),
                cpr: String::new(),
            })
        }),
        row!("user.signing_right", "a signing right for a service account", |c| {
            Call::UpdateUser(pb::UpdateUserRequest {
                user: Some(pb::User {
                    signing_right: true,
                    ..c.service_account.clone()
                }),
                update_mask: mask(&["signing_right"]),
                cpr: String::new(),
            })
        }),
        row!(
            "user.identification_means",
            "identification means for a service account",
            |c| Call::UpdateUser(pb::UpdateUserRequest {
                user: Some(pb::User {
                    identification_means: vec![pb::IdentificationMeans::Mitid as i32],
                    ..c.service_account.clone()
                }),
                update_mask: mask(&["identification_means"]),
                cpr: String::new(),
            })
        ),
        row!(
            "user.identification_means",
            "a means the organisation does not allow",
            |c| Call::UpdateUser(pb::UpdateUserRequest {
                user: Some(pb::User {
                    identification_means: vec![pb::IdentificationMeans::Password as i32],
                    ..c.member.clone()
                }),
                update_mask: mask(&["identification_means"]),
                cpr: String::new(),
            })
        ),
        row!("cpr", "a CPR number for a service account", |c| Call::UpdateUser(
            pb::UpdateUserRequest {
                user: Some(c.service_account.clone()),
                update_mask: mask(&["cpr"]),
                cpr: "010190-1234".into(),
            }
        )),
        row!("note", "over 1000 characters", |_| Call::DecideJoinRequest(
            pb::DecideJoinRequestRequest {
                id: uuid::Uuid::now_v7().to_string(),
                approve: false,
                note: long(1001),
                unit_id: String::new(),
            }
        )),
        row!("unit_id", "a placement for a rejection", |c| Call::DecideJoinRequest(
            pb::DecideJoinRequestRequest {
                id: uuid::Uuid::now_v7().to_string(),
                approve: false,
                note: String::new(),
                unit_id: c.unit.id.clone(),
            }
        )),
        row!("id", "not an id", |_| Call::DecideJoinRequest(
            pb::DecideJoinRequestRequest {
                id: "forty-two".into(),
                approve: true,
                ..Default::default()
            }
        )),
        row!("organisation_cvr", "not 8 digits", |_| Call::RequestToJoin(
            join_request("1234")
        )),
        row!("first_name", "blank", |c| Call::RequestToJoin(
            pb::RequestToJoinRequest {
                first_name: " ".into(),
                ..join_request(&c.org.cvr)
            }
        )),
        row!("surname", "blank", |c| Call::RequestToJoin(pb::RequestToJoinRequest {
            surname: String::new(),
            ..join_request(&c.org.cvr)
        })),
        row!("email", "no address", |c| Call::RequestToJoin(
            pb::RequestToJoinRequest {
                email: "ikke en adresse".into(),
                ..join_request(&c.org.cvr)
            }
        )),
        row!("birth_date", "not a date", |c| Call::RequestToJoin(
            pb::RequestToJoinRequest {
                birth_date: "17/05/1990".into(),
                ..join_request(&c.org.cvr)
            }
        )),
        row!("reason", "under 10 characters", |c| Call::RequestToJoin(
            pb::RequestToJoinRequest {
                reason: "kort".into(),
                ..join_request(&c.org.cvr)
            }
        )),
        row!("first_name", "an isolate that reorders it", |c| Call::RequestToJoin(
            pb::RequestToJoinRequest {
                first_name: "Refusion på evil.example/x\u{2067}".into(),
                ..join_request(&c.org.cvr)
            }
        )),
        row!("reason", "a NUL", |c| Call::RequestToJoin(pb::RequestToJoinRequest {
            reason: "Jeg arbejder i Nord\0".into(),
            ..join_request(&c.org.cvr)
        })),
        row!("resource", "a space in it", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                resource: "faktura 113".into(),
                ..grant_request(c)
            }
        )),
        row!("right", "upper case and a space", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                right: "Tax VAT".into(),
                ..grant_request(c)
            }
        )),
        row!("request_id", "101 characters, of a grant", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                request_id: "g".repeat(101),
                ..grant_request(c)
            }
        )),
        row!("right", "a NUL", |c| Call::CreateGrant(pb::CreateGrantRequest {
            right: "tax\0".into(),
            ..grant_request(c)
        })),
        row!("resource", "a NUL, as a filter", |c| Call::ListGrants(
            pb::ListGrantsRequest {
                organisation_id: c.org.id.clone(),
                resource: "invoice\0".into(),
                ..Default::default()
            }
        )),
        row!("right", "101 characters", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                right: "a".repeat(101),
                ..grant_request(c)
            }
        )),
        row!("actions", "none", |c| Call::CreateGrant(pb::CreateGrantRequest {
            actions: vec![],
            ..grant_request(c)
        })),
        row!("grantable_actions", "edit, beyond the actions", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                grantable_actions: vec![pb::GrantAction::Edit as i32],
                ..grant_request(c)
            }
        )),
        row!("grantable_actions", "read, for a service account (R-ACC-5)", |c| {
            Call::CreateGrant(pb::CreateGrantRequest {
                grantee_user_id: c.service_account.id.clone(),
                grantable_actions: vec![pb::GrantAction::Read as i32],
                ..grant_request(c)
            })
        }),
        row!("may_authorise", "true, for a service account (R-ACC-5)", |c| {
            Call::CreateGrant(pb::CreateGrantRequest {
                grantee_user_id: c.service_account.id.clone(),
                may_authorise: true,
                ..grant_request(c)
            })
        }),
        row!("unit_id", "no unit of the organisation", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                unit_id: uuid::Uuid::now_v7().to_string(),
                ..grant_request(c)
            }
        )),
        row!("unit_id", "no unit of the organisation", |c| Call::ListUsers(
            pb::ListUsersRequest {
                unit_id: uuid::Uuid::now_v7().to_string(),
                ..c.list_users()
            }
        )),
        row!("end_time", "before start_time", |c| Call::ListUserHistory(
            pb::ListUserHistoryRequest {
                user_id: c.member.id.clone(),
                start_time: Some(in_ms(0)),
                end_time: Some(past()),
                ..Default::default()
            }
        )),
        row!("activities[0]", "HISTORY_ACTIVITY_UNSPECIFIED", |c| {
            Call::ListUserHistory(pb::ListUserHistoryRequest {
                user_id: c.member.id.clone(),
                activities: vec![pb::HistoryActivity::Unspecified as i32],
                ..Default::default()
            })
        }),
        // Notifications.
        row!("ids", "none", |_| Call::MarkNotificationsRead(
            pb::MarkNotificationsReadRequest { ids: Vec::new() }
        )),
        row!("ids[0]", "not a UUID", |_| Call::MarkNotificationsRead(
            pb::MarkNotificationsReadRequest {
                ids: vec!["nope".into()]
            }
        )),
        row!("preferences", "none", |_| Call::UpdateNotificationPreferences(
            pb::UpdateNotificationPreferencesRequest {
                preferences: Vec::new()
            }
        )),
        row!("preferences[0].kind", "NOTIFICATION_KIND_UNSPECIFIED", |_| preference(
            pb::NotificationKind::Unspecified,
            pb::DeliveryChannel::InApp
        )),
        row!(
            "preferences[0].channel",
            "DELIVERY_CHANNEL_UNSPECIFIED",
            |_| preference(pb::NotificationKind::Account, pb::DeliveryChannel::Unspecified)
        ),
        // CreateImport: the spec first, then the file in pieces.
        row!("spec", "missing: the file comes first", |_| import(
            None,
            b"a;b".to_vec()
        )),
        row!("spec.file_name", "256 characters", |c| import(
            Some(pb::ImportSpec {
                file_name: long(256),
                ..c.import_spec()
            }),
            b"a;b".to_vec()
        )),
        row!("spec.kind", "unspecified", |c| import(
            Some(pb::ImportSpec {
                kind: pb::ImportKind::Unspecified as i32,
                ..c.import_spec()
            }),
            b"a;b".to_vec()
        )),
        row!("spec.request_id", "101 characters", |c| import(
            Some(pb::ImportSpec {
                request_id: long(101),
                ..c.import_spec()
            }),
            b"a;b".to_vec()
        )),
        row!("chunk", "1 MiB and a byte", |c| import(
            Some(c.import_spec()),
            vec![b'x'; (1 << 20) + 1]
        )),
        row!("chunk", "no file at all", |c| import(Some(c.import_spec()), Vec::new())),
        row!("user_ids", "neither users nor a job", |c| Call::BatchSendActivation(
            pb::BatchSendActivationRequest {
                organisation_id: c.org.id.clone(),
                ..Default::default()
            }
        )),
        row!("user_ids", "users and a job", |c| Call::BatchSendActivation(
            pb::BatchSendActivationRequest {
                organisation_id: c.org.id.clone(),
                user_ids: vec![c.member.id.clone()],
                import_id: uuid::Uuid::now_v7().to_string(),
            }
        )),
        row!("request_id", "101 characters, of a SendActivation", |c| {
            Call::SendActivation(pb::SendActivationRequest {
                user_id: c.member.id.clone(),
                request_id: "s".repeat(101),
            })
        }),
        row!("request_id", "a NUL, of a SendActivation", |c| Call::SendActivation(
            pb::SendActivationRequest {
                user_id: c.member.id.clone(),
                request_id: "nøgle\0".into(),
            }
        )),
        // Certificates: the order (R-CERT-2).
        row!("request_id", "101 characters, of an order", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                request_id: "o".repeat(101),
                ..user_certificate(c)
            }
        )),
        row!("usages", "none", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                usages: Vec::new(),
                ..user_certificate(c)
            }
        )),
        row!("usages[0]", "an organisation usage on a user certificate", |c| {
            Call::OrderCertificate(pb::OrderCertificateRequest {
                usages: vec![pb::CertificateUsage::Sealing as i32],
                ..user_certificate(c)
            })
        }),
        row!("usages[1]", "the same usage twice", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                usages: vec![
                    pb::CertificateUsage::Authentication as i32,
                    pb::CertificateUsage::Authentication as i32
                ],
                ..user_certificate(c)
            }
        )),
        row!("usages[0]", "CERTIFICATE_USAGE_UNSPECIFIED", |c| {
            Call::OrderCertificate(pb::OrderCertificateRequest {
                usages: vec![pb::CertificateUsage::Unspecified as i32],
                ..user_certificate(c)
            })
        }),
        row!("holder_id", "missing on a user certificate", |c| {
            Call::OrderCertificate(pb::OrderCertificateRequest {
                holder_id: String::new(),
                ..user_certificate(c)
            })
        }),
        row!("holder_id", "given on an organisation certificate", |c| {
            Call::OrderCertificate(pb::OrderCertificateRequest {
                holder_id: c.member.id.clone(),
                ..organisation_certificate(c)
            })
        }),
        row!("label", "given on a user certificate", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                label: "Min nøgle".into(),
                ..user_certificate(c)
            }
        )),
        row!("label", "missing on an organisation certificate", |c| {
            Call::OrderCertificate(pb::OrderCertificateRequest {
                label: String::new(),
                ..organisation_certificate(c)
            })
        }),
        row!("label", "65 characters", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                label: long(65),
                ..organisation_certificate(c)
            }
        )),
        row!("email", "not plain ASCII", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                email: "søren@firma.dk".into(),
                ..user_certificate(c)
            }
        )),
        row!("email", "two addresses", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                email: "a,evil@b.dk".into(),
                ..user_certificate(c)
            }
        )),
        row!("email", "not the holder's own", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                email: "someone.else@firma.dk".into(),
                ..user_certificate(c)
            }
        )),
        row!("kind", "CERTIFICATE_KIND_UNSPECIFIED", |c| Call::OrderCertificate(
            pb::OrderCertificateRequest {
                kind: pb::CertificateKind::Unspecified as i32,
                ..user_certificate(c)
            }
        )),
        // The pickup and the renewal: the token and the CSR.
        row!("token", "blank", |_| Call::IssueCertificate(
            pb::IssueCertificateRequest {
                token: " ".into(),
                csr_pem: p256_csr(),
            }
        )),
        row!(
            "csr_pem",
            "a key whose algorithm parameters are not the standard's",
            rule: "algorithm parameters",
            |c| {
                Call::IssueCertificate(pb::IssueCertificateRequest {
                    token: c.encryption_pickup.clone(),
                    csr_pem: rsa_csr_without_null_parameters(),
                })
            }
        ),
        row!("csr_pem", "cut short", |c| Call::IssueCertificate(
            pb::IssueCertificateRequest {
                token: c.encryption_pickup.clone(),
                csr_pem: CSR_CUT.into(),
            }
        )),
        row!("csr_pem", "an Ed25519 key for e-mail encryption", |c| {
            Call::IssueCertificate(pb::IssueCertificateRequest {
                token: c.encryption_pickup.clone(),
                csr_pem: c.ed25519_csr.clone(),
            })
        }),
        row!("csr_pem", "not PEM", |c| Call::RenewCertificate(
            pb::RenewCertificateRequest {
                certificate_id: c.certificate_id.clone(),
                csr_pem: "MIIB".into(),
            }
        )),
        // Revocation.
        row!("reason", "SUPERSEDED, which only a renewal sets", |c| {
            Call::RevokeCertificate(pb::RevokeCertificateRequest {
                certificate_id: c.certificate_id.clone(),
                reason: pb::RevocationReason::Superseded as i32,
                etag: String::new(),
            })
        }),
        row!("reason", "REVOCATION_REASON_UNSPECIFIED", |c| {
            Call::RevokeCertificate(pb::RevokeCertificateRequest {
                certificate_id: c.certificate_id.clone(),
                reason: pb::RevocationReason::Unspecified as i32,
                etag: String::new(),
            })
        }),
        row!("etag", "not an etag of ours", |c| Call::RevokeCertificate(
            pb::RevokeCertificateRequest {
                certificate_id: c.certificate_id.clone(),
                reason: pb::RevocationReason::KeyAccessLost as i32,
                etag: GARBLED_ETAG.into(),
            }
        )),
        // The member holds the certificate and is its contact person.
        row!("contact_id", "the certificate's present contact person", |c| {
            Call::ChangeCertificateContact(pb::ChangeCertificateContactRequest {
                certificate_id: c.certificate_id.clone(),
                contact_id: c.member.id.clone(),
                etag: String::new(),
            })
        }),
        // Search (R-CERT-6).
        row!("serial", "not hexadecimal", |c| Call::SearchCertificates(
            pb::SearchCertificatesRequest {
                serial: "xyz".into(),
                ..search_certificates(c)
            }
        )),
        row!("subject_text", "201 characters", |c| Call::SearchCertificates(
            pb::SearchCertificatesRequest {
                subject_text: long(201),
                ..search_certificates(c)
            }
        )),
        row!("subject_text", "a NUL", |c| Call::SearchCertificates(
            pb::SearchCertificatesRequest {
                subject_text: "Anna\0".into(),
                ..search_certificates(c)
            }
        )),
        row!("email", "a NUL", |c| Call::SearchCertificates(
            pb::SearchCertificatesRequest {
                email: "anna\0@firma.dk".into(),
                ..search_certificates(c)
            }
        )),
        row!("expire_time_to", "before expire_time_from", |c| {
            Call::SearchCertificates(pb::SearchCertificatesRequest {
                expire_time_from: Some(in_ms(0)),
                expire_time_to: Some(past()),
                ..search_certificates(c)
            })
        }),
        row!("page_size", "over 500", |c| Call::SearchCertificates(
            pb::SearchCertificatesRequest {
                page_size: 501,
                ..search_certificates(c)
            }
        )),
        row!("page_token", "not one of ours", |c| Call::SearchCertificates(
            pb::SearchCertificatesRequest {
                page_token: "garbage".into(),
                ..search_certificates(c)
            }
        )),
        row!("state", "not a state", |c| Call::SearchCertificates(
            pb::SearchCertificatesRequest {
                state: 99,
                ..search_certificates(c)
            }
        )),
        // Found by counting rules per call site, and by reading paths
        // passed on, `.within` prefixes, pairs, constants and `{field}[{i}]`.
        row!("password", "over four times the longest password", rule: "is too long", |c| Call::Login(
            pb::LoginRequest {
                login_id: c.member.email.clone(),
                password: long(4 * orgadmin_domain::passwords::MAX_PASSWORD_CHARS + 1),
                ..Default::default()
            }
        )),
        row!("challenge_token", "201 characters", rule: "at most 200 characters", |_| Call::VerifyLoginCode(
            pb::VerifyLoginCodeRequest {
                challenge_token: long(201),
                code: "123456".into(),
            }
        )),
        row!("password", "empty", rule: "is required", |_| Call::ResetPassword(pb::ResetPasswordRequest {
            token: "oat_some-token".into(),
            password: String::new(),
        })),
        row!("password", "holding the person's e-mail address", rule: "must not contain your login id", |c| {
            Call::ResetPassword(pb::ResetPasswordRequest {
                token: c.reset_token.clone(),
                password: format!("{} er mit nye kodeord", c.member.email),
            })
        }),
        row!("password", "holding the person's e-mail address", rule: "must not contain your login id", |c| {
            Call::ActivateUser(pb::ActivateUserRequest {
                password: format!("{} er mit nye kodeord", c.activation_email),
                ..activate_request(c.activate("", "1977-07-07"))
            })
        }),
        row!("token", "a token and a code both", rule: "give exactly one of token and code", |c| Call::ActivateUser(
            pb::ActivateUserRequest {
                token: "oat_some-token".into(),
                ..activate_request(c.activate("", "1977-07-07"))
            }
        )),
        row!("expire_time", "three years ahead", rule: "at most two years", |c| Call::CreateApiToken(
            pb::CreateApiTokenRequest {
                expire_time: Some(in_ms(3 * 366 * 24 * 3_600_000)),
                ..c.api_token()
            }
        )),
        row!("number", "a production unit's P-number of 9 digits", rule: "a P-number is exactly 10 digits", |c| {
            Call::CreateUnit(pb::CreateUnitRequest {
                kind: pb::UnitKind::ProductionUnit as i32,
                number: "123456789".into(),
                ..c.new_unit()
            })
        }),
        row!("number", "a tax unit's SE-number of 7 digits", rule: "an SE-number is exactly 8 digits", |c| Call::CreateUnit(
            pb::CreateUnitRequest {
                kind: pb::UnitKind::TaxUnit as i32,
                number: "1234567".into(),
                ..c.new_unit()
            }
        )),
        row!("number", "a production unit without one", rule: "a production unit needs its P-number", |c| Call::CreateUnit(
            pb::CreateUnitRequest {
                kind: pb::UnitKind::ProductionUnit as i32,
                ..c.new_unit()
            }
        )),
        row!("parent_id", "a unit of another organisation", rule: "names no unit of this organisation", |c| Call::CreateUnit(
            pb::CreateUnitRequest {
                parent_id: c.other_unit.id.clone(),
                ..c.new_unit()
            }
        )),
        row!("unit.parent_id", "a unit of another organisation", rule: "names no unit of this organisation", |c| c
            .update_unit(&["parent_id"], |u| u.parent_id = c.other_unit.id.clone())),
        row!("update_mask", "empty", rule: "must name at least one field", |c| Call::UpdateUnit(pb::UpdateUnitRequest {
            unit: Some(c.unit.clone()),
            update_mask: None,
        })),
        row!("contact_id", "a person whose address the certificate cannot carry", rule: "cannot carry",
            |c| {
                Call::ChangeCertificateContact(pb::ChangeCertificateContactRequest {
                    certificate_id: c.organisation_certificate_id.clone(),
                    contact_id: c.non_ascii_member_id.clone(),
                    etag: String::new(),
                })
            }
        ),
        row!("x-orgadmin-act-as", "sent twice", rule: "must be sent once", |c| Call::GetUserActingAs(
            &[
                b"0196a4f6-0000-7000-8000-000000000001",
                b"0196a4f6-0000-7000-8000-000000000002"
            ],
            pb::GetUserRequest { id: c.admin.id.clone() }
        )),
        row!("x-orgadmin-act-as", "not text", rule: "must be the id of the user", |c| Call::GetUserActingAs(
            &[b"\xfa\xfb"],
            pb::GetUserRequest { id: c.admin.id.clone() }
        )),
        row!("spec", "a second spec after the first", rule: "only the first message carries the spec", |c| Call::CreateImport(vec![
            pb::CreateImportRequest {
                part: Some(pb::create_import_request::Part::Spec(c.import_spec())),
            },
            pb::CreateImportRequest {
                part: Some(pb::create_import_request::Part::Spec(c.import_spec())),
            },
        ])),
        // CreateGrant's lists of actions, item by item.
        row!("actions[0]", "GRANT_ACTION_UNSPECIFIED", rule: "must be GRANT_ACTION_READ or GRANT_ACTION_EDIT", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                actions: vec![pb::GrantAction::Unspecified as i32],
                ..grant_request(c)
            }
        )),
        row!("actions[1]", "READ twice", rule: "is named twice", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                actions: vec![pb::GrantAction::Read as i32, pb::GrantAction::Read as i32],
                ..grant_request(c)
            }
        )),
        row!("grantable_actions[0]", "GRANT_ACTION_UNSPECIFIED", rule: "must be GRANT_ACTION_READ or GRANT_ACTION_EDIT", |c| {
            Call::CreateGrant(pb::CreateGrantRequest {
                grantable_actions: vec![pb::GrantAction::Unspecified as i32],
                ..grant_request(c)
            })
        }),
        row!("grantable_actions[1]", "READ twice", rule: "is named twice", |c| Call::CreateGrant(
            pb::CreateGrantRequest {
                grantable_actions: vec![pb::GrantAction::Read as i32, pb::GrantAction::Read as i32],
                ..grant_request(c)
            }
        )),
        // RequestRights: the rules of the write that would apply it, under
        // `admin_level.` and `grant.`.
        row!("admin_level.level", "5", rule: "must be 1", |_| rights_request(
            pb::request_rights_request::Requested::AdminLevel(pb::RequestedAdminLevel {
                level: 5,
                unit_id: String::new(),
            })
        )),
        row!("admin_level.unit_id", "a unit of another organisation", rule: "names no unit of this organisation", |c| {
            rights_request(pb::request_rights_request::Requested::AdminLevel(
                pb::RequestedAdminLevel {
                    level: 4,
                    unit_id: c.other_unit.id.clone(),
                },
            ))
        }),
        row!("grant.right", "capitals and a space", rule: "must be 1 to 100 characters", |_| rights_request(
            pb::request_rights_request::Requested::Grant(pb::RequestedGrant {
                right: "Docs Read".into(),
                actions: vec![pb::GrantAction::Read as i32],
                unit_id: String::new(),
            })
        )),
        row!("grant.actions", "none", rule: "must name at least one of READ and EDIT", |_| rights_request(
            pb::request_rights_request::Requested::Grant(pb::RequestedGrant {
                right: "docs.read".into(),
                actions: vec![],
                unit_id: String::new(),
            })
        )),
        row!("grant.actions[0]", "GRANT_ACTION_UNSPECIFIED", rule: "must be GRANT_ACTION_READ or GRANT_ACTION_EDIT", |_| rights_request(
            pb::request_rights_request::Requested::Grant(pb::RequestedGrant {
                right: "docs.read".into(),
                actions: vec![pb::GrantAction::Unspecified as i32],
                unit_id: String::new(),
            })
        )),
        row!("grant.actions[1]", "READ twice", rule: "is named twice", |_| rights_request(
            pb::request_rights_request::Requested::Grant(pb::RequestedGrant {
                right: "docs.read".into(),
                actions: vec![pb::GrantAction::Read as i32, pb::GrantAction::Read as i32],
                unit_id: String::new(),
            })
        )),
        row!("grant.unit_id", "a unit of another organisation", rule: "names no unit of this organisation", |c| rights_request(
            pb::request_rights_request::Requested::Grant(pb::RequestedGrant {
                right: "docs.read".into(),
                actions: vec![pb::GrantAction::Read as i32],
                unit_id: c.other_unit.id.clone(),
            })
        )),
        row!("role", "one the requester holds", rule: "is held by the requester already", |_| Call::RequestRightsAsAdmin(
            pb::RequestRightsRequest {
                requested: Some(pb::request_rights_request::Requested::Role(
                    pb::Role::OrganisationAdmin as i32
                )),
                reason: "Jeg skal hjælpe til".into(),
            }
        )),
    ]
}

/// The descriptions of a refusal's field violations.
fn descriptions(status: &Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.description).collect())
        .unwrap_or_default()
}

async fn every_field_rule_refuses_through_its_rpc(backend: Backend) {
    let app = TestApp::start(backend).await;
    let fixture = app.org_with_admin().await;
    let admin_token = fixture.admin_token.clone();
    let (member, member_token) = app.member(&fixture, "Medlem", &[]).await;
    let totp_secret = app
        .auth()
        .enroll_totp(req(&member_token, pb::EnrollTotpRequest {}))
        .await
        .expect("enrol an app")
        .into_inner()
        .secret;
    let mut orgs = app.orgs();
    let mut users = app.users();
    let unit = orgs
        .create_unit(req(
            &admin_token,
            pb::CreateUnitRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::UnitKind::Department as i32,
                name: "Afdeling".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("unit")
        .into_inner()
        .unit
        .expect("unit");
    let activation_code = users
        .create_user(req(
            &admin_token,
            pb::CreateUserRequest {
                cpr: String::new(),
                birth_date: "1977-07-07".into(),
                ..new_user(&fixture.org.id, "Kode", &[])
            },
        ))
        .await
        .expect("birth-date user")
        .into_inner();
    let (activation_code, activation_email) = (
        activation_code.activation_code,
        activation_code.user.expect("user").email,
    );
    let anonymity_request_id = users
        .request_anonymity(req(
            &member_token,
            pb::RequestAnonymityRequest {
                reason: "Jeg ønsker at være anonym".into(),
            },
        ))
        .await
        .expect("anonymity request")
        .into_inner()
        .anonymity_request
        .expect("request")
        .id;
    let rights_request_id = app
        .access()
        .request_rights(req(
            &member_token,
            pb::RequestRightsRequest {
                requested: Some(pb::request_rights_request::Requested::AdminLevel(
                    pb::RequestedAdminLevel {
                        level: 4,
                        unit_id: String::new(),
                    },
                )),
                reason: "Til regnskabet i Nord".into(),
            },
        ))
        .await
        .expect("rights request")
        .into_inner()
        .rights_request
        .expect("request")
        .id;
    // Certificates: user and organisation ones allowed; the member holds an
    // ISSUED one and has an e-mail encryption one waiting for pickup.
    orgs.update_organisation_settings(req(
        &admin_token,
        pb::UpdateOrganisationSettingsRequest {
            settings: Some(pb::OrganisationSettings {
                organisation_id: fixture.org.id.clone(),
                certificate_kinds: vec![
                    pb::CertificateKind::Employee as i32,
                    pb::CertificateKind::Organisation as i32,
                ],
                ..Default::default()
            }),
            update_mask: mask(&["certificate_kinds"]),
        },
    ))
    .await
    .expect("allow certificate kinds");
    let order = |usage: pb::CertificateUsage| pb::OrderCertificateRequest {
        organisation_id: fixture.org.id.clone(),
        kind: pb::CertificateKind::Employee as i32,
        holder_id: member.id.clone(),
        usages: vec![usage as i32],
        ..Default::default()
    };
    app.certs()
        .order_certificate(req(&admin_token, order(pb::CertificateUsage::Authentication)))
        .await
        .expect("order");
    let pickup = app.mailed_token("certificate_pickup", &member.email).await;
    let certificate_id = app
        .certs()
        .issue_certificate(req(
            &member_token,
            pb::IssueCertificateRequest {
                token: pickup,
                csr_pem: p256_csr(),
            },
        ))
        .await
        .expect("pickup")
        .into_inner()
        .certificate
        .expect("certificate")
        .id;
    app.certs()
        .order_certificate(req(&admin_token, order(pb::CertificateUsage::EmailEncryption)))
        .await
        .expect("order");
    let encryption_pickup = app.mailed_token("certificate_pickup", &member.email).await;
    // A unit of another organisation, for the rules that units be the
    // organisation's own.
    let other = app.org_with_admin().await;
    let other_unit = app.unit(&other, "Fremmed afdeling", "").await;
    app.auth()
        .request_password_reset(req(
            "",
            pb::RequestPasswordResetRequest {
                login_id: member.email.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("password reset");
    let reset_token = app.mailed_token("password_reset", &member.email).await;
    let organisation_certificate_id = app
        .certs()
        .order_certificate(req(
            &admin_token,
            pb::OrderCertificateRequest {
                organisation_id: fixture.org.id.clone(),
                kind: pb::CertificateKind::Organisation as i32,
                label: "Lønsystem".into(),
                usages: vec![pb::CertificateUsage::ServiceAccess as i32],
                contact_id: fixture.admin.id.clone(),
                email: fixture.admin.email.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("organisation certificate with an e-mail address")
        .into_inner()
        .certificate
        .expect("certificate")
        .id;
    let (non_ascii_member, _) = app
        .create_and_activate(
            &admin_token,
            pb::CreateUserRequest {
                email: format!("søren{}@firma.dk", next_number()),
                ..new_user(&fixture.org.id, "Søren", &[])
            },
        )
        .await;
    // Read last, so every etag is current.
    let org = orgs
        .get_organisation(req(
            &admin_token,
            pb::GetOrganisationRequest {
                id: fixture.org.id.clone(),
            },
        ))
        .await
        .expect("organisation")
        .into_inner()
        .organisation
        .expect("organisation");
    let settings = orgs
        .get_organisation_settings(req(
            &admin_token,
            pb::GetOrganisationSettingsRequest {
                organisation_id: org.id.clone(),
            },
        ))
        .await
        .expect("settings")
        .into_inner()
        .settings
        .expect("settings");
    let service_account = users
        .create_user(req(
            &admin_token,
            pb::CreateUserRequest {
                cpr: String::new(),
                service_account: true,
                ..new_user(&fixture.org.id, "Konto", &[])
            },
        ))
        .await
        .expect("service account")
        .into_inner()
        .user
        .expect("service account");
    let member = users
        .get_user(req(&admin_token, pb::GetUserRequest { id: member.id }))
        .await
        .expect("member")
        .into_inner()
        .user
        .expect("member");
    let ctx = Ctx {
        org,
        settings,
        admin: fixture.admin.clone(),
        member,
        service_account,
        unit,
        activation_code,
        anonymity_request_id,
        rights_request_id,
        certificate_id,
        encryption_pickup,
        ed25519_csr: ed25519_csr(),
        totp_secret,
        other_unit,
        activation_email,
        reset_token,
        organisation_certificate_id,
        non_ascii_member_id: non_ascii_member.id,
    };

    let before = app.fingerprint().await;
    let mut failures = Vec::new();
    for row in rows() {
        let call = (row.call)(&ctx);
        let rpc = call.rpc();
        let label = format!("{rpc} {} ({})", row.field, row.bad);
        match call.send(&app, &admin_token, &member_token).await {
            Ok(()) => failures.push(format!("{label}: accepted")),
            Err(status) if status.code() != Code::InvalidArgument => {
                failures.push(format!("{label}: {:?} {}", status.code(), status.message()))
            }
            Err(status) => {
                let fields = bad_fields(&status);
                if fields != [row.field] {
                    failures.push(format!("{label}: named {fields:?}"));
                }
                let descriptions = descriptions(&status);
                if !descriptions.iter().any(|d| d.contains(row.rule)) {
                    failures.push(format!("{label}: {descriptions:?}, not the rule saying {:?}", row.rule));
                }
                if reason(&status) != "INVALID_ARGUMENT" {
                    failures.push(format!("{label}: reason {:?}", reason(&status)));
                }
            }
        }
        if app.fingerprint().await != before {
            failures.push(format!("{label}: changed something"));
            break;
        }
    }
    assert!(failures.is_empty(), "field rules:\n{}", failures.join("\n"));
    app.finish().await;
}

// ---- the table against the sources ----

/// `ean_numbers[2]`, `ean_numbers[{i}]` → `ean_numbers[]`.
fn without_indexes(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[]");
            }
            ']' => in_index = false,
            c if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

/// The non-test code of the domain and service crates: (path from the
/// workspace root, text).
fn sources() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut stack = vec![root.join("domain/src"), root.join("service/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_owned();
                let name = path.strip_prefix(&root).unwrap().to_string_lossy().into_owned();
                files.push((name, code));
            }
        }
    }
    files.sort();
    files
}

/// Rule sites and path arguments the reader does not resolve, each with
/// what covers it: (file, function, the argument as written, why). A
/// function with such a site has its `format!("{param}…")` paths read as
/// its sites. An entry nothing matches fails the test.
const UNREAD: &[(&str, &str, &str, &str)] = &[
    (
        "service/src/error.rs",
        "to_status",
        "cut_to(v.field, MAX_FIELD_CHARS)",
        "a violation already made, shortened on its way out: not a rule of a field",
    ),
    (
        "domain/src/services/users/mod.rs",
        "check_identity_fields",
        "&field",
        "the closure `name`: the `{prefix}first_name` and `{prefix}surname` handed to it are read as sites",
    ),
    (
        "service/src/bounds.rs",
        "check",
        "l.field",
        "the bound of every repeated field, generated from the messages (bounds.rs), not a rule of one field",
    ),
    (
        "domain/src/services/access/grants.rs",
        "check_new_grant",
        "new.actions",
        "`Actions::within`, no path prefix",
    ),
    (
        "domain/src/policy.rs",
        "authorize_grant",
        "h.grantable",
        "`Actions::within`, no path prefix",
    ),
];

/// Places no request reaches: (path, how many of its places, why). The
/// path must still have as many places, or the entry fails the test.
const UNREACHABLE: &[(&str, usize, &str)] = &[
    (
        "user.email",
        1,
        "UpdateUser's second look at the names under the lock (a rename committed meanwhile) passes no e-mail",
    ),
    (
        "grant.resource",
        1,
        "RequestRights' RequestedGrant has no resource (`grant_of` sets none)",
    ),
    (
        "grant.grantable_actions",
        2,
        "RequestRights' RequestedGrant has no grant options (`grant_of` gives none)",
    ),
    (
        "grant.may_authorise",
        1,
        "RequestRights' RequestedGrant has no may_authorise (`grant_of` sets false)",
    ),
    (
        "user_ids",
        1,
        "BatchSendActivation's 1000 ids at most: the request's bounds (service/src/bounds.rs) refuse more first, under the same path",
    ),
];

/// The functions that are the rules' primitives themselves: their
/// parameters are any path.
const PRIMITIVES: &[(&str, &str)] = &[
    ("domain/src/validate.rs", "check"),
    ("domain/src/validate.rs", "add"),
    ("domain/src/error.rs", "invalid"),
    ("domain/src/error.rs", "within"),
];

/// The generic parsers (`id`, `opt_id`, `millis`, enum values): paths they
/// are handed are not rules of a field and are not followed.
const GENERIC_PARSERS: &str = "service/src/convert.rs";

/// A place that emits a path: the calls that lead to the rule, outermost
/// first, and the rule's own site, each as `file:line`.
type Place = Vec<String>;

/// The functions taking a path, by name: by the parameter's index, each
/// path they emit from it as (suffix, place).
type Takers<'a> = BTreeMap<&'a str, BTreeMap<usize, Vec<(String, Place)>>>;

/// A function: its parameters without `self` (name, type) and its body.
struct Def<'a> {
    file: usize,
    name: &'a str,
    params: Vec<(&'a str, &'a str)>,
    body: std::ops::Range<usize>,
}

/// A path as an argument is written.
enum PathArg {
    Literal(String),
    /// The enclosing function's parameter (by index, `self` not counted),
    /// then a suffix (`format!("{field}[{i}]")`).
    Param(usize, String),
    Unread,
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The string literal that starts at `at`, past spaces, `&` and `format!(`.
fn literal_at(text: &str, mut at: usize) -> Option<&str> {
    loop {
        let rest = &text[at..];
        let trimmed = rest.trim_start_matches([' ', '\n', '\r', '\t', '&']);
        at += rest.len() - trimmed.len();
        match trimmed.strip_prefix("format!(") {
            Some(_) => at += "format!(".len(),
            None => break,
        }
    }
    let rest = text[at..].strip_prefix('"')?;
    rest.split_once('"').map(|(literal, _)| literal)
}

/// Walks the bracket opening at `open` to its close, past strings,
/// characters and line comments, calling `comma` at each comma directly
/// inside; the index past the close. `angles`: `<…>` nest too (types).
fn scan(text: &str, open: usize, angles: bool, mut comma: impl FnMut(usize)) -> Option<usize> {
    let b = text.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' => {
                // 'x', '\n', 'ø'; else a lifetime.
                let rest = &text[i + 1..];
                if rest.starts_with('\\') {
                    i += 1 + rest[2..].find('\'').map_or(0, |k| k + 2);
                } else if let Some(c) = rest.chars().next()
                    && rest[c.len_utf8()..].starts_with('\'')
                {
                    i += c.len_utf8() + 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => depth += 1,
            b'<' if angles => depth += 1,
            b'>' if angles && !matches!(b[i - 1], b'-' | b'=') => depth = depth.saturating_sub(1),
            b')' | b']' | b'}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            b',' if depth == 1 => comma(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The items of the list opening at `open`, split at its top-level
/// commas, and the index past its close.
fn split_list(text: &str, open: usize, angles: bool) -> Option<(Vec<&str>, usize)> {
    let mut cuts = vec![open + 1];
    let close = scan(text, open, angles, |at| cuts.push(at + 1))?;
    let mut items = Vec::new();
    for (k, start) in cuts.iter().enumerate() {
        let end = cuts.get(k + 1).map_or(close - 1, |next| next - 1);
        let item = text[*start..end].trim();
        if !item.is_empty() {
            items.push(item);
        }
    }
    Some((items, close))
}

/// The `(` matching the `)` at `close`, reading backwards (no strings
/// with brackets in between).
fn open_of(text: &str, close: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text[..=close].char_indices().rev() {
        match c {
            ')' | ']' | '}' => depth += 1,
            '(' | '[' | '{' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The identifier ending at `end`.
fn ident_before(text: &str, end: usize) -> &str {
    let start = text[..end].rfind(|c: char| !is_ident(c)).map_or(0, |k| k + 1);
    &text[start..end]
}

/// Every call `name(` (not its definition): (where the name starts, the
/// arguments, the index past the close).
fn calls_of<'t>(text: &'t str, name: &str) -> Vec<(usize, Vec<&'t str>, usize)> {
    let call = format!("{name}(");
    text.match_indices(&call)
        .filter(|(at, _)| !text[..*at].ends_with(is_ident) && !text[..*at].ends_with("fn "))
        .filter_map(|(at, _)| {
            let (args, close) = split_list(text, at + name.len(), false)?;
            Some((at, args, close))
        })
        .collect()
}

/// The prefix of `.map_err(|e| e.within("x"))` right after a call closing
/// before `close` (`.await` between): `x.`, and where `.within(` is.
fn within_after(text: &str, close: usize) -> Option<(String, usize)> {
    let rest = text[close..].trim_start();
    let rest = rest.strip_prefix(".await").unwrap_or(rest).trim_start();
    let wrapped = rest.strip_prefix(".map_err(|e| e")?;
    let at = text.len() - wrapped.len();
    let prefix = literal_at(wrapped.strip_prefix(".within(")?, 0)?;
    Some((format!("{prefix}."), at))
}

/// The paths the checks in `files` name, each with the places that emit
/// it; or every rule site, path argument and `.within(` the reader cannot
/// read (and `unread` does not list).
fn read(
    files: &[(String, String)],
    unread: &[(&str, &str, &str, &str)],
) -> Result<BTreeMap<String, BTreeSet<Place>>, Vec<String>> {
    // Functions, and constants holding a path.
    let mut defs = Vec::new();
    let mut consts = BTreeMap::new();
    for (file, (_, text)) in files.iter().enumerate() {
        for (at, _) in text.match_indices("fn ") {
            let line = &text[text[..at].rfind('\n').map_or(0, |k| k + 1)..at];
            if text[..at].ends_with(is_ident) || line.contains("//") {
                continue;
            }
            let rest = &text[at + 3..];
            let name = &rest[..rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len())];
            let Some(open) = text[at..].find('(').map(|k| at + k) else {
                continue;
            };
            let Some((params, close)) = split_list(text, open, true) else {
                continue;
            };
            let Some(brace) = text[close..].find(['{', ';']).map(|k| close + k) else {
                continue;
            };
            if name.is_empty() || text.as_bytes()[brace] != b'{' {
                continue;
            }
            let Some(end) = scan(text, brace, false, |_| {}) else {
                continue;
            };
            let params = params
                .into_iter()
                .filter(|p| p.contains(':') || !p.ends_with("self"))
                .map(|p| match p.split_once(':') {
                    Some((ident, ty)) => (ident.trim().trim_start_matches("mut ").trim(), ty.trim()),
                    None => ("", p),
                })
                .collect();
            defs.push(Def {
                file,
                name,
                params,
                body: brace..end,
            });
        }
        for (at, _) in text.match_indices("const ") {
            let rest = &text[at + 6..];
            let Some((name, value)) = rest.split_once(':') else {
                continue;
            };
            let Some((ty, value)) = value.split_once('=') else {
                continue;
            };
            if name.chars().all(is_ident)
                && ty.trim().ends_with("str")
                && let Some(literal) = value
                    .trim_start()
                    .starts_with('"')
                    .then(|| literal_at(value, 0))
                    .flatten()
            {
                consts.insert(name.to_owned(), literal.to_owned());
            }
        }
    }
    let def_at = |file: usize, at: usize| {
        defs.iter()
            .enumerate()
            .filter(|(_, d)| d.file == file && d.body.contains(&at))
            .min_by_key(|(_, d)| d.body.len())
            .map(|(k, _)| k)
    };
    let loc = |file: usize, at: usize| format!("{}:{}", files[file].0, files[file].1[..at].lines().count());
    let classify = |arg: &str, def: Option<usize>| -> PathArg {
        let arg = arg.trim_start_matches('&').trim();
        // A pair's first element: `("token", r.token)`.
        let arg = match arg.starts_with('(') {
            true => split_list(arg, 0, false)
                .and_then(|(items, _)| items.first().copied())
                .unwrap_or(arg),
            false => arg,
        };
        let param = |ident: &str| def.and_then(|d| defs[d].params.iter().position(|(p, _)| *p == ident));
        if arg.starts_with('"') {
            return literal_at(arg, 0).map_or(PathArg::Unread, |l| PathArg::Literal(l.to_owned()));
        }
        if arg.starts_with("format!(") {
            let Some(template) = literal_at(arg, 0) else {
                return PathArg::Unread;
            };
            if let Some((ident, suffix)) = template.strip_prefix('{').and_then(|t| t.split_once('}')) {
                return param(ident).map_or(PathArg::Unread, |k| PathArg::Param(k, suffix.to_owned()));
            }
            return match without_indexes(template).contains(['{', '}']) {
                true => PathArg::Unread,
                false => PathArg::Literal(template.to_owned()),
            };
        }
        let (ident, tuple) = match arg.strip_suffix(".0") {
            Some(ident) => (ident, true),
            None => (arg, false),
        };
        if ident.chars().all(is_ident) {
            if let Some(k) = param(ident)
                && (!tuple || defs[def.unwrap()].params[k].1.starts_with('('))
            {
                return PathArg::Param(k, String::new());
            }
            if let Some(value) = consts.get(ident).filter(|_| !tuple) {
                return PathArg::Literal(value.clone());
            }
        }
        PathArg::Unread
    };
    let mut not_read: Vec<String> = Vec::new();
    let mut allowed_used = BTreeSet::new();
    let mut not_read_here = |file: usize, def: Option<usize>, at: usize, what: &str, arg: &str| {
        if files[file].0 == GENERIC_PARSERS {
            return;
        }
        let name = def.map_or("", |d| defs[d].name);
        match unread
            .iter()
            .position(|(f, n, a, _)| *f == files[file].0 && *n == name && *a == arg.trim())
        {
            Some(k) => {
                allowed_used.insert(k);
            }
            None => not_read.push(format!("{} in {name}: {what}({arg}…", loc(file, at))),
        }
    };

    // Rule sites: `Violations::check`/`add`, `DomainError::invalid`,
    // `FieldViolation::new`; their first argument and close. (An import's
    // `CellError::invalid` names a column of the file, in the report.)
    let mut sites = Vec::new();
    for (file, (name, text)) in files.iter().enumerate() {
        for needle in [".check(", ".add(", "DomainError::invalid(", "FieldViolation::new("] {
            for (at, _) in text.match_indices(needle) {
                if needle.starts_with('.') {
                    let receiver = ident_before(text, at);
                    let declared = [
                        format!("let mut {receiver} = Violations"),
                        format!("{receiver}: &mut Violations"),
                    ];
                    if receiver.is_empty() || !declared.iter().any(|d| text.contains(d.as_str())) {
                        continue;
                    }
                }
                let def = def_at(file, at);
                if def.is_some_and(|d| PRIMITIVES.contains(&(name.as_str(), defs[d].name))) {
                    continue;
                }
                let Some((args, close)) = split_list(text, at + needle.len() - 1, false) else {
                    continue;
                };
                let arg = args.first().copied().unwrap_or_default();
                let arg_at = arg.as_ptr() as usize - text.as_ptr() as usize;
                sites.push((file, def, at, arg, arg_at..arg_at + arg.len(), close));
            }
        }
    }

    // The functions that take a path (by parameter index), each path they
    // emit as (suffix, place): first their own rule sites, then the calls
    // forwarding their parameter to another, until no new one appears.
    let mut takers: Takers = BTreeMap::new();
    let mut emitted: Vec<(String, Place, Option<usize>)> = Vec::new();
    let mut accounted_within = BTreeSet::new();
    for (file, def, at, arg, _, close) in &sites {
        match classify(arg, *def) {
            PathArg::Literal(path) => {
                let prefix = within_after(&files[*file].1, *close).map(|(p, w)| {
                    accounted_within.insert((*file, w));
                    p
                });
                emitted.push((
                    format!("{}{path}", prefix.unwrap_or_default()),
                    vec![loc(*file, *at)],
                    *def,
                ));
            }
            PathArg::Param(index, suffix) => {
                let d = &defs[def.unwrap()];
                if files[d.file].0 != GENERIC_PARSERS {
                    takers
                        .entry(d.name)
                        .or_default()
                        .entry(index)
                        .or_default()
                        .push((suffix, vec![loc(*file, *at)]));
                }
            }
            PathArg::Unread => {
                not_read_here(*file, *def, *at, "rule", arg);
                // Its function's `format!("{param}…")` paths are its sites.
                if let Some(d) = def {
                    let d = &defs[*d];
                    let text = &files[d.file].1;
                    for (f, _) in text[d.body.clone()].match_indices("format!(\"{") {
                        let f = d.body.start + f;
                        if sites.iter().any(|s| s.0 == d.file && s.4.contains(&f)) {
                            continue;
                        }
                        let slice = &text[f..];
                        let end = slice.find(')').unwrap_or(slice.len());
                        if let PathArg::Param(index, suffix) =
                            classify(&slice[..=end.min(slice.len() - 1)], def_at(d.file, f))
                        {
                            takers
                                .entry(d.name)
                                .or_default()
                                .entry(index)
                                .or_default()
                                .push((suffix, vec![loc(d.file, f)]));
                        }
                    }
                }
            }
        }
    }
    for _ in 0..10 {
        let mut grew = false;
        for (name, by_index) in takers.clone() {
            for (file, (_, text)) in files.iter().enumerate() {
                for (at, args, _) in calls_of(text, name) {
                    let Some(caller) = def_at(file, at) else { continue };
                    if files[defs[caller].file].0 == GENERIC_PARSERS {
                        continue;
                    }
                    for (index, endings) in &by_index {
                        let Some(PathArg::Param(k, suffix)) = args.get(*index).map(|a| classify(a, Some(caller)))
                        else {
                            continue;
                        };
                        let mine = takers.entry(defs[caller].name).or_default().entry(k).or_default();
                        for (rest, place) in endings {
                            let mut longer = vec![loc(file, at)];
                            longer.extend(place.iter().cloned());
                            let ending = (format!("{suffix}{rest}"), longer);
                            if ending.1.len() <= 8 && !mine.contains(&ending) {
                                mine.push(ending);
                                grew = true;
                            }
                        }
                    }
                }
            }
        }
        if !grew {
            break;
        }
    }
    // Paths passed to them as literals (or constants).
    for (name, by_index) in &takers {
        for (file, (_, text)) in files.iter().enumerate() {
            for (at, args, close) in calls_of(text, name) {
                let caller = def_at(file, at);
                for (index, endings) in by_index {
                    let arg = args.get(*index).copied().unwrap_or_default();
                    match classify(arg, caller) {
                        PathArg::Literal(path) => {
                            let prefix = within_after(text, close).map(|(p, w)| {
                                accounted_within.insert((file, w));
                                p
                            });
                            for (suffix, place) in endings {
                                let mut longer = vec![loc(file, at)];
                                longer.extend(place.iter().cloned());
                                let path = format!("{}{path}{suffix}", prefix.clone().unwrap_or_default());
                                emitted.push((path, longer, caller));
                            }
                        }
                        PathArg::Param(..) => {}
                        PathArg::Unread => not_read_here(file, caller, at, name, arg),
                    }
                }
            }
        }
    }
    // `.map_err(|e| e.within("x"))` around a call of a function that names
    // paths itself: `x.` and each path the function (and what it calls)
    // emits.
    let names: BTreeSet<&str> = defs.iter().map(|d| d.name).collect();
    let inside = |name: &str| -> Vec<(String, Place)> {
        let mut out = Vec::new();
        let mut todo: Vec<(&str, Place)> = vec![(name, Vec::new())];
        let mut seen = BTreeSet::new();
        while let Some((name, via)) = todo.pop() {
            if !seen.insert(name) {
                continue;
            }
            for (path, place, def) in &emitted {
                if def.is_some_and(|d| defs[d].name == name) {
                    out.push((path.clone(), via.iter().chain(place).cloned().collect()));
                }
            }
            for d in defs.iter().filter(|d| d.name == name) {
                let text = &files[d.file].1;
                for (at, _) in text[d.body.clone()].match_indices('(') {
                    let at = d.body.start + at;
                    let callee = ident_before(text, at);
                    let before = &text[..at - callee.len()];
                    // Free functions and our own methods: not another
                    // type's methods (`x.map_err(`, `DomainError::invalid(`).
                    let ours = match before.strip_suffix("::") {
                        Some(path) => {
                            let segment = ident_before(path, path.len());
                            segment == "Self" || segment.starts_with(|c: char| c.is_lowercase())
                        }
                        None => before.ends_with("self.") || !before.ends_with('.'),
                    };
                    if ours && names.contains(callee) && !before.ends_with("fn ") {
                        let mut further = via.clone();
                        further.push(loc(d.file, at));
                        todo.push((callee, further));
                    }
                }
            }
        }
        out
    };
    let mut wrapped = Vec::new();
    for (file, (_, text)) in files.iter().enumerate() {
        for (at, _) in text.match_indices(".within(") {
            let def = def_at(file, at);
            if accounted_within.contains(&(file, at)) {
                continue;
            }
            let arg = split_list(text, at + ".within".len(), false)
                .and_then(|(args, _)| args.first().copied())
                .unwrap_or_default();
            let Some(prefix) = literal_at(arg, 0).filter(|_| arg.starts_with('"')) else {
                not_read_here(file, def, at, ".within", arg);
                continue;
            };
            let before = text[..at].trim_end();
            let call = before
                .strip_suffix(".map_err(|e| e")
                .map(|b| b.trim_end())
                .map(|b| b.strip_suffix(".await").unwrap_or(b).trim_end())
                .filter(|b| b.ends_with(')'))
                .and_then(|b| open_of(text, b.len() - 1))
                .map(|open| ident_before(text, open))
                .filter(|callee| names.contains(callee));
            match call {
                Some(callee) => {
                    for (path, place) in inside(callee) {
                        let mut longer = vec![loc(file, at)];
                        longer.extend(place);
                        wrapped.push((format!("{prefix}.{path}"), longer, def));
                    }
                }
                None => not_read_here(file, def, at, ".within", arg),
            }
        }
    }
    emitted.extend(wrapped);
    for (k, entry) in unread.iter().enumerate() {
        if !allowed_used.contains(&k) {
            not_read.push(format!("UNREAD lists what the sources no longer hold: {entry:?}"));
        }
    }
    if !not_read.is_empty() {
        return Err(not_read);
    }
    let mut paths: BTreeMap<String, BTreeSet<Place>> = BTreeMap::new();
    for (path, place, _) in emitted {
        let path = without_indexes(&path);
        if !path.is_empty() {
            paths.entry(path).or_default().insert(place);
        }
    }
    Ok(paths)
}

/// One example of each form the reader reads.
const SAMPLE: &str = r#"
pub const HEADER: &str = "x-header";

fn direct() -> Result<(), DomainError> {
    let mut v = Violations::default();
    v.check("a", text(x, 100));
    v.add("b", "is wrong");
    v.add("b", "is wrong too");
    v.add(&format!("list[{i}]"), "is wrong");
    v.into_result()?;
    Err(DomainError::invalid(HEADER, "is wrong"))
}

fn with_prefix(v: &mut Violations, prefix: &str) {
    v.add(&format!("{prefix}c"), "is wrong");
}

fn no_such(field: &str) -> DomainError {
    DomainError::invalid(field, "is wrong")
}

fn indexed(field: &str, values: &[i32]) -> Result<(), DomainError> {
    Err(DomainError::invalid(format!("{field}[{i}]"), "is wrong"))
}

fn pair(a: (&str, String), b: (&str, String)) -> DomainError {
    DomainError::invalid(a.0, format!("one of {} and {}", a.0, b.0))
}

fn parse_d(d: &str) -> Result<(), DomainError> {
    Err(DomainError::invalid("d", "is wrong"))
}

fn checks_d(d: &str) -> Result<(), DomainError> {
    parse_d(d)?;
    Ok(())
}

impl Domain {
    fn forwards(&self, db: &Db, field: &str) -> DomainError {
        no_such(field)
    }

    fn calls(&self) -> DomainResult<()> {
        let mut v = Violations::default();
        with_prefix(&mut v, "p.");
        let _ = self.forwards(&db, "e");
        self.forwards(&db, "f").await.map_err(|e| e.within("outer"))?;
        indexed("g", &[])?;
        let _ = pair(("h", x), ("i", y));
        checks_d(x).map_err(|e| e.within("w"))?;
        Ok(())
    }
}
"#;

/// Forms the reader does not read: each must be reported.
const SAMPLE_UNREAD: &str = r#"
fn unread(v: &mut Violations, x: &Thing) -> DomainError {
    v.add(x.path(), "is wrong");
    other().map_err(|e| e.within(x.name))?;
    elsewhere().map_err(|e| e.within("z"))?;
    DomainError::invalid(format!("{}.y", x.name), "is wrong")
}
"#;

#[test]
fn every_field_path_has_a_row() {
    // The reader reads each form it claims to, and counts each place.
    let sample = vec![("domain/src/sample.rs".to_owned(), SAMPLE.to_owned())];
    let read_sample = read(&sample, &[]).unwrap_or_else(|unread| panic!("sample not read: {unread:#?}"));
    let counts: BTreeMap<&str, usize> = read_sample
        .iter()
        .map(|(p, places)| (p.as_str(), places.len()))
        .collect();
    let expected = BTreeMap::from([
        ("a", 1),
        ("b", 2),
        ("list[]", 1),
        ("x-header", 1),
        ("p.c", 1),
        ("e", 1),
        ("outer.f", 1),
        ("g[]", 1),
        ("h", 1),
        ("d", 1),
        ("w.d", 1),
    ]);
    assert_eq!(counts, expected, "{read_sample:#?}");
    let unread = vec![("domain/src/sample.rs".to_owned(), SAMPLE_UNREAD.to_owned())];
    match read(&unread, &[]) {
        Err(forms) => assert_eq!(forms.len(), 4, "{forms:#?}"),
        Ok(paths) => panic!("forms it cannot read were not reported: {paths:#?}"),
    }

    let emitted = read(&sources(), UNREAD).unwrap_or_else(|forms| {
        panic!(
            "forms the reader cannot read: read them, or list them in UNREAD with what covers them:\n{}",
            forms.join("\n")
        )
    });
    for expected in [
        "first_name",
        "user.first_name",
        "user.email",
        "ean_numbers[]",
        "organisation.ean_numbers[]",
        "birth_date",
        "page_token",
        "preferences[].kind",
        "settings.deletion_policy",
        "parent_id",
        "unit.parent_id",
        "user.unit_id",
        "admin_level.level",
        "grant.actions",
        "grant.actions[]",
        "token",
        "x-orgadmin-act-as",
    ] {
        assert!(emitted.contains_key(expected), "{expected} not read: {emitted:#?}");
    }
    for (path, count, why) in UNREACHABLE {
        assert!(
            emitted.get(*path).is_some_and(|places| places.len() >= *count),
            "UNREACHABLE lists {count} places of {path} ({why}), which the sources no longer hold"
        );
    }
    let ctx = Ctx::default();
    let mut by_path: BTreeMap<String, BTreeSet<(&str, &str)>> = BTreeMap::new();
    for row in rows() {
        by_path
            .entry(without_indexes(row.field))
            .or_default()
            .insert(((row.call)(&ctx).rpc(), row.bad));
    }
    let missing: Vec<String> = emitted
        .iter()
        .filter_map(|(path, places)| {
            let rules = by_path.get(path).map_or(0, BTreeSet::len);
            let unreachable: usize = UNREACHABLE.iter().filter(|(p, ..)| p == path).map(|(_, n, _)| n).sum();
            (rules + unreachable < places.len()).then(|| {
                let places: Vec<String> = places.iter().map(|p| p.join(" → ")).collect();
                format!(
                    "{path}: {} places, rows for {rules} RPC rules:\n    {}",
                    places.len(),
                    places.join("\n    ")
                )
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "field paths without enough rows in field_rules::rows():\n{}",
        missing.join("\n")
    );
}

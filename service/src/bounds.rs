//! Bounds on the lists in requests. Every repeated field of every request has
//! one, checked before anything else (authentication, parsing, the database),
//! so a request with 40,000 filters is refused at once with INVALID_ARGUMENT
//! naming the field and its bound, instead of reaching the database (bind
//! variable limits) or producing an error as large as itself. The domain's
//! own rules (at most 20 EAN numbers, 3 external ids, ...) apply within these
//! bounds, with their own messages.
//!
//! [`handlers::caller`](crate::handlers::caller) checks them, so every
//! authenticated RPC needs its request to implement [`Lists`]: a new request
//! type does not compile until it says what its lists are.

use orgadmin_domain::{DomainError, FieldViolation};
use orgadmin_proto::v1 as pb;

/// Field masks name fields of one message; none has 32.
const MASK_PATHS: usize = 32;
/// Lists of enum values, each value at most once: roles, identification
/// means, certificate kinds.
const ENUM_VALUES: usize = 16;
/// Far above the rules (20 EAN numbers, 3 external ids), so the rule answers
/// with its own message; nothing past this is looked at.
const EAN_NUMBERS: usize = 100;
const EXTERNAL_IDS: usize = 100;
/// History activities to filter on: there are fewer than 30 kinds.
const ACTIVITIES: usize = 100;
/// A page of notifications at most (ListNotifications pages up to 500).
const NOTIFICATION_IDS: usize = 500;
const PREFERENCES: usize = 100;

/// One list of a request: its field path (relative to the request), how many
/// items it holds, and how many it may hold.
pub struct List {
    pub field: &'static str,
    pub len: usize,
    pub max: usize,
}

fn list(field: &'static str, len: usize, max: usize) -> List {
    List { field, len, max }
}

/// The repeated fields of a request message, nested ones included.
pub trait Lists {
    fn lists(&self) -> Vec<List>;
}

/// INVALID_ARGUMENT naming every list over its bound.
pub fn check<T: Lists>(request: &T) -> Result<(), DomainError> {
    let violations: Vec<FieldViolation> = request
        .lists()
        .into_iter()
        .filter(|l| l.len > l.max)
        .map(|l| FieldViolation::new(l.field, format!("holds {} items; at most {} are allowed", l.len, l.max)))
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(DomainError::InvalidArgument(violations))
    }
}

fn mask_paths(mask: &Option<prost_types::FieldMask>) -> usize {
    mask.as_ref().map_or(0, |m| m.paths.len())
}

/// Requests without a repeated field.
macro_rules! no_lists {
    ($($request:ident),* $(,)?) => {
        $(impl Lists for pb::$request {
            fn lists(&self) -> Vec<List> {
                Vec::new()
            }
        })*
    };
}

no_lists!(
    CreateApiTokenRequest,
    ListApiTokensRequest,
    RevokeApiTokenRequest,
    WhoAmIRequest,
    LoginRequest,
    LogoutRequest,
    UnlockLoginRequest,
    VerifyLoginCodeRequest,
    EnrollTotpRequest,
    ConfirmTotpRequest,
    ListSessionsRequest,
    RevokeSessionRequest,
    RemoveAuthenticatorRequest,
    RequestPasswordResetRequest,
    ResetPasswordRequest,
    SendPasswordResetRequest,
    ListNotificationsRequest,
    GetNotificationPreferencesRequest,
    ListFailedMailsRequest,
    RetryMailRequest,
    GetOrganisationRequest,
    ListOrganisationsRequest,
    GetOrganisationSettingsRequest,
    SetLicenceCountRequest,
    CreateUnitRequest,
    ListUnitsRequest,
    DeleteUnitRequest,
    GetUserRequest,
    ListUsersRequest,
    DeactivateUserRequest,
    ReactivateUserRequest,
    DeleteUserRequest,
    ActivateUserRequest,
    VerifyEmailRequest,
    SendActivationRequest,
    CreateActivationCodeRequest,
    RequestAnonymityRequest,
    ListAnonymityRequestsRequest,
    DecideAnonymityRequestRequest,
    GetImportRequest,
    ListImportsRequest,
    WatchImportRequest,
    ListImportErrorsRequest,
    GetImportReportRequest,
    CancelImportRequest,
    GetImportTemplateRequest,
    IssueCertificateRequest,
    GetCertificateRequest,
    SearchCertificatesRequest,
    DeleteCertificateOrderRequest,
    RenewCertificateRequest,
    RevokeCertificateRequest,
    ChangeCertificateContactRequest,
    ListCertificateHistoryRequest,
    ExportCertificatesRequest,
    GetCrlRequest,
    SetOrganisationSigningRequest,
    GrantAdminLevelRequest,
    ListAdminLevelsRequest,
    RevokeAdminLevelRequest,
    ListGrantsRequest,
    RevokeGrantRequest,
    ListRightsRequestsRequest,
    DecideRightsRequestRequest,
    ShareAccessRequest,
    ListSharesRequest,
    RevokeShareRequest,
    CreateGroupRequest,
    ListGroupsRequest,
    DeleteGroupRequest,
    AddGroupMemberRequest,
    RemoveGroupMemberRequest,
    ListGroupMembersRequest,
    RequestToJoinRequest,
    ConfirmJoinRequestRequest,
    ListJoinRequestsRequest,
    DecideJoinRequestRequest,
);

impl Lists for pb::RequestRightsRequest {
    fn lists(&self) -> Vec<List> {
        match &self.requested {
            Some(pb::request_rights_request::Requested::Grant(grant)) => {
                vec![list("grant.actions", grant.actions.len(), ENUM_VALUES)]
            }
            _ => Vec::new(),
        }
    }
}

impl Lists for pb::CreateGrantRequest {
    fn lists(&self) -> Vec<List> {
        vec![
            list("actions", self.actions.len(), ENUM_VALUES),
            list("grantable_actions", self.grantable_actions.len(), ENUM_VALUES),
        ]
    }
}

impl Lists for pb::OrderCertificateRequest {
    fn lists(&self) -> Vec<List> {
        vec![list("usages", self.usages.len(), ENUM_VALUES)]
    }
}

/// BatchSendActivation's own rule allows 1000 users per call.
const BATCH_USER_IDS: usize = 1000;

impl Lists for pb::BatchSendActivationRequest {
    fn lists(&self) -> Vec<List> {
        vec![list("user_ids", self.user_ids.len(), BATCH_USER_IDS)]
    }
}

impl Lists for pb::CreateOrganisationRequest {
    fn lists(&self) -> Vec<List> {
        vec![list("ean_numbers", self.ean_numbers.len(), EAN_NUMBERS)]
    }
}

impl Lists for pb::UpdateOrganisationRequest {
    fn lists(&self) -> Vec<List> {
        let eans = self.organisation.as_ref().map_or(0, |o| o.ean_numbers.len());
        vec![
            list("organisation.ean_numbers", eans, EAN_NUMBERS),
            list("update_mask.paths", mask_paths(&self.update_mask), MASK_PATHS),
        ]
    }
}

impl Lists for pb::UpdateOrganisationSettingsRequest {
    fn lists(&self) -> Vec<List> {
        let settings = self.settings.as_ref();
        vec![
            list(
                "settings.allowed_identification_means",
                settings.map_or(0, |s| s.allowed_identification_means.len()),
                ENUM_VALUES,
            ),
            list(
                "settings.certificate_kinds",
                settings.map_or(0, |s| s.certificate_kinds.len()),
                ENUM_VALUES,
            ),
            list("update_mask.paths", mask_paths(&self.update_mask), MASK_PATHS),
        ]
    }
}

impl Lists for pb::UpdateUnitRequest {
    fn lists(&self) -> Vec<List> {
        vec![list("update_mask.paths", mask_paths(&self.update_mask), MASK_PATHS)]
    }
}

impl Lists for pb::CreateUserRequest {
    fn lists(&self) -> Vec<List> {
        vec![
            list("external_ids", self.external_ids.len(), EXTERNAL_IDS),
            list("roles", self.roles.len(), ENUM_VALUES),
            list("identification_means", self.identification_means.len(), ENUM_VALUES),
        ]
    }
}

impl Lists for pb::UpdateUserRequest {
    fn lists(&self) -> Vec<List> {
        let user = self.user.as_ref();
        vec![
            list(
                "user.external_ids",
                user.map_or(0, |u| u.external_ids.len()),
                EXTERNAL_IDS,
            ),
            list("user.roles", user.map_or(0, |u| u.roles.len()), ENUM_VALUES),
            list(
                "user.identification_means",
                user.map_or(0, |u| u.identification_means.len()),
                ENUM_VALUES,
            ),
            list("update_mask.paths", mask_paths(&self.update_mask), MASK_PATHS),
        ]
    }
}

impl Lists for pb::ListUserHistoryRequest {
    fn lists(&self) -> Vec<List> {
        vec![list("activities", self.activities.len(), ACTIVITIES)]
    }
}

impl Lists for pb::MarkNotificationsReadRequest {
    fn lists(&self) -> Vec<List> {
        vec![list("ids", self.ids.len(), NOTIFICATION_IDS)]
    }
}

impl Lists for pb::UpdateNotificationPreferencesRequest {
    fn lists(&self) -> Vec<List> {
        vec![list("preferences", self.preferences.len(), PREFERENCES)]
    }
}

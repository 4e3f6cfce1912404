//! Protobuf <-> domain conversions shared by the handlers.

use orgadmin_domain::DomainError;
use orgadmin_domain::model::{self, Millis};
use orgadmin_domain::services::certificates;
use orgadmin_proto::v1 as pb;
use prost_types::Timestamp;
use uuid::Uuid;

pub fn timestamp(ms: Millis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn opt_timestamp(ms: Option<Millis>) -> Option<Timestamp> {
    ms.map(timestamp)
}

/// The seconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z: the
/// range `google.protobuf.Timestamp` allows. A time outside it was stored
/// and handed back, and JSON clients (grpcurl among them) refused to print
/// every answer that carried it: one deactivation "until" the year 10000
/// broke listing the organisation's users.
const TIMESTAMP_SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;

pub fn millis(field: &str, ts: &Timestamp) -> Result<Millis, DomainError> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err(DomainError::invalid(field, "nanos must be between 0 and 999,999,999"));
    }
    if !TIMESTAMP_SECONDS.contains(&ts.seconds) {
        return Err(DomainError::invalid(
            field,
            "must be between 0001-01-01 and 9999-12-31 (UTC), as a protobuf Timestamp",
        ));
    }
    Ok(ts.seconds * 1000 + i64::from(ts.nanos / 1_000_000))
}

pub fn id(field: &str, value: &str) -> Result<Uuid, DomainError> {
    if value.is_empty() {
        return Err(DomainError::invalid(field, "is required"));
    }
    Uuid::parse_str(value).map_err(|_| DomainError::invalid(field, "must be a UUID"))
}

pub fn opt_id(field: &str, value: &str) -> Result<Option<Uuid>, DomainError> {
    if value.is_empty() {
        Ok(None)
    } else {
        id(field, value).map(Some)
    }
}

pub fn opt_string(value: String) -> Option<String> {
    let trimmed = value.trim();
    if trimmed.is_empty() { None } else { Some(value) }
}

/// Reads a proto enum value, refusing unknown numbers and (when `required`)
/// the `_UNSPECIFIED` zero.
fn enum_value<P: TryFrom<i32>>(field: &str, value: i32) -> Result<P, DomainError> {
    P::try_from(value).map_err(|_| DomainError::invalid(field, format!("{value} is not a known value")))
}

pub fn role(field: &str, value: i32) -> Result<model::Role, DomainError> {
    match enum_value::<pb::Role>(field, value)? {
        pb::Role::OrganisationAdmin => Ok(model::Role::OrganisationAdmin),
        pb::Role::UserAdmin => Ok(model::Role::UserAdmin),
        pb::Role::RightsAdmin => Ok(model::Role::RightsAdmin),
        pb::Role::User => Ok(model::Role::User),
        pb::Role::Unspecified => Err(DomainError::invalid(field, "must not be ROLE_UNSPECIFIED")),
    }
}

/// Each item of a repeated field is named by its index (`roles[2]`).
fn item(field: &str, i: usize) -> String {
    format!("{field}[{i}]")
}

pub fn roles(field: &str, values: &[i32]) -> Result<Vec<model::Role>, DomainError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| role(&item(field, i), *v))
        .collect()
}

pub fn role_to_pb(role: model::Role) -> pb::Role {
    match role {
        model::Role::OrganisationAdmin => pb::Role::OrganisationAdmin,
        model::Role::UserAdmin => pb::Role::UserAdmin,
        model::Role::RightsAdmin => pb::Role::RightsAdmin,
        model::Role::User => pb::Role::User,
    }
}

pub fn user_state(field: &str, value: i32) -> Result<Option<model::UserState>, DomainError> {
    Ok(match enum_value::<pb::UserState>(field, value)? {
        pb::UserState::Unspecified => None,
        pb::UserState::PendingActivation => Some(model::UserState::PendingActivation),
        pb::UserState::Active => Some(model::UserState::Active),
        pb::UserState::Deactivated => Some(model::UserState::Deactivated),
        pb::UserState::Deleted => Some(model::UserState::Deleted),
    })
}

pub fn user_state_to_pb(state: model::UserState) -> pb::UserState {
    match state {
        model::UserState::PendingActivation => pb::UserState::PendingActivation,
        model::UserState::Active => pb::UserState::Active,
        model::UserState::Deactivated => pb::UserState::Deactivated,
        model::UserState::Deleted => pb::UserState::Deleted,
    }
}

pub fn language(field: &str, value: i32) -> Result<Option<model::Language>, DomainError> {
    Ok(match enum_value::<pb::Language>(field, value)? {
        pb::Language::Unspecified => None,
        pb::Language::Da => Some(model::Language::Da),
        pb::Language::Sv => Some(model::Language::Sv),
        pb::Language::En => Some(model::Language::En),
    })
}

pub fn language_to_pb(language: model::Language) -> pb::Language {
    match language {
        model::Language::Da => pb::Language::Da,
        model::Language::Sv => pb::Language::Sv,
        model::Language::En => pb::Language::En,
    }
}

pub fn deletion_policy(field: &str, value: i32) -> Result<Option<model::DeletionPolicy>, DomainError> {
    Ok(match enum_value::<pb::DeletionPolicy>(field, value)? {
        pb::DeletionPolicy::Unspecified => None,
        pb::DeletionPolicy::AllowDelete => Some(model::DeletionPolicy::AllowDelete),
        pb::DeletionPolicy::DeactivateOnly => Some(model::DeletionPolicy::DeactivateOnly),
    })
}

pub fn deletion_policy_to_pb(policy: model::DeletionPolicy) -> pb::DeletionPolicy {
    match policy {
        model::DeletionPolicy::AllowDelete => pb::DeletionPolicy::AllowDelete,
        model::DeletionPolicy::DeactivateOnly => pb::DeletionPolicy::DeactivateOnly,
    }
}

pub fn identification_means(field: &str, values: &[i32]) -> Result<Vec<model::IdentificationMeans>, DomainError> {
    values
        .iter()
        .enumerate()
        .map(
            |(i, v)| match enum_value::<pb::IdentificationMeans>(&item(field, i), *v)? {
                pb::IdentificationMeans::Mitid => Ok(model::IdentificationMeans::MitId),
                pb::IdentificationMeans::Password => Ok(model::IdentificationMeans::Password),
                pb::IdentificationMeans::LocalIdp => Ok(model::IdentificationMeans::LocalIdp),
                pb::IdentificationMeans::NemlogIn => Ok(model::IdentificationMeans::NemLogIn),
                pb::IdentificationMeans::Unspecified => Err(DomainError::invalid(
                    item(field, i),
                    "must not be IDENTIFICATION_MEANS_UNSPECIFIED",
                )),
            },
        )
        .collect()
}

pub fn identification_means_to_pb(values: &[model::IdentificationMeans]) -> Vec<i32> {
    values
        .iter()
        .map(|v| match v {
            model::IdentificationMeans::MitId => pb::IdentificationMeans::Mitid,
            model::IdentificationMeans::Password => pb::IdentificationMeans::Password,
            model::IdentificationMeans::LocalIdp => pb::IdentificationMeans::LocalIdp,
            model::IdentificationMeans::NemLogIn => pb::IdentificationMeans::NemlogIn,
        } as i32)
        .collect()
}

pub fn certificate_kinds(field: &str, values: &[i32]) -> Result<Vec<model::CertificateKind>, DomainError> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match enum_value::<pb::CertificateKind>(&item(field, i), *v)? {
            pb::CertificateKind::Employee => Ok(model::CertificateKind::Employee),
            pb::CertificateKind::Organisation => Ok(model::CertificateKind::Organisation),
            pb::CertificateKind::System => Ok(model::CertificateKind::System),
            pb::CertificateKind::Unspecified => Err(DomainError::invalid(
                item(field, i),
                "must not be CERTIFICATE_KIND_UNSPECIFIED",
            )),
        })
        .collect()
}

pub fn certificate_kinds_to_pb(values: &[model::CertificateKind]) -> Vec<i32> {
    values.iter().map(|v| certificate_kind_to_pb(*v) as i32).collect()
}

pub fn unit_kind(field: &str, value: i32) -> Result<model::UnitKind, DomainError> {
    match enum_value::<pb::UnitKind>(field, value)? {
        pb::UnitKind::Department => Ok(model::UnitKind::Department),
        pb::UnitKind::ProductionUnit => Ok(model::UnitKind::ProductionUnit),
        pb::UnitKind::TaxUnit => Ok(model::UnitKind::TaxUnit),
        pb::UnitKind::Unspecified => Err(DomainError::invalid(field, "must not be UNIT_KIND_UNSPECIFIED")),
    }
}

pub fn unit_kind_to_pb(kind: model::UnitKind) -> pb::UnitKind {
    match kind {
        model::UnitKind::Department => pb::UnitKind::Department,
        model::UnitKind::ProductionUnit => pb::UnitKind::ProductionUnit,
        model::UnitKind::TaxUnit => pb::UnitKind::TaxUnit,
    }
}

/// The two directions of an enum whose variants have the same names in the
/// domain and the proto, from one list: both matches are exhaustive, so a
/// variant added on either side without the other does not compile.
macro_rules! same_variants {
    ($to_pb:ident, $from_pb:ident, $model:ty, $proto:ty, $zero:literal, [$($variant:ident),+ $(,)?]) => {
        pub fn $to_pb(value: $model) -> $proto {
            match value {
                $(<$model>::$variant => <$proto>::$variant,)+
            }
        }

        /// Refuses unknown numbers and the `_UNSPECIFIED` zero.
        pub fn $from_pb(field: &str, value: i32) -> Result<$model, DomainError> {
            match enum_value::<$proto>(field, value)? {
                $(<$proto>::$variant => Ok(<$model>::$variant),)+
                <$proto>::Unspecified => Err(DomainError::invalid(field, concat!("must not be ", $zero))),
            }
        }
    };
}

same_variants!(
    activity_to_pb,
    activity,
    model::Activity,
    pb::HistoryActivity,
    "HISTORY_ACTIVITY_UNSPECIFIED",
    [
        ActivationCodeCreated,
        ActivationSent,
        AnonymityRejected,
        AnonymityRequested,
        ApiTokenCreated,
        ApiTokenRevoked,
        EmailVerified,
        OrganisationCreated,
        OrganisationUpdated,
        SettingsUpdated,
        LicenceCountChanged,
        UnitCreated,
        UnitDeleted,
        UnitUpdated,
        UserActivated,
        UserClosedForAnonymity,
        UserCreated,
        UserUpdated,
        UserDeactivated,
        UserReactivated,
        UserDeleted,
        CertificateOrdered,
        CertificateIssued,
        CertificateOrderDeleted,
        CertificateRevoked,
        CertificateSuperseded,
        CertificateExpired,
        CertificateContactChanged,
        LoginSucceeded,
        LoginFailed,
        LoginLocked,
        LoginUnlocked,
        LoggedOut,
        PasswordResetSent,
        PasswordReset,
        SecondFactorRequested,
        SecondFactorFailed,
        AuthenticatorEnrolled,
        AuthenticatorRemoved,
        SessionRevoked,
        AdminLevelGranted,
        AdminLevelRevoked,
        GrantCreated,
        GrantRevoked,
        RightsRequested,
        RightsRequestApproved,
        RightsRequestRejected,
        AccessShared,
        ShareRevoked,
        NotificationPreferencesChanged,
        GroupCreated,
        GroupDeleted,
        GroupMemberAdded,
        GroupMemberRemoved,
        JoinRequested,
        JoinRequestApproved,
        JoinRequestRejected,
    ]
);

pub fn second_factor_method_to_pb(method: model::SecondFactorMethod) -> pb::SecondFactorMethod {
    match method {
        model::SecondFactorMethod::MailCode => pb::SecondFactorMethod::MailCode,
        model::SecondFactorMethod::Totp => pb::SecondFactorMethod::Totp,
    }
}

same_variants!(
    certificate_state_to_pb,
    certificate_state,
    certificates::CertificateState,
    pb::CertificateState,
    "CERTIFICATE_STATE_UNSPECIFIED",
    [Ordered, Issued, Revoked, Superseded, Expired]
);

same_variants!(
    certificate_usage_to_pb,
    certificate_usage,
    certificates::CertificateUsage,
    pb::CertificateUsage,
    "CERTIFICATE_USAGE_UNSPECIFIED",
    [
        Authentication,
        Signing,
        EmailEncryption,
        ServiceAccess,
        Encryption,
        Sealing
    ]
);

same_variants!(
    revocation_reason_to_pb,
    revocation_reason,
    certificates::RevocationReason,
    pb::RevocationReason,
    "REVOCATION_REASON_UNSPECIFIED",
    [
        ContentIncorrect,
        KeyAccessLost,
        KeyCompromised,
        KeyDestroyed,
        HolderLeft,
        Superseded
    ]
);

same_variants!(
    export_format_to_pb,
    export_format,
    certificates::ExportFormat,
    pb::ExportFormat,
    "EXPORT_FORMAT_UNSPECIFIED",
    [PemBundle, Csv]
);

pub fn certificate_kind(field: &str, value: i32) -> Result<model::CertificateKind, DomainError> {
    certificate_kinds(field, &[value])
        .map(|kinds| kinds[0])
        .map_err(|e| match e {
            DomainError::InvalidArgument(_) => DomainError::invalid(
                field,
                "must be CERTIFICATE_KIND_EMPLOYEE, CERTIFICATE_KIND_ORGANISATION or CERTIFICATE_KIND_SYSTEM",
            ),
            other => other,
        })
}

pub fn certificate_kind_to_pb(kind: model::CertificateKind) -> pb::CertificateKind {
    match kind {
        model::CertificateKind::Employee => pb::CertificateKind::Employee,
        model::CertificateKind::Organisation => pb::CertificateKind::Organisation,
        model::CertificateKind::System => pb::CertificateKind::System,
    }
}

/// A history filter: each value a known activity, each violation naming its
/// index (`activities[2]`), all of them in one reply.
pub fn activities(field: &str, values: &[i32]) -> Result<Vec<model::Activity>, DomainError> {
    let mut found = Vec::with_capacity(values.len());
    let mut violations = Vec::new();
    for (i, value) in values.iter().enumerate() {
        match activity(&item(field, i), *value) {
            Ok(a) => found.push(a),
            Err(DomainError::InvalidArgument(v)) => violations.extend(v),
            Err(other) => return Err(other),
        }
    }
    if violations.is_empty() {
        Ok(found)
    } else {
        Err(DomainError::InvalidArgument(violations))
    }
}

/// The paths of an update mask, checked against the fields that may change.
pub fn mask_paths(mask: Option<&prost_types::FieldMask>, allowed: &[&str]) -> Result<Vec<String>, DomainError> {
    let paths = mask.map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        return Err(DomainError::invalid("update_mask", "must name at least one field"));
    }
    let mut violations = Vec::new();
    for path in &paths {
        if !allowed.contains(&path.as_str()) {
            violations.push(orgadmin_domain::FieldViolation::new(
                "update_mask",
                // The path as sent, shortened: it is the client's text.
                format!(
                    "{:?} cannot be updated; allowed: {}",
                    path.chars().take(60).collect::<String>(),
                    allowed.join(", ")
                ),
            ));
        }
    }
    if violations.is_empty() {
        Ok(paths)
    } else {
        Err(DomainError::InvalidArgument(violations))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn a_timestamp_is_read_within_what_protobuf_allows() {
        let at = |seconds| millis("t", &Timestamp { seconds, nanos: 0 });
        assert_eq!(at(253_402_300_799).unwrap(), 253_402_300_799_000);
        assert_eq!(at(-62_135_596_800).unwrap(), -62_135_596_800_000);
        assert!(at(253_402_300_800).is_err());
        assert!(at(-62_135_596_801).is_err());
        assert!(at(i64::MAX).is_err());
        // And back: what is read is written as it was.
        let read = millis(
            "t",
            &Timestamp {
                seconds: 1,
                nanos: 5_000_000,
            },
        )
        .unwrap();
        assert_eq!(
            timestamp(read),
            Timestamp {
                seconds: 1,
                nanos: 5_000_000
            }
        );
    }

    /// Every activity the domain can record has its own proto value, named
    /// like its stored form, and comes back as itself; the proto has no value
    /// the domain lacks (`Activity::ALL` is generated from the enum).
    #[test]
    fn every_activity_maps_to_a_distinct_proto_value_and_back() {
        let mut seen = HashSet::new();
        for &a in model::Activity::ALL {
            let value = activity_to_pb(a);
            assert_ne!(value, pb::HistoryActivity::Unspecified, "{a}");
            assert!(seen.insert(value), "{a} shares {value:?} with another activity");
            assert_eq!(value.as_str_name(), format!("HISTORY_ACTIVITY_{a}"));
            assert_eq!(activity("activities[0]", value as i32).unwrap(), a);
        }
        let proto_values = (1..1000).filter(|n| pb::HistoryActivity::try_from(*n).is_ok()).count();
        assert_eq!(seen.len(), proto_values, "proto values without a domain activity");
        assert!(activity("activities[0]", 0).is_err());
        assert!(activity("activities[0]", 1000).is_err());
    }

    #[test]
    fn an_unspecified_or_unknown_activity_names_its_index() {
        let err = activities("activities", &[pb::HistoryActivity::UserCreated as i32, 0, 9999]).unwrap_err();
        let DomainError::InvalidArgument(violations) = err else {
            panic!("not INVALID_ARGUMENT: {err:?}");
        };
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["activities[1]", "activities[2]"]);
    }
}

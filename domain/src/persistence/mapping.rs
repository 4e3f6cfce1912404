//! Rows to domain types and back.

use std::str::FromStr;

use super::entities::{api_token, organisation, unit, user};
use crate::error::{DomainError, DomainResult};
use crate::model::*;
use crate::secrets::CprVault;
use crate::validate::mask_cpr;

pub(crate) fn json_list<T: ToString>(items: &[T]) -> String {
    serde_json::to_string(&items.iter().map(ToString::to_string).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn parse_list<T: FromStr<Err = String>>(text: &str) -> DomainResult<Vec<T>> {
    let raw: Vec<String> =
        serde_json::from_str(text).map_err(|e| DomainError::Internal(format!("stored list is not JSON: {e}")))?;
    raw.iter().map(|s| parse(s)).collect()
}

pub(crate) fn parse<T: FromStr<Err = String>>(text: &str) -> DomainResult<T> {
    T::from_str(text).map_err(DomainError::Internal)
}

pub(crate) fn organisation_from_row(row: organisation::Model) -> DomainResult<Organisation> {
    Ok(Organisation {
        id: row.id,
        name: row.name,
        cvr: row.cvr,
        ean_numbers: serde_json::from_str(&row.ean_numbers).unwrap_or_default(),
        settings: OrganisationSettings {
            allowed_identification_means: parse_list(&row.allowed_identification_means)?,
            join_requests_allowed: row.join_requests_allowed,
            certificate_kinds: parse_list(&row.certificate_kinds)?,
            deletion_policy: parse(&row.deletion_policy)?,
            max_administrators: row.max_administrators,
            licence_count: row.licence_count,
            billing: BillingDetails {
                name: row.billing_name,
                address: row.billing_address,
                email: row.billing_email,
                reference: row.billing_reference,
            },
            second_factor_required: row.second_factor_required,
        },
        licences_used: row.licences_used,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn unit_from_row(row: unit::Model) -> DomainResult<Unit> {
    Ok(Unit {
        id: row.id,
        organisation_id: row.organisation_id,
        parent_id: row.parent_id,
        kind: parse(&row.kind)?,
        name: row.name,
        number: row.number,
    })
}

pub(crate) fn user_from_row(row: user::Model, roles: Vec<Role>, vault: &CprVault) -> DomainResult<User> {
    let cpr_masked = match &row.cpr_ciphertext {
        Some(sealed) => Some(mask_cpr(&vault.decrypt(sealed)?)),
        None => None,
    };
    let mut roles = roles;
    roles.sort();
    Ok(User {
        id: row.id,
        organisation_id: row.organisation_id,
        state: parse(&row.state)?,
        first_name: row.first_name,
        surname: row.surname,
        email: row.email,
        email_verified: row.email_verified,
        pending_email: row.pending_email,
        username: row.username,
        cpr_masked,
        birth_date: row.birth_date,
        unit_id: row.unit_id,
        phone: row.phone,
        language: parse(&row.language)?,
        external_ids: serde_json::from_str(&row.external_ids).unwrap_or_default(),
        roles,
        identification_means: parse_list(&row.identification_means)?,
        signing_right: row.signing_right,
        signs_with_organisation_certificate: row.signs_with_organisation_certificate,
        anonymous: row.anonymous,
        service_account: row.service_account,
        legacy_id: row.legacy_id,
        deactivated_until: row.deactivated_until,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

pub(crate) fn api_token_from_row(row: api_token::Model) -> ApiToken {
    ApiToken {
        id: row.id,
        organisation_id: row.organisation_id,
        user_id: row.user_id,
        name: row.name,
        created_at: row.created_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
    }
}

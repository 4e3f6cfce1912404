//! One row of an import file: its cells read into the request of the user
//! RPC it stands for. Only what is particular to the file is decided here
//! (which cells a kind uses, how roles or yes/no are written, which unit a
//! number names); every rule about the values themselves is the RPC's own,
//! applied when the row runs.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use uuid::Uuid;

use super::ImportKind;
use super::format::{Column, is_clear_marker};
use crate::email::Email;
use crate::error::{DomainError, Reason};
use crate::model::*;
use crate::normalise::{self, nfc};
use crate::services::users::{NewUser, UserPatch};
use crate::validate;

/// A problem of one row, in one column or (column `None`) the whole row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CellError {
    pub column: Option<Column>,
    pub reason: String,
    pub message: String,
}

impl CellError {
    pub fn new(column: Option<Column>, reason: Reason, message: impl Into<String>) -> Self {
        Self {
            column,
            reason: reason.as_str().to_owned(),
            message: message.into(),
        }
    }

    fn invalid(column: Column, message: impl Into<String>) -> Self {
        Self::new(Some(column), Reason::InvalidArgument, message)
    }
}

/// How an edit or delete row names its user: at least two of the three.
/// `Debug` shows whether a CPR number was given, never the number.
#[derive(Clone, Default)]
pub(super) struct UserRef {
    pub user_id: Option<Uuid>,
    pub cpr: Option<String>,
    pub email: Option<Email>,
}

impl std::fmt::Debug for UserRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRef")
            .field("user_id", &self.user_id)
            .field("cpr", &crate::services::users::cpr_shown(&self.cpr))
            .field("email", &self.email)
            .finish()
    }
}

pub(super) enum RowOp {
    /// Nothing in the row.
    Empty,
    Create(NewUser),
    Edit(UserRef, UserPatch),
    Delete(UserRef),
}

/// The organisation's units by id and by number (P-number, SE-number).
pub(super) struct Units {
    pub by_number: HashMap<String, Uuid>,
    pub ids: std::collections::HashSet<Uuid>,
}

impl Units {
    fn resolve(&self, cell: &str) -> Result<Uuid, String> {
        if let Ok(id) = Uuid::parse_str(cell) {
            return if self.ids.contains(&id) {
                Ok(id)
            } else {
                Err("names no unit of this organisation".into())
            };
        }
        self.by_number
            .get(cell)
            .copied()
            .ok_or_else(|| "names no unit of this organisation by id, P-number or SE-number".into())
    }
}

fn cell(cells: &[String], column: Column) -> &str {
    let i = Column::ALL.iter().position(|c| *c == column).unwrap_or(0);
    cells.get(i).map(|c| c.trim()).unwrap_or("")
}

fn filled(cells: &[String], column: Column) -> Option<&str> {
    Some(cell(cells, column)).filter(|c| !c.is_empty())
}

fn language(text: &str) -> Result<Language, String> {
    match text.to_lowercase().as_str() {
        "da" | "dansk" | "danish" | "danska" => Ok(Language::Da),
        "sv" | "svensk" | "svenska" | "swedish" => Ok(Language::Sv),
        "en" | "engelsk" | "engelska" | "english" => Ok(Language::En),
        _ => Err("must be da, sv or en".into()),
    }
}

fn yes_no(text: &str) -> Result<bool, String> {
    match text.to_lowercase().as_str() {
        "ja" | "yes" | "true" | "1" | "x" => Ok(true),
        "nej" | "no" | "false" | "0" => Ok(false),
        _ => Err("must be ja/nej (yes/no)".into()),
    }
}

/// A comma-separated list of names, each one of `T`'s.
fn names<T: std::str::FromStr>(text: &str, what: &str) -> Result<Vec<T>, String> {
    text.split([',', '|'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.to_uppercase()
                .replace([' ', '-'], "_")
                .parse::<T>()
                .map_err(|_| format!("{:?} is not a {what}", quoted(t)))
        })
        .collect()
}

/// A cell's text as a message quotes it: its first 40 characters. A cell
/// has no length limit of its own, and the message is stored per row and
/// sent in the report.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The names a list cell may hold, for its error message.
fn known_names<T: std::fmt::Display>(all: &[T]) -> String {
    all.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Reads a data row. `Err` holds every problem found in it.
pub(super) fn read_row(
    kind: ImportKind,
    organisation_id: Uuid,
    cells: &[String],
    units: &Units,
) -> Result<RowOp, Vec<CellError>> {
    if cells.iter().all(|c| c.trim().is_empty()) {
        return Ok(RowOp::Empty);
    }
    if cells.len() != Column::ALL.len() {
        return Err(vec![CellError::new(
            None,
            Reason::InvalidArgument,
            format!(
                "the row has {} columns; every row has {} (a semicolon too many or too few?)",
                cells.len(),
                Column::ALL.len()
            ),
        )]);
    }
    let mut errors = Vec::new();
    let mut parsed = |column: Column, result: Result<(), String>| {
        if let Err(message) = result {
            errors.push(CellError::invalid(column, message));
        }
    };
    let unit = filled(cells, Column::Unit).map(|c| {
        if is_clear_marker(c) {
            return None;
        }
        let resolved = units.resolve(c);
        let id = resolved.as_ref().ok().copied();
        parsed(Column::Unit, resolved.map(|_| ()));
        id
    });
    let language = filled(cells, Column::Language).and_then(|c| {
        let lang = language(c);
        let value = lang.as_ref().ok().copied();
        parsed(Column::Language, lang.map(|_| ()));
        value
    });
    let roles = filled(cells, Column::Roles).and_then(|c| {
        let roles = names::<Role>(c, "role").map_err(|e| format!("{e}; roles are {}", known_names(Role::ALL)));
        let value = roles.as_ref().ok().cloned();
        parsed(Column::Roles, roles.map(|_| ()));
        value
    });
    let signing_right = filled(cells, Column::SigningRight).and_then(|c| {
        let value = yes_no(c);
        let ok = value.as_ref().ok().copied();
        parsed(Column::SigningRight, value.map(|_| ()));
        ok
    });
    let means = filled(cells, Column::IdentificationMeans).and_then(|c| {
        let means = names::<IdentificationMeans>(c, "means of identification")
            .map_err(|e| format!("{e}; they are {}", known_names(IdentificationMeans::ALL)));
        let value = means.as_ref().ok().cloned();
        parsed(Column::IdentificationMeans, means.map(|_| ()));
        value
    });
    let user_id = filled(cells, Column::UserId).and_then(|c| {
        let id = Uuid::parse_str(c).map_err(|_| "is not a user id".to_owned());
        let value = id.as_ref().ok().copied();
        parsed(Column::UserId, id.map(|_| ()));
        value
    });
    let op = match kind {
        ImportKind::Create | ImportKind::LegacyCreate => {
            if filled(cells, Column::UserId).is_some() {
                errors.push(CellError::invalid(
                    Column::UserId,
                    "leave empty in a create file: the system gives new users their id",
                ));
            }
            let legacy_id = filled(cells, Column::LegacyId).map(str::to_owned);
            if let Some(Err(message)) = legacy_id.as_deref().map(validate::legacy_id) {
                errors.push(CellError::invalid(Column::LegacyId, message));
            }
            match (kind, &legacy_id) {
                (ImportKind::LegacyCreate, None) => errors.push(CellError::invalid(
                    Column::LegacyId,
                    "a legacy import keeps each user's RID number: fill it in",
                )),
                (ImportKind::Create, Some(_)) => errors.push(CellError::invalid(
                    Column::LegacyId,
                    "RID numbers are kept by legacy imports only; leave empty",
                )),
                _ => {}
            }
            for column in Column::ALL {
                if filled(cells, column).is_some_and(is_clear_marker) {
                    errors.push(CellError::invalid(
                        column,
                        "a clear marker only means something in an edit file",
                    ));
                }
            }
            RowOp::Create(NewUser {
                organisation_id,
                first_name: cell(cells, Column::FirstName).to_owned(),
                surname: cell(cells, Column::Surname).to_owned(),
                email: cell(cells, Column::Email).to_owned(),
                username: filled(cells, Column::Username).map(str::to_owned),
                cpr: filled(cells, Column::Cpr).map(str::to_owned),
                birth_date: filled(cells, Column::BirthDate).map(str::to_owned),
                unit_id: unit.flatten(),
                phone: filled(cells, Column::Phone).map(str::to_owned),
                language,
                external_ids: filled(cells, Column::ExternalId)
                    .map(|c| vec![c.to_owned()])
                    .unwrap_or_default(),
                roles: roles.unwrap_or_default(),
                identification_means: means.unwrap_or_default(),
                signing_right: signing_right.unwrap_or(false),
                anonymous: false,
                request_id: None,
                suppress_activation: true,
                // Imports bring people; service accounts are made one by one.
                service_account: false,
                legacy_id,
            })
        }
        ImportKind::Edit | ImportKind::Delete => {
            let reference = user_ref(cells, user_id, &mut errors);
            if kind == ImportKind::Delete {
                RowOp::Delete(reference)
            } else {
                if filled(cells, Column::LegacyId).is_some() {
                    errors.push(CellError::invalid(
                        Column::LegacyId,
                        "a RID number is kept as imported and cannot be edited; leave empty",
                    ));
                }
                if filled(cells, Column::BirthDate).is_some() && reference.cpr.is_some() {
                    errors.push(CellError::invalid(
                        Column::BirthDate,
                        "a user with a CPR number has no separate birth date",
                    ));
                }
                let optional = |column: Column| -> Option<Option<String>> {
                    filled(cells, column).map(|c| (!is_clear_marker(c)).then(|| c.to_owned()))
                };
                for column in [Column::FirstName, Column::Surname, Column::Language, Column::Roles] {
                    if filled(cells, column).is_some_and(is_clear_marker) {
                        errors.push(CellError::invalid(column, "is required and cannot be cleared"));
                    }
                }
                // The address is a new one only when user id and CPR number
                // (which both name the user) leave it free to differ.
                let email = match (&reference.user_id, &reference.cpr) {
                    (Some(_), Some(_)) => filled(cells, Column::Email).map(str::to_owned),
                    _ => None,
                };
                let patch = UserPatch {
                    first_name: filled(cells, Column::FirstName).map(str::to_owned),
                    surname: filled(cells, Column::Surname).map(str::to_owned),
                    email,
                    username: optional(Column::Username),
                    cpr: None,
                    birth_date: filled(cells, Column::BirthDate).map(str::to_owned),
                    unit_id: unit,
                    phone: optional(Column::Phone),
                    language,
                    external_ids: optional(Column::ExternalId).map(|v| v.into_iter().collect()),
                    roles,
                    identification_means: filled(cells, Column::IdentificationMeans).map(|c| {
                        if is_clear_marker(c) {
                            Vec::new()
                        } else {
                            means.unwrap_or_default()
                        }
                    }),
                    signing_right,
                };
                RowOp::Edit(reference, patch)
            }
        }
    };
    if errors.is_empty() { Ok(op) } else { Err(errors) }
}

fn user_ref(cells: &[String], user_id: Option<Uuid>, errors: &mut Vec<CellError>) -> UserRef {
    let given = [Column::UserId, Column::Cpr, Column::Email]
        .iter()
        .filter(|c| filled(cells, **c).is_some())
        .count();
    if given < 2 {
        errors.push(CellError::new(
            None,
            Reason::InvalidArgument,
            "name the user by at least two of user id, CPR number and e-mail",
        ));
    }
    let cpr = filled(cells, Column::Cpr).and_then(|c| match validate::normalise_cpr(c) {
        Ok(cpr) => Some(cpr),
        Err(e) => {
            errors.push(CellError::invalid(Column::Cpr, e));
            None
        }
    });
    let email = filled(cells, Column::Email).and_then(|c| match Email::parse(c) {
        Ok(email) => Some(email),
        Err(e) => {
            errors.push(CellError::invalid(Column::Email, e));
            None
        }
    });
    UserRef { user_id, cpr, email }
}

/// The values two rows of one file may not share, as hashes (the scan of a
/// million rows keeps 8 bytes per value, not the text).
pub(super) fn unique_keys(kind: ImportKind, cells: &[String]) -> Vec<(Column, u64)> {
    let hash = |column: Column, text: &str| {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        column.key().hash(&mut hasher);
        text.hash(&mut hasher);
        (column, hasher.finish())
    };
    let mut keys = Vec::new();
    if cells.len() != Column::ALL.len() {
        return keys;
    }
    if let Some(email) = filled(cells, Column::Email).and_then(|c| Email::parse(c).ok()) {
        keys.push(hash(Column::Email, email.key()));
    }
    if let Some(cpr) = filled(cells, Column::Cpr).and_then(|c| validate::normalise_cpr(c).ok()) {
        keys.push(hash(Column::Cpr, &cpr));
    }
    match kind {
        ImportKind::Create | ImportKind::LegacyCreate => {
            if let Some(username) = filled(cells, Column::Username).filter(|c| !is_clear_marker(c)) {
                keys.push(hash(Column::Username, &normalise::key(&nfc(username))));
            }
            if let Some(rid) = filled(cells, Column::LegacyId) {
                keys.push(hash(Column::LegacyId, rid));
            }
        }
        ImportKind::Edit | ImportKind::Delete => {
            if let Some(id) = filled(cells, Column::UserId).and_then(|c| Uuid::parse_str(c).ok()) {
                keys.push(hash(Column::UserId, &id.to_string()));
            }
        }
    }
    keys
}

/// Maps what a user RPC refused to the row's cells. Errors that are no
/// fault of the row (the database went away) are not row errors: they are
/// returned for the batch to stop and run again.
pub(super) fn row_errors(error: DomainError) -> Result<Vec<CellError>, DomainError> {
    let column_of_field = |field: &str| {
        let field = field.trim_start_matches("user.");
        let field = match field {
            "unit_id" => "unit",
            "external_ids" => "external_id",
            other => other,
        };
        Column::ALL.into_iter().find(|c| c.key() == field)
    };
    let column_of_reason = |reason: Reason| match reason {
        Reason::EmailTaken => Some(Column::Email),
        Reason::UsernameTaken => Some(Column::Username),
        Reason::CprTaken => Some(Column::Cpr),
        Reason::MaxAdministratorsReached | Reason::LastOrganisationAdmin => Some(Column::Roles),
        _ => None,
    };
    Ok(match error {
        DomainError::InvalidArgument(violations) => violations
            .into_iter()
            .map(|v| {
                let column = column_of_field(&v.field);
                let message = match column {
                    Some(_) => v.description,
                    None => format!("{}: {}", v.field, v.description),
                };
                CellError::new(column, Reason::InvalidArgument, message)
            })
            .collect(),
        DomainError::FailedPrecondition { reason, message, .. } | DomainError::AlreadyExists { reason, message } => {
            vec![CellError::new(column_of_reason(reason), reason, message)]
        }
        DomainError::NotFound { resource, id } => vec![CellError::new(
            None,
            Reason::NotFound,
            format!("{resource} {id} not found in this organisation"),
        )],
        DomainError::PermissionDenied { message } => vec![CellError::new(None, Reason::PermissionDenied, message)],
        DomainError::Aborted { reason, message } => vec![CellError::new(None, reason, message)],
        other @ (DomainError::RequestAlreadyDone { .. }
        | DomainError::Unauthenticated { .. }
        | DomainError::RateLimited { .. }
        | DomainError::Unavailable { .. }
        | DomainError::Internal(_)) => return Err(other),
    })
}

#[cfg(test)]
mod tests {
    use super::UserRef;

    #[test]
    fn a_row_naming_its_user_by_cpr_number_does_not_print_it() {
        let named = UserRef {
            cpr: Some("0703854821".into()),
            ..Default::default()
        };
        let text = format!("{named:?}");
        assert!(!text.contains("0703854821") && text.contains("<hidden>"), "{text}");
    }
}

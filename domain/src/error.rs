//! The domain's one error type. The service maps it to `tonic::Status` in one
//! place; nothing here knows about gRPC.

use sea_orm::{DbErr, SqlErr};

/// One broken field rule: which field, and what the rule is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    #[error("{message}")]
    AlreadyExists { reason: &'static str, message: String },
    /// A rule of the organisation stands in the way (licences, last admin, ...).
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
        metadata: Vec<(String, String)>,
    },
    #[error("{message}")]
    PermissionDenied { message: String },
    #[error("{message}")]
    Unauthenticated { message: String },
    /// The caller's etag is stale: someone changed the resource since it was read.
    #[error("{message}")]
    Aborted { message: String },
    /// The database could not be reached in time (pool exhausted or down):
    /// worth retrying with back-off.
    #[error("{message}")]
    Unavailable { message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    pub fn not_found(resource: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            resource,
            id: id.to_string(),
        }
    }

    pub fn denied(message: impl Into<String>) -> Self {
        Self::PermissionDenied {
            message: message.into(),
        }
    }

    pub fn precondition(reason: &'static str, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    pub fn stale_etag(resource: &'static str) -> Self {
        Self::Aborted {
            message: format!("the {resource} was changed by someone else; read it again and retry with its new etag"),
        }
    }
}

impl From<DbErr> for DomainError {
    fn from(err: DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(detail)) = err.sql_err() {
            return unique_violation(&detail);
        }
        if let DbErr::ConnectionAcquire(cause) = &err {
            return Self::Unavailable {
                message: format!("the database is busy or unreachable ({cause}); retry with back-off"),
            };
        }
        Self::Internal(err.to_string())
    }
}

/// The uniqueness rules of users live in the partial unique indexes (a
/// deleted user frees its e-mail, username and CPR number); a write that
/// breaks one gets the rule's own reason. PostgreSQL names the index in its
/// message, SQLite the columns (e-mail and username: their normalised keys,
/// see `normalise`). Values are never echoed: they may be personal
/// data.
const UNIQUE_RULES: &[(&str, &str, &str, &str)] = &[
    (
        "users_live_email",
        "users.email_key",
        "EMAIL_TAKEN",
        "another user of this organisation has this e-mail address",
    ),
    (
        "users_live_username",
        "users.username_key",
        "USERNAME_TAKEN",
        "this username is taken",
    ),
    (
        "users_live_cpr",
        "users.cpr_hash",
        "CPR_TAKEN",
        "this person already has a user in this organisation",
    ),
];

fn unique_violation(detail: &str) -> DomainError {
    for (index, columns, reason, message) in UNIQUE_RULES {
        if detail.contains(index) || detail.contains(columns) {
            return DomainError::AlreadyExists {
                reason,
                message: (*message).into(),
            };
        }
    }
    let hint = if detail.contains("cvr") {
        "organisations_cvr"
    } else if detail.contains("units_organisation_kind_number") {
        "units_organisation_kind_number"
    } else {
        "unique index"
    };
    DomainError::AlreadyExists {
        reason: "ALREADY_EXISTS",
        message: format!("a resource with these values already exists ({hint})"),
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

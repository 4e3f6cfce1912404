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
        // A unique index caught a race the explicit checks could not see.
        if let Some(SqlErr::UniqueConstraintViolation(detail)) = err.sql_err() {
            return Self::AlreadyExists {
                reason: "ALREADY_EXISTS",
                message: format!(
                    "a resource with these values already exists ({})",
                    constraint_hint(&detail)
                ),
            };
        }
        Self::Internal(err.to_string())
    }
}

/// Names the index without echoing the values (they may be personal data).
fn constraint_hint(detail: &str) -> String {
    for name in [
        "users_live_email",
        "users_live_username",
        "users_live_cpr",
        "organisations",
        "units_organisation_kind_number",
    ] {
        if detail.contains(name) {
            return name.to_string();
        }
    }
    if detail.contains("users.email") {
        return "users_live_email".into();
    }
    if detail.contains("users.username") {
        return "users_live_username".into();
    }
    if detail.contains("users.cpr_hash") {
        return "users_live_cpr".into();
    }
    if detail.contains("organisations.cvr") || detail.contains("cvr") {
        return "organisations_cvr".into();
    }
    "unique index".into()
}

pub type DomainResult<T> = Result<T, DomainError>;

//! The domain's one error type. The service maps it to `tonic::Status` in one
//! place; nothing here knows about gRPC.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

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

macro_rules! reasons {
    ($($variant:ident => $text:literal),+ $(,)?) => {
        /// Every `ErrorInfo.reason` orgadmin answers with: stable UPPER_SNAKE
        /// words clients may match on. One list, so the tests can prove each
        /// one is asserted somewhere (`tests/api/reasons.rs`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Reason { $($variant),+ }

        impl Reason {
            pub const ALL: &'static [Reason] = &[$(Reason::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $(Reason::$variant => $text),+ }
            }
        }
    };
}

reasons!(
    ActivationExpired => "ACTIVATION_EXPIRED",
    ActivationLocked => "ACTIVATION_LOCKED",
    ActivationMismatch => "ACTIVATION_MISMATCH",
    ActivationReplaced => "ACTIVATION_REPLACED",
    ActivationUnknown => "ACTIVATION_UNKNOWN",
    ActivationUsed => "ACTIVATION_USED",
    ActivatesByLink => "ACTIVATES_BY_LINK",
    AdministratorsAboveLimit => "ADMINISTRATORS_ABOVE_LIMIT",
    AlreadyAnonymous => "ALREADY_ANONYMOUS",
    AlreadyExists => "ALREADY_EXISTS",
    AnonymityRequestDecided => "ANONYMITY_REQUEST_DECIDED",
    AnonymityRequestOpen => "ANONYMITY_REQUEST_OPEN",
    CaNotConfigured => "CA_NOT_CONFIGURED",
    CertificateContactNotActive => "CERTIFICATE_CONTACT_NOT_ACTIVE",
    CertificateKindNotAllowed => "CERTIFICATE_KIND_NOT_ALLOWED",
    CertificateNotIssued => "CERTIFICATE_NOT_ISSUED",
    CertificateNotOrdered => "CERTIFICATE_NOT_ORDERED",
    CertificateNotRenewable => "CERTIFICATE_NOT_RENEWABLE",
    CertificatePickupExpired => "CERTIFICATE_PICKUP_EXPIRED",
    CertificatePickupUnknown => "CERTIFICATE_PICKUP_UNKNOWN",
    CertificatePickupUsed => "CERTIFICATE_PICKUP_USED",
    CertificateRevoked => "CERTIFICATE_REVOKED",
    CprTaken => "CPR_TAKEN",
    CvrTaken => "CVR_TAKEN",
    DatabaseBusy => "DATABASE_BUSY",
    DatabaseUnavailable => "DATABASE_UNAVAILABLE",
    DeletionNotAllowed => "DELETION_NOT_ALLOWED",
    EmailTaken => "EMAIL_TAKEN",
    GroupNameTaken => "GROUP_NAME_TAKEN",
    EmailNotVerified => "EMAIL_NOT_VERIFIED",
    EmailVerificationUnknown => "EMAIL_VERIFICATION_UNKNOWN",
    EmailChangeHeld => "EMAIL_CHANGE_HELD",
    DuplicateInFile => "DUPLICATE_IN_FILE",
    HasCprNumber => "HAS_CPR_NUMBER",
    ImportFinished => "IMPORT_FINISHED",
    ImportHeaderInvalid => "IMPORT_HEADER_INVALID",
    ImportRequesterCannotAct => "IMPORT_REQUESTER_CANNOT_ACT",
    ImportRunFailed => "IMPORT_RUN_FAILED",
    ImportsQueueFull => "IMPORTS_QUEUE_FULL",
    ImportTooLarge => "IMPORT_TOO_LARGE",
    ImportUploadAbandoned => "IMPORT_UPLOAD_ABANDONED",
    ImportTooManyRows => "IMPORT_TOO_MANY_ROWS",
    JoinConfirmationExpired => "JOIN_CONFIRMATION_EXPIRED",
    JoinConfirmationUnknown => "JOIN_CONFIRMATION_UNKNOWN",
    JoinRequestDecided => "JOIN_REQUEST_DECIDED",
    JoinRequestsNotAllowed => "JOIN_REQUESTS_NOT_ALLOWED",
    InvalidArgument => "INVALID_ARGUMENT",
    LastOrganisationAdmin => "LAST_ORGANISATION_ADMIN",
    LicencesInUse => "LICENCES_IN_USE",
    LicenceLimitReached => "LICENCE_LIMIT_REACHED",
    MailExpired => "MAIL_EXPIRED",
    MailNotFailed => "MAIL_NOT_FAILED",
    MaxAdministratorsReached => "MAX_ADMINISTRATORS_REACHED",
    NotFound => "NOT_FOUND",
    NoCprNumber => "NO_CPR_NUMBER",
    NoSealingCertificate => "NO_SEALING_CERTIFICATE",
    NotASession => "NOT_A_SESSION",
    NoAuthenticatorPending => "NO_AUTHENTICATOR_PENDING",
    AuthenticatorEnrolled => "AUTHENTICATOR_ENROLLED",
    PasswordResetExpired => "PASSWORD_RESET_EXPIRED",
    PasswordResetUnknown => "PASSWORD_RESET_UNKNOWN",
    PasswordResetUsed => "PASSWORD_RESET_USED",
    RateLimited => "RATE_LIMITED",
    Overloaded => "OVERLOADED",
    PermissionDenied => "PERMISSION_DENIED",
    RequestAlreadyDone => "REQUEST_ALREADY_DONE",
    RequestIdReused => "REQUEST_ID_REUSED",
    RightsRequestDecided => "RIGHTS_REQUEST_DECIDED",
    RightsRequestOpen => "RIGHTS_REQUEST_OPEN",
    SigningRightMissing => "SIGNING_RIGHT_MISSING",
    StaleEtag => "STALE_ETAG",
    CertificateKeyCompromised => "CERTIFICATE_KEY_COMPROMISED",
    CertificateKeyNotNew => "CERTIFICATE_KEY_NOT_NEW",
    ChangedMeanwhile => "CHANGED_MEANWHILE",
    SystemGroup => "SYSTEM_GROUP",
    Unauthenticated => "UNAUTHENTICATED",
    UnitInUse => "UNIT_IN_USE",
    UnitNumberTaken => "UNIT_NUMBER_TAKEN",
    UsernameTaken => "USERNAME_TAKEN",
    UserDeleted => "USER_DELETED",
    UserNotActive => "USER_NOT_ACTIVE",
    ServiceAccount => "SERVICE_ACCOUNT",
    UserNotDeactivated => "USER_NOT_DEACTIVATED",
    UserMismatch => "USER_MISMATCH",
    UserNotPending => "USER_NOT_PENDING",
);

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("invalid argument: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{resource} {id} not found")]
    NotFound { resource: &'static str, id: String },
    #[error("{message}")]
    AlreadyExists { reason: Reason, message: String },
    /// An earlier call with the same request id already made `resource`
    /// `id`, and what it returned cannot be given again (a secret is shown
    /// once). Reason REQUEST_ALREADY_DONE.
    #[error("{message}")]
    RequestAlreadyDone {
        resource: &'static str,
        id: String,
        message: String,
    },
    /// A rule of the organisation stands in the way (licences, last admin, ...).
    #[error("{message}")]
    FailedPrecondition {
        reason: Reason,
        message: String,
        metadata: Vec<(String, String)>,
    },
    #[error("{message}")]
    PermissionDenied { message: String },
    #[error("{message}")]
    Unauthenticated { message: String },
    /// Too many sign-in attempts from one login id or address: wait
    /// `retry_after_ms`. Reason RATE_LIMITED.
    #[error("{message}")]
    RateLimited { message: String, retry_after_ms: i64 },
    /// The caller's etag is stale: someone changed the resource since it was read.
    #[error("{message}")]
    Aborted { reason: Reason, message: String },
    /// The database could not be reached in time (pool exhausted, locked by
    /// another process, connection lost or refused): worth retrying with
    /// back-off. `reason` is DATABASE_BUSY or DATABASE_UNAVAILABLE.
    #[error("{message}")]
    Unavailable { reason: Reason, message: String },
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
    /// Whether the error is the system's, not the caller's: the database or
    /// another dependency failed, so the same call may succeed later.
    pub fn is_outage(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Internal(_))
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![FieldViolation::new(field, description)])
    }

    /// The same error with its field paths read from inside the request
    /// field `message` (`etag` → `user.etag`), for a rule shared by requests
    /// that hold the field at the top and requests that hold it in their
    /// resource: field paths are relative to the request (AIP-193).
    pub fn within(self, message: &str) -> Self {
        match self {
            Self::InvalidArgument(violations) => Self::InvalidArgument(
                violations
                    .into_iter()
                    .map(|v| FieldViolation::new(format!("{message}.{}", v.field), v.description))
                    .collect(),
            ),
            other => other,
        }
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

    pub fn precondition(reason: Reason, message: impl Into<String>) -> Self {
        Self::FailedPrecondition {
            reason,
            message: message.into(),
            metadata: Vec::new(),
        }
    }

    pub fn stale_etag(resource: &'static str) -> Self {
        Self::Aborted {
            reason: Reason::StaleEtag,
            message: format!("the {resource} was changed by someone else; read it again and retry with its new etag"),
        }
    }
}

/// Whether a write broke a unique index: a parallel create with the same
/// request id may have committed first.
pub(crate) fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

impl From<DbErr> for DomainError {
    fn from(err: DbErr) -> Self {
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(detail)) => return unique_violation(&detail),
            // A row the write names was removed after the call checked it
            // and before the write (a unit deleted as a user was created in
            // it, on PostgreSQL): the call is not wrong, the world moved; a
            // retry checks again and answers what is wrong now. It answered
            // INTERNAL.
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                return Self::Aborted {
                    reason: Reason::ChangedMeanwhile,
                    message: "something this call names was changed or removed meanwhile; read it again and retry"
                        .into(),
                };
            }
            _ => {}
        }
        if let DbErr::ConnectionAcquire(cause) = &err {
            return Self::Unavailable {
                reason: Reason::DatabaseBusy,
                message: format!("the database is busy or unreachable ({cause}); retry with back-off"),
            };
        }
        match transient(&err) {
            Some(Transient::Busy) => Self::Unavailable {
                reason: Reason::DatabaseBusy,
                message: "the database is busy with another writer; retry with back-off".into(),
            },
            // The operator hears of an outage from the service's health
            // probe; the client retries the call.
            Some(Transient::Lost) => {
                crate::persistence::connection_lost();
                Self::Unavailable {
                    reason: Reason::DatabaseUnavailable,
                    message: "the connection to the database was lost or refused; retry with back-off".into(),
                }
            }
            None => Self::Internal(err.to_string()),
        }
    }
}

/// Database failures that say nothing about the request: the same call may
/// well succeed a moment later, so the client should retry.
enum Transient {
    /// Another writer holds the lock (SQLite past its busy timeout).
    Busy,
    /// The connection broke or was refused: server restarting, backend
    /// terminated, network gone.
    Lost,
}

fn transient(err: &DbErr) -> Option<Transient> {
    let sqlx_err = match err {
        // Opening or acquiring a connection failed: whatever the cause, the
        // database is not there for us right now.
        DbErr::Conn(RuntimeErr::SqlxError(e)) => {
            return Some(match e.as_database_error() {
                Some(db) if sqlite_busy(db) => Transient::Busy,
                _ => Transient::Lost,
            });
        }
        DbErr::Conn(_) => return Some(Transient::Lost),
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return None,
    };
    use sea_orm::sqlx::Error;
    match sqlx_err.as_ref() {
        Error::Io(_) | Error::Tls(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed => {
            Some(Transient::Lost)
        }
        Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref();
            if sqlite_busy(db.as_ref()) || postgres_gave_up_waiting(code) {
                Some(Transient::Busy)
            } else if postgres_connection_gone(code) {
                Some(Transient::Lost)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// SQLITE_BUSY (5) and SQLITE_LOCKED (6) with their extended codes (517 is
/// BUSY_SNAPSHOT): SQLite reports the extended code, the low byte is the
/// primary one. SQLite's errors only: PostgreSQL's SQLSTATEs are often
/// numbers too, and 22021 (a NUL or bad UTF-8 in a value) has 5 as its low
/// byte, which made a refused value answer "busy, retry" for ever.
fn sqlite_busy(db: &dyn sea_orm::sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>().is_some()
        && db
            .code()
            .and_then(|c| c.parse::<u32>().ok())
            .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

/// PostgreSQL gave up a statement that waited on others: 55P03 (a lock not
/// had within `lock_timeout`), 40P01 (a deadlock, this statement chosen to
/// end it). The same call may well pass a moment later.
fn postgres_gave_up_waiting(code: Option<&str>) -> bool {
    matches!(code, Some("55P03" | "40P01"))
}

/// PostgreSQL SQLSTATEs of a connection that is gone or refused: class 08
/// (connection exception), 57P01-57P03 (administrator or crash shutdown,
/// backend terminated, cannot connect now), 53300 (too many connections),
/// 25P03 (ended by `idle_in_transaction_session_timeout`).
fn postgres_connection_gone(code: Option<&str>) -> bool {
    code.is_some_and(|c| c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300" | "25P03"))
}

/// The uniqueness rules of users live in the partial unique indexes (a
/// deleted user frees its e-mail, username and CPR number); a write that
/// breaks one gets the rule's own reason. PostgreSQL names the index in its
/// message, SQLite the columns (e-mail and username: their normalised keys,
/// see `normalise`). Values are never echoed: they may be personal
/// data.
const UNIQUE_RULES: &[(&str, &str, Reason, &str)] = &[
    (
        "users_live_email",
        "users.email_key",
        Reason::EmailTaken,
        "another user of this organisation has this e-mail address",
    ),
    (
        "users_live_username",
        "users.username_key",
        Reason::UsernameTaken,
        "this username is taken",
    ),
    (
        "users_live_cpr",
        "users.cpr_hash",
        Reason::CprTaken,
        "this person already has a user in this organisation",
    ),
];

/// The refusal of a uniqueness rule of users (EMAIL_TAKEN, ...), for a check
/// made before the index would refuse: the same reason and words.
pub(crate) fn unique_rule_refusal(reason: Reason) -> DomainError {
    let message = UNIQUE_RULES
        .iter()
        .find(|(_, _, r, _)| *r == reason)
        .map_or("a resource with these values already exists", |(_, _, _, m)| *m);
    DomainError::AlreadyExists {
        reason,
        message: message.into(),
    }
}

fn unique_violation(detail: &str) -> DomainError {
    for (index, columns, reason, message) in UNIQUE_RULES {
        if detail.contains(index) || detail.contains(columns) {
            return DomainError::AlreadyExists {
                reason: *reason,
                message: (*message).into(),
            };
        }
    }
    // Two creates of one CVR at once: the second passed the check before
    // the first committed, and gets the check's own reason.
    if detail.contains("cvr") {
        return DomainError::AlreadyExists {
            reason: Reason::CvrTaken,
            message: "an organisation with this CVR number already exists".into(),
        };
    }
    let hint = if detail.contains("units_organisation_kind_number") {
        "units_organisation_kind_number"
    } else {
        "unique index"
    };
    DomainError::AlreadyExists {
        reason: Reason::AlreadyExists,
        message: format!("a resource with these values already exists ({hint})"),
    }
}

pub type DomainResult<T> = Result<T, DomainError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn reason_of(err: DomainError) -> &'static str {
        match err {
            DomainError::AlreadyExists { reason, .. } => reason.as_str(),
            other => panic!("not ALREADY_EXISTS: {other:?}"),
        }
    }

    #[test]
    fn unique_violations_name_their_rule() {
        // PostgreSQL names the index, SQLite the columns.
        assert_eq!(reason_of(unique_violation("users_live_email")), "EMAIL_TAKEN");
        assert_eq!(reason_of(unique_violation("users.username_key")), "USERNAME_TAKEN");
        assert_eq!(reason_of(unique_violation("users_live_cpr")), "CPR_TAKEN");
        // Two creates of one CVR at once: the index answers as the check.
        assert_eq!(
            reason_of(unique_violation(
                "duplicate key value violates unique constraint \"organisations_cvr_key\""
            )),
            "CVR_TAKEN"
        );
        assert_eq!(
            reason_of(unique_violation("UNIQUE constraint failed: organisations.cvr")),
            "CVR_TAKEN"
        );
        // An index without a rule of its own still answers ALREADY_EXISTS.
        assert_eq!(reason_of(unique_violation("some_new_index")), "ALREADY_EXISTS");
    }
}

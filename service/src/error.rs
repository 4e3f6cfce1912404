//! The one place where domain errors become gRPC statuses (R-OPS-5), with
//! `google.rpc` details: `BadRequest` field violations and an `ErrorInfo`
//! whose reason is a stable UPPER_SNAKE word.

use std::collections::HashMap;

use orgadmin_domain::DomainError;
use orgadmin_domain::error::Reason;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub use orgadmin_proto::ERROR_DOMAIN;

/// Messages are bounded: a status travels in HTTP/2 trailers.
const MAX_MESSAGE_CHARS: usize = 1000;

fn bounded(message: String) -> String {
    cut_to(message, MAX_MESSAGE_CHARS)
}

fn cut_to(text: String, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text
    } else {
        let mut cut: String = text.chars().take(max_chars - 1).collect();
        cut.push('…');
        cut
    }
}

/// A violation's field and description are bounded too: some quote what
/// the client sent (an update mask's path, a PEM label), and the details
/// travel base64-encoded in one trailer, which a client's HTTP/2 stack
/// refuses past 16 KiB (tonic's reports an h2 protocol error, INTERNAL).
const MAX_FIELD_CHARS: usize = 200;
const MAX_DESCRIPTION_CHARS: usize = 300;

/// The violations' text in all, before base64: with the message and the
/// ErrorInfo, well inside a client's 16 KiB header limit.
const MAX_VIOLATIONS_CHARS: usize = 6_000;

/// At most this many field violations go back in one error: a request with
/// thousands of bad items must not get megabytes of details (the status
/// travels in HTTP/2 trailers). A last entry says how many were left out.
pub const MAX_FIELD_VIOLATIONS: usize = 50;

fn with_reason(code: Code, message: String, reason: &str, metadata: HashMap<String, String>) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, metadata);
    Status::with_error_details(code, bounded(message), details)
}

pub fn to_status(err: DomainError) -> Status {
    match err {
        DomainError::InvalidArgument(violations) => {
            let total = violations.len();
            let mut room = MAX_VIOLATIONS_CHARS;
            let mut violations: Vec<_> = violations
                .into_iter()
                .take(MAX_FIELD_VIOLATIONS)
                .map(|v| {
                    orgadmin_domain::FieldViolation::new(
                        cut_to(v.field, MAX_FIELD_CHARS),
                        cut_to(v.description, MAX_DESCRIPTION_CHARS),
                    )
                })
                .take_while(|v| {
                    let size = v.field.len() + v.description.len();
                    room = room.saturating_sub(size);
                    room > 0
                })
                .collect();
            let omitted = total - violations.len();
            if omitted > 0 {
                violations.push(orgadmin_domain::FieldViolation::new(
                    "",
                    format!("{omitted} more violations left out; correct these and send the request again"),
                ));
            }
            let mut details = ErrorDetails::new();
            for v in &violations {
                details.add_bad_request_violation(v.field.clone(), v.description.clone());
            }
            details.set_error_info(Reason::InvalidArgument.as_str(), ERROR_DOMAIN, HashMap::new());
            let message = DomainError::InvalidArgument(violations).to_string();
            Status::with_error_details(Code::InvalidArgument, bounded(message), details)
        }
        DomainError::NotFound { resource, id } => {
            let mut details = ErrorDetails::new();
            details.set_error_info(Reason::NotFound.as_str(), ERROR_DOMAIN, HashMap::new());
            details.set_resource_info(resource, id.clone(), "", "");
            Status::with_error_details(Code::NotFound, bounded(format!("{resource} {id} not found")), details)
        }
        DomainError::AlreadyExists { reason, message } => {
            with_reason(Code::AlreadyExists, message, reason.as_str(), HashMap::new())
        }
        DomainError::RequestAlreadyDone { resource, id, message } => {
            let mut details = ErrorDetails::new();
            let key = format!("{}_id", resource.replace(' ', "_"));
            details.set_error_info(
                Reason::RequestAlreadyDone.as_str(),
                ERROR_DOMAIN,
                HashMap::from([(key, id.clone())]),
            );
            details.set_resource_info(resource, id, "", "");
            Status::with_error_details(Code::AlreadyExists, bounded(message), details)
        }
        DomainError::FailedPrecondition {
            reason,
            message,
            metadata,
        } => {
            let mut details = ErrorDetails::new();
            details.set_error_info(
                reason.as_str(),
                ERROR_DOMAIN,
                metadata.into_iter().collect::<HashMap<_, _>>(),
            );
            details.add_precondition_failure_violation(reason.as_str(), "organisation", bounded(message.clone()));
            Status::with_error_details(Code::FailedPrecondition, bounded(message), details)
        }
        DomainError::PermissionDenied { message } => with_reason(
            Code::PermissionDenied,
            message,
            Reason::PermissionDenied.as_str(),
            HashMap::new(),
        ),
        DomainError::Unauthenticated { message } => with_reason(
            Code::Unauthenticated,
            message,
            Reason::Unauthenticated.as_str(),
            HashMap::new(),
        ),
        DomainError::Aborted { reason, message } => {
            with_reason(Code::Aborted, message, reason.as_str(), HashMap::new())
        }
        DomainError::Unavailable { reason, message } => retry_later(Code::Unavailable, message, reason.as_str()),
        DomainError::RateLimited {
            message,
            retry_after_ms,
        } => {
            let mut details = ErrorDetails::new();
            details.set_error_info(Reason::RateLimited.as_str(), ERROR_DOMAIN, HashMap::new());
            details.set_retry_info(Some(std::time::Duration::from_millis(retry_after_ms.max(1) as u64)));
            Status::with_error_details(Code::ResourceExhausted, bounded(message), details)
        }
        DomainError::Internal(detail) => {
            // The detail may name tables or values; it goes to the log only.
            // The only ERROR line of a call: client errors (bad input,
            // denied, missing, stale) are the caller's business, and the
            // domain logs them at DEBUG.
            tracing::error!(error = %detail, "internal error");
            Status::internal("internal error; the service logged the details")
        }
    }
}

/// What an overloaded server suggests to wait before a retry.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

/// A refusal worth retrying: `ErrorInfo` with `reason` and a `RetryInfo`.
fn retry_later(code: Code, message: String, reason: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(RETRY_AFTER));
    Status::with_error_details(code, bounded(message), details)
}

/// The refusal of a call over the server's in-flight bound (see `shed`).
pub fn overloaded() -> Status {
    retry_later(
        Code::ResourceExhausted,
        "the server is at its bound of calls in flight; retry with back-off".into(),
        Reason::Overloaded.as_str(),
    )
}

/// `?`-friendly conversion for handlers.
pub trait IntoStatus<T> {
    fn into_status(self) -> Result<T, Status>;
}

impl<T> IntoStatus<T> for Result<T, DomainError> {
    fn into_status(self) -> Result<T, Status> {
        self.map_err(to_status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Violations that quote long client text (a PEM label, a path) keep the
    /// details small enough for a client's 16 KiB header limit, each one and
    /// all of them together, and say how many were left out.
    #[test]
    fn violations_quoting_client_text_stay_small() {
        let violations = (0..50)
            .map(|i| orgadmin_domain::FieldViolation::new(format!("f{i}{}", "x".repeat(5_000)), "y".repeat(20_000)))
            .collect();
        let status = to_status(DomainError::InvalidArgument(violations));
        assert!(status.details().len() < 8 * 1024, "{} bytes", status.details().len());
        let kept = status.get_details_bad_request().expect("BadRequest").field_violations;
        let note = kept.last().expect("a note");
        assert!(note.description.contains("more violations left out"), "{note:?}");
        assert!(kept.len() > 2, "{} kept", kept.len());
    }
}

//! Thin tonic handlers: authenticate, convert, call the domain, convert back.

pub mod auth;
pub mod certificates;
pub mod imports;
pub mod notifications;
pub mod organisations;
pub mod users;

use orgadmin_domain::{Caller, Domain, DomainError};
use tonic::{Request, Status};

use crate::error::to_status;

/// The caller behind `authorization: Bearer <token>` (R-AUTH-1). The
/// request's lists are bounded first (see `bounds`): nothing, not even the
/// token look-up, works on a request with 40,000 items.
pub async fn caller<T: crate::bounds::Lists>(domain: &Domain, request: &Request<T>) -> Result<Caller, Status> {
    crate::bounds::check(request.get_ref()).map_err(to_status)?;
    caller_from_metadata(domain, request.metadata()).await
}

/// The caller behind the request's `authorization` header: for streaming
/// requests, whose messages are bounded one by one as they arrive.
pub async fn caller_from_metadata(domain: &Domain, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
    let missing = || {
        to_status(DomainError::Unauthenticated {
            message: "send the header authorization: Bearer <token>".into(),
        })
    };
    let header = metadata.get("authorization").ok_or_else(missing)?;
    let value = header.to_str().map_err(|_| missing())?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(missing)?;
    domain.authenticate(token).await.map_err(to_status)
}

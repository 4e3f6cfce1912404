//! Thin tonic handlers: authenticate, convert, call the domain, convert back.

pub mod access;
pub mod auth;
pub mod certificates;
pub mod imports;
pub mod notifications;
pub mod organisations;
pub mod users;

use orgadmin_domain::{Caller, Domain, DomainError};
use tonic::{Request, Status};

use crate::acting::{self, ACT_AS_HEADER, CalledMethod, Needs};
use crate::error::to_status;

/// The caller behind `authorization: Bearer <token>` (R-AUTH-1). The
/// request's lists are bounded first (see `bounds`): nothing, not even the
/// token look-up, works on a request with 40,000 items.
///
/// With `x-orgadmin-act-as`, the caller acts as the user it names through a
/// share of that user's resources (R-ACC-5), on the calls `acting` lists
/// only.
pub async fn caller<T: crate::bounds::Lists>(domain: &Domain, request: &Request<T>) -> Result<Caller, Status> {
    crate::bounds::check(request.get_ref()).map_err(to_status)?;
    let Some(owner) = request.metadata().get(ACT_AS_HEADER) else {
        return caller_from_metadata(domain, request.metadata()).await;
    };
    // Twice, with two owners, a proxy and this service might each read a
    // different one: whose call it is must never be ambiguous.
    if request.metadata().get_all(ACT_AS_HEADER).iter().nth(1).is_some() {
        return Err(to_status(DomainError::invalid(
            ACT_AS_HEADER,
            "must be sent once: the one user whose resources were shared with you",
        )));
    }
    let token = bearer(request.metadata())?;
    let method = request.extensions().get::<CalledMethod>().map(|m| m.0.as_str());
    let Some(needs) = method.and_then(acting::needs) else {
        // Who asks is known before they learn the call cannot be made so.
        domain.authenticate(token).await.map_err(to_status)?;
        return Err(not_shared_call());
    };
    let owner = owner.to_str().map_err(|_| {
        to_status(DomainError::invalid(
            ACT_AS_HEADER,
            "must be the id of the user whose resources were shared with you",
        ))
    })?;
    domain
        .authenticate_acting(token, owner, needs == Needs::Edit)
        .await
        .map_err(to_status)
}

fn not_shared_call() -> Status {
    to_status(DomainError::denied(format!(
        "this call cannot be made as another user: {ACT_AS_HEADER} is for the calls on a user's own resources (README, \"Shared access\")"
    )))
}

/// The caller behind the request's `authorization` header: for streaming
/// requests, whose messages are bounded one by one as they arrive. None of
/// them may be made as another user.
pub async fn caller_from_metadata(domain: &Domain, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
    let caller = domain.authenticate(bearer(metadata)?).await.map_err(to_status)?;
    if metadata.get(ACT_AS_HEADER).is_some() {
        return Err(not_shared_call());
    }
    Ok(caller)
}

/// The token of the request's `authorization: Bearer <token>` header.
pub fn bearer(metadata: &tonic::metadata::MetadataMap) -> Result<&str, Status> {
    let missing = || {
        to_status(DomainError::Unauthenticated {
            message: "send the header authorization: Bearer <token>".into(),
        })
    };
    let header = metadata.get("authorization").ok_or_else(missing)?;
    let value = header.to_str().map_err(|_| missing())?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(missing)
}

/// The caller's address, for history and attempt limits: the last entry
/// of the trusted proxy header's last line when one is configured (the one
/// the proxy itself added), else the TCP peer (`Domain::peer_address`).
pub fn peer<T>(domain: &Domain, request: &Request<T>) -> Option<String> {
    let header = &domain.settings().trusted_peer_header;
    let value = (!header.is_empty())
        .then(|| request.metadata().get_all(header.as_str()).iter().next_back())
        .flatten()
        .map(|v| v.as_encoded_bytes());
    domain.peer_address(value, request.remote_addr().map(|addr| addr.ip()))
}

/// Most bytes in one message of a file's stream: far below the message
/// limit, whatever a piece holds (a report's problems quote cells, which
/// have no length limit of their own).
const FRAME_BYTES: usize = 256 * 1024;

/// A file sent as a stream of pieces, each read when the client is ready
/// for the last: `first` was read before the stream starts (so a refusal is
/// the call's own error, not a broken stream), and `fetch` reads the piece
/// after a cursor, with the cursor after it (`None`: the last piece). Each
/// piece goes out in messages of at most [`FRAME_BYTES`]; one piece at a
/// time is held in memory.
pub fn pieces<C, T, F, Fut>(
    first: (Vec<u8>, Option<C>),
    fetch: F,
    wrap: fn(Vec<u8>) -> T,
) -> impl tokio_stream::Stream<Item = Result<T, Status>> + Send + 'static
where
    C: Send + 'static,
    T: Send + 'static,
    F: Fn(C) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(Vec<u8>, Option<C>), DomainError>> + Send,
{
    enum Next<C> {
        Ready(Vec<u8>, Option<C>),
        Fetch(C),
        Done,
    }
    let fetch = std::sync::Arc::new(fetch);
    futures_util::stream::unfold(Next::Ready(first.0, first.1), move |state| {
        let fetch = fetch.clone();
        async move {
            let (mut bytes, next) = match state {
                Next::Done => return None,
                Next::Ready(bytes, next) => (bytes, next),
                Next::Fetch(cursor) => match fetch(cursor).await {
                    Ok(piece) => piece,
                    Err(e) => return Some((Err(to_status(e)), Next::Done)),
                },
            };
            if bytes.len() > FRAME_BYTES {
                let rest = bytes.split_off(FRAME_BYTES);
                return Some((Ok(wrap(bytes)), Next::Ready(rest, next)));
            }
            Some((Ok(wrap(bytes)), next.map_or(Next::Done, Next::Fetch)))
        }
    })
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::{FRAME_BYTES, pieces};

    /// A piece larger than a message goes out in frames; the frames read
    /// back as the file, every piece in order.
    #[tokio::test]
    async fn a_large_piece_goes_out_in_frames() {
        let first: Vec<u8> = (0..FRAME_BYTES * 2 + 10).map(|i| (i % 251) as u8).collect();
        let second = b"the last piece".to_vec();
        let expected = [first.clone(), second.clone()].concat();
        let stream = pieces(
            (first, Some(())),
            move |()| {
                let second = second.clone();
                async move { Ok((second, None)) }
            },
            |bytes| bytes,
        );
        let frames: Vec<Vec<u8>> = stream.map(|frame| frame.expect("a frame")).collect().await;
        assert_eq!(
            frames.iter().map(Vec::len).collect::<Vec<_>>(),
            [FRAME_BYTES, FRAME_BYTES, 10, 14]
        );
        assert_eq!(frames.concat(), expected);
    }
}

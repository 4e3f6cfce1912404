//! Plain HTTP beside gRPC for relying parties (R-CERT-5): they fetch the CRL
//! and the CA certificate the way every X.509 client does, from the URL in
//! the certificate, without a token.
//!
//! - `GET /crl`: the current CRL, DER (`application/pkix-crl`);
//! - `GET /crl.pem`: the same as PEM;
//! - `GET /ca.pem`: the CA certificate and the chain above it;
//! - `POST /ocsp`: an RFC 6960 OCSP responder (`application/ocsp-request`
//!   in, `application/ocsp-response` out), answered from the inventory as
//!   it is at that moment; and `GET /ocsp/{base64 of the request}` (RFC
//!   6960 A.1, RFC 5019), which Windows, macOS and Java send for short
//!   requests.
//!
//! The CRL is served from memory: a fetch asks the database at most every
//! `RECHECK` whether a newer CRL was published (one indexed number), so a
//! revocation shows within that, and thousands of fetches cost one query.
//! Each CRL has an `ETag` (its number and signing time); a fetch that
//! names the current one in `If-None-Match` gets `304 Not Modified`
//! instead of the whole list.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use orgadmin_domain::Domain;
use tokio::net::TcpListener;
use tokio::sync::RwLock;

/// How long a served CRL is trusted before the database is asked again:
/// a revocation's new CRL shows within this after it is signed (the check
/// is one indexed number, so ten a second cost nothing).
const RECHECK: Duration = Duration::from_millis(100);

/// One published CRL as it is served. Immutable: a newer CRL is a new
/// value with a higher number.
struct Current {
    number: i64,
    /// When it was signed (ms): with the number, its ETag.
    this_update: i64,
    /// When it says the next one is due (ms).
    next_update: i64,
    der: axum::body::Bytes,
    pem: axum::body::Bytes,
}

struct Cached {
    current: Arc<Current>,
    checked_at: Instant,
}

struct CrlCache {
    domain: Domain,
    current: RwLock<Option<Cached>>,
}

impl CrlCache {
    /// The newest CRL.
    async fn get(&self) -> Result<Arc<Current>, String> {
        // A CRL this process just signed (a revocation over gRPC here) is
        // served at once, not after the next look at the database.
        let signed_here = self.domain.crl_signed_here();
        let newer_here = |cached: &Cached| {
            signed_here
                .as_ref()
                .is_some_and(|crl| crl.number > cached.current.number)
        };
        if let Some(cached) = &*self.current.read().await
            && cached.checked_at.elapsed() < RECHECK
            && !newer_here(cached)
        {
            return Ok(cached.current.clone());
        }
        let mut slot = self.current.write().await;
        // Another fetch may have refreshed it while this one waited.
        if let Some(cached) = slot.as_mut() {
            if let Some(crl) = signed_here.as_ref().filter(|_| newer_here(cached)) {
                cached.current = Arc::new(Current::of(crl));
                cached.checked_at = Instant::now();
                return Ok(cached.current.clone());
            }
            if cached.checked_at.elapsed() < RECHECK {
                return Ok(cached.current.clone());
            }
            let newest = self.domain.current_crl_number().await.map_err(|e| e.to_string())?;
            // An overdue CRL goes to `current_crl` below, which renews it
            // (the worker is down or far behind); a process without the CA
            // cannot, and keeps serving what it has.
            let overdue = self.domain.renews_crl_when_serving(
                cached.current.this_update,
                cached.current.next_update,
                orgadmin_domain::model::now_millis(),
            );
            if newest == Some(cached.current.number) && !overdue {
                cached.checked_at = Instant::now();
                return Ok(cached.current.clone());
            }
        }
        let crl = self.domain.current_crl().await.map_err(|e| e.to_string())?;
        let current = Arc::new(Current::of(&crl));
        *slot = Some(Cached {
            current: current.clone(),
            checked_at: Instant::now(),
        });
        Ok(current)
    }
}

#[derive(Clone, Copy)]
enum Representation {
    Der,
    Pem,
}

impl Current {
    fn of(crl: &orgadmin_domain::services::certificates::PublishedCrl) -> Self {
        let pem = orgadmin_domain::ca::pem("X509 CRL", &crl.der);
        Self {
            number: crl.number,
            this_update: crl.this_update,
            next_update: crl.next_update,
            der: crl.der.clone().into(),
            pem: pem.into(),
        }
    }

    /// The CRL as `representation`, or `304 Not Modified` when the client's
    /// `If-None-Match` names it: a relying party that revalidates does not
    /// download a CRL of megabytes again while nothing was revoked.
    ///
    /// `Cache-Control: no-cache` lets it (and any cache between) keep the
    /// copy but ask every time, so a revocation is seen within `RECHECK`;
    /// a `max-age` would hide it for that long. No `Last-Modified`: HTTP
    /// dates count whole seconds, and two CRLs signed in one second would
    /// answer an `If-Modified-Since` for the older one with 304.
    fn respond(&self, representation: Representation, request: &HeaderMap) -> Response {
        let (body, content_type, suffix) = match representation {
            Representation::Der => (&self.der, "application/pkix-crl", "der"),
            Representation::Pem => (&self.pem, "application/x-pem-file", "pem"),
        };
        // The number alone names a CRL while the database lives; with its
        // signing time it still does after a restore from a backup reuses
        // numbers (a client's old tag must not get 304 for another list).
        let etag = format!("\"crl-{}-{}-{suffix}\"", self.number, self.this_update);
        let headers = [
            (header::ETAG, etag.clone()),
            (header::CACHE_CONTROL, "no-cache".to_owned()),
        ];
        if names_current(request, &etag) {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        (headers, [(header::CONTENT_TYPE, content_type)], body.clone()).into_response()
    }
}

/// Whether `If-None-Match` lists `etag` (or is `*`), compared weakly as
/// RFC 9110 13.1.2 says for this header: a `W/` prefix is ignored.
fn names_current(request: &HeaderMap, etag: &str) -> bool {
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

async fn crl_der(State(cache): State<Arc<CrlCache>>, request: HeaderMap) -> Response {
    match cache.get().await {
        Ok(crl) => crl.respond(Representation::Der, &request),
        Err(e) => unavailable(e),
    }
}

async fn crl_pem(State(cache): State<Arc<CrlCache>>, request: HeaderMap) -> Response {
    match cache.get().await {
        Ok(crl) => crl.respond(Representation::Pem, &request),
        Err(e) => unavailable(e),
    }
}

async fn ca_pem(State(cache): State<Arc<CrlCache>>) -> Response {
    match cache.domain.certificate_authority() {
        Some(ca) => (
            [(header::CONTENT_TYPE, "application/x-pem-file")],
            ca.chain_pem().to_owned(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no certificate authority is configured\n").into_response(),
    }
}

/// OCSP requests are a few hundred bytes; nothing honest comes near this.
const MAX_OCSP_REQUEST_BYTES: usize = 64 * 1024;

async fn ocsp(State(cache): State<Arc<CrlCache>>, body: axum::body::Body) -> Response {
    let body = match body_within(body, MAX_OCSP_REQUEST_BYTES, "an OCSP request is at most 64 KiB\n").await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let der = cache.domain.ocsp_response(&body).await;
    ([(header::CONTENT_TYPE, "application/ocsp-response")], der).into_response()
}

/// An OCSP request by GET: its DER, base64 and URL-encoded, as the path
/// after `/ocsp/` (RFC 6960 A.1). Clients that leave the base64's `/`
/// unencoded make it several path segments; the wildcard takes them all.
/// Without this route, clients that ask by GET got a 405 and fell back to
/// soft-fail: a revoked certificate passed with them.
async fn ocsp_by_get(State(cache): State<Arc<CrlCache>>, Path(encoded): Path<String>) -> Response {
    use base64::Engine;
    if encoded.len() > MAX_OCSP_REQUEST_BYTES {
        return (StatusCode::URI_TOO_LONG, "an OCSP request is at most 64 KiB\n").into_response();
    }
    // Path has undone the URL encoding; padding may be missing or kept.
    let text = encoded.trim_end_matches('=');
    let Ok(request) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(text) else {
        return (
            StatusCode::BAD_REQUEST,
            "the path after /ocsp/ must be a base64 OCSP request\n",
        )
            .into_response();
    };
    let der = cache.domain.ocsp_response(&request).await;
    ([(header::CONTENT_TYPE, "application/ocsp-response")], der).into_response()
}

/// How long a request's body may take to arrive once its headers have.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request's body, at most `max_bytes` (else 413 with `too_large`) and
/// within [`BODY_READ_TIMEOUT`] (else 408): a body trickled in a byte at a
/// time would hold its connection's place for nothing (the headers' own
/// limit is `serve_guarded`'s).
pub(crate) async fn body_within(
    body: axum::body::Body,
    max_bytes: usize,
    too_large: &'static str,
) -> Result<axum::body::Bytes, Response> {
    tokio::time::timeout(BODY_READ_TIMEOUT, axum::body::to_bytes(body, max_bytes))
        .await
        .map_err(|_| {
            (
                StatusCode::REQUEST_TIMEOUT,
                "the request's body took too long to arrive\n",
            )
                .into_response()
        })?
        .map_err(|error| {
            // Past the limit, or a body the client broke off or framed
            // wrongly (a bad chunk): only the first is too large.
            if is_past_the_limit(&error) {
                (StatusCode::PAYLOAD_TOO_LARGE, too_large).into_response()
            } else {
                tracing::debug!(%error, "a request's body could not be read");
                (StatusCode::BAD_REQUEST, "the request's body could not be read\n").into_response()
            }
        })
}

/// Whether reading a body failed at `body_within`'s limit.
fn is_past_the_limit(error: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}

fn unavailable(error: String) -> Response {
    tracing::warn!(%error, "cannot serve the CRL");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "the CRL cannot be read now; retry shortly\n",
    )
        .into_response()
}

/// Serves CRL, CA certificate, OCSP and the self-service pages (`pages`)
/// until `shutdown` resolves.
pub async fn serve_certificate_http(
    domain: Domain,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cache = Arc::new(CrlCache {
        domain,
        current: RwLock::new(None),
    });
    let app = Router::new()
        .route("/crl", get(crl_der))
        .route("/crl.pem", get(crl_pem))
        .route("/ca.pem", get(ca_pem))
        .route("/ocsp", post(ocsp))
        .route("/ocsp/{*request}", get(ocsp_by_get))
        .with_state(cache.clone())
        .merge(crate::pages::router(cache.domain.clone()));
    serve_guarded(listener, app, shutdown).await;
    Ok(())
}

/// Most connections the HTTP listener holds open at once; more wait in the
/// kernel's backlog. File descriptors are shared with the gRPC listener.
const MAX_HTTP_CONNECTIONS: usize = 1024;
/// How long a client may take to send a request's headers, and how long
/// an idle keep-alive connection stays.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer may wait for the client to take any of it: as long
/// as a request gets to arrive. A client that stops reading (a large CRL
/// asked for and never read, or answers to pipelined requests piling up)
/// held its connection, and one of the places, for ever.
const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections still open at shutdown get to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A connection whose writes may wait at most `limit` for the peer to make
/// room: a write that stays pending longer fails (TimedOut), and hyper
/// closes the connection. Progress, however slow, resets the clock.
struct WriteStallLimit<S> {
    inner: S,
    limit: Duration,
    /// Set while a write waits for room: when it ends.
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStallLimit<S> {
    fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            stalled: None,
        }
    }

    /// `polled`, or TimedOut once writes have waited `limit` in a row.
    fn limited<T>(
        &mut self,
        cx: &mut std::task::Context<'_>,
        polled: std::task::Poll<std::io::Result<T>>,
    ) -> std::task::Poll<std::io::Result<T>> {
        use std::task::Poll;
        if polled.is_ready() {
            self.stalled = None;
            return polled;
        }
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client took nothing of the answer for too long",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteStallLimit<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteStallLimit<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.limited(cx, polled)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.limited(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_flush(cx);
        self.limited(cx, polled)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_shutdown(cx);
        self.limited(cx, polled)
    }
}

/// Serves `app` on `listener` until `shutdown`, each connection with the
/// peer's address for the pages (attempt limits, history). Unlike
/// `axum::serve`, which starts hyper without a timer: a client sending its
/// headers a byte a minute (slowloris) held its connection for ever, and
/// enough of them took every file descriptor of the process, gRPC's too.
/// Here headers must arrive within `HEADER_READ_TIMEOUT`, answers must not
/// wait longer than `WRITE_STALL_TIMEOUT` for the client to read, at most
/// `MAX_HTTP_CONNECTIONS` are open at once, and shutdown waits for open
/// connections at most `SHUTDOWN_GRACE`.
async fn serve_guarded(listener: TcpListener, app: Router, shutdown: impl Future<Output = ()> + Send + 'static) {
    use axum::extract::ConnectInfo;
    use hyper_util::rt::{TokioIo, TokioTimer};

    let places = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    // Closed at shutdown: every connection then finishes what it serves.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait, do not spin.
                    tracing::warn!(%error, "HTTP listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            // A router is always ready: no poll_ready first.
            tower_service::Service::call(&mut app.clone(), request.map(axum::body::Body::new))
        });
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let _place = place;
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(WriteStallLimit::new(stream, WRITE_STALL_TIMEOUT)), service);
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stop.changed() => connection.as_mut().graceful_shutdown(),
            }
            let _ = connection.await;
        });
        // Ended connections leave the set as they go.
        while connections.try_join_next().is_some() {}
    }
    drop(stop_tx);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, finished).await.is_err() {
        tracing::warn!("HTTP connections still open after the shutdown grace; closed");
    }
}

//! Plain HTTP beside gRPC for relying parties (R-CERT-5): they fetch the CRL
//! and the CA certificate the way every X.509 client does, from the URL in
//! the certificate, without a token.
//!
//! - `GET /crl`: the current CRL, DER (`application/pkix-crl`);
//! - `GET /crl.pem`: the same as PEM;
//! - `GET /ca.pem`: the CA certificate and the chain above it;
//! - `POST /ocsp`: an RFC 6960 OCSP responder (`application/ocsp-request`
//!   in, `application/ocsp-response` out), answered from the inventory as
//!   it is at that moment.
//!
//! The CRL is served from memory: a fetch asks the database at most every
//! `RECHECK` whether a newer CRL was published (one indexed number), so a
//! revocation shows within that, and thousands of fetches cost one query.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use orgadmin_domain::Domain;
use tokio::net::TcpListener;
use tokio::sync::RwLock;

/// How long a served CRL is trusted before the database is asked again:
/// a revocation's new CRL shows within this after it is signed (the check
/// is one indexed number, so ten a second cost nothing).
const RECHECK: Duration = Duration::from_millis(100);

struct Cached {
    number: i64,
    der: axum::body::Bytes,
    pem: axum::body::Bytes,
    checked_at: Instant,
}

struct CrlCache {
    domain: Domain,
    current: RwLock<Option<Cached>>,
}

impl CrlCache {
    /// The newest CRL as (DER, PEM).
    async fn get(&self) -> Result<(axum::body::Bytes, axum::body::Bytes), String> {
        if let Some(cached) = &*self.current.read().await
            && cached.checked_at.elapsed() < RECHECK
        {
            return Ok((cached.der.clone(), cached.pem.clone()));
        }
        let mut slot = self.current.write().await;
        // Another fetch may have refreshed it while this one waited.
        if let Some(cached) = slot.as_mut() {
            if cached.checked_at.elapsed() < RECHECK {
                return Ok((cached.der.clone(), cached.pem.clone()));
            }
            let newest = self.domain.current_crl_number().await.map_err(|e| e.to_string())?;
            if newest == Some(cached.number) {
                cached.checked_at = Instant::now();
                return Ok((cached.der.clone(), cached.pem.clone()));
            }
        }
        let crl = self.domain.current_crl().await.map_err(|e| e.to_string())?;
        let pem = orgadmin_domain::ca::pem("X509 CRL", &crl.der);
        let cached = Cached {
            number: crl.number,
            der: crl.der.into(),
            pem: pem.into(),
            checked_at: Instant::now(),
        };
        let served = (cached.der.clone(), cached.pem.clone());
        *slot = Some(cached);
        Ok(served)
    }
}

async fn crl_der(State(cache): State<Arc<CrlCache>>) -> Response {
    match cache.get().await {
        Ok((der, _)) => ([(header::CONTENT_TYPE, "application/pkix-crl")], der).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn crl_pem(State(cache): State<Arc<CrlCache>>) -> Response {
    match cache.get().await {
        Ok((_, pem)) => ([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response(),
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

async fn ocsp(State(cache): State<Arc<CrlCache>>, body: axum::body::Bytes) -> Response {
    if body.len() > MAX_OCSP_REQUEST_BYTES {
        return (StatusCode::PAYLOAD_TOO_LARGE, "an OCSP request is at most 64 KiB\n").into_response();
    }
    let der = cache.domain.ocsp_response(&body).await;
    ([(header::CONTENT_TYPE, "application/ocsp-response")], der).into_response()
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
        .with_state(cache.clone())
        .merge(crate::pages::router(cache.domain.clone()));
    // The pages need the peer's address (attempt limits, history).
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    Ok(())
}

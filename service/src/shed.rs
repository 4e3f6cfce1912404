//! A bound on the calls the orgadmin services work on at once, shared by all
//! connections. A call over the bound is refused at once with
//! RESOURCE_EXHAUSTED instead of queueing: without it, offered load past
//! capacity piled up waiting for database connections (measured: 1.4 GB of
//! memory and throughput falling to a third at 1.5x capacity). Clients retry
//! with back-off; health and reflection stay outside the bound, so probes
//! still answer while the service sheds.

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;
use tonic::server::NamedService;

/// The permits of the whole server.
#[derive(Clone)]
pub struct InFlight(Arc<Semaphore>);

impl InFlight {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Semaphore::new(limit.max(1))))
    }

    pub fn wrap<S>(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            permits: self.0.clone(),
        }
    }
}

/// One service behind the shared bound.
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    permits: Arc<Semaphore>,
}

impl<S: NamedService> NamedService for Shed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for Shed<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            tracing::debug!("shedding a call: the in-flight bound is reached");
            let refused = crate::error::overloaded().into_http();
            return Box::pin(async move { Ok(refused) });
        };
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            drop(permit);
            response
        })
    }
}

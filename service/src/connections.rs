//! The gRPC port's connections, guarded as the HTTP port's are (`http`):
//! tonic's own `TcpIncoming` accepts every connection and waits for its
//! first bytes for ever, so a client that connects and sends nothing (or a
//! peer that vanished without a FIN) held a connection, a task and a file
//! descriptor until the process ended; enough of them took every
//! descriptor of the process, and the HTTP port's and the database pool's
//! with it. Here at most `max_connections` are open at once (more wait in
//! the kernel's accept queue, as on the HTTP port), each must send its first
//! bytes (HTTP/2's preface) within `first_bytes_timeout`, and the server
//! pings open connections over HTTP/2 (`serve`) so a dead peer's connection
//! ends too.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How many gRPC connections may be open, and how long a new one has to
/// start speaking.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Of those, how many one peer address may hold: a client that opens
    /// connections and keeps them idle (it answers pings) cannot take every
    /// place, the orchestrator's health probes' too.
    pub max_per_address: usize,
    pub first_bytes_timeout: Duration,
    /// After the stop signal, how long the server goes on accepting and
    /// serving while its health says NOT_SERVING, before it stops accepting
    /// and drains: endpoints (kube-proxy, a load balancer) learn of the stop
    /// a few seconds late and send new connections meanwhile, which a
    /// server that had stopped accepting refused.
    pub announce_stop_for: Duration,
}

impl Default for ConnectionLimits {
    /// gRPC clients multiplex their calls over a few connections each, so
    /// a thousand serves hundreds of client processes; 10 s is what the
    /// HTTP port gives a request's headers.
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_address: 256,
            first_bytes_timeout: Duration::from_secs(10),
            announce_stop_for: Duration::ZERO,
        }
    }
}

/// One accepted connection: it holds its place among the open ones until
/// it is dropped, and fails its reads once `first_bytes_timeout` passes
/// with nothing read.
pub struct GuardedConnection {
    stream: TcpStream,
    _place: OwnedSemaphorePermit,
    _address_place: AddressPlace,
    /// Until the first bytes arrive.
    first_bytes_deadline: Option<Pin<Box<Sleep>>>,
}

impl Connected for GuardedConnection {
    /// The peer's address, as `TcpIncoming` gives it: the handlers read it
    /// (`Request::remote_addr`) for the sign-in limits and history.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for GuardedConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let filled_before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let Some(deadline) = self.first_bytes_deadline.as_mut() else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > filled_before => {
                self.first_bytes_deadline = None;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client sent nothing in time after connecting",
                ))),
                Poll::Pending => Poll::Pending,
            },
            // End of stream or an error: the connection ends either way.
            other => other,
        }
    }
}

impl AsyncWrite for GuardedConnection {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The connections each peer address holds open.
type OpenByAddress = Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>;

/// One of its address's places, given back when the connection closes.
struct AddressPlace {
    address: std::net::IpAddr,
    open: OpenByAddress,
}

impl AddressPlace {
    /// A place for `address`, unless it holds `max` already.
    fn take(open: &OpenByAddress, address: std::net::IpAddr, max: usize) -> Option<Self> {
        let mut counts = open.lock().unwrap_or_else(|e| e.into_inner());
        let count = counts.entry(address).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Self {
            address,
            open: open.clone(),
        })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut counts = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// The connections `listener` accepts, at most `limits.max_connections`
/// open at once (the next is accepted only when one has closed), at most
/// `limits.max_per_address` of them from one peer address (one more is
/// closed at once).
pub fn guarded_incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = io::Result<GuardedConnection>> {
    let places = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let open_by_address = OpenByAddress::default();
    futures_util::stream::unfold((listener, places), move |(listener, places)| {
        let open_by_address = open_by_address.clone();
        async move {
            let place = places
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        let Some(address_place) =
                            AddressPlace::take(&open_by_address, peer.ip(), limits.max_per_address.max(1))
                        else {
                            tracing::debug!(%peer, "closing a gRPC connection: its address holds its share of them");
                            drop(stream);
                            continue;
                        };
                        // A reply is several HTTP/2 frames (headers, data,
                        // trailers); with Nagle on, the second write waits for
                        // the client's delayed ACK (40 ms on Linux) whenever
                        // only one call is in flight.
                        if let Err(error) = stream.set_nodelay(true) {
                            tracing::debug!(%error, "could not set TCP_NODELAY on a gRPC connection");
                        }
                        let connection = GuardedConnection {
                            stream,
                            _place: place,
                            _address_place: address_place,
                            first_bytes_deadline: Some(Box::pin(tokio::time::sleep(limits.first_bytes_timeout))),
                        };
                        return Some((Ok(connection), (listener, places)));
                    }
                    Err(error) => {
                        // Out of file descriptors, say: wait, do not spin (an
                        // error handed to tonic would end the server).
                        tracing::warn!(%error, "gRPC listener could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    })
}

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
//! ends too. A live peer that keeps a connection open without calls (it
//! answers the pings) held its place for ever, and a few addresses' worth
//! of them (`max_per_address` each) filled every place: a connection with
//! no call open for `idle_timeout` is closed. Which calls are open is read
//! off the HTTP/2 frames' 9-byte headers as they pass (`StreamCounter`);
//! nothing else of the traffic is looked at.

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
    /// How long a connection may stay open with no call (stream) open on
    /// it: a client reconnects for its next call.
    pub idle_timeout: Duration,
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
            idle_timeout: Duration::from_secs(300),
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
    /// The calls open on the connection, from the frames each way.
    streams: StreamCounter,
    idle_timeout: Duration,
    /// While no call is open: when the connection is closed.
    idle_deadline: Pin<Box<Sleep>>,
}

impl Connected for GuardedConnection {
    /// The peer's address, as `TcpIncoming` gives it: the handlers read it
    /// (`Request::remote_addr`) for the sign-in limits and history.
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl GuardedConnection {
    /// After frames passed: while no call is open the idle deadline runs
    /// from the last call's end (set again at every end); while one is
    /// open it does not matter. A deadline set again has no waker until
    /// it is polled, and the connection's task may not read again before
    /// the next ping (a call ended by the server's trailers is a write):
    /// polled here, it wakes the task when it passes.
    fn note_streams(&mut self, was_open: usize, cx: &mut Context<'_>) {
        if was_open > 0 && self.streams.open() == 0 {
            let at = tokio::time::Instant::now() + self.idle_timeout;
            self.idle_deadline.as_mut().reset(at);
            // Just set to the future: pending, now with this task's waker.
            let _ = self.idle_deadline.as_mut().poll(cx);
        }
    }
}

impl AsyncRead for GuardedConnection {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let filled_before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let was_open = self.streams.open();
            let this = &mut *self;
            this.streams.read(&buf.filled()[filled_before..]);
            this.note_streams(was_open, cx);
        }
        if polled.is_pending()
            && self.first_bytes_deadline.is_none()
            && self.streams.open() == 0
            && self.idle_deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client kept the connection open without a call",
            )));
        }
        let Some(deadline) = self.first_bytes_deadline.as_mut() else {
            return polled;
        };
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > filled_before => {
                self.first_bytes_deadline = None;
                // Idle from its first bytes, not from its accept: a short
                // idle timeout does not eat into the time to send them.
                let at = tokio::time::Instant::now() + self.idle_timeout;
                self.idle_deadline.as_mut().reset(at);
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
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            let was_open = self.streams.open();
            self.streams.written(&buf[..n]);
            self.note_streams(was_open, cx);
        }
        written
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = written {
            let was_open = self.streams.open();
            for slice in bufs {
                if n == 0 {
                    break;
                }
                let taken = n.min(slice.len());
                self.streams.written(&slice[..taken]);
                n -= taken;
            }
            self.note_streams(was_open, cx);
        }
        written
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
                            streams: StreamCounter::default(),
                            idle_timeout: limits.idle_timeout,
                            idle_deadline: Box::pin(tokio::time::sleep(limits.idle_timeout)),
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

/// The calls (HTTP/2 streams) open on one connection, read off the frame
/// headers that pass each way: a client's HEADERS opens a stream (odd ids,
/// each new one higher than the last), the server's HEADERS or DATA with
/// END_STREAM (gRPC's trailers) or a RST_STREAM either way ends it. The
/// client's preface comes before its first frame (the port speaks HTTP/2
/// only). A client whose first bytes are not the preface (hyper refuses it
/// anyway) stops the counting and leaves the connection counted busy:
/// never closed for idleness by a count that went wrong.
#[derive(Debug, Default)]
pub struct StreamCounter {
    open: std::collections::HashSet<u32>,
    highest_opened: u32,
    inbound: FrameReader,
    outbound: FrameReader,
    /// Counting stopped (see above).
    lost: bool,
}

/// Where one direction's bytes stand in the frames: in the preface (how
/// much of it matched), in a 9-byte header (how much of it is read) or in
/// a payload (how much of it is left).
#[derive(Debug, Default)]
struct FrameReader {
    preface_matched: usize,
    header: [u8; 9],
    header_len: usize,
    payload_left: usize,
}

/// What an HTTP/2 client sends first (RFC 9113, 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const FRAME_DATA: u8 = 0x0;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_RST_STREAM: u8 = 0x3;
const FLAG_END_STREAM: u8 = 0x1;

impl FrameReader {
    /// Calls `frame(type, flags, stream id)` for each frame header the
    /// bytes complete, after `preface` (the client's, or none); false when
    /// the preface does not match.
    fn feed(&mut self, mut bytes: &[u8], preface: &[u8], mut frame: impl FnMut(u8, u8, u32)) -> bool {
        while !bytes.is_empty() {
            if self.preface_matched < preface.len() {
                let n = (preface.len() - self.preface_matched).min(bytes.len());
                if bytes[..n] != preface[self.preface_matched..self.preface_matched + n] {
                    return false;
                }
                self.preface_matched += n;
                bytes = &bytes[n..];
            } else if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len());
                self.payload_left -= n;
                bytes = &bytes[n..];
            } else {
                let n = (9 - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
                if self.header_len == 9 {
                    self.header_len = 0;
                    let h = self.header;
                    self.payload_left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                    frame(h[3], h[4], stream);
                }
            }
        }
        true
    }
}

impl StreamCounter {
    /// Calls open now; a lost count says one, so it is never idle.
    pub fn open(&self) -> usize {
        if self.lost { 1 } else { self.open.len() }
    }

    /// Bytes the client sent.
    pub fn read(&mut self, bytes: &[u8]) {
        if self.lost {
            return;
        }
        let (open, highest) = (&mut self.open, &mut self.highest_opened);
        let parsed = self.inbound.feed(bytes, PREFACE, |kind, _flags, stream| match kind {
            // A new stream's first HEADERS; a later one (trailers of a
            // client stream) has a lower or equal id.
            FRAME_HEADERS if stream % 2 == 1 && stream > *highest => {
                *highest = stream;
                open.insert(stream);
            }
            FRAME_RST_STREAM => {
                open.remove(&stream);
            }
            _ => {}
        });
        self.lost = !parsed;
    }

    /// Bytes the server wrote.
    pub fn written(&mut self, bytes: &[u8]) {
        if self.lost {
            return;
        }
        let open = &mut self.open;
        let parsed = self.outbound.feed(bytes, &[], |kind, flags, stream| match kind {
            FRAME_HEADERS | FRAME_DATA if flags & FLAG_END_STREAM != 0 => {
                open.remove(&stream);
            }
            FRAME_RST_STREAM => {
                open.remove(&stream);
            }
            _ => {}
        });
        self.lost = !parsed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut bytes = vec![(payload >> 16) as u8, (payload >> 8) as u8, payload as u8, kind, flags];
        bytes.extend_from_slice(&stream.to_be_bytes());
        bytes.extend(std::iter::repeat_n(0xAB, payload));
        bytes
    }

    #[test]
    fn calls_are_counted_from_the_frames_each_way_in_any_pieces() {
        let mut counter = StreamCounter::default();
        // The preface, SETTINGS, a call's HEADERS and DATA, a second call's
        // HEADERS: fed a byte at a time, as a slow peer sends them.
        let mut inbound = PREFACE.to_vec();
        inbound.extend(frame(0x4, 0, 0, 18));
        inbound.extend(frame(FRAME_HEADERS, 0x4, 1, 40));
        inbound.extend(frame(FRAME_DATA, FLAG_END_STREAM, 1, 300));
        inbound.extend(frame(FRAME_HEADERS, 0x5, 3, 30));
        for byte in &inbound {
            counter.read(std::slice::from_ref(byte));
        }
        assert_eq!(counter.open(), 2);
        // The server's SETTINGS and a PING (no call), then the first call's
        // headers, data and trailers in one write.
        let mut outbound = frame(0x4, 0, 0, 12);
        outbound.extend(frame(0x6, 0, 0, 8));
        outbound.extend(frame(FRAME_HEADERS, 0x4, 1, 20));
        outbound.extend(frame(FRAME_DATA, 0, 1, 100));
        counter.written(&outbound);
        assert_eq!(counter.open(), 2, "a reply's headers and data end nothing");
        counter.written(&frame(FRAME_HEADERS, 0x5, 1, 10));
        assert_eq!(counter.open(), 1, "trailers end the call");
        // The client gives up on the second.
        counter.read(&frame(FRAME_RST_STREAM, 0, 3, 4));
        assert_eq!(counter.open(), 0);
        // Pings and their answers open nothing.
        counter.read(&frame(0x6, 0x1, 0, 8));
        assert_eq!(counter.open(), 0);
    }

    #[test]
    fn a_client_that_does_not_speak_http2_counts_as_busy_for_ever() {
        let mut counter = StreamCounter::default();
        counter.read(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(counter.open(), 1);
        counter.written(&frame(FRAME_RST_STREAM, 0, 1, 4));
        assert_eq!(counter.open(), 1);
    }
}

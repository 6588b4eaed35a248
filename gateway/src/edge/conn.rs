//! The client connection under the proxy. Pingora times each read on its own, so a client that
//! sends one header byte every few seconds, or idles between keep-alive requests, keeps its
//! connection forever. [`ClientConn`] wraps every accepted connection and adds nginx's clocks:
//!
//! * `client_header_timeout`: the whole request header, counted from its first byte (and, for
//!   the first request, from the accept); when it runs out the connection is closed, as nginx
//!   does (it logs 408 and sends nothing).
//! * `keepalive_timeout`: a keep-alive connection idle between two requests is closed.
//!
//! The proxy tells the connection where a request stands: [`ClientConn::header_read`] once the
//! header has been parsed (from then on Pingora's own per-read timeouts are the
//! `client_body_timeout` and `send_timeout`), and [`ClientConn::request_done`] at its end.
//! HTTP/2 connections pass through unclocked: their idle timeout is Pingora's `h2_idle_timeout`.
//!
//! It also holds the connection's write buffer, allocated when a response is written and given
//! back when it has been flushed: a response header and a body of a few KB leave in one write
//! (one TLS record over HTTPS), and an idle or half-sent connection holds no buffer at all.
//! (Pingora's own L4 buffers are allocated at accept for the connection's whole life, 64 KiB
//! to read and what we asked to write, so they are turned off: see `server::client_buffers`.)
//!
//! On close it also keeps a TLS session resumable: OpenSSL drops a session from the server's
//! cache when the connection is freed without a close_notify having been sent, which is how
//! most clients' connections end (they hang up first). nginx marks the shutdown done before it
//! frees the connection for the same reason.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use foreign_types::ForeignTypeRef;
use pingora::apps::ServerApp;
use pingora::protocols::http::ServerSession;
use pingora::protocols::{
    raw_connect, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest,
    Ssl, Stream, TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use pingora::server::ShutdownWatch;
use pingora::tls::ssl::ShutdownState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::METRICS;
use crate::state::Shared;

/// Where the connection's current request stands.
const WAITING: u8 = 0; // no byte of the next request yet
const HEADER: u8 = 1; // reading a request header
const REQUEST: u8 = 2; // header parsed: body and response (or an HTTP/2 connection)
const DONE: u8 = 3; // the proxy finished a request; the next read starts the keep-alive wait

pub struct ClientConn {
    inner: Stream,
    phase: AtomicU8,
    header_timeout: Duration,
    keepalive_timeout: Duration,
    /// The current phase's deadline (WAITING, HEADER), and whether missing it counts as a
    /// keep-alive timeout (between requests) or a header timeout.
    deadline: Option<Instant>,
    between_requests: bool,
    /// Armed only when a read has to wait, so a request that arrives in one read costs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    /// Bytes written but not yet sent, `wbuf[wsent..]`; no allocation between responses.
    wbuf: Vec<u8>,
    wsent: usize,
}

/// The write buffer's size: a response header and a body of a few KB coalesce into one write,
/// and with TLS into one record (16 KiB is TLS's largest). Pingora flushes chunked and
/// close-delimited bodies after every write, so streamed events are never held back.
pub const WRITE_BUFFER: usize = 16 * 1024;

impl ClientConn {
    pub fn new(inner: Stream, header_timeout: Duration, keepalive_timeout: Duration) -> Self {
        let h2 = matches!(inner.selected_alpn_proto(), Some(ALPN::H2));
        ClientConn {
            inner,
            phase: AtomicU8::new(if h2 { REQUEST } else { WAITING }),
            header_timeout,
            keepalive_timeout,
            deadline: (!h2).then(|| Instant::now() + header_timeout),
            between_requests: false,
            timer: None,
            wbuf: Vec::new(),
            wsent: 0,
        }
    }

    /// Sends what the write buffer holds; then gives its memory back.
    fn poll_send_buffer(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wsent < self.wbuf.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.wbuf[self.wsent..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "client connection closed while writing",
                    )))
                }
                Poll::Ready(Ok(n)) => self.wsent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.wbuf = Vec::new();
        self.wsent = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `len` bytes into the buffer when they fit in it; false when they must be sent
    /// (after what the buffer holds) straight to the connection.
    fn buffers(&mut self, len: usize) -> bool {
        if self.wbuf.len() + len > WRITE_BUFFER {
            return false;
        }
        if self.wbuf.capacity() == 0 {
            self.wbuf.reserve_exact(WRITE_BUFFER);
        }
        true
    }

    /// The clocked connection under an HTTP/1.x session (None for HTTP/2).
    pub fn of(session: &ServerSession) -> Option<&ClientConn> {
        (**session.stream()?).as_any().downcast_ref::<ClientConn>()
    }

    /// The request header has been parsed: its clock stops.
    pub fn header_read(&self) {
        self.phase.store(REQUEST, Ordering::Relaxed);
    }

    /// The request is over: the next read waits at most `keepalive_timeout` for another one.
    pub fn request_done(&self) {
        self.phase.store(DONE, Ordering::Relaxed);
    }

    /// Moves the phase on for a read about to happen; returns the deadline it runs under.
    fn deadline_for_read(&mut self) -> Option<Instant> {
        match self.phase.load(Ordering::Relaxed) {
            DONE => {
                self.phase.store(WAITING, Ordering::Relaxed);
                self.between_requests = true;
                self.deadline = Some(Instant::now() + self.keepalive_timeout);
                self.deadline
            }
            WAITING | HEADER => self.deadline,
            _ => None,
        }
    }

    /// Bytes arrived: a request header has begun, with its own clock.
    fn bytes_arrived(&mut self) {
        if self.phase.load(Ordering::Relaxed) == WAITING {
            self.phase.store(HEADER, Ordering::Relaxed);
            self.between_requests = false;
            self.deadline = Some(Instant::now() + self.header_timeout);
        }
    }

    /// The deadline passed: end the wait as nginx does. Between requests (and before the first
    /// byte) the connection just closes (a clean end of stream); inside a header it is an error,
    /// which Pingora answers by closing.
    fn expire(&mut self) -> Poll<io::Result<()>> {
        self.deadline = None;
        self.phase.store(REQUEST, Ordering::Relaxed);
        if self.between_requests {
            METRICS
                .client_timeouts
                .with_label_values(&["keepalive"])
                .inc();
            Poll::Ready(Ok(()))
        } else {
            METRICS
                .client_timeouts
                .with_label_values(&["client_header"])
                .inc();
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client_header_timeout: the request header did not arrive in time",
            )))
        }
    }
}

/// Polls the connection's deadline timer; Ready when `deadline` has passed. Deadlines only
/// move later on a busy connection (each request pushes the next wait out), so a timer armed
/// for an earlier one is left to fire and re-armed then: about one timer reset per timeout
/// period rather than one per request. A free function over the timer alone, so that it can
/// be polled while the stream is borrowed.
fn poll_timer(
    timer: &mut Option<Pin<Box<Sleep>>>,
    deadline: Instant,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let timer = match timer {
        Some(t) => {
            if t.deadline() > deadline {
                t.as_mut().reset(deadline);
            }
            t
        }
        None => timer.insert(Box::pin(tokio::time::sleep_until(deadline))),
    };
    loop {
        match std::future::Future::poll(timer.as_mut(), cx) {
            Poll::Ready(()) if Instant::now() >= deadline => return Poll::Ready(()),
            // Fired for an earlier deadline: wait for this one.
            Poll::Ready(()) => timer.as_mut().reset(deadline),
            Poll::Pending => return Poll::Pending,
        }
    }
}

impl AsyncRead for ClientConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline_for_read() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if Instant::now() >= deadline {
            return this.expire();
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.bytes_arrived();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match poll_timer(&mut this.timer, deadline, cx) {
                Poll::Ready(()) => this.expire(),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

// Buffered like tokio's BufWriter, except that the buffer exists only between the first write
// of a response and the flush that sends it.
impl AsyncWrite for ClientConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.buffers(buf.len()) {
            this.wbuf.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        std::task::ready!(this.poll_send_buffer(cx))?;
        if this.buffers(buf.len()) {
            this.wbuf.extend_from_slice(buf);
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_buffer(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_send_buffer(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if !this.buffers(total) {
            std::task::ready!(this.poll_send_buffer(cx))?;
            if !this.buffers(total) {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        for b in bufs {
            this.wbuf.extend_from_slice(b);
        }
        Poll::Ready(Ok(total))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        if let Some(ssl) = self.inner.get_ssl() {
            let done = (ShutdownState::SENT | ShutdownState::RECEIVED).bits();
            // SAFETY: the pointer is the live SSL object of this connection, which is being
            // dropped with it; SSL_set_shutdown only sets flags that SSL_free reads.
            unsafe { pingora::tls::ssl_sys::SSL_set_shutdown(ssl.as_ptr(), done) };
        }
    }
}

#[async_trait]
impl Shutdown for ClientConn {
    async fn shutdown(&mut self) {
        // What the proxy wrote last (an error response before a close) leaves first.
        let _ = tokio::io::AsyncWriteExt::flush(self).await;
        self.inner.shutdown().await
    }
}

impl UniqueID for ClientConn {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for ClientConn {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for ClientConn {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for ClientConn {
    fn get_proxy_digest(&self) -> Option<Arc<raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: raw_connect::ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for ClientConn {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for ClientConn {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }

    /// Pingora waits here before it allocates the next request's header buffer. The clock
    /// runs while it waits: at the deadline the wait ends, and the read that follows expires
    /// the connection as any read past it does.
    async fn wait_readable(&mut self) -> io::Result<()> {
        let Some(deadline) = self.deadline_for_read() else {
            return self.inner.wait_readable().await;
        };
        if Instant::now() >= deadline {
            return Ok(());
        }
        let ClientConn { inner, timer, .. } = self;
        let mut wait = inner.wait_readable();
        std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = wait.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            poll_timer(timer, deadline, cx).map(Ok)
        })
        .await
    }
}

impl std::fmt::Debug for ClientConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConn")
            .field("inner", &self.inner)
            .field("phase", &self.phase.load(Ordering::Relaxed))
            .finish()
    }
}

/// The proxy service's application with every accepted connection wrapped in a [`ClientConn`],
/// its clocks read from the configuration in force at the accept.
pub struct Clocked<A> {
    pub app: Arc<A>,
    pub shared: Arc<Shared>,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Clocked<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let limits = &self.shared.load().config.limits;
        let conn = ClientConn::new(
            stream,
            limits.client_header_timeout,
            limits.keepalive_timeout,
        );
        self.app.process_new(Box::new(conn), shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A client socket and the gateway's side of it, clocked.
    async fn pair(header: Duration, keepalive: Duration) -> (TcpStream, ClientConn) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let stream: Stream = Box::new(pingora::protocols::l4::stream::Stream::from(server));
        (client, ClientConn::new(stream, header, keepalive))
    }

    #[tokio::test]
    async fn the_wait_for_a_request_ends_when_bytes_arrive_and_reads_nothing() {
        let (mut client, mut conn) = pair(Duration::from_secs(30), Duration::from_secs(30)).await;
        let waiting = tokio::spawn(async move {
            conn.wait_readable().await.unwrap();
            conn
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "returned before any byte arrived");
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut conn = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the wait saw the bytes")
            .unwrap();
        // Nothing was consumed: the read that follows gets every byte.
        let mut got = [0u8; 16];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
        assert_eq!(conn.phase.load(Ordering::Relaxed), HEADER);
    }

    #[tokio::test]
    async fn the_wait_ends_at_the_deadline_and_the_read_then_closes() {
        // Between requests: keepalive_timeout, then a clean end of stream.
        let (_client, mut conn) = pair(Duration::from_secs(30), Duration::from_millis(100)).await;
        conn.request_done();
        tokio::time::timeout(Duration::from_secs(5), conn.wait_readable())
            .await
            .expect("the keep-alive deadline ends the wait")
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "a clean close");

        // A new connection that never sends: client_header_timeout, then an error.
        let (_client, mut conn) = pair(Duration::from_millis(100), Duration::from_secs(30)).await;
        tokio::time::timeout(Duration::from_secs(5), conn.wait_readable())
            .await
            .expect("the header deadline ends the wait")
            .unwrap();
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}

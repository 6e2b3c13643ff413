//! A lean front for the state API's listener: `GET /v1/active` (the filters' long-polls) is
//! answered here, on the bare TCP stream, and every other connection goes to axum unchanged.
//!
//! Why: a connection served by hyper and axum costs about 22 KB of RSS while its request is
//! parked (an 8 KB response buffer allocated with the connection, a read buffer that is
//! allocated again while the parked request still holds the first, axum's per-connection
//! router), so 10,000 parked long-polls cost some 225 MB. Here a parked long-poll holds its
//! socket, a watch receiver and a timer, and no buffer: about 2.5 KB (31 MB for 10,000).
//! Measured by scripts/fanout-bench.sh: docs/BENCHMARKS.md, "Fan-out".
//!
//! What it answers is what the axum handler answers (`longpoll::longpoll_params`,
//! `longpoll::longpoll_doc`, the same headers). Anything it does not fully understand (another
//! path or method, HTTP/1.0, a body, an upgrade, a bad query, a head over 8 KiB, pipelined
//! requests) is handed to axum with the bytes read so far, and the connection stays with
//! axum from then on. It never answers an error itself and never reads a request body.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

use crate::context::AppState;
use crate::longpoll::{self, ActiveQuery};

/// The largest request head read here; larger ones go to hyper (which answers 431).
const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed here; a request with more goes to hyper.
const MAX_HEADERS: usize = 32;

/// The connections the front is serving, so shutdown can wait for their last answers.
#[derive(Clone, Default)]
pub struct Open(Arc<(AtomicUsize, Notify)>);

impl Open {
    fn enter(&self) -> OpenGuard {
        self.0 .0.fetch_add(1, Ordering::SeqCst);
        OpenGuard(self.clone())
    }

    /// Resolves once no connection is left with the front.
    pub async fn drained(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.0 .0.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

struct OpenGuard(Open);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        if self.0 .0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0 .0 .1.notify_waiters();
        }
    }
}

/// The listener axum serves: only the connections the front hands over.
pub struct FrontListener {
    handed: mpsc::Receiver<(Rewind, SocketAddr)>,
    local: SocketAddr,
}

impl FrontListener {
    /// Starts accepting on `listener`: long-polls are answered here, everything else is
    /// yielded to axum through [`axum::serve::Listener::accept`]. Stops accepting when the
    /// poller stops.
    /// The second value tells when the front's own connections are done.
    pub fn start(listener: TcpListener, app: AppState) -> io::Result<(FrontListener, Open)> {
        let local = listener.local_addr()?;
        let (tx, handed) = mpsc::channel(256);
        let open = Open::default();
        tokio::spawn(accept_loop(listener, app, tx, open.clone()));
        Ok((FrontListener { handed, local }, open))
    }
}

impl axum::serve::Listener for FrontListener {
    type Io = Rewind;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handed.recv().await {
            Some(conn) => conn,
            // The accept loop ended (shutdown): axum is stopping too.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: AppState,
    tx: mpsc::Sender<(Rewind, SocketAddr)>,
    open: Open,
) {
    let mut stop = app.stop.clone();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, addr)) => {
                let guard = open.enter();
                let (app, tx) = (app.clone(), tx.clone());
                tokio::spawn(async move {
                    connection(stream, addr, app, tx).await;
                    drop(guard);
                });
            }
            Err(e) => {
                // Out of descriptors and the like: axum's own loop also pauses and goes on.
                log::warn!("accepting a state API connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A long-poll the front answers itself.
#[derive(Debug, PartialEq, Eq)]
struct LongPoll {
    index: Option<u64>,
    wait: std::time::Duration,
    close: bool,
}

/// What a complete request head is, for the front.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A `GET /v1/active` the front answers.
    Mine(LongPoll),
    /// Anything else: axum's.
    Axum,
}

/// Reads `head` (a complete request head, CRLF CRLF included).
fn parse_head(head: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return Parsed::Axum,
    }
    if req.method != Some("GET") || req.version != Some(1) {
        return Parsed::Axum;
    }
    let Some(target) = req.path else { return Parsed::Axum };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path != "/v1/active" {
        return Parsed::Axum;
    }
    let mut close = false;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            if h.value != b"0" {
                return Parsed::Axum;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Parsed::Axum;
        } else if name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.contains("upgrade") {
                return Parsed::Axum;
            }
            close |= v.split(',').any(|t| t.trim() == "close");
        }
    }
    // The same query parsing as axum's `Query` extractor; its rejections stay axum's.
    let Ok(q) = serde_urlencoded::from_str::<ActiveQuery>(query) else { return Parsed::Axum };
    match longpoll::longpoll_params(q.index.as_deref(), q.wait.as_deref()) {
        Ok((index, wait)) => Parsed::Mine(LongPoll { index, wait, close }),
        Err(_) => Parsed::Axum,
    }
}

/// The bytes of the answer: what the axum handler sends, plus `date` as hyper adds it.
fn response(body: &[u8], version: u64, close: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 256);
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\n",
    );
    out.extend_from_slice(
        format!("x-vault-redirect-version: {version}\r\ncontent-length: {}\r\n", body.len())
            .as_bytes(),
    );
    out.extend_from_slice(
        format!("date: {}\r\n", httpdate::fmt_http_date(SystemTime::now())).as_bytes(),
    );
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Resolves when the client closes the connection. Bytes it sends while its request is open
/// (pipelining, which filters never do) are left unread and set `*more`: the connection then
/// closes after this answer (`connection: close`), and the client retries the rest.
async fn client_gone(stream: &TcpStream, more: &mut bool) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => {
            *more = true;
            std::future::pending::<()>().await;
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    addr: SocketAddr,
    app: AppState,
    tx: mpsc::Sender<(Rewind, SocketAddr)>,
) {
    let _ = stream.set_nodelay(true);
    let mut stop = app.stop.clone();
    loop {
        // Wait for the next request without holding a buffer.
        tokio::select! {
            r = stream.readable() => if r.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut head: Vec<u8> = Vec::new();
        let parsed = loop {
            head.reserve(512);
            match stream.try_read_buf(&mut head) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Readiness can be stale (the first read finds nothing): keep watching for
                    // shutdown here too, or an idle keep-alive connection would hold it up.
                    tokio::select! {
                        r = stream.readable() => if r.is_err() { return },
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    continue;
                }
                Err(_) => return,
            }
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                // Exactly one request and nothing after it, or it is axum's.
                break if end + 4 == head.len() { parse_head(&head) } else { Parsed::Axum };
            }
            if head.len() > MAX_HEAD {
                break Parsed::Axum;
            }
        };
        let poll = match parsed {
            Parsed::Mine(poll) => poll,
            Parsed::Axum => {
                let _ = tx.send((Rewind { pre: head, pos: 0, inner: stream }, addr)).await;
                return;
            }
        };
        drop(head);
        let mut more = false;
        let doc = {
            let gone = client_gone(&stream, &mut more);
            longpoll::longpoll_doc(&app, poll.index, poll.wait, gone).await
        };
        let Some(doc) = doc else { return };
        let close = poll.close || more || *app.stop.borrow();
        let bytes = response(&doc.to_json(), doc.version, close);
        if stream.write_all(&bytes).await.is_err() || close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// A stream that first yields bytes already read from it.
pub struct Rewind {
    pre: Vec<u8>,
    pos: usize,
    inner: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.pre.len() {
            let n = (self.pre.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.pre[start..start + n]);
            self.pos += n;
            if self.pos == self.pre.len() {
                self.pre = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn mine(index: Option<u64>, wait: Duration, close: bool) -> Parsed {
        Parsed::Mine(LongPoll { index, wait, close })
    }

    #[test]
    fn long_polls_are_the_fronts_and_everything_else_is_axums() {
        let p = |s: &str| parse_head(s.as_bytes());
        assert_eq!(
            p("GET /v1/active?index=7&wait=30s HTTP/1.1\r\nHost: x\r\n\r\n"),
            mine(Some(7), Duration::from_secs(30), false)
        );
        assert_eq!(
            p("GET /v1/active HTTP/1.1\r\nHost: x\r\n\r\n"),
            mine(None, longpoll::DEFAULT_LONGPOLL_WAIT, false)
        );
        assert_eq!(
            p("GET /v1/active?index=1&wait=1s HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n"),
            mine(Some(1), Duration::from_secs(1), true)
        );
        assert_eq!(
            p("GET /v1/active?index=0&wait=1s HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
            mine(Some(0), Duration::from_secs(1), false)
        );
        for other in [
            "GET /health HTTP/1.1\r\n\r\n",
            "POST /v1/active HTTP/1.1\r\n\r\n",
            "GET /v1/active HTTP/1.0\r\n\r\n",
            "GET /v1/active?index=abc HTTP/1.1\r\n\r\n",
            "GET /v1/active?wait=forever HTTP/1.1\r\n\r\n",
            "GET /v1/active?index=1&index=2 HTTP/1.1\r\n\r\n",
            "GET /v1/active HTTP/1.1\r\nContent-Length: 3\r\n\r\n",
            "GET /v1/active HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /v1/active HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /v1/active/x HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\n",
            "garbage\r\n\r\n",
        ] {
            assert_eq!(p(other), Parsed::Axum, "{other:?}");
        }
    }

    #[test]
    fn the_answer_carries_the_handlers_headers() {
        let r = String::from_utf8(response(b"{}", 42, true)).unwrap_or_default();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        for h in [
            "content-type: application/json\r\n",
            "cache-control: no-store\r\n",
            "x-vault-redirect-version: 42\r\n",
            "content-length: 2\r\n",
            "connection: close\r\n",
            "date: ",
        ] {
            assert!(r.contains(h), "{h} missing in {r}");
        }
        assert!(r.ends_with("\r\n\r\n{}"), "{r}");
    }
}

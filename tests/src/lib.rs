//! Harness for end-to-end tests and the demo: starts the real parts (Envoy from the project's
//! virtualenv, the poller binary) as child processes on free loopback ports, and stops them
//! when their handle drops, whatever the test's outcome.
//!
//! It never builds anything: a missing artifact is an error that says which command builds it.

pub mod bench;
pub mod envoy;
pub mod fanout;
pub mod kubernetes;
pub mod openbao;
pub mod pki;
pub mod poller;
pub mod proc;
pub mod proxy_load;
pub mod registrar;
pub mod scripted_poller;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub use host_test::shipped::{target_dir, workspace_root};

/// A built artifact, or an error saying how to build it.
pub fn artifact(path: PathBuf, how: &str) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path)
    } else {
        bail!(
            "{} is missing: build it with `{how}` (scripts/build.sh builds everything)",
            path.display()
        )
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port(ip: &str) -> Result<u16> {
    let listener = TcpListener::bind((ip, 0)).with_context(|| format!("binding {ip}:0"))?;
    Ok(listener.local_addr()?.port())
}

/// A free address on 127.0.0.1.
pub fn free_addr() -> Result<SocketAddr> {
    Ok(SocketAddr::from(([127, 0, 0, 1], free_port("127.0.0.1")?)))
}

/// An HTTP client that never follows redirects, so tests see the 307 itself.
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}

/// Calls `probe` until it yields `Some`, at most until `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `Location` of a request through `base` (status and location), without following it.
pub async fn location(client: &reqwest::Client, url: &str) -> Result<(u16, Option<String>)> {
    let resp = client.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let loc = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok((resp.status().as_u16(), loc))
}

/// A raw HTTP/1.1 exchange: sends `request` as is (so tests can send what no client library
/// would, such as absolute-form targets or bare CR), reads one answer
/// ([`read_http1_answer`]: until its framing says it is whole, the server closes, or 10 s
/// pass), and returns the status, the header lines and the body.
pub async fn raw_http1(addr: SocketAddr, request: &[u8]) -> Result<RawResponse> {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.write_all(request).await?;
    let method = request.split(|b| *b == b' ').next().unwrap_or_default();
    let method = String::from_utf8_lossy(method);
    let mut buf = Vec::new();
    // A read error ends the answer like the end of the connection: what came is what counts.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        read_http1_answer(&mut stream, &method, &mut buf),
    )
    .await;
    if read.is_err() && buf.is_empty() {
        bail!("no answer from {addr} within 10 s");
    }
    let end = find(&buf, b"\r\n\r\n").unwrap_or(buf.len());
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {head:?}"))?;
    let headers = lines
        .filter_map(|l| {
            l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let body = String::from_utf8_lossy(buf.get(end + 4..).unwrap_or_default()).to_string();
    Ok(RawResponse { status, headers, body })
}

/// Reads one HTTP/1.1 answer to a `method` request from `stream` into `bytes`, stopping when
/// it is complete by its own framing rather than at the end of the connection: Envoy keeps a
/// closing connection open for its `delayed_close_timeout` (1 s) waiting for the client to go
/// first, which waiting for EOF would add to every request. Without framing (no length, not
/// chunked) the answer runs to the end of the connection.
pub async fn read_http1_answer(
    stream: &mut tokio::net::TcpStream,
    method: &str,
    bytes: &mut Vec<u8>,
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        bytes.extend_from_slice(&chunk[..n]);
        if http1_answer_complete(bytes, method) {
            return Ok(());
        }
    }
}

/// Whether `bytes` hold a whole HTTP/1.1 answer to a `method` request: headers, then nothing
/// (HEAD, 1xx, 204, 304), a content-length's worth, or a chunked body up to its last chunk.
pub fn http1_answer_complete(bytes: &[u8], method: &str) -> bool {
    let Some(split) = find(bytes, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()).unwrap_or(0);
    let body = &bytes[split + 4..];
    if method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
        return true;
    }
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v == "chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    match header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        Some(len) => body.len() >= len,
        None => false,
    }
}

/// What [`raw_http1`] read.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body, lossily decoded.
    pub body: String,
}

impl RawResponse {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

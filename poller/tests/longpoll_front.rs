//! The long-poll front on raw connections: several long-polls on one keep-alive connection,
//! then another path on the same connection (handed to axum with the bytes already read), a
//! client that leaves while parked, and a malformed query answered by axum's 400.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vault_redirect_doubles::ConsulDouble;

/// Reads one response with a Content-Length body: (status line, headers, body).
async fn read_response(s: &mut TcpStream) -> (String, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(buf[..end].to_vec()).unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8(buf[end + 4..end + 4 + len].to_vec()).unwrap();
                    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
                    return (status.to_string(), headers.to_ascii_lowercase(), body);
                }
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed mid-response: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("a response within 20 s")
}

async fn waiters(p: &Running) -> u64 {
    let text = client().get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("vault_redirect_longpoll_waiters "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn long_polls_then_another_path_share_one_keep_alive_connection() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    let v = doc["version"].as_u64().unwrap();
    let mut s = TcpStream::connect(p.addr).await.unwrap();

    // An immediate answer, then a parked one woken by a failover, on the same connection.
    s.write_all(b"GET /v1/active HTTP/1.1\r\nHost: p\r\n\r\n").await.unwrap();
    let (status, headers, body) = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("content-type: application/json"), "{headers}");
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    assert!(headers.contains(&format!("x-vault-redirect-version: {v}")), "{headers}");
    assert!(body.contains("\"vault-a\""), "{body}");

    s.write_all(
        format!("GET /v1/active?index={v}&wait=30s HTTP/1.1\r\nHost: p\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(waiters(&p).await, 1);
    consul.set_active("vault-b");
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("\"vault-b\""), "{body}");

    // Another path on the same connection is axum's, with nothing lost.
    s.write_all(b"GET /livez HTTP/1.1\r\nHost: p\r\n\r\n").await.unwrap();
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("\"live\":true"), "{body}");
    // And long-polls still work on it, through axum now.
    s.write_all(b"GET /v1/active?index=0 HTTP/1.1\r\nHost: p\r\n\r\n").await.unwrap();
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("\"vault-b\""), "{body}");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_client_that_leaves_while_parked_is_no_longer_counted() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    let doc = active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    let v = doc["version"].as_u64().unwrap();
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(
        format!("GET /v1/active?index={v}&wait=60s HTTP/1.1\r\nHost: p\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while waiters(&p).await != 1 {
        assert!(Instant::now() < deadline, "the long-poll was never parked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(s);
    while waiters(&p).await != 0 {
        assert!(Instant::now() < deadline, "a departed client is still counted as waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.stop().await.unwrap();
}

#[tokio::test]
async fn a_bad_query_gets_axums_400_and_a_closing_client_its_answer() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /v1/active?index=abc HTTP/1.1\r\nHost: p\r\n\r\n").await.unwrap();
    let (status, _, body) = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    assert!(body.contains("invalid index \\\"abc\\\""), "{body}");

    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /v1/active?index=0 HTTP/1.1\r\nHost: p\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (status, headers, _) = read_response(&mut s).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("connection: close"), "{headers}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the connection stays open after connection: close");
    p.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_keep_alive_connections() {
    let consul = ConsulDouble::start(three_nodes()).await.unwrap();
    let p = start(&consul.url(), &[]).await;
    active_until(&p, Duration::from_secs(10), |d| active_node(d).is_some()).await;
    // One answered request, then the connection idles, as an Envoy's pooled connection does.
    let mut s = TcpStream::connect(p.addr).await.unwrap();
    s.write_all(b"GET /v1/active HTTP/1.1\r\nHost: p\r\n\r\n").await.unwrap();
    read_response(&mut s).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    p.stop().await.unwrap();
    // The shutdown grace is 10 s; an idle connection must not use it up.
    assert!(started.elapsed() < Duration::from_secs(5), "stop took {:?}", started.elapsed());
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the idle connection is closed at shutdown");
}

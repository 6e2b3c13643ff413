//! Open-redirect and injection proofing through real Envoy: whatever the request says about
//! hosts, and whatever bytes its target holds, a `Location` only ever names the active node,
//! or the request is refused with a 4xx; nothing is reflected into a header.

mod common;

use common::Stack;
use vault_redirect_e2e::raw_http1;

const ACTIVE: &str = "http://127.0.0.2:8200";

fn request(target: &str, extra: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: evil.example\r\n{extra}Connection: close\r\n\r\n")
        .into_bytes()
}

/// The invariant every answer must keep: either a 307 whose Location starts with the active
/// node's authority followed by '/', or a refusal without any Location.
fn assert_safe(what: &str, status: u16, location: Option<&str>) {
    match status {
        307 => {
            let loc = location.unwrap_or_default();
            assert!(
                loc.starts_with(&format!("{ACTIVE}/")),
                "{what}: Location {loc:?} leaves the active node"
            );
            assert!(
                !loc.contains('\r') && !loc.contains('\n'),
                "{what}: Location {loc:?} holds CR/LF"
            );
        }
        other => {
            assert!((400..=499).contains(&other), "{what}: unexpected status {other}");
            assert!(location.is_none(), "{what}: a refusal carried Location {location:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_request_targets_never_redirect_anywhere_but_the_active_node() -> anyhow::Result<()>
{
    let stack = Stack::start(None, 1).await?;
    let addr = stack.envoy.listen;
    let cases = [
        ("absolute-form", request("http://evil.example/v1/x", "")),
        ("absolute-form https", request("https://evil.example:443/v1/x?y=1", "")),
        ("authority-form", request("evil.example:80", "")),
        (
            "asterisk",
            b"OPTIONS * HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("double slash", request("//evil.example/v1/x", "")),
        ("backslashes", request("/\\evil.example/v1/x", "")),
        (
            "encoded CRLF",
            request("/v1/x%0d%0aSet-Cookie:%20a=b?q=%0D%0ALocation:%20http://evil", ""),
        ),
        ("encoded slash and dots", request("/%2f%2fevil.example/%2e%2e/v1", "")),
        (
            "x-forwarded-host",
            request("/v1/x", "X-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n"),
        ),
        ("utf8 in path", request("/v1/caf\u{e9}/\u{2028}", "")),
    ];
    for (what, bytes) in cases {
        let resp = raw_http1(addr, &bytes).await?;
        assert_safe(what, resp.status, resp.header("location"));
        assert!(
            !resp.headers.iter().any(|(k, _)| k == "set-cookie"),
            "{what}: a header was injected: {:?}",
            resp.headers
        );
    }
    // Absolute-form keeps its path (Envoy splits the URL; the host part is dropped).
    let resp = raw_http1(addr, &request("http://evil.example/v1/x?y=1", "")).await?;
    assert_eq!(
        (resp.status, resp.header("location")),
        (307, Some("http://127.0.0.2:8200/v1/x?y=1"))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_control_bytes_and_oversized_requests_are_refused_without_a_location(
) -> anyhow::Result<()> {
    let stack = Stack::start(None, 1).await?;
    let addr = stack.envoy.listen;
    let long_path = format!("/{}", "a".repeat(9_000));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bare CR in target",
            b"GET /v1/x\rSet-Cookie: a HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        ("NUL in target", b"GET /v1/\0x HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n".to_vec()),
        ("tab in target", b"GET /v1/\tx HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n".to_vec()),
        ("path over 8 KiB", request(&long_path, "")),
        (
            "header over Envoy's limit",
            request("/v1/x", &format!("X-Big: {}\r\n", "b".repeat(70_000))),
        ),
    ];
    for (what, bytes) in cases {
        let resp = raw_http1(addr, &bytes).await?;
        assert!((400..500).contains(&resp.status), "{what}: status {}", resp.status);
        assert!(resp.header("location").is_none(), "{what}: {:?}", resp.headers);
    }
    // The filter's own limit answers 414 for a path over 8 KiB that Envoy accepted.
    let resp = raw_http1(addr, &request(&long_path, "")).await?;
    assert_eq!(resp.status, 414);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_token_never_reaches_a_response_or_envoys_log() -> anyhow::Result<()> {
    let stack =
        Stack::start(Some(r#"{"poller_cluster":"vault_redirect_poller","debug_header":true}"#), 1)
            .await?;
    let token = "hvs.CAESIJ-never-log-this-token";
    let resp = raw_http1(
        stack.envoy.listen,
        &request(
            "/v1/secret/data/x",
            &format!("X-Vault-Token: {token}\r\nAuthorization: Bearer {token}\r\n"),
        ),
    )
    .await?;
    assert_eq!(resp.status, 307);
    assert!(!format!("{resp:?}").contains(token), "the token came back: {resp:?}");
    let log = std::fs::read_to_string(stack.envoy.proc.log_path())?;
    assert!(!log.contains(token), "the token is in Envoy's log");
    Ok(())
}

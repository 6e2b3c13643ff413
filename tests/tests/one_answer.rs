//! One answer, defined once: the filter (the release `.wasm` in host-test) and the poller's
//! standalone listener (the real binary against the Consul double) answer the behaviour
//! matrix identically, status, headers and body, from the very same state document: the
//! filter is fed what the poller serves on `/v1/active`.
//!
//! Headers compared are every header the filter sends; on the poller's side, the ones hyper
//! adds to every response (`date`, `content-length`, checked against the body) and the
//! hop-by-hop `connection` (the answer to the test's own `Connection: close`) are left out.
//!
//! Needs the release `.wasm` and the poller binary (scripts/build.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use host_test::{HttpCallResponse, Vm};
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{free_addr, raw_http1, wait_for, RawResponse};

const CLUSTER: &str = "vault_redirect_poller";

/// Status, headers (sorted, names lower-case) and body, as either side answered.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

fn from_poller(r: RawResponse) -> Result<Seen> {
    let length = r.header("content-length").unwrap_or("0").parse::<usize>()?;
    ensure!(length == r.body.len(), "content-length {length} for a body of {}", r.body.len());
    let mut headers: Vec<(String, String)> = r
        .headers
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "date" | "content-length" | "connection"))
        .collect();
    headers.sort();
    Ok(Seen { status: r.status, headers, body: r.body })
}

fn from_filter(vm: &mut Vm, path: &str) -> Result<Seen> {
    let out = vm.send_request(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "vault.example"),
        (":path", path),
    ])?;
    let r = out.local_response.with_context(|| format!("no local answer to {path:.60}"))?;
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect();
    headers.sort();
    Ok(Seen {
        status: u16::try_from(r.status)?,
        headers,
        body: String::from_utf8_lossy(&r.body).into_owned(),
    })
}

async fn poller_get(addr: std::net::SocketAddr, target: &str) -> Result<Seen> {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: vault.example\r\nConnection: close\r\n\r\n");
    from_poller(raw_http1(addr, request.as_bytes()).await?)
}

/// Feeds the filter the poller's current `/v1/active` document as the answer to its poll.
async fn sync_filter(vm: &mut Vm, poller: &Poller) -> Result<()> {
    let body = reqwest::get(format!("http://{}/v1/active", poller.addr)).await?.bytes().await?;
    let call = vm.pending_http_calls().into_iter().next().context("no poll in flight")?;
    vm.respond_http_call(call.token, HttpCallResponse::new(200, body.to_vec()))?;
    Ok(())
}

async fn same_answer(vm: &mut Vm, redirects: std::net::SocketAddr, target: &str) -> Result<Seen> {
    let filter = from_filter(vm, target)?;
    let poller = poller_get(redirects, target).await?;
    ensure!(
        filter == poller,
        "{target:.60}: the filter answered\n{filter:#?}\nthe poller\n{poller:#?}"
    );
    Ok(filter)
}

#[tokio::test]
async fn the_filter_and_the_standalone_poller_give_the_same_answers() -> Result<()> {
    let consul = ConsulDouble::start(vec![
        VaultNode::new("vault-a", "10.0.0.1", 8200, Role::Active),
        VaultNode::new("vault-b", "10.0.0.2", 8200, Role::Standby),
    ])
    .await?;
    let redirects = free_addr()?;
    let poller =
        Poller::start(&consul.url(), &["--redirect-listen", &redirects.to_string()]).await?;
    let host = host_test::shipped::host()
        .map_err(anyhow::Error::msg)?
        .with_plugin_config(format!(r#"{{"poller_cluster":"{CLUSTER}"}}"#))
        .with_known_clusters([CLUSTER]);
    let mut vm = host.start_vm()?;
    ensure!(vm.configure_result(), "the filter refused its configuration: {:?}", vm.logs());
    wait_for("vault-a in the poller's state", Duration::from_secs(10), || async {
        poller.state().await.ok()?.active.filter(|a| a.node == "vault-a").map(|_| ())
    })
    .await?;
    sync_filter(&mut vm, &poller).await?;

    let redirect = same_answer(&mut vm, redirects, "/v1/secret/data/a%20b?version=2").await?;
    ensure!(redirect.status == 307, "{redirect:?}");
    ensure!(
        redirect.headers.contains(&(
            "location".into(),
            "http://10.0.0.1:8200/v1/secret/data/a%20b?version=2".into()
        )),
        "{redirect:?}"
    );
    let refused = same_answer(&mut vm, redirects, "http://evil.example/x").await?;
    ensure!(refused.status == 400 && refused.body.contains("origin-form"), "{refused:?}");
    let long = format!("/{}", "a".repeat(9_000));
    let too_long = same_answer(&mut vm, redirects, &long).await?;
    ensure!(too_long.status == 414, "{too_long:?}");

    // An election: every node standby. The poller's reason reaches both 503s.
    consul.update(|nodes| nodes.iter_mut().for_each(|n| n.role = Role::Standby));
    wait_for("no active node in the poller's state", Duration::from_secs(10), || async {
        poller.state().await.ok().filter(|d| d.active.is_none()).map(|_| ())
    })
    .await?;
    sync_filter(&mut vm, &poller).await?;
    let none = same_answer(&mut vm, redirects, "/v1/sys/health").await?;
    ensure!(none.status == 503, "{none:?}");
    ensure!(none.headers.contains(&("retry-after".into(), "1".into())), "{none:?}");
    ensure!(none.headers.contains(&("cache-control".into(), "no-store".into())), "{none:?}");
    let errors: serde_json::Value = serde_json::from_str(&none.body)?;
    let message = errors["errors"][0].as_str().unwrap_or_default();
    ensure!(
        message.starts_with("no active Vault node: ") && message.contains("tagged"),
        "{none:?}"
    );
    Ok(())
}

#[test]
fn pass_through_continues_in_the_filter_and_is_no_answer_in_core() {
    // The standalone poller has no upstream and no pass-through list; the filter's side of
    // the matrix row is that a pass-through path gets no local answer at all.
    let host = host_test::shipped::host()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_plugin_config(format!(
            r#"{{"poller_cluster":"{CLUSTER}","pass_through_paths":["/healthz"]}}"#
        ))
        .with_known_clusters([CLUSTER]);
    let mut vm = host.start_vm().unwrap();
    assert!(vm.configure_result());
    let out =
        vm.send_request(&[(":method", "GET"), (":authority", "v"), (":path", "/healthz")]).unwrap();
    assert!(out.local_response.is_none(), "{:?}", out.local_response);
    assert_eq!(
        vault_redirect_core::Answer::to(vault_redirect_core::Decision::PassThrough, ""),
        None
    );
}

//! The filter's redirect semantics in real Envoy: every method, HTTP/1.1 and HTTP/2, several
//! workers, configuration options, staleness, and a configuration Envoy must reject.

mod common;

use std::time::{Duration, Instant};

use common::Stack;
use reqwest::Method;
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::{client, wait_for};

const ACTIVE_A: &str = "http://127.0.0.2:8200";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_gets_a_307_with_the_path_and_query_byte_for_byte() -> anyhow::Result<()> {
    let stack = Stack::start(None, 1).await?;
    let http = client()?;
    let paths = [
        "/v1/secret/data/app",
        "/v1/secret/data/a%20b?version=2&x=%2F%3F",
        "/v1//sys//health?standbyok=true",
        "/v1/kv/caf%C3%A9?list=true#frag-never-sent",
    ];
    // Not LIST: Envoy's HTTP/1 codec answers 400 to methods outside the HTTP registry before
    // any filter runs (see docs/filter.md); over HTTP/2 it reaches the filter (below).
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"] {
        for path in paths {
            let m = Method::from_bytes(method.as_bytes())?;
            let resp = http.request(m, stack.envoy.url(path)).body("{\"data\":{}}").send().await?;
            assert_eq!(resp.status().as_u16(), 307, "{method} {path}");
            // The fragment is never sent by the client; everything else is copied as sent.
            let sent = path.split('#').next().unwrap_or(path);
            assert_eq!(
                resp.headers()["location"],
                format!("{ACTIVE_A}{sent}").as_str(),
                "{method} {path}"
            );
            assert_eq!(resp.headers()["cache-control"], "no-store");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_host_headers_never_reach_the_location() -> anyhow::Result<()> {
    let stack = Stack::start(None, 1).await?;
    let resp = client()?
        .get(stack.envoy.url("/v1/sys/leader"))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 307);
    assert_eq!(resp.headers()["location"], format!("{ACTIVE_A}/v1/sys/leader").as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_get_the_same_redirect() -> anyhow::Result<()> {
    let stack = Stack::start(None, 1).await?;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let resp = h2.post(stack.envoy.url("/v1/transit/encrypt/k?x=1")).body("{}").send().await?;
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status().as_u16(), 307);
    assert_eq!(resp.headers()["location"], format!("{ACTIVE_A}/v1/transit/encrypt/k?x=1").as_str());
    let list = h2
        .request(Method::from_bytes(b"LIST")?, stack.envoy.url("/v1/secret/metadata/"))
        .send()
        .await?;
    assert_eq!(list.status().as_u16(), 307);
    assert_eq!(list.headers()["location"], format!("{ACTIVE_A}/v1/secret/metadata/").as_str());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_workers_every_connection_follows_a_failover() -> anyhow::Result<()> {
    let stack = Stack::start(None, 2).await?;
    for _ in 0..20 {
        let resp = stack.get_fresh("/v1/x").await?;
        assert_eq!(resp.headers()["location"], format!("{ACTIVE_A}/v1/x").as_str());
    }
    let switched = Instant::now();
    stack.consul.set_active("vault-b");
    // Every fresh connection (spread over both workers) must see vault-b within the bound.
    wait_for("all of 20 fresh connections to see vault-b", Duration::from_secs(10), || async {
        for _ in 0..20 {
            let resp = stack.get_fresh("/v1/x").await.ok()?;
            if resp.headers().get("location")?.to_str().ok()? != "http://127.0.0.3:8200/v1/x" {
                return None;
            }
        }
        Some(())
    })
    .await?;
    println!("all workers on vault-b {:?} after the switch", switched.elapsed());
    // Both workers kept their own long-poll: Envoy counts each worker's (and the main
    // thread's) state update, so at least 2 updates per state were applied.
    let updates = stack.envoy.stat("wasmcustom.vault_redirect.state_updates").await?.unwrap_or(0);
    assert!(updates >= 4, "state_updates = {updates}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_paths_and_the_debug_header_follow_the_configuration() -> anyhow::Result<()> {
    let config = r#"{"poller_cluster":"vault_redirect_poller","pass_through_paths":["/healthz","/ui/*"],
        "debug_header":true,"scheme":"https","target_host":"node","target_port":8443}"#;
    let stack = Stack::start(Some(config), 1).await?;
    let http = client()?;
    // Pass-through requests reach the route, whose direct_response answers 404.
    for path in ["/healthz", "/healthz?x=1", "/ui/vault/auth"] {
        assert_eq!(http.get(stack.envoy.url(path)).send().await?.status().as_u16(), 404, "{path}");
    }
    let resp = http.get(stack.envoy.url("/v1/sys/health")).send().await?;
    assert_eq!(resp.status().as_u16(), 307);
    assert_eq!(resp.headers()["location"], "https://vault-a:8443/v1/sys/health");
    let debug = resp.headers()["x-vault-redirect-state"].to_str()?.to_string();
    let version = stack.poller.state().await?.version;
    assert!(debug.starts_with(&format!("version={version}; age_ms=")), "{debug}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_goes_stale_when_the_poller_is_gone_and_recovers_when_it_returns(
) -> anyhow::Result<()> {
    let config = r#"{"poller_cluster":"vault_redirect_poller","max_stale_seconds":2,"retry_initial_ms":50,"retry_max_ms":200,"tick_ms":50}"#;
    let stack = Stack::start(Some(config), 1).await?;
    let Stack { consul, poller, envoy } = stack;
    let http = client()?;
    assert_eq!(http.get(envoy.url("/v1/x")).send().await?.status().as_u16(), 307);
    let addr = poller.addr;
    poller.proc.stop(Duration::from_secs(5)).await?;
    // Last-known-good first: still redirected right after the poller went away.
    assert_eq!(http.get(envoy.url("/v1/x")).send().await?.status().as_u16(), 307);
    let stale = wait_for("a 503 once the state is stale", Duration::from_secs(10), || async {
        let r = http.get(envoy.url("/v1/x")).send().await.ok()?;
        (r.status().as_u16() == 503).then_some(r)
    })
    .await?;
    let body = stale.text().await?;
    assert!(body.contains("stale"), "{body}");
    // A poller on the same address brings redirects back.
    let _poller = vault_redirect_e2e::poller::Poller::start_on(&consul.url(), addr, &[]).await?;
    wait_for("redirects to come back", Duration::from_secs(10), || async {
        let r = http.get(envoy.url("/v1/x")).send().await.ok()?;
        (r.status().as_u16() == 307).then_some(())
    })
    .await?;
    let failures = envoy.stat("wasmcustom.vault_redirect.poll_failures").await?.unwrap_or(0);
    assert!(failures > 0, "poll failures were not counted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_refuses_a_configuration_with_a_bad_value_and_names_it() -> anyhow::Result<()> {
    let mut opts = EnvoyOptions::new("127.0.0.1:9".parse()?);
    opts.plugin_config = r#"{"poller_cluster":"vault_redirect_poller","scheme":"ftp"}"#.into();
    let err = match Envoy::start(opts).await {
        Ok(_) => anyhow::bail!("Envoy accepted scheme \"ftp\""),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("`scheme`") && err.contains("\"ftp\""), "{err}");
    Ok(())
}

/// Two listeners whose filters share `vm_config` run in one VM per worker as two root contexts
/// with their own configuration. The filter dispatches requests to their root itself
/// (filter/src/abi.rs), so each listener must answer with its own scheme and port, from fresh
/// connections interleaved over both workers, before and after a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_plugin_configurations_in_one_vm_each_answer_with_their_own() -> anyhow::Result<()> {
    let consul = vault_redirect_doubles::ConsulDouble::start(common::three_nodes()).await?;
    let poller = vault_redirect_e2e::poller::Poller::start(&consul.url(), &[]).await?;
    let second = vault_redirect_e2e::free_addr()?;
    let envoy = Envoy::start(EnvoyOptions {
        concurrency: 2,
        second_listener: Some((
            second,
            r#"{"poller_cluster":"vault_redirect_poller","scheme":"https","target_port":8443}"#
                .into(),
        )),
        ..EnvoyOptions::new(poller.addr)
    })
    .await?;
    let first_url = envoy.url("/v1/sys/health?x=1");
    let second_url = format!("http://{second}/v1/sys/health?x=2");
    let fresh = || {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(0)
            .build()
    };
    let location = |url: String| async move {
        let r = fresh().ok()?.get(&url).send().await.ok()?;
        (r.status().as_u16() == 307)
            .then(|| r.headers().get("location")?.to_str().ok().map(str::to_string))?
    };
    for (host, port) in [("127.0.0.2", 8200), ("127.0.0.3", 8200)] {
        let want_first = format!("http://{host}:{port}/v1/sys/health?x=1");
        let want_second = format!("https://{host}:8443/v1/sys/health?x=2");
        wait_for(&format!("both listeners on {host}"), Duration::from_secs(15), || async {
            (location(first_url.clone()).await? == want_first
                && location(second_url.clone()).await? == want_second)
                .then_some(())
        })
        .await?;
        // Interleaved fresh connections land on both workers; none may get the other's answer.
        for i in 0..40 {
            let (url, want) =
                if i % 2 == 0 { (&first_url, &want_first) } else { (&second_url, &want_second) };
            assert_eq!(location(url.clone()).await.as_ref(), Some(want), "request {i}");
        }
        consul.set_active("vault-b");
    }
    assert!(envoy.filter_failures().is_empty(), "{:?}", envoy.filter_failures());
    Ok(())
}

//! The thinnest whole path: Consul double -> poller binary -> real Envoy with the release
//! .wasm -> 307. Every process is stopped when its handle drops, even on failure.

use std::time::{Duration, Instant};

use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::{client, location, wait_for};

fn cluster() -> Vec<VaultNode> {
    vec![
        VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
        VaultNode::new("vault-c", "127.0.0.4", 8200, Role::Standby),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_redirects_to_the_active_node_and_follows_a_failover() -> anyhow::Result<()> {
    let consul = ConsulDouble::start(cluster()).await?;
    let poller = Poller::start(&consul.url(), &[]).await?;
    let envoy = Envoy::start(EnvoyOptions::new(poller.addr)).await?;
    let http = client()?;
    let url = envoy.url("/v1/secret/data/app?version=2&list=a%2Fb");

    let first = wait_for("the first 307 to vault-a", Duration::from_secs(15), || async {
        location(&http, &url).await.ok().filter(|(s, _)| *s == 307)
    })
    .await?;
    assert_eq!(
        first.1.as_deref(),
        Some("http://127.0.0.2:8200/v1/secret/data/app?version=2&list=a%2Fb")
    );

    // A POST gets a 307 too (a 301/302 would turn it into a GET at the client).
    let post =
        http.post(envoy.url("/v1/secret/data/app")).body(r#"{"data":{"k":"v"}}"#).send().await?;
    assert_eq!(post.status().as_u16(), 307);
    assert_eq!(post.headers()["location"], "http://127.0.0.2:8200/v1/secret/data/app");

    let switched = Instant::now();
    consul.set_active("vault-c");
    let after =
        wait_for("the Location to follow the failover", Duration::from_secs(10), || async {
            location(&http, &url)
                .await
                .ok()
                .filter(|(_, l)| l.as_deref() != Some(first.1.as_deref().unwrap_or_default()))
        })
        .await?;
    println!("Location followed the failover in {:?}", switched.elapsed());
    assert_eq!(
        after,
        (307, Some("http://127.0.0.4:8200/v1/secret/data/app?version=2&list=a%2Fb".to_string()))
    );

    let counted = envoy.counter_at_least("wasmcustom.vault_redirect.redirects", 3).await?;
    assert!(counted >= 3, "Envoy counted {counted} redirects");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_answers_503_in_vault_error_shape_while_no_node_is_active() -> anyhow::Result<()> {
    let mut nodes = cluster();
    nodes[0].role = Role::Standby;
    let consul = ConsulDouble::start(nodes).await?;
    let poller = Poller::start(&consul.url(), &[]).await?;
    let envoy = Envoy::start(EnvoyOptions::new(poller.addr)).await?;
    let http = client()?;

    // Before the worker hears the poller it says so; wait until it answers from the state.
    let (status, retry_after, body) =
        wait_for("a 503 naming the missing active node", Duration::from_secs(15), || async {
            let r = http.get(envoy.url("/v1/sys/health")).send().await.ok()?;
            let status = r.status().as_u16();
            let retry = r.headers().get("retry-after")?.to_str().ok()?.to_string();
            let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.ok()?).ok()?;
            let msg = body["errors"][0].as_str()?.to_string();
            (!msg.contains("no state received")).then_some((status, retry, msg))
        })
        .await?;
    assert_eq!((status, retry_after.as_str()), (503, "1"));
    assert!(body.starts_with("no active Vault node"), "{body}");

    consul.set_active("vault-b");
    let (status, loc) =
        wait_for("a 307 once vault-b is active", Duration::from_secs(10), || async {
            location(&http, &envoy.url("/v1/sys/health")).await.ok().filter(|(s, _)| *s == 307)
        })
        .await?;
    assert_eq!((status, loc.as_deref()), (307, Some("http://127.0.0.3:8200/v1/sys/health")));
    Ok(())
}

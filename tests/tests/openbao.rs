//! A real OpenBao HA cluster (three `bao server` nodes on Raft, tests/src/openbao.rs) behind
//! the project: the registrar mirrors its elections into the Consul double the way Vault's
//! Consul registration does, the real poller follows them through its Consul source, and
//! real clients go through real Envoy's 307 to the real active node. Every assertion about
//! where a request landed is read from the nodes' own audit logs.
//!
//! The tests share one cluster (forming one takes seconds) and take turns on it; each turn
//! starts by healing what the previous test broke.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::openbao::{assert_wrote_and_read_on, BaoStack, FailoverProbe, CLIENT_IP};
use common::vault::{PROBE_PATH, QUICK_POLLER};
use common::{clients, curl, curl_post_json};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vault_redirect_e2e::openbao::{self, ClusterOptions, OpenBaoCluster};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::registrar::{Registrar, RegistrarOptions};
use vault_redirect_e2e::wait_for;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_has_one_active_node_two_standby_voters_kv_v2_and_audit_logs() -> Result<()> {
    let cluster = openbao::shared().await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let codes = cluster.codes().await?;
    assert_eq!(codes.iter().filter(|(_, c)| *c == Some(200)).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|(_, c)| *c == Some(429)).count(), 2, "{codes:?}");
    let servers = cluster.raft_servers().await?;
    assert_eq!(servers.len(), 3, "{servers:?}");
    assert!(servers.iter().all(|(_, voter)| *voter), "{servers:?}");
    // Every standby names the active node's api_addr as the leader, as Vault's redirects do.
    for node in cluster.nodes().iter().filter(|n| n.name != active) {
        let leader = cluster.call(&node.name, "GET", "sys/leader", None).await?;
        assert_eq!(leader["is_self"], json!(false), "{leader}");
        assert_eq!(leader["leader_address"], json!(cluster.api_addr(&active)?), "{leader}");
    }
    // A write on the active node is audited there, with the token HMAC-ed as the audit
    // device hashes it.
    let path = format!("secret/data/harness/sanity-{}", std::process::id());
    cluster.call(&active, "POST", &path, Some(json!({"data": {"k": "v"}}))).await?;
    let token_hash = cluster.audit_hash(cluster.root_token()).await?;
    let entries = cluster.audit_for(&active, &path)?;
    assert!(
        entries.iter().any(|e| e.kind == "request"
            && e.operation == "create"
            && e.client_token.as_deref() == Some(token_hash.as_str())),
        "{entries:#?}"
    );
    Ok(())
}

/// The Consul double's view of the service: `(node, tags, sealed check status)` per entry.
async fn consul_view(registrar: &Registrar) -> Result<Vec<(String, Vec<String>, String)>> {
    let url = format!("{}/v1/health/service/vault", registrar.url());
    let entries: Value = vault_redirect_e2e::client()?.get(&url).send().await?.json().await?;
    let entries = entries.as_array().context("the Consul double answered no array")?;
    Ok(entries
        .iter()
        .map(|e| {
            let tags = e["Service"]["Tags"]
                .as_array()
                .map(|t| t.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            let sealed = e["Checks"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["Name"] == "Vault Sealed Status"))
                .and_then(|c| c["Status"].as_str())
                .unwrap_or_default()
                .to_string();
            (e["Node"]["Node"].as_str().unwrap_or_default().to_string(), tags, sealed)
        })
        .collect())
}

/// Waits until the Consul double shows node `name` with `tag` and its sealed check `status`.
async fn wait_for_registration(
    registrar: &Registrar,
    name: &str,
    tag: &str,
    status: &str,
) -> Result<()> {
    wait_for(
        &format!("{name} registered {tag}, check {status}"),
        Duration::from_secs(10),
        || async {
            let view = consul_view(registrar).await.ok()?;
            view.iter()
                .any(|(n, tags, s)| n == name && tags.iter().any(|t| t == tag) && s == status)
                .then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrar_mirrors_roles_and_seal_status_into_consul_as_vault_would() -> Result<()> {
    let cluster = openbao::shared().await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let registrar = Registrar::start(&cluster, RegistrarOptions::default()).await?;
    for node in cluster.nodes() {
        let tag = if node.name == active { "active" } else { "standby" };
        wait_for_registration(&registrar, &node.name, tag, "passing").await?;
    }
    let view = consul_view(&registrar).await?;
    let entry = |name: &str| view.iter().find(|(n, _, _)| n == name).cloned();
    assert_eq!(
        entry(&active).map(|(_, tags, _)| tags),
        Some(vec!["active".to_string(), "initialized".to_string()])
    );
    // Address and port are the node's api_addr, as Vault registers them.
    let url = format!("{}/v1/health/service/vault", registrar.url());
    let raw: Value = vault_redirect_e2e::client()?.get(&url).send().await?.json().await?;
    for e in raw.as_array().context("no array")? {
        let name = e["Node"]["Node"].as_str().unwrap_or_default();
        let node = cluster.node(name)?;
        assert_eq!(e["Service"]["Address"], json!(node.ip.to_string()));
        assert_eq!(e["Service"]["Port"], json!(node.api_port));
        assert_eq!(e["Service"]["ID"], json!(format!("vault:{}:{}", node.ip, node.api_port)));
    }

    // Sealing a standby turns its check critical; unsealing it brings it back.
    let standby = cluster.nodes().iter().find(|n| n.name != active).context("no standby")?;
    let standby = standby.name.clone();
    cluster.seal(&standby).await?;
    wait_for_registration(&registrar, &standby, "standby", "critical").await?;
    cluster.unseal(&standby).await?;
    cluster.wait_for_code(&standby, &[429], Duration::from_secs(30)).await?;
    wait_for_registration(&registrar, &standby, "standby", "passing").await?;

    // A step-down re-tags: the new active node is tagged active, the old one standby.
    let (old, new) = cluster.step_down_until_moved(5).await?;
    wait_for_registration(&registrar, &new, "active", "passing").await?;
    wait_for_registration(&registrar, &old, "standby", "passing").await?;
    assert!(registrar.changes() >= 4, "{} registration changes", registrar.changes());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_writes_and_reads_a_secret_on_the_active_node_through_envoys_307() -> Result<()> {
    let cluster = openbao::shared().await?;
    let stack = BaoStack::consul(&cluster).await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let url = stack.envoy.url("/v1/secret/data/clients/curl");
    let token = format!("X-Vault-Token: {}", cluster.root_token());
    let client_ip = CLIENT_IP.to_string();
    let body = r#"{"data":{"user":"app","password":"p@ss w0rd/é"}}"#;
    let (written, trailer) =
        curl_post_json(&["--interface", &client_ip], &url, &token, body).await?;
    let target = cluster.node(&active)?.url("/v1/secret/data/clients/curl");
    assert_eq!(trailer, format!("1 {target} 200"), "{written}");
    assert_eq!(written["data"]["version"], 1, "{written}");

    let (out, _) = curl(&[
        "--interface",
        &client_ip,
        "--location",
        "--header",
        &token,
        &format!("{url}?version=1"),
    ])
    .await?;
    let read: Value = serde_json::from_str(&out)?;
    assert_eq!(read["data"]["data"], json!({"user": "app", "password": "p@ss w0rd/é"}));

    let secret = [("user", "app"), ("password", "p@ss w0rd/é")];
    assert_wrote_and_read_on(
        &cluster,
        &active,
        "secret/data/clients/curl",
        Some(&client_ip),
        &secret,
    )
    .await?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_hvac_bound_to_its_own_address_writes_and_reads_on_the_active_node() -> Result<()> {
    let cluster = openbao::shared().await?;
    let stack = BaoStack::consul(&cluster).await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let secret = json!({"key": "v1", "n": 7});
    let client = Some(IpAddr::V4(CLIENT_IP));
    let out =
        clients::hvac(&stack.envoy.url(""), cluster.root_token(), client, "clients/hvac", &secret)
            .await?;
    assert_eq!((out.version, &out.read), (1, &secret), "{out:?}");
    // sys/leader went through the 307 too, and the active node answered it itself.
    let leader = out.leader.as_ref().context("hvac read no sys/leader")?;
    assert_eq!(leader["is_self"], json!(true), "{leader}");
    assert_eq!(leader["leader_address"], json!(cluster.api_addr(&active)?));
    assert_eq!(out.redirects, Some(3), "each call followed Envoy's 307: {out:?}");

    assert_wrote_and_read_on(
        &cluster,
        &active,
        "secret/data/clients/hvac",
        Some(&CLIENT_IP.to_string()),
        &[("key", "v1")],
    )
    .await?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_vaultrs_bound_to_its_own_address_writes_and_reads_on_the_active_node() -> Result<()> {
    let cluster = openbao::shared().await?;
    let stack = BaoStack::consul(&cluster).await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let data = json!({"url": "postgres://db", "pool": 5});
    let client = Some(IpAddr::V4(CLIENT_IP));
    let out = clients::vaultrs(
        &stack.envoy.url(""),
        cluster.root_token(),
        client,
        "clients/vaultrs",
        &data,
    )
    .await?;
    assert_eq!((out.version, &out.read), (1, &data), "{out:?}");
    assert_eq!(out.redirects, Some(2), "each call followed Envoy's 307: {out:?}");

    assert_wrote_and_read_on(
        &cluster,
        &active,
        "secret/data/clients/vaultrs",
        Some(&CLIENT_IP.to_string()),
        &[("url", "postgres://db")],
    )
    .await?;
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bao_cli_writes_and_reads_a_secret_on_the_active_node_through_envoys_307() -> Result<()>
{
    let cluster = openbao::shared().await?;
    let stack = BaoStack::consul(&cluster).await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let home = cluster.dir().join("cli-home");
    let (addr, token) = (stack.envoy.url(""), cluster.root_token());
    // Told not to follow redirects, the CLI fails on Envoy's 307 (its KV preflight gets no
    // answer it can read: "nil response from pre-flight request") and writes nothing: the
    // proxy-mode tests rely on this to show that no 307 ever reached it.
    let refused =
        clients::bao_cli(&home, &addr, token, false, "clients/bao-refused", &[("a", "b")]).await;
    assert!(refused.is_err(), "the CLI followed or ignored the 307: {refused:?}");
    let pairs = [("user", "cli"), ("pin", "0042")];
    let out = clients::bao_cli(&home, &addr, token, true, "clients/bao", &pairs).await?;
    assert_eq!(out.version, 1, "{out:?}");
    assert_eq!(out.read, json!({"user": "cli", "pin": "0042"}), "{out:?}");

    // The Go client connects from 127.0.0.1: still not Envoy's address (127.0.0.5).
    assert_wrote_and_read_on(
        &cluster,
        &active,
        "secret/data/clients/bao",
        Some("127.0.0.1"),
        &pairs,
    )
    .await?;
    for node in cluster.nodes() {
        let there = cluster.audit_for(&node.name, "secret/data/clients/bao-refused")?;
        assert!(there.is_empty(), "{} logged the refused write: {there:#?}", node.name);
    }
    stack.assert_no_failures()
}

/// With `stack` in front of the shared cluster, runs `fault` on the active node
/// (it returns the node that is active afterwards), waits until Envoy's `Location` names that
/// node, checks every answer Envoy gave meanwhile ([`FailoverProbe`]) and prints the figures.
/// Returns the stack, the old and the new active node.
async fn failover(
    cluster: &mut OpenBaoCluster,
    stack: BaoStack,
    fault: &str,
    run: impl AsyncFnOnce(&mut OpenBaoCluster, &str) -> Result<String>,
) -> Result<(BaoStack, String, String)> {
    let old = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let probe = FailoverProbe::start(&stack, cluster, &old)?;
    probe.observe(5).await?;
    let began = Instant::now();
    let new = run(cluster, &old).await?;
    stack.wait_for_location(cluster, &new, Duration::from_secs(30)).await?;
    let moved_after = began.elapsed();
    probe.observe(20).await?;
    let (samples, no_active) = probe.check(cluster, &new)?;
    eprintln!(
        "openbao: {fault}: {old} -> {new}; Envoy's Location named {new} {moved_after:?} after \
         the fault began; {samples} samples, {no_active} of them 503"
    );
    stack.assert_no_failures()?;
    Ok((stack, old, new))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_step_down_the_location_follows_the_new_active_node() -> Result<()> {
    let mut cluster = openbao::shared().await?;
    // Raft may hand the lock straight back to the node that stepped down: step down again.
    let stack = BaoStack::consul(&cluster).await?;
    failover(&mut cluster, stack, "step-down", async |c, _| Ok(c.step_down_until_moved(5).await?.1))
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_active_node_is_sealed_the_location_follows_the_new_active_node() -> Result<()> {
    let mut cluster = openbao::shared().await?;
    let stack = BaoStack::consul(&cluster).await?;
    failover(&mut cluster, stack, "seal", async |c, old| {
        c.seal(old).await?;
        c.wait_for_active(Duration::from_secs(30)).await
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_active_node_is_killed_the_location_follows_the_new_active_node() -> Result<()> {
    let mut cluster = openbao::shared().await?;
    let stack = BaoStack::consul(&cluster).await?;
    let (stack, old, _) = failover(&mut cluster, stack, "SIGKILL", async |c, old| {
        c.kill(old)?;
        c.wait_for_active(Duration::from_secs(30)).await
    })
    .await?;
    // (How long this takes varies: Raft elects within about 3 s here, but a node that
    // stepped down within the last 10 s does not compete for the lock until those 10 s have
    // passed, even as Raft leader: Vault's runStandby sleeps manualStepDownSleepPeriod. Until the new node registers, Consul still says the dead
    // node is active, and once its check's TTL has passed, that there is none.)
    // Nobody re-tags a dead node: it stays tagged active until its sealed check's TTL
    // passes without a heartbeat, as with Vault's own registration.
    wait_for_registration(stack.registrar()?, &old, "active", "critical").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_answers_nothing_until_resumed_and_a_restarted_node_rejoins_unsealed(
) -> Result<()> {
    let mut cluster = openbao::shared().await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let standby = cluster.nodes().iter().find(|n| n.name != active).context("no standby")?;
    let standby = standby.name.clone();
    cluster.pause(&standby).await?;
    let paused = cluster.health(&standby).await;
    assert!(paused.is_err(), "a stopped node answered: {paused:?}");
    cluster.resume(&standby)?;
    cluster.wait_for_code(&standby, &[429], Duration::from_secs(30)).await?;

    let began = Instant::now();
    cluster.restart(&standby).await?;
    eprintln!("openbao: restart and unseal of a standby took {:?}", began.elapsed());
    assert_eq!(cluster.health(&standby).await?.code, 429);
    // It still holds the data written before the restart, and serves it.
    let read = cluster.call(&standby, "GET", "secret/data/harness/ready", None).await?;
    assert_eq!(read["data"]["data"], json!({"ok": true}), "{read}");
    cluster.wait_for_voters(Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_https_with_the_generated_ca_and_names_https_leaders() -> Result<()> {
    let cluster =
        OpenBaoCluster::start(ClusterOptions { tls: true, ..ClusterOptions::default() }).await?;
    eprintln!("openbao: TLS cluster formed in {:?}", cluster.formed_in());
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
    let api_addr = cluster.api_addr(&active)?;
    assert!(api_addr.starts_with("https://127.0.0."), "{api_addr}");
    let standby = cluster.nodes().iter().find(|n| n.name != active).context("no standby")?;
    let leader = cluster.call(&standby.name, "GET", "sys/leader", None).await?;
    assert_eq!(leader["leader_address"], json!(api_addr), "{leader}");
    // A client that trusts the generated CA (and nothing else) talks to it.
    let ca = cluster.ca_file().context("a TLS cluster without a CA file")?;
    let (out, _) =
        curl(&["--cacert", &ca.display().to_string(), &format!("{api_addr}/v1/sys/health")])
            .await?;
    let health: Value = serde_json::from_str(&out)?;
    assert_eq!(health["standby"], json!(false), "{health}");
    // One that does not, fails.
    let untrusted = curl(&[&format!("{api_addr}/v1/sys/health")]).await;
    assert!(untrusted.is_err(), "curl trusted the test CA without --cacert: {untrusted:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_was_never_initialised_answers_501_and_dies_with_its_handle() -> Result<()> {
    let node = openbao::BaoNode::start_uninitialised(std::net::Ipv4Addr::new(127, 0, 0, 6)).await?;
    let url = node.url("/v1/sys/health");
    let health = openbao::probe_health(&vault_redirect_e2e::client()?, &url).await?;
    assert_eq!(health.code, 501, "{:?}", health.body);
    assert_eq!(health.body["initialized"], json!(false));
    drop(node);
    let gone = openbao::probe_health(&vault_redirect_e2e::client()?, &url).await;
    assert!(gone.is_err(), "the node still answers after its handle dropped: {gone:?}");
    Ok(())
}

/// The poller on the vault source, probing every node of `cluster` and the `extra` URLs, with
/// real Envoy in front; waits until Envoy redirects to the active node.
async fn vault_stack(cluster: &OpenBaoCluster, extra: &[String]) -> Result<BaoStack> {
    let mut args: Vec<String> = ["--source", "vault", "--vault-probe-interval", "100ms"]
        .into_iter()
        .chain(QUICK_POLLER.iter().copied())
        .map(str::to_string)
        .collect();
    for node in cluster.nodes().iter().map(|n| n.api_addr()).chain(extra.iter().cloned()) {
        args.extend(["--vault-node".to_string(), node]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The Consul address is never used with --source vault.
    let poller = Poller::start("http://127.0.0.1:1", &args).await?;
    BaoStack::around(cluster, None, poller).await
}

/// The poller's state document now.
async fn active_doc(stack: &BaoStack) -> Result<Value> {
    let url = format!("http://{}/v1/active", stack.poller.addr);
    Ok(vault_redirect_e2e::client()?.get(&url).send().await?.json().await?)
}

/// A port on 127.0.0.1 that answers every request with a 200 that is not Vault's, until the
/// returned task is aborted.
async fn garbage_port() -> Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        }
    });
    Ok((url, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_source_redirects_to_the_active_node_and_follows_a_step_down() -> Result<()> {
    let mut cluster = openbao::shared().await?;
    // Beside the cluster: a node never initialised, a port that refuses, one that answers
    // garbage. None may ever be a target; the status shows each as it is.
    let uninit = openbao::BaoNode::start_uninitialised(Ipv4Addr::new(127, 0, 0, 7)).await?;
    let refused = format!("http://{}", vault_redirect_e2e::free_addr()?);
    let (garbage, garbage_task) = garbage_port().await?;
    let extra = [uninit.api_addr(), refused, garbage];
    let stack = vault_stack(&cluster, &extra).await?;
    let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;

    let status: Value = vault_redirect_e2e::client()?
        .get(format!("http://{}/v1/status", stack.poller.addr))
        .send()
        .await?
        .json()
        .await?;
    let rows = status["nodes"].as_array().context("no nodes in the status")?;
    let checks: Vec<&str> =
        rows.iter().map(|r| r["checks"][0]["status"].as_str().unwrap_or("")).collect();
    let expected: Vec<&str> = cluster
        .nodes()
        .iter()
        .map(|n| if n.name == active { "200 active" } else { "429 standby" })
        .chain(["501 not initialized", "no answer", "200 (not Vault's answer)"])
        .collect();
    assert_eq!(checks, expected, "{status:#}");
    assert_eq!(status["source"], "vault");
    assert!(rows[3..].iter().all(|r| r["active"] == false), "{status:#}");

    // Versions come from the Raft committed index (docs/architecture.md): the high bits are
    // an index the cluster has reached, and an election moves them up.
    let doc_before = active_doc(&stack).await?;
    let (index, version) = (doc_before["consul_index"].as_u64(), doc_before["version"].as_u64());
    let (Some(index), Some(version)) = (index, version) else { bail!("{doc_before}") };
    assert!(index > 0 && version >> 16 > 0 && version >> 16 <= index, "{doc_before}");

    let (stack, old, new) =
        failover(&mut cluster, stack, "vault source, step-down", async |c, _| {
            Ok(c.step_down_until_moved(5).await?.1)
        })
        .await?;
    assert_ne!(old, new);
    let doc_after = active_doc(&stack).await?;
    let after = doc_after["version"].as_u64().context("no version")?;
    assert!(after >> 16 > version >> 16, "{doc_before} then {doc_after}");
    garbage_task.abort();
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vault_source_keeps_a_frozen_active_node_until_another_answers_200() -> Result<()> {
    let mut cluster = openbao::shared().await?;
    let stack = vault_stack(&cluster, &[]).await?;
    // SIGSTOP: the node keeps its sockets and answers nothing; the standbys name it until
    // Raft elects another leader, so the poller keeps it (it may be active behind a partition)
    // and moves as soon as another node answers 200. Resumed, the old node must not come
    // back: the new leader's Raft committed index is higher.
    let (stack, old, new) =
        failover(&mut cluster, stack, "vault source, SIGSTOP", async |c, old| {
            c.pause(old).await?;
            let new = c.wait_for_active(Duration::from_secs(60)).await?;
            c.resume(old)?;
            Ok(new)
        })
        .await?;
    assert_ne!(old, new);
    stack.assert_no_failures()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_node_sealed_the_vault_source_answers_503_with_retry_after_and_vaults_json(
) -> Result<()> {
    let mut cluster = openbao::shared().await?;
    let stack = vault_stack(&cluster, &[]).await?;
    // Only an active node can be sealed through the API: restart every node, which comes up
    // sealed, as every Vault does.
    let names: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    for name in &names {
        cluster.kill(name)?;
    }
    for name in &names {
        cluster.start_sealed(name).await?;
    }
    let url = stack.envoy.url(PROBE_PATH);
    let http = vault_redirect_e2e::client()?;
    let (headers, body) =
        wait_for("Envoy's 503 for a sealed cluster", Duration::from_secs(30), || async {
            let r = http.get(&url).send().await.ok()?;
            if r.status() != 503 {
                return None;
            }
            let headers = r.headers().clone();
            let body: Value = r.json().await.ok()?;
            body.to_string().contains("every Vault node is sealed").then_some((headers, body))
        })
        .await?;
    assert_eq!(headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert_eq!(body, json!({"errors": ["no active Vault node: every Vault node is sealed"]}));
    stack.assert_no_failures()
}

//! A real OpenBao HA cluster (three `bao server` nodes on Raft, tests/src/openbao.rs) behind
//! the project: the registrar mirrors its elections into the Consul double the way Vault's
//! Consul registration does, the real poller follows them through its Consul source, and
//! real clients go through real Envoy's 307 to the real active node. Every assertion about
//! where a request landed is read from the nodes' own audit logs.
//!
//! The tests share one cluster (forming one takes seconds) and take turns on it; each turn
//! starts by healing what the previous test broke.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use vault_redirect_e2e::openbao;

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

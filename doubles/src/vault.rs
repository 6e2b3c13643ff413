//! Vault node doubles: one small HTTP server per node of an HA cluster, answering where Vault
//! clients touch a node (vault: website/content/api-docs/system/health.mdx, system/leader.mdx,
//! secret/kv/kv-v2.mdx; http/sys_health.go, http/sys_leader.go, http/handler.go).
//!
//! It owns the cluster's roles (which node is active, which are sealed), one KV v2 store shared
//! by every node (Vault HA nodes share their storage), the tokens it accepts, and a record of
//! every request each node received, for tests to assert on. It must never invent behaviour
//! Vault does not have: every status, body and header here names its upstream source.
//!
//! What a node answers:
//! - `GET`/`HEAD /v1/sys/health` (no token): 200 active, 429 standby, 473 performance
//!   standby, 501 not initialized, 503 sealed, with the `standbyok`, `perfstandbyok`,
//!   `activecode`, `standbycode`, `drsecondarycode`, `performancestandbycode`, `sealedcode`,
//!   `uninitcode` overrides; `HEAD` gives the status only.
//! - `GET /v1/sys/leader` (no token).
//! - KV v2 at `secret/`: `POST`/`PUT /v1/secret/data/<path>` writes a version (with `cas`),
//!   `GET /v1/secret/data/<path>[?version=N]` reads one; both need a known `X-Vault-Token`,
//!   else `403 {"errors":["permission denied"]}`.
//! - On a standby, any other request is **forwarded** to the active node, as Vault does by
//!   default: the client gets the active node's answer from the standby, the standby records
//!   the request, and the active records it with `forwarded_from` set. With the
//!   `X-Vault-No-Request-Forwarding` header the standby answers `307` to the active node's
//!   `api_addr` + path + raw query instead (`respondStandby`), or 503 without an active node.
//!   A performance standby is treated like a standby (it forwards reads too).
//! - On a sealed node, everything but `sys/health` is `503 {"errors":["Vault is sealed"]}`.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::consul::{Role, VaultNode};

/// The version the doubles report, in Vault's `VersionNumber()` form.
pub const VAULT_VERSION: &str = "1.17.2";
/// The cluster name Vault generates at init (`vault-cluster-<8 hex>`).
const CLUSTER_NAME: &str = "vault-cluster-5e1d0c1a";
const CLUSTER_ID: &str = "b1f8e1c3-7c2e-4a7e-9d2b-3f6a1c0e5d42";
/// Vault's client token header (http/handler.go `AuthHeaderName`).
const TOKEN_HEADER: &str = "x-vault-token";
/// Disables request forwarding on a standby (http/handler.go `NoRequestForwardingHeaderName`).
const NO_FORWARDING_HEADER: &str = "x-vault-no-request-forwarding";

/// One request as a node received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The method, as sent.
    pub method: String,
    /// The path, as sent (not decoded).
    pub path: String,
    /// The raw query, without `?`.
    pub query: Option<String>,
    /// Every header, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
    /// The TCP peer; for a forwarded request, the client of the standby that forwarded it.
    pub peer: SocketAddr,
    /// For a request a standby forwarded to this node: that standby's name.
    pub forwarded_from: Option<String>,
    /// The server name (SNI) the client's TLS handshake asked for; `None` over plain http,
    /// or when the client sent none (clients send no IP address as SNI).
    pub sni: Option<String>,
}

impl Received {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

struct Node {
    name: String,
    addr: SocketAddr,
    role: Role,
    sealed: bool,
    initialized: bool,
    /// When this node last became active (`active_time` of sys/leader).
    active_since: Option<SystemTime>,
    received: Vec<Received>,
}

impl Node {
    /// Active and able to serve: unsealed, initialized, tagged active.
    fn serving_active(&self) -> bool {
        self.role == Role::Active && !self.sealed && self.initialized
    }
}

struct KvVersion {
    data: Value,
    created: SystemTime,
}

struct Inner {
    nodes: Vec<Node>,
    tokens: HashSet<String>,
    kv: BTreeMap<String, Vec<KvVersion>>,
    scheme: &'static str,
}

impl Inner {
    fn active(&self) -> Option<&Node> {
        self.nodes.iter().find(|n| n.serving_active())
    }

    fn api_addr(&self, node: &Node) -> String {
        format!("{}://{}", self.scheme, node.addr)
    }

    fn cluster_addr(&self, node: &Node) -> String {
        // Vault's cluster port is the api port + 1 by convention (8200 → 8201).
        format!("https://{}:{}", node.addr.ip(), node.addr.port().wrapping_add(1))
    }
}

struct Shared {
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock can only come from a failing test; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A Vault HA cluster of doubles, each node on its own loopback address. Dropping it stops
/// every node and closes every open connection.
pub struct VaultCluster {
    shared: Arc<Shared>,
    servers: Vec<JoinHandle<()>>,
}

/// Binds a node's listener: `127.0.0.<2 + i>` on a free port, or a free port of 127.0.0.1
/// where other loopback addresses cannot be bound (not every OS routes all of 127.0.0.0/8).
async fn bind_node(i: usize) -> std::io::Result<TcpListener> {
    let own = u8::try_from(i + 2).ok().filter(|o| *o < 255);
    if let Some(octet) = own {
        if let Ok(l) = TcpListener::bind(SocketAddr::from(([127, 0, 0, octet], 0))).await {
            return Ok(l);
        }
    }
    TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
}

impl VaultCluster {
    /// Starts one node per `(name, role)`, unsealed and initialized, over plain http.
    pub async fn start(nodes: &[(&str, Role)]) -> std::io::Result<VaultCluster> {
        Self::start_with(nodes, None).await
    }

    /// vault-a active, vault-b and vault-c standby.
    pub async fn start_three() -> std::io::Result<VaultCluster> {
        Self::start(&[
            ("vault-a", Role::Active),
            ("vault-b", Role::Standby),
            ("vault-c", Role::Standby),
        ])
        .await
    }

    /// Like [`VaultCluster::start`], serving https (HTTP/1.1 and h2 by ALPN) with the PEM
    /// chain and key given; `api_addr` and `leader_address` then start with `https://`.
    pub async fn start_tls(
        nodes: &[(&str, Role)],
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<VaultCluster> {
        // Vault's listener offers h2 and HTTP/1.1 by ALPN.
        let acceptor = crate::tls::acceptor(cert_chain_pem, key_pem, &[b"h2", b"http/1.1"])?;
        Self::start_with(nodes, Some(acceptor)).await
    }

    async fn start_with(
        roles: &[(&str, Role)],
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<VaultCluster> {
        let mut listeners = Vec::new();
        let mut nodes = Vec::new();
        let now = SystemTime::now();
        for (i, (name, role)) in roles.iter().enumerate() {
            let listener = bind_node(i).await?;
            nodes.push(Node {
                name: name.to_string(),
                addr: listener.local_addr()?,
                role: *role,
                sealed: false,
                initialized: true,
                active_since: (*role == Role::Active).then_some(now),
                received: Vec::new(),
            });
            listeners.push(listener);
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let inner = Inner { nodes, tokens: HashSet::new(), kv: BTreeMap::new(), scheme };
        let shared = Arc::new(Shared { inner: Mutex::new(inner) });
        let servers = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| tokio::spawn(serve(l, shared.clone(), i, tls.clone())))
            .collect();
        Ok(VaultCluster { shared, servers })
    }

    fn index(inner: &Inner, name: &str) -> Option<usize> {
        inner.nodes.iter().position(|n| n.name == name)
    }

    /// The nodes as Vault's Consul service registration shows them (address and port of each
    /// node's `api_addr`, its role and seal state), for [`crate::ConsulDouble::start`].
    pub fn consul_nodes(&self) -> Vec<VaultNode> {
        let inner = self.shared.lock();
        inner
            .nodes
            .iter()
            .map(|n| {
                let mut v =
                    VaultNode::new(&n.name, &n.addr.ip().to_string(), n.addr.port(), n.role);
                v.sealed = n.sealed;
                v.initialized = n.initialized;
                v
            })
            .collect()
    }

    /// Where node `name` listens.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        let inner = self.shared.lock();
        Self::index(&inner, name).map(|i| inner.nodes[i].addr)
    }

    /// Node `name`'s `api_addr`: `http://ip:port` (or https).
    pub fn api_addr(&self, name: &str) -> Option<String> {
        let inner = self.shared.lock();
        Self::index(&inner, name).map(|i| inner.api_addr(&inner.nodes[i]))
    }

    /// Makes `name` the active node and every other active node a standby, as an HA
    /// election does (performance standbys stay performance standbys).
    pub fn set_active(&self, name: &str) {
        let mut inner = self.shared.lock();
        let now = SystemTime::now();
        for n in inner.nodes.iter_mut() {
            if n.name == name {
                if n.role != Role::Active {
                    n.active_since = Some(now);
                }
                n.role = Role::Active;
            } else if n.role == Role::Active {
                n.role = Role::Standby;
                n.active_since = None;
            }
        }
    }

    /// No node is active (an election in progress): every node a standby.
    pub fn set_no_active(&self) {
        let mut inner = self.shared.lock();
        for n in inner.nodes.iter_mut().filter(|n| n.role == Role::Active) {
            n.role = Role::Standby;
            n.active_since = None;
        }
    }

    /// Seals or unseals `name`. A sealed node keeps its role flag but serves nothing.
    pub fn set_sealed(&self, name: &str, sealed: bool) {
        let mut inner = self.shared.lock();
        if let Some(i) = Self::index(&inner, name) {
            inner.nodes[i].sealed = sealed;
        }
    }

    /// Marks `name` initialized or not (`sys/health` 501).
    pub fn set_initialized(&self, name: &str, initialized: bool) {
        let mut inner = self.shared.lock();
        if let Some(i) = Self::index(&inner, name) {
            inner.nodes[i].initialized = initialized;
        }
    }

    /// Accepts `token` as a client token with every capability.
    pub fn add_token(&self, token: &str) {
        self.shared.lock().tokens.insert(token.to_string());
    }

    /// Every request node `name` received so far, oldest first.
    pub fn received(&self, name: &str) -> Vec<Received> {
        let inner = self.shared.lock();
        Self::index(&inner, name).map(|i| inner.nodes[i].received.clone()).unwrap_or_default()
    }

    /// Forgets every recorded request.
    pub fn clear_received(&self) {
        for n in self.shared.lock().nodes.iter_mut() {
            n.received.clear();
        }
    }

    /// The latest version's data of the KV v2 secret at `path` (under `secret/`).
    pub fn secret(&self, path: &str) -> Option<Value> {
        self.shared.lock().kv.get(path).and_then(|v| v.last()).map(|v| v.data.clone())
    }

    /// Stops every node and waits until their ports are closed.
    pub async fn shutdown(mut self) {
        for s in self.servers.drain(..) {
            s.abort();
            let _ = s.await;
        }
    }
}

impl Drop for VaultCluster {
    fn drop(&mut self) {
        for s in &self.servers {
            s.abort();
        }
    }
}

/// A Vault node's listener: HTTP/1.1 and h2 (prior knowledge, or ALPN over TLS); each
/// connection's router knows its peer, for the record of requests.
async fn serve(listener: TcpListener, shared: Arc<Shared>, node: usize, tls: Option<TlsAcceptor>) {
    crate::serve::accept_loop(
        listener,
        tls,
        crate::serve::Protocols::Http1AndH2,
        "vault double",
        move |peer, sni| {
            Router::new().fallback(handle).with_state(NodeCtx {
                shared: shared.clone(),
                node,
                peer,
                sni,
            })
        },
    )
    .await;
}

#[derive(Clone)]
struct NodeCtx {
    shared: Arc<Shared>,
    node: usize,
    peer: SocketAddr,
    sni: Option<String>,
}

/// Vault's error shape (http/handler.go `respondError`): `{"errors":[...]}`, JSON.
fn error(status: StatusCode, messages: &[&str]) -> Response {
    json_response(status, &json!({ "errors": messages }))
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut text = body.to_string();
    // Go's json.Encoder ends every document with a newline.
    text.push('\n');
    let mut r = (status, text).into_response();
    r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    r
}

fn record(inner: &mut Inner, node: usize, req: &Request, forwarded_from: Option<String>) {
    if let Some(n) = inner.nodes.get_mut(node) {
        n.received.push(Received {
            method: req.method.to_string(),
            path: req.uri.path().to_string(),
            query: req.uri.query().map(str::to_string),
            headers: req
                .headers
                .iter()
                .map(|(k, v)| {
                    (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                })
                .collect(),
            body: req.body.to_vec(),
            peer: req.peer,
            forwarded_from,
            sni: req.sni.clone(),
        });
    }
}

struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    peer: SocketAddr,
    sni: Option<String>,
}

async fn handle(
    State(ctx): State<NodeCtx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Request { method, uri, headers, body, peer: ctx.peer, sni: ctx.sni };
    let mut response = {
        let mut inner = ctx.shared.lock();
        record(&mut inner, ctx.node, &req, None);
        route(&mut inner, ctx.node, &req)
    };
    // Vault marks every API answer uncacheable (http/handler.go wrapGenericHandler).
    response.headers_mut().insert("cache-control", HeaderValue::from_static("no-store"));
    response
}

fn route(inner: &mut Inner, node: usize, req: &Request) -> Response {
    match req.uri.path() {
        "/v1/sys/health" => return sys_health(inner, node, req),
        "/v1/sys/leader" => return sys_leader(inner, node, req),
        _ => {}
    }
    let (sealed, role, initialized) = match inner.nodes.get(node) {
        Some(n) => (n.sealed, n.role, n.initialized),
        None => return error(StatusCode::INTERNAL_SERVER_ERROR, &["no such node"]),
    };
    if !initialized {
        return error(StatusCode::BAD_REQUEST, &["Vault is not initialized"]);
    }
    if sealed {
        return error(StatusCode::SERVICE_UNAVAILABLE, &["Vault is sealed"]);
    }
    if role == Role::Active {
        return logical(inner, req);
    }
    // A standby (http/handler.go handleRequestForwarding / respondStandby).
    let no_forwarding = req.headers.get(NO_FORWARDING_HEADER).is_some_and(|v| !v.is_empty());
    let active = inner.active().map(|a| (inner.api_addr(a), a.name.clone()));
    let active_index = inner.nodes.iter().position(|n| n.serving_active());
    match (no_forwarding, active, active_index) {
        (true, Some((api_addr, _)), _) => {
            let mut location = format!("{api_addr}{}", req.uri.path());
            if let Some(q) = req.uri.query() {
                location.push('?');
                location.push_str(q);
            }
            let mut r = StatusCode::TEMPORARY_REDIRECT.into_response();
            if let Ok(v) = HeaderValue::from_str(&location) {
                r.headers_mut().insert("location", v);
            }
            r
        }
        (true, None, _) => {
            error(StatusCode::SERVICE_UNAVAILABLE, &["no active Vault instance found"])
        }
        (false, Some((_, _)), Some(active)) => {
            let from = inner.nodes.get(node).map(|n| n.name.clone());
            record(inner, active, req, from);
            logical(inner, req)
        }
        (false, _, _) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &["local node not active but active cluster node not found"],
        ),
    }
}

/// `sys/health` (http/sys_health.go): overrides parsed first, a bad one is a 400; then the
/// status by the first match of not initialized, sealed, performance standby, standby.
fn sys_health(inner: &Inner, node: usize, req: &Request) -> Response {
    if req.method != Method::GET && req.method != Method::HEAD {
        return error(StatusCode::METHOD_NOT_ALLOWED, &[]);
    }
    let Some(n) = inner.nodes.get(node) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &[]);
    };
    let params: Vec<(String, String)> = form_pairs(req.uri.query().unwrap_or(""));
    // Go's url.Values lookup: the first value of a repeated key.
    let first = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let flag = |key: &str| -> Result<bool, ()> {
        match first(key) {
            None => Ok(false),
            Some(v) => go_parse_bool(v).ok_or(()),
        }
    };
    let code = |key: &str, default: u16| -> Result<u16, ()> {
        match first(key) {
            None => Ok(default),
            // strconv.Atoi; net/http then refuses codes outside 100..=999 (a real Vault
            // would panic in WriteHeader; the double answers 400 instead).
            Some(v) => v.parse::<u16>().ok().filter(|c| (100..=999).contains(c)).ok_or(()),
        }
    };
    let parsed = (|| -> Result<_, ()> {
        Ok((
            flag("standbyok")?,
            flag("perfstandbyok")?,
            code("uninitcode", 501)?,
            code("sealedcode", 503)?,
            code("standbycode", 429)?,
            code("activecode", 200)?,
            code("drsecondarycode", 472)?,
            code("performancestandbycode", 473)?,
        ))
    })();
    let Ok((
        standby_ok,
        perf_standby_ok,
        uninit,
        sealed_code,
        standby_code,
        active_code,
        _dr,
        perf_code,
    )) = parsed
    else {
        return error(StatusCode::BAD_REQUEST, &[]);
    };
    // A sealed node reports itself a standby, as Vault's core does until it is unsealed.
    let standby = n.role != Role::Active || n.sealed;
    let perf_standby = n.role == Role::PerfStandby && !n.sealed;
    let status = if !n.initialized {
        uninit
    } else if n.sealed {
        sealed_code
    } else if perf_standby {
        if perf_standby_ok {
            active_code
        } else {
            perf_code
        }
    } else if standby {
        if standby_ok {
            active_code
        } else {
            standby_code
        }
    } else {
        active_code
    };
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if req.method == Method::HEAD {
        let mut r = status.into_response();
        r.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        return r;
    }
    let mut body = json!({
        "initialized": n.initialized,
        "sealed": n.sealed,
        "standby": standby,
        "performance_standby": perf_standby,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": unix_seconds(SystemTime::now()),
        "version": VAULT_VERSION,
    });
    if !n.sealed {
        body["cluster_name"] = json!(CLUSTER_NAME);
        body["cluster_id"] = json!(CLUSTER_ID);
    }
    json_response(status, &body)
}

/// `sys/leader` (http/sys_leader.go, vault/api sys_leader.go `LeaderResponse`).
fn sys_leader(inner: &Inner, node: usize, req: &Request) -> Response {
    if req.method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED, &[]);
    }
    let Some(n) = inner.nodes.get(node) else {
        return error(StatusCode::INTERNAL_SERVER_ERROR, &[]);
    };
    if n.sealed {
        // core.GetLeaderStatus fails with ErrSealed, which respondError turns into a 503.
        return error(StatusCode::SERVICE_UNAVAILABLE, &["Vault is sealed"]);
    }
    let active = inner.active();
    let is_self = n.serving_active();
    let active_time =
        if is_self { n.active_since.map(rfc3339).unwrap_or_else(zero_time) } else { zero_time() };
    json_response(
        StatusCode::OK,
        &json!({
            "ha_enabled": true,
            "is_self": is_self,
            "active_time": active_time,
            "leader_address": active.map(|a| inner.api_addr(a)).unwrap_or_default(),
            "leader_cluster_address": active.map(|a| inner.cluster_addr(a)).unwrap_or_default(),
            "performance_standby": n.role == Role::PerfStandby,
            "performance_standby_last_remote_wal": 0,
        }),
    )
}

/// Requests that reach Vault's logical router: a token is required first.
fn logical(inner: &mut Inner, req: &Request) -> Response {
    let token = req.headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
    if token.is_empty() || !inner.tokens.contains(token) {
        return error(StatusCode::FORBIDDEN, &["permission denied"]);
    }
    let path = req.uri.path();
    let Some(key) = path.strip_prefix("/v1/secret/data/").filter(|k| !k.is_empty()) else {
        let route = path.strip_prefix("/v1/").unwrap_or(path);
        return error(
            StatusCode::NOT_FOUND,
            &[&format!("no handler for route \"{route}\". route entry not found.")],
        );
    };
    let key = key.to_string();
    match req.method.as_str() {
        "GET" => kv_read(inner, &key, req.uri.query().unwrap_or("")),
        "POST" | "PUT" => kv_write(inner, &key, &req.body),
        _ => error(StatusCode::METHOD_NOT_ALLOWED, &["unsupported operation"]),
    }
}

/// The generic response envelope (sdk/logical HTTPResponse) around `data`.
fn envelope(data: Value) -> Value {
    json!({
        "request_id": request_id(),
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": null,
        "auth": null,
        "mount_type": "kv",
    })
}

fn version_metadata(created: SystemTime, version: usize) -> Value {
    json!({
        "created_time": rfc3339(created),
        "custom_metadata": null,
        "deletion_time": "",
        "destroyed": false,
        "version": version,
    })
}

/// Create/Update Secret (kv-v2.mdx): `{"options":{"cas":N}, "data":{...}}`.
fn kv_write(inner: &mut Inner, key: &str, body: &[u8]) -> Response {
    let parsed: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) if !body.is_empty() => {
            return error(StatusCode::BAD_REQUEST, &[&format!("failed to parse JSON input: {e}")]);
        }
        Err(_) => Value::Null,
    };
    let Some(data) = parsed.get("data").filter(|d| d.is_object()).cloned() else {
        return error(StatusCode::BAD_REQUEST, &["no data provided"]);
    };
    let versions = inner.kv.entry(key.to_string()).or_default();
    if let Some(cas) = parsed.get("options").and_then(|o| o.get("cas")) {
        if cas.as_u64() != Some(versions.len() as u64) {
            return error(
                StatusCode::BAD_REQUEST,
                &["check-and-set parameter did not match the current version"],
            );
        }
    }
    let created = SystemTime::now();
    versions.push(KvVersion { data, created });
    json_response(StatusCode::OK, &envelope(version_metadata(created, versions.len())))
}

/// Read Secret Version (kv-v2.mdx); an unknown path or version is `404 {"errors":[]}`.
fn kv_read(inner: &Inner, key: &str, query: &str) -> Response {
    let Some(versions) = inner.kv.get(key).filter(|v| !v.is_empty()) else {
        return error(StatusCode::NOT_FOUND, &[]);
    };
    let wanted = form_pairs(query).into_iter().find(|(k, _)| k == "version").map(|(_, v)| v);
    let number = match wanted.as_deref() {
        None | Some("") | Some("0") => versions.len(),
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => {
                return error(StatusCode::BAD_REQUEST, &[&format!("invalid version \"{v}\"")])
            }
        },
    };
    let Some(version) = number.checked_sub(1).and_then(|i| versions.get(i)) else {
        return error(StatusCode::NOT_FOUND, &[]);
    };
    json_response(
        StatusCode::OK,
        &envelope(
            json!({ "data": version.data, "metadata": version_metadata(version.created, number) }),
        ),
    )
}

/// `application/x-www-form-urlencoded` pairs, decoded (Go's `url.ParseQuery`).
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

/// Go's `strconv.ParseBool` (what `parseutil.ParseBool` does with a string).
fn go_parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Go's zero `time.Time` as JSON, which Vault sends for `active_time` on a standby.
fn zero_time() -> String {
    "0001-01-01T00:00:00Z".to_string()
}

/// RFC 3339 with nanoseconds, UTC, as Go's `time.Time` marshals.
fn rfc3339(t: SystemTime) -> String {
    // jiff's Display is Go's RFC3339Nano, which Vault's JSON times use: trailing zeros of
    // the fraction dropped, no fraction at all on a whole second.
    jiff::Timestamp::try_from(t).map(|ts| ts.to_string()).unwrap_or_else(|_| zero_time())
}

/// A UUID-shaped request ID, as Vault gives every response.
fn request_id() -> String {
    let a: u64 = rand::random();
    let b: u64 = rand::random();
    let hex = format!("{a:016x}{b:016x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_go_for_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_516_639_589, 5);
        assert_eq!(rfc3339(t), "2018-01-22T16:46:29.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
        let millis = UNIX_EPOCH + Duration::new(1_516_639_589, 120_000_000);
        assert_eq!(rfc3339(millis), "2018-01-22T16:46:29.12Z");
    }

    #[test]
    fn form_pairs_decode_like_go() {
        assert_eq!(
            form_pairs("a=1&b=x%2Fy&c&d=a+b&e=%zz"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x/y".into()),
                ("c".into(), "".into()),
                ("d".into(), "a b".into()),
                ("e".into(), "%zz".into()),
            ]
        );
    }
}

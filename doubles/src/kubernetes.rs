//! A Kubernetes API server double for the pods of a Vault (or OpenBao) installation, answering
//! the way the Kubernetes API documents it (kubernetes website: docs/reference/using-api/
//! api-concepts.md, "Efficient detection of changes", "Watch bookmarks", "Resource versions";
//! the core/v1 Pod and meta/v1 Status, ListMeta and WatchEvent schemas), with the pod labels
//! Vault's Kubernetes service registration patches (vault: serviceregistration/kubernetes).
//!
//! It owns the namespace's pods, the resource version counter and the change history (with a
//! compaction floor), bearer-token authentication and an RBAC refusal, and the faults a
//! watcher must survive. It must never invent behaviour the API server does not have: every
//! status, shape and parameter here follows those documents.
//!
//! What it answers, always over TLS (HTTP/1.1 and h2 by ALPN, as the API server does):
//! - `GET /api/v1/namespaces/<ns>/pods`: a `PodList` with `metadata.resourceVersion`, with
//!   `labelSelector`, `fieldSelector` (`metadata.name`, `metadata.namespace`), `limit` and
//!   `continue`, `resourceVersion` (`""` most recent, `"0"` any, `N` not older than N).
//! - The same with `watch=true` (or `1`): a chunked stream of one JSON `WatchEvent` per line.
//!   No `resourceVersion` (or `"0"`): synthetic `ADDED` events for the current pods, then
//!   changes. `resourceVersion=N`: every change after N; below the compaction floor, an
//!   `ERROR` event carrying a 410 `Expired` Status (what today's API servers send), or an HTTP
//!   410 when [`KubeApiDouble::set_too_old_as_http`] says so (older servers, and what clients
//!   must handle too). `allowWatchBookmarks=true`: a `BOOKMARK` every bookmark interval.
//!   `timeoutSeconds`: the stream ends cleanly then. A pod whose labels stop (start) matching
//!   the selector is `DELETED` (`ADDED`) for that watch, as the watch cache does.
//! - `GET /api/v1/namespaces/<ns>/pods/<name>`: one pod, or 404.
//! - Without `Authorization: Bearer <known token>`: 401. A token that authenticates but has no
//!   RBAC grant: 403 with the API server's message naming the verb.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::serve::{Protocols, Server};

/// The Vault version the pods' `vault-version` label carries.
pub const POD_VAULT_VERSION: &str = "1.21.1";
/// The API server's default `--min-request-timeout`: a watch without `timeoutSeconds` lasts a
/// random time between this and twice this (apiserver: endpoints/handlers/watch.go).
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1800);
/// How long a request for a resource version the server has not reached waits for it before
/// the API server answers 504 "Too large resource version" (apiserver: storage/cacher).
const TOO_LARGE_RV_WAIT: Duration = Duration::from_secs(3);
/// The API server's watch cache sends a bookmark to each watcher about once a minute.
pub const DEFAULT_BOOKMARK_INTERVAL: Duration = Duration::from_secs(60);

/// Which label prefix the Vault pods carry (Vault's `vault-`, OpenBao's `openbao-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// `vault-active`, `vault-sealed`, ...; `app.kubernetes.io/name: vault`.
    Vault,
    /// `openbao-active`, `openbao-sealed`, ...; `app.kubernetes.io/name: openbao`.
    OpenBao,
}

impl Flavor {
    /// The label prefix, without the dash.
    pub fn prefix(self) -> &'static str {
        match self {
            Flavor::Vault => "vault",
            Flavor::OpenBao => "openbao",
        }
    }
}

/// One Vault server pod of a StatefulSet installed by the official Helm chart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultPod {
    /// `metadata.name` (`vault-0`, ...), also `spec.hostname`.
    pub name: String,
    /// `status.podIP`; empty while the pod has none (pending).
    pub ip: String,
    /// The `Ready` condition's status.
    pub ready: bool,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
}

impl VaultPod {
    /// A Ready pod as the chart labels it, with the registration labels of an initialized,
    /// unsealed node, active or standby.
    pub fn new(flavor: Flavor, name: &str, ip: &str, active: bool) -> VaultPod {
        let p = flavor.prefix();
        let b = |v: bool| if v { "true" } else { "false" }.to_string();
        let labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), p.to_string()),
            ("app.kubernetes.io/instance".to_string(), p.to_string()),
            ("component".to_string(), "server".to_string()),
            ("apps.kubernetes.io/pod-index".to_string(), pod_index(name)),
            ("statefulset.kubernetes.io/pod-name".to_string(), name.to_string()),
            (format!("{p}-active"), b(active)),
            (format!("{p}-sealed"), b(false)),
            (format!("{p}-initialized"), b(true)),
            (format!("{p}-perf-standby"), b(false)),
            (format!("{p}-version"), POD_VAULT_VERSION.to_string()),
        ]);
        VaultPod { name: name.to_string(), ip: ip.to_string(), ready: true, labels }
    }
}

fn pod_index(name: &str) -> String {
    name.rsplit('-').next().filter(|s| s.parse::<u32>().is_ok()).unwrap_or("0").to_string()
}

/// The cluster most tests start from: `vault-0` active on 127.0.0.2, `vault-1` and `vault-2`
/// standby on .3 and .4.
pub fn three_pods(flavor: Flavor) -> Vec<VaultPod> {
    vec![
        VaultPod::new(flavor, "vault-0", "127.0.0.2", true),
        VaultPod::new(flavor, "vault-1", "127.0.0.3", false),
        VaultPod::new(flavor, "vault-2", "127.0.0.4", false),
    ]
}

/// Writes a pod's service-account directory under `dir` as the kubelet mounts it (`token`,
/// `ca.crt`, `namespace`), for a client of this double running "in the cluster".
pub fn write_service_account(
    dir: &std::path::Path,
    token: &str,
    ca_pem: &str,
    namespace: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("token"), token)?;
    std::fs::write(dir.join("ca.crt"), ca_pem)?;
    std::fs::write(dir.join("namespace"), namespace)
}

/// A pod as stored: the pod, its identity and bookkeeping.
#[derive(Clone, Debug)]
struct Stored {
    pod: VaultPod,
    uid: String,
    resource_version: u64,
    created: String,
    /// Set by a graceful deletion; the pod stays until [`KubeApiDouble::delete`].
    deletion: Option<String>,
}

/// One change in the history: the object before (none when added) and after.
#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    before: Option<Stored>,
    /// `None`: the pod was deleted (the event object is then `before` at this rv).
    after: Option<Stored>,
}

/// What one watch asked for, as the double parsed it (tests assert on these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    /// `resourceVersion`, if sent.
    pub resource_version: Option<String>,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `timeoutSeconds`, if sent.
    pub timeout_seconds: Option<u64>,
    /// `labelSelector`, if sent.
    pub label_selector: Option<String>,
}

struct Inner {
    namespace: String,
    pods: BTreeMap<String, Stored>,
    rv: u64,
    /// Every change, oldest first (open watches read on from it); a watch asked for from
    /// below `floor` is too old.
    history: VecDeque<Change>,
    floor: u64,
    tokens: HashSet<String>,
    forbidden: HashSet<String>,
    too_old_as_http: bool,
    bookmark_interval: Duration,
    /// New and open watches stop sending anything, and never end.
    hang_watches: bool,
    /// Bumped to end every open watch abruptly (connection reset mid-stream).
    drops: u64,
    /// Bumped to send every open watch an ERROR 410 event and end it.
    expiries: u64,
    uids: u64,
    watch_log: Vec<WatchRequest>,
}

impl Inner {
    fn now() -> String {
        // metav1.Time: RFC 3339 in UTC with second precision.
        jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_string()
    }

    /// Applies `f` to pod `name` as one write: a new resource version, one history entry.
    fn write(&mut self, name: &str, f: impl FnOnce(&mut Stored)) -> bool {
        let Some(current) = self.pods.get(name).cloned() else { return false };
        let mut next = current.clone();
        f(&mut next);
        self.rv += 1;
        next.resource_version = self.rv;
        self.pods.insert(name.to_string(), next.clone());
        self.history.push_back(Change { rv: self.rv, before: Some(current), after: Some(next) });
        true
    }

    fn add(&mut self, pod: VaultPod) {
        self.rv += 1;
        self.uids += 1;
        let stored = Stored {
            uid: uid(&pod.name, self.uids),
            pod,
            resource_version: self.rv,
            created: Inner::now(),
            deletion: None,
        };
        let before = self.pods.insert(stored.pod.name.clone(), stored.clone());
        self.history.push_back(Change { rv: self.rv, before, after: Some(stored) });
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Bumped on every change; parked watches wait on it.
    generation: watch::Sender<u64>,
    lists: AtomicU64,
    watches: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock can only come from a failing test; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}

/// The API server of one namespace, on https://127.0.0.1:PORT. Dropping it stops the server
/// and closes every open connection.
pub struct KubeApiDouble {
    shared: Arc<Shared>,
    server: Server,
}

impl KubeApiDouble {
    /// Starts on a free port of 127.0.0.1, serving TLS with the PEM chain and key given,
    /// accepting `token`, with `pods` in `namespace`.
    pub async fn start(
        namespace: &str,
        pods: Vec<VaultPod>,
        cert_chain_pem: &str,
        key_pem: &str,
        token: &str,
    ) -> std::io::Result<KubeApiDouble> {
        let tls = crate::tls::acceptor(cert_chain_pem, key_pem, &[b"h2", b"http/1.1"])?;
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let mut inner = Inner {
            namespace: namespace.to_string(),
            pods: BTreeMap::new(),
            // A real cluster's versions are large; start high so a client that treats a
            // version as small or numeric-from-zero shows it.
            rv: 48_213,
            history: VecDeque::new(),
            floor: 0,
            tokens: HashSet::from([token.to_string()]),
            forbidden: HashSet::new(),
            too_old_as_http: false,
            bookmark_interval: DEFAULT_BOOKMARK_INTERVAL,
            hang_watches: false,
            drops: 0,
            expiries: 0,
            uids: 0,
            watch_log: Vec::new(),
        };
        for pod in pods {
            inner.add(pod);
        }
        inner.floor = inner.rv;
        inner.history.clear();
        let (generation, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            generation,
            lists: AtomicU64::new(0),
            watches: AtomicU64::new(0),
        });
        let server = Server::start(
            listener,
            Some(tls),
            Protocols::Http1AndH2,
            "kubernetes double",
            router(shared.clone()),
        )?;
        Ok(KubeApiDouble { shared, server })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `https://127.0.0.1:PORT`, a kubeconfig's `server`.
    pub fn url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    /// The current resource version, as the server would put it in a list.
    pub fn resource_version(&self) -> String {
        self.shared.lock().rv.to_string()
    }

    fn mutate<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let out = f(&mut self.shared.lock());
        self.shared.changed();
        out
    }

    /// Creates (or replaces) a pod: one write, an `ADDED` event.
    pub fn add_pod(&self, pod: VaultPod) {
        self.mutate(|inner| inner.add(pod));
    }

    /// One merge patch of `name`'s labels (`None` removes a label): one write, one `MODIFIED`
    /// event, as Vault's registration sends one patch per state change. False: no such pod.
    pub fn patch_labels(&self, name: &str, labels: &[(&str, Option<&str>)]) -> bool {
        self.mutate(|inner| {
            inner.write(name, |s| {
                for (k, v) in labels {
                    match v {
                        Some(v) => s.pod.labels.insert(k.to_string(), v.to_string()),
                        None => s.pod.labels.remove(*k),
                    };
                }
            })
        })
    }

    /// Sets the pod's `Ready` condition (the kubelet's status update). False: no such pod.
    pub fn set_ready(&self, name: &str, ready: bool) -> bool {
        self.mutate(|inner| inner.write(name, |s| s.pod.ready = ready))
    }

    /// Starts a graceful deletion: `metadata.deletionTimestamp` is set (a `MODIFIED` event);
    /// the pod stays until [`KubeApiDouble::delete`]. False: no such pod.
    pub fn begin_delete(&self, name: &str) -> bool {
        self.mutate(|inner| inner.write(name, |s| s.deletion = Some(Inner::now())))
    }

    /// Removes the pod: a `DELETED` event carrying its last state. False: no such pod.
    pub fn delete(&self, name: &str) -> bool {
        self.mutate(|inner| {
            let Some(before) = inner.pods.remove(name) else { return false };
            inner.rv += 1;
            let rv = inner.rv;
            inner.history.push_back(Change { rv, before: Some(before), after: None });
            true
        })
    }

    /// Compacts the history: a watch asking for any version before now is too old (410).
    /// Open watches go on (the API server feeds them from its watch cache).
    pub fn compact(&self) {
        self.mutate(|inner| inner.floor = inner.rv);
    }

    /// Sends every open watch an `ERROR` event with a 410 `Expired` Status and ends it, as the
    /// API server does when a watcher's position leaves its window; also compacts.
    pub fn expire_open_watches(&self) {
        self.mutate(|inner| {
            inner.expiries += 1;
            inner.floor = inner.rv;
        });
    }

    /// Answers a too-old watch with HTTP 410 and a Status body instead of 200 and an ERROR
    /// event.
    pub fn set_too_old_as_http(&self, http: bool) {
        self.mutate(|inner| inner.too_old_as_http = http);
    }

    /// How often a watch that allowed bookmarks gets one (default one minute).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.mutate(|inner| inner.bookmark_interval = every);
    }

    /// `true`: every open watch and every new one goes silent: no event, no bookmark, and no
    /// end at `timeoutSeconds`, on a connection that stays open. `false`: new watches behave
    /// again (the silent ones stay silent, as a stuck connection does).
    pub fn hang_watches(&self, hang: bool) {
        self.mutate(|inner| inner.hang_watches = hang);
    }

    /// Ends every open watch abruptly, without the stream's end (a connection reset).
    pub fn drop_watches(&self) {
        self.mutate(|inner| inner.drops += 1);
    }

    /// Accepts another bearer token (a rotated service-account token).
    pub fn allow_token(&self, token: &str) {
        self.mutate(|inner| inner.tokens.insert(token.to_string()));
    }

    /// Stops accepting a token (it expired): requests with it get 401. Open watches go on,
    /// as the API server authenticates a request only when it starts.
    pub fn revoke_token(&self, token: &str) {
        self.mutate(|inner| inner.tokens.remove(token));
    }

    /// A token that authenticates but has no RBAC grant on pods: 403 Forbidden.
    pub fn forbid_token(&self, token: &str) {
        self.mutate(|inner| inner.forbidden.insert(token.to_string()));
    }

    /// Lists served so far (not watches), for relist assertions.
    pub fn lists(&self) -> u64 {
        self.shared.lists.load(Ordering::SeqCst)
    }

    /// Watches started so far.
    pub fn watches(&self) -> u64 {
        self.shared.watches.load(Ordering::SeqCst)
    }

    /// Every watch request received so far, in order.
    pub fn watch_log(&self) -> Vec<WatchRequest> {
        self.shared.lock().watch_log.clone()
    }

    /// Stops listening and drops every open connection, like a killed API server.
    pub async fn go_down(&self) {
        self.server.stop().await;
    }

    /// Listens again on the same address after [`KubeApiDouble::go_down`], with the same pods
    /// and history.
    pub async fn come_back(&self) -> std::io::Result<()> {
        self.server.restart().await
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/namespaces/{ns}/pods", get(pods))
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(one_pod))
        .with_state(shared)
}

/// A meta/v1 Status response.
fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = status_object(code.as_u16(), reason, message);
    if let Some(d) = details {
        body["details"] = d;
    }
    let mut response = (code, body.to_string()).into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

fn status_object(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

/// A refused request, boxed (a `Response` is large).
type Refusal = Box<Response>;

fn bad_request(message: &str) -> Refusal {
    Box::new(status(StatusCode::BAD_REQUEST, "BadRequest", message, None))
}

/// Authentication then authorization, as the API server's filters run them.
fn authorize(inner: &Inner, headers: &HeaderMap, verb: &str, ns: &str) -> Result<(), Refusal> {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match token {
        Some(t) if inner.tokens.contains(t) => {}
        _ => {
            return Err(Box::new(status(
                StatusCode::UNAUTHORIZED,
                "Unauthorized",
                "Unauthorized",
                None,
            )))
        }
    }
    if token.is_some_and(|t| inner.forbidden.contains(t)) {
        let message = format!(
            "pods is forbidden: User \"system:serviceaccount:{}:vault-redirect\" cannot {verb} \
             resource \"pods\" in API group \"\" in the namespace \"{ns}\"",
            inner.namespace
        );
        return Err(Box::new(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &message,
            Some(json!({"kind": "pods"})),
        )));
    }
    Ok(())
}

/// A label selector requirement (apimachinery labels.Parse): `k=v`, `k==v`, `k!=v`,
/// `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

fn valid_label_key(k: &str) -> bool {
    let name = k.rsplit('/').next().unwrap_or(k);
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && k.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
}

fn parse_selector(s: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    // Split on commas outside parentheses.
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("unable to parse requirement: found '{part}', expected: key");
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner =
                rest.trim().strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(bad)?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
        };
        let req = if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().to_string())
        } else if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotIn(k.trim().to_string(), vec![v.trim().to_string()])
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            Requirement::In(k.trim().to_string(), vec![v.trim().to_string()])
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Requirement::NotIn(k.trim().to_string(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Requirement::In(k.trim().to_string(), set(rest)?)
        } else {
            Requirement::Exists(part.to_string())
        };
        let key = match &req {
            Requirement::In(k, _)
            | Requirement::NotIn(k, _)
            | Requirement::Exists(k)
            | Requirement::NotExists(k) => k,
        };
        if !valid_label_key(key) {
            return Err(format!("unable to parse requirement: invalid label key \"{key}\""));
        }
        out.push(req);
    }
    Ok(out)
}

fn matches(selector: &[Requirement], labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|r| match r {
        Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
        Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        Requirement::Exists(k) => labels.contains_key(k),
        Requirement::NotExists(k) => !labels.contains_key(k),
    })
}

/// The parsed query of a list or watch.
struct PodQuery {
    watch: bool,
    resource_version: Option<String>,
    match_exact: bool,
    bookmarks: bool,
    timeout_seconds: Option<u64>,
    labels: Vec<Requirement>,
    label_selector: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
    continue_token: Option<String>,
}

/// A query flag as the API server's query decoder reads a bool.
fn flag(value: &str) -> Result<bool, Refusal> {
    match value {
        "true" | "1" | "True" | "TRUE" | "t" | "T" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" | "F" | "" => Ok(false),
        _ => Err(bad_request(&format!("invalid boolean value: {value:?}"))),
    }
}

fn parse_pod_query(params: &[(String, String)], ns: &str) -> Result<PodQuery, Refusal> {
    let mut q = PodQuery {
        watch: false,
        resource_version: None,
        match_exact: false,
        bookmarks: false,
        timeout_seconds: None,
        labels: Vec::new(),
        label_selector: None,
        name: None,
        limit: None,
        continue_token: None,
    };
    for (k, v) in params {
        match k.as_str() {
            "watch" => q.watch = flag(v)?,
            "resourceVersion" => q.resource_version = Some(v.clone()).filter(|v| !v.is_empty()),
            "resourceVersionMatch" => match v.as_str() {
                "" | "NotOlderThan" => {}
                "Exact" => q.match_exact = true,
                other => {
                    return Err(bad_request(&format!(
                        "resourceVersionMatch: Unsupported value: \"{other}\""
                    )))
                }
            },
            "allowWatchBookmarks" => q.bookmarks = flag(v)?,
            "timeoutSeconds" => {
                q.timeout_seconds =
                    Some(v.parse().map_err(|_| {
                        bad_request(&format!("timeoutSeconds: invalid value {v:?}"))
                    })?)
            }
            "labelSelector" => {
                q.labels = parse_selector(v).map_err(|e| bad_request(&e))?;
                q.label_selector = Some(v.clone());
            }
            "fieldSelector" => {
                for term in v.split(',').filter(|t| !t.is_empty()) {
                    match term.split_once('=') {
                        Some(("metadata.name", name)) => q.name = Some(name.to_string()),
                        Some(("metadata.namespace", n)) if n == ns => {}
                        Some(("metadata.namespace", _)) => q.name = Some(String::new()),
                        _ => {
                            return Err(bad_request(&format!(
                                "\"{term}\" is not a known field selector: only \
                                 \"metadata.name\", \"metadata.namespace\""
                            )))
                        }
                    }
                }
            }
            "limit" => {
                q.limit = Some(v.parse().map_err(|_| bad_request("limit: invalid value"))?)
                    .filter(|l| *l > 0)
            }
            "continue" => q.continue_token = Some(v.clone()).filter(|v| !v.is_empty()),
            "sendInitialEvents" => {
                return Err(bad_request("sendInitialEvents is not served by this double"))
            }
            _ => {}
        }
    }
    if q.watch && q.match_exact {
        return Err(bad_request(
            "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch",
        ));
    }
    Ok(q)
}

fn selected(q: &PodQuery, inner: &Inner, ns: &str, s: &Stored) -> bool {
    ns == inner.namespace
        && matches(&q.labels, &s.pod.labels)
        && q.name.as_ref().is_none_or(|n| *n == s.pod.name)
}

/// A resource version from a request: a decimal here, opaque to clients.
fn parse_rv(v: &str) -> Result<u64, Refusal> {
    v.parse().map_err(|_| {
        bad_request(&format!(
            "resourceVersion: Invalid value: \"{v}\": must be a non-negative integer"
        ))
    })
}

async fn pods(
    State(shared): State<Arc<Shared>>,
    Path(ns): Path<String>,
    Query(params): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Response {
    let query = match parse_pod_query(&params, &ns) {
        Ok(q) => q,
        Err(r) => return *r,
    };
    let verb = if query.watch { "watch" } else { "list" };
    if let Err(r) = authorize(&shared.lock(), &headers, verb, &ns) {
        return *r;
    }
    if query.watch {
        shared.watches.fetch_add(1, Ordering::SeqCst);
        watch_pods(shared, ns, query).await
    } else {
        shared.lists.fetch_add(1, Ordering::SeqCst);
        list_pods(&shared, &ns, &query).await
    }
}

/// Waits until the server has reached `rv` (or answers 504 as the API server does).
async fn wait_for_rv(shared: &Shared, rv: u64) -> Result<(), Refusal> {
    let mut generation = shared.generation.subscribe();
    let deadline = Instant::now() + TOO_LARGE_RV_WAIT;
    loop {
        let current = shared.lock().rv;
        if current >= rv {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, generation.changed()).await.is_err() {
            return Err(Box::new(status(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                &format!("Too large resource version: {rv}, current: {current}"),
                Some(
                    json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                ),
            )));
        }
    }
}

fn expired(message: &str) -> Response {
    status(StatusCode::GONE, "Expired", message, None)
}

async fn list_pods(shared: &Shared, ns: &str, q: &PodQuery) -> Response {
    if let Some(rv) = q.resource_version.as_deref().filter(|v| *v != "0") {
        let rv = match parse_rv(rv) {
            Ok(rv) => rv,
            Err(r) => return *r,
        };
        if let Err(r) = wait_for_rv(shared, rv).await {
            return *r;
        }
        let inner = shared.lock();
        // An exact list of a version the history no longer holds is gone (the double keeps
        // no snapshots, so any exact version but the current one is).
        if q.match_exact && rv != inner.rv {
            return expired(&format!("too old resource version: {rv} ({})", inner.rv));
        }
    }
    let inner = shared.lock();
    let (start_after, list_rv) = match &q.continue_token {
        Some(token) => match decode_continue(token) {
            Some((rv, _)) if rv < inner.floor => {
                return expired(
                    "The provided continue parameter is too old to display a consistent list \
                     result. You can start a new list without the continue parameter.",
                )
            }
            Some((rv, name)) => (Some(name), rv),
            None => return *bad_request("continue key is not valid"),
        },
        None => (None, inner.rv),
    };
    let all: Vec<&Stored> = inner
        .pods
        .values()
        .filter(|s| selected(q, &inner, ns, s))
        .filter(|s| start_after.as_ref().is_none_or(|after| s.pod.name > *after))
        .collect();
    let take = q.limit.unwrap_or(usize::MAX).min(all.len());
    let items: Vec<Value> =
        all[..take].iter().map(|s| pod_json(&inner.namespace, s, false)).collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if take < all.len() {
        let last = &all[take - 1].pod.name;
        metadata["continue"] = json!(encode_continue(list_rv, last));
        metadata["remainingItemCount"] = json!(all.len() - take);
    }
    let body = json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": items});
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

/// A continue token: opaque to clients (hex of `rv/name`).
fn encode_continue(rv: u64, name: &str) -> String {
    format!("{rv}/{name}").bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, String)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let text = String::from_utf8(bytes?).ok()?;
    let (rv, name) = text.split_once('/')?;
    Some((rv.parse().ok()?, name.to_string()))
}

async fn one_pod(
    State(shared): State<Arc<Shared>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let inner = shared.lock();
    if let Err(r) = authorize(&inner, &headers, "get", &ns) {
        return *r;
    }
    match inner.pods.get(&name).filter(|_| ns == inner.namespace) {
        Some(s) => {
            let mut response =
                (StatusCode::OK, pod_json(&inner.namespace, s, true).to_string()).into_response();
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            response
        }
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("pods \"{name}\" not found"),
            Some(json!({"name": name, "kind": "pods"})),
        ),
    }
}

/// What a watch stream carries next.
enum Next {
    Line(Bytes),
    Abort,
    End,
}

struct WatchStream {
    shared: Arc<Shared>,
    ns: String,
    query: PodQuery,
    cursor: u64,
    queue: VecDeque<Next>,
    generation: watch::Receiver<u64>,
    deadline: Instant,
    next_bookmark: Instant,
    drops: u64,
    expiries: u64,
    hung: bool,
}

fn event_line(kind: &str, object: Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn too_old_event(rv: u64, current: u64) -> Bytes {
    event_line(
        "ERROR",
        status_object(410, "Expired", &format!("too old resource version: {rv} ({current})")),
    )
}

async fn watch_pods(shared: Arc<Shared>, ns: String, query: PodQuery) -> Response {
    let requested = match query.resource_version.as_deref() {
        None | Some("0") => None,
        Some(v) => match parse_rv(v) {
            Ok(rv) => Some(rv),
            Err(r) => return *r,
        },
    };
    if let Some(rv) = requested {
        if let Err(r) = wait_for_rv(&shared, rv).await {
            return *r;
        }
    }
    let mut queue = VecDeque::new();
    let (cursor, drops, expiries, hung, interval) = {
        let mut inner = shared.lock();
        inner.watch_log.push(WatchRequest {
            resource_version: query.resource_version.clone(),
            bookmarks: query.bookmarks,
            timeout_seconds: query.timeout_seconds,
            label_selector: query.label_selector.clone(),
        });
        let cursor = match requested {
            Some(rv) if rv < inner.floor => {
                if inner.too_old_as_http {
                    return expired(&format!("too old resource version: {rv} ({})", inner.rv));
                }
                queue.push_back(Next::Line(too_old_event(rv, inner.rv)));
                queue.push_back(Next::End);
                rv
            }
            Some(rv) => rv,
            None => {
                // "Get state and start at most recent": synthetic ADDED for what exists.
                for s in inner.pods.values().filter(|s| selected(&query, &inner, &ns, s)) {
                    queue.push_back(Next::Line(event_line("ADDED", pod_json(&ns, s, true))));
                }
                inner.rv
            }
        };
        (cursor, inner.drops, inner.expiries, inner.hang_watches, inner.bookmark_interval)
    };
    let timeout = match query.timeout_seconds {
        Some(s) => Duration::from_secs(s),
        None => MIN_REQUEST_TIMEOUT + MIN_REQUEST_TIMEOUT.mul_f64(rand::random::<f64>()),
    };
    let now = Instant::now();
    let stream = WatchStream {
        generation: shared.generation.subscribe(),
        shared,
        ns,
        query,
        cursor,
        queue,
        deadline: now + timeout,
        next_bookmark: now + interval,
        drops,
        expiries,
        hung,
    };
    let body = futures_util::stream::unfold(stream, |mut w| async move {
        match w.next().await {
            Next::Line(bytes) => Some((Ok::<Bytes, std::io::Error>(bytes), w)),
            Next::Abort => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "dropped by the test",
                )),
                w,
            )),
            Next::End => None,
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let h = response.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("cache-control", HeaderValue::from_static("no-cache, private"));
    response
}

impl WatchStream {
    async fn next(&mut self) -> Next {
        loop {
            if self.hung {
                return std::future::pending().await;
            }
            if let Some(next) = self.queue.pop_front() {
                if matches!(next, Next::End) {
                    self.queue.push_back(Next::End);
                }
                return next;
            }
            self.collect();
            if !self.queue.is_empty() || self.hung {
                continue;
            }
            let bookmark = async {
                if self.query.bookmarks {
                    tokio::time::sleep_until(self.next_bookmark).await
                } else {
                    std::future::pending().await
                }
            };
            tokio::select! {
                _ = self.generation.changed() => {}
                _ = bookmark => {
                    let interval = self.shared.lock().bookmark_interval;
                    self.next_bookmark = Instant::now() + interval;
                    let object = json!({"kind": "Pod", "apiVersion": "v1",
                        "metadata": {"resourceVersion": self.cursor.to_string(), "creationTimestamp": null},
                        "spec": {"containers": null}, "status": {}});
                    return Next::Line(event_line("BOOKMARK", object));
                }
                _ = tokio::time::sleep_until(self.deadline) => return Next::End,
            }
        }
    }

    /// Moves new changes (and faults) into the queue.
    fn collect(&mut self) {
        let inner = self.shared.lock();
        if inner.hang_watches {
            self.hung = true;
            return;
        }
        if inner.drops != self.drops {
            self.queue.push_back(Next::Abort);
            return;
        }
        if inner.expiries != self.expiries {
            self.queue.push_back(Next::Line(too_old_event(self.cursor, inner.rv)));
            self.queue.push_back(Next::End);
            return;
        }
        for change in inner.history.iter().filter(|c| c.rv > self.cursor) {
            let was = change.before.as_ref().filter(|s| selected(&self.query, &inner, &self.ns, s));
            let is = change.after.as_ref().filter(|s| selected(&self.query, &inner, &self.ns, s));
            let event = match (was, is, &change.after, &change.before) {
                (None, Some(now), _, _) => Some(("ADDED", pod_json(&self.ns, now, true))),
                (Some(_), Some(now), _, _) => Some(("MODIFIED", pod_json(&self.ns, now, true))),
                // Left the selection: DELETED with the object as it is now.
                (Some(_), None, Some(now), _) => {
                    Some(("DELETED", with_rv(now, change.rv, &self.ns)))
                }
                // Deleted: its last state at the deletion's version.
                (Some(_), None, None, Some(last)) => {
                    Some(("DELETED", with_rv(last, change.rv, &self.ns)))
                }
                _ => None,
            };
            if let Some((kind, object)) = event {
                self.queue.push_back(Next::Line(event_line(kind, object)));
            }
        }
        self.cursor = inner.rv;
    }
}

fn with_rv(s: &Stored, rv: u64, ns: &str) -> Value {
    let mut s = s.clone();
    s.resource_version = rv;
    pod_json(ns, &s, true)
}

/// A deterministic UUID-shaped `metadata.uid`.
fn uid(name: &str, n: u64) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ n;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let hex = format!("{h:016x}{:016x}", h.rotate_left(23) ^ 0x9e37_79b9_7f4a_7c15);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A core/v1 Pod as the API server serializes it. List items carry no `kind`/`apiVersion`;
/// single objects and watch event objects do.
fn pod_json(ns: &str, s: &Stored, typed: bool) -> Value {
    let flavor = s.pod.labels.get("app.kubernetes.io/name").cloned().unwrap_or_default();
    let ready = if s.pod.ready { "True" } else { "False" };
    let condition = |kind: &str, status: &str| json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": s.created});
    let mut metadata = json!({
        "name": s.pod.name,
        "generateName": format!("{flavor}-"),
        "namespace": ns,
        "uid": s.uid,
        "resourceVersion": s.resource_version.to_string(),
        "creationTimestamp": s.created,
        "labels": s.pod.labels,
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": flavor,
            "uid": uid(&flavor, 0), "controller": true, "blockOwnerDeletion": true,
        }],
    });
    if let Some(at) = &s.deletion {
        metadata["deletionTimestamp"] = json!(at);
        metadata["deletionGracePeriodSeconds"] = json!(30);
    }
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers", "True"),
            condition("Initialized", "True"),
            condition("Ready", ready),
            condition("ContainersReady", ready),
            condition("PodScheduled", "True"),
        ],
        "hostIP": "10.0.0.10",
        "hostIPs": [{"ip": "10.0.0.10"}],
        "startTime": s.created,
        "qosClass": "BestEffort",
    });
    if !s.pod.ip.is_empty() {
        status["podIP"] = json!(s.pod.ip);
        status["podIPs"] = json!([{"ip": s.pod.ip}]);
    }
    let mut pod = json!({
        "metadata": metadata,
        "spec": {
            "containers": [{
                "name": flavor,
                "image": format!("hashicorp/vault:{POD_VAULT_VERSION}"),
                "ports": [
                    {"name": "http", "containerPort": 8200, "protocol": "TCP"},
                    {"name": "https-internal", "containerPort": 8201, "protocol": "TCP"},
                ],
            }],
            "hostname": s.pod.name,
            "subdomain": format!("{flavor}-internal"),
            "serviceAccountName": flavor,
            "nodeName": "node-1",
        },
        "status": status,
    });
    if typed {
        pod["kind"] = json!("Pod");
        pod["apiVersion"] = json!("v1");
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match_as_the_api_server_does() {
        let labels = BTreeMap::from([
            ("vault-active".to_string(), "true".to_string()),
            ("component".to_string(), "server".to_string()),
        ]);
        let m = |s: &str| matches(&parse_selector(s).expect(s), &labels);
        assert!(m("vault-active=true"));
        assert!(m("vault-active==true,component=server"));
        assert!(!m("vault-active!=true"));
        assert!(m("component in (server, client)"));
        assert!(!m("component notin (server)"));
        assert!(m("component"));
        assert!(m("!vault-sealed"));
        assert!(!m("vault-sealed"));
        assert!(m(""));
        assert!(parse_selector("=x").is_err());
        assert!(parse_selector("a in x").is_err());
    }

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let t = encode_continue(42, "vault-1");
        assert_eq!(decode_continue(&t), Some((42, "vault-1".to_string())));
        assert_eq!(decode_continue("zz"), None);
    }
}

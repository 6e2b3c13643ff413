//! Client load through Envoy in proxy mode while the active node of a real OpenBao cluster
//! fails over (issue 18), shared by tests/tests/proxy_mode.rs and the `proxy_failover` bench:
//!
//! - [`ProxyStack`]: the poller on the vault source and Envoy in proxy mode with an access log
//!   that says which node took each request, with what outcome, after how many attempts;
//! - [`Load`]: clients looping on KV v2 writes, each to a path of its own (so a write that
//!   landed twice is a version 2), and reads of what they wrote; every request recorded with
//!   its times, status and error;
//! - [`HealthTimeline`]: which node answered `sys/health` with 200, and when, sampled directly;
//! - [`fail_over`] steps the active node down or SIGKILLs it and dates the new node's first 200;
//! - [`judge`] sorts every request into a failover's window or the settled time around them.
//!
//! It measures and sorts; it asserts nothing. Times are wall-clock (`SystemTime`), the clock
//! Envoy's access log uses.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::envoy::{AccessLogEntry, AttemptLogEntry, Envoy, EnvoyOptions, REQUEST_ID_HEADER};
use crate::openbao::{probe_health, OpenBaoCluster, HEALTH_TIMEOUT};
use crate::poller::Poller;

/// What a window allows beyond the probe interval, after the new node's first 200 as the
/// timeline saw it. The poller sees a node that has started answering 200 at its next round,
/// within one interval; the round itself (every node's `sys/health` at once, then `sys/leader`
/// of the winner) takes a few milliseconds on loopback, and no fault here makes a probe wait
/// for its timeout: a killed node refuses at once. The filters' long-polls then carry the
/// state to every Envoy worker in milliseconds (docs/BENCHMARKS.md: the whole chain stayed
/// within the interval over 40 moves, p99 84 ms at 100ms). The timeline itself sees the 200
/// late by up to one sample, which only moves the bound later. What is left is scheduling on
/// a shared two-core machine: the poller, Envoy, three OpenBao nodes, the clients and other
/// sessions' builds; 250 ms covers a round delayed by a busy CPU.
pub const MARGIN: Duration = Duration::from_millis(250);

/// How often the timeline asks every node for `sys/health`.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// The poller's default `--vault-probe-interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);

/// The poller on the vault source and Envoy in proxy mode in front of a cluster.
pub struct ProxyStack {
    pub poller: Poller,
    pub envoy: Envoy,
    /// Envoy's access log ([`crate::envoy::ACCESS_LOG_FORMAT`]).
    pub access_log: PathBuf,
    /// The poller's `--vault-probe-interval`.
    pub interval: Duration,
}

impl ProxyStack {
    /// Starts the poller probing every node of `cluster` every `interval` (no flag for the
    /// default) and Envoy in proxy mode with `concurrency` workers, and waits until every
    /// worker forwards to the active node.
    pub async fn start(
        cluster: &OpenBaoCluster,
        interval: Duration,
        concurrency: u32,
    ) -> Result<ProxyStack> {
        let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.api_addr()).collect();
        let flag = format!("{}ms", interval.as_millis());
        let extra: Vec<&str> = if interval == DEFAULT_INTERVAL {
            Vec::new()
        } else {
            vec!["--vault-probe-interval", &flag]
        };
        let poller = Poller::start_vault(&nodes, &extra).await?;
        let dir = crate::target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir)?;
        let access_log = dir.join(format!(
            "access-{}-{}.log",
            std::process::id(),
            SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos()
        ));
        let envoy = Envoy::start(EnvoyOptions {
            concurrency,
            access_log: Some(access_log.clone()),
            ..EnvoyOptions::proxy(poller.addr)
        })
        .await?;
        let stack = ProxyStack { poller, envoy, access_log, interval };
        let active = cluster.wait_until_settled(Duration::from_secs(60)).await?;
        stack.wait_for_leader(&cluster.api_addr(&active)?).await?;
        Ok(stack)
    }

    /// Waits until `sys/leader` through Envoy is answered by the node at `api_addr` itself,
    /// twenty times in a row on fresh connections (which Envoy spreads over its workers: each
    /// worker learns the state from its own long-poll).
    pub async fn wait_for_leader(&self, api_addr: &str) -> Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = self.envoy.url("/v1/sys/leader");
        crate::wait_for(
            &format!("Envoy forwarding to {api_addr}"),
            Duration::from_secs(30),
            || async {
                for _ in 0..20 {
                    let leader: Value = http.get(&url).send().await.ok()?.json().await.ok()?;
                    if leader["is_self"] != true || leader["leader_address"] != api_addr {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }

    /// Envoy's access log by request id, once it holds a line for every one of `ids` (Envoy
    /// writes it every 100 ms here) or 10 s have passed.
    pub async fn access_log_for(&self, ids: &[&str]) -> Result<HashMap<String, AccessLogEntry>> {
        let read = || -> Result<HashMap<String, AccessLogEntry>> {
            Ok(AccessLogEntry::read_all(&self.access_log)?
                .into_iter()
                .map(|e| (e.id.clone(), e))
                .collect())
        };
        let complete =
            crate::wait_for("every request in the access log", Duration::from_secs(10), || {
                let log = read();
                async move {
                    let log = log.ok()?;
                    ids.iter().all(|id| log.contains_key(*id)).then_some(log)
                }
            })
            .await;
        match complete {
            Ok(log) => Ok(log),
            // Judged without them: a request Envoy never logged is itself a finding.
            Err(_) => read(),
        }
    }

    /// Requests Envoy sent again after an attempt that had written bytes to a Vault node,
    /// described: a request that may have landed, replayed. Empty when every retry followed
    /// an attempt that never left Envoy (the connection failed). Reads the per-attempt log
    /// once it holds every attempt `log` counts (or 10 s have passed).
    pub async fn resent_after_reaching_vault(
        &self,
        log: &HashMap<String, AccessLogEntry>,
    ) -> Result<Vec<String>> {
        let read = || -> Result<BTreeMap<String, Vec<AttemptLogEntry>>> {
            let mut by_id: BTreeMap<String, Vec<AttemptLogEntry>> = BTreeMap::new();
            // Only the load's requests: the harness's own (no id) are not judged.
            for a in
                AttemptLogEntry::read_all(&self.access_log)?.into_iter().filter(|a| a.id != "-")
            {
                by_id.entry(a.id.clone()).or_default().push(a);
            }
            Ok(by_id)
        };
        let want: usize = log.values().filter(|e| e.id != "-").map(|e| e.attempts as usize).sum();
        let all =
            crate::wait_for("every attempt in the attempt log", Duration::from_secs(10), || {
                let got = read();
                async move {
                    let got = got.ok()?;
                    (got.values().map(Vec::len).sum::<usize>() >= want).then_some(got)
                }
            })
            .await;
        let by_id = match all {
            Ok(by_id) => by_id,
            Err(_) => read()?,
        };
        let mut resent = Vec::new();
        for (id, attempts) in &by_id {
            let Some((_, earlier)) = attempts.split_last() else { continue };
            for (i, a) in earlier.iter().enumerate().filter(|(_, a)| a.bytes_sent > 0) {
                resent.push(format!(
                    "{id}: attempt {} of {} wrote {} bytes to {:?} ({} {}) and was sent again",
                    i + 1,
                    attempts.len(),
                    a.bytes_sent,
                    a.upstream,
                    a.code,
                    a.flags
                ));
            }
        }
        Ok(resent)
    }

    /// `(retries, connect failures)` of the cluster to the Vault nodes, from Envoy's stats.
    /// The route retries on `connect-failure` and `refused-stream` only, and the cluster speaks
    /// HTTP/1.1 (no stream is ever refused), so every retry must follow a connect failure.
    pub async fn retries(&self) -> Result<(u64, u64)> {
        let retries = self.envoy.stat("cluster.vault_active.upstream_rq_retry").await?;
        let fails = self.envoy.stat("cluster.vault_active.upstream_cx_connect_fail").await?;
        Ok((retries.unwrap_or(0), fails.unwrap_or(0)))
    }
}

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A KV v2 write of a new path.
    Write,
    /// A read of the path just written.
    Read,
}

/// One request of the load, as the client saw it.
#[derive(Clone, Debug)]
pub struct Request {
    /// Its [`REQUEST_ID_HEADER`], unique in the run.
    pub id: String,
    pub kind: Kind,
    /// The API path after `/v1/` (`secret/data/...`).
    pub path: String,
    pub start: SystemTime,
    pub end: SystemTime,
    /// The status, when an answer came.
    pub status: Option<u16>,
    /// Why it failed (a transport error, a status other than 200, a wrong value); `None` for
    /// a success.
    pub error: Option<String>,
    /// The KV version the answer reported: the version written, or the version read.
    pub version: Option<u64>,
}

impl Request {
    /// Whether the client got what it asked for.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// How the clients load Envoy.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Concurrent clients, each on its own connection.
    pub clients: usize,
    /// Least time between the starts of two iterations (a write and its read) of one client.
    pub pace: Duration,
    /// The Vault token.
    pub token: String,
    /// The path under `secret/data/` this run writes below, unique per run.
    pub prefix: String,
}

/// Clients looping on writes and reads through Envoy until stopped.
pub struct Load {
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts the clients against `envoy` (`http://host:port`).
    pub fn start(envoy: &str, opts: LoadOptions) -> Result<Load> {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for client in 0..opts.clients {
            let http = reqwest::Client::builder()
                .no_proxy()
                .http1_only()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()?;
            let (requests, stop) = (requests.clone(), stop.clone());
            let (envoy, opts) = (envoy.to_string(), opts.clone());
            tasks.push(tokio::spawn(async move {
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let began = Instant::now();
                    seq += 1;
                    let path = format!("secret/data/{}/c{client}/{seq}", opts.prefix);
                    let value = format!("{}-c{client}-{seq}", opts.prefix);
                    let call = Call { http: &http, envoy: &envoy, token: &opts.token, path: &path };
                    let write = call.send(Kind::Write, &format!("c{client}-{seq}-w"), &value).await;
                    let wrote = write.ok();
                    push(&requests, write);
                    if wrote && !stop.load(Ordering::Relaxed) {
                        let read =
                            call.send(Kind::Read, &format!("c{client}-{seq}-r"), &value).await;
                        push(&requests, read);
                    }
                    // Pacing, not waiting for a condition: the load's rate.
                    tokio::time::sleep(opts.pace.saturating_sub(began.elapsed())).await;
                }
            }));
        }
        Ok(Load { requests, stop, tasks })
    }

    /// Requests that started at or after `since` and are done.
    pub fn done_since(&self, since: SystemTime) -> usize {
        self.requests.lock().map(|r| r.iter().filter(|r| r.start >= since).count()).unwrap_or(0)
    }

    /// Stops the clients after their current request; returns every request.
    pub async fn stop(self) -> Vec<Request> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let mut all = self.requests.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
        all.sort_by_key(|r| r.start);
        all
    }
}

fn push(requests: &Mutex<Vec<Request>>, request: Request) {
    if let Ok(mut all) = requests.lock() {
        all.push(request);
    }
}

/// One client's connection to Envoy and the path of its current iteration.
struct Call<'a> {
    http: &'a reqwest::Client,
    envoy: &'a str,
    token: &'a str,
    path: &'a str,
}

impl Call<'_> {
    /// Writes `{"v": value}` to the path, or reads it back and checks the value.
    async fn send(&self, kind: Kind, id: &str, value: &str) -> Request {
        let url = format!("{}/v1/{}", self.envoy, self.path);
        let request = match kind {
            Kind::Write => self.http.post(&url).json(&json!({"data": {"v": value}})),
            Kind::Read => self.http.get(&url),
        };
        let start = SystemTime::now();
        let answer =
            request.header("x-vault-token", self.token).header(REQUEST_ID_HEADER, id).send().await;
        let (status, body) = match answer {
            Ok(r) => {
                let status = r.status().as_u16();
                (Some(status), r.text().await.map_err(|e| format!("reading the body: {e}")))
            }
            Err(e) => (None, Err(format!("{e}"))),
        };
        let end = SystemTime::now();
        let body: std::result::Result<Value, String> =
            body.map(|b| serde_json::from_str(&b).unwrap_or(Value::String(b)));
        let version = body.as_ref().ok().and_then(|b| match kind {
            Kind::Write => b["data"]["version"].as_u64(),
            Kind::Read => b["data"]["metadata"]["version"].as_u64(),
        });
        let error = match (status, &body) {
            (_, Err(e)) => Some(e.clone()),
            (Some(200), Ok(b)) if kind == Kind::Read && b["data"]["data"]["v"] != value => {
                Some(format!("read back {}, not {value:?}", b["data"]["data"]))
            }
            (Some(200), Ok(_)) => None,
            (Some(s), Ok(b)) => Some(format!("{s}: {}", short(&b.to_string()))),
            (None, Ok(_)) => Some("no status".to_string()),
        };
        Request {
            id: id.to_string(),
            kind,
            path: self.path.to_string(),
            start,
            end,
            status,
            error,
            version,
        }
    }
}

fn short(text: &str) -> String {
    text.chars().take(160).collect()
}

/// One change in a node's `sys/health` code (`None`: no answer).
#[derive(Clone, Debug)]
struct Change {
    at: SystemTime,
    node: String,
    code: Option<u16>,
}

/// Every node's `sys/health`, asked directly every [`SAMPLE_EVERY`], kept as the list of
/// changes; stops when dropped.
pub struct HealthTimeline {
    changes: Arc<Mutex<Vec<Change>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl HealthTimeline {
    /// Starts sampling every node of `cluster`.
    pub fn start(cluster: &OpenBaoCluster) -> Result<HealthTimeline> {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for node in cluster.nodes() {
            let http = cluster.http_builder()?.timeout(HEALTH_TIMEOUT).build()?;
            let (changes, stop) = (changes.clone(), stop.clone());
            let (name, url) = (node.name.clone(), node.url("/v1/sys/health"));
            tasks.push(tokio::spawn(async move {
                let mut last: Option<Option<u16>> = None;
                while !stop.load(Ordering::Relaxed) {
                    let code = probe_health(&http, &url).await.ok().map(|h| h.code);
                    let at = SystemTime::now();
                    if last != Some(code) {
                        last = Some(code);
                        if let Ok(mut changes) = changes.lock() {
                            changes.push(Change { at, node: name.clone(), code });
                        }
                    }
                    // Sampling, not waiting for a condition.
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
            }));
        }
        Ok(HealthTimeline { changes, stop, tasks })
    }

    /// The nodes whose last sample at or before `t` was a 200.
    pub fn actives_at(&self, t: SystemTime) -> Vec<String> {
        let Ok(changes) = self.changes.lock() else { return Vec::new() };
        let mut last: BTreeMap<&str, Option<u16>> = BTreeMap::new();
        for c in changes.iter().filter(|c| c.at <= t) {
            last.insert(&c.node, c.code);
        }
        last.into_iter()
            .filter(|(_, code)| *code == Some(200))
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// The one node answering 200 now, if exactly one does.
    pub fn active_now(&self) -> Option<String> {
        match self.actives_at(SystemTime::now()).as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    }

    /// When `node` first answered 200 at or after `since`.
    pub fn first_200_since(&self, node: &str, since: SystemTime) -> Option<SystemTime> {
        let changes = self.changes.lock().ok()?;
        changes
            .iter()
            .find(|c| c.node == node && c.at >= since && c.code == Some(200))
            .map(|c| c.at)
    }
}

#[cfg(test)]
impl HealthTimeline {
    fn from_changes(changes: Vec<Change>) -> HealthTimeline {
        HealthTimeline {
            changes: Arc::new(Mutex::new(changes)),
            stop: Arc::new(AtomicBool::new(true)),
            tasks: Vec::new(),
        }
    }
}

impl Drop for HealthTimeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// How the active node is made to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `sys/step-down` (again if Raft hands the lock straight back).
    StepDown,
    /// SIGKILL to the node's process group.
    Kill,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Fault::StepDown => "step-down",
            Fault::Kill => "SIGKILL",
        })
    }
}

/// One failover and its window, `[at, bound)`.
#[derive(Clone, Debug)]
pub struct Failover {
    pub fault: Fault,
    pub old: String,
    pub new: String,
    /// When the fault was injected.
    pub at: SystemTime,
    /// The timeline's first 200 from `new` after `at`.
    pub new_active_at: SystemTime,
    /// `new_active_at` + the probe interval + [`MARGIN`]: from here on no request may fail or
    /// reach another node than `new`.
    pub bound: SystemTime,
}

impl Failover {
    /// From the fault to the new node's first 200: Vault's own part of the window.
    pub fn election(&self) -> Duration {
        self.new_active_at.duration_since(self.at).unwrap_or_default()
    }
}

/// Injects `fault` on the active node and waits until the timeline sees another node answer
/// 200; the window ends `interval` + [`MARGIN`] after that 200.
pub async fn fail_over(
    cluster: &mut OpenBaoCluster,
    timeline: &HealthTimeline,
    fault: Fault,
    interval: Duration,
) -> Result<Failover> {
    let old = cluster.wait_until_settled(Duration::from_secs(60)).await?;
    let at = SystemTime::now();
    match fault {
        Fault::StepDown => {
            cluster.step_down_until_moved(5).await?;
        }
        Fault::Kill => cluster.kill(&old)?,
    }
    let (new, new_active_at) =
        crate::wait_for("another node answering 200", Duration::from_secs(60), || async {
            let now = timeline.active_now().filter(|n| *n != old)?;
            let since = timeline.first_200_since(&now, at)?;
            Some((now, since))
        })
        .await?;
    Ok(Failover { fault, old, new, at, new_active_at, bound: new_active_at + interval + MARGIN })
}

/// What happened to the requests of one failover's window: those whose span meets
/// `[at, bound)`.
#[derive(Clone, Debug)]
pub struct Window {
    pub failover: Failover,
    pub requests: usize,
    pub failed: usize,
    /// Failures by what the client got: Envoy's status and flags (`503 UF,URX`), or the
    /// client's error.
    pub failed_by: BTreeMap<String, usize>,
    /// Requests Envoy sent to a node not answering 200 at the time (a standby, a node stepping
    /// down, a dead one), and of those, how many still succeeded (a standby forwards to the
    /// active node).
    pub at_non_active: usize,
    pub at_non_active_ok: usize,
    /// From the first failed request's start to the last one's end.
    pub error_span: Option<Duration>,
    /// From the new node's first 200 to the first request Envoy sent it, in ms (negative when
    /// the timeline saw the 200 after the poller did).
    pub switch_ms: Option<f64>,
    /// Requests Envoy sent more than once (after a connect failure).
    pub retried: usize,
    /// The first few failures, described.
    pub examples: Vec<String>,
}

/// The verdict on a run.
#[derive(Debug, Default)]
pub struct Verdict {
    pub windows: Vec<Window>,
    /// Requests outside every window.
    pub settled: usize,
    /// Settled requests that failed or reached another node than the active one, described.
    pub settled_bad: Vec<String>,
    /// Requests whose answer reported a version above 1: a write applied twice.
    pub replayed: Vec<String>,
    /// Requests Envoy's access log has no line for.
    pub unlogged: usize,
}

/// Sorts `requests` into the failovers' windows (a request belongs to the first window its
/// span meets) and the settled time around them, where each must have succeeded at the node
/// active then (`first_active` before the first failover, each failover's new node after its
/// bound). `nodes` names the nodes by address; `log` is Envoy's access log by request id.
pub fn judge(
    requests: &[Request],
    log: &HashMap<String, AccessLogEntry>,
    timeline: &HealthTimeline,
    failovers: &[Failover],
    first_active: &str,
    nodes: &HashMap<SocketAddr, String>,
) -> Verdict {
    let mut verdict = Verdict {
        windows: failovers
            .iter()
            .map(|f| Window {
                failover: f.clone(),
                requests: 0,
                failed: 0,
                failed_by: BTreeMap::new(),
                at_non_active: 0,
                at_non_active_ok: 0,
                error_span: None,
                switch_ms: None,
                retried: 0,
                examples: Vec::new(),
            })
            .collect(),
        ..Verdict::default()
    };
    let mut spans: Vec<Option<(SystemTime, SystemTime)>> = vec![None; failovers.len()];
    for r in requests {
        let entry = log.get(&r.id);
        if entry.is_none() {
            verdict.unlogged += 1;
        }
        let node = entry.and_then(|e| e.upstream).and_then(|a| nodes.get(&a)).cloned();
        if r.version.is_some_and(|v| v > 1) {
            verdict.replayed.push(describe(r, entry, node.as_deref()));
        }
        for (f, window) in failovers.iter().zip(verdict.windows.iter_mut()) {
            if let (Some(e), Some(n)) = (entry, &node) {
                if *n == f.new && e.start >= f.at {
                    let ms = signed_ms(e.start, f.new_active_at);
                    window.switch_ms = Some(window.switch_ms.map_or(ms, |m| m.min(ms)));
                }
            }
        }
        let Some(i) = failovers.iter().position(|f| r.start < f.bound && r.end >= f.at) else {
            verdict.settled += 1;
            let active = failovers
                .iter()
                .rev()
                .find(|f| f.bound <= r.start)
                .map_or(first_active, |f| f.new.as_str());
            if !r.ok() || node.as_deref() != Some(active) {
                verdict
                    .settled_bad
                    .push(format!("{} (active: {active})", describe(r, entry, node.as_deref())));
            }
            continue;
        };
        let window = &mut verdict.windows[i];
        window.requests += 1;
        if entry.is_some_and(|e| e.attempts > 1) {
            window.retried += 1;
        }
        if !r.ok() {
            window.failed += 1;
            let kind = outcome(r, entry);
            // One example of each kind of failure.
            if !window.failed_by.contains_key(&kind) {
                window.examples.push(describe(r, entry, node.as_deref()));
            }
            *window.failed_by.entry(kind).or_default() += 1;
            let span = spans[i].get_or_insert((r.start, r.end));
            span.0 = span.0.min(r.start);
            span.1 = span.1.max(r.end);
        }
        if let (Some(e), Some(n)) = (entry, &node) {
            if !timeline.actives_at(e.start).contains(n) {
                window.at_non_active += 1;
                if r.ok() {
                    window.at_non_active_ok += 1;
                }
            }
        }
    }
    for (window, span) in verdict.windows.iter_mut().zip(spans) {
        window.error_span = span.map(|(a, b)| b.duration_since(a).unwrap_or_default());
    }
    verdict
}

fn signed_ms(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}

/// What the client got, for counting: Envoy's status and flags, else the client's error.
fn outcome(r: &Request, entry: Option<&AccessLogEntry>) -> String {
    match (r.status, entry) {
        (Some(s), Some(e)) if e.flags != "-" => format!("{s} {}", e.flags),
        (Some(s), _) => format!("{s}"),
        (None, _) => "no answer".to_string(),
    }
}

fn describe(r: &Request, entry: Option<&AccessLogEntry>, node: Option<&str>) -> String {
    let at = r.start.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    format!(
        "{} {:?} {} at {at:.3} for {:.0} ms: {} via {} (attempts {}, version {:?}){}",
        r.id,
        r.kind,
        r.path,
        r.end.duration_since(r.start).unwrap_or_default().as_secs_f64() * 1e3,
        outcome(r, entry),
        node.unwrap_or("no node"),
        entry.map_or(0, |e| e.attempts),
        r.version,
        r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default(),
    )
}

/// The writes whose answer the client never got, read on the active node now: each must be
/// absent or at version 1. Returns the ones found written more than once.
pub async fn unanswered_writes_applied_twice(
    cluster: &OpenBaoCluster,
    requests: &[Request],
) -> Result<Vec<String>> {
    let active = cluster.wait_until_settled(Duration::from_secs(60)).await?;
    let http = cluster.http()?;
    let mut twice = Vec::new();
    for r in requests.iter().filter(|r| r.kind == Kind::Write && r.version.is_none()) {
        let url = cluster.node(&active)?.url(&format!("/v1/{}", r.path));
        let answer = http
            .get(&url)
            .header("x-vault-token", cluster.root_token())
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let status = answer.status().as_u16();
        if status == 404 {
            continue;
        }
        let body: Value = answer.json().await.with_context(|| format!("GET {url}"))?;
        let version = body["data"]["metadata"]["version"].as_u64();
        if status != 200 || version != Some(1) {
            twice.push(format!("{} {}: {status}, version {version:?}", r.id, r.path));
        }
    }
    Ok(twice)
}

/// The cluster's nodes by API address, as Envoy's access log names them.
pub fn node_names(cluster: &OpenBaoCluster) -> HashMap<SocketAddr, String> {
    cluster
        .nodes()
        .iter()
        .map(|n| (SocketAddr::new(n.ip.into(), n.api_port), n.name.clone()))
        .collect()
}

/// One line per window, for the test's output and the bench's log.
pub fn summary(w: &Window) -> String {
    let f = &w.failover;
    format!(
        "{} {} -> {}: new node's first 200 {:.0} ms after the fault, window to +{:.0} ms; {} requests, {} failed {:?} over {}, {} reached a node not active ({} of them answered), {} retried; first request at the new node {} after its first 200",
        f.fault,
        f.old,
        f.new,
        f.election().as_secs_f64() * 1e3,
        f.bound.duration_since(f.at).unwrap_or_default().as_secs_f64() * 1e3,
        w.requests,
        w.failed,
        w.failed_by,
        w.error_span.map_or("no time".to_string(), |d| format!("{:.0} ms", d.as_secs_f64() * 1e3)),
        w.at_non_active,
        w.at_non_active_ok,
        w.retried,
        w.switch_ms.map_or("never".to_string(), |ms| format!("{ms:.0} ms")),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn t(secs: f64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(1_000_000) + Duration::from_secs_f64(secs)
    }

    const A: &str = "127.0.0.2:8200";
    const B: &str = "127.0.0.3:8200";

    fn change(at: f64, node: &str, code: Option<u16>) -> Change {
        Change { at: t(at), node: node.to_string(), code }
    }

    /// A request from `start` for 10 ms; `upstream` `None` when Envoy answered itself.
    fn request(
        id: &str,
        start: f64,
        ok: bool,
        version: Option<u64>,
        upstream: Option<&str>,
    ) -> (Request, AccessLogEntry) {
        let r = Request {
            id: id.to_string(),
            kind: Kind::Write,
            path: format!("secret/data/x/{id}"),
            start: t(start),
            end: t(start + 0.01),
            status: Some(if ok { 200 } else { 503 }),
            error: (!ok).then(|| "503".to_string()),
            version,
        };
        let e = AccessLogEntry {
            start: t(start + 0.001),
            id: id.to_string(),
            upstream: upstream.map(|u| u.parse().unwrap()),
            code: r.status.unwrap(),
            flags: if upstream.is_some() && !ok { "UF,URX".into() } else { "-".into() },
            attempts: if upstream.is_some() && !ok { 2 } else { u32::from(upstream.is_some()) },
        };
        (r, e)
    }

    #[test]
    fn requests_are_judged_by_window_node_and_version() {
        let timeline = HealthTimeline::from_changes(vec![
            change(0.0, "a", Some(200)),
            change(0.0, "b", Some(429)),
            change(10.0, "a", None),
            change(12.0, "b", Some(200)),
        ]);
        let kill = Failover {
            fault: Fault::Kill,
            old: "a".into(),
            new: "b".into(),
            at: t(10.0),
            new_active_at: t(12.0),
            bound: t(12.35),
        };
        let cases = [
            request("settled-before", 5.0, true, Some(1), Some(A)),
            request("dead-node", 10.5, false, None, Some(A)),
            request("no-active", 11.0, false, None, None),
            request("first-at-new", 12.1, true, Some(1), Some(B)),
            request("settled-after", 13.0, true, Some(1), Some(B)),
            request("applied-twice", 14.0, true, Some(2), Some(B)),
            request("failed-after", 15.0, false, None, Some(B)),
            request("misrouted-after", 16.0, true, Some(1), Some(A)),
        ];
        let requests: Vec<Request> = cases.iter().map(|(r, _)| r.clone()).collect();
        let log = cases.iter().map(|(_, e)| (e.id.clone(), e.clone())).collect();
        let nodes =
            [(A.parse().unwrap(), "a".to_string()), (B.parse().unwrap(), "b".to_string())].into();
        let verdict = judge(&requests, &log, &timeline, &[kill], "a", &nodes);

        let w = &verdict.windows[0];
        assert_eq!((w.requests, w.failed), (3, 2));
        assert_eq!(w.failed_by, [("503".to_string(), 1), ("503 UF,URX".to_string(), 1)].into());
        assert_eq!((w.at_non_active, w.at_non_active_ok, w.retried), (1, 0, 1));
        let span = w.error_span.unwrap().as_secs_f64();
        assert!((span - 0.51).abs() < 1e-6, "{span}");
        assert!((w.switch_ms.unwrap() - 101.0).abs() < 0.01, "{:?}", w.switch_ms);
        assert_eq!(verdict.settled, 5);
        let bad: Vec<&str> =
            verdict.settled_bad.iter().map(|d| d.split(' ').next().unwrap()).collect();
        assert_eq!(bad, ["failed-after", "misrouted-after"]);
        assert_eq!(verdict.replayed.len(), 1);
        assert!(verdict.replayed[0].starts_with("applied-twice"), "{:?}", verdict.replayed);
        assert_eq!(verdict.unlogged, 0);
    }
}

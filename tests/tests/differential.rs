//! host-test's fidelity, proven against real Envoy: the same scenarios run through host-test
//! (scripted http call answers, virtual clock) and through Envoy (a scripted poller on
//! 127.0.0.1 answering the filter's long-polls with the very same answers), over HTTP/1.1 and
//! HTTP/2, and the answers must match: status, `Location`, `Cache-Control`, `Retry-After`,
//! `Content-Type`, the debug header's version, and the body of error answers.
//!
//! Where Envoy's codec changes or refuses a request before any filter runs, the case says so
//! (`Via`) and the test checks that too; docs/host-test.md lists these differences.
//!
//! Needs the release `.wasm` and `.venv/bin/envoy` (scripts/setup.sh && scripts/build.sh).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use host_test::{Host, HttpCallResponse, LocalResponse, Request, Vm};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::scripted_poller::{index_of, Answer, ScriptedPoller};
use vault_redirect_e2e::{read_http1_answer, wait_for};

const CLUSTER: &str = "vault_redirect_poller";
/// What the bootstrap's route answers when the filter lets a request through.
const NO_UPSTREAM_BODY: &str = r#"{"errors":["no upstream behind vault-redirect"]}"#;
/// How long Envoy gets to reach a phase's state.
const SETTLE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// What is compared.

/// An answer reduced to what the comparison covers.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// The filter let the request go on (in Envoy: the route's direct 404 answers it).
    Upstream,
    /// The filter answered itself.
    Local(Reply),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    location: Option<String>,
    cache_control: Option<String>,
    retry_after: Option<String>,
    content_type: Option<String>,
    /// `version=N` of `x-vault-redirect-state` (its `age_ms` is time, checked for shape only).
    debug_version: Option<String>,
    /// The body of an error answer (status >= 400), except to HEAD: Envoy never sends a body
    /// to HEAD, whatever the filter gave (see docs/host-test.md).
    error_body: Option<String>,
}

/// A response as it came, from either side.
struct Raw {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn seen(&self, method: &str) -> Seen {
        if self.status == 404 && (self.body == NO_UPSTREAM_BODY.as_bytes() || method == "HEAD") {
            return Seen::Upstream;
        }
        let debug_version =
            self.header("x-vault-redirect-state").map(|v| match v.split_once("; age_ms=") {
                Some((version, age))
                    if !age.is_empty() && age.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    version.to_owned()
                }
                _ => format!("malformed: {v}"),
            });
        Seen::Local(Reply {
            status: self.status,
            location: self.header("location"),
            cache_control: self.header("cache-control"),
            retry_after: self.header("retry-after"),
            content_type: self.header("content-type"),
            debug_version,
            error_body: (self.status >= 400 && method != "HEAD")
                .then(|| String::from_utf8_lossy(&self.body).into_owned()),
        })
    }
}

impl From<&LocalResponse> for Raw {
    fn from(r: &LocalResponse) -> Raw {
        Raw {
            status: u16::try_from(r.status).unwrap_or(0),
            headers: r.headers.clone(),
            body: r.body.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios' vocabulary.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    Http1,
    Http2,
}

/// What Envoy's codec does with a request target before the filter.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// The target reaches the filter as `:path`, unchanged.
    AsSent,
    /// The codec rewrites it: the filter sees this `:path` instead.
    Rewritten(&'static str),
    /// Envoy answers this status itself, before any filter (its codec, or its connection
    /// manager's checks); the filter never sees the request.
    EnvoyAnswers(u16),
    /// The protocol (or its client library) cannot carry this request.
    NotSent,
}

#[derive(Clone, Debug)]
struct Case {
    method: &'static str,
    target: &'static str,
    body: Option<&'static str>,
    http1: Via,
    http2: Via,
}

fn req(method: &'static str, target: &'static str) -> Case {
    Case { method, target, body: None, http1: Via::AsSent, http2: Via::AsSent }
}

impl Case {
    fn body(mut self, body: &'static str) -> Case {
        self.body = Some(body);
        self
    }
    fn http1(mut self, via: Via) -> Case {
        self.http1 = via;
        self
    }
    fn http2(mut self, via: Via) -> Case {
        self.http2 = via;
        self
    }
    fn via(&self, proto: Proto) -> Via {
        match proto {
            Proto::Http1 => self.http1,
            Proto::Http2 => self.http2,
        }
    }
}

struct Phase {
    what: &'static str,
    /// The poller's new answer (`None`: unchanged).
    answer: Option<Answer>,
    /// Time that passes before the requests (virtual in host-test, real in Envoy).
    advance_ms: u64,
    cases: Vec<Case>,
}

fn phase(what: &'static str, answer: Option<Answer>, cases: Vec<Case>) -> Phase {
    Phase { what, answer, advance_ms: 0, cases }
}

fn state(version: u64, node: &str, address: &str, port: u16) -> Answer {
    Answer::state(&json!({
        "version": version,
        "active": {"node": node, "address": address, "port": port},
        "consul_index": version >> 16, "last_consul_ok_unix_ms": 1, "age_ms": 0, "active_candidates": 1
    }))
    .unwrap()
}

fn no_active(version: u64, reason: &str) -> Answer {
    Answer::state(&json!({
        "version": version, "active": null, "reason": reason,
        "consul_index": version >> 16, "last_consul_ok_unix_ms": 1, "age_ms": 0, "active_candidates": 0
    }))
    .unwrap()
}

fn status(status: u16, body: &str) -> Answer {
    Answer::Status { status, body: body.to_owned() }
}

// ---------------------------------------------------------------------------------------------
// host-test's side.

/// Answers the pending polls of every worker the way the scripted poller answers Envoy's, and
/// lets virtual time pass (in `tick_ms` steps) while a worker waits out a backoff, as real time
/// passes for Envoy: a state is in once every worker holds a poll with its version as index;
/// a failing answer once every worker has been given it at least once.
fn answer_polls(host: &Host, vms: &mut [Vm], answer: &Answer, tick: Duration) -> Result<()> {
    let mut answered = vec![false; vms.len()];
    for _ in 0..200 {
        for (vm, answered) in vms.iter_mut().zip(answered.iter_mut()) {
            while let Some((token, (status, body))) =
                vm.pending_http_calls().into_iter().find_map(|call| {
                    let index = index_of(call.header(":path").unwrap_or(""));
                    answer.respond_to(index).map(|reply| (call.token, reply))
                })
            {
                vm.respond_http_call(
                    token,
                    HttpCallResponse::new(status, body)
                        .with_header("content-type", "application/json"),
                )?;
                *answered = true;
            }
        }
        let done = match answer {
            Answer::Hold => true,
            Answer::State { version, .. } => vms.iter().all(|vm| {
                vm.pending_http_calls()
                    .iter()
                    .any(|c| index_of(c.header(":path").unwrap_or("")) == *version)
            }),
            Answer::Status { .. } => answered.iter().all(|a| *a),
        };
        if done {
            return Ok(());
        }
        host.advance(tick);
        for vm in vms.iter_mut() {
            vm.run_due()?;
        }
    }
    bail!(
        "the workers never took in {answer:?}; pending: {:?}",
        vms.iter().map(Vm::pending_http_calls).collect::<Vec<_>>()
    )
}

fn host_request(case: &Case, path: &str) -> Request {
    let mut headers = vec![
        (":method".to_owned(), case.method.as_bytes().to_vec()),
        (":scheme".to_owned(), b"http".to_vec()),
        (":authority".to_owned(), b"vault.example".to_vec()),
        (":path".to_owned(), path.as_bytes().to_vec()),
        ("user-agent".to_owned(), b"differential".to_vec()),
    ];
    if let Some(body) = case.body {
        headers.push(("content-length".to_owned(), body.len().to_string().into_bytes()));
    }
    Request { headers, body: case.body.map(|b| b.as_bytes().to_vec()), trailers: Vec::new() }
}

/// What host-test's workers answer when the filter sees `path`; every worker must agree.
fn host_answer(workers: &mut [Vm], case: &Case, path: &str) -> Result<Seen> {
    let mut answers = Vec::new();
    for vm in workers.iter_mut() {
        let outcome = vm.send(host_request(case, path))?;
        answers.push(match &outcome.local_response {
            Some(local) => Raw::from(local).seen(case.method),
            None => Seen::Upstream,
        });
    }
    let first = answers[0].clone();
    if answers.iter().any(|a| *a != first) {
        bail!("host-test's workers disagree on {} {path}: {answers:#?}", case.method);
    }
    Ok(first)
}

// ---------------------------------------------------------------------------------------------
// Envoy's side.

/// One HTTP/1.1 request, written byte for byte on a fresh connection.
async fn http1(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> Result<Raw> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nhost: vault.example\r\nuser-agent: differential\r\nconnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    stream.write_all(head.as_bytes()).await?;
    let mut bytes = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        read_http1_answer(&mut stream, method, &mut bytes),
    )
    .await
    .with_context(|| format!("no HTTP/1.1 answer to {method} {target} within 10 s"))??;
    let split = bytes.windows(4).position(|w| w == b"\r\n\r\n").with_context(|| {
        format!(
            "no end of headers in the answer to {method} {target}: {:?}",
            String::from_utf8_lossy(&bytes)
        )
    })?;
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    let mut body = bytes[split + 4..].to_vec();
    if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case(b"chunked")) {
        body = dechunk(&body)
            .with_context(|| format!("a bad chunked body in the answer to {method} {target}"))?;
    }
    Ok(Raw { status, headers, body })
}

/// A chunked body's data (no trailers expected).
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while !raw.is_empty() {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(raw.get(..size)?);
        raw = raw.get(size + 2..)?;
    }
    Some(body)
}

/// One HTTP/2 request (prior knowledge) on a fresh connection; `*` is sent as `:path` `*`.
async fn http2(addr: SocketAddr, method: &str, target: &str, body: Option<&str>) -> Result<Raw> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let mut client = client.ready().await?;
        let uri = if target == "*" {
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(http::uri::Scheme::HTTP);
            parts.authority = Some(http::uri::Authority::from_static("vault.example"));
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static("*"));
            http::Uri::from_parts(parts)?
        } else {
            format!("http://vault.example{target}").parse::<http::Uri>()?
        };
        let request = http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes())?)
            .uri(uri)
            .header("user-agent", "differential")
            .body(())?;
        let (response, mut send) = client.send_request(request, body.is_none())?;
        if let Some(body) = body {
            // Envoy may answer (a local reply) and end the stream before the body is sent; the
            // answer is what counts.
            let _ = send.send_data(bytes::Bytes::copy_from_slice(body.as_bytes()), true);
        }
        let response = tokio::time::timeout(Duration::from_secs(10), response).await??;
        let (parts, mut recv) = response.into_parts();
        let mut body = Vec::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        let headers = parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        anyhow::Ok(Raw { status: parts.status.as_u16(), headers, body })
    }
    .await;
    driver.abort();
    result.with_context(|| format!("HTTP/2 {method} {target}"))
}

async fn envoy_answer(envoy: &Envoy, proto: Proto, case: &Case) -> Result<Seen> {
    let raw = match proto {
        Proto::Http1 => http1(envoy.listen, case.method, case.target, case.body).await?,
        Proto::Http2 => http2(envoy.listen, case.method, case.target, case.body).await?,
    };
    Ok(raw.seen(case.method))
}

/// The status of an answer Envoy's codec gave itself (never the filter's: no filter header).
async fn codec_answer(envoy: &Envoy, proto: Proto, case: &Case) -> Result<(u16, bool)> {
    let raw = match proto {
        Proto::Http1 => http1(envoy.listen, case.method, case.target, case.body).await?,
        Proto::Http2 => http2(envoy.listen, case.method, case.target, case.body).await?,
    };
    let filter_touched = ["location", "retry-after", "x-vault-redirect-state"]
        .iter()
        .any(|h| raw.header(h).is_some());
    Ok((raw.status, filter_touched))
}

async fn stat(envoy: &Envoy, name: &str) -> u64 {
    envoy.stat(&format!("wasmcustom.vault_redirect.{name}")).await.ok().flatten().unwrap_or(0)
}

/// Waits until Envoy's filter has taken in `answer` on every VM that polls (the main thread's
/// and each worker's).
async fn settle(
    envoy: &Envoy,
    poller: &ScriptedPoller,
    answer: &Answer,
    polling_vms: usize,
    failures_before: u64,
) -> Result<()> {
    match answer {
        Answer::Hold => Ok(()),
        // A VM that applied version V polls again with index=V, which the poller holds.
        Answer::State { version, .. } => {
            wait_for(&format!("{polling_vms} VMs to apply version {version}"), SETTLE, || async {
                (poller.held_with_index(*version) >= polling_vms).then_some(())
            })
            .await
            .with_context(|| format!("polls served so far (index, status): {:?}", poller.served()))
        }
        // A failed poll changes no answer (the last state stays until stale); wait until Envoy
        // counted as many failures as VMs poll.
        Answer::Status { .. } => {
            wait_for("Envoy to count the failed polls", SETTLE, || async {
                (stat(envoy, "poll_failures").await >= failures_before + polling_vms as u64)
                    .then_some(())
            })
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The runner.

struct Differential {
    config: String,
    /// Envoy's `--concurrency`; host-test starts as many request-serving VMs plus one for
    /// Envoy's main thread (which polls too, but serves no request).
    workers: u32,
    phases: Vec<Phase>,
}

/// The `tick_ms` every scenario's configuration sets.
const TICK: Duration = Duration::from_millis(50);

fn config(extra: &str) -> String {
    format!(
        r#"{{"poller_cluster":"{CLUSTER}","tick_ms":50,"retry_initial_ms":50,"retry_max_ms":200{extra}}}"#
    )
}

async fn run(test: Differential) -> Result<()> {
    let poller = ScriptedPoller::start().await?;
    let mut options = EnvoyOptions::new(poller.addr);
    options.plugin_config = test.config.clone();
    options.concurrency = test.workers;
    let envoy = Envoy::start(options).await?;

    let host = host_test::shipped::host()
        .map_err(anyhow::Error::msg)?
        .with_plugin_config(test.config.clone())
        .with_known_clusters([CLUSTER])
        .with_vm_id("vault_redirect")
        .with_root_id("vault_redirect")
        .with_plugin_name("vault_redirect");
    let mut vms = Vec::new();
    for _ in 0..=test.workers {
        let vm = host.start_vm()?;
        assert!(vm.configure_result(), "host-test refused {}: {:?}", test.config, vm.logs());
        vms.push(vm);
    }
    let polling_vms = vms.len();

    let mut report = Vec::new();
    let mut mismatches = Vec::new();
    let mut answer = Answer::Hold;
    for phase in &test.phases {
        let failures_before = stat(&envoy, "poll_failures").await;
        if let Some(next) = &phase.answer {
            answer = next.clone();
            poller.set(answer.clone());
            answer_polls(&host, &mut vms, &answer, TICK)?;
            settle(&envoy, &poller, &answer, polling_vms, failures_before).await.with_context(
                || {
                    format!(
                        "phase {:?}; Envoy's log: {}",
                        phase.what,
                        envoy.proc.log_path().display()
                    )
                },
            )?;
        }
        if phase.advance_ms > 0 {
            host.advance(Duration::from_millis(phase.advance_ms));
            for vm in vms.iter_mut() {
                vm.run_due()?;
            }
            answer_polls(&host, &mut vms, &answer, TICK)?;
        }
        let workers = &mut vms[1..];
        for (i, case) in phase.cases.iter().enumerate() {
            for proto in [Proto::Http1, Proto::Http2] {
                let label = format!("[{}] {proto:?} {} {}", phase.what, case.method, case.target);
                let path = match case.via(proto) {
                    Via::NotSent => continue,
                    Via::EnvoyAnswers(expected) => {
                        let (got, touched) = codec_answer(&envoy, proto, case).await?;
                        if got != expected || touched {
                            mismatches.push(format!("{label}: Envoy was expected to answer itself {expected}, got {got} (filter headers: {touched})"));
                        }
                        report.push(format!(
                            "{label}: Envoy answers {got} before the filter; host-test not asked"
                        ));
                        continue;
                    }
                    Via::AsSent => case.target,
                    Via::Rewritten(path) => path,
                };
                let expected = host_answer(workers, case, path)?;
                // Time passed in this phase: Envoy's clock is real, so wait for it to get there
                // on the phase's first request (a mismatch still shows after SETTLE).
                let got = if phase.advance_ms > 0 && i == 0 {
                    let waited = wait_for(&label, SETTLE, || async {
                        envoy_answer(&envoy, proto, case)
                            .await
                            .ok()
                            .filter(|seen| *seen == expected)
                    })
                    .await;
                    match waited {
                        Ok(seen) => seen,
                        Err(_) => envoy_answer(&envoy, proto, case).await?,
                    }
                } else {
                    envoy_answer(&envoy, proto, case).await?
                };
                if got == expected {
                    report.push(format!("{label}: same ({})", brief(&got)));
                } else {
                    mismatches.push(format!("{label} (filter sees {path:?}):\n  host-test {expected:?}\n  Envoy     {got:?}"));
                }
            }
        }
    }
    println!("{}", report.join("\n"));
    if !mismatches.is_empty() {
        bail!(
            "{} differences between host-test and Envoy:\n{}",
            mismatches.len(),
            mismatches.join("\n")
        );
    }
    Ok(())
}

fn brief(seen: &Seen) -> String {
    match seen {
        Seen::Upstream => "to the route".to_owned(),
        Seen::Local(r) => format!("{} {}", r.status, r.location.as_deref().unwrap_or("")),
    }
}

// ---------------------------------------------------------------------------------------------
// The scenarios.

const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];
const PATHS: [&str; 6] = [
    "/v1/secret/data/app",
    "/v1/secret/data/a%20b?version=2&x=%2F%3F",
    "/v1//sys//health?standbyok=true",
    "/v1/kv/caf%C3%A9?list=true",
    "/v1/x/../y/./z",
    "/v1/x?q=%0d%0a&e=",
];

/// 9 000 bytes of path: over the filter's 8 KiB limit, within Envoy's 60 KiB of headers.
fn long_path() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| format!("/v1/{}", "a".repeat(8_996)))
}

fn every_method_and_path() -> Vec<Case> {
    let mut cases = Vec::new();
    for method in METHODS {
        for path in PATHS {
            let case = req(method, path);
            cases.push(if matches!(method, "POST" | "PUT" | "PATCH") {
                case.body(r#"{"data":{"k":"v"}}"#)
            } else {
                case
            });
        }
    }
    cases
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_test_and_envoy_answer_alike_through_states_failovers_and_poller_failures(
) -> Result<()> {
    let mut redirected = every_method_and_path();
    redirected.extend([
        // Vault's LIST: Envoy's HTTP/1 codec refuses methods outside the registry.
        req("LIST", "/v1/secret/metadata/").http1(Via::EnvoyAnswers(400)),
        // Absolute-form: Envoy's HTTP/1 codec moves the authority out of the target.
        req("GET", "http://evil.example/v1/x?y=1")
            .http1(Via::Rewritten("/v1/x?y=1"))
            .http2(Via::NotSent),
        // Envoy's connection manager answers 404 to any :path not starting with "/" before
        // the filters run (HTTP/1 and HTTP/2 alike).
        req("OPTIONS", "*").http1(Via::EnvoyAnswers(404)).http2(Via::EnvoyAnswers(404)),
        req("GET", long_path()),
        // Raw UTF-8 and a fragment in an HTTP/1 target: Envoy's codec refuses the first, its
        // connection manager the second (HTTP/2 clients cannot build them).
        req("GET", "/v1/kv/café?x=é").http1(Via::EnvoyAnswers(400)).http2(Via::NotSent),
        req("GET", "/v1/kv/x#frag").http1(Via::EnvoyAnswers(400)).http2(Via::NotSent),
        req("GET", "/v1/kv/%00%ff"),
    ]);
    run(Differential {
        config: config(""),
        workers: 1,
        phases: vec![
            phase(
                "no state yet",
                None,
                vec![
                    req("GET", "/v1/sys/health"),
                    req("POST", "/v1/kv/a").body("{}"),
                    req("HEAD", "/v1/x"),
                ],
            ),
            phase("a state", Some(state(1 << 16, "vault-a", "127.0.0.2", 8200)), redirected),
            phase(
                "failover",
                Some(state(2 << 16, "vault-c", "127.0.0.4", 8200)),
                vec![req("GET", "/v1/sys/leader"), req("PUT", "/v1/kv/b?cas=1").body("{}")],
            ),
            phase(
                "no active node",
                Some(no_active(3 << 16, "no Vault node is tagged active")),
                vec![
                    req("GET", "/v1/secret/data/x"),
                    req("HEAD", "/v1/secret/data/x"),
                    req("DELETE", "/v1/kv/c"),
                ],
            ),
            phase(
                "invalid target",
                Some(state(4 << 16, "vault-b", "evil.example/x", 8200)),
                vec![req("GET", "/v1/secret/data/x"), req("POST", "/v1/kv/d").body("{}")],
            ),
            phase(
                "valid again",
                Some(state(5 << 16, "vault-b", "127.0.0.3", 8200)),
                vec![req("GET", "/v1/x")],
            ),
            phase(
                "poller answers 500",
                Some(status(500, "oops")),
                vec![req("GET", "/v1/x"), req("GET", "/v1/y?z")],
            ),
            phase("poller answers garbage", Some(status(200, "[]")), vec![req("GET", "/v1/x")]),
        ],
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_paths_the_debug_header_and_target_options_answer_alike() -> Result<()> {
    let options = r#","pass_through_paths":["/healthz","/ui/*"],"debug_header":true,"scheme":"https","target_host":"node","target_port":8443"#;
    let paths = || {
        vec![
            req("GET", "/healthz"),
            req("GET", "/healthz?full=1"),
            req("HEAD", "/healthz"),
            req("GET", "/ui/vault/auth"),
            req("GET", "/ui/"),
            req("GET", "/ui"),
            req("GET", "/healthzz"),
            req("POST", "/v1/sys/health").body("{}"),
        ]
    };
    run(Differential {
        config: config(options),
        workers: 1,
        phases: vec![
            phase("no state yet", None, paths()),
            phase(
                "a state",
                Some(state(1 << 16, "vault-a.dc1.consul", "127.0.0.2", 8200)),
                paths(),
            ),
            phase(
                "failover",
                Some(state(2 << 16, "vault-b.dc1.consul", "127.0.0.3", 8200)),
                paths(),
            ),
            phase("no active node", Some(no_active(3 << 16, "every node is sealed")), paths()),
        ],
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_header_off_means_no_debug_header_in_either() -> Result<()> {
    run(Differential {
        config: config(r#","debug_header":false,"pass_through_paths":["/healthz"]"#),
        workers: 1,
        phases: vec![
            phase("no state yet", None, vec![req("GET", "/v1/x"), req("GET", "/healthz")]),
            phase(
                "a state",
                Some(state(1 << 16, "vault-a", "127.0.0.2", 8200)),
                vec![req("GET", "/v1/x"), req("GET", "/healthz")],
            ),
        ],
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_goes_stale_and_recovers_alike() -> Result<()> {
    // The poller holds a poll for `wait_seconds`, so the state stays fresh only if that is
    // shorter than `max_stale_seconds`.
    run(Differential {
        config: config(r#","wait_seconds":1,"max_stale_seconds":2"#),
        workers: 1,
        phases: vec![
            phase(
                "a state",
                Some(state(1 << 16, "vault-a", "127.0.0.2", 8200)),
                vec![req("GET", "/v1/x")],
            ),
            Phase {
                what: "poller failing past max_stale",
                answer: Some(status(503, "{\"errors\":[\"down\"]}")),
                advance_ms: 3_000,
                cases: vec![req("GET", "/v1/x"), req("PUT", "/v1/y").body("{}")],
            },
            phase(
                "the same state again",
                Some(state(1 << 16, "vault-a", "127.0.0.2", 8200)),
                vec![req("GET", "/v1/x")],
            ),
        ],
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_answer_alike_and_follow_a_failover_alike() -> Result<()> {
    // Every request goes on a fresh connection, so Envoy spreads them over its workers;
    // host-test sends each to both of its workers, which must agree.
    let cases = || (0..6).map(|_| req("GET", "/v1/secret/data/x?version=3")).collect::<Vec<_>>();
    run(Differential {
        config: config(""),
        workers: 2,
        phases: vec![
            phase("a state", Some(state(1 << 16, "vault-a", "127.0.0.2", 8200)), cases()),
            phase("failover", Some(state(2 << 16, "vault-b", "127.0.0.3", 8200)), cases()),
        ],
    })
    .await
}

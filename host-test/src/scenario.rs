//! Scenario files: a JSON list of steps (move the clock, tick, answer the filter's http calls,
//! send requests and say what must come back) replayed against a [`Host`], so users can test a
//! filter and its configuration in CI without Envoy. The format is documented in
//! `docs/host-test.md`.
//!
//! A mismatch is recorded and the replay goes on; a host error (a guest trap) ends it.

use serde::Deserialize;

use crate::{Action, Host, HostError, HttpCallResponse, Request, Vm};

/// A whole scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario checks, printed in reports.
    #[serde(default)]
    pub description: String,
    /// How many workers (VMs) to start; steps address them by index (default 1).
    #[serde(default = "one")]
    pub workers: usize,
    /// When given, `proxy_http_call` to any other cluster is refused, as Envoy refuses it.
    #[serde(default)]
    pub known_clusters: Option<Vec<String>>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

fn one() -> usize {
    1
}

/// One step; in JSON an object with exactly one key, the step's name.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Moves the virtual clock forward by this many milliseconds, then runs what became due on
    /// every worker (ticks, http call timeouts).
    AdvanceMs(u64),
    /// Calls `proxy_on_tick` now on one worker, or on all when `vm` is absent.
    Tick(Target),
    /// Answers the oldest pending http call that matches.
    RespondHttpCall(Respond),
    /// Fails the oldest pending http call that matches (reset or timeout: no headers).
    FailHttpCall(CallMatch),
    /// Checks how many http calls are pending on a worker.
    ExpectPendingHttpCalls(PendingCount),
    /// Sends a request and checks what the filter did with it.
    Request(RequestStep),
    /// Checks a metric's value.
    ExpectMetric(MetricCheck),
}

/// Which worker a step acts on.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Worker index; absent means every worker (for `tick`) or worker 0.
    #[serde(default)]
    pub vm: Option<usize>,
}

/// Which pending http call a step means.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallMatch {
    /// Worker index (default 0).
    #[serde(default)]
    pub vm: usize,
    /// The cluster the call must go to.
    #[serde(default)]
    pub upstream: Option<String>,
    /// A prefix of the call's `:path`.
    #[serde(default)]
    pub path_prefix: Option<String>,
}

/// An answer to an http call.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Respond {
    /// Which call.
    #[serde(flatten)]
    pub call: CallMatch,
    /// The `:status`.
    pub status: u16,
    /// Further headers, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// A body given as text.
    #[serde(default)]
    pub body: Option<String>,
    /// A body given as JSON (sent compact).
    #[serde(default)]
    pub body_json: Option<serde_json::Value>,
}

/// How many calls must be pending.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PendingCount {
    /// Worker index (default 0).
    #[serde(default)]
    pub vm: usize,
    /// The expected number.
    pub count: usize,
}

/// A request and its expected fate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestStep {
    /// Worker index (default 0).
    #[serde(default)]
    pub vm: usize,
    /// Request headers in order, pseudo-headers included.
    pub headers: Vec<(String, String)>,
    /// A request body.
    #[serde(default)]
    pub body: Option<String>,
    /// What must happen.
    pub expect: Expect,
}

/// The expected outcome of a request.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The local response's status; absent means the request must go upstream (no local
    /// response, `Continue`).
    #[serde(default)]
    pub status: Option<u32>,
    /// Headers the local response must carry with exactly these values.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Headers the local response must not carry.
    #[serde(default)]
    pub absent_headers: Vec<String>,
    /// Text the body must contain.
    #[serde(default)]
    pub body_contains: Option<String>,
}

/// A metric's expected value.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricCheck {
    /// The name the filter defined it with.
    pub name: String,
    /// Counter or gauge value, or a histogram's sample count.
    pub value: u64,
}

/// Why a scenario could not be replayed at all.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file is not a scenario.
    #[error("the scenario is not valid: {0}")]
    Parse(String),
    /// A step names a worker the scenario did not start.
    #[error("step {step} names worker {vm}, but the scenario starts {workers}")]
    NoSuchWorker {
        /// Step number, from 1.
        step: usize,
        /// The index given.
        vm: usize,
        /// How many workers there are.
        workers: usize,
    },
    /// The host failed (a trap, an instantiation error).
    #[error("step {step}: {source}")]
    Host {
        /// Step number, from 1 (0: starting the workers).
        step: usize,
        /// What the host said.
        source: HostError,
    },
}

/// One step's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepReport {
    /// Step number, from 1.
    pub step: usize,
    /// What the step did, in a few words.
    pub summary: String,
    /// Every expectation that did not hold; empty when the step passed.
    pub mismatches: Vec<String>,
    /// Fuel the guest burned during the step.
    pub fuel: u64,
}

/// The whole replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Per step, in order.
    pub steps: Vec<StepReport>,
    /// Whether every worker's `proxy_on_configure` answered true.
    pub configured: bool,
}

/// A report and the workers' log lines (worker index = position).
#[derive(Clone, Debug)]
pub struct ReportWithLogs {
    /// The replay's result.
    pub report: Report,
    /// Each worker's log lines.
    pub logs: Vec<Vec<(crate::LogLevel, String)>>,
}

impl Report {
    /// True when every step passed.
    pub fn passed(&self) -> bool {
        self.configured && self.steps.iter().all(|s| s.mismatches.is_empty())
    }
}

impl Scenario {
    /// Parses a scenario file's text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        serde_json::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))
    }

    /// Replays the scenario on fresh workers of `host`.
    pub fn run(&self, host: &Host) -> Result<Report, ScenarioError> {
        self.run_with_logs(host).map(|r| r.report)
    }

    /// Like [`Scenario::run`], also handing back each worker's log lines.
    pub fn run_with_logs(&self, host: &Host) -> Result<ReportWithLogs, ScenarioError> {
        let host = match &self.known_clusters {
            Some(clusters) => host.fork().with_known_clusters(clusters.iter().cloned()),
            None => host.fork(),
        };
        let mut vms = Vec::with_capacity(self.workers);
        for _ in 0..self.workers.max(1) {
            vms.push(host.start_vm().map_err(|source| ScenarioError::Host { step: 0, source })?);
        }
        let configured = vms.iter().all(Vm::configure_result);
        let mut steps = Vec::with_capacity(self.steps.len());
        for (i, step) in self.steps.iter().enumerate() {
            let number = i + 1;
            let fuel_before: u64 = vms.iter().map(Vm::fuel_used_total).sum();
            let (summary, mismatches) = run_step(&host, &mut vms, number, step)?;
            let fuel = vms.iter().map(Vm::fuel_used_total).sum::<u64>() - fuel_before;
            steps.push(StepReport { step: number, summary, mismatches, fuel });
        }
        let logs = vms.iter().map(Vm::logs).collect();
        Ok(ReportWithLogs { report: Report { steps, configured }, logs })
    }
}

fn worker(vms: &mut [Vm], step: usize, vm: usize) -> Result<&mut Vm, ScenarioError> {
    let workers = vms.len();
    vms.get_mut(vm).ok_or(ScenarioError::NoSuchWorker { step, vm, workers })
}

fn host_error(step: usize) -> impl Fn(HostError) -> ScenarioError {
    move |source| ScenarioError::Host { step, source }
}

fn run_step(
    host: &Host,
    vms: &mut [Vm],
    number: usize,
    step: &Step,
) -> Result<(String, Vec<String>), ScenarioError> {
    let mut mismatches = Vec::new();
    let summary = match step {
        Step::AdvanceMs(ms) => {
            host.advance(std::time::Duration::from_millis(*ms));
            for vm in vms.iter_mut() {
                vm.run_due().map_err(host_error(number))?;
            }
            format!("advance {ms} ms")
        }
        Step::Tick(target) => {
            match target.vm {
                Some(i) => {
                    worker(vms, number, i)?.tick().map_err(host_error(number))?;
                }
                None => host.tick_all(vms).map_err(host_error(number))?,
            }
            "tick".to_owned()
        }
        Step::RespondHttpCall(respond) => {
            let vm = worker(vms, number, respond.call.vm)?;
            let body = match (&respond.body_json, &respond.body) {
                (Some(json), _) => json.to_string().into_bytes(),
                (None, Some(text)) => text.clone().into_bytes(),
                (None, None) => Vec::new(),
            };
            match find_call(vm, &respond.call) {
                Some(token) => {
                    let response = HttpCallResponse {
                        status: respond.status,
                        headers: respond.headers.clone(),
                        body,
                    };
                    vm.respond_http_call(token, response).map_err(host_error(number))?;
                }
                None => mismatches.push(no_call(vm, &respond.call)),
            }
            format!("answer an http call with {}", respond.status)
        }
        Step::FailHttpCall(call) => {
            let vm = worker(vms, number, call.vm)?;
            match find_call(vm, call) {
                Some(token) => vm.fail_http_call(token).map_err(host_error(number))?,
                None => mismatches.push(no_call(vm, call)),
            }
            "fail an http call".to_owned()
        }
        Step::ExpectPendingHttpCalls(expected) => {
            let pending = worker(vms, number, expected.vm)?.pending_http_calls().len();
            if pending != expected.count {
                mismatches.push(format!(
                    "expected {} pending http calls, found {pending}",
                    expected.count
                ));
            }
            format!("{} pending http calls", expected.count)
        }
        Step::Request(request) => {
            let vm = worker(vms, number, request.vm)?;
            let outcome = vm
                .send(Request {
                    headers: request
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
                        .collect(),
                    body: request.body.clone().map(String::into_bytes),
                    trailers: Vec::new(),
                })
                .map_err(host_error(number))?;
            check_outcome(&request.expect, &outcome, &mut mismatches);
            let path =
                request.headers.iter().find(|(k, _)| k == ":path").map_or("", |(_, v)| v.as_str());
            format!("request {path}")
        }
        Step::ExpectMetric(check) => {
            match host.metric(&check.name) {
                Some(value) if value == check.value => {}
                Some(value) => mismatches
                    .push(format!("metric {} is {value}, expected {}", check.name, check.value)),
                None => mismatches.push(format!("metric {} is not defined", check.name)),
            }
            format!("metric {}", check.name)
        }
    };
    Ok((summary, mismatches))
}

fn find_call(vm: &Vm, wanted: &CallMatch) -> Option<u32> {
    vm.pending_http_calls()
        .into_iter()
        .find(|c| {
            wanted.upstream.as_ref().is_none_or(|u| *u == c.upstream)
                && wanted.path_prefix.as_ref().is_none_or(|p| {
                    c.header(":path").is_some_and(|path| path.starts_with(p.as_str()))
                })
        })
        .map(|c| c.token)
}

fn no_call(vm: &Vm, wanted: &CallMatch) -> String {
    let pending: Vec<String> = vm
        .pending_http_calls()
        .iter()
        .map(|c| format!("{} {}", c.upstream, c.header(":path").unwrap_or("")))
        .collect();
    format!(
        "no pending http call to {} with a path starting {:?}; pending: {pending:?}",
        wanted.upstream.as_deref().unwrap_or("any cluster"),
        wanted.path_prefix.as_deref().unwrap_or("")
    )
}

fn check_outcome(expect: &Expect, outcome: &crate::RequestOutcome, mismatches: &mut Vec<String>) {
    let Some(status) = expect.status else {
        if let Some(response) = &outcome.local_response {
            mismatches.push(format!(
                "expected the request to go upstream, got a local {}",
                response.status
            ));
        } else if outcome.action != Action::Continue {
            mismatches.push(format!(
                "expected the request to go upstream, the filter answered {:?}",
                outcome.action
            ));
        }
        return;
    };
    let Some(response) = &outcome.local_response else {
        mismatches
            .push(format!("expected a local {status}, the request went on ({:?})", outcome.action));
        return;
    };
    if response.status != status {
        mismatches.push(format!("expected status {status}, got {}", response.status));
    }
    for (name, value) in &expect.headers {
        match response.header_bytes(name) {
            Some(actual) if actual == value.as_bytes() => {}
            Some(actual) => mismatches.push(format!(
                "header {name}: expected {value:?}, got {:?}",
                String::from_utf8_lossy(actual)
            )),
            None => mismatches.push(format!("header {name}: expected {value:?}, absent")),
        }
    }
    for name in &expect.absent_headers {
        if let Some(actual) = response.header_bytes(name) {
            mismatches.push(format!(
                "header {name} must be absent, got {:?}",
                String::from_utf8_lossy(actual)
            ));
        }
    }
    if let Some(needle) = &expect.body_contains {
        if !String::from_utf8_lossy(&response.body).contains(needle.as_str()) {
            mismatches.push(format!(
                "body {:?} does not contain {needle:?}",
                String::from_utf8_lossy(&response.body)
            ));
        }
    }
}

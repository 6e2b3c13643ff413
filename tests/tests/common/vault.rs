//! A whole simulated deployment for the issue-7 scenarios: Vault node doubles on 127.0.0.2-4,
//! the Consul double registering them as Vault would, the poller binary and real Envoy; plus a
//! probe that samples Envoy's answers in the background and checks them against what the
//! test says is true, so "zero wrong redirects" is a measured property, not a hope.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::task::JoinHandle;
use vault_redirect_doubles::{ConsulDouble, VaultCluster};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::wait_for;

/// The token the Vault doubles accept.
pub const TOKEN: &str = "s.e2e-token";

/// Poller flags that keep fault scenarios short: Consul failures turn into "no active node"
/// after 2 s, a hung Consul is noticed after about 2 s, retries stay under half a second.
pub const QUICK_POLLER: &[&str] = &[
    "--max-stale",
    "2s",
    "--consul-wait",
    "1s",
    "--consul-timeout",
    "1s",
    "--backoff-max",
    "500ms",
];

/// What the poller's `--max-stale` is in [`QUICK_POLLER`].
pub const QUICK_MAX_STALE: Duration = Duration::from_secs(2);

/// The plugin configuration with quick retries, so a filter that lost its poller is back
/// within a fraction of a second.
pub fn quick_plugin(extra: &str) -> String {
    format!(
        r#"{{"poller_cluster":"vault_redirect_poller","retry_initial_ms":50,"retry_max_ms":250,"tick_ms":50{extra}}}"#
    )
}

/// Vault doubles, Consul double, poller and Envoy.
pub struct VaultStack {
    pub vault: VaultCluster,
    pub consul: ConsulDouble,
    /// `None` while a test has killed it.
    pub poller: Option<Poller>,
    pub poller_addr: SocketAddr,
    pub poller_args: Vec<String>,
    pub envoy: Envoy,
}

impl VaultStack {
    /// vault-a active, vault-b and vault-c standby; the poller with `poller_args`; Envoy with
    /// `envoy` (built from the poller's address). Waits until Envoy redirects to vault-a.
    pub async fn start(
        poller_args: &[&str],
        envoy: impl FnOnce(SocketAddr) -> EnvoyOptions,
    ) -> Result<VaultStack> {
        let stack = Self::launch(poller_args, true, envoy).await?;
        stack.wait_for_location("vault-a", Duration::from_secs(20)).await?;
        Ok(stack)
    }

    /// Like [`VaultStack::start`] without waiting for the first redirect; with `consul_up`
    /// false, Consul is down before the poller starts.
    pub async fn launch(
        poller_args: &[&str],
        consul_up: bool,
        envoy: impl FnOnce(SocketAddr) -> EnvoyOptions,
    ) -> Result<VaultStack> {
        Self::launch_on(VaultCluster::start_three().await?, poller_args, consul_up, envoy).await
    }

    /// [`VaultStack::launch`] around these Vault doubles (TLS ones, say).
    pub async fn launch_on(
        vault: VaultCluster,
        poller_args: &[&str],
        consul_up: bool,
        envoy: impl FnOnce(SocketAddr) -> EnvoyOptions,
    ) -> Result<VaultStack> {
        vault.add_token(TOKEN);
        let consul = ConsulDouble::start(vault.consul_nodes()).await?;
        if !consul_up {
            consul.go_down().await;
        }
        let poller = Poller::start(&consul.url(), poller_args).await?;
        let poller_addr = poller.addr;
        let envoy = Envoy::start(envoy(poller_addr)).await?;
        let stack = VaultStack {
            vault,
            consul,
            poller: Some(poller),
            poller_addr,
            poller_args: poller_args.iter().map(|s| s.to_string()).collect(),
            envoy,
        };
        Ok(stack)
    }

    /// The default plain-http Envoy with `plugin_config`.
    pub async fn plain(poller_args: &[&str], plugin_config: &str) -> Result<VaultStack> {
        let config = plugin_config.to_string();
        Self::start(poller_args, move |p| EnvoyOptions {
            plugin_config: config,
            ..EnvoyOptions::new(p)
        })
        .await
    }

    /// A probe of this stack's Envoy every 10 ms, starting with "redirect to `active`".
    pub fn probe(&self, active: &str) -> Result<Probe> {
        Probe::start(self.envoy.url(PROBE_PATH), Duration::from_millis(10), self.redirect(active))
    }

    /// The probe's view of "redirected to `name`".
    pub fn redirect(&self, name: &str) -> Seen {
        Seen::Redirect(self.location(name, PROBE_PATH))
    }

    /// The URL a client should be sent to for `path` on node `name`.
    pub fn location(&self, name: &str, path: &str) -> String {
        format!("{}{path}", self.vault.api_addr(name).unwrap_or_default())
    }

    /// A failover: `name` wins the election (Vault doubles) and re-registers as active (Consul).
    pub fn switch(&self, name: &str) {
        self.vault.set_active(name);
        self.consul.set_active(name);
    }

    /// Waits until a fresh request through Envoy is redirected to `name`.
    pub async fn wait_for_location(&self, name: &str, timeout: Duration) -> Result<Duration> {
        let want = self.location(name, PROBE_PATH);
        let url = self.envoy.url(PROBE_PATH);
        let http = vault_redirect_e2e::client()?;
        let started = Instant::now();
        wait_for(&format!("a 307 to {want}"), timeout, || async {
            let r = http.get(&url).send().await.ok()?;
            let loc = r.headers().get("location")?.to_str().ok()?;
            (loc == want).then_some(())
        })
        .await?;
        Ok(started.elapsed())
    }

    /// Proxy mode: waits until `sys/leader` through Envoy is answered by `name` itself.
    pub async fn wait_for_proxying(&self, name: &str) -> Result<()> {
        let want = self.vault.api_addr(name).unwrap_or_default();
        let url = self.envoy.url("/v1/sys/leader");
        let http = vault_redirect_e2e::client()?;
        let last = Mutex::new(String::new());
        let waited = wait_for(
            &format!("sys/leader answered by {name}"),
            Duration::from_secs(20),
            || async {
                let r = http.get(&url).send().await.ok()?;
                let status = r.status();
                let text = r.text().await.ok()?;
                *last.lock().unwrap_or_else(|e| e.into_inner()) = format!("{status} {text}");
                let leader: serde_json::Value = serde_json::from_str(&text).ok()?;
                (leader["is_self"] == true && leader["leader_address"] == want.as_str())
                    .then_some(())
            },
        )
        .await;
        let last = last.into_inner().unwrap_or_else(|e| e.into_inner());
        waited.map_err(|e| anyhow::anyhow!("{e}; Envoy's last answer: {last}"))
    }

    /// Kills the poller (SIGKILL, as a crash or the OOM killer would).
    pub fn kill_poller(&mut self) {
        self.poller = None;
    }

    /// Starts the poller again on the same address, with the same flags.
    pub async fn restart_poller(&mut self) -> Result<()> {
        let args: Vec<&str> = self.poller_args.iter().map(String::as_str).collect();
        self.poller = Some(Poller::start_on(&self.consul.url(), self.poller_addr, &args).await?);
        Ok(())
    }

    /// The poller's `/metrics` value of `name` (the first sample whose line starts with it).
    pub async fn poller_metric(&self, name: &str) -> Result<f64> {
        let text = vault_redirect_e2e::client()?
            .get(format!("http://{}/metrics", self.poller_addr))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.rsplit(' ').next())
                    .and_then(|v| v.trim().parse().ok())
            })
            .ok_or_else(|| anyhow::anyhow!("no metric {name} in the poller's /metrics"))
    }

    /// Fails when Envoy's log shows the filter panicking, trapping or its VM failing, or the
    /// poller's log shows a panic.
    pub fn assert_no_failures(&self) -> Result<()> {
        self.assert_no_failures_except(&[])
    }

    /// [`VaultStack::assert_no_failures`], accepting Envoy log lines that contain one of
    /// `expected` (a test that provokes a failure on purpose).
    pub fn assert_no_failures_except(&self, expected: &[&str]) -> Result<()> {
        let failures: Vec<String> = self
            .envoy
            .filter_failures()
            .into_iter()
            .filter(|l| !expected.iter().any(|e| l.contains(e)))
            .collect();
        if !failures.is_empty() {
            bail!(
                "the filter failed in Envoy ({}):\n{}",
                self.envoy.proc.log_path().display(),
                failures.join("\n")
            );
        }
        if let Some(p) = &self.poller {
            let log = std::fs::read_to_string(p.proc.log_path()).unwrap_or_default();
            if log.contains("panicked") {
                bail!("the poller panicked:\n{}", p.proc.log_tail(30));
            }
        }
        Ok(())
    }
}

/// The path every probe and wait asks for.
pub const PROBE_PATH: &str = "/v1/secret/data/probe?version=1";

/// What Envoy answers one request with, reduced to what matters for correctness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A 307 to this Location.
    Redirect(String),
    /// A 503 in Vault's error shape with `Retry-After`.
    NoActive,
    /// Any other status.
    Status(u16),
    /// No answer (connection refused, reset, timeout).
    Failed(String),
}

/// One probe sample.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub seen: Seen,
    /// The state version from the filter's debug header, when the configuration turns it on.
    pub version: Option<u64>,
}

/// Samples Envoy's answer to [`PROBE_PATH`] every few milliseconds until dropped, and
/// checks the samples against a timeline of what is true.
pub struct Probe {
    samples: Arc<Mutex<Vec<Sample>>>,
    truth: Mutex<Vec<(Instant, Seen)>>,
    task: JoinHandle<()>,
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn sample(http: &reqwest::Client, url: &str) -> (Seen, Option<u64>) {
    match http.get(url).send().await {
        Err(e) => (Seen::Failed(e.to_string()), None),
        Ok(r) => {
            // `x-vault-redirect-state: version=<v>; age_ms=<ms>` (debug_header).
            let version = r
                .headers()
                .get("x-vault-redirect-state")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("version=")?.split(';').next()?.parse().ok());
            let status = r.status().as_u16();
            let loc = r.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
            let retry = r.headers().get("retry-after").is_some();
            let body = r.bytes().await.unwrap_or_default();
            let vault_error = serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v["errors"].is_array());
            let seen = match (status, loc) {
                (307, Some(l)) => Seen::Redirect(l),
                (503, _) if retry && vault_error => Seen::NoActive,
                (s, _) => Seen::Status(s),
            };
            (seen, version)
        }
    }
}

impl Probe {
    /// Starts sampling `url` every `every`, with `initial` as what is true now.
    pub fn start(url: String, every: Duration, initial: Seen) -> Result<Probe> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(5))
            .build()?;
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        // The initial truth holds from before the first sample: on a loaded machine the task
        // can take a sample before this thread runs again.
        let started = Instant::now();
        let task = tokio::spawn(async move {
            // Bounded: at most 10 minutes of sampling even if a test forgets to drop the probe.
            let end = Instant::now() + Duration::from_secs(600);
            while Instant::now() < end {
                let (seen, version) = sample(&http, &url).await;
                out.lock().unwrap_or_else(|e| e.into_inner()).push(Sample {
                    at: Instant::now(),
                    seen,
                    version,
                });
                tokio::time::sleep(every).await;
            }
        });
        Ok(Probe { samples, truth: Mutex::new(vec![(started, initial)]), task })
    }

    /// Records that from now on `seen` is the right answer.
    pub fn expect(&self, seen: Seen) {
        self.expect_from(Instant::now(), seen);
    }

    /// Records that from `at` on `seen` is the right answer.
    pub fn expect_from(&self, at: Instant, seen: Seen) {
        let mut truth = self.truth.lock().unwrap_or_else(|e| e.into_inner());
        truth.push((at, seen));
        truth.sort_by_key(|(t, _)| *t);
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the probe has taken `n` more samples (so a phase is really observed).
    pub async fn observe(&self, n: usize) -> Result<()> {
        let start = self.samples().len();
        wait_for(&format!("{n} more probe samples"), Duration::from_secs(30), || async {
            (self.samples().len() >= start + n).then_some(())
        })
        .await
    }

    /// Checks every sample: it must be an answer that was right at some moment between its
    /// truth's start and `lag` after that truth ended (propagation may be late, never early
    /// and never invented), and answers must never go back to an older truth once a newer
    /// one was seen. Returns how many samples were checked.
    pub fn check(&self, lag: Duration) -> Result<usize> {
        let samples = self.samples();
        let truth = self.truth.lock().unwrap_or_else(|e| e.into_inner()).clone();
        check_samples(&samples, &truth, lag)
    }
}

/// [`Probe::check`] on given samples and truth (`truth` sorted by time, never empty).
pub fn check_samples(
    samples: &[Sample],
    truth: &[(Instant, Seen)],
    lag: Duration,
) -> Result<usize> {
    let mut last = 0usize;
    let mut wrong = Vec::new();
    for s in samples {
        // The truths that could explain this answer: right then, or right until at most
        // `lag` before. Node names repeat when the active node cycles, so one answer can
        // match several truths; take the earliest one not before the truth already
        // reached, which keeps the timeline moving forward whenever it can (a lagging
        // view of an older change is not a step back).
        let window = |i: usize| truth.get(i + 1).map(|(t, _)| *t + lag);
        let explains = |i: usize| {
            let (start, seen) = &truth[i];
            *seen == s.seen && *start <= s.at && window(i).is_none_or(|e| s.at <= e)
        };
        match (last..truth.len()).find(|&i| explains(i)) {
            Some(i) => last = i,
            None if (0..last).any(explains) => wrong.push(format!(
                "{:?} at +{:?}: went back after {:?}",
                s.seen,
                s.at - truth[0].0,
                truth[last].1
            )),
            None => {
                wrong.push(format!("{:?} at +{:?}: never right then", s.seen, s.at - truth[0].0))
            }
        }
    }
    if samples.is_empty() {
        bail!("the probe took no sample");
    }
    if !wrong.is_empty() {
        let shown: Vec<_> = wrong.iter().take(10).cloned().collect();
        bail!(
            "{} wrong answers out of {} samples; truth {:?}; first ones:\n{}",
            wrong.len(),
            samples.len(),
            truth.iter().map(|(t, s)| (*t - truth[0].0, s.clone())).collect::<Vec<_>>(),
            shown.join("\n")
        );
    }
    Ok(samples.len())
}

/// `p` (0-100) percentile of `values`, nearest rank.
pub fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

//! Fan-out measurement: one poller (the real binary, its own process, so each side keeps its
//! own file descriptors) holding N concurrent long-polls on loopback, then one Consul change;
//! how long until each waiter has the new version, and the poller's RSS while they wait.
//!
//! Used by the bounded test (tests/tests/fanout.rs) and the full bench (`fanout` binary,
//! scripts/fanout-bench.sh). Every loop here is bounded in count and time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};

use crate::poller::Poller;
use crate::proc::{cpu_time, rss_kib};

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// Waiters opened (all of them parked before the change).
    pub waiters: usize,
    /// Poller RSS with every waiter parked, in KiB.
    pub rss_kib: u64,
    /// Poller RSS before any waiter connected, in KiB.
    pub idle_rss_kib: u64,
    /// The version every waiter was asked to wait past, and the one the change produced.
    pub old_version: u64,
    /// The version the Consul change produced.
    pub new_version: u64,
    /// Per waiter, from the Consul change to its whole answer, sorted.
    pub latencies: Vec<Duration>,
    /// How long opening the waiters took.
    pub connect_time: Duration,
    /// CPU time (user + system) the poller spent from the change until every waiter had its
    /// answer.
    pub answer_cpu: Duration,
}

impl Report {
    /// The `q` quantile (0..=1) of the latencies, nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1]
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{} waiters: poller RSS {:.1} MB with all parked ({:.1} MB idle); change to last answer p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; poller CPU for the answers {:.0} ms; opening them took {:.1} s",
            self.waiters,
            self.rss_kib as f64 / 1024.0,
            self.idle_rss_kib as f64 / 1024.0,
            ms(self.quantile(0.50)),
            ms(self.quantile(0.99)),
            ms(self.quantile(1.0)),
            ms(self.answer_cpu),
            self.connect_time.as_secs_f64()
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The soft and hard `RLIMIT_NOFILE` of this process, from /proc/self/limits.
pub fn fd_limits() -> Result<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/limits").context("reading /proc/self/limits")?;
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no \"Max open files\" in /proc/self/limits")?;
    let nums: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    match nums.as_slice() {
        [soft, hard, ..] => Ok((*soft, *hard)),
        _ => bail!("cannot read the limits in {line:?}"),
    }
}

/// Raises this process's soft file limit to its hard limit (with util-linux `prlimit`, as
/// `ulimit -n` would in a shell), so `needed` descriptors fit; children inherit it.
pub fn raise_fd_limit(needed: u64) -> Result<()> {
    let (soft, hard) = fd_limits()?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        bail!("{needed} file descriptors needed, but the hard limit is {hard}: raise it (ulimit -Hn as root, or limits.conf)");
    }
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
        .status()
        .context("running prlimit (util-linux) to raise the soft file limit; or run under `ulimit -n $(ulimit -Hn)`")?;
    let (soft, _) = fd_limits()?;
    if !status.success() || soft < needed {
        bail!("could not raise the soft file limit to {hard} (now {soft}); run under `ulimit -n {hard}`");
    }
    Ok(())
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; returns the body.
async fn read_response(stream: &mut TcpStream) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
            if !head.starts_with("HTTP/1.1 200") {
                bail!("unexpected answer: {}", head.lines().next().unwrap_or_default());
            }
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .context("answer without Content-Length")?;
            let body_start = end + 4;
            if buf.len() >= body_start + len {
                return Ok(buf[body_start..body_start + len].to_vec());
            }
        }
        if buf.len() > 64 * 1024 {
            bail!("answer larger than 64 KiB");
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed before a whole answer");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Parses the `version` of a state document.
fn version_of(body: &[u8]) -> Result<u64> {
    Ok(vault_redirect_core::StateDoc::parse(body).context("reading the state document")?.version)
}

/// The poller's open long-polls, from its metrics.
async fn waiters_parked(client: &reqwest::Client, poller: &Poller) -> Result<u64> {
    let text = client.get(format!("http://{}/metrics", poller.addr)).send().await?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("vault_redirect_longpoll_waiters "))
        .and_then(|v| v.trim().parse().ok())
        .context("no vault_redirect_longpoll_waiters in the poller's metrics")
}

/// Opens `waiters` long-polls on one poller process, changes the active node in Consul, and
/// measures. Errors if any waiter does not get the new version within `answer_within`.
pub async fn run(waiters: usize, answer_within: Duration) -> Result<Report> {
    // Each waiter is one socket here and one in the poller, plus room for everything else.
    raise_fd_limit(waiters as u64 + 512)?;
    let consul = ConsulDouble::start(vec![
        VaultNode::new("vault-a", "10.0.0.1", 8200, Role::Active),
        VaultNode::new("vault-b", "10.0.0.2", 8200, Role::Standby),
        VaultNode::new("vault-c", "10.0.0.3", 8200, Role::Standby),
    ])
    .await
    .context("starting the Consul double")?;
    // Logs at warn: an info line per request would measure the logger.
    let poller = Poller::start_with_env(
        &consul.url(),
        crate::free_addr()?,
        &["--consul-wait", "5m"],
        &[("RUST_LOG", "warn".to_string())],
    )
    .await?;
    let pid = poller.proc.pid().context("the poller has no pid")?;
    let client = crate::client()?;
    let old = crate::wait_for("the poller's first active node", Duration::from_secs(20), || {
        let p = &poller;
        async move { p.state().await.ok().filter(|d| d.active.is_some()).map(|d| d.version) }
    })
    .await?;
    let idle_rss_kib = rss_kib(pid)?;

    // Open the waiters a few hundred at a time: a burst of 10,000 SYNs would overflow the
    // listen backlog and measure TCP retransmits instead of the poller.
    let connect_started = Instant::now();
    let gate = Arc::new(Semaphore::new(256));
    let (changed_tx, changed_rx) = tokio::sync::watch::channel::<Option<Instant>>(None);
    let addr = poller.addr;
    let mut tasks = Vec::with_capacity(waiters);
    let (parked_tx, mut parked_rx) = tokio::sync::mpsc::channel::<Result<()>>(waiters.max(1));
    for _ in 0..waiters {
        let gate = gate.clone();
        let parked_tx = parked_tx.clone();
        let mut changed_rx = changed_rx.clone();
        tasks.push(tokio::spawn(async move {
            let opened = async {
                let _permit = gate.acquire().await?;
                let mut s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                // Keep-alive, as Envoy holds its connections to the poller.
                let req =
                    format!("GET /v1/active?index={old}&wait=5m HTTP/1.1\r\nHost: poller\r\n\r\n");
                s.write_all(req.as_bytes()).await?;
                anyhow::Ok(s)
            }
            .await;
            let mut s = match opened {
                Ok(s) => {
                    let _ = parked_tx.send(Ok(())).await;
                    s
                }
                Err(e) => {
                    let _ = parked_tx.send(Err(anyhow::anyhow!("opening a waiter: {e}"))).await;
                    return Err(e);
                }
            };
            let body = read_response(&mut s).await?;
            let answered = Instant::now();
            let version = version_of(&body)?;
            let changed = changed_rx.wait_for(Option::is_some).await?.unwrap_or(answered);
            if answered < changed {
                bail!("answered (version {version}) before the change");
            }
            Ok((version, answered.duration_since(changed)))
        }));
    }
    drop(parked_tx);
    for _ in 0..waiters {
        match tokio::time::timeout(Duration::from_secs(120), parked_rx.recv()).await {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(e))) => return Err(e),
            Ok(None) => bail!("a waiter ended before it was opened"),
            Err(_) => bail!("opening {waiters} waiters took more than 120 s"),
        }
    }
    // Requests written is not parked: wait until the poller counts every one.
    let parked = crate::wait_for("every long-poll to be parked in the poller", Duration::from_secs(60), || {
        let (client, poller) = (&client, &poller);
        async move { waiters_parked(client, poller).await.ok().filter(|n| *n >= waiters as u64) }
    })
    .await;
    if let Err(e) = parked {
        let now = waiters_parked(&client, &poller).await.unwrap_or(0);
        bail!("{e} ({now} of {waiters} parked)");
    }
    let connect_time = connect_started.elapsed();
    // Let the allocator settle before reading RSS.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss = rss_kib(pid)?;

    let cpu_before = cpu_time(pid)?;
    let changed_at = Instant::now();
    consul.set_active("vault-b");
    let _ = changed_tx.send(Some(changed_at));
    let new_version = consul.index() << 16;

    let mut latencies = Vec::with_capacity(waiters);
    let deadline = tokio::time::Instant::now() + answer_within;
    for t in tasks {
        let (version, took) = match tokio::time::timeout_at(deadline, t).await {
            Ok(joined) => joined.context("a waiter task failed")??,
            Err(_) => bail!("not every waiter answered within {answer_within:?} of the change"),
        };
        if version <= old {
            bail!("a waiter got version {version}, not newer than {old}");
        }
        latencies.push(took);
    }
    latencies.sort();
    let answer_cpu = cpu_time(pid)?.saturating_sub(cpu_before);
    drop(poller);
    consul.shutdown().await;
    Ok(Report {
        waiters,
        rss_kib: rss,
        idle_rss_kib,
        old_version: old,
        new_version,
        latencies,
        connect_time,
        answer_cpu,
    })
}

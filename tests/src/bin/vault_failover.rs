//! The vault source's figures (issue 16, section 6) on a real three-node OpenBao cluster: how
//! long after the new active node first answers 200 on `sys/health` Envoy's `Location` names
//! it, over real step-downs; the probe load the poller puts on each node; the poller's CPU and
//! RSS while it probes an idle cluster. Prints a Markdown report. Not part of the test
//! command; run it with `scripts/vault-bench.sh`. It only measures: it asserts no timing.
//!
//! Env: `FAILOVERS` (moves per probe interval, default 20), `IDLE_SECONDS` (default 60),
//! `PROBE_INTERVALS` (comma-separated poller flags, default `500ms,100ms`; `500ms` is the
//! poller's default and is then passed as no flag at all).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vault_redirect_e2e::bench::random_below;
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::openbao::{probe_health, ClusterOptions, OpenBaoCluster};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::proc::{cpu_ticks, rss_kib};
use vault_redirect_e2e::{client, wait_for};

/// The path clients ask Envoy for; the `Location` is the active node's `api_addr` plus it.
const PATH: &str = "/v1/secret/data/bench";
/// How often the bench samples every node's `sys/health` and Envoy's answer.
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// The poller's default `--vault-probe-interval`.
const DEFAULT_INTERVAL: &str = "500ms";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let failovers: usize = env_or("FAILOVERS", 20);
    let idle = Duration::from_secs(env_or("IDLE_SECONDS", 60));
    let intervals: Vec<String> = env_or("PROBE_INTERVALS", "500ms,100ms".to_string())
        .split(',')
        .map(str::to_string)
        .collect();
    let cluster = OpenBaoCluster::start(ClusterOptions::default()).await?;
    let first = cluster.wait_until_settled(Duration::from_secs(60)).await?;
    eprintln!("cluster formed in {:.1} s, {first} active", cluster.formed_in().as_secs_f64());
    let mut rows = Vec::new();
    for interval in &intervals {
        rows.push(measure(&cluster, interval, failovers, idle).await?);
    }
    println!("| --vault-probe-interval | moves | p50 ms | p99 ms | max ms | min ms | step-downs with no move in 10 s | sys/health req/s per node | sys/leader req/s per node | poller CPU (ticks / {} s) | poller RSS KiB |", idle.as_secs());
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!("{r}");
    }
    Ok(())
}

/// One probe interval's figures: the poller (on the real nodes) and Envoy idle for `idle`
/// (its CPU and RSS), a second poller with the same flags probing through counting proxies
/// meanwhile (the load), then `failovers` moves of the active node.
async fn measure(
    cluster: &OpenBaoCluster,
    interval: &str,
    failovers: usize,
    idle: Duration,
) -> Result<String> {
    let direct: Vec<String> = cluster.nodes().iter().map(|n| n.api_addr()).collect();
    let poller = vault_poller(&direct, interval).await?;
    let envoy = Envoy::start(EnvoyOptions { concurrency: 2, ..EnvoyOptions::new(poller.addr) })
        .await
        .context("starting Envoy")?;
    let active = cluster.wait_until_settled(Duration::from_secs(60)).await?;
    let want = format!("{}{PATH}", cluster.api_addr(&active)?);
    let http = client()?;
    wait_for("Envoy to redirect to the active node", Duration::from_secs(30), || async {
        (vault_redirect_e2e::location(&http, &envoy.url(PATH)).await.ok()?.1? == want).then_some(())
    })
    .await?;

    // Idle: the measured poller's CPU and RSS, and the load a twin puts on the nodes.
    let proxies = Proxies::start(cluster).await?;
    let twin = vault_poller(&proxies.urls, interval).await?;
    let pid = poller.proc.pid().context("the poller has no pid")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ticks0, counts0) = (cpu_ticks(pid)?, proxies.counts());
    tokio::time::sleep(idle).await;
    let (ticks, counts1, rss) = (cpu_ticks(pid)? - ticks0, proxies.counts(), rss_kib(pid)?);
    let secs = idle.as_secs_f64();
    let nodes = cluster.nodes().len() as f64;
    let health = (counts1.0 - counts0.0) as f64 / secs / nodes;
    let leader = (counts1.1 - counts0.1) as f64 / secs / nodes;
    twin.proc.stop(Duration::from_secs(5)).await?;
    drop(proxies);
    eprintln!("{interval}: idle CPU {ticks} ticks, RSS {rss} KiB, {health:.2} health req/s/node");

    // Failovers, with both samplers running throughout.
    let samplers = Samplers::start(cluster, &envoy)?;
    let period = interval_flag(interval)?;
    let mut lags = Vec::new();
    let mut kept = 0;
    while lags.len() < failovers {
        let old = cluster.wait_until_settled(Duration::from_secs(60)).await?;
        // The loop restarts right after a poller round named the new node, so without a
        // random wait every step-down would fall at the same phase of the poller's rounds and
        // every lag would be about the same fraction of the interval; real failovers come at
        // any phase.
        tokio::time::sleep(random_below(period)).await;
        cluster.call(&old, "PUT", "sys/step-down", None).await?;
        let moved = wait_for("another node to take over", Duration::from_secs(10), || async {
            samplers.active().filter(|a| *a != old)
        })
        .await;
        let Ok(new) = moved else {
            kept += 1;
            continue;
        };
        let want = format!("{}{PATH}", cluster.api_addr(&new)?);
        let named = wait_for("Envoy to name the new node", Duration::from_secs(30), || async {
            samplers.location_since(&want)
        })
        .await?;
        let first_200 = samplers.first_200(&new).context("no first 200 recorded")?;
        let lag = if named >= first_200 {
            (named - first_200).as_secs_f64() * 1e3
        } else {
            -((first_200 - named).as_secs_f64() * 1e3)
        };
        eprintln!("{interval}: move {} {old} -> {new}: {lag:.1} ms", lags.len() + 1);
        lags.push(lag);
    }
    samplers.stop();
    envoy.proc.stop(Duration::from_secs(5)).await?;
    poller.proc.stop(Duration::from_secs(5)).await?;

    lags.sort_by(f64::total_cmp);
    let pct = |p: usize| lags[((lags.len() - 1) * p).div_ceil(100)];
    Ok(format!(
        "| {interval} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {kept} | {health:.2} | {leader:.2} | {ticks} ({:.2} % of a core) | {rss} |",
        lags.len(),
        pct(50),
        pct(99),
        lags[lags.len() - 1],
        lags[0],
        ticks as f64 / secs,
    ))
}

/// `500ms`, `1s`: the probe interval flags this bench passes.
fn interval_flag(flag: &str) -> Result<Duration> {
    let (number, unit) =
        flag.split_at(flag.find(|c: char| !c.is_ascii_digit()).unwrap_or(flag.len()));
    let n: u64 = number.parse().with_context(|| format!("not a duration: {flag:?}"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        _ => bail!("not a duration in ms or s: {flag:?}"),
    }
}

/// The poller on the vault source probing `nodes`, with `interval` (no flag for the default).
async fn vault_poller(nodes: &[String], interval: &str) -> Result<Poller> {
    let extra: &[&str] =
        if interval == DEFAULT_INTERVAL { &[] } else { &["--vault-probe-interval", interval] };
    Poller::start_vault(nodes, extra).await
}

/// What the samplers saw: per node, since when it answers 200 (`None` while it does not);
/// Envoy's `Location` and since when.
#[derive(Default)]
struct Seen {
    since_200: HashMap<String, Option<Instant>>,
    location: Option<(String, Instant)>,
}

/// Tasks sampling every node's `sys/health` and Envoy's answer every [`SAMPLE_EVERY`].
struct Samplers {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
}

impl Samplers {
    fn start(cluster: &OpenBaoCluster, envoy: &Envoy) -> Result<Samplers> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        for node in cluster.nodes() {
            let (seen, stop, http) = (seen.clone(), stop.clone(), http.clone());
            let (name, url) = (node.name.clone(), node.url("/v1/sys/health"));
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let code = probe_health(&http, &url).await.map(|h| h.code).ok();
                    let at = Instant::now();
                    if let Ok(mut seen) = seen.lock() {
                        let since = seen.since_200.entry(name.clone()).or_default();
                        match (code, *since) {
                            (Some(200), None) => *since = Some(at),
                            (Some(200), Some(_)) => {}
                            _ => *since = None,
                        }
                    }
                    tokio::time::sleep(SAMPLE_EVERY).await;
                }
            });
        }
        let (seen2, stop2, url) = (seen.clone(), stop.clone(), envoy.url(PATH));
        tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                let redirect = match vault_redirect_e2e::location(&http, &url).await {
                    Ok((307, Some(loc))) => Some(loc),
                    _ => None,
                };
                let at = Instant::now();
                if let Ok(mut seen) = seen2.lock() {
                    match redirect {
                        Some(loc) if seen.location.as_ref().map(|(l, _)| l) != Some(&loc) => {
                            seen.location = Some((loc, at));
                        }
                        Some(_) => {}
                        None => seen.location = None,
                    }
                }
                tokio::time::sleep(SAMPLE_EVERY).await;
            }
        });
        Ok(Samplers { seen, stop })
    }

    /// The one node the health sampler saw answering 200 last, if exactly one.
    fn active(&self) -> Option<String> {
        let seen = self.seen.lock().ok()?;
        let mut active = seen.since_200.iter().filter(|(_, s)| s.is_some()).map(|(n, _)| n);
        match (active.next(), active.next()) {
            (Some(one), None) => Some(one.clone()),
            _ => None,
        }
    }

    /// When node `name`'s current run of 200s began.
    fn first_200(&self, name: &str) -> Option<Instant> {
        *self.seen.lock().ok()?.since_200.get(name)?
    }

    /// Since when Envoy answers with a 307 to `location`, if it does now.
    fn location_since(&self, location: &str) -> Option<Instant> {
        let seen = self.seen.lock().ok()?;
        seen.location.as_ref().filter(|(l, _)| l == location).map(|(_, at)| *at)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Samplers {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One TCP proxy per node on a free 127.0.0.1 port, counting the HTTP requests the poller
/// sends through it: the audit log never records the unauthenticated `sys/health`.
struct Proxies {
    urls: Vec<String>,
    health: Arc<AtomicU64>,
    leader: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Proxies {
    async fn start(cluster: &OpenBaoCluster) -> Result<Proxies> {
        let (health, leader) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut urls = Vec::new();
        let mut tasks = Vec::new();
        for node in cluster.nodes() {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            urls.push(format!("http://{}", listener.local_addr()?));
            let upstream = format!("{}:{}", node.ip, node.api_port);
            let (health, leader) = (health.clone(), leader.clone());
            tasks.push(tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let (upstream, health, leader) =
                        (upstream.clone(), health.clone(), leader.clone());
                    tokio::spawn(async move {
                        if let Ok(up) = TcpStream::connect(&upstream).await {
                            relay(conn, up, health, leader).await;
                        }
                    });
                }
            }));
        }
        if urls.is_empty() {
            bail!("the cluster has no nodes");
        }
        Ok(Proxies { urls, health, leader, tasks })
    }

    /// `(sys/health, sys/leader)` requests relayed so far, over all nodes.
    fn counts(&self) -> (u64, u64) {
        (self.health.load(Ordering::Relaxed), self.leader.load(Ordering::Relaxed))
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Copies both ways; counts request lines in the client's bytes (a few bytes kept across
/// reads, so a request line split between two reads still counts once).
async fn relay(client: TcpStream, up: TcpStream, health: Arc<AtomicU64>, leader: Arc<AtomicU64>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    let to_client = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
    });
    let mut buf = vec![0u8; 16 * 1024];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = match cr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(chunk) = buf.get(..n) else { break };
        let mut window = std::mem::take(&mut tail);
        let carried = window.len();
        window.extend_from_slice(chunk);
        health.fetch_add(count_after(&window, b"GET /v1/sys/health", carried), Ordering::Relaxed);
        leader.fetch_add(count_after(&window, b"GET /v1/sys/leader", carried), Ordering::Relaxed);
        tail = window.get(window.len().saturating_sub(32)..).unwrap_or_default().to_vec();
        if uw.write_all(chunk).await.is_err() {
            break;
        }
    }
    to_client.abort();
}

/// Occurrences of `needle` in `hay` that end after byte `carried` (the ones not counted in
/// the previous window).
fn count_after(hay: &[u8], needle: &[u8], carried: usize) -> u64 {
    hay.windows(needle.len())
        .enumerate()
        .filter(|(i, w)| *w == needle && i + needle.len() > carried)
        .count() as u64
}

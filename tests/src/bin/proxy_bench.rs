//! Proxy mode against Envoy's own routing (issue 18), in one run: (A) Envoy with the filter in
//! proxy mode (envoy/envoy-proxy.yaml.tmpl; the release poller, on the Consul double, names the
//! upstream as the active node) and (B) the same listener and route without the filter,
//! routing to a STATIC cluster that holds just that node (envoy/bench-native-proxy.yaml.tmpl).
//! Both run at once and are loaded in turn by wrk (`bench::load`: 2 threads, 32 connections,
//! the Envoy process's CPU from /proc), the order alternating from round to round, for
//! BENCH_ROUNDS rounds (default 7) of BENCH_SECONDS (default 5), at each --concurrency in
//! BENCH_CONCURRENCY (default `1,2`). Prints every round, and the medians of the per-round
//! ratios A/B (CPU per request, throughput). The machine's speed of the moment moves every
//! process's CPU per request together; the upstream does the same work for every request, so
//! a third figure counts Envoy's CPU per request in the upstream's, measured in the same
//! load (a busier upstream batches more per wake-up, which flatters the slower contender a
//! little). BENCH_ABLATIONS=1 adds two contenders that split
//! A's cost over B: (C) B with its cluster turned ORIGINAL_DST and the client sending the
//! header itself (the cluster type alone), (D) A's filter with a route to a static cluster
//! (the filter alone); (E) A with the access log docs/filter.md shows (what shipping one in
//! the template would cost); (F) A with the raw-ABI proxy module (`bench::raw_abi_proxy_module`:
//! the least a module can do to point a request at a node) instead of the filter, and (G) D
//! with a raw-ABI module that only continues (Envoy's wasm machinery alone).
//!
//! The upstream is this binary in a process of its own (`proxy_bench upstream ADDR`, one
//! epoll thread), answering every request with the same small Vault KV answer, cheap enough
//! not to be the bottleneck; its CPU per request and its share of a core are printed with
//! each load. The
//! poller is the one `poller::binary` finds (it only answers the filters' long-polls here).
//!
//! Run it with `scripts/proxy-bench.sh` (wrk, the poller, the filter). Like `ab`, it only
//! starts processes and reads their CPU time, so its own build profile does not matter.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::TcpStream;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::bench::{self, load_average, median, LoadResult, CONNECTIONS};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::proc::{cpu_ticks, Proc};
use vault_redirect_e2e::{free_port, target_dir, wait_for, workspace_root};

const PATH: &str = "/v1/secret/data/app?version=2";

/// What the upstream answers: a KV v2 read as Vault words it.
const ANSWER_BODY: &str = r#"{"request_id":"5c1e0a7e-6f0b-4d38-9d0e-2b8f6c1d9a11","lease_id":"","renewable":false,"lease_duration":0,"data":{"data":{"password":"correct horse battery staple","user":"app"},"metadata":{"created_time":"2025-01-01T00:00:00.000000000Z","custom_metadata":null,"deletion_time":"","destroyed":false,"version":2}},"wrap_info":null,"warnings":null,"auth":null}"#;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let [_, mode, addr] = args.as_slice() {
        if mode == "upstream" {
            return upstream(addr.parse().context("upstream ADDR")?);
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

/// Answers every HTTP/1.1 request on `addr` with [`ANSWER_BODY`], keeping connections open:
/// one thread, one epoll set, non-blocking sockets, so a busy upstream answers many
/// connections per wake-up. Its own code is a few comparisons per request; the rest is std
/// and the kernel, which cost the same in a debug build. Its CPU per request is printed with
/// every load.
fn upstream(addr: SocketAddr) -> Result<()> {
    use std::collections::HashMap;
    use std::io::{ErrorKind, Read, Write};
    use std::os::fd::AsRawFd;

    const LISTENER: u64 = u64::MAX;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{ANSWER_BODY}",
        ANSWER_BODY.len()
    );
    // SAFETY: epoll_create1(2) with no flags; the descriptor lives as long as the process.
    let epoll = unsafe { libc::epoll_create1(0) };
    if epoll < 0 {
        return Err(std::io::Error::last_os_error()).context("epoll_create1");
    }
    let watch = |fd: i32, token: u64| -> Result<()> {
        let mut event = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: adding a descriptor we own to our epoll set, with a valid event.
        if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } != 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_ctl");
        }
        Ok(())
    };
    watch(listener.as_raw_fd(), LISTENER)?;
    let mut conns: HashMap<u64, (std::net::TcpStream, Vec<u8>)> = HashMap::new();
    let mut next = 0u64;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut chunk = vec![0u8; 16 * 1024];
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        // SAFETY: `events` holds 256 entries for the kernel to fill.
        let n = unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), 256, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("epoll_wait");
        }
        for event in events.iter().take(n as usize) {
            let token = event.u64;
            if token == LISTENER {
                while let Ok((conn, _)) = listener.accept() {
                    conn.set_nonblocking(true)?;
                    conn.set_nodelay(true)?;
                    next += 1;
                    watch(conn.as_raw_fd(), next)?;
                    conns.insert(next, (conn, Vec::with_capacity(16 * 1024)));
                }
                continue;
            }
            let Some((conn, buf)) = conns.get_mut(&token) else { continue };
            let open = match conn.read(&mut chunk) {
                Ok(0) => false,
                Ok(got) => {
                    buf.extend_from_slice(&chunk[..got]);
                    while let Some(head) = find_head_end(buf) {
                        let whole = head + 4 + content_length(&buf[..head]);
                        if buf.len() < whole {
                            break;
                        }
                        buf.drain(..whole);
                        out.extend_from_slice(answer.as_bytes());
                    }
                    // A few hundred bytes into an empty socket buffer: written at once.
                    let written = out.is_empty() || conn.write_all(&out).is_ok();
                    out.clear();
                    written
                }
                Err(e) => e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted,
            };
            if !open {
                // Dropping the socket closes it, which also takes it out of the epoll set.
                conns.remove(&token);
            }
        }
    }
}

/// Where the first request head in `buf` ends (the index of its blank line's `\r`).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = buf.get(from..)?.iter().position(|b| *b == b'\n') {
        let at = from + i;
        if at >= 3 && &buf[at - 3..=at] == b"\r\n\r\n" {
            return Some(at - 3);
        }
        from = at + 1;
    }
    None
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// A contender's name and each round's ratios to (B): CPU per request, throughput, and CPU per
/// request counted in the upstream's CPU per request of the same load.
type Ratios = (String, [Vec<f64>; 3]);

/// One contender's load and what the upstream spent meanwhile.
struct Measured {
    load: LoadResult,
    upstream_us_per_req: f64,
    upstream_core_share: f64,
}

/// One Envoy under load, and the header its requests carry (for the ablation whose client
/// names the node itself).
struct Contender {
    name: &'static str,
    envoy: Envoy,
    header: Option<String>,
}

impl Contender {
    async fn start(
        name: &'static str,
        opts: EnvoyOptions,
        concurrency: u32,
        header: Option<String>,
    ) -> Result<Contender> {
        let envoy = Envoy::start(EnvoyOptions { concurrency, ..opts }).await.context(name)?;
        Ok(Contender { name, envoy, header })
    }

    /// wrk for `secs` against this Envoy, with the CPU the Envoy and the upstream spent.
    async fn measure(&self, upstream: u32, secs: u64) -> Result<Measured> {
        let pid = self.envoy.proc.pid().context("envoy pid")?;
        let headers: Vec<&str> = self.header.iter().map(String::as_str).collect();
        let url = self.envoy.url(PATH);
        let before = cpu_ticks(upstream)?;
        let load =
            bench::load_with_headers(self.name, &url, &headers, pid, Duration::from_secs(secs))
                .await?;
        let ticks = cpu_ticks(upstream)?.saturating_sub(before) as f64;
        Ok(Measured {
            upstream_us_per_req: ticks * 10_000.0 / load.requests.max(1) as f64,
            upstream_core_share: ticks / 100.0 / secs as f64,
            load,
        })
    }
}

/// The ablations' bootstraps, written under target/bench: (C) the native template with its
/// STATIC cluster turned ORIGINAL_DST (what the cluster type costs, without the filter),
/// (D) the proxy template routing to a STATIC cluster of `upstream` (what the filter costs,
/// without ORIGINAL_DST), (E) the proxy template with docs/filter.md's access log. Derived
/// when the bench runs, so they follow the templates and the documentation.
fn ablation_templates(upstream: SocketAddr) -> Result<(String, String, String)> {
    let read = |name: &str| {
        let path = workspace_root().join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    let native = read("envoy/bench-native-proxy.yaml.tmpl")?;
    let (head, _) = native
        .split_once("    type: STATIC\n")
        .context("bench-native-proxy.yaml.tmpl has no STATIC cluster last")?;
    let c = format!(
        "{head}    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 2s\n    cleanup_interval: 60s\n    original_dst_lb_config:\n      use_http_header: true\n"
    );
    let proxy = read("envoy/envoy-proxy.yaml.tmpl")?;
    if proxy.matches("                  cluster: vault_active\n").count() != 1 {
        bail!("envoy-proxy.yaml.tmpl has no single route to vault_active");
    }
    let d = format!(
        "{}  - name: vault_static\n    type: STATIC\n    lb_policy: ROUND_ROBIN\n    connect_timeout: 2s\n    load_assignment:\n      cluster_name: vault_static\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: {}, port_value: {} }} }} }}\n",
        proxy.replace("                  cluster: vault_active\n", "                  cluster: vault_static\n"),
        upstream.ip(),
        upstream.port()
    );
    // (E): A with the access log docs/filter.md shows operators, to stdout (the log file).
    let doc = read("docs/filter.md")?;
    let snippet = doc
        .split_once("```yaml\naccess_log:\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(body, _)| format!("access_log:\n{body}"))
        .context("docs/filter.md has no access_log snippet")?;
    let indented: String = snippet.lines().map(|l| format!("          {l}\n")).collect();
    const STAT_PREFIX: &str = "          stat_prefix: vault_redirect\n";
    if proxy.matches(STAT_PREFIX).count() != 1 {
        bail!("envoy-proxy.yaml.tmpl has no single stat_prefix line");
    }
    let e = proxy.replace(STAT_PREFIX, &format!("{STAT_PREFIX}{indented}"));
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let mut paths = Vec::new();
    for (name, yaml) in [
        ("ablation-original-dst.yaml.tmpl", c),
        ("ablation-filter-static.yaml.tmpl", d),
        ("ablation-access-log.yaml.tmpl", e),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
        paths.push(path.display().to_string());
    }
    let [c, d, e] =
        <[String; 3]>::try_from(paths).map_err(|_| anyhow::anyhow!("three templates"))?;
    Ok((c, d, e))
}

/// The raw-ABI modules (`bench::raw_abi_proxy_module`) under target/bench: one pointing every
/// request at `upstream`, one only continuing.
fn raw_modules(upstream: SocketAddr) -> Result<(PathBuf, PathBuf)> {
    let dir = target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let (raw, noop) = (dir.join("raw_abi_proxy.wasm"), dir.join("raw_abi_continue.wasm"));
    std::fs::write(&raw, bench::raw_abi_proxy_module(Some(&upstream.to_string()))?)?;
    std::fs::write(&noop, bench::raw_abi_proxy_module(None)?)?;
    Ok((raw, noop))
}

async fn bench() -> Result<()> {
    let seconds = env_or("BENCH_SECONDS", 5);
    let rounds = env_or("BENCH_ROUNDS", 7);
    let concurrencies: Vec<u32> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .map(|c| c.trim().parse().context("BENCH_CONCURRENCY: a list of worker counts"))
        .collect::<Result<_>>()?;
    let load_before = load_average();

    // The upstream: the active "Vault node" for both contenders.
    let addr = SocketAddr::from(([127, 0, 0, 2], free_port("127.0.0.2")?));
    let exe = std::env::current_exe()?;
    let mut upstream = Proc::spawn("upstream", &exe, &["upstream".into(), addr.to_string()], &[])?;
    wait_for("the upstream to accept", Duration::from_secs(10), || async {
        TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await?;
    upstream.check_alive()?;
    let upstream_pid = upstream.pid().context("upstream pid")?;
    let consul = ConsulDouble::start(vec![
        VaultNode::new("vault-a", "127.0.0.2", addr.port(), Role::Active),
        VaultNode::new("vault-b", "127.0.0.3", 8200, Role::Standby),
    ])
    .await?;
    let poller = Poller::start(&consul.url(), &["--log-level", "warn"]).await?;

    let ablations = env_or("BENCH_ABLATIONS", 0) == 1;
    let dst_header = format!("x-envoy-original-dst-host: {addr}");

    println!("| --concurrency | round | contender | requests/s | p50 ms | p99 ms | Envoy CPU µs/request | upstream CPU µs/request | upstream share of a core | errors |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    // Per concurrency, per contender but B: every round's ratios to B.
    let mut medians: Vec<(u32, Vec<Ratios>)> = Vec::new();
    for &concurrency in &concurrencies {
        let mut contenders: Vec<Contender> = vec![
            Contender::start("(A) proxy mode", EnvoyOptions::proxy(poller.addr), concurrency, None)
                .await?,
            // This baseline has no poller: its placeholders hold the upstream.
            Contender::start(
                "(B) native static cluster",
                EnvoyOptions {
                    template: "envoy/bench-native-proxy.yaml.tmpl".into(),
                    ..EnvoyOptions::new(addr)
                },
                concurrency,
                None,
            )
            .await?,
        ];
        if ablations {
            let (c, d, e) = ablation_templates(addr)?;
            contenders.push(
                Contender::start(
                    "(C) B's cluster as ORIGINAL_DST, the client sending the header (no filter)",
                    EnvoyOptions { template: c, ..EnvoyOptions::new(addr) },
                    concurrency,
                    Some(dst_header.clone()),
                )
                .await?,
            );
            contenders.push(
                Contender::start(
                    "(D) A's filter, routing to a static cluster (no ORIGINAL_DST)",
                    EnvoyOptions { template: d.clone(), ..EnvoyOptions::proxy(poller.addr) },
                    concurrency,
                    None,
                )
                .await?,
            );
            contenders.push(
                Contender::start(
                    "(E) A with the access log of docs/filter.md, to stdout",
                    EnvoyOptions { template: e, ..EnvoyOptions::proxy(poller.addr) },
                    concurrency,
                    None,
                )
                .await?,
            );
            let (raw, noop) = raw_modules(addr)?;
            contenders.push(
                Contender::start(
                    "(F) A with the raw-ABI proxy module instead of the filter",
                    EnvoyOptions { wasm: Some(raw), ..EnvoyOptions::proxy(poller.addr) },
                    concurrency,
                    None,
                )
                .await?,
            );
            contenders.push(
                Contender::start(
                    "(G) D with a raw-ABI module that only continues",
                    EnvoyOptions {
                        template: d.clone(),
                        wasm: Some(noop),
                        ..EnvoyOptions::proxy(poller.addr)
                    },
                    concurrency,
                    None,
                )
                .await?,
            );
        }
        for c in &contenders {
            answers_from_upstream(&c.envoy.url(PATH), c.header.as_deref()).await.context(c.name)?;
        }
        let mut ratios: Vec<[Vec<f64>; 3]> = vec![Default::default(); contenders.len()];
        for round in 1..=rounds {
            // Rotate the order, so no contender always runs on another's heels.
            let n = contenders.len();
            let mut got: Vec<Option<Measured>> = (0..n).map(|_| None).collect();
            for k in 0..n {
                let i = (k + round as usize - 1) % n;
                let c = &contenders[i];
                let m = c.measure(upstream_pid, seconds).await?;
                println!(
                    "| {concurrency} | {round} | {} | {:.0} | {:.3} | {:.3} | {:.1} | {:.1} | {:.0} % | {} |",
                    c.name,
                    m.load.rps,
                    m.load.p50_ms,
                    m.load.p99_ms,
                    m.load.cpu_us_per_req,
                    m.upstream_us_per_req,
                    m.upstream_core_share * 100.0,
                    m.load.errors
                );
                got[i] = Some(m);
            }
            let Some(Some(b)) = got.get(1) else { bail!("round {round} did not measure B") };
            let (b_cpu, b_rps) = (b.load.cpu_us_per_req, b.load.rps);
            let b_relative = b_cpu / b.upstream_us_per_req;
            for (m, [cpu, tput, relative]) in got.iter().zip(ratios.iter_mut()) {
                let m = m.as_ref().context("a contender was not measured")?;
                cpu.push(m.load.cpu_us_per_req / b_cpu);
                tput.push(m.load.rps / b_rps);
                relative.push(m.load.cpu_us_per_req / m.upstream_us_per_req / b_relative);
            }
        }
        medians.push((
            concurrency,
            contenders
                .iter()
                .zip(ratios)
                .filter(|(c, _)| !c.name.starts_with("(B)"))
                .map(|(c, r)| (c.name.to_string(), r))
                .collect(),
        ));
        for c in contenders {
            c.envoy.proc.stop(Duration::from_secs(5)).await?;
        }
    }
    println!();
    println!(
        "Medians over {rounds} rounds of {seconds} s (wrk -t2 -c{CONNECTIONS}) of each round's ratio to (B); load average {load_before} before, {} after:",
        load_average()
    );
    for (c, per) in &mut medians {
        for (name, [cpu, tput, relative]) in per.iter_mut() {
            let (cpu_m, tput_m, relative_m) = (median(cpu), median(tput), median(relative));
            let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
            println!(
                "- --concurrency {c}, {name}: CPU per request {cpu_m:.2} x (B) (target for A <= 1.15), throughput {tput_m:.2} x (B) (target for A >= 0.85), CPU per request in upstream requests {relative_m:.2} x (B); sorted rounds: CPU {}, throughput {}, in upstream requests {}",
                fmt(cpu),
                fmt(tput),
                fmt(relative)
            );
        }
    }
    poller.proc.stop(Duration::from_secs(5)).await?;
    upstream.stop(Duration::from_secs(5)).await?;
    consul.shutdown().await;
    Ok(())
}

/// Waits (up to 20 s) until `url` answers 200 with the upstream's body: for proxy mode, until
/// the filter has its state (on fresh connections, which Envoy spreads over its workers).
async fn answers_from_upstream(url: &str, header: Option<&str>) -> Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    let header = header.and_then(|h| h.split_once(": "));
    wait_for(&format!("the upstream's answer through {url}"), Duration::from_secs(20), || async {
        for _ in 0..20 {
            let mut request = http.get(url);
            if let Some((name, value)) = header {
                request = request.header(name, value);
            }
            let r = request.send().await.ok()?;
            if r.status() != 200 || r.text().await.ok()? != ANSWER_BODY {
                return None;
            }
        }
        Some(())
    })
    .await
}

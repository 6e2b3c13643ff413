//! Proxy mode against Envoy's own routing (issue 18), in one run: (A) Envoy with the filter in
//! proxy mode (envoy/envoy-proxy.yaml.tmpl; the release poller, on the Consul double, names the
//! upstream as the active node) and (B) the same listener and route without the filter,
//! routing to a STATIC cluster that holds just that node (envoy/bench-native-proxy.yaml.tmpl).
//! Both run at once and are loaded in turn by wrk (`bench::load`: 2 threads, 32 connections,
//! the Envoy process's CPU from /proc), the order alternating from round to round, for
//! BENCH_ROUNDS rounds (default 7) of BENCH_SECONDS (default 5), at each --concurrency in
//! BENCH_CONCURRENCY (default `1,2`). Prints every round, and the medians of the per-round
//! ratios A/B (CPU per request, throughput).
//!
//! The upstream is this binary in a process of its own (`proxy_bench upstream ADDR`),
//! answering every request with the same small Vault KV answer, cheap enough not to be the
//! bottleneck; its CPU per request and its share of a core are printed with each load. The
//! poller is the one `poller::binary` finds (it only answers the filters' long-polls here).
//!
//! Run it with `scripts/proxy-bench.sh` (wrk, the poller, the filter). Like `ab`, it only
//! starts processes and reads their CPU time, so its own build profile does not matter.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::net::TcpStream;
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};
use vault_redirect_e2e::bench::{self, load_average, median, LoadResult, CONNECTIONS};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::proc::{cpu_ticks, Proc};
use vault_redirect_e2e::{free_port, wait_for};

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
/// a thread per connection (Envoy holds a few dozen), blocking reads and writes. Only std,
/// which is built optimised even when this binary is not, so the upstream costs about the
/// same in a debug build; its CPU per request is printed with every load.
fn upstream(addr: SocketAddr) -> Result<()> {
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\n\r\n{ANSWER_BODY}",
        ANSWER_BODY.len()
    );
    let answer: &'static [u8] = answer.into_bytes().leak();
    for conn in listener.incoming() {
        let conn = conn?;
        conn.set_nodelay(true)?;
        std::thread::spawn(move || serve(conn, answer));
    }
    Ok(())
}

/// One connection: every complete request in what has arrived is answered, in order. Bodies
/// are skipped by `content-length` (Envoy sends the bench's GETs without one).
fn serve(mut conn: std::net::TcpStream, answer: &'static [u8]) {
    use std::io::{Read, Write};
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 16 * 1024];
    loop {
        while let Some(head) = find_head_end(&buf) {
            let whole = head + 4 + content_length(&buf[..head]);
            if buf.len() < whole {
                break;
            }
            buf.drain(..whole);
            out.extend_from_slice(answer);
        }
        if !out.is_empty() {
            if conn.write_all(&out).is_err() {
                return;
            }
            out.clear();
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
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

/// One contender's load and what the upstream spent meanwhile.
struct Measured {
    load: LoadResult,
    upstream_us_per_req: f64,
    upstream_core_share: f64,
}

async fn measure(name: &str, url: &str, envoy: u32, upstream: u32, secs: u64) -> Result<Measured> {
    let before = cpu_ticks(upstream)?;
    let load = bench::load(name, url, envoy, Duration::from_secs(secs)).await?;
    let ticks = cpu_ticks(upstream)?.saturating_sub(before) as f64;
    Ok(Measured {
        upstream_us_per_req: ticks * 10_000.0 / load.requests.max(1) as f64,
        upstream_core_share: ticks / 100.0 / secs as f64,
        load,
    })
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

    println!("| --concurrency | round | contender | requests/s | p50 ms | p99 ms | Envoy CPU µs/request | upstream CPU µs/request | upstream share of a core | errors |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut medians = Vec::new();
    for &concurrency in &concurrencies {
        let proxy =
            Envoy::start(EnvoyOptions { concurrency, ..EnvoyOptions::proxy(poller.addr) }).await?;
        let native = Envoy::start(EnvoyOptions {
            concurrency,
            template: "envoy/bench-native-proxy.yaml.tmpl".into(),
            // This baseline has no poller: its placeholders hold the upstream.
            ..EnvoyOptions::new(addr)
        })
        .await?;
        let contenders = [("(A) proxy mode", &proxy), ("(B) native static cluster", &native)];
        for (name, envoy) in contenders {
            answers_from_upstream(&envoy.url(PATH)).await.context(name)?;
        }
        let (mut cpu, mut tput) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            // Alternate the order, so neither contender always runs on the other's heels.
            let order: Vec<usize> = if round % 2 == 1 { vec![0, 1] } else { vec![1, 0] };
            let mut got: [Option<Measured>; 2] = [None, None];
            for i in order {
                let (name, envoy) = contenders[i];
                let pid = envoy.proc.pid().context("envoy pid")?;
                let m = measure(name, &envoy.url(PATH), pid, upstream_pid, seconds).await?;
                println!(
                    "| {concurrency} | {round} | {name} | {:.0} | {:.3} | {:.3} | {:.1} | {:.1} | {:.0} % | {} |",
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
            let [Some(a), Some(b)] = got else { bail!("round {round} measured nothing") };
            cpu.push(a.load.cpu_us_per_req / b.load.cpu_us_per_req);
            tput.push(a.load.rps / b.load.rps);
        }
        medians.push((concurrency, median(&mut cpu), median(&mut tput), cpu, tput));
        proxy.proc.stop(Duration::from_secs(5)).await?;
        native.proc.stop(Duration::from_secs(5)).await?;
    }
    println!();
    println!(
        "Medians over {rounds} rounds of {seconds} s (wrk -t2 -c{CONNECTIONS}); load average {load_before} before, {} after:",
        load_average()
    );
    for (c, cpu, tput, cpus, tputs) in &medians {
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(" ");
        println!(
            "- --concurrency {c}: A/B CPU per request {cpu:.2} (target <= 1.15), throughput {tput:.2} (target >= 0.85); sorted rounds: CPU {}, throughput {}",
            fmt(cpus),
            fmt(tputs)
        );
    }
    poller.proc.stop(Duration::from_secs(5)).await?;
    upstream.stop(Duration::from_secs(5)).await?;
    consul.shutdown().await;
    Ok(())
}

/// Waits (up to 20 s) until `url` answers 200 with the upstream's body: for proxy mode, until
/// the filter has its state (on fresh connections, which Envoy spreads over its workers).
async fn answers_from_upstream(url: &str) -> Result<()> {
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build()?;
    wait_for(&format!("the upstream's answer through {url}"), Duration::from_secs(20), || async {
        for _ in 0..20 {
            let r = http.get(url).send().await.ok()?;
            if r.status() != 200 || r.text().await.ok()? != ANSWER_BODY {
                return None;
            }
        }
        Some(())
    })
    .await
}

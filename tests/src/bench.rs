//! Load measurement shared by the bench binaries: `wrk` against a URL while the server
//! process's CPU time is read from /proc (wrk shares the cores, so CPU per request is the
//! steadier figure).

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::proc::cpu_ticks;

/// Connections wrk holds open (issue 8: 32).
pub const CONNECTIONS: u32 = 32;

/// What one load run measured.
pub struct LoadResult {
    pub name: String,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub cpu_us_per_req: f64,
    pub errors: u64,
}

fn parse_latency(v: &str) -> Option<f64> {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => return None,
    })
}

/// Runs wrk against `url` for `duration` while measuring the CPU time of `pid`.
pub async fn load(name: &str, url: &str, pid: u32, duration: Duration) -> Result<LoadResult> {
    let threads = "2".to_string();
    let before = cpu_ticks(pid)?;
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t",
            &threads,
            "-c",
            &CONNECTIONS.to_string(),
            "-d",
            &format!("{}s", duration.as_secs().max(1)),
            "--latency",
            url,
        ])
        .output()
        .await
        .context("running wrk (scripts/bench.sh installs it)")?;
    let after = cpu_ticks(pid)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let field = |prefix: &str| {
        text.lines().find(|l| l.trim_start().starts_with(prefix)).map(str::to_string)
    };
    let rps: f64 = field("Requests/sec:")
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("no Requests/sec")?;
    let p50 =
        field("50%").and_then(|l| parse_latency(l.split_whitespace().nth(1)?)).context("no p50")?;
    let p99 =
        field("99%").and_then(|l| parse_latency(l.split_whitespace().nth(1)?)).context("no p99")?;
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("no request count")?;
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
        + field("Socket errors:")
            .map(|l| {
                l.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u64>().ok()).sum()
            })
            .unwrap_or(0);
    let ticks = after.saturating_sub(before) as f64;
    let cpu_us_per_req = ticks * 10_000.0 / requests.max(1) as f64;
    Ok(LoadResult {
        name: name.to_string(),
        rps,
        p50_ms: p50,
        p99_ms: p99,
        requests,
        cpu_us_per_req,
        errors,
    })
}

/// Waits (up to 20 s) until `url` answers a 307, before a contender is loaded.
pub async fn check_redirect(url: &str) -> Result<()> {
    let http = crate::client()?;
    crate::wait_for(&format!("a 307 from {url}"), Duration::from_secs(20), || async {
        let r = http.get(url).send().await.ok()?;
        (r.status().as_u16() == 307).then_some(())
    })
    .await
}

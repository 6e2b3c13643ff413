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
    load_with_headers(name, url, &[], pid, duration).await
}

/// [`load`] with these request headers (`name: value`) on every request.
pub async fn load_with_headers(
    name: &str,
    url: &str,
    headers: &[&str],
    pid: u32,
    duration: Duration,
) -> Result<LoadResult> {
    let threads = "2".to_string();
    let before = cpu_ticks(pid)?;
    let mut args = vec![
        "-t".to_string(),
        threads,
        "-c".to_string(),
        CONNECTIONS.to_string(),
        "-d".to_string(),
        format!("{}s", duration.as_secs().max(1)),
        "--latency".to_string(),
    ];
    for h in headers {
        args.extend(["-H".to_string(), h.to_string()]);
    }
    args.push(url.to_string());
    let out = tokio::process::Command::new("wrk")
        .args(&args)
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

/// The median of `values` (sorts them); NaN for none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The `p` quantile (0 to 1) of `sorted`, nearest rank; NaN for none. With fewer than 100
/// values, p99 is the largest.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The machine's load average over 1, 5 and 15 minutes (`/proc/loadavg`), for a report.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// A duration spread evenly below `bound`, from the clock's nanoseconds (no need for a
/// random number generator: a fault's phase against the poller's rounds is all it spreads).
pub fn random_below(bound: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let bound_ns = u64::try_from(bound.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(u64::from(nanos).wrapping_mul(2_654_435_761) % bound_ns)
}

/// Waits (up to 20 s) until `url` answers a 307, before a contender is loaded; returns its
/// `Location`.
pub async fn check_redirect(url: &str) -> Result<String> {
    let http = crate::client()?;
    crate::wait_for(&format!("a 307 from {url}"), Duration::from_secs(20), || async {
        let r = http.get(url).send().await.ok()?;
        if r.status().as_u16() != 307 {
            return None;
        }
        Some(r.headers().get("location")?.to_str().ok()?.to_owned())
    })
    .await
}

/// The baseline a filter's own cost is measured against (issue 15): the smallest proxy-wasm
/// module that answers every request with a fixed 307, written against the raw ABI 0.2.1.
/// Envoy enters it for `proxy_on_context_create` (a no-op) and `proxy_on_request_headers`,
/// which makes one host call, `proxy_send_local_response`, with the same headers and details
/// the filter sends (`location`, here fixed, and `cache-control: no-store`); it reads nothing.
/// What a filter costs above it is its own code and host calls, not Envoy's wasm machinery.
///
/// With `read_path`, the module also reads `:path` first (`proxy_get_header_map_value`, for
/// which Envoy enters the VM once more, to allocate the copy) and ignores it: the part of a
/// filter's cost that any redirect keeping the request's path must pay.
pub fn raw_abi_redirect_module(location: &str, read_path: bool) -> Result<Vec<u8>> {
    const DETAILS: &[u8] = b"vault_redirect";
    let headers: [(&str, &str); 2] = [("location", location), ("cache-control", "no-store")];
    // The ABI's map layout: count, (key length, value length) pairs, then each key and value
    // followed by a NUL.
    let mut map = Vec::new();
    map.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (k, v) in &headers {
        map.extend_from_slice(&(k.len() as u32).to_le_bytes());
        map.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in &headers {
        map.extend_from_slice(k.as_bytes());
        map.push(0);
        map.extend_from_slice(v.as_bytes());
        map.push(0);
    }
    let escape = |bytes: &[u8]| bytes.iter().map(|b| format!("\\{b:02x}")).collect::<String>();
    const PATH: &[u8] = b":path";
    let map_at = DETAILS.len().next_multiple_of(8);
    let path_at = (map_at + map.len()).next_multiple_of(8);
    // Two i32 return slots (the value's address and length), then the heap.
    let slots_at = (path_at + PATH.len()).next_multiple_of(8);
    let heap_at = (slots_at + 8).next_multiple_of(16);
    let read = if read_path {
        format!(
            r#"(global.set $free (i32.const {heap_at}))
    (drop (call $get_header_map_value
      (i32.const 0) (i32.const {path_at}) (i32.const {path_len})
      (i32.const {slots_at}) (i32.const {len_slot})))"#,
            path_len = PATH.len(),
            len_slot = slots_at + 4,
        )
    } else {
        String::new()
    };
    let wat = format!(
        r#"(module
  (import "env" "proxy_send_local_response"
    (func $send_local_response (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "env" "proxy_get_header_map_value"
    (func $get_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $free (mut i32) (i32.const {heap_at}))
  (data (i32.const 0) "{details}")
  (data (i32.const {map_at}) "{map}")
  (data (i32.const {path_at}) "{path}")
  (func (export "proxy_abi_version_0_2_1"))
  {allocator}
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {read}
    (drop (call $send_local_response
      (i32.const 307) (i32.const 0) (i32.const {details_len}) (i32.const 0) (i32.const 0)
      (i32.const {map_at}) (i32.const {map_len}) (i32.const -1)))
    ;; Pause: the local reply ends the stream.
    (i32.const 1)))"#,
        details = escape(DETAILS),
        details_len = DETAILS.len(),
        map = escape(&map),
        map_len = map.len(),
        path = escape(PATH),
        allocator = BUMP_ALLOCATOR,
    );
    wat::parse_str(&wat).context("assembling the raw-ABI redirect module")
}

/// `proxy_on_memory_allocate` of the raw-ABI baselines: a bump allocator from `$free` (each
/// module's global), growing memory as needed; nothing is freed, as nothing is kept from one
/// request to the next.
const BUMP_ALLOCATOR: &str = r#"(func (export "proxy_on_memory_allocate") (param $size i32) (result i32)
    (local $at i32)
    (local.set $at (global.get $free))
    (global.set $free (i32.add (local.get $at) (local.get $size)))
    (block $fits
      (loop $grow
        (br_if $fits (i32.le_u (global.get $free) (i32.shl (memory.size) (i32.const 16))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then (return (i32.const 0))))
        (br $grow)))
    (local.get $at))"#;

/// The baselines of proxy mode's filter cost (issue 18), as [`raw_abi_redirect_module`] is for
/// redirects: the smallest proxy-wasm module that points every request at `upstream`
/// (`ip:port`) and lets it continue. Envoy enters it for `proxy_on_context_create` (a no-op)
/// and `proxy_on_request_headers`, which makes one host call,
/// `proxy_replace_header_map_value` of `x-envoy-original-dst-host`, as the filter does, and
/// reads nothing. With `upstream` `None` it makes no call at all and only continues (route it
/// to a static cluster): what Envoy's wasm machinery costs a proxied stream by itself.
pub fn raw_abi_proxy_module(upstream: Option<&str>) -> Result<Vec<u8>> {
    const HEADER: &[u8] = b"x-envoy-original-dst-host";
    let escape = |bytes: &[u8]| bytes.iter().map(|b| format!("\\{b:02x}")).collect::<String>();
    let value_at = HEADER.len().next_multiple_of(8);
    let heap_at = (value_at + upstream.map_or(0, str::len)).next_multiple_of(16);
    let set = match upstream {
        Some(value) => format!(
            "(drop (call $replace_header_map_value
      (i32.const 0) (i32.const 0) (i32.const {}) (i32.const {value_at}) (i32.const {})))",
            HEADER.len(),
            value.len()
        ),
        None => String::new(),
    };
    let wat = format!(
        r#"(module
  (import "env" "proxy_replace_header_map_value"
    (func $replace_header_map_value (param i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $free (mut i32) (i32.const {heap_at}))
  (data (i32.const 0) "{header}")
  (data (i32.const {value_at}) "{value}")
  (func (export "proxy_abi_version_0_2_1"))
  {allocator}
  (func (export "proxy_on_context_create") (param i32 i32))
  (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32)
    {set}
    ;; Continue: the router forwards the request.
    (i32.const 0)))"#,
        header = escape(HEADER),
        value = escape(upstream.unwrap_or_default().as_bytes()),
        allocator = BUMP_ALLOCATOR,
    );
    wat::parse_str(&wat).context("assembling the raw-ABI proxy module")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const LOCATION: &str = "http://127.0.0.2:8200/v1/x";

    #[test]
    fn the_raw_abi_module_answers_the_fixed_307_reading_path_only_when_asked() {
        for read_path in [false, true] {
            let wasm = raw_abi_redirect_module(LOCATION, read_path).unwrap();
            let host = host_test::Host::from_bytes(&wasm).unwrap();
            let mut vm = host.start_vm().unwrap();
            for _ in 0..3 {
                let outcome = vm.send_request(&[(":method", "GET"), (":path", "/v1/x")]).unwrap();
                let answer = outcome.local_response.unwrap();
                assert_eq!(answer.status, 307);
                assert_eq!(answer.header("location"), Some(LOCATION));
                assert_eq!(answer.header("cache-control"), Some("no-store"));
            }
            let reads = vm.hostcall_counts().get("proxy_get_header_map_value").copied();
            assert_eq!(reads, read_path.then_some(3), "read_path {read_path}");
        }
    }

    #[test]
    fn the_raw_abi_proxy_module_sets_the_upstream_header_only_when_given_one() {
        for upstream in [Some("127.0.0.2:8200"), None] {
            let wasm = raw_abi_proxy_module(upstream).unwrap();
            let host = host_test::Host::from_bytes(&wasm).unwrap();
            let mut vm = host.start_vm().unwrap();
            for _ in 0..3 {
                let outcome = vm
                    .send_request(&[
                        (":method", "GET"),
                        (":path", "/v1/x"),
                        ("x-envoy-original-dst-host", "10.9.9.9:1"),
                    ])
                    .unwrap();
                assert_eq!(outcome.action, host_test::Action::Continue);
                assert!(outcome.local_response.is_none());
                let sent = outcome
                    .request_headers
                    .iter()
                    .find(|(k, _)| k == "x-envoy-original-dst-host")
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                assert_eq!(sent.as_deref(), Some(upstream.unwrap_or("10.9.9.9:1")));
            }
            let calls = vm.hostcall_counts().get("proxy_replace_header_map_value").copied();
            assert_eq!(calls, upstream.map(|_| 3), "upstream {upstream:?}");
        }
    }
}

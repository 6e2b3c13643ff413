//! Fuel figures for the release filter, deterministic (same .wasm and inputs, same numbers), so
//! they can be tracked per commit: `cargo bench -p host-test --bench fuel`.
//! Wall-clock times are printed too, for information only: they are not deterministic.
//!
//! It builds the shipped `.wasm` first (scripts/build.sh, a no-op when up to date), so it runs
//! from a clean clone and always measures the sources it sits next to.

use std::process::ExitCode;
use std::time::Instant;

use host_test::{Host, HttpCallResponse, Vm};

const CONFIG: &str = r#"{"poller_cluster":"vault_redirect_poller"}"#;
const STATE: &str = r#"{"version":65536,"active":{"node":"vault-b","address":"127.0.0.3","port":8200},"consul_index":1,"last_consul_ok_unix_ms":1,"age_ms":0,"active_candidates":1}"#;
const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "vault.example"),
    (":path", "/v1/secret/data/x?version=2"),
];
const ROUNDS: u32 = 2_000;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fuel bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench() -> Result<(), Box<dyn std::error::Error>> {
    let wasm = build_filter()?;
    let size = std::fs::metadata(&wasm)?.len();
    let t = Instant::now();
    let host = Host::new(&wasm)?.with_plugin_config(CONFIG);
    let compile = t.elapsed();

    let t = Instant::now();
    let mut vm = host.start_vm()?;
    let start_wall = t.elapsed();
    let start_fuel = vm.fuel_used_total();

    let unknown = vm.send_request(GET)?;
    let call = vm.pending_http_calls().into_iter().next().ok_or("no poll in flight")?;
    vm.respond_http_call(call.token, HttpCallResponse::new(200, STATE))?;
    let answer_fuel = vm.fuel_used_last_call();
    vm.tick()?;
    let tick_fuel = vm.fuel_used_last_call();
    // The first redirects after a state change also settle the allocator (the request before
    // them answered 503 with a body, and the filter keeps its reply-header buffer between
    // requests); identical requests from then on must burn identical fuel.
    let first_redirect = vm.send_request(GET)?;
    vm.send_request(GET)?;
    let redirect = vm.send_request(GET)?;

    let t = Instant::now();
    for _ in 0..ROUNDS {
        let outcome = vm.send_request(GET)?;
        if outcome.fuel != redirect.fuel {
            return Err(format!(
                "fuel is not deterministic: {} then {}",
                redirect.fuel, outcome.fuel
            )
            .into());
        }
    }
    let per_request = t.elapsed() / ROUNDS;
    let hostcalls = per_request_calls(&mut vm)?;

    println!("vault_redirect_filter.wasm: {size} bytes");
    println!("{:<44} {:>12}", "figure", "fuel");
    println!("{:<44} {:>12}", "VM start (_initialize, vm start, configure)", start_fuel);
    println!("{:<44} {:>12}", "request answered 503 (no state yet)", unknown.fuel);
    println!("{:<44} {:>12}", "poll answer applied (200 + state document)", answer_fuel);
    println!("{:<44} {:>12}", "tick (nothing due)", tick_fuel);
    println!("{:<44} {:>12}", "first request answered 307 after the state", first_redirect.fuel);
    println!("{:<44} {:>12}", "request answered 307", redirect.fuel);
    println!("host calls per 307 request: {hostcalls}");
    println!(
        "wall (informative, debug-or-release as built): compile {compile:.2?}, start {start_wall:.2?}, request {per_request:.2?}"
    );
    Ok(())
}

/// Builds the shipped filter with scripts/build.sh (cargo, then wasm-opt: the figures are those
/// of the file Envoy loads) and returns its path.
fn build_filter() -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
    let status = std::process::Command::new("bash")
        .arg("scripts/build.sh")
        .current_dir(host_test::shipped::workspace_root())
        .status()
        .map_err(|e| format!("cannot run scripts/build.sh: {e}"))?;
    if !status.success() {
        return Err(format!("scripts/build.sh failed ({status})").into());
    }
    Ok(host_test::shipped::filter_wasm()?)
}

fn per_request_calls(vm: &mut Vm) -> Result<String, Box<dyn std::error::Error>> {
    let before = vm.hostcall_counts();
    vm.send_request(GET)?;
    let after = vm.hostcall_counts();
    let calls: Vec<String> = after
        .iter()
        .filter_map(|(name, n)| {
            let delta = n - before.get(name).copied().unwrap_or(0);
            (delta > 0).then(|| format!("{name}={delta}"))
        })
        .collect();
    Ok(calls.join(", "))
}

//! `host-test run --wasm FILE --config FILE --scenario FILE`: replays a scenario against a filter
//! and exits non-zero on any mismatch, for users' CI. Thin: parsing and printing only; the work
//! is `host_test::scenario`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use host_test::scenario::Scenario;
use host_test::Host;

/// Runs a proxy-wasm filter (the .wasm Envoy loads) in a deterministic wasmtime host.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Replays a scenario file; exits 1 when an expectation fails, 2 when the run itself fails.
    Run {
        /// The filter module (.wasm). Default: vault-redirect's shipped filter in the workspace
        /// this binary was built from (scripts/build.sh writes it).
        #[arg(long, env = "HOST_TEST_WASM")]
        wasm: Option<PathBuf>,
        /// The plugin configuration file, passed to the filter as is.
        #[arg(long, env = "HOST_TEST_CONFIG")]
        config: PathBuf,
        /// The scenario file (JSON, see docs/host-test.md).
        #[arg(long, env = "HOST_TEST_SCENARIO")]
        scenario: PathBuf,
        /// The VM configuration file, if the filter reads one.
        #[arg(long)]
        vm_config: Option<PathBuf>,
        /// The `vm_id` (shared-data namespace).
        #[arg(long, default_value = "")]
        vm_id: String,
        /// Print the guest's log lines after the report.
        #[arg(long)]
        logs: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("host-test: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<bool> {
    let Command::Run { wasm, config, scenario, vm_config, vm_id, logs } = cli.command;
    let wasm = match wasm {
        Some(path) => path,
        None => host_test::shipped::filter_wasm()?,
    };
    let plugin_config =
        std::fs::read(&config).with_context(|| format!("reading {}", config.display()))?;
    let text = std::fs::read_to_string(&scenario)
        .with_context(|| format!("reading {}", scenario.display()))?;
    let scenario_doc =
        Scenario::parse(&text).with_context(|| format!("in {}", scenario.display()))?;
    let mut host = Host::new(&wasm)
        .with_context(|| format!("loading {}", wasm.display()))?
        .with_plugin_config(plugin_config)
        .with_vm_id(vm_id);
    if let Some(path) = vm_config {
        host = host.with_vm_config(
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        );
    }
    let report = scenario_doc
        .run_with_logs(&host)
        .with_context(|| format!("replaying {}", scenario.display()))?;
    if !scenario_doc.description.is_empty() {
        println!("{}", scenario_doc.description);
    }
    if !report.report.configured {
        println!("FAIL proxy_on_configure refused {}", config.display());
    }
    for step in &report.report.steps {
        let verdict = if step.mismatches.is_empty() { "ok  " } else { "FAIL" };
        println!("{verdict} {:>3}. {} (fuel {})", step.step, step.summary, step.fuel);
        for m in &step.mismatches {
            println!("          {m}");
        }
    }
    let failed = report.report.steps.iter().filter(|s| !s.mismatches.is_empty()).count();
    println!(
        "{}: {} steps, {failed} failed",
        if report.report.passed() { "passed" } else { "FAILED" },
        report.report.steps.len()
    );
    if logs || !report.report.passed() {
        for (worker, lines) in report.logs.iter().enumerate() {
            for (level, line) in lines {
                println!("worker {worker} [{level}] {line}");
            }
        }
    }
    Ok(report.report.passed())
}

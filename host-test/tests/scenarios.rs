//! The CLI and the scenario format, on the committed example scenario and the release filter.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{filter_host, filter_wasm_path};
use host_test::scenario::Scenario;

fn scenarios() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

fn example() -> Scenario {
    Scenario::parse(&std::fs::read_to_string(scenarios().join("vault_redirect.json")).unwrap())
        .unwrap()
}

fn configured_host() -> host_test::Host {
    filter_host()
        .with_plugin_config(std::fs::read(scenarios().join("vault_redirect.config.json")).unwrap())
}

#[test]
fn the_committed_example_scenario_passes_against_the_release_filter() {
    let report = example().run(&configured_host()).unwrap();
    let failed: Vec<_> = report.steps.iter().filter(|s| !s.mismatches.is_empty()).collect();
    assert!(report.configured && failed.is_empty(), "{failed:#?}");
}

/// Every committed scenario (`NAME.json`) with its plugin configuration (`NAME.config.json`).
fn committed() -> Vec<(PathBuf, PathBuf)> {
    let mut pairs: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(scenarios())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".config.json")
        })
        .map(|scenario| {
            let config = scenario.with_extension("config.json");
            assert!(config.is_file(), "{} has no {}", scenario.display(), config.display());
            (scenario, config)
        })
        .collect();
    pairs.sort();
    pairs
}

#[test]
fn every_committed_scenario_passes_against_the_release_filter() {
    let pairs = committed();
    assert!(pairs.len() >= 10, "the behaviour matrix lives in host-test/scenarios: {pairs:?}");
    for (scenario, config) in pairs {
        let parsed = Scenario::parse(&std::fs::read_to_string(&scenario).unwrap()).unwrap();
        let host = filter_host().with_plugin_config(std::fs::read(&config).unwrap());
        let report = parsed.run(&host).unwrap();
        let failed: Vec<_> = report.steps.iter().filter(|s| !s.mismatches.is_empty()).collect();
        assert!(report.configured && failed.is_empty(), "{}: {failed:#?}", scenario.display());
    }
}

#[test]
fn a_wrong_expectation_is_reported_with_what_came_instead() {
    let mut scenario = example();
    let text = r#"{"steps":[{"request":{"headers":[[":path","/v1/x"]],"expect":{"status":307}}}]}"#;
    scenario.steps = Scenario::parse(text).unwrap().steps;
    let report = scenario.run(&configured_host()).unwrap();
    assert!(!report.passed());
    assert_eq!(report.steps[0].mismatches, vec!["expected status 307, got 503".to_owned()]);
}

#[test]
fn an_unknown_step_or_field_is_refused_with_its_name() {
    let error = Scenario::parse(r#"{"steps":[{"sleep_ms":5}]}"#).unwrap_err().to_string();
    assert!(error.contains("sleep_ms"), "{error}");
    let error = Scenario::parse(r#"{"steps":[{"tick":{"worker":1}}]}"#).unwrap_err().to_string();
    assert!(error.contains("worker"), "{error}");
}

#[test]
fn the_cli_exits_zero_on_the_example_and_one_on_a_mismatch() {
    let wasm = filter_wasm_path();
    let config = scenarios().join("vault_redirect.config.json");
    let run = |scenario: &Path| {
        Command::new(env!("CARGO_BIN_EXE_host-test"))
            .args(["run", "--wasm"])
            .arg(&wasm)
            .arg("--config")
            .arg(&config)
            .arg("--scenario")
            .arg(scenario)
            .output()
            .unwrap()
    };
    let ok = run(&scenarios().join("vault_redirect.json"));
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stdout));
    // Without --wasm the CLI runs the shipped filter, as scripts/test.sh relies on.
    let by_default = Command::new(env!("CARGO_BIN_EXE_host-test"))
        .arg("run")
        .arg("--config")
        .arg(&config)
        .arg("--scenario")
        .arg(scenarios().join("vault_redirect.json"))
        .env_remove("HOST_TEST_WASM")
        .output()
        .unwrap();
    assert_eq!(by_default.status.code(), Some(0), "{by_default:?}");

    let dir = std::env::temp_dir().join(format!("host-test-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"steps":[{"request":{"headers":[[":path","/v1/x"]],"expect":{"status":307}}}]}"#,
    )
    .unwrap();
    let failed = run(&bad);
    let stdout = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("expected status 307, got 503"), "{stdout}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_scripts_look_for_the_shipped_filter_where_the_tests_do() {
    let root = host_test::shipped::workspace_root();
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source scripts/filter-wasm.sh && printf %s "$filter_wasm""#)
        .current_dir(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let from_scripts = std::fs::canonicalize(root.join(String::from_utf8(out.stdout).unwrap()));
    let from_tests = std::fs::canonicalize(host_test::shipped::filter_wasm_path());
    assert_eq!(from_scripts.unwrap(), from_tests.unwrap());
}

//! The production filter (the very `.wasm` Envoy loads) through this host: configure, poll the
//! poller, answer requests.
//!
//! Needs the release build; the test fails, saying how to build it, when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::filter_host;
use host_test::{Action, Host, HttpCall, HttpCallResponse, Vm};

const CONFIG: &str = r#"{"poller_cluster":"vault_redirect_poller"}"#;
const STATE_B: &str = r#"{"version":65536,"active":{"node":"vault-b","address":"127.0.0.3","port":8200},"consul_index":1,"last_consul_ok_unix_ms":1,"age_ms":0,"active_candidates":1}"#;

fn host() -> Host {
    filter_host().with_plugin_config(CONFIG).with_known_clusters(["vault_redirect_poller"])
}

fn started(host: &Host) -> Vm {
    let vm = host.start_vm().unwrap();
    assert!(vm.configure_result(), "on_configure refused {CONFIG}; logs: {:?}", vm.logs());
    vm
}

/// The one long-poll the root context keeps in flight.
fn poll_call(vm: &Vm) -> HttpCall {
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1, "exactly one poll in flight: {calls:?}");
    let call = calls.into_iter().next().unwrap();
    assert_eq!(call.upstream, "vault_redirect_poller");
    assert!(call.header(":path").unwrap().starts_with("/v1/active"), "{call:?}");
    call
}

const GET: &[(&str, &str)] = &[
    (":method", "GET"),
    (":scheme", "http"),
    (":authority", "vault.example"),
    (":path", "/v1/secret/data/x?version=2"),
];

#[test]
fn a_request_is_redirected_to_the_active_node_the_poller_named() {
    let host = host();
    let mut vm = started(&host);
    vm.tick().unwrap();
    let call = poll_call(&vm);
    assert_eq!(call.header(":method"), Some("GET"));
    vm.respond_http_call(call.token, HttpCallResponse::new(200, STATE_B)).unwrap();

    let outcome = vm.send_request(GET).unwrap();
    let response = outcome.local_response.expect("a local response");
    assert_eq!(response.status, 307, "logs: {:?}", vm.logs());
    assert_eq!(
        response.header("location"),
        Some("http://127.0.0.3:8200/v1/secret/data/x?version=2")
    );
    assert_eq!(outcome.action, Action::Pause);
    assert!(!outcome.open);
}

#[test]
fn a_request_before_any_state_gets_a_503_with_retry_after() {
    let host = host();
    let mut vm = started(&host);
    let outcome = vm.send_request(GET).unwrap();
    let response = outcome.local_response.expect("a local response");
    assert_eq!(response.status, 503);
    assert_eq!(response.header("retry-after"), Some("1"));
    assert!(String::from_utf8_lossy(&response.body).contains("\"errors\""), "{response:?}");
}

#[test]
fn a_second_worker_starts_from_the_state_the_first_published_in_shared_data() {
    let host = host();
    let mut first = started(&host);
    let call = poll_call(&first);
    first.respond_http_call(call.token, HttpCallResponse::new(200, STATE_B)).unwrap();
    assert!(host.shared_data_get("vault_redirect.state.v1").is_some());

    let mut second = started(&host);
    let response = second.send_request(GET).unwrap().local_response.unwrap();
    assert_eq!(response.status, 307);
    assert_eq!(
        response.header("location"),
        Some("http://127.0.0.3:8200/v1/secret/data/x?version=2")
    );
}

#[test]
fn the_filter_imports_only_what_envoy_and_this_host_provide() {
    let host = filter_host();
    let provided = Host::provided_imports();
    let missing: Vec<_> =
        host.module_imports().into_iter().filter(|i| !provided.contains(i)).collect();
    assert!(missing.is_empty(), "the filter imports what Envoy does not provide: {missing:?}");
}

#[test]
fn the_same_request_costs_the_same_fuel_every_time() {
    let fuel = || {
        let host = host();
        let mut vm = started(&host);
        let call = poll_call(&vm);
        vm.respond_http_call(call.token, HttpCallResponse::new(200, STATE_B)).unwrap();
        vm.send_request(GET).unwrap().fuel
    };
    let (a, b) = (fuel(), fuel());
    assert!(a > 0);
    assert_eq!(a, b);
}

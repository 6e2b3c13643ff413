//! The filter's whole behaviour matrix, on the very `.wasm` Envoy loads, in the wasmtime host:
//! configuration, the long-poll loop, backoff, staleness, redirect semantics, refusals, metrics
//! and the sharing of state between workers.
//!
//! Needs the shipped build; each test fails, saying how to build it, when it is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use host_test::{Action, Host, HttpCall, HttpCallResponse, LogLevel, Vm};

const CLUSTER: &str = "vault_redirect_poller";
const SHARED_KEY: &str = "vault_redirect.state.v1";

/// A host of its own running the shipped filter (a failure says how to build it).
fn host_with(config: &str) -> Host {
    host_test::shipped::host()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_plugin_config(config)
        .with_known_clusters([CLUSTER])
}

fn config(extra: &str) -> String {
    if extra.is_empty() {
        format!(r#"{{"poller_cluster":"{CLUSTER}"}}"#)
    } else {
        format!(r#"{{"poller_cluster":"{CLUSTER}",{extra}}}"#)
    }
}

fn state(version: u64, node: &str, address: &str, port: u16) -> String {
    format!(
        r#"{{"version":{version},"active":{{"node":"{node}","address":"{address}","port":{port}}},"consul_index":{},"last_consul_ok_unix_ms":1,"age_ms":0,"active_candidates":1}}"#,
        version >> 16
    )
}

fn no_active(version: u64, reason: &str) -> String {
    format!(
        r#"{{"version":{version},"active":null,"reason":"{reason}","consul_index":1,"last_consul_ok_unix_ms":1,"age_ms":0,"active_candidates":0}}"#
    )
}

fn started(host: &Host) -> Vm {
    let vm = host.start_vm().unwrap();
    assert!(vm.configure_result(), "on_configure refused; logs: {:?}", vm.logs());
    vm
}

fn the_poll(vm: &Vm) -> HttpCall {
    let calls = vm.pending_http_calls();
    assert_eq!(calls.len(), 1, "exactly one poll must be in flight: {calls:?}");
    calls.into_iter().next().unwrap()
}

fn answer(vm: &mut Vm, status: u16, body: &str) {
    let call = the_poll(vm);
    vm.respond_http_call(call.token, HttpCallResponse::new(status, body)).unwrap();
}

fn get(vm: &mut Vm, path: &str) -> host_test::RequestOutcome {
    vm.send_request(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "vault.example"),
        (":path", path),
    ])
    .unwrap()
}

fn location(vm: &mut Vm, path: &str) -> (u32, Option<String>) {
    let out = get(vm, path);
    let resp = out.local_response.expect("a local response");
    (resp.status, resp.header("location").map(str::to_string))
}

fn logged(vm: &Vm, level: LogLevel, needle: &str) -> bool {
    vm.logs().iter().any(|(l, m)| *l == level && m.contains(needle))
}

/// A VM that has applied `state(1<<16, vault-a, 10.0.0.1, 8200)`.
fn redirecting(host: &Host) -> Vm {
    let mut vm = started(host);
    answer(&mut vm, 200, &state(1 << 16, "vault-a", "10.0.0.1", 8200));
    vm
}

#[test]
fn every_bad_configuration_value_is_refused_and_named_in_the_log() {
    let cases = [
        (r#"{"poller_cluster":""}"#, "`poller_cluster`"),
        (r#"{}"#, "`poller_cluster`"),
        (r#"{"poller_cluster":"p","poller_path":"v1/active"}"#, "`poller_path`"),
        (r#"{"poller_cluster":"p","wait_seconds":0}"#, "`wait_seconds`"),
        (r#"{"poller_cluster":"p","retry_initial_ms":0}"#, "`retry_initial_ms`"),
        (r#"{"poller_cluster":"p","retry_max_ms":9999999}"#, "`retry_max_ms`"),
        (r#"{"poller_cluster":"p","scheme":"ftp"}"#, "`scheme`"),
        (r#"{"poller_cluster":"p","target_host":"ip"}"#, "`target_host`"),
        (r#"{"poller_cluster":"p","target_port":65536}"#, "`target_port`"),
        (r#"{"poller_cluster":"p","max_stale_seconds":0}"#, "`max_stale_seconds`"),
        (r#"{"poller_cluster":"p","no_active":"502"}"#, "`no_active`"),
        (r#"{"poller_cluster":"p","pass_through_paths":["healthz"]}"#, "`pass_through_paths`"),
        (r#"{"poller_cluster":"p","debug_header":"yes"}"#, "`debug_header`"),
        (r#"{"poller_cluster":"p","tick_ms":5}"#, "`tick_ms`"),
        (r#"{"poller_cluster":"p","unknown":1}"#, "unknown field `unknown`"),
        (r#"{"poller_cluster":"p","mode":"Proxy"}"#, "`mode`"),
        (r#"{"poller_cluster":"p","mode":"proxy","no_active":"pass_through"}"#, "`no_active`"),
        (
            r#"{"poller_cluster":"p","mode":"proxy","pass_through_paths":["/h"]}"#,
            "`pass_through_paths`",
        ),
        (r#"{"poller_cluster":"p","mode":"proxy","target_host":"node"}"#, "`target_host`"),
        (
            r#"{"poller_cluster":"p","mode":"proxy","upstream_server_name":"{host}"}"#,
            "`upstream_server_name`",
        ),
        ("not json", "invalid JSON"),
    ];
    for (json, needle) in cases {
        let vm = host_with(json).start_vm().unwrap();
        assert!(!vm.configure_result(), "{json} was accepted");
        assert!(
            logged(&vm, LogLevel::Critical, needle),
            "{json}: no critical log naming {needle}: {:?}",
            vm.logs()
        );
        assert!(vm.pending_http_calls().is_empty(), "{json}: a refused filter must not poll");
    }
}

#[test]
fn configure_starts_exactly_one_long_poll_with_index_wait_and_a_timeout_beyond_the_wait() {
    let host = host_with(&config(r#""wait_seconds":20,"poller_authority":"poller.vault:8210""#));
    let mut vm = started(&host);
    let first = the_poll(&vm);
    assert_eq!(first.upstream, CLUSTER);
    assert_eq!(first.header(":method"), Some("GET"));
    assert_eq!(first.header(":authority"), Some("poller.vault:8210"));
    assert_eq!(first.header(":path"), Some("/v1/active?index=0&wait=20s"));
    assert_eq!(first.timeout_ms, 25_000, "Envoy's timeout must outlive the poller's wait");
    // Ticks never add a second call while one is in flight.
    for _ in 0..5 {
        host.advance(Duration::from_millis(500));
        vm.tick().unwrap();
    }
    let same = the_poll(&vm);
    assert_eq!(same.token, first.token);
    // A new version: the next long-poll starts at once and carries that version as its index.
    host.advance(Duration::from_secs(2));
    vm.respond_http_call(
        first.token,
        HttpCallResponse::new(200, state(7 << 16, "a", "10.0.0.1", 8200)),
    )
    .unwrap();
    let next = the_poll(&vm);
    assert_eq!(
        next.header(":path"),
        Some(format!("/v1/active?index={}&wait=20s", 7u64 << 16).as_str())
    );
}

#[test]
fn failed_polls_back_off_doubling_up_to_the_cap_and_then_ask_for_an_immediate_answer() {
    let host = host_with(&config(r#""retry_initial_ms":100,"retry_max_ms":400,"tick_ms":10"#));
    let mut vm = redirecting(&host);
    let mut gaps = Vec::new();
    for _ in 0..5 {
        let call = the_poll(&vm);
        vm.fail_http_call(call.token).unwrap();
        assert!(vm.pending_http_calls().is_empty(), "no retry before the backoff");
        let mut waited = 0;
        while vm.pending_http_calls().is_empty() {
            host.advance(Duration::from_millis(10));
            waited += 10;
            vm.tick().unwrap();
            assert!(waited <= 1_000, "no retry within 1 s");
        }
        gaps.push(waited);
    }
    assert_eq!(gaps, vec![100, 200, 400, 400, 400]);
    // After a failure the poller may have restarted with the same version: no index.
    assert_eq!(the_poll(&vm).header(":path"), Some("/v1/active?index=0&wait=30s"));
    assert_eq!(host.metric("vault_redirect.poll_failures"), Some(5));
    // The last known state still serves while it is fresh.
    assert_eq!(location(&mut vm, "/v1/x"), (307, Some("http://10.0.0.1:8200/v1/x".into())));
    assert!(logged(&vm, LogLevel::Warn, "poll failed (1 in a row)"), "{:?}", vm.logs());
}

#[test]
fn error_statuses_garbage_and_timeouts_count_as_failures_and_keep_the_last_state() {
    for (status, body) in
        [(500, "oops"), (200, "{\"version\":"), (200, "[]"), (404, ""), (200, &"x".repeat(70_000))]
    {
        let host = host_with(&config(r#""retry_initial_ms":10,"tick_ms":10"#));
        let mut vm = redirecting(&host);
        answer(&mut vm, status, body);
        assert_eq!(host.metric("vault_redirect.poll_failures"), Some(1), "{status} {:.20}", body);
        assert_eq!(location(&mut vm, "/v1/x"), (307, Some("http://10.0.0.1:8200/v1/x".into())));
    }
    // A timeout (Envoy answers with no headers once the call's timeout passes).
    let host = host_with(&config(""));
    let mut vm = redirecting(&host);
    host.advance(Duration::from_secs(36));
    vm.run_due().unwrap();
    assert_eq!(host.metric("vault_redirect.poll_failures"), Some(1));
}

#[test]
fn an_answer_without_news_that_came_at_once_does_not_start_a_busy_loop() {
    let host = host_with(&config(r#""retry_initial_ms":250,"tick_ms":50"#));
    let mut vm = redirecting(&host);
    // A poller that ignores `index` answers at once with the same version.
    answer(&mut vm, 200, &state(1 << 16, "vault-a", "10.0.0.1", 8200));
    assert!(vm.pending_http_calls().is_empty(), "polled again at once without news");
    host.advance(Duration::from_millis(250));
    vm.tick().unwrap();
    assert_eq!(vm.pending_http_calls().len(), 1);
}

#[test]
fn a_worker_seeded_from_shared_data_resumes_its_long_poll_at_once_after_its_first_answer() {
    let host = host_with(&config(r#""tick_ms":500"#));
    let _first = redirecting(&host);
    // The second worker's first poll fails; its next tick seeds it from shared data.
    let mut second = started(&host);
    let call = the_poll(&second);
    second.fail_http_call(call.token).unwrap();
    host.advance(Duration::from_millis(300));
    second.tick().unwrap();
    // Its next poll asks for an immediate confirmation (no index) of the version it holds...
    let confirm = the_poll(&second);
    assert_eq!(confirm.header(":path"), Some("/v1/active?index=0&wait=30s"));
    second
        .respond_http_call(
            confirm.token,
            HttpCallResponse::new(200, state(1 << 16, "vault-a", "10.0.0.1", 8200)),
        )
        .unwrap();
    // ...and, that answer being immediate by design, goes straight back to long-polling.
    let long = the_poll(&second);
    assert_eq!(
        long.header(":path"),
        Some(format!("/v1/active?index={}&wait=30s", 1u64 << 16).as_str())
    );
}

#[test]
fn a_state_unconfirmed_past_max_stale_gives_503_and_pass_through_mode_continues() {
    let host = host_with(&config(r#""max_stale_seconds":10,"tick_ms":100"#));
    let mut vm = redirecting(&host);
    let call = the_poll(&vm);
    host.advance(Duration::from_millis(9_900));
    vm.tick().unwrap();
    assert_eq!(location(&mut vm, "/v1/x").0, 307, "still fresh at 9.9 s");
    host.advance(Duration::from_millis(200));
    vm.tick().unwrap();
    let out = get(&mut vm, "/v1/x").local_response.unwrap();
    assert_eq!(out.status, 503);
    assert!(
        String::from_utf8_lossy(&out.body).contains("stale"),
        "{:?}",
        String::from_utf8_lossy(&out.body)
    );
    // A confirmation of the same version makes it fresh again.
    vm.respond_http_call(
        call.token,
        HttpCallResponse::new(200, state(1 << 16, "vault-a", "10.0.0.1", 8200)),
    )
    .unwrap();
    assert_eq!(location(&mut vm, "/v1/x").0, 307);

    let host =
        host_with(&config(r#""max_stale_seconds":1,"tick_ms":100,"no_active":"pass_through""#));
    let mut vm = redirecting(&host);
    host.advance(Duration::from_secs(2));
    vm.tick().unwrap();
    let out = get(&mut vm, "/v1/x");
    assert_eq!((out.action, out.local_response), (Action::Continue, None));
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.no_active"), Some(1));
}

#[test]
fn no_active_node_gives_503_retry_after_and_the_pollers_reason_in_vault_error_shape() {
    let host = host_with(&config(""));
    let mut vm = started(&host);
    answer(&mut vm, 200, &no_active(2 << 16, "no Vault node is tagged active"));
    let out = get(&mut vm, "/v1/secret/data/x").local_response.unwrap();
    assert_eq!(out.status, 503);
    assert_eq!(out.header("retry-after"), Some("1"));
    assert_eq!(out.header("content-type"), Some("application/json"));
    assert_eq!(out.header("cache-control"), Some("no-store"));
    assert_eq!(out.header("location"), None);
    let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"errors": ["no active Vault node: no Vault node is tagged active"]})
    );
}

#[test]
fn a_target_that_is_not_a_hostname_or_ip_is_refused_counted_and_never_emitted() {
    for address in
        ["evil.example/x", "a@b", "10.0.0.1\\r\\nSet-Cookie: x=1", "a b", "vault:8200", "%2e"]
    {
        let host = host_with(&config(""));
        let mut vm = redirecting(&host);
        answer(&mut vm, 200, &state(2 << 16, "vault-b", address, 8200));
        let out = get(&mut vm, "/v1/x").local_response.unwrap();
        assert_eq!(out.status, 503, "{address}");
        assert_eq!(out.header("location"), None, "{address}");
        assert_eq!(host.metric("vault_redirect.refused_targets"), Some(1), "{address}");
        assert!(
            logged(&vm, LogLevel::Error, "refusing state version"),
            "{address}: {:?}",
            vm.logs()
        );
    }
}

#[test]
fn ipv6_addresses_are_bracketed_and_scheme_host_and_port_follow_the_configuration() {
    let host = host_with(&config(""));
    let mut vm = started(&host);
    answer(&mut vm, 200, &state(1 << 16, "vault-a", "2001:db8::5", 8200));
    assert_eq!(location(&mut vm, "/v1/x"), (307, Some("http://[2001:db8::5]:8200/v1/x".into())));

    let host = host_with(&config(r#""scheme":"https","target_host":"node","target_port":443"#));
    let mut vm = started(&host);
    answer(&mut vm, 200, &state(1 << 16, "vault-a.dc1.consul", "10.0.0.1", 8200));
    assert_eq!(
        location(&mut vm, "/v1/x?y=1"),
        (307, Some("https://vault-a.dc1.consul:443/v1/x?y=1".into()))
    );
}

#[test]
fn without_a_configured_scheme_the_pollers_hint_is_followed_and_a_configured_one_wins() {
    let hinted = r#"{"version":65536,"active":{"node":"a","address":"10.0.0.1","port":8200},"consul_index":1,"scheme":"https"}"#;
    let host = host_with(&config(""));
    let mut vm = started(&host);
    answer(&mut vm, 200, hinted);
    assert_eq!(location(&mut vm, "/v1/x").1.as_deref(), Some("https://10.0.0.1:8200/v1/x"));
    let host = host_with(&config(r#""scheme":"http""#));
    let mut vm = started(&host);
    answer(&mut vm, 200, hinted);
    assert_eq!(location(&mut vm, "/v1/x").1.as_deref(), Some("http://10.0.0.1:8200/v1/x"));
}

#[test]
fn the_path_is_copied_byte_for_byte_even_when_it_is_not_utf8() {
    let host = host_with(&config(""));
    let mut vm = redirecting(&host);
    let path: &[u8] = b"/v1/kv/\xff\xfe%00?q=%0d%0a&x=\xc3\xa9";
    let out = vm
        .send_request_bytes(&[
            (":method", b"POST"),
            (":authority", b"vault.example"),
            (":path", path),
        ])
        .unwrap()
        .local_response
        .unwrap();
    assert_eq!(out.status, 307);
    assert_eq!(
        out.header_bytes("location"),
        Some([b"http://10.0.0.1:8200".as_slice(), path].concat().as_slice())
    );
}

#[test]
fn targets_that_are_not_origin_form_get_400_and_long_paths_414() {
    let host = host_with(&config(""));
    let mut vm = redirecting(&host);
    for path in ["http://evil.example/x", "*", "evil.example/x", "", "/a\rb"] {
        let out = get(&mut vm, path).local_response.unwrap();
        assert_eq!(out.status, 400, "{path:?}");
        assert_eq!(out.header("location"), None);
    }
    let out = vm
        .send_request(&[(":method", "GET"), (":authority", "v")])
        .unwrap()
        .local_response
        .unwrap();
    assert_eq!(out.status, 400, "a request without :path");
    let long = format!("/{}", "a".repeat(9_000));
    assert_eq!(get(&mut vm, &long).local_response.unwrap().status, 414);
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.bad_requests"), Some(7));
}

#[test]
fn the_host_header_and_forwarded_headers_never_change_the_location() {
    let host = host_with(&config(""));
    let mut vm = redirecting(&host);
    let out = vm
        .send_request(&[
            (":method", "GET"),
            (":authority", "evil.example"),
            ("host", "evil.example"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            (":path", "/v1/x"),
        ])
        .unwrap()
        .local_response
        .unwrap();
    assert_eq!(out.header("location"), Some("http://10.0.0.1:8200/v1/x"));
}

#[test]
fn pass_through_paths_continue_and_the_debug_header_names_version_and_age() {
    let host =
        host_with(&config(r#""pass_through_paths":["/healthz","/ui/*"],"debug_header":true"#));
    let mut vm = redirecting(&host);
    for path in ["/healthz", "/healthz?full", "/ui/", "/ui/vault/secrets"] {
        let out = get(&mut vm, path);
        assert_eq!((out.action, out.local_response.is_none()), (Action::Continue, true), "{path}");
    }
    host.advance(Duration::from_millis(1_234));
    let out = get(&mut vm, "/healthzz").local_response.unwrap();
    assert_eq!(out.status, 307);
    assert_eq!(
        out.header("x-vault-redirect-state"),
        Some(format!("version={}; age_ms=1234", 1u64 << 16).as_str())
    );
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.pass_through"), Some(4));
}

#[test]
fn redirects_and_state_updates_are_counted() {
    let host = host_with(&config(""));
    let mut vm = redirecting(&host);
    let before = vm.hostcall_counts();
    for _ in 0..3 {
        get(&mut vm, "/v1/x");
    }
    // Requests count in the worker's memory (no metric host call per request) ...
    let after = vm.hostcall_counts();
    assert_eq!(after.get("proxy_increment_metric"), before.get("proxy_increment_metric"));
    let redirects = host.metric("vault_redirect.redirects").unwrap_or(0);
    assert_eq!(redirects, 0, "counted before the tick");
    // ... and reach the host's counter on the next tick, once.
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.redirects"), Some(3));
    vm.tick().unwrap();
    assert_eq!(
        host.metric("vault_redirect.redirects"),
        Some(3),
        "a tick without requests adds nothing"
    );
    get(&mut vm, "/v1/x");
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.redirects"), Some(4));
    assert_eq!(host.metric("vault_redirect.state_updates"), Some(1));
    assert_eq!(host.metric("vault_redirect.state_version"), Some(1 << 16));
}

#[test]
fn an_older_version_from_a_lagging_replica_does_not_move_the_state_back() {
    let host = host_with(&config(""));
    let mut vm = started(&host);
    answer(&mut vm, 200, &state(5 << 16, "vault-b", "10.0.0.2", 8200));
    host.advance(Duration::from_secs(30));
    answer(&mut vm, 200, &state(4 << 16, "vault-a", "10.0.0.1", 8200));
    assert_eq!(location(&mut vm, "/v1/x").1.as_deref(), Some("http://10.0.0.2:8200/v1/x"));
    // Unconfirmed for two long-poll periods, an older version means Consul's index was reset.
    host.advance(Duration::from_secs(31));
    answer(&mut vm, 200, &state(4 << 16, "vault-a", "10.0.0.1", 8200));
    assert_eq!(location(&mut vm, "/v1/x").1.as_deref(), Some("http://10.0.0.1:8200/v1/x"));
}

#[test]
fn a_new_worker_starts_from_shared_data_and_a_worker_with_a_failing_poll_picks_up_a_siblings_state()
{
    let host = host_with(&config(r#""tick_ms":100"#));
    let mut first = redirecting(&host);
    let mut second = started(&host);
    // Seeded from shared data before its own poll returned.
    assert_eq!(location(&mut second, "/v1/x").1.as_deref(), Some("http://10.0.0.1:8200/v1/x"));
    // The second worker's poll keeps failing; the first learns of a failover.
    let second_call = the_poll(&second);
    second.fail_http_call(second_call.token).unwrap();
    answer(&mut first, 200, &state(2 << 16, "vault-c", "10.0.0.3", 8200));
    host.advance(Duration::from_millis(100));
    second.tick().unwrap();
    assert_eq!(location(&mut second, "/v1/x").1.as_deref(), Some("http://10.0.0.3:8200/v1/x"));
    // Shared data holds the newest state; an older one is never written over it.
    let (bytes, _) = host.shared_data_get(SHARED_KEY).unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("10.0.0.3"));
}

#[test]
fn a_cas_mismatch_is_retried_and_the_newest_state_wins() {
    let host = host_with(&config(""));
    let mut vm = redirecting(&host);
    // Someone else wrote a newer state meanwhile; ours (older) must not overwrite it.
    let newer =
        format!(r#"{{"heard_ms":1,"doc":{}}}"#, state(9 << 16, "vault-z", "10.0.0.9", 8200));
    host.shared_data_set(SHARED_KEY, newer.as_bytes()).unwrap();
    answer(&mut vm, 200, &state(3 << 16, "vault-c", "10.0.0.3", 8200));
    let (bytes, _) = host.shared_data_get(SHARED_KEY).unwrap();
    assert!(
        String::from_utf8_lossy(&bytes).contains("10.0.0.9"),
        "an older state overwrote a newer one"
    );
}

#[test]
fn an_unknown_poller_cluster_is_retried_quietly_while_envoy_starts_then_counted_and_warned() {
    let host =
        host_with(r#"{"poller_cluster":"no_such_cluster","retry_initial_ms":10,"tick_ms":1000}"#);
    let mut vm = started(&host);
    assert!(vm.pending_http_calls().is_empty());
    // Until the first state the timer runs fast, and Envoy's BadArgument for a cluster a worker
    // does not know yet is neither a failure nor a warning.
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(50)));
    host.advance(Duration::from_millis(4_900));
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.poll_failures"), Some(0));
    assert!(!logged(&vm, LogLevel::Warn, "no_such_cluster"), "{:?}", vm.logs());
    // Past the grace period it is a configuration error.
    host.advance(Duration::from_millis(200));
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.poll_failures"), Some(1));
    assert!(logged(&vm, LogLevel::Warn, "no_such_cluster"), "{:?}", vm.logs());
    assert_eq!(get(&mut vm, "/v1/x").local_response.unwrap().status, 503);
}

#[test]
fn the_timer_slows_to_the_configured_period_after_the_first_state() {
    let host = host_with(&config(r#""tick_ms":700"#));
    let mut vm = started(&host);
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(50)));
    answer(&mut vm, 200, &state(1 << 16, "vault-a", "10.0.0.1", 8200));
    assert_eq!(vm.tick_period(), Some(Duration::from_millis(700)));
}

#[test]
fn a_vault_token_never_reaches_a_log_line_or_a_response() {
    let token = "hvs.never-log-this-token";
    for cfg in [config(r#""debug_header":true"#), config(r#""max_stale_seconds":1"#)] {
        let host = host_with(&cfg).with_log_level(LogLevel::Trace);
        let mut vm = redirecting(&host);
        host.advance(Duration::from_secs(2));
        vm.tick().unwrap();
        for path in ["/v1/x", "http://evil/", "/v1/y"] {
            let out = vm
                .send_request(&[
                    (":method", "GET"),
                    (":path", path),
                    ("x-vault-token", token),
                    ("authorization", token),
                ])
                .unwrap();
            assert!(
                !format!("{:?}", out.local_response).contains(token),
                "{path}: {:?}",
                out.local_response
            );
        }
        assert!(!format!("{:?}", vm.logs()).contains(token), "{:?}", vm.logs());
        assert!(!format!("{:?}", host.metrics()).contains(token));
    }
}

/// The request headers as the filter left them, values as text.
fn headers_named(out: &host_test::RequestOutcome, name: &str) -> Vec<String> {
    out.request_headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn proxy_mode_points_the_request_at_the_active_node_and_continues() {
    let host = host_with(&config(r#""mode":"proxy""#));
    let mut vm = redirecting(&host);
    let out = get(&mut vm, "/v1/secret/data/x");
    assert_eq!((out.action, out.local_response.clone()), (Action::Continue, None));
    assert_eq!(headers_named(&out, "x-envoy-original-dst-host"), ["10.0.0.1:8200"]);
    // The name Envoy verifies the node's certificate against: by default its address.
    assert_eq!(headers_named(&out, "x-vault-redirect-upstream-name"), ["10.0.0.1"]);
    // The client's authority is left as sent: the ORIGINAL_DST cluster never reads it.
    assert_eq!(headers_named(&out, ":authority"), ["vault.example"]);

    // A new state moves the very next request.
    let call = the_poll(&vm);
    vm.respond_http_call(
        call.token,
        HttpCallResponse::new(200, state(2 << 16, "vault-b", "fd00::2", 8300)),
    )
    .unwrap();
    let out = get(&mut vm, "/v1/x");
    assert_eq!(headers_named(&out, "x-envoy-original-dst-host"), ["[fd00::2]:8300"]);
    assert_eq!(headers_named(&out, "x-vault-redirect-upstream-name"), ["[fd00::2]"]);
    vm.tick().unwrap();
    assert_eq!(host.metric("vault_redirect.proxied"), Some(2));
    assert_eq!(host.metric("vault_redirect.redirects"), Some(0));
}

#[test]
fn proxy_mode_overwrites_every_client_supplied_upstream_header() {
    let host = host_with(&config(r#""mode":"proxy""#));
    let mut vm = redirecting(&host);
    let out = vm
        .send_request(&[
            (":method", "GET"),
            (":authority", "10.9.9.9:8200"),
            ("host", "10.9.9.9:8200"),
            ("x-forwarded-host", "10.9.9.9:8200"),
            ("x-envoy-original-dst-host", "10.9.9.9:8200"),
            ("x-envoy-original-dst-host", "10.9.9.8:8200"),
            ("x-vault-redirect-upstream-name", "vault-b.vault.example"),
            ("x-vault-redirect-upstream-name", "vault-c.vault.example"),
            (":path", "/v1/x"),
        ])
        .unwrap();
    assert_eq!(out.action, Action::Continue);
    assert_eq!(headers_named(&out, "x-envoy-original-dst-host"), ["10.0.0.1:8200"]);
    assert_eq!(headers_named(&out, "x-vault-redirect-upstream-name"), ["10.0.0.1"]);
}

#[test]
fn proxy_mode_names_the_node_by_the_configured_template_and_refuses_a_name_that_does_not_render() {
    let host =
        host_with(&config(r#""mode":"proxy","upstream_server_name":"{node}.vault.example""#));
    let mut vm = redirecting(&host);
    let out = get(&mut vm, "/v1/x");
    assert_eq!(out.action, Action::Continue);
    assert_eq!(headers_named(&out, "x-vault-redirect-upstream-name"), ["vault-a.vault.example"]);
    // A node name no certificate can hold (from a bad registration): 503, never a guess.
    let call = the_poll(&vm);
    vm.respond_http_call(
        call.token,
        HttpCallResponse::new(200, state(2 << 16, "vault b", "10.0.0.2", 8200)),
    )
    .unwrap();
    let out = get(&mut vm, "/v1/x");
    assert_ne!(out.action, Action::Continue);
    let resp = out.local_response.unwrap();
    assert_eq!(resp.status, 503);
    assert!(String::from_utf8_lossy(&resp.body).contains("upstream_server_name"));
}

#[test]
fn proxy_mode_answers_503_without_a_usable_node_and_never_continues() {
    let host = host_with(&config(r#""mode":"proxy","max_stale_seconds":1,"tick_ms":100"#));
    // Before any state.
    let mut vm = started(&host);
    let out = get(&mut vm, "/v1/x");
    assert_eq!(out.local_response.map(|r| r.status), Some(503));
    // No active node: the same answer as redirect mode, the client's header untouched but unused.
    answer(&mut vm, 200, &no_active(2 << 16, "no Vault node is tagged active"));
    let out = vm
        .send_request(&[
            (":method", "GET"),
            (":authority", "vault.example"),
            ("x-envoy-original-dst-host", "10.9.9.9:8200"),
            (":path", "/v1/x"),
        ])
        .unwrap();
    assert_ne!(out.action, Action::Continue);
    let resp = out.local_response.unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.header("retry-after"), Some("1"));
    let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"errors": ["no active Vault node: no Vault node is tagged active"]})
    );
    // Stale: 503 again.
    let mut vm = redirecting(&host);
    host.advance(Duration::from_secs(2));
    vm.tick().unwrap();
    let resp = get(&mut vm, "/v1/x").local_response.unwrap();
    assert_eq!(resp.status, 503);
    assert!(String::from_utf8_lossy(&resp.body).contains("stale"));
}

#[test]
fn proxy_mode_refuses_a_node_known_only_by_name() {
    let host = host_with(&config(r#""mode":"proxy""#));
    let mut vm = started(&host);
    answer(&mut vm, 200, &state(1 << 16, "vault-a", "vault-a.service.consul", 8200));
    let resp = get(&mut vm, "/v1/x").local_response.unwrap();
    assert_eq!(resp.status, 503);
    assert!(String::from_utf8_lossy(&resp.body).contains("not an IP address"));
}

//! Property tests on the release `.wasm` in the wasmtime host: whatever the configuration, the
//! poller's answers or the requests, the filter never traps (a trap is a panic, which would
//! kill the Envoy VM), and a `Location` only ever names a validated active node.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use host_test::{Host, HttpCallResponse, Vm};
use proptest::prelude::*;

fn compiled() -> Host {
    host_test::shipped::host().unwrap_or_else(|e| panic!("{e}"))
}

/// Fragments a configuration or state document is made of, good and bad.
fn json_fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#""poller_cluster":"p""#.to_string()),
        Just(r#""scheme":"https""#.to_string()),
        Just(r#""wait_seconds":1"#.to_string()),
        Just(r#""target_port":0"#.to_string()),
        Just(r#""tick_ms":10"#.to_string()),
        Just(r#""pass_through_paths":["/h*",7]"#.to_string()),
        Just(r#""version":18446744073709551615"#.to_string()),
        Just(r#""active":{"node":"n","address":"10.0.0.1","port":8200}"#.to_string()),
        Just(r#""active":{"node":"n","address":"10.0.0.1","port":-1}"#.to_string()),
        Just(r#""consul_index":1e400"#.to_string()),
        Just(r#""reason":"\ud800""#.to_string()),
        "\"[a-z_]{1,12}\":(null|true|[0-9]{1,25}|\"[ -~]{0,12}\"|\\[\\]|\\{\\})",
        "[ -~]{0,16}",
    ]
}

fn json_object() -> impl Strategy<Value = Vec<u8>> {
    (prop::collection::vec(json_fragment(), 0..8), any::<bool>(), 0usize..4).prop_map(
        |(parts, close, junk)| {
            let mut s = format!("{{{}", parts.join(","));
            if close {
                s.push('}');
            }
            s.push_str(&"]".repeat(junk));
            s.into_bytes()
        },
    )
}

fn assert_alive(vm: &Vm, what: &str) {
    assert!(vm.failed().is_none(), "the filter trapped on {what}: {:?}", vm.failed());
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES runs longer (docs/operations.md, "Fuzzing"); the test command runs the default.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(96),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_plugin_configuration_makes_the_filter_trap(config in prop_oneof![json_object(), prop::collection::vec(any::<u8>(), 0..64)]) {
        let host = compiled().with_plugin_config(config.clone());
        let mut vm = host.start_vm().unwrap_or_else(|e| panic!("trap on {:?}: {e}", String::from_utf8_lossy(&config)));
        assert_alive(&vm, "configure");
        let out = vm.send_request(&[(":method", "GET"), (":path", "/v1/x")]).unwrap();
        assert_alive(&vm, "a request");
        if let Some(resp) = out.local_response {
            prop_assert!(resp.status == 503, "an unconfigured or stateless filter answered {}", resp.status);
        }
    }

    #[test]
    fn no_poller_answer_makes_the_filter_trap_or_emit_an_unvalidated_host(
        answers in prop::collection::vec((prop_oneof![Just(200u16), 100u16..600], prop_oneof![
            json_object(),
            prop::collection::vec(any::<u8>(), 0..128),
            "[ -~\r\n]{0,20}".prop_map(|addr| format!(
                r#"{{"version":99999999999,"active":{{"node":"n","address":"{}","port":8200}},"consul_index":1}}"#,
                addr.replace('\\', "\\\\").replace('"', "\\\"").replace('\r', "\\r").replace('\n', "\\n")).into_bytes()),
        ]), 1..6),
    ) {
        let host = compiled().with_plugin_config(r#"{"poller_cluster":"p"}"#);
        let mut vm = host.start_vm().unwrap();
        for (status, body) in answers {
            let Some(call) = vm.pending_http_calls().into_iter().next() else {
                host.advance(std::time::Duration::from_secs(6));
                vm.tick().unwrap();
                continue;
            };
            vm.respond_http_call(call.token, HttpCallResponse::new(status, body)).unwrap();
            assert_alive(&vm, "a poller answer");
            let out = vm.send_request(&[(":method", "GET"), (":path", "/v1/x")]).unwrap();
            if let Some(loc) = out.local_response.as_ref().and_then(|r| r.header("location")) {
                let authority = loc.strip_prefix("http://").and_then(|r| r.strip_suffix("/v1/x")).unwrap_or("");
                let (host_part, port) = authority.rsplit_once(':').unwrap_or(("", ""));
                prop_assert!(vault_redirect_core::Target::parse(host_part).is_ok() && port.parse::<u16>().is_ok(),
                    "Location {loc:?} names an unvalidated authority");
            }
        }
    }

    #[test]
    fn no_request_makes_the_filter_trap_and_a_location_is_prefix_plus_path(
        path in prop_oneof![prop::collection::vec(any::<u8>(), 0..300), "/[ -~]{0,200}".prop_map(String::into_bytes)],
        extra in prop::collection::vec(("[a-z:-]{1,12}", prop::collection::vec(any::<u8>(), 0..40)), 0..6),
        method in prop_oneof![Just(b"GET".to_vec()), Just(b"LIST".to_vec()), prop::collection::vec(any::<u8>(), 0..8)],
    ) {
        let host = compiled().with_plugin_config(r#"{"poller_cluster":"p"}"#);
        let mut vm = host.start_vm().unwrap();
        let call = vm.pending_http_calls().remove(0);
        vm.respond_http_call(call.token, HttpCallResponse::new(200,
            r#"{"version":65536,"active":{"node":"n","address":"10.0.0.1","port":8200},"consul_index":1}"#)).unwrap();
        let mut headers: Vec<(&str, &[u8])> = vec![(":method", &method), (":path", &path)];
        for (k, v) in &extra {
            headers.push((k.as_str(), v.as_slice()));
        }
        let out = vm.send_request_bytes(&headers).unwrap();
        assert_alive(&vm, "a request");
        let resp = out.local_response.expect("every request is answered");
        let expected = [b"http://10.0.0.1:8200".as_slice(), &path].concat();
        match resp.status {
            307 => prop_assert_eq!(resp.header_bytes("location").unwrap(), expected.as_slice()),
            400 | 414 => prop_assert!(resp.header_bytes("location").is_none()),
            other => prop_assert!(false, "unexpected status {}", other),
        }
    }
}

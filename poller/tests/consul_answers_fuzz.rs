//! Property test of the Consul answer parser and the choice of the active node: whatever
//! Consul (or something pretending to be Consul) answers, parsing either fails cleanly or the
//! choice never panics, and the node chosen always carries the active tag, passes its sealed
//! check and has an address a `Location` may hold.
#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;
use serde_json::{json, Value};
use vault_redirect_poller::source::consul::choose::{choose_active, ServiceEntry};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (0u32..70_000).prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("active"),
            Just("standby"),
            Just("passing"),
            Just("critical"),
            Just("127.0.0.2"),
            Just("evil/x"),
            Just("")
        ]
        .prop_map(Value::from),
    ]
}

fn entry() -> impl Strategy<Value = Value> {
    (
        prop_oneof!["vault-[a-c]", "[ -~]{0,8}"],
        prop_oneof![Just("127.0.0.2".to_string()), Just(String::new()), "[ -~]{0,16}"],
        prop::collection::vec(prop_oneof![Just("active".to_string()), Just("standby".to_string()), "[a-z]{0,6}"], 0..4),
        prop_oneof![Just("passing"), Just("critical"), Just("warning"), Just("bogus")],
        scalar(),
        any::<bool>(),
    )
        .prop_map(|(node, address, tags, status, junk, with_check)| {
            let id = format!("vault:{address}:8200");
            let mut checks = vec![json!({"Node": node, "CheckID": "serfHealth", "Status": "passing", "ServiceID": ""})];
            if with_check {
                checks.push(json!({"Node": node, "CheckID": format!("{id}:vault-sealed-check"), "Name": "Vault Sealed Status",
                    "Status": status, "ServiceID": id}));
            }
            json!({
                "Node": {"Node": node, "Address": "10.9.9.9", "Extra": junk},
                "Service": {"ID": id, "Service": "vault", "Tags": tags, "Address": address, "Port": 8200, "ModifyIndex": 7},
                "Checks": checks,
            })
        })
}

fn answer() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(entry(), 0..5).prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(prop_oneof![entry(), scalar()], 0..4)
            .prop_map(|v| serde_json::to_vec(&v).unwrap()),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_answer_parses_cleanly_and_the_choice_is_always_a_safe_active_node(body in answer()) {
        let Ok(entries) = serde_json::from_slice::<Vec<ServiceEntry>>(&body) else {
            return Ok(());
        };
        let choice = choose_active(&entries, "vault", "active");
        if let Some(active) = &choice.active {
            // Some entry of the answer (node names may repeat) must justify the choice.
            let justified = entries.iter().any(|e| {
                e.node.node == active.node
                    && e.address() == active.address
                    && e.service.tags.iter().any(|t| t == "active")
                    && e.sealed_check().map(|c| c.status.as_str()) == Some("passing")
            });
            prop_assert!(justified, "{:?} is not an active, unsealed entry of the answer", active);
            prop_assert!(vault_redirect_core::Target::parse(&active.address).is_ok(), "{:?}", active.address);
        }
    }
}

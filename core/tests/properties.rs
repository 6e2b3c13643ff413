//! Property tests of the pure decisions: no input makes them panic, the JSON reader agrees
//! with serde_json, and a `Location` is always the validated prefix followed by the path.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::panic)]

use proptest::prelude::*;
use vault_redirect_core::json::Json;
use vault_redirect_core::{decide, ActiveNode, Decision, RedirectPolicy, StateDoc, Target};

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES runs longer (docs/operations.md, "Fuzzing"); the test command runs the default.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_json_reader_accepts_exactly_what_serde_json_accepts(text in prop_oneof![
        "[ -~]{0,40}",
        r#"\{("[a-z]{0,3}":(-?[0-9]{1,3}(\.[0-9])?|"[ -~]{0,4}"|null|true|\[\]),?){0,4}\}"#,
        r#"\[("\\u[0-9a-fA-F]{4}"|[0-9]e[+-]?[0-9]|"\\[bfnrt"/\\]"),?\]"#,
    ]) {
        let ours = Json::parse(text.as_bytes()).is_ok();
        let theirs = serde_json::from_str::<serde_json::Value>(&text).is_ok();
        prop_assert_eq!(ours, theirs, "{:?}", text);
    }

    #[test]
    fn json_strings_read_back_as_serde_reads_them(s in "\\PC{0,30}") {
        let mut written = String::new();
        vault_redirect_core::json::write_str(&mut written, &s);
        prop_assert_eq!(serde_json::from_str::<String>(&written).unwrap(), s.clone());
        prop_assert_eq!(Json::parse(written.as_bytes()).unwrap(), Json::Str(s));
    }

    #[test]
    fn state_documents_written_by_to_json_parse_back_equal(
        version in any::<u64>(), index in any::<u64>(), port in any::<u16>(),
        node in "\\PC{0,20}", address in "\\PC{0,20}", reason in proptest::option::of("\\PC{0,20}"),
        age in proptest::option::of(any::<u64>()), active in any::<bool>(), candidates in any::<u32>(),
        https in proptest::option::of(any::<bool>()),
    ) {
        let doc = StateDoc {
            version,
            active: active.then_some(ActiveNode { node, address, port }),
            reason,
            consul_index: index,
            last_consul_ok_unix_ms: age,
            age_ms: age,
            active_candidates: candidates,
            scheme: https.map(|h| if h { vault_redirect_core::Scheme::Https } else { vault_redirect_core::Scheme::Http }),
        };
        let bytes = doc.to_json();
        prop_assert_eq!(StateDoc::parse(&bytes).unwrap(), doc.clone());
        prop_assert_eq!(serde_json::from_slice::<StateDoc>(&bytes).unwrap(), doc);
    }

    #[test]
    fn a_target_is_accepted_only_when_it_cannot_change_the_urls_authority(host in "\\PC{0,30}|[a-z0-9.:\\[\\]-]{0,20}") {
        if let Ok(t) = Target::parse(&host) {
            let s = t.as_str();
            prop_assert!(!s.bytes().any(|b| b"/@?#\\ %\r\n\t".contains(&b) || !(0x20..0x7f).contains(&b)), "{:?}", s);
            // Whatever path follows, the authority ends where the prefix ends.
            let prefix = format!("http://{s}:8200");
            let url = format!("{prefix}/x");
            prop_assert_eq!(&url[..url[7..].find('/').unwrap() + 7], prefix.as_str());
        }
    }

    #[test]
    fn decide_never_panics_and_a_redirect_is_the_prefix_then_the_path(
        path in proptest::option::of(prop::collection::vec(any::<u8>(), 0..200)),
        address in "[a-z0-9.-]{1,20}|\\PC{0,10}",
        pass in prop::collection::vec("/[a-z*]{0,5}", 0..3),
    ) {
        let active = ActiveNode { node: "n".into(), address, port: 8200 };
        let prefix = RedirectPolicy::default().location_prefix(&active).ok();
        match decide(prefix.as_deref(), path.as_deref(), &pass) {
            Decision::Redirect(loc) => {
                let (p, path) = (prefix.unwrap(), path.unwrap());
                prop_assert_eq!(path.first(), Some(&b'/'));
                prop_assert_eq!(loc, [p.as_bytes(), &path].concat());
            }
            Decision::NoActive => prop_assert!(prefix.is_none()),
            Decision::PassThrough | Decision::BadRequest(_) | Decision::PathTooLong => {}
        }
    }
}

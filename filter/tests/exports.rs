//! The post-link step (filter/link, run by scripts/build.sh): the shipped `.wasm` exports the
//! filter's own callbacks under the ABI's names and nothing else, so Envoy enters the VM only
//! for what the filter does; cargo's output, not linked, cannot be loaded at all, and says why.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use host_test::Host;
use vault_redirect_filter_link::{exports, link, linked_exports, Linked};

fn release_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip1/wasm-release")
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build.sh", path.display()))
}

/// The shipped filter.
fn shipped() -> Vec<u8> {
    read(release_dir().join("vault_redirect_filter.wasm"))
}

/// The module as cargo linked it, before scripts/build.sh's post-link step.
fn unlinked() -> Vec<u8> {
    read(release_dir().join("deps/vault_redirect_filter.wasm"))
}

const CONFIG: &str = r#"{"poller_cluster":"vault_redirect_poller"}"#;

#[test]
fn the_shipped_wasm_exports_exactly_the_linked_callbacks() {
    let exported: BTreeSet<String> = exports(&shipped()).unwrap().into_iter().collect();
    let expected: BTreeSet<String> = linked_exports().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        exported, expected,
        "the .wasm is not linked (run scripts/build.sh), or the link lists are out of date"
    );
    for absent in ["proxy_on_delete", "proxy_on_done", "proxy_on_log", "proxy_on_response_headers"]
    {
        assert!(
            !exported.contains(absent),
            "{absent} is exported: Envoy would enter the VM for it on every request"
        );
    }
}

#[test]
fn linking_is_idempotent() {
    let wasm = shipped();
    let (again, what) = link(&wasm).unwrap();
    assert_eq!(what, Linked { removed: 0, renamed: 0 });
    assert_eq!(again, wasm);
}

#[test]
fn linking_hands_the_callbacks_to_the_filter() {
    let raw = unlinked();
    let before: BTreeSet<String> = exports(&raw).unwrap().into_iter().collect();
    // filter/link/wasm-ld kept the SDK's dispatcher out; the filter's callbacks wait for their names.
    assert!(before.contains("vault_redirect_on_request_headers"), "{before:?}");
    assert!(
        !before.iter().any(|e| e.starts_with("proxy_on_") && e != "proxy_on_memory_allocate"),
        "{before:?}"
    );
    let (linked, what) = link(&raw).unwrap();
    assert_eq!(what.renamed, vault_redirect_filter_link::CALLBACKS.len());
    // The linked module is the filter: it starts and takes a configuration.
    let vm = Host::from_bytes(&linked).unwrap().with_plugin_config(CONFIG).start_vm().unwrap();
    assert!(vm.vm_start_result() && vm.configure_result(), "{:?}", vm.logs());
}

#[test]
fn the_unlinked_module_cannot_be_loaded_and_the_error_says_why() {
    let refused =
        Host::from_bytes(&unlinked()).and_then(|host| host.with_plugin_config(CONFIG).start_vm());
    let err = refused.err().expect("cargo's output must not load as the filter").to_string();
    assert!(
        err.contains("this_module_was_not_post_linked_build_it_with_scripts_build_sh"),
        "{err}"
    );
}

#[test]
fn linking_refuses_a_module_that_is_not_the_filter() {
    // (module (func (export "f")))
    let not_filter = [
        0, 97, 115, 109, 1, 0, 0, 0, 1, 4, 1, 96, 0, 0, 3, 2, 1, 0, 7, 5, 1, 1, 102, 0, 0, 10, 4,
        1, 2, 0, 11,
    ];
    let err = link(&not_filter).unwrap_err().to_string();
    assert!(err.contains("does not export"), "{err}");
}

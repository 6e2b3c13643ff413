//! The post-link step of the filter build (`vault-redirect-filter-link FILE.wasm` rewrites it in
//! place): the filter's callbacks take the proxy-wasm ABI's names, every other export goes, and
//! so does the code nothing reaches any more.
//!
//! Why: the proxy-wasm SDK exports its dispatcher under every `proxy_on_*` name whatever the
//! filter implements, and a crate cannot export the same names (two definitions of one symbol
//! do not link). Envoy enters the VM for each exported callback on every request (response
//! headers, body, trailers, log, done, delete...), and the SDK's dispatcher keeps a context
//! per request. So the filter exports its own callbacks as `vault_redirect_on_*`
//! (filter/src/abi.rs), the workspace's linker (filter/link/wasm-ld) leaves the SDK's
//! callbacks unexported so its dispatcher is not linked at all, and this step renames the
//! filter's callbacks and removes the guard that keeps cargo's output from loading
//! (filter/src/lib.rs). A request then costs Envoy two entries into the VM plus the
//! allocator's (docs/BENCHMARKS.md). Should the SDK's callbacks still be exported (a build
//! without the workspace's linker), they are removed here too.
//!
//! The step is idempotent: a module it already linked comes back unchanged.

use anyhow::{bail, Context, Result};

/// What the filter keeps from the SDK and the toolchain, under their own names: the memory,
/// WASI's initialiser, the ABI version marker and the allocator the host writes into.
pub const FROM_SDK: &[&str] =
    &["memory", "_initialize", "proxy_abi_version_0_2_1", "proxy_on_memory_allocate"];

/// The filter's callbacks (filter/src/abi.rs) and the ABI names they take. Request contexts
/// need only the first two; there is deliberately no `proxy_on_delete` (nothing to free).
pub const CALLBACKS: &[(&str, &str)] = &[
    ("vault_redirect_on_context_create", "proxy_on_context_create"),
    ("vault_redirect_on_request_headers", "proxy_on_request_headers"),
    ("vault_redirect_on_vm_start", "proxy_on_vm_start"),
    ("vault_redirect_on_configure", "proxy_on_configure"),
    ("vault_redirect_on_tick", "proxy_on_tick"),
    ("vault_redirect_on_http_call_response", "proxy_on_http_call_response"),
];

/// The exports of a linked filter.
pub fn linked_exports() -> Vec<&'static str> {
    FROM_SDK.iter().copied().chain(CALLBACKS.iter().map(|(_, abi)| *abi)).collect()
}

/// What [`link`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Linked {
    /// Exports removed: the unlinked guard, and any SDK callback still exported.
    pub removed: usize,
    /// Filter callbacks renamed to their ABI name.
    pub renamed: usize,
}

/// Links the filter module `wasm`: see the module documentation. Returns the new module.
pub fn link(wasm: &[u8]) -> Result<(Vec<u8>, Linked)> {
    let mut module = walrus::Module::from_buffer(wasm).context("parsing the module")?;
    let has = |module: &walrus::Module, name: &str| module.exports.iter().any(|e| e.name == name);
    for name in FROM_SDK {
        if !has(&module, name) {
            bail!("the module does not export {name}: is it the vault-redirect filter?");
        }
    }
    let unlinked = CALLBACKS.iter().filter(|(ours, _)| has(&module, ours)).count();
    let already = CALLBACKS.iter().filter(|(_, abi)| has(&module, abi)).count();
    if unlinked == 0 && already == CALLBACKS.len() {
        // Linked before: nothing but what a linked filter exports may remain.
        let linked = linked_exports();
        let extra: Vec<&str> = module
            .exports
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| !linked.contains(n))
            .collect();
        if !extra.is_empty() {
            bail!("the module looks linked but also exports {extra:?}");
        }
        return Ok((wasm.to_vec(), Linked { removed: 0, renamed: 0 }));
    }
    if unlinked != CALLBACKS.len() {
        let missing: Vec<&str> =
            CALLBACKS.iter().map(|(ours, _)| *ours).filter(|n| !has(&module, n)).collect();
        bail!("the module does not export {missing:?}: is it the vault-redirect filter?");
    }
    let keep =
        |name: &str| FROM_SDK.contains(&name) || CALLBACKS.iter().any(|(ours, _)| *ours == name);
    let removed: Vec<walrus::ExportId> =
        module.exports.iter().filter(|e| !keep(&e.name)).map(|e| e.id()).collect();
    for id in &removed {
        module.exports.delete(*id);
    }
    for export in module.exports.iter_mut() {
        if let Some((_, abi)) = CALLBACKS.iter().find(|(ours, _)| *ours == export.name) {
            export.name = (*abi).to_string();
        }
    }
    walrus::passes::gc::run(&mut module);
    Ok((module.emit_wasm(), Linked { removed: removed.len(), renamed: CALLBACKS.len() }))
}

/// The names a module exports.
pub fn exports(wasm: &[u8]) -> Result<Vec<String>> {
    let module = walrus::Module::from_buffer(wasm).context("parsing the module")?;
    Ok(module.exports.iter().map(|e| e.name.clone()).collect())
}

//! Trimming the filter's `.wasm` (`vault-redirect-filter-trim FILE.wasm` rewrites it in place) so it exports
//! only the proxy-wasm callbacks the filter implements, then drops the code nothing reaches.
//!
//! Why: the proxy-wasm SDK exports every `proxy_on_*` callback whatever the filter implements,
//! and Envoy calls each exported one for every request (response headers, body, trailers, log,
//! done...). Each call crosses the V8 boundary to run an SDK default that does nothing. Envoy
//! skips a callback the module does not export, so removing them cuts those crossings per
//! request (docs/BENCHMARKS.md) and, with the code only they reached, 24 KB of the `.wasm`.
//!
//! It must never remove a callback the filter overrides: when the filter gains one, add it to
//! `KEEP` (filter/tests/exports.rs checks the list against the built module).

use anyhow::{bail, Context, Result};


/// The exports the filter needs: the ABI marker, memory and its allocator, the VM and root
/// context lifecycle, the tick and HTTP call callbacks of the root context, and the request
/// callbacks it implements (headers only) plus `proxy_on_delete`, which frees a context in
/// the SDK's dispatcher.
pub const KEEP: &[&str] = &[
    "memory",
    "_initialize",
    "proxy_abi_version_0_2_1",
    "proxy_on_memory_allocate",
    "proxy_on_context_create",
    "proxy_on_vm_start",
    "proxy_on_configure",
    "proxy_on_tick",
    "proxy_on_http_call_response",
    "proxy_on_request_headers",
    "proxy_on_delete",
];

/// Keeps only the [`KEEP`] exports of the filter module `wasm` and the code they reach.
/// Returns the new module and how many exports were removed.
pub fn trim(wasm: &[u8]) -> Result<(Vec<u8>, usize)> {
    let mut module = walrus::Module::from_buffer(wasm).context("parsing the module")?;
    for name in KEEP {
        if module.exports.iter().all(|e| e.name != *name) {
            bail!("the module does not export {name}: is it the vault-redirect filter?");
        }
    }
    let dropped: Vec<walrus::ExportId> =
        module.exports.iter().filter(|e| !KEEP.contains(&e.name.as_str())).map(|e| e.id()).collect();
    for id in &dropped {
        module.exports.delete(*id);
    }
    walrus::passes::gc::run(&mut module);
    Ok((module.emit_wasm(), dropped.len()))
}

/// The names a module exports.
pub fn exports(wasm: &[u8]) -> Result<Vec<String>> {
    let module = walrus::Module::from_buffer(wasm).context("parsing the module")?;
    Ok(module.exports.iter().map(|e| e.name.clone()).collect())
}

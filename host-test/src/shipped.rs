//! Where this workspace's build puts the shipped filter, the `.wasm` Envoy loads: the one place
//! tests, benches and the CLI's default look for it. scripts/build.sh writes it (cargo, then
//! wasm-opt) outside cargo's own output, which cargo overwrites on every build; the scripts
//! name the same path in scripts/filter-wasm.sh.
//!
//! It never builds anything: a missing file is an error that says how to build it.

use std::path::{Path, PathBuf};

/// The shipped filter under cargo's target directory.
const UNDER_TARGET: &str = "filter/vault_redirect_filter.wasm";

/// The shipped filter is not there.
#[derive(Debug, thiserror::Error)]
#[error("{} is missing: build it with scripts/build.sh", path.display())]
pub struct NotBuilt {
    /// Where it was looked for.
    pub path: PathBuf,
}

/// The workspace root (where `Cargo.toml` and `target/` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace root, where the
/// scripts run cargo) or the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The module cargo links (the `wasm-release` profile), before wasm-opt: not what ships, but
/// it exports the same callbacks (filter/tests/exports.rs).
pub fn cargo_output_path() -> PathBuf {
    target_dir().join("wasm32-wasip1/wasm-release/vault_redirect_filter.wasm")
}

/// Where the shipped filter goes, built or not.
pub fn filter_wasm_path() -> PathBuf {
    target_dir().join(UNDER_TARGET)
}

/// The shipped filter, or why it is not there.
pub fn filter_wasm() -> Result<PathBuf, NotBuilt> {
    let path = filter_wasm_path();
    if path.is_file() {
        Ok(path)
    } else {
        Err(NotBuilt { path })
    }
}

/// A host running the shipped filter: its own fresh world (VMs, clock, shared data, metrics),
/// forked from one compilation per process. Compiling the filter is the slow part (about a
/// second in a debug build) and tests want a host each, so every test binary shares this one
/// instead of keeping its own copy of the compile-once rule.
#[cfg(feature = "runtime")]
pub fn host() -> Result<crate::Host, String> {
    static COMPILED: std::sync::OnceLock<Result<crate::Host, String>> = std::sync::OnceLock::new();
    let compiled = COMPILED.get_or_init(|| {
        let path = filter_wasm().map_err(|e| e.to_string())?;
        crate::Host::new(&path).map_err(|e| format!("{} does not load: {e}", path.display()))
    });
    compiled.as_ref().map(crate::Host::fork).map_err(Clone::clone)
}

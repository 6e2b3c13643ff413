//! `vault-redirect-filter-trim FILE.wasm`: the post-link step of the filter build (see the
//! library's documentation); scripts/build.sh runs it on the release `.wasm`.

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        bail!("usage: vault-redirect-filter-trim FILE.wasm (rewritten in place)");
    };
    let wasm = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let (trimmed, dropped) = vault_redirect_filter_trim::trim(&wasm).with_context(|| format!("trimming {path}"))?;
    std::fs::write(&path, &trimmed).with_context(|| format!("writing {path}"))?;
    eprintln!("trim: {path}: {} -> {} bytes, {dropped} unused callbacks removed", wasm.len(), trimmed.len());
    Ok(())
}

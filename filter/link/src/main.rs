//! `vault-redirect-filter-link FILE.wasm`: the post-link step of the filter build (see the
//! library's documentation); scripts/build.sh runs it on the release `.wasm`.

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        bail!("usage: vault-redirect-filter-link FILE.wasm (rewritten in place)");
    };
    let wasm = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
    let (linked, what) =
        vault_redirect_filter_link::link(&wasm).with_context(|| format!("linking {path}"))?;
    std::fs::write(&path, &linked).with_context(|| format!("writing {path}"))?;
    eprintln!(
        "link: {path}: {} -> {} bytes, {} SDK exports removed, {} callbacks renamed",
        wasm.len(),
        linked.len(),
        what.removed,
        what.renamed
    );
    Ok(())
}

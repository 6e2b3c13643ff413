//! The end-to-end tests' certificates: the doubles' test PKI (one builder for every TLS test)
//! issued for every loopback name the tests serve on (`localhost`, 127.0.0.1 to 127.0.0.5),
//! under `target/e2e-logs/`. TLS listeners of Envoy and of OpenBao nodes use it; clients trust
//! `ca.pem`.

use anyhow::Result;
pub use vault_redirect_doubles::Pki;
use vault_redirect_doubles::PkiSpec;

use crate::envoy::TlsFiles;

/// The names the leaf certificate is valid for.
pub const NAMES: [&str; 6] =
    ["localhost", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];

/// A fresh CA and leaf for [`NAMES`] under `target/e2e-logs/`, removed on drop.
pub fn loopback() -> Result<Pki> {
    let dir = crate::target_dir().join("e2e-logs");
    Ok(Pki::new("e2e", Some(&dir), &PkiSpec::leaf_for(&NAMES))?)
}

/// The leaf's files, for a TLS listener.
pub fn files(pki: &Pki) -> TlsFiles {
    TlsFiles { cert: pki.path("chain.pem"), key: pki.path("key.pem") }
}

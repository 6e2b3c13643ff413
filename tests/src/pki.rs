//! A test certificate authority and one leaf certificate valid for every loopback name the
//! tests serve on (`localhost`, 127.0.0.1 to 127.0.0.5), written as PEM files into a directory
//! that is removed on drop. TLS listeners of Envoy and of OpenBao nodes use it; clients trust
//! the CA file.
//!
//! It never touches the system's trust store and never writes outside `target/`.

use std::path::PathBuf;

use anyhow::Result;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::envoy::TlsFiles;

/// The names the leaf certificate is valid for.
pub const NAMES: [&str; 6] =
    ["localhost", "127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];

/// A CA and a leaf signed by it, in memory and as files (`ca.pem`, `cert.pem`, `key.pem`).
pub struct Pki {
    dir: PathBuf,
    /// The CA certificate, PEM.
    pub ca: String,
    /// The leaf certificate, PEM.
    pub chain: String,
    /// The leaf's private key, PEM.
    pub key: String,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    /// A fresh CA and leaf under `target/e2e-logs/pki-<pid>-<n>/`.
    pub fn new() -> Result<Pki> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = crate::target_dir().join("e2e-logs").join(format!(
            "pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Distinct names: with rcgen's default name on both, OpenSSL (curl) takes the leaf
        // for a self-signed certificate.
        ca_params.distinguished_name.push(DnType::CommonName, "vault-redirect e2e test CA");
        let ca_key = KeyPair::generate()?;
        let ca = ca_params.self_signed(&ca_key)?;
        let leaf_key = KeyPair::generate()?;
        let mut leaf_params = CertificateParams::new(NAMES.map(String::from).to_vec())?;
        leaf_params.distinguished_name.push(DnType::CommonName, "vault-redirect e2e");
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
        let pki = Pki { dir, ca: ca.pem(), chain: leaf.pem(), key: leaf_key.serialize_pem() };
        std::fs::write(pki.path("ca.pem"), &pki.ca)?;
        std::fs::write(pki.path("cert.pem"), &pki.chain)?;
        std::fs::write(pki.path("key.pem"), &pki.key)?;
        Ok(pki)
    }

    /// One of the files: `ca.pem`, `cert.pem` or `key.pem`.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The leaf's files, for a TLS listener.
    pub fn files(&self) -> TlsFiles {
        TlsFiles { cert: self.path("cert.pem"), key: self.path("key.pem") }
    }
}

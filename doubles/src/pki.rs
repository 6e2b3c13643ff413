//! A throw-away PKI for tests: a root CA, optionally an intermediate, and one leaf for the
//! names a test serves, written as PEM files into a fresh directory that is removed on drop.
//!
//! One builder for every TLS test (Consul over https, the standalone listener, Envoy's TLS
//! listener, Vault and OpenBao nodes on TLS), so each test says only what differs: the names,
//! whether a chain has an intermediate. It never touches a system trust store.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Why a PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen refused a parameter or failed to sign.
    #[error("cannot make the test certificates: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// The directory or a file could not be written.
    #[error("cannot write the test certificates under {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What to issue.
#[derive(Clone, Debug)]
pub struct PkiSpec {
    /// The leaf's subject alternative names (DNS names or IP literals).
    pub names: Vec<String>,
    /// Sign the leaf with an intermediate CA, and put it in `chain.pem` after the leaf.
    pub intermediate: bool,
}

impl PkiSpec {
    /// A leaf for `names`, signed by the root directly.
    pub fn leaf_for(names: &[&str]) -> PkiSpec {
        PkiSpec { names: names.iter().map(|n| n.to_string()).collect(), intermediate: false }
    }

    /// The same, signed through an intermediate CA.
    pub fn with_intermediate(mut self) -> PkiSpec {
        self.intermediate = true;
        self
    }
}

/// The files of a test PKI, in a directory removed on drop:
/// - `ca.pem`: the root, the only certificate a client should trust;
/// - `cert.pem`: the leaf alone;
/// - `chain.pem`: the leaf, then the intermediate when there is one (what servers send);
/// - `key.pem`: the leaf's private key;
/// - `other-key.pem`: a key that matches no certificate (for refusal tests).
pub struct Pki {
    dir: PathBuf,
    /// The root CA, PEM.
    pub ca: String,
    /// The leaf then the intermediate (if any), PEM.
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
    /// Issues `spec` into a fresh directory under `parent` (the system's temp directory when
    /// `None`), named after `label`, the process and a counter, so parallel tests never meet.
    pub fn new(label: &str, parent: Option<&Path>, spec: &PkiSpec) -> Result<Pki, PkiError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let parent = parent.map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
        let dir = parent.join(format!(
            "pki-{label}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |source| PkiError::Io { dir: dir.clone(), source };
        std::fs::create_dir_all(&dir).map_err(io)?;

        let ca_key = KeyPair::generate()?;
        let ca = ca_params("vault-redirect test root CA")?.self_signed(&ca_key)?;
        let intermediate = if spec.intermediate {
            let key = KeyPair::generate()?;
            let cert =
                ca_params("vault-redirect test intermediate CA")?.signed_by(&key, &ca, &ca_key)?;
            Some((cert, key))
        } else {
            None
        };
        let (issuer, issuer_key) = match &intermediate {
            Some((cert, key)) => (cert, key),
            None => (&ca, &ca_key),
        };
        let leaf_key = KeyPair::generate()?;
        let mut leaf_params = CertificateParams::new(spec.names.clone())?;
        // A name of its own: with rcgen's default name on root and leaf alike, OpenSSL (curl)
        // takes the leaf for a self-signed certificate.
        leaf_params.distinguished_name.push(DnType::CommonName, "vault-redirect test server");
        let leaf = leaf_params.signed_by(&leaf_key, issuer, issuer_key)?;

        let chain = match &intermediate {
            Some((cert, _)) => format!("{}{}", leaf.pem(), cert.pem()),
            None => leaf.pem(),
        };
        let pki = Pki { dir, ca: ca.pem(), chain, key: leaf_key.serialize_pem() };
        let files = [
            ("ca.pem", pki.ca.clone()),
            ("cert.pem", leaf.pem()),
            ("chain.pem", pki.chain.clone()),
            ("key.pem", pki.key.clone()),
            ("other-key.pem", KeyPair::generate()?.serialize_pem()),
        ];
        for (name, pem) in files {
            std::fs::write(pki.dir.join(name), pem)
                .map_err(|source| PkiError::Io { dir: pki.dir.clone(), source })?;
        }
        Ok(pki)
    }

    /// The path of one of the files listed on [`Pki`].
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The same, as a string for command-line flags (the directory is always UTF-8 here:
    /// it is built from the temp directory and ASCII names).
    pub fn path_str(&self, file: &str) -> String {
        self.path(file).to_string_lossy().into_owned()
    }
}

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, common_name);
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_with_an_intermediate_holds_two_certificates_and_the_files_go_on_drop() {
        let pki = Pki::new("unit", None, &PkiSpec::leaf_for(&["127.0.0.1"]).with_intermediate())
            .expect("pki");
        assert_eq!(pki.chain.matches("BEGIN CERTIFICATE").count(), 2);
        let dir = pki.path("");
        for f in ["ca.pem", "cert.pem", "chain.pem", "key.pem", "other-key.pem"] {
            assert!(pki.path(f).is_file(), "{f} missing");
        }
        drop(pki);
        assert!(!dir.exists(), "the directory outlived its Pki");
    }

    #[test]
    fn a_direct_leaf_is_its_own_chain() {
        let pki = Pki::new("unit", None, &PkiSpec::leaf_for(&["localhost"])).expect("pki");
        assert_eq!(pki.chain.matches("BEGIN CERTIFICATE").count(), 1);
        assert_ne!(pki.ca, pki.chain);
    }
}

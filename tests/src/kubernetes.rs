//! The Kubernetes source end to end: the Kubernetes API double over TLS, a service-account
//! directory as a pod has it, the real poller binary on `--source kubernetes`, and real Envoy
//! with the release filter. Shared by the end-to-end test and the bench, so both measure the
//! same path. Every process and server stops when the stack drops.

use std::path::PathBuf;

use anyhow::{Context, Result};
use vault_redirect_doubles::{
    three_pods, write_service_account, Flavor, KubeApiDouble, Pki, PkiSpec,
};

use crate::envoy::{Envoy, EnvoyOptions};
use crate::poller::Poller;

/// The service account's token the double accepts at start.
pub const TOKEN: &str = "sa-token-1";
/// Vault's namespace.
pub const NAMESPACE: &str = "vault";

/// The API double, the poller watching it, and Envoy in front.
pub struct KubeStack {
    /// Envoy with the filter; dropped first.
    pub envoy: Envoy,
    /// The poller on `--source kubernetes`.
    pub poller: Poller,
    /// The Kubernetes API double.
    pub api: KubeApiDouble,
    /// The service-account directory (token, ca.crt, namespace).
    pub service_account: PathBuf,
    _pki: Pki,
}

impl Drop for KubeStack {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.service_account);
    }
}

impl KubeStack {
    /// Vault's three pods (vault-0 active on 127.0.0.2, vault-1 and vault-2 on .3 and .4),
    /// the poller with `extra` flags, and Envoy with the filter's default configuration.
    pub async fn start(extra: &[&str]) -> Result<KubeStack> {
        let pki = Pki::new("k8s-e2e", None, &PkiSpec::leaf_for(&["127.0.0.1"]))?;
        let api =
            KubeApiDouble::start(NAMESPACE, three_pods(Flavor::Vault), &pki.chain, &pki.key, TOKEN)
                .await?;
        let service_account = pki.path("serviceaccount");
        write_service_account(&service_account, TOKEN, &pki.ca, NAMESPACE)
            .context("service-account directory")?;
        let port = api.addr().port().to_string();
        let dir = service_account.to_string_lossy().into_owned();
        let mut args = vec![
            "--source",
            "kubernetes",
            "--k8s-api-host",
            "127.0.0.1",
            "--k8s-api-port",
            &port,
            "--k8s-service-account-dir",
            &dir,
        ];
        args.extend_from_slice(extra);
        // The Consul address is never used with --source kubernetes.
        let poller = Poller::start("http://127.0.0.1:1", &args).await?;
        let envoy = Envoy::start(EnvoyOptions::new(poller.addr)).await?;
        Ok(KubeStack { envoy, poller, api, service_account, _pki: pki })
    }

    /// Moves the active label from `from` to `to` as Vault does: one patch per pod, the new
    /// active's first when `new_first` (two pods say active for a moment), else the old one's
    /// first (none says active for a moment).
    pub fn fail_over(&self, from: &str, to: &str, new_first: bool) {
        let up = || self.api.patch_labels(to, &[("vault-active", Some("true"))]);
        let down = || self.api.patch_labels(from, &[("vault-active", Some("false"))]);
        if new_first {
            up();
            down();
        } else {
            down();
            up();
        }
    }

    /// The pod's IP in [`three_pods`].
    pub fn ip(pod: &str) -> &'static str {
        match pod {
            "vault-0" => "127.0.0.2",
            "vault-1" => "127.0.0.3",
            _ => "127.0.0.4",
        }
    }
}

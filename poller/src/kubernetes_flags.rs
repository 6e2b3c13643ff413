//! The flags of the Kubernetes source (`--source kubernetes`), and their validation into
//! settings the source trusts. Beside `config` rather than in `source/kubernetes/` so the
//! configuration can flatten them without importing a source.
//!
//! Defaults follow the official Vault Helm chart: pods in the release's namespace carry
//! `vault-*` labels, `api_addr` is `http://$(POD_IP):8200` (the chart's `global.tlsDisable`
//! is true by default; set `--k8s-scheme https` when the chart serves TLS), and the headless
//! Service is `<release>-internal`. It never talks to the API server.

use std::time::Duration;

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Which label prefix Vault's service registration writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LabelPrefix {
    /// HashiCorp Vault: `vault-active`, `vault-sealed`, ...
    Vault,
    /// OpenBao: `openbao-active`, `openbao-sealed`, ...
    Openbao,
}

impl LabelPrefix {
    /// The prefix as it appears in the labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelPrefix::Vault => "vault",
            LabelPrefix::Openbao => "openbao",
        }
    }
}

/// How the chosen pod becomes the redirect's host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// The pod's IP (`status.podIP`), the host of `api_addr` in the official chart.
    PodIp,
    /// `<pod>.<service>.<namespace>.svc` under the headless Service of `--k8s-service`.
    Dns,
}

/// The redirect's scheme for pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PodScheme {
    /// `http://` (the chart's default, `global.tlsDisable: true`).
    Http,
    /// `https://`
    Https,
}

/// Flags of `--source kubernetes`.
#[derive(Clone, Debug, Args)]
pub struct KubernetesArgs {
    /// Namespace of the Vault pods (default: the poller's own, from the service account).
    #[arg(id = "k8s_namespace", long = "k8s-namespace", env = "VAULT_REDIRECT_K8S_NAMESPACE")]
    pub namespace: Option<String>,

    /// Label prefix Vault's Kubernetes service registration writes: vault or openbao.
    #[arg(
        long = "k8s-label-prefix",
        env = "VAULT_REDIRECT_K8S_LABEL_PREFIX",
        value_enum,
        default_value = "vault"
    )]
    pub label_prefix: LabelPrefix,

    /// Extra label selector narrowing the pods to one installation, e.g.
    /// `app.kubernetes.io/instance=vault,component=server`.
    #[arg(id = "k8s_selector", long = "k8s-selector", env = "VAULT_REDIRECT_K8S_SELECTOR")]
    pub selector: Option<String>,

    /// The redirect's host: the pod's IP, or its DNS name under --k8s-service.
    #[arg(
        long = "k8s-target",
        env = "VAULT_REDIRECT_K8S_TARGET",
        value_enum,
        default_value = "pod-ip"
    )]
    pub target: TargetKind,

    /// Headless Service of the pods, for --k8s-target dns (the chart's `<release>-internal`).
    #[arg(id = "k8s_service", long = "k8s-service", env = "VAULT_REDIRECT_K8S_SERVICE")]
    pub service: Option<String>,

    /// Vault's API port on the pods.
    #[arg(
        id = "k8s_port",
        long = "k8s-port",
        env = "VAULT_REDIRECT_K8S_PORT",
        default_value_t = 8200
    )]
    pub port: u16,

    /// Vault's API scheme on the pods (the chart serves http unless global.tlsDisable=false).
    #[arg(
        long = "k8s-scheme",
        env = "VAULT_REDIRECT_K8S_SCHEME",
        value_enum,
        default_value = "http"
    )]
    pub scheme: PodScheme,

    /// Server-side length of each watch (`timeoutSeconds`); the API server ends it then and
    /// the source watches again from the last version. A watch silent for this long plus
    /// --k8s-timeout is taken for hung and dropped.
    #[arg(id = "k8s_watch_timeout", long = "k8s-watch-timeout", env = "VAULT_REDIRECT_K8S_WATCH_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub watch_timeout: Duration,

    /// Timeout to connect to the API server and for each list.
    #[arg(id = "k8s_timeout", long = "k8s-timeout", env = "VAULT_REDIRECT_K8S_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Kubeconfig to use outside a cluster (in a pod, the service account is used).
    #[arg(id = "k8s_kubeconfig", long = "k8s-kubeconfig", env = "KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,
}

/// Where the service account's files are mounted in every pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The in-cluster settings; clap reads them from the variables the kubelet sets, so tests can
/// give them as flags.
#[derive(Clone, Debug, Args)]
pub struct InClusterArgs {
    /// The API server's host in a pod (set by the kubelet).
    #[arg(
        id = "k8s_api_host",
        long = "k8s-api-host",
        env = "KUBERNETES_SERVICE_HOST",
        hide = true
    )]
    pub api_host: Option<String>,

    /// The API server's port in a pod (set by the kubelet).
    #[arg(
        long = "k8s-api-port",
        env = "KUBERNETES_SERVICE_PORT",
        hide = true,
        default_value_t = 443
    )]
    pub api_port: u16,

    /// Directory of the service account's `token`, `ca.crt` and `namespace`.
    #[arg(id = "k8s_service_account_dir", long = "k8s-service-account-dir", env = "VAULT_REDIRECT_K8S_SERVICE_ACCOUNT_DIR", hide = true, default_value = SERVICE_ACCOUNT_DIR)]
    pub service_account_dir: PathBuf,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::duration::parse(s).map_err(|e| e.to_string())
}

/// Why the Kubernetes flags cannot be used; each names the bad value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagError {
    /// A namespace or Service name that Kubernetes would refuse (RFC 1123 label).
    #[error("invalid {flag} {value:?}: use lowercase letters, digits and dashes (at most 63)")]
    Name {
        /// The flag.
        flag: &'static str,
        /// The value as given.
        value: String,
    },
    /// `--k8s-target dns` without the Service.
    #[error("--k8s-target dns needs --k8s-service (the pods' headless Service)")]
    DnsWithoutService,
    /// A selector that cannot be sent in a query, or that is empty between commas.
    #[error(
        "invalid --k8s-selector {0:?}: use key=value, key!=value, key, !key, separated by commas"
    )]
    Selector(String),
    /// A duration outside its range.
    #[error("invalid {flag}: {why}")]
    Duration {
        /// The flag.
        flag: &'static str,
        /// The allowed range.
        why: &'static str,
    },
    /// Port 0.
    #[error("invalid --k8s-port 0")]
    Port,
}

/// The validated settings of the Kubernetes source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The namespace, when given; otherwise the service account's.
    pub namespace: Option<String>,
    /// The label prefix.
    pub label_prefix: LabelPrefix,
    /// The extra label selector, if any.
    pub selector: Option<String>,
    /// How a pod becomes a target (the namespace of a DNS rule is filled in at start).
    pub target: TargetKind,
    /// The headless Service for DNS targets.
    pub service: Option<String>,
    /// Vault's API port.
    pub port: u16,
    /// Vault's API scheme.
    pub scheme: PodScheme,
    /// Each watch's `timeoutSeconds`.
    pub watch_timeout: Duration,
    /// Connect and list timeout.
    pub timeout: Duration,
}

impl KubernetesSettings {
    /// The label that marks the active pod.
    pub fn active_label(&self) -> String {
        format!("{}-active", self.label_prefix.as_str())
    }

    /// The label selector sent to the API server: pods that carry the registration's active
    /// label (so the chart's injector and other pods stay out), narrowed by the extra selector.
    pub fn api_selector(&self) -> String {
        match &self.selector {
            Some(extra) => format!("{},{extra}", self.active_label()),
            None => self.active_label(),
        }
    }
}

fn rfc1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn selector_ok(s: &str) -> bool {
    s.split(',').all(|term| {
        let term = term.trim();
        !term.is_empty()
            && term.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=!() ".contains(&b))
    })
}

impl KubernetesArgs {
    /// Checks the flags, naming the bad value.
    pub fn validate(&self) -> Result<KubernetesSettings, FlagError> {
        if let Some(ns) = &self.namespace {
            if !rfc1123_label(ns) {
                return Err(FlagError::Name { flag: "--k8s-namespace", value: ns.clone() });
            }
        }
        if let Some(service) = &self.service {
            if !rfc1123_label(service) {
                return Err(FlagError::Name { flag: "--k8s-service", value: service.clone() });
            }
        }
        if self.target == TargetKind::Dns && self.service.is_none() {
            return Err(FlagError::DnsWithoutService);
        }
        let selector = self.selector.as_deref().map(str::trim).filter(|s| !s.is_empty());
        if let Some(s) = selector {
            if !selector_ok(s) {
                return Err(FlagError::Selector(s.to_string()));
            }
        }
        if self.port == 0 {
            return Err(FlagError::Port);
        }
        if self.watch_timeout < Duration::from_secs(1)
            || self.watch_timeout > Duration::from_secs(3600)
        {
            return Err(FlagError::Duration {
                flag: "--k8s-watch-timeout",
                why: "must be between 1s and 1h",
            });
        }
        if self.timeout < Duration::from_millis(100) {
            return Err(FlagError::Duration {
                flag: "--k8s-timeout",
                why: "must be at least 100ms",
            });
        }
        Ok(KubernetesSettings {
            namespace: self.namespace.clone(),
            label_prefix: self.label_prefix,
            selector: selector.map(str::to_string),
            target: self.target,
            service: self.service.clone(),
            port: self.port,
            scheme: self.scheme,
            watch_timeout: self.watch_timeout,
            timeout: self.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        k8s: KubernetesArgs,
    }

    fn parse(args: &[&str]) -> KubernetesArgs {
        let mut all = vec!["p"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap().k8s
    }

    #[test]
    fn defaults_follow_the_official_helm_chart() {
        let s = parse(&[]).validate().unwrap();
        assert_eq!(s.active_label(), "vault-active");
        assert_eq!(s.target, TargetKind::PodIp);
        assert_eq!((s.port, s.scheme), (8200, PodScheme::Http));
        assert_eq!(s.selector, None);
        assert_eq!(s.api_selector(), "vault-active");
        assert_eq!(s.watch_timeout, Duration::from_secs(60));
    }

    #[test]
    fn openbao_dns_targets_and_a_selector_are_taken() {
        let s = parse(&[
            "--k8s-label-prefix",
            "openbao",
            "--k8s-target",
            "dns",
            "--k8s-service",
            "openbao-internal",
            "--k8s-selector",
            "app.kubernetes.io/instance=openbao,component=server",
            "--k8s-scheme",
            "https",
        ])
        .validate()
        .unwrap();
        assert_eq!(s.label_prefix, LabelPrefix::Openbao);
        assert_eq!((s.target, s.service.as_deref()), (TargetKind::Dns, Some("openbao-internal")));
        assert_eq!(
            s.selector.as_deref(),
            Some("app.kubernetes.io/instance=openbao,component=server")
        );
        assert_eq!(s.scheme, PodScheme::Https);
        assert_eq!(
            s.api_selector(),
            "openbao-active,app.kubernetes.io/instance=openbao,component=server"
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_name() {
        let cases: &[(&[&str], &str)] = &[
            (&["--k8s-target", "dns"], "needs --k8s-service"),
            (&["--k8s-namespace", "Vault_NS"], "Vault_NS"),
            (&["--k8s-target", "dns", "--k8s-service", "x.y"], "x.y"),
            (&["--k8s-selector", "a=b,,c"], "a=b,,c"),
            (&["--k8s-selector", "a=b&watch=false"], "a=b&watch=false"),
            (&["--k8s-port", "0"], "--k8s-port"),
            (&["--k8s-watch-timeout", "2h"], "--k8s-watch-timeout"),
            (&["--k8s-timeout", "1ms"], "--k8s-timeout"),
        ];
        for (args, needle) in cases {
            let err = parse(args).validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}

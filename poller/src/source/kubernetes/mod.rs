//! The Kubernetes source: Vault's pods and the labels its Kubernetes service registration
//! patches on them (`vault-active`, `vault-sealed`, ...; `openbao-` for OpenBao), watched
//! through the API server, as the source of truth for the active node.
//!
//! It owns the connection to the API server (`cluster`), the list-and-watch loop (`source`),
//! the pure choice of the active pod (`pods`), turning what the loop sees into readings for
//! the publisher (here), and the versions of the states it learns (below). Its flags are in
//! `kubernetes_flags`, beside the configuration. It must never compare resource versions for
//! order: they are opaque strings, good only for equality and for resuming a watch.
//!
//! ## Versions
//!
//! A state learned from Kubernetes gets `max(previous + 1, observed_unix_ms << 16)`
//! (`StateDoc::next_version` with the observation time in the index's place): the high 48
//! bits are the wall-clock millisecond at which this replica applied the change, the low 16
//! bits count its own local events within one millisecond or after a clock step back.
//! - Never backwards: within a process by the `previous + 1` floor; across a restart because
//!   the clock has moved on by the restart's length (a clock stepped back by more than that
//!   is the one case left; filters then take the lower version after their reset period).
//! - Comparable across replicas: replicas watching the same API server see the same change
//!   within milliseconds of each other, so any change that comes after another by more than
//!   the replicas' clock skew plus their watch lag (milliseconds with NTP; failovers are
//!   seconds apart) gets a higher version on every replica. Two replicas give the same data
//!   slightly different versions; a filter takes whichever is newer, same content.
//! - Not from `resourceVersion`: it is an etcd revision in practice, but opaque by contract
//!   (and may differ between API servers' caches). Nor from pod timestamps: `managedFields`
//!   times have second precision, too coarse for the label patches of one failover.
//! - So a replica must not step its version up to a filter's (the Consul source's Lamport
//!   step): a higher time on another replica does not mean this replica has seen that data
//!   (`SourceKind::versions_agree_across_replicas`).

pub mod cluster;
pub mod pods;
pub mod source;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use vault_redirect_core::Scheme;

use self::pods::{Labels, PodView};
use self::source::{PodWatch, Sink, Update, HANG_MARGIN};
use crate::config::{Config, ConfigError};
use crate::kubernetes_flags::{InClusterArgs, KubernetesSettings, PodScheme};
use crate::source::backoff::{Backoff, BACKOFF_BASE};
use crate::source::{Publisher, Reading, Source, SourceInfo, SourceKind, SourceLoop};
use crate::state::{unix_ms, NodeCheck, NodeStatus};

/// The Kubernetes API server as the source of truth.
pub struct KubernetesSource {
    settings: KubernetesSettings,
    in_cluster: InClusterArgs,
    kubeconfig: Option<PathBuf>,
    backoff_max: Duration,
    endpoint: String,
}

impl KubernetesSource {
    /// Checks the flags and that the service account's files (in a pod) or the kubeconfig
    /// (elsewhere) can be read, so a bad setup fails at start-up, naming the file.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let settings = config.kubernetes.validate()?;
        let in_cluster = config.k8s_in_cluster.clone();
        // A KUBECONFIG list (`a:b`) is kube-rs's to merge: it reads the variable itself.
        let kubeconfig =
            config.kubernetes.kubeconfig.clone().filter(|p| !p.to_string_lossy().contains(':'));
        let endpoint = match in_cluster.api_host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => {
                for file in ["token", "ca.crt", "namespace"] {
                    let path = in_cluster.service_account_dir.join(file);
                    std::fs::metadata(&path).map_err(|e| {
                        ConfigError::KubernetesSetup(format!(
                            "cannot read the service account's {file} {path:?}: {e}"
                        ))
                    })?;
                }
                format!("{host}:{}", in_cluster.api_port)
            }
            None => {
                let path = kubeconfig.clone();
                let read = match &path {
                    Some(p) => kube::config::Kubeconfig::read_from(p),
                    None => kube::config::Kubeconfig::read(),
                };
                let kc = read.map_err(|e| {
                    ConfigError::KubernetesSetup(format!(
                        "not in a pod (no KUBERNETES_SERVICE_HOST) and no usable kubeconfig: {e}"
                    ))
                })?;
                kubeconfig_server(&kc).unwrap_or_else(|| "kubeconfig".to_string())
            }
        };
        Ok(KubernetesSource {
            settings,
            in_cluster,
            kubeconfig,
            backoff_max: config.backoff_max,
            endpoint,
        })
    }
}

/// The `host:port` of the kubeconfig's current cluster, for the status page.
fn kubeconfig_server(kc: &kube::config::Kubeconfig) -> Option<String> {
    let context = kc.current_context.as_ref()?;
    let ctx = kc.contexts.iter().find(|c| &c.name == context)?.context.as_ref()?;
    let cluster = kc.clusters.iter().find(|c| c.name == ctx.cluster)?.cluster.as_ref()?;
    let server = cluster.server.as_ref()?;
    Some(server.split("://").nth(1).unwrap_or(server).trim_end_matches('/').to_string())
}

impl Source for KubernetesSource {
    fn info(&self) -> SourceInfo {
        SourceInfo {
            kind: SourceKind::Kubernetes,
            endpoint: self.endpoint.clone(),
            watching: format!(
                "pods {}{}",
                self.settings.api_selector(),
                self.settings
                    .namespace
                    .as_deref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            ),
        }
    }

    fn run(self: Box<Self>, out: Publisher, stop: watch::Receiver<bool>) -> SourceLoop {
        Box::pin(self.run_loop(out, stop))
    }
}

impl KubernetesSource {
    async fn run_loop(self, out: Publisher, mut stop: watch::Receiver<bool>) {
        let read_timeout = self.settings.watch_timeout + HANG_MARGIN;
        let mut backoff = Backoff::new(BACKOFF_BASE, self.backoff_max);
        let connection = loop {
            let attempt = cluster::connect(
                &self.in_cluster,
                self.kubeconfig.as_deref(),
                self.settings.timeout,
                read_timeout,
            );
            match out.expire_while(attempt, &mut stop).await {
                None => return,
                Some(Ok(c)) => break c,
                Some(Err(e)) => {
                    log::warn!("Kubernetes: {e}");
                    out.error(&e.to_string(), Instant::now());
                    if !out.pause(backoff.next_delay(), &mut stop).await {
                        return;
                    }
                }
            }
        };
        log::info!("Kubernetes: using the {}", connection.origin);
        let watch = PodWatch::new(connection, self.settings.clone(), self.backoff_max);
        log::info!(
            "Kubernetes: watching pods {} in namespace {}",
            self.settings.api_selector(),
            watch.namespace()
        );
        let labels = watch.labels().clone();
        let scheme = match self.settings.scheme {
            PodScheme::Http => Scheme::Http,
            PodScheme::Https => Scheme::Https,
        };
        let sink =
            PublisherSink { out, labels, port: self.settings.port, scheme, last_failure: None };
        watch.run(sink, stop).await;
    }
}

/// Turns the watch loop's updates into readings, errors and metrics.
struct PublisherSink {
    out: Publisher,
    labels: Labels,
    /// Vault's API port on the pods.
    port: u16,
    /// Vault's API scheme on the pods (`--k8s-scheme`), the redirects' scheme.
    scheme: Scheme,
    /// The last failure kind logged, so a repeating failure is logged once.
    last_failure: Option<source::Failure>,
}

impl Sink for PublisherSink {
    fn send(&mut self, update: Update) {
        let now = Instant::now();
        let metrics = self.out.metrics();
        match update {
            Update::Observed(o) => {
                let outcome = if o.listed { "listed" } else { "event" };
                metrics.kubernetes_watch.get_or_create(&crate::metrics::Outcome { outcome }).inc();
                if self.last_failure.take().is_some() {
                    log::info!("Kubernetes: watching again");
                }
                self.out.reading(reading(&o, &self.labels, self.port, self.scheme), now);
            }
            Update::Failed { failure, message } => {
                let outcome = failure.as_str();
                metrics.kubernetes_watch.get_or_create(&crate::metrics::Outcome { outcome }).inc();
                if self.last_failure != Some(failure) {
                    log::warn!("Kubernetes: {outcome}: {message}");
                }
                self.last_failure = Some(failure);
                self.out.error(&format!("{outcome}: {message}"), now);
            }
        }
    }

    fn wait<F: Future + Send>(
        &self,
        work: F,
        stop: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Option<F::Output>> + Send {
        self.out.expire_while(work, stop)
    }
}

/// A reading from an observation: the index is the observation's wall-clock millisecond (see
/// "Versions" above).
fn reading(o: &source::Observation, labels: &Labels, port: u16, scheme: Scheme) -> Reading {
    let c = &o.choice;
    Reading {
        index: unix_ms(std::time::SystemTime::now()),
        index_offset: 0,
        active: c.active.clone(),
        reason: c.reason.clone(),
        candidates: c.candidates.clone(),
        refused_targets: c.refused_targets.clone(),
        nodes: o.pods.iter().map(|p| node_status(p, labels, c, port)).collect(),
        problems: Vec::new(),
        scheme: Some(scheme),
    }
}

fn node_status(p: &PodView, labels: &Labels, c: &pods::PodChoice, port: u16) -> NodeStatus {
    let sealed = p.labels.get(labels.sealed()).map_or("missing", String::as_str);
    let check = |name: &str, status: &str, ok: bool| NodeCheck {
        name: name.into(),
        status: status.into(),
        ok,
    };
    let address = c
        .active
        .as_ref()
        .filter(|a| a.node == p.name)
        .map(|a| a.address.clone())
        .or_else(|| p.pod_ip.clone())
        .unwrap_or_default();
    NodeStatus {
        node: p.name.clone(),
        address,
        port,
        labels: p
            .labels
            .iter()
            .filter(|(k, _)| k.starts_with(labels.prefix()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        checks: vec![
            check("role", p.role(labels), p.role(labels) == "active"),
            check("sealed", sealed, sealed == "false"),
            check("ready", if p.ready { "True" } else { "False" }, p.ready),
            check("deleting", if p.deleting { "yes" } else { "no" }, !p.deleting),
        ],
        latency_ms: None,
        error: None,
        candidate: c.candidates.contains(&p.name),
        active: c.active.as_ref().is_some_and(|a| a.node == p.name),
    }
}

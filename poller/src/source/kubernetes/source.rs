//! The Kubernetes watch loop: list the Vault pods, then watch them from the list's resource
//! version with bookmarks (kube-rs's runtime watcher keeps the version, follows bookmarks and
//! watches again when the API server ends a watch), and report every change of the pod set.
//!
//! Rules it keeps on top of the watcher (kubernetes: api-concepts.md):
//! - After any error it starts again from a list, after a backoff with jitter: a 410 (as an
//!   `ERROR` event or as HTTP 410, which the watcher alone would retry with the same version
//!   forever) needs one, and a list is what makes a recovery visible (the watcher's own
//!   re-watch yields nothing).
//! - Every read has a deadline: a watch or list silent for `--k8s-watch-timeout` plus
//!   [`HANG_MARGIN`] is hung (the API server ends each watch at `timeoutSeconds`); the client
//!   fails it, and the loop counts it and lists again.
//! - A 401 makes the token file be read again at once (a rotated service-account token).
//!
//! It never chooses (that is `pods`), never writes the poller's state (its caller does, from
//! the [`Update`]s it sends) and never sleeps without also watching for shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::watch;

use crate::kubernetes_flags::{KubernetesSettings, TargetKind};
use crate::source::backoff::{Backoff, BACKOFF_BASE};
use crate::source::kubernetes::cluster::Connection;
use crate::source::kubernetes::pods::{choose_active_pod, Labels, PodChoice, PodView, TargetRule};

/// How much longer than `timeoutSeconds` a read may stay silent before the watch counts as
/// hung. Below kube-rs's own idle margin (5 s), so a hang surfaces as an error we count.
pub const HANG_MARGIN: Duration = Duration::from_secs(3);

/// What went wrong talking to the API server, as operators act on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 401: the token is missing, expired or not yet rotated in.
    Unauthorized,
    /// 403: the service account lacks `get`/`list`/`watch` on pods (RBAC).
    Forbidden,
    /// 410: the resource version left the API server's window; listed again.
    Gone,
    /// A read stayed silent past its deadline (a hung watch or list).
    Hung,
    /// Anything else: connection refused or reset, TLS, 5xx, a broken stream.
    Unreachable,
}

impl Failure {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unauthorized => "unauthorized",
            Failure::Forbidden => "forbidden",
            Failure::Gone => "gone",
            Failure::Hung => "hung",
            Failure::Unreachable => "unreachable",
        }
    }
}

/// The pods and the choice made from them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The choice.
    pub choice: PodChoice,
    /// Every selected pod, by name.
    pub pods: Vec<PodView>,
    /// From a complete list (else from one watch event).
    pub listed: bool,
}

/// What the loop reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// A list completed or a watch event changed the pod set.
    Observed(Observation),
    /// A request or stream failed; the loop backs off and lists again.
    Failed {
        /// The kind, for metrics.
        failure: Failure,
        /// The error, for logs and the status page (never a token).
        message: String,
    },
}

/// Where the loop's updates go, and how it waits: a publisher keeps its `--max-stale` deadline
/// while the loop waits for the API server.
pub trait Sink: Send {
    /// Takes one update.
    fn send(&mut self, update: Update);

    /// Waits for `work`; `None` when `stop` turned true (or its sender went) first.
    fn wait<F: Future + Send>(
        &self,
        work: F,
        stop: &mut watch::Receiver<bool>,
    ) -> impl Future<Output = Option<F::Output>> + Send;
}

/// Reads the fields the choice needs from a pod.
pub fn pod_view(pod: &Pod) -> PodView {
    let status = pod.status.as_ref();
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    PodView {
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        pod_ip: status.and_then(|s| s.pod_ip.clone()).filter(|ip| !ip.is_empty()),
        ready,
        deleting: pod.metadata.deletion_timestamp.is_some(),
    }
}

fn classify(error: &watcher::Error) -> Failure {
    let code = match error {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => Some(status.code),
            other if is_timeout(other) => return Failure::Hung,
            _ => None,
        },
        watcher::Error::NoResourceVersion => None,
    };
    match code {
        Some(401) => Failure::Unauthorized,
        Some(403) => Failure::Forbidden,
        Some(410) => Failure::Gone,
        _ => Failure::Unreachable,
    }
}

/// Whether an error is a read deadline passing (hyper-timeout's `TimedOut` somewhere in the
/// source chain).
fn is_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        next = e.source();
    }
    false
}

/// The watch loop of one namespace.
pub struct PodWatch {
    connection: Connection,
    settings: KubernetesSettings,
    namespace: String,
    labels: Labels,
    rule: TargetRule,
    backoff_max: Duration,
}

impl PodWatch {
    /// A loop over `connection`'s pods in `namespace` (the settings' or the connection's).
    pub fn new(
        connection: Connection,
        settings: KubernetesSettings,
        backoff_max: Duration,
    ) -> PodWatch {
        let namespace =
            settings.namespace.clone().unwrap_or_else(|| connection.default_namespace.clone());
        let rule = match (&settings.target, &settings.service) {
            (TargetKind::Dns, Some(service)) => {
                TargetRule::Dns { service: service.clone(), namespace: namespace.clone() }
            }
            _ => TargetRule::PodIp,
        };
        let labels = Labels::new(settings.label_prefix.as_str());
        PodWatch { connection, settings, namespace, labels, rule, backoff_max }
    }

    /// The namespace watched.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn observe(&self, pods: &BTreeMap<String, PodView>, listed: bool) -> Observation {
        let pods: Vec<PodView> = pods.values().cloned().collect();
        let choice = choose_active_pod(&pods, &self.labels, &self.rule, self.settings.port);
        Observation { choice, pods, listed }
    }

    fn stream(
        &self,
    ) -> futures_util::stream::BoxStream<'static, watcher::Result<watcher::Event<Pod>>> {
        let api: kube::Api<Pod> =
            kube::Api::namespaced(self.connection.client.clone(), &self.namespace);
        let timeout = u32::try_from(self.settings.watch_timeout.as_secs()).unwrap_or(u32::MAX);
        let config = watcher::Config::default()
            .labels(&self.settings.api_selector())
            .timeout(timeout)
            // A consistent list from the API server (not its cache at version "0"), so a
            // relist after an error never goes back in time.
            .list_semantic(watcher::ListSemantic::MostRecent);
        watcher(api, config).boxed()
    }

    /// The state labels.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }

    /// Runs until `stop` becomes true (or its sender is dropped), sending each change to
    /// `sink`.
    pub async fn run(self, mut sink: impl Sink, mut stop: watch::Receiver<bool>) {
        let mut backoff = Backoff::new(BACKOFF_BASE, self.backoff_max);
        let mut pods: BTreeMap<String, PodView> = BTreeMap::new();
        // Pods of a list in progress: the set is replaced when the list is complete.
        let mut listing: Option<BTreeMap<String, PodView>> = None;
        let mut stream = self.stream();
        loop {
            let Some(item) = sink.wait(stream.next(), &mut stop).await else { return };
            match item {
                Some(Ok(watcher::Event::Init)) => listing = Some(BTreeMap::new()),
                Some(Ok(watcher::Event::InitApply(pod))) => {
                    let view = pod_view(&pod);
                    listing.get_or_insert_with(BTreeMap::new).insert(view.name.clone(), view);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    pods = listing.take().unwrap_or_default();
                    backoff.reset();
                    sink.send(Update::Observed(self.observe(&pods, true)));
                }
                Some(Ok(watcher::Event::Apply(pod))) => {
                    let view = pod_view(&pod);
                    if pods.get(&view.name) != Some(&view) {
                        pods.insert(view.name.clone(), view);
                        sink.send(Update::Observed(self.observe(&pods, false)));
                    }
                    backoff.reset();
                }
                Some(Ok(watcher::Event::Delete(pod))) => {
                    let name = pod.metadata.name.clone().unwrap_or_default();
                    if pods.remove(&name).is_some() {
                        sink.send(Update::Observed(self.observe(&pods, false)));
                    }
                    backoff.reset();
                }
                Some(Err(error)) => {
                    let failure = classify(&error);
                    if failure == Failure::Unauthorized {
                        if let Some(token) = &self.connection.token {
                            token.forget();
                        }
                    }
                    sink.send(Update::Failed { failure, message: error.to_string() });
                    let pause = backoff.next_delay();
                    if sink.wait(tokio::time::sleep(pause), &mut stop).await.is_none() {
                        return;
                    }
                    listing = None;
                    stream = self.stream();
                }
                // The watcher never ends; if it did, start again.
                None => {
                    listing = None;
                    stream = self.stream();
                }
            }
        }
    }
}

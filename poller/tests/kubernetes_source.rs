//! The Kubernetes source's watch loop against the Kubernetes API double, over TLS with a
//! service-account directory as a pod has it: list then watch with bookmarks, label patches in
//! any order, two active pods, deletion, flapping, and every fault of the issue: the API server
//! down at start and mid-watch, dropped and hung watches, 410 as an event and as HTTP 410, the
//! token rotated, RBAC refusals.

// Helpers in this file are test code: a failed step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::sync::{mpsc, watch};
use vault_redirect_doubles::{
    three_pods, write_service_account, Flavor, KubeApiDouble, Pki, PkiSpec, VaultPod,
};
use vault_redirect_poller::kubernetes_flags::{InClusterArgs, KubernetesArgs};
use vault_redirect_poller::source::kubernetes::cluster::connect;
use vault_redirect_poller::source::kubernetes::source::{
    Failure, Observation, PodWatch, Sink, Update, HANG_MARGIN,
};

const NS: &str = "vault";
const WATCH_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    k8s: KubernetesArgs,
    #[command(flatten)]
    in_cluster: InClusterArgs,
}

/// The double, a service-account directory, and the loop's updates.
struct Fixture {
    api: KubeApiDouble,
    sa_dir: PathBuf,
    updates: mpsc::UnboundedReceiver<Update>,
    stop: watch::Sender<bool>,
    _pki: Pki,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        let _ = std::fs::remove_dir_all(&self.sa_dir);
    }
}

/// The loop's updates into a channel; waits end when told to stop.
struct ChannelSink(mpsc::UnboundedSender<Update>);

impl Sink for ChannelSink {
    fn send(&mut self, update: Update) {
        let _ = self.0.send(update);
    }

    async fn wait<F: std::future::Future + Send>(
        &self,
        work: F,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<F::Output> {
        tokio::select! {
            r = work => Some(r),
            _ = stop.wait_for(|s| *s) => None,
        }
    }
}

/// The flags that point the poller at the double as if it ran in a pod.
fn in_cluster(api: &KubeApiDouble, sa_dir: &std::path::Path) -> Vec<String> {
    let port = api.addr().port().to_string();
    let sa = sa_dir.to_string_lossy().into_owned();
    ["--k8s-api-host", "127.0.0.1", "--k8s-api-port", &port, "--k8s-service-account-dir", &sa]
        .map(String::from)
        .to_vec()
}

async fn start_api(pods: Vec<VaultPod>) -> (KubeApiDouble, Pki, PathBuf) {
    let pki = Pki::new("k8s-source", None, &PkiSpec::leaf_for(&["127.0.0.1"])).unwrap();
    let api = KubeApiDouble::start(NS, pods, &pki.chain, &pki.key, "token-1").await.unwrap();
    let sa_dir = pki.path("sa");
    write_service_account(&sa_dir, "token-1\n", &pki.ca, NS).unwrap();
    (api, pki, sa_dir)
}

async fn run_watch(api: KubeApiDouble, pki: Pki, sa_dir: PathBuf, extra: &[&str]) -> Fixture {
    let watch_timeout = format!("{}s", WATCH_TIMEOUT.as_secs());
    let mut args = vec!["p".to_string()];
    args.extend(in_cluster(&api, &sa_dir));
    args.extend(["--k8s-watch-timeout", &watch_timeout, "--k8s-timeout", "1s"].map(String::from));
    args.extend(extra.iter().map(|a| a.to_string()));
    let cli = Cli::try_parse_from(args).unwrap();
    let settings = cli.k8s.validate().unwrap();
    let connection = connect(&cli.in_cluster, None, settings.timeout, WATCH_TIMEOUT + HANG_MARGIN)
        .await
        .unwrap();
    let (tx, updates) = mpsc::unbounded_channel();
    let (stop, stop_rx) = watch::channel(false);
    let source = PodWatch::new(connection, settings, Duration::from_millis(400));
    assert_eq!(source.namespace(), NS);
    tokio::spawn(source.run(ChannelSink(tx), stop_rx));
    Fixture { api, sa_dir, updates, stop, _pki: pki }
}

async fn fixture(pods: Vec<VaultPod>) -> Fixture {
    let (api, pki, sa_dir) = start_api(pods).await;
    run_watch(api, pki, sa_dir, &[]).await
}

impl Fixture {
    /// The next update, within `within`.
    async fn next(&mut self, within: Duration) -> Update {
        tokio::time::timeout(within, self.updates.recv())
            .await
            .expect("an update in time")
            .expect("the loop is running")
    }

    /// Waits for an observation that satisfies `ok`, returning it and the failures seen on
    /// the way.
    async fn observe_until(
        &mut self,
        within: Duration,
        ok: impl Fn(&Observation) -> bool,
    ) -> (Observation, Vec<Failure>) {
        let deadline = tokio::time::Instant::now() + within;
        let mut failures = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Update::Observed(o) if ok(&o) => return (o, failures),
                Update::Observed(_) => {}
                Update::Failed { failure, .. } => failures.push(failure),
            }
        }
    }

    /// Waits until `n` watches have been started on the double (a watch starts right after
    /// the list that produced an observation).
    async fn watches_reach(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.api.watches() < n {
            assert!(tokio::time::Instant::now() < deadline, "no watch {n} after 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn active_becomes(&mut self, pod: Option<&str>) -> (Observation, Vec<Failure>) {
        let want = pod.map(str::to_string);
        self.observe_until(Duration::from_secs(10), |o| {
            o.choice.active.as_ref().map(|a| a.node.clone()) == want
        })
        .await
    }
}

#[tokio::test]
async fn it_lists_then_watches_from_the_lists_version_and_follows_a_failover_in_either_order() {
    let mut f = fixture(three_pods(Flavor::Vault)).await;
    let (o, _) = f.active_becomes(Some("vault-0")).await;
    let active = o.choice.active.unwrap();
    assert_eq!((active.address.as_str(), active.port), ("127.0.0.2", 8200));
    assert_eq!(o.pods.len(), 3);
    // The new active's patch first: two pods say active for a moment; the smallest name wins
    // and both are counted.
    f.api.patch_labels("vault-1", &[("vault-active", Some("true"))]);
    let (two, _) =
        f.observe_until(Duration::from_secs(5), |o| o.choice.candidates.len() == 2).await;
    assert_eq!(two.choice.candidates, ["vault-0", "vault-1"]);
    assert_eq!(two.choice.active.unwrap().node, "vault-0");
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    f.active_becomes(Some("vault-1")).await;
    // The old active's patch first: no active pod for a moment.
    f.api.patch_labels("vault-1", &[("vault-active", Some("false"))]);
    let (none, _) = f.active_becomes(None).await;
    assert!(none.choice.reason.unwrap().contains("vault-active=true"));
    f.api.patch_labels("vault-2", &[("vault-active", Some("true"))]);
    let (o, failures) = f.active_becomes(Some("vault-2")).await;
    assert_eq!(o.choice.active.unwrap().address, "127.0.0.4");
    assert!(failures.is_empty(), "{failures:?}");

    f.watches_reach(1).await;
    assert_eq!(f.api.lists(), 1, "one list, then only watches");
    let first = &f.api.watch_log()[0];
    assert!(first.bookmarks, "bookmarks asked for");
    assert_eq!(first.timeout_seconds, Some(WATCH_TIMEOUT.as_secs()));
    assert_eq!(first.label_selector.as_deref(), Some("vault-active"));
    assert!(first.resource_version.is_some(), "the watch starts from the list's version");
}

#[tokio::test]
async fn sealed_not_ready_deleted_and_flapping_pods_are_followed_to_their_last_state() {
    let mut f = fixture(three_pods(Flavor::Vault)).await;
    f.active_becomes(Some("vault-0")).await;
    f.api.patch_labels("vault-0", &[("vault-sealed", Some("true"))]);
    let (o, _) = f.active_becomes(None).await;
    assert!(o.choice.reason.unwrap().contains("vault-0: sealed"));
    f.api.patch_labels("vault-0", &[("vault-sealed", Some("false"))]);
    f.active_becomes(Some("vault-0")).await;
    // Flapping readiness, ending not Ready.
    for i in 0..20 {
        f.api.set_ready("vault-0", i % 2 == 1);
    }
    let (o, _) = f.active_becomes(None).await;
    assert!(o.choice.reason.unwrap().contains("not Ready"));
    f.api.set_ready("vault-0", true);
    f.active_becomes(Some("vault-0")).await;
    // A pod being deleted is never the target, and a deleted pod leaves the set.
    f.api.begin_delete("vault-0");
    f.active_becomes(None).await;
    f.api.delete("vault-0");
    let (o, _) = f.observe_until(Duration::from_secs(5), |o| o.pods.len() == 2).await;
    assert!(o.pods.iter().all(|p| p.name != "vault-0"));
    f.api.add_pod(VaultPod::new(Flavor::Vault, "vault-0", "127.0.0.9", true));
    let (o, _) = f.active_becomes(Some("vault-0")).await;
    assert_eq!(o.choice.active.unwrap().address, "127.0.0.9");
}

#[tokio::test]
async fn a_410_as_an_event_or_as_http_is_followed_by_a_new_list() {
    let mut f = fixture(three_pods(Flavor::Vault)).await;
    f.active_becomes(Some("vault-0")).await;
    f.watches_reach(1).await;
    f.api.expire_open_watches();
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    f.api.patch_labels("vault-2", &[("vault-active", Some("true"))]);
    let (_, failures) = f.active_becomes(Some("vault-2")).await;
    assert!(failures.contains(&Failure::Gone), "{failures:?}");
    assert_eq!(f.api.lists(), 2);

    // HTTP 410 when a watch starts again: a change the watch's selector does not see moves
    // the server on without moving the watch's version (no bookmark within the interval),
    // the history is compacted, and the server ends the watch at its timeoutSeconds.
    f.watches_reach(2).await;
    f.api.set_too_old_as_http(true);
    let lists = f.api.lists();
    let started = std::time::Instant::now();
    let mut injector = VaultPod::new(Flavor::Vault, "vault-agent-injector", "127.0.0.8", false);
    injector.labels.remove("vault-active");
    f.api.add_pod(injector);
    f.api.compact();
    let (_, failures) = f.observe_until(WATCH_TIMEOUT * 3, |o| o.choice.active.is_some()).await;
    assert_eq!(failures, [Failure::Gone]);
    assert!(started.elapsed() >= WATCH_TIMEOUT, "the 410 came before the watch ended");
    assert_eq!(f.api.lists(), lists + 1, "listed again after the HTTP 410");
}

#[tokio::test]
async fn the_api_server_down_at_start_and_mid_watch_is_survived() {
    let (api, pki, sa_dir) = start_api(three_pods(Flavor::Vault)).await;
    api.go_down().await;
    let mut f = run_watch(api, pki, sa_dir, &[]).await;
    match f.next(Duration::from_secs(5)).await {
        Update::Failed { failure, .. } => assert_eq!(failure, Failure::Unreachable),
        other => panic!("expected a failure first, got {other:?}"),
    }
    f.api.come_back().await.unwrap();
    f.active_becomes(Some("vault-0")).await;
    // Down mid-watch, and the active pod changes meanwhile.
    f.api.go_down().await;
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    f.api.patch_labels("vault-1", &[("vault-active", Some("true"))]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.api.come_back().await.unwrap();
    let (_, failures) = f.active_becomes(Some("vault-1")).await;
    assert!(failures.contains(&Failure::Unreachable), "{failures:?}");
}

#[tokio::test]
async fn dropped_and_silently_hung_watches_are_noticed_and_replaced() {
    let mut f = fixture(three_pods(Flavor::Vault)).await;
    f.active_becomes(Some("vault-0")).await;
    f.api.drop_watches();
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    f.api.patch_labels("vault-1", &[("vault-active", Some("true"))]);
    f.active_becomes(Some("vault-1")).await;

    // The open watch goes silent and so does every new one, past its timeoutSeconds.
    f.api.hang_watches(true);
    f.api.patch_labels("vault-1", &[("vault-active", Some("false"))]);
    f.api.patch_labels("vault-2", &[("vault-active", Some("true"))]);
    let started = std::time::Instant::now();
    // The change is only seen through a new list, after the hang is detected.
    let (_, failures) = f.active_becomes(Some("vault-2")).await;
    assert!(failures.contains(&Failure::Hung), "{failures:?}");
    assert!(started.elapsed() >= WATCH_TIMEOUT, "seen before the hang could be detected");
    f.api.hang_watches(false);
}

#[tokio::test]
async fn a_rotated_token_is_read_again_after_a_401_and_rbac_refusals_are_reported() {
    let mut f = fixture(three_pods(Flavor::Vault)).await;
    f.active_becomes(Some("vault-0")).await;
    // The old token expires before the kubelet's new one is in place.
    f.api.revoke_token("token-1");
    f.api.drop_watches();
    let mut saw_401 = false;
    while let Ok(Some(u)) = tokio::time::timeout(Duration::from_secs(3), f.updates.recv()).await {
        if let Update::Failed { failure: Failure::Unauthorized, .. } = u {
            saw_401 = true;
            break;
        }
    }
    assert!(saw_401, "a 401 was reported");
    f.api.allow_token("token-2");
    let tmp = f.sa_dir.join("token.tmp");
    std::fs::write(&tmp, "token-2\n").unwrap();
    std::fs::rename(&tmp, f.sa_dir.join("token")).unwrap();
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    f.api.patch_labels("vault-1", &[("vault-active", Some("true"))]);
    f.active_becomes(Some("vault-1")).await;

    // A token without a grant on pods: 403, reported as forbidden.
    f.api.forbid_token("token-2");
    f.api.drop_watches();
    let mut saw_403 = None;
    while let Ok(Some(u)) = tokio::time::timeout(Duration::from_secs(3), f.updates.recv()).await {
        if let Update::Failed { failure: Failure::Forbidden, message } = u {
            saw_403 = Some(message);
            break;
        }
    }
    let message = saw_403.expect("a 403 was reported");
    assert!(message.contains("forbidden"), "{message}");
}

#[tokio::test]
async fn openbao_pods_under_a_selector_and_dns_targets_are_served() {
    let (api, pki, sa_dir) = start_api(three_pods(Flavor::OpenBao)).await;
    let mut f = run_watch(
        api,
        pki,
        sa_dir,
        &[
            "--k8s-label-prefix",
            "openbao",
            "--k8s-selector",
            "app.kubernetes.io/instance=openbao",
            "--k8s-target",
            "dns",
            "--k8s-service",
            "openbao-internal",
        ],
    )
    .await;
    let (o, _) = f.active_becomes(Some("vault-0")).await;
    assert_eq!(o.choice.active.unwrap().address, "vault-0.openbao-internal.vault.svc");
    f.watches_reach(1).await;
    assert_eq!(
        f.api.watch_log()[0].label_selector.as_deref(),
        Some("openbao-active,app.kubernetes.io/instance=openbao")
    );
}

#[tokio::test]
async fn the_poller_serves_the_active_pod_with_source_kubernetes_and_counts_its_watch() {
    let (api, pki, sa_dir) = start_api(three_pods(Flavor::Vault)).await;
    let mut args = vec!["--source".to_string(), "kubernetes".to_string()];
    args.extend(in_cluster(&api, &sa_dir));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = common::start("http://127.0.0.1:1", &args).await;
    let doc = common::active_until(&p, Duration::from_secs(10), |d| {
        common::active_node(d) == Some("vault-0")
    })
    .await;
    assert_eq!(doc["active"]["address"], "127.0.0.2");
    assert_eq!(doc["active"]["port"], 8200);
    let first = doc["version"].as_u64().unwrap();
    api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    api.patch_labels("vault-1", &[("vault-active", Some("true"))]);
    let doc = common::active_until(&p, Duration::from_secs(10), |d| {
        common::active_node(d) == Some("vault-1")
    })
    .await;
    assert!(doc["version"].as_u64().unwrap() > first);
    let (_, status) = common::get_json(&p.url("/v1/status")).await;
    assert_eq!(status["source"], "kubernetes");
    let metrics =
        common::client().get(p.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("vault_redirect_kubernetes_watch_total{outcome=\"listed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vault_redirect_kubernetes_watch_total{outcome=\"event\"}"),
        "{metrics}"
    );
    drop(pki);
    let _ = std::fs::remove_dir_all(&sa_dir);
}

#[tokio::test]
async fn bookmarks_move_the_resume_version_so_a_compaction_needs_no_new_list() {
    let (api, pki, sa_dir) = start_api(three_pods(Flavor::Vault)).await;
    api.set_bookmark_interval(Duration::from_millis(200));
    api.set_too_old_as_http(true);
    let mut f = run_watch(api, pki, sa_dir, &[]).await;
    f.active_becomes(Some("vault-0")).await;
    f.watches_reach(1).await;
    // A change the watch does not select moves the server on; the next bookmark carries it.
    let mut injector = VaultPod::new(Flavor::Vault, "vault-agent-injector", "127.0.0.8", false);
    injector.labels.remove("vault-active");
    f.api.add_pod(injector);
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.api.compact();
    // The server ends the watch at its timeout; the next one starts from the bookmark's
    // version, which the compaction kept: no 410, no new list.
    f.watches_reach(2).await;
    let quiet = tokio::time::timeout(Duration::from_millis(500), f.updates.recv()).await;
    assert!(quiet.is_err(), "nothing to report, got {quiet:?}");
    assert_eq!(f.api.lists(), 1);
    let second = &f.api.watch_log()[1];
    assert_eq!(second.resource_version.as_deref(), Some(f.api.resource_version().as_str()));
    // And the new watch delivers.
    f.api.patch_labels("vault-0", &[("vault-active", Some("false"))]);
    f.active_becomes(None).await;
}

//! The Vault pods as the Kubernetes source sees them, and the choice of the active one.
//!
//! Pure: no I/O, no clock. A pod is a candidate only when its registration labels say active
//! and unsealed (`<prefix>-active: "true"`, `<prefix>-sealed: "false"`, as Vault's Kubernetes
//! service registration writes them), its `Ready` condition is `True`, it is not being deleted
//! (`metadata.deletionTimestamp` unset), and its address is a valid redirect target. It must
//! never read a resource version: they are opaque, and the choice depends only on the pods.

use std::collections::BTreeMap;

use vault_redirect_core::{ActiveNode, Target};

/// Which labels mark the pods' state: Vault's `vault-` or OpenBao's `openbao-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labels {
    prefix: String,
    active: String,
    sealed: String,
}

impl Labels {
    /// The labels under `prefix` (`vault` or `openbao`).
    pub fn new(prefix: &str) -> Labels {
        Labels {
            prefix: format!("{prefix}-"),
            active: format!("{prefix}-active"),
            sealed: format!("{prefix}-sealed"),
        }
    }

    /// The prefix with its dash (`vault-`): the registration's labels start with it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The label that marks the active pod (what the chart's `-active` Service selects on).
    pub fn active(&self) -> &str {
        &self.active
    }

    /// The label that marks a sealed pod.
    pub fn sealed(&self) -> &str {
        &self.sealed
    }
}

/// How a pod becomes a redirect target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetRule {
    /// `status.podIP` (the host of `api_addr` in the official Helm chart).
    PodIp,
    /// `<pod>.<service>.<namespace>.svc`, the pod's name under a headless Service.
    Dns {
        /// The headless Service.
        service: String,
        /// The pods' namespace.
        namespace: String,
    },
}

/// The fields of a pod the choice reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.podIP`, if assigned.
    pub pod_ip: Option<String>,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
}

impl PodView {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }

    /// The pod's role in words, for the status page: active, standby, sealed...
    pub fn role(&self, labels: &Labels) -> &'static str {
        match (self.label(labels.active()), self.label(labels.sealed())) {
            (_, Some("true")) => "sealed",
            (Some("true"), _) => "active",
            (Some(_), _) => "standby",
            (None, _) => "unregistered",
        }
    }

    fn host(&self, rule: &TargetRule) -> Option<String> {
        match rule {
            TargetRule::PodIp => self.pod_ip.clone().filter(|ip| !ip.is_empty()),
            TargetRule::Dns { service, namespace } => {
                Some(format!("{}.{service}.{namespace}.svc", self.name))
            }
        }
    }
}

/// The outcome of looking at the pod set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodChoice {
    /// The pod to redirect to, if any.
    pub active: Option<ActiveNode>,
    /// Every pod that qualified, the chosen one first.
    pub candidates: Vec<String>,
    /// Why there is no active pod.
    pub reason: Option<String>,
    /// Pods labelled active that cannot be redirected to, with why.
    pub refused_targets: Vec<String>,
}

/// Why a pod labelled active is not a candidate, if it is not.
fn refusal(pod: &PodView, labels: &Labels) -> Option<&'static str> {
    if pod.deleting {
        Some("being deleted")
    } else if pod.label(labels.sealed()) != Some("false") {
        Some("sealed (or its sealed label is missing)")
    } else if !pod.ready {
        Some("not Ready")
    } else {
        None
    }
}

/// Chooses the active pod among `pods`, reached on `port`.
///
/// Among several qualifying pods (a failover, while the old active's label is not yet patched
/// back; Vault patches each pod on its own, in no set order) the smallest pod name wins: the
/// choice then depends only on the pods, so every poller replica makes the same one, and
/// `candidates` counts the others for health and metrics.
pub fn choose_active_pod(
    pods: &[PodView],
    labels: &Labels,
    rule: &TargetRule,
    port: u16,
) -> PodChoice {
    let marked: Vec<&PodView> =
        pods.iter().filter(|p| p.label(labels.active()) == Some("true")).collect();
    let mut refused_targets = Vec::new();
    let mut refused_pods = Vec::new();
    let mut qualified: Vec<(&PodView, Target)> = Vec::new();
    for pod in &marked {
        if let Some(why) = refusal(pod, labels) {
            refused_pods.push(format!("{}: {why}", pod.name));
            continue;
        }
        match pod.host(rule).map(|h| Target::parse(&h)) {
            Some(Ok(target)) => qualified.push((pod, target)),
            Some(Err(err)) => refused_targets.push(format!("{}: {err}", pod.name)),
            None => refused_targets.push(format!("{}: no pod IP yet", pod.name)),
        }
    }
    qualified.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let candidates: Vec<String> = qualified.iter().map(|(p, _)| p.name.clone()).collect();
    let active = qualified.first().map(|(p, target)| ActiveNode {
        node: p.name.clone(),
        address: target.as_str().to_string(),
        port,
    });
    let active_label = labels.active();
    let reason = match (&active, pods.is_empty(), marked.is_empty()) {
        (Some(_), _, _) => None,
        (None, true, _) => Some("no pod matches the label selector".to_string()),
        (None, false, true) => Some(format!("no pod is labelled {active_label}=true")),
        (None, false, false) if !refused_targets.is_empty() => {
            Some(format!("the {active_label}=true pod has no valid redirect target"))
        }
        (None, false, false) => Some(format!(
            "every {active_label}=true pod is sealed, not Ready or being deleted ({})",
            refused_pods.join("; ")
        )),
    };
    PodChoice { active, candidates, reason, refused_targets }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, active: bool) -> PodView {
        let b = |v: bool| if v { "true" } else { "false" }.to_string();
        PodView {
            name: name.into(),
            labels: BTreeMap::from([
                ("vault-active".to_string(), b(active)),
                ("vault-sealed".to_string(), b(false)),
                ("vault-initialized".to_string(), b(true)),
            ]),
            pod_ip: Some(ip.into()),
            ready: true,
            deleting: false,
        }
    }

    fn choose(pods: &[PodView]) -> PodChoice {
        choose_active_pod(pods, &Labels::new("vault"), &TargetRule::PodIp, 8200)
    }

    #[test]
    fn the_pod_labelled_active_is_chosen_by_its_pod_ip() {
        let c = choose(&[pod("vault-0", "10.1.0.5", false), pod("vault-1", "10.1.0.6", true)]);
        assert_eq!(
            c.active,
            Some(ActiveNode { node: "vault-1".into(), address: "10.1.0.6".into(), port: 8200 })
        );
        assert_eq!(c.candidates, ["vault-1"]);
        assert_eq!(c.reason, None);
    }

    #[test]
    fn sealed_not_ready_and_deleted_pods_are_never_chosen() {
        let mut sealed = pod("vault-0", "10.1.0.5", true);
        sealed.labels.insert("vault-sealed".into(), "true".into());
        let mut not_ready = pod("vault-1", "10.1.0.6", true);
        not_ready.ready = false;
        let mut deleting = pod("vault-2", "10.1.0.7", true);
        deleting.deleting = true;
        let mut unlabelled = pod("vault-3", "10.1.0.8", true);
        unlabelled.labels.remove("vault-sealed");
        let c = choose(&[sealed, not_ready, deleting, unlabelled]);
        assert_eq!(c.active, None);
        let reason = c.reason.unwrap();
        for why in
            ["vault-0: sealed", "vault-1: not Ready", "vault-2: being deleted", "vault-3: sealed"]
        {
            assert!(reason.contains(why), "{reason}");
        }
    }

    #[test]
    fn two_active_pods_give_the_smallest_name_whatever_the_order_and_are_counted() {
        let pods = [pod("vault-2", "10.1.0.7", true), pod("vault-1", "10.1.0.6", true)];
        let c = choose(&pods);
        assert_eq!(c.active.unwrap().node, "vault-1");
        assert_eq!(c.candidates, ["vault-1", "vault-2"]);
        let mut reversed = pods.clone();
        reversed.reverse();
        assert_eq!(choose(&reversed).candidates, ["vault-1", "vault-2"]);
    }

    #[test]
    fn no_pods_or_no_active_label_give_a_reason() {
        assert!(choose(&[]).reason.unwrap().contains("no pod matches"));
        let c = choose(&[pod("vault-0", "10.1.0.5", false)]);
        assert!(c.reason.unwrap().contains("vault-active=true"));
    }

    #[test]
    fn a_pod_without_an_ip_or_with_a_bad_one_is_refused_and_reported() {
        let mut pending = pod("vault-0", "", true);
        pending.pod_ip = None;
        let c = choose(&[pending]);
        assert_eq!(c.active, None);
        assert!(c.refused_targets[0].contains("no pod IP"));
        let c = choose(&[pod("vault-0", "10.0.0.1/x", true)]);
        assert!(c.reason.unwrap().contains("no valid redirect target"));
    }

    #[test]
    fn dns_targets_name_the_pod_under_the_headless_service_and_ipv6_is_bracketed() {
        let rule = TargetRule::Dns { service: "vault-internal".into(), namespace: "vault".into() };
        let c = choose_active_pod(
            &[pod("vault-0", "10.1.0.5", true)],
            &Labels::new("vault"),
            &rule,
            8200,
        );
        assert_eq!(c.active.unwrap().address, "vault-0.vault-internal.vault.svc");
        let c = choose(&[pod("vault-0", "fd00::5", true)]);
        assert_eq!(c.active.unwrap().address, "[fd00::5]");
    }

    #[test]
    fn openbao_pods_use_their_own_prefix() {
        let mut p = pod("openbao-0", "10.1.0.5", false);
        p.labels = BTreeMap::from([
            ("openbao-active".into(), "true".into()),
            ("openbao-sealed".into(), "false".into()),
        ]);
        let c = choose_active_pod(&[p.clone()], &Labels::new("openbao"), &TargetRule::PodIp, 8200);
        assert_eq!(c.active.unwrap().node, "openbao-0");
        assert_eq!(choose(&[p]).active, None);
    }

    #[test]
    fn roles_read_from_the_labels() {
        let l = Labels::new("vault");
        assert_eq!(pod("a", "1.2.3.4", true).role(&l), "active");
        assert_eq!(pod("a", "1.2.3.4", false).role(&l), "standby");
        let mut s = pod("a", "1.2.3.4", true);
        s.labels.insert("vault-sealed".into(), "true".into());
        assert_eq!(s.role(&l), "sealed");
        assert_eq!(PodView::default().role(&l), "unregistered");
    }
}

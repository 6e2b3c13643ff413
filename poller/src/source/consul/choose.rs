//! Consul's health answer as we read it, and the choice of the active Vault node from it.
//!
//! Pure: no I/O, no clock. The parsing is lenient (Consul answers carry many more fields than
//! we read, and Go writes empty slices as `null`); the choice is strict: a node is a candidate
//! only when it carries the active tag, its `Vault Sealed Status` check is passing, its
//! node-level `serfHealth` check is not critical, and its address is a valid redirect target.

use serde::{Deserialize, Deserializer};
use vault_redirect_core::{ActiveNode, Target};

use crate::state::{NodeCheck, NodeStatus};

/// The suffix of the check ID Vault registers for its sealed status
/// (`<serviceID>:vault-sealed-check`, vault: consul_service_registration.go).
const SEALED_CHECK_SUFFIX: &str = ":vault-sealed-check";
/// The name of that check, for registrations whose ID was set by hand.
const SEALED_CHECK_NAME: &str = "Vault Sealed Status";
/// Consul's node-level agent liveness check.
const SERF_CHECK: &str = "serfHealth";

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One entry of `GET /v1/health/service/<name>`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The Consul node.
    #[serde(default, deserialize_with = "null_as_default")]
    pub node: NodeInfo,
    /// The service instance.
    #[serde(default, deserialize_with = "null_as_default")]
    pub service: ServiceInfo,
    /// Node-level and service-level checks.
    #[serde(default, deserialize_with = "null_as_default")]
    pub checks: Vec<CheckInfo>,
}

/// The fields of `Node` we use.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct NodeInfo {
    /// Node name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub node: String,
    /// Node address, the fallback when the service address is empty.
    #[serde(default, deserialize_with = "null_as_default")]
    pub address: String,
}

/// The fields of `Service` we use.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceInfo {
    /// Service ID (`vault:<host>:<port>` for Vault).
    #[serde(rename = "ID", default, deserialize_with = "null_as_default")]
    pub id: String,
    /// Tags, where Vault writes `active` / `standby` / `performance-standby`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub tags: Vec<String>,
    /// Service address; empty means "the node's address".
    #[serde(default, deserialize_with = "null_as_default")]
    pub address: String,
    /// Service port (Vault's `api_addr` port).
    #[serde(default)]
    pub port: u16,
    /// The Raft index of the registration's last change: the newest claim to `active` wins.
    #[serde(default)]
    pub modify_index: u64,
}

/// The fields of a check we use.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CheckInfo {
    /// Check ID.
    #[serde(rename = "CheckID", default, deserialize_with = "null_as_default")]
    pub check_id: String,
    /// Check name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    /// `passing`, `warning` or `critical`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: String,
    /// The service this check belongs to; empty for node-level checks.
    #[serde(rename = "ServiceID", default, deserialize_with = "null_as_default")]
    pub service_id: String,
}

/// The outcome of looking at one Consul answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The node to redirect to, if any.
    pub active: Option<ActiveNode>,
    /// Every node that qualified, the chosen one first. More than one is a stale registration
    /// during a failover; health and metrics report it.
    pub candidates: Vec<String>,
    /// Why there is no active node.
    pub reason: Option<String>,
    /// Active-tagged nodes refused because their address cannot be redirected to, with why.
    pub refused_targets: Vec<String>,
}

impl ServiceEntry {
    /// The address clients reach the service at: `Service.Address`, else `Node.Address`.
    pub fn address(&self) -> &str {
        if self.service.address.is_empty() {
            &self.node.address
        } else {
            &self.service.address
        }
    }

    /// Vault's `Vault Sealed Status` check of this instance, if registered.
    pub fn sealed_check(&self) -> Option<&CheckInfo> {
        self.checks.iter().find(|c| {
            c.service_id == self.service.id
                && (c.check_id.ends_with(SEALED_CHECK_SUFFIX) || c.name == SEALED_CHECK_NAME)
        })
    }

    /// The node's `serfHealth` check (Consul's view of the node's agent), if present.
    pub fn agent_check(&self) -> Option<&CheckInfo> {
        self.checks.iter().find(|c| c.service_id.is_empty() && c.check_id == SERF_CHECK)
    }

    fn sealed_check_passing(&self) -> bool {
        self.sealed_check().is_some_and(|c| c.status == "passing")
    }

    fn node_reachable(&self) -> bool {
        self.agent_check().is_none_or(|c| c.status != "critical")
    }
}

/// Chooses the active node among `entries` of service `service`, where `tag` marks it.
///
/// Among several qualifying nodes the one with the highest `Service.ModifyIndex` wins (the
/// most recent registration: during a failover the new active re-registers with `active`
/// while the old one's tags lag behind), then the smallest node name. This depends only on
/// Consul's data, so every poller replica makes the same choice.
pub fn choose_active(entries: &[ServiceEntry], service: &str, tag: &str) -> Choice {
    let tagged: Vec<&ServiceEntry> =
        entries.iter().filter(|e| e.service.tags.iter().any(|t| t == tag)).collect();
    let mut refused_targets = Vec::new();
    let mut qualified: Vec<&ServiceEntry> = Vec::new();
    for e in &tagged {
        if !e.sealed_check_passing() || !e.node_reachable() || e.service.port == 0 {
            continue;
        }
        if let Err(err) = Target::parse(e.address()) {
            refused_targets.push(format!("{}: {err}", e.node.node));
            continue;
        }
        qualified.push(e);
    }
    qualified.sort_by(|a, b| {
        b.service
            .modify_index
            .cmp(&a.service.modify_index)
            .then_with(|| a.node.node.cmp(&b.node.node))
    });
    let candidates: Vec<String> = qualified.iter().map(|e| e.node.node.clone()).collect();
    let active = qualified.first().map(|e| ActiveNode {
        node: e.node.node.clone(),
        address: e.address().to_string(),
        port: e.service.port,
    });
    let reason = match (&active, entries.is_empty(), tagged.is_empty()) {
        (Some(_), _, _) => None,
        (None, true, _) => Some(format!("Consul has no instance of service {service:?}")),
        (None, false, true) => {
            Some(format!("no instance of service {service:?} is tagged {tag:?}"))
        }
        (None, false, false) if !refused_targets.is_empty() => {
            Some(format!("the {tag:?} node's address is not a valid redirect target"))
        }
        (None, false, false) => {
            Some(format!("every node tagged {tag:?} is sealed or failing its Consul health checks"))
        }
    };
    Choice { active, candidates, reason, refused_targets }
}

/// Every instance of the answer as the status page shows it, sorted by node name.
pub fn node_statuses(entries: &[ServiceEntry], choice: &Choice) -> Vec<NodeStatus> {
    let mut nodes: Vec<NodeStatus> = entries
        .iter()
        .map(|e| {
            let sealed = e.sealed_check().map_or("missing", |c| c.status.as_str());
            let agent = e.agent_check().map_or("missing", |c| c.status.as_str());
            NodeStatus {
                node: e.node.node.clone(),
                address: e.address().to_string(),
                port: e.service.port,
                labels: e.service.tags.clone(),
                checks: vec![
                    // Vault's `Vault Sealed Status`: only `passing` (unsealed) may be active.
                    NodeCheck {
                        name: "sealed check".into(),
                        status: sealed.into(),
                        ok: sealed == "passing",
                    },
                    // Consul's `serfHealth` of the node's agent: only `critical` disqualifies.
                    NodeCheck {
                        name: "agent".into(),
                        status: agent.into(),
                        ok: agent != "critical",
                    },
                ],
                latency_ms: None,
                error: None,
                candidate: choice.candidates.contains(&e.node.node),
                active: choice.active.as_ref().is_some_and(|a| a.node == e.node.node),
            }
        })
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node).then_with(|| a.port.cmp(&b.port)));
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(node: &str, addr: &str, tags: &[&str], sealed: bool, modify: u64) -> ServiceEntry {
        let id = format!("vault:{addr}:8200");
        ServiceEntry {
            node: NodeInfo { node: node.into(), address: addr.into() },
            service: ServiceInfo {
                id: id.clone(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                address: addr.into(),
                port: 8200,
                modify_index: modify,
            },
            checks: vec![
                CheckInfo {
                    check_id: "serfHealth".into(),
                    name: "Serf Health Status".into(),
                    status: "passing".into(),
                    service_id: String::new(),
                },
                CheckInfo {
                    check_id: format!("{id}:vault-sealed-check"),
                    name: "Vault Sealed Status".into(),
                    status: if sealed { "critical" } else { "passing" }.into(),
                    service_id: id,
                },
            ],
        }
    }

    #[test]
    fn the_active_tagged_unsealed_node_is_chosen() {
        let entries = vec![
            entry("vault-a", "10.0.0.1", &["standby", "initialized"], false, 5),
            entry("vault-b", "10.0.0.2", &["active", "initialized"], false, 5),
        ];
        let c = choose_active(&entries, "vault", "active");
        assert_eq!(
            c.active,
            Some(ActiveNode { node: "vault-b".into(), address: "10.0.0.2".into(), port: 8200 })
        );
        assert_eq!(c.candidates, vec!["vault-b"]);
        assert_eq!(c.reason, None);
    }

    #[test]
    fn a_sealed_active_is_never_chosen() {
        let entries = vec![entry("vault-a", "10.0.0.1", &["active"], true, 5)];
        let c = choose_active(&entries, "vault", "active");
        assert_eq!(c.active, None);
        assert!(c.reason.unwrap().contains("sealed"));
    }

    #[test]
    fn a_node_whose_agent_is_unreachable_is_not_chosen() {
        let mut e = entry("vault-a", "10.0.0.1", &["active"], false, 5);
        e.checks[0].status = "critical".into();
        assert_eq!(choose_active(&[e], "vault", "active").active, None);
    }

    #[test]
    fn a_missing_sealed_check_does_not_count_as_passing() {
        let mut e = entry("vault-a", "10.0.0.1", &["active"], false, 5);
        e.checks.truncate(1);
        assert_eq!(choose_active(&[e], "vault", "active").active, None);
    }

    #[test]
    fn zero_actives_give_a_reason_naming_the_tag() {
        let entries = vec![entry("vault-a", "10.0.0.1", &["standby"], false, 5)];
        let c = choose_active(&entries, "vault", "active");
        assert_eq!(c.active, None);
        assert!(c.reason.unwrap().contains("\"active\""));
        assert!(choose_active(&[], "vault", "active").reason.unwrap().contains("no instance"));
    }

    #[test]
    fn two_actives_pick_the_newest_registration_then_the_smallest_name() {
        let entries = vec![
            entry("vault-a", "10.0.0.1", &["active"], false, 7),
            entry("vault-c", "10.0.0.3", &["active"], false, 9),
            entry("vault-b", "10.0.0.2", &["active"], false, 9),
        ];
        let c = choose_active(&entries, "vault", "active");
        assert_eq!(c.active.unwrap().node, "vault-b");
        assert_eq!(c.candidates, vec!["vault-b", "vault-c", "vault-a"]);
        // The order of Consul's answer does not matter.
        let mut reversed = entries.clone();
        reversed.reverse();
        assert_eq!(choose_active(&reversed, "vault", "active").candidates, c.candidates);
    }

    #[test]
    fn an_empty_service_address_falls_back_to_the_node_address() {
        let mut e = entry("vault-a", "10.0.0.1", &["active"], false, 5);
        e.service.address = String::new();
        e.node.address = "10.9.9.9".into();
        assert_eq!(choose_active(&[e], "vault", "active").active.unwrap().address, "10.9.9.9");
    }

    #[test]
    fn a_poisoned_address_is_refused_and_reported() {
        let e = entry("vault-a", "evil.example/x", &["active"], false, 5);
        let c = choose_active(&[e], "vault", "active");
        assert_eq!(c.active, None);
        assert_eq!(c.refused_targets.len(), 1);
        assert!(c.reason.unwrap().contains("not a valid redirect target"));
    }

    #[test]
    fn another_tag_can_mark_the_active_node() {
        let entries = vec![
            entry("vault-a", "10.0.0.1", &["active"], false, 5),
            entry("vault-b", "10.0.0.2", &["leader"], false, 5),
        ];
        assert_eq!(choose_active(&entries, "vault", "leader").active.unwrap().node, "vault-b");
    }

    #[test]
    fn node_statuses_show_every_instance_with_its_checks_and_role() {
        let mut sealed = entry("vault-c", "10.0.0.3", &["standby"], true, 5);
        sealed.checks.remove(0);
        let entries = vec![
            sealed,
            entry("vault-b", "10.0.0.2", &["active", "initialized"], false, 6),
            entry("vault-a", "10.0.0.1", &["active", "initialized"], false, 5),
        ];
        let choice = choose_active(&entries, "vault", "active");
        let nodes = node_statuses(&entries, &choice);
        let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
        assert_eq!(names, ["vault-a", "vault-b", "vault-c"]);
        assert!(nodes[1].active && nodes[1].candidate);
        assert!(!nodes[0].active && nodes[0].candidate);
        assert_eq!(nodes[0].labels, ["active", "initialized"]);
        let check = |n: &NodeStatus, i: usize| (n.checks[i].status.clone(), n.checks[i].ok);
        assert_eq!(check(&nodes[2], 0), ("critical".to_string(), false));
        assert_eq!(check(&nodes[2], 1), ("missing".to_string(), true));
        assert_eq!(check(&nodes[0], 1), ("passing".to_string(), true));
        assert!(!nodes[2].candidate && !nodes[2].active);
    }

    #[test]
    fn consul_json_with_nulls_and_unknown_fields_parses() {
        let json = r#"[{"Node":{"ID":"x","Node":"n1","Address":"10.0.0.1","Meta":null,"Extra":1},
            "Service":{"ID":"vault:10.0.0.1:8200","Service":"vault","Tags":null,"Address":"","Port":8200,"Weights":{"Passing":1}},
            "Checks":null}]"#;
        let entries: Vec<ServiceEntry> = serde_json::from_str(json).unwrap();
        assert_eq!(entries[0].address(), "10.0.0.1");
        assert!(entries[0].service.tags.is_empty());
    }
}

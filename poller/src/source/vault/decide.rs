//! The choice of the active node from one probe round of every Vault node, and the index the
//! round's versions are built from.
//!
//! Pure: the round's answers in, a verdict out; no I/O, no clock. It owns the rules that tell
//! "Vault says there is no active node" (authoritative: served at once) from "the poller
//! cannot see Vault" (the last good state is kept up to `--max-stale`), and it never makes a
//! node active unless its own `sys/health` answered 200 in this round.

use reqwest::Url;
use vault_redirect_core::{ActiveNode, Scheme, Target};

use super::health::{Health, Leader};

/// Where a node is reached: a URL reduced to what a `Location` prefix needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// The host as a URL writes it (IPv6 in brackets), valid as a redirect target.
    pub host: String,
    /// The port, the scheme's default when the URL has none.
    pub port: u16,
}

impl Endpoint {
    /// Reads `scheme://host[:port]` with nothing after the authority but an optional `/`.
    /// Used for `--vault-node` values and for the `leader_address` Vault reports; the error
    /// names what is wrong.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        let scheme = match url.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("{text:?}: scheme {other:?} is not http or https")),
        };
        if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
            return Err(format!("{text:?}: must be scheme://host:port with no path or query"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!("{text:?}: must not carry credentials"));
        }
        let host = url.host_str().unwrap_or_default().to_string();
        Target::parse(&host).map_err(|e| format!("{text:?}: {e}"))?;
        let port = url.port_or_known_default().unwrap_or(8200);
        Ok(Endpoint { scheme, host, port })
    }

    /// `host:port`, the name a node goes by in documents, logs and metrics.
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `scheme://host:port`.
    pub fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}", self.authority())
    }

    /// Whether two endpoints name the same listener, whatever their schemes.
    fn same_listener(&self, other: &Endpoint) -> bool {
        self.host.eq_ignore_ascii_case(&other.host) && self.port == other.port
    }
}

/// One node's answers in a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRound {
    /// The node as configured (`--vault-node`).
    pub probe: Endpoint,
    /// Its `sys/health`, classified.
    pub health: Health,
    /// Its `sys/leader`, when asked this round (of a node answering 200, and of standbys
    /// while no node does).
    pub leader: Option<Result<Leader, String>>,
    /// The `api_addr` it reported the last time it was active (in any round), to recognise it
    /// when the others name it as the leader.
    pub known_api_addr: Option<Endpoint>,
}

impl NodeRound {
    fn name(&self) -> String {
        self.probe.authority()
    }

    fn leader_ok(&self) -> Option<&Leader> {
        self.leader.as_ref().and_then(|l| l.as_ref().ok())
    }

    /// Whether `address` (a `leader_address`) names this node.
    fn is_named_by(&self, address: &Endpoint) -> bool {
        self.probe.same_listener(address)
            || self.known_api_addr.as_ref().is_some_and(|a| a.same_listener(address))
    }
}

/// The node to redirect to and how its `Location` is spelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    /// Served in the state document; `node` is the probed `host:port`.
    pub node: ActiveNode,
    /// The scheme of its `api_addr` (or of its `--vault-node` URL on fallback).
    pub scheme: Scheme,
    /// Its `api_addr` as `sys/leader` reported it, when usable.
    pub api_addr: Option<Endpoint>,
}

/// What a round means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Vault answered: this is the state to serve now.
    Known {
        /// The active node, or `None` when Vault says there is none.
        active: Option<Chosen>,
        /// Why there is none.
        reason: Option<String>,
        /// Every node that answered 200 and still calls itself the leader, the chosen first.
        candidates: Vec<String>,
        /// Things operators should know about (an unusable `leader_address`, a leader that is
        /// not among the probed nodes).
        problems: Vec<String>,
    },
    /// The poller cannot see enough of Vault to say: keep the last good state (up to
    /// `--max-stale`). The text says what failed.
    Blind(String),
}

/// Judges one round. `served` is the node the poller serves now (`host:port`), if any.
///
/// - Nodes answering 200 whose own `sys/leader` does not say `is_self: false` are the
///   candidates; among several (a handover seen half-done), the highest Raft committed index
///   wins (a deposed leader cannot commit), then the smallest `host:port`.
/// - No candidate and no node answering at all: blind.
/// - No candidate, and the served node answered something else: it is not active any more;
///   nothing is served.
/// - No candidate, the served node unreachable, and no standby names another node or says it
///   knows no leader: blind (the served node may be active behind a partition).
/// - No candidate and nothing served: no active node (among those that answered, or, when
///   every node answered, Vault's own word for it).
pub fn judge(round: &[NodeRound], served: Option<&str>) -> Verdict {
    let mut problems = Vec::new();
    let mut candidates: Vec<&NodeRound> = round
        .iter()
        .filter(|n| n.health == Health::Active)
        .filter(|n| n.leader_ok().is_none_or(|l| l.is_self))
        .collect();
    candidates.sort_by(|a, b| {
        let index = |n: &NodeRound| n.leader_ok().and_then(|l| l.raft_committed_index);
        index(b).cmp(&index(a)).then_with(|| a.name().cmp(&b.name()))
    });
    if let Some(first) = candidates.first() {
        let chosen = target(first, &mut problems);
        return Verdict::Known {
            active: Some(chosen),
            reason: None,
            candidates: candidates.iter().map(|n| n.name()).collect(),
            problems,
        };
    }

    let unreachable: Vec<&NodeRound> = round.iter().filter(|n| !n.health.answered()).collect();
    let standby_leaders: Vec<&Leader> =
        round.iter().filter(|n| n.health.answered()).filter_map(NodeRound::leader_ok).collect();
    let named = named_leaders(round);
    let none_known = !standby_leaders.is_empty() && named.is_empty();
    let none = |reason: String, problems: Vec<String>| Verdict::Known {
        active: None,
        reason: Some(reason),
        candidates: Vec::new(),
        problems,
    };
    for address in &named {
        if !round.iter().any(|n| n.is_named_by(address)) {
            problems.push(format!(
                "the standbys name {} as the active node, which is not among --vault-node",
                address.url()
            ));
        }
    }
    let summary = summary(round);

    if unreachable.len() == round.len() {
        let whys: Vec<String> = unreachable
            .iter()
            .map(|n| match &n.health {
                Health::Unreachable(why) => format!("{}: {why}", n.name()),
                _ => n.name(),
            })
            .collect();
        return Verdict::Blind(format!("no Vault node answers ({})", whys.join("; ")));
    }
    if let Some(served) = served {
        let served_node = round.iter().find(|n| n.name() == served);
        match served_node {
            Some(n) if n.health.answered() => {
                let now = match n.health {
                    Health::Active => "stepping down (its sys/leader names another leader)",
                    _ => n.health.name(),
                };
                return none(
                    format!("no Vault node is active: {served} is now {now}; {summary}"),
                    problems,
                );
            }
            Some(n) => {
                let others_named = named.iter().any(|a| !n.is_named_by(a));
                if none_known {
                    return none(
                        format!("no Vault node is active: the standbys know no leader and {served} does not answer; {summary}"),
                        problems,
                    );
                }
                if others_named {
                    let who: Vec<String> = named.iter().map(Endpoint::url).collect();
                    return none(
                        format!("no Vault node is active: the standbys name {} as the leader, which has not answered 200; {summary}", who.join(", ")),
                        problems,
                    );
                }
                let why = match &n.health {
                    Health::Unreachable(why) => why.clone(),
                    _ => String::new(),
                };
                return Verdict::Blind(format!("the active node {served} does not answer: {why}"));
            }
            None => {}
        }
    }
    let all = |h: &Health| round.iter().all(|n| &n.health == h);
    let reason = if all(&Health::Sealed) {
        "every Vault node is sealed".to_string()
    } else if all(&Health::NotInitialized) {
        "no Vault node is initialized".to_string()
    } else if unreachable.is_empty() {
        format!("no Vault node is active ({summary})")
    } else {
        format!("no reachable Vault node is active ({summary})")
    };
    none(reason, problems)
}

/// Every leader address the nodes that answered report, parsed, each listener once.
fn named_leaders(round: &[NodeRound]) -> Vec<Endpoint> {
    let mut named: Vec<Endpoint> = Vec::new();
    let addresses = round
        .iter()
        .filter(|n| n.health.answered())
        .filter_map(NodeRound::leader_ok)
        .filter_map(|l| l.leader_address.as_deref())
        .filter_map(|a| Endpoint::parse(a).ok());
    for e in addresses {
        if !named.iter().any(|x| x.same_listener(&e)) {
            named.push(e);
        }
    }
    named
}

/// The nodes worth probing again at once: those an answering node names as the leader while
/// their own `sys/health` did not answer 200 in this round (a standby learns the new leader
/// from Raft at once; the new leader may have become active just after its probe).
pub fn named_but_not_active(round: &[NodeRound]) -> Vec<usize> {
    let named = named_leaders(round);
    round
        .iter()
        .enumerate()
        .filter(|(_, n)| n.health != Health::Active)
        .filter(|(_, n)| named.iter().any(|a| n.is_named_by(a)))
        .map(|(i, _)| i)
        .collect()
}

/// `2 standby, 1 sealed, 1 unreachable`: the round in counts, in a fixed order.
fn summary(round: &[NodeRound]) -> String {
    let order = [
        "active",
        "standby",
        "perf_standby",
        "dr_secondary",
        "sealed",
        "not_initialized",
        "unreachable",
    ];
    order
        .iter()
        .filter_map(|state| {
            let count = round.iter().filter(|n| n.health.name() == *state).count();
            (count > 0).then(|| format!("{count} {}", state.replace('_', " ")))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `Location` target of `node`: its own `api_addr` (the address Vault's standbys redirect
/// to), else the probed URL, with a problem saying why.
fn target(node: &NodeRound, problems: &mut Vec<String>) -> Chosen {
    let reported = node.leader_ok().and_then(|l| l.leader_address.clone());
    let api_addr = match (&node.leader, reported) {
        (_, Some(text)) => match Endpoint::parse(&text) {
            Ok(e) => Some(e),
            Err(why) => {
                problems.push(format!(
                    "{}: its api_addr cannot be redirected to ({why}); redirecting to the probed URL",
                    node.name()
                ));
                None
            }
        },
        (Some(Err(why)), None) => {
            problems.push(format!(
                "{}: {why}; redirecting to the probed URL {}",
                node.name(),
                node.probe.url()
            ));
            None
        }
        _ => None,
    };
    let via = api_addr.as_ref().unwrap_or(&node.probe);
    Chosen {
        node: ActiveNode { node: node.name(), address: via.host.clone(), port: via.port },
        scheme: via.scheme,
        api_addr: api_addr.clone(),
    }
}

/// The index a round's versions are built from: the Raft committed index the chosen node
/// reports (the leader's is the newest), else the highest any node reported, never below
/// `previous`. Without integrated storage no node reports one and the index stays put, so
/// versions then move by local events only (docs/architecture.md).
pub fn round_index(previous: u64, round: &[NodeRound], chosen: Option<&str>) -> u64 {
    let of = |n: &NodeRound| n.leader_ok().and_then(|l| l.raft_committed_index);
    let observed = match round.iter().find(|n| Some(n.name().as_str()) == chosen).and_then(of) {
        Some(i) => Some(i),
        None => round.iter().filter_map(of).max(),
    };
    observed.map_or(previous, |o| o.max(previous))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        Endpoint::parse(s).unwrap()
    }

    fn node(url: &str, health: Health) -> NodeRound {
        NodeRound { probe: ep(url), health, leader: None, known_api_addr: None }
    }

    fn leader(
        is_self: bool,
        address: Option<&str>,
        index: Option<u64>,
    ) -> Option<Result<Leader, String>> {
        Some(Ok(Leader {
            is_self,
            leader_address: address.map(str::to_string),
            raft_committed_index: index,
        }))
    }

    fn unreachable(url: &str) -> NodeRound {
        node(url, Health::Unreachable("connection refused".into()))
    }

    fn active_of(v: &Verdict) -> Option<&Chosen> {
        match v {
            Verdict::Known { active, .. } => active.as_ref(),
            Verdict::Blind(_) => None,
        }
    }

    fn reason_of(v: &Verdict) -> &str {
        match v {
            Verdict::Known { reason, .. } => reason.as_deref().unwrap_or(""),
            Verdict::Blind(why) => why,
        }
    }

    #[test]
    fn endpoints_are_scheme_host_port_and_nothing_else() {
        assert_eq!(
            ep("https://vault-1.example:8200/"),
            Endpoint { scheme: Scheme::Https, host: "vault-1.example".into(), port: 8200 }
        );
        assert_eq!(ep("https://vault.example").port, 443);
        assert_eq!(ep("http://[::1]:8200").host, "[::1]");
        for bad in ["ftp://x:1", "http://x:1/v1", "http://x:1?a=b", "x:8200", "http://u:p@x:1"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_node_answering_200_is_chosen_and_named_by_its_api_addr() {
        let mut a = node("http://127.0.0.2:8200", Health::Active);
        a.leader = leader(true, Some("https://vault-a.internal:8200"), Some(41));
        let round = [a, node("http://127.0.0.3:8200", Health::Standby)];
        let v = judge(&round, None);
        let chosen = active_of(&v).unwrap();
        assert_eq!(
            chosen.node,
            ActiveNode {
                node: "127.0.0.2:8200".into(),
                address: "vault-a.internal".into(),
                port: 8200
            }
        );
        assert_eq!(chosen.scheme, Scheme::Https);
        assert_eq!(round_index(7, &round, Some("127.0.0.2:8200")), 41);
    }

    #[test]
    fn without_a_usable_api_addr_the_probed_url_is_the_target_and_it_is_said() {
        let mut a = node("https://127.0.0.2:8200", Health::Active);
        a.leader = leader(true, Some("http://vault a:8200"), None);
        let v = judge(&[a.clone()], None);
        let chosen = active_of(&v).unwrap();
        assert_eq!((chosen.node.address.as_str(), chosen.scheme), ("127.0.0.2", Scheme::Https));
        let Verdict::Known { problems, .. } = &v else { panic!("{v:?}") };
        assert!(problems[0].contains("probed URL"), "{problems:?}");
        a.leader = Some(Err("sys/leader answered 500".into()));
        let Verdict::Known { problems, active, .. } = judge(&[a], None) else { panic!() };
        assert!(active.is_some() && problems[0].contains("500"), "{problems:?}");
    }

    #[test]
    fn of_two_nodes_answering_200_the_higher_committed_index_then_the_smaller_name_wins() {
        let mut a = node("http://127.0.0.2:8200", Health::Active);
        let mut b = node("http://127.0.0.3:8200", Health::Active);
        a.leader = leader(true, Some("http://127.0.0.2:8200"), Some(10));
        b.leader = leader(true, Some("http://127.0.0.3:8200"), Some(12));
        let v = judge(&[a.clone(), b.clone()], None);
        assert_eq!(active_of(&v).unwrap().node.node, "127.0.0.3:8200");
        let Verdict::Known { candidates, .. } = &v else { panic!() };
        assert_eq!(candidates, &["127.0.0.3:8200", "127.0.0.2:8200"]);
        // The same answers in another order: the same choice.
        assert_eq!(judge(&[b.clone(), a.clone()], None), v);
        // Without indexes, the smaller name.
        a.leader = leader(true, None, None);
        b.leader = leader(true, None, None);
        assert_eq!(active_of(&judge(&[b, a], None)).unwrap().node.node, "127.0.0.2:8200");
    }

    #[test]
    fn a_200_from_a_node_whose_sys_leader_says_it_is_not_the_leader_is_not_taken() {
        let mut a = node("http://127.0.0.2:8200", Health::Active);
        a.leader = leader(false, Some("http://127.0.0.3:8200"), Some(10));
        let round = [a, node("http://127.0.0.3:8200", Health::Standby)];
        let v = judge(&round, Some("127.0.0.2:8200"));
        assert_eq!(active_of(&v), None);
        assert!(reason_of(&v).contains("127.0.0.2:8200 is now stepping down"), "{v:?}");
    }

    #[test]
    fn every_node_answering_without_a_200_is_vault_saying_there_is_none() {
        let sealed = [
            node("http://127.0.0.2:8200", Health::Sealed),
            node("http://127.0.0.3:8200", Health::Sealed),
        ];
        let v = judge(&sealed, Some("127.0.0.2:8200"));
        assert!(matches!(&v, Verdict::Known { active: None, .. }), "{v:?}");
        assert_eq!(
            judge(&sealed, None),
            Verdict::Known {
                active: None,
                reason: Some("every Vault node is sealed".into()),
                candidates: vec![],
                problems: vec![],
            }
        );
        let uninit = [node("http://127.0.0.2:8200", Health::NotInitialized)];
        assert_eq!(reason_of(&judge(&uninit, None)), "no Vault node is initialized");
        let mixed = [
            node("http://127.0.0.2:8200", Health::Standby),
            node("http://127.0.0.3:8200", Health::Sealed),
            node("http://127.0.0.4:8200", Health::PerfStandby),
            node("http://127.0.0.5:8200", Health::DrSecondary),
        ];
        assert_eq!(
            reason_of(&judge(&mixed, None)),
            "no Vault node is active (1 standby, 1 perf standby, 1 dr secondary, 1 sealed)"
        );
    }

    #[test]
    fn no_node_answering_is_blind_and_keeps_the_last_state() {
        let round = [unreachable("http://127.0.0.2:8200"), unreachable("http://127.0.0.3:8200")];
        assert!(matches!(judge(&round, None), Verdict::Blind(_)));
        let v = judge(&round, Some("127.0.0.2:8200"));
        assert!(matches!(&v, Verdict::Blind(why) if why.contains("connection refused")), "{v:?}");
    }

    #[test]
    fn a_served_node_that_now_answers_otherwise_is_dropped_at_once() {
        let round =
            [node("http://127.0.0.2:8200", Health::Standby), unreachable("http://127.0.0.3:8200")];
        let v = judge(&round, Some("127.0.0.2:8200"));
        assert_eq!(active_of(&v), None);
        assert!(reason_of(&v).contains("127.0.0.2:8200 is now standby"), "{v:?}");
    }

    #[test]
    fn an_unreachable_served_node_is_kept_while_the_standbys_still_name_it() {
        let a = unreachable("http://127.0.0.2:8200");
        let mut b = node("http://127.0.0.3:8200", Health::Standby);
        b.leader = leader(false, Some("http://127.0.0.2:8200"), Some(9));
        let v = judge(&[a.clone(), b.clone()], Some("127.0.0.2:8200"));
        assert!(matches!(v, Verdict::Blind(_)), "{v:?}");
        // Recognised by the api_addr it reported when active, too.
        let mut a2 = unreachable("http://10.9.9.9:8200");
        a2.known_api_addr = Some(ep("https://vault-a.internal:8200"));
        b.leader = leader(false, Some("https://vault-a.internal:8200"), Some(9));
        assert!(matches!(judge(&[a2, b.clone()], Some("10.9.9.9:8200")), Verdict::Blind(_)));
        // Standbys naming another node: the served one is not active.
        b.leader = leader(false, Some("http://127.0.0.4:8200"), Some(9));
        let c = node("http://127.0.0.4:8200", Health::Standby);
        let v = judge(&[a.clone(), b.clone(), c], Some("127.0.0.2:8200"));
        assert!(reason_of(&v).contains("name http://127.0.0.4:8200"), "{v:?}");
        // Standbys knowing no leader: an election.
        b.leader = leader(false, None, Some(9));
        let v = judge(&[a, b], Some("127.0.0.2:8200"));
        assert!(reason_of(&v).contains("know no leader"), "{v:?}");
    }

    #[test]
    fn a_leader_outside_the_probed_nodes_is_a_problem() {
        let mut b = node("http://127.0.0.3:8200", Health::Standby);
        b.leader = leader(false, Some("http://10.1.1.1:8200"), None);
        let Verdict::Known { active, problems, .. } = judge(&[b], None) else { panic!() };
        assert_eq!(active, None);
        assert!(problems[0].contains("not among --vault-node"), "{problems:?}");
    }

    #[test]
    fn the_round_index_follows_raft_and_never_goes_back() {
        let mut a = node("http://127.0.0.2:8200", Health::Standby);
        let mut b = node("http://127.0.0.3:8200", Health::Standby);
        a.leader = leader(false, None, Some(30));
        b.leader = leader(false, None, Some(28));
        assert_eq!(round_index(0, &[a.clone(), b.clone()], None), 30);
        assert_eq!(round_index(35, &[a.clone(), b.clone()], None), 35);
        // The chosen node's own index counts, not a lagging standby's higher one... nor lower.
        assert_eq!(round_index(0, &[a.clone(), b.clone()], Some("127.0.0.3:8200")), 28);
        // No Raft: the index stays.
        assert_eq!(round_index(12, &[node("http://127.0.0.2:8200", Health::Sealed)], None), 12);
    }

    #[test]
    fn a_node_the_standbys_name_without_its_200_is_probed_again() {
        let a = node("http://127.0.0.2:8200", Health::Standby);
        let mut b = node("http://127.0.0.3:8200", Health::Standby);
        b.leader = leader(false, Some("http://127.0.0.2:8200"), Some(3));
        let c = node("http://127.0.0.4:8200", Health::Active);
        assert_eq!(named_but_not_active(&[a.clone(), b.clone(), c]), vec![0]);
        b.leader = leader(false, None, Some(3));
        assert!(named_but_not_active(&[a, b]).is_empty());
    }
}

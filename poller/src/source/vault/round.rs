//! One probe round: every node's `sys/health` at once, `sys/leader` where it tells more, and
//! one more probe of a node the standbys name as the new leader. The only module of the
//! source that waits on the network, and it waits on every node in parallel, each bounded by
//! the probe timeout, so a frozen node costs a round at most one timeout.
//!
//! It never judges the round (that is `decide::judge`) and never writes the poller's state.

use tokio::task::JoinSet;

use super::client::{Probe, ProbeClient};
use super::decide::{named_but_not_active, Endpoint, NodeRound};
use super::health::{Health, Leader};

/// What one node's probe in the round measured, for the status page and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Measured {
    /// Its `sys/health` probe (the last one, when it was probed again).
    pub probe: Probe,
    /// How many `sys/health` requests it got this round (1, or 2 when probed again).
    pub health_requests: u32,
    /// Whether `sys/leader` was asked.
    pub leader_asked: bool,
}

/// A node's `sys/health`, then its `sys/leader` when it answered 200 (its `api_addr` and
/// Raft index; a node stepping down says `is_self: false` there first).
async fn health_then_leader(
    client: ProbeClient,
    node: Endpoint,
) -> (Probe, Option<Result<Leader, String>>) {
    let probe = client.health(&node).await;
    let leader = match probe.health {
        Health::Active => Some(client.leader(&node).await),
        _ => None,
    };
    (probe, leader)
}

/// Runs `work` for every index in `which` at once and collects the results by index.
async fn each<T: Send + 'static, F>(which: &[usize], work: impl Fn(usize) -> F) -> Vec<(usize, T)>
where
    F: std::future::Future<Output = T> + Send + 'static,
{
    let mut set = JoinSet::new();
    for &i in which {
        let fut = work(i);
        set.spawn(async move { (i, fut.await) });
    }
    let mut out = Vec::with_capacity(which.len());
    while let Some(done) = set.join_next().await {
        // A probe task cannot panic (no unwrap in the client); a cancelled one is just absent.
        if let Ok(r) = done {
            out.push(r);
        }
    }
    out
}

/// Probes every node of `nodes` (with the `api_addr` each reported when last active) and
/// returns the round, in the order of `nodes`, with what was measured.
pub async fn probe_round(
    client: &ProbeClient,
    nodes: &[(Endpoint, Option<Endpoint>)],
) -> (Vec<NodeRound>, Vec<Measured>) {
    let all: Vec<usize> = (0..nodes.len()).collect();
    let mut round: Vec<NodeRound> = nodes
        .iter()
        .map(|(probe, api)| NodeRound {
            probe: probe.clone(),
            health: Health::Unreachable("not probed".into()),
            leader: None,
            known_api_addr: api.clone(),
        })
        .collect();
    let mut measured: Vec<Measured> = nodes
        .iter()
        .map(|_| Measured {
            probe: Probe {
                health: Health::Unreachable("not probed".into()),
                code: None,
                latency: Default::default(),
            },
            health_requests: 0,
            leader_asked: false,
        })
        .collect();
    let first = each(&all, |i| health_then_leader(client.clone(), nodes[i].0.clone())).await;
    for (i, (probe, leader)) in first {
        record(&mut round[i], &mut measured[i], probe, leader);
    }
    if round.iter().any(|n| n.health == Health::Active) {
        return (round, measured);
    }
    // No node answered 200: ask the standbys who leads, and probe once more any node they
    // name, which may have become active just after its probe.
    let standbys: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| matches!(round[i].health, Health::Standby | Health::PerfStandby))
        .collect();
    let leaders = each(&standbys, |i| {
        let client = client.clone();
        let node = nodes[i].0.clone();
        async move { client.leader(&node).await }
    })
    .await;
    for (i, leader) in leaders {
        round[i].leader = Some(leader);
        measured[i].leader_asked = true;
    }
    let again = named_but_not_active(&round);
    let second = each(&again, |i| health_then_leader(client.clone(), nodes[i].0.clone())).await;
    for (i, (probe, leader)) in second {
        record(&mut round[i], &mut measured[i], probe, leader);
    }
    (round, measured)
}

fn record(
    node: &mut NodeRound,
    measured: &mut Measured,
    probe: Probe,
    leader: Option<Result<Leader, String>>,
) {
    node.health = probe.health.clone();
    if leader.is_some() {
        node.leader = leader;
        measured.leader_asked = true;
    }
    measured.probe = probe;
    measured.health_requests += 1;
}

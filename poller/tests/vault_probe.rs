//! The vault source's probes against Vault node doubles on their own loopback addresses:
//! every state a node can answer with, a refused port, a port that answers garbage, a port
//! that never answers, two nodes answering 200, and TLS from Vault's environment names.

// Test code: a failed set-up step must fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use vault_redirect_core::Scheme;
use vault_redirect_doubles::{Pki, PkiSpec, Role, VaultCluster};
use vault_redirect_poller::source::vault::client::{ProbeClient, VaultTls};
use vault_redirect_poller::source::vault::decide::{judge, Endpoint, Verdict};
use vault_redirect_poller::source::vault::health::Health;
use vault_redirect_poller::source::vault::round::probe_round;

const TIMEOUT: Duration = Duration::from_millis(300);

/// A listener that misbehaves the way `answer` says, until dropped.
struct Stray {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Stray {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers every connection with `reply` (after reading the request), or holds it silent
/// when `reply` is `None`.
async fn stray(reply: Option<&'static [u8]>) -> Stray {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut s, _)) = listener.accept().await else { return };
            match reply {
                Some(bytes) => {
                    let mut buf = [0u8; 2048];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(bytes).await;
                    let _ = s.shutdown().await;
                }
                None => held.push(s),
            }
        }
    });
    Stray { addr, task }
}

/// A port nothing listens on.
async fn refused() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn ep(url: &str) -> Endpoint {
    Endpoint::parse(url).unwrap()
}

fn nodes(urls: &[String]) -> Vec<(Endpoint, Option<Endpoint>)> {
    urls.iter().map(|u| (ep(u), None)).collect()
}

fn plain() -> ProbeClient {
    ProbeClient::new(&VaultTls::default(), TIMEOUT).unwrap()
}

#[tokio::test]
async fn every_node_state_is_read_from_its_answers_and_the_200_is_chosen_by_its_api_addr() {
    let cluster = VaultCluster::start(&[
        ("vault-a", Role::Active),
        ("vault-b", Role::Standby),
        ("vault-c", Role::PerfStandby),
        ("vault-d", Role::Standby),
        ("vault-e", Role::Standby),
    ])
    .await
    .unwrap();
    cluster.set_sealed("vault-d", true);
    cluster.set_initialized("vault-e", false);
    let garbage = stray(Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")).await;
    let not_http = stray(Some(b"SSH-2.0-OpenSSH_9.6\r\n")).await;
    let silent = stray(None).await;
    let gone = refused().await;
    let mut urls: Vec<String> = ["vault-a", "vault-b", "vault-c", "vault-d", "vault-e"]
        .map(|n| cluster.api_addr(n).unwrap())
        .to_vec();
    urls.extend([garbage.addr, not_http.addr, silent.addr, gone].map(|a| format!("http://{a}")));

    let (round, measured) = probe_round(&plain(), &nodes(&urls)).await;
    let states: Vec<&str> = round.iter().map(|n| n.health.name()).collect();
    assert_eq!(
        states,
        [
            "active",
            "standby",
            "perf_standby",
            "sealed",
            "not_initialized",
            "unreachable",
            "unreachable",
            "unreachable",
            "unreachable"
        ]
    );
    let codes: Vec<Option<u16>> = measured.iter().map(|m| m.probe.code).collect();
    assert_eq!(
        codes,
        [Some(200), Some(429), Some(473), Some(503), Some(501), Some(200), None, None, None]
    );
    let why = |i: usize| match &round[i].health {
        Health::Unreachable(why) => why.clone(),
        other => panic!("{other:?}"),
    };
    assert!(why(5).contains("not Vault's health document"), "{}", why(5));
    assert!(why(7).contains("no answer within 300ms"), "{}", why(7));
    assert!(why(8).contains("cannot connect"), "{}", why(8));
    // Only the active node is asked for sys/leader while one answers 200.
    let asked: Vec<bool> = measured.iter().map(|m| m.leader_asked).collect();
    assert_eq!(asked.iter().filter(|a| **a).count(), 1);

    let Verdict::Known { active: Some(chosen), candidates, .. } = judge(&round, None) else {
        panic!("no active node chosen");
    };
    let a = cluster.addr("vault-a").unwrap();
    assert_eq!(chosen.node.address, a.ip().to_string());
    assert_eq!(chosen.node.port, a.port());
    assert_eq!(chosen.api_addr, Some(ep(&cluster.api_addr("vault-a").unwrap())));
    assert_eq!(candidates.len(), 1);
}

#[tokio::test]
async fn every_node_sealed_is_vault_saying_there_is_no_active_node() {
    let cluster = VaultCluster::start_three().await.unwrap();
    for n in ["vault-a", "vault-b", "vault-c"] {
        cluster.set_sealed(n, true);
    }
    let urls: Vec<String> =
        ["vault-a", "vault-b", "vault-c"].map(|n| cluster.api_addr(n).unwrap()).to_vec();
    let served = ep(&urls[0]).authority();
    let (round, _) = probe_round(&plain(), &nodes(&urls)).await;
    let v = judge(&round, Some(&served));
    assert!(
        matches!(&v, Verdict::Known { active: None, reason: Some(r), .. } if r.contains("is now sealed")),
        "{v:?}"
    );
    let v = judge(&round, None);
    assert!(
        matches!(&v, Verdict::Known { active: None, reason: Some(r), .. } if r == "every Vault node is sealed"),
        "{v:?}"
    );
}

#[tokio::test]
async fn an_election_asks_the_standbys_and_nothing_answering_is_blind() {
    let cluster = VaultCluster::start_three().await.unwrap();
    cluster.set_no_active();
    let urls: Vec<String> =
        ["vault-a", "vault-b", "vault-c"].map(|n| cluster.api_addr(n).unwrap()).to_vec();
    let (round, measured) = probe_round(&plain(), &nodes(&urls)).await;
    assert!(measured.iter().all(|m| m.leader_asked), "{measured:?}");
    let v = judge(&round, None);
    assert!(
        matches!(&v, Verdict::Known { active: None, reason: Some(r), .. } if r == "no Vault node is active (3 standby)"),
        "{v:?}"
    );
    drop(cluster);
    let gone = [refused().await, refused().await].map(|a| format!("http://{a}"));
    let (round, _) = probe_round(&plain(), &nodes(&gone)).await;
    assert!(matches!(judge(&round, None), Verdict::Blind(_)));
}

#[tokio::test]
async fn two_nodes_answering_200_give_the_same_choice_in_any_order() {
    // Two clusters of one active node each: two 200s, as during a handover seen half-done.
    let one = VaultCluster::start(&[("vault-a", Role::Active)]).await.unwrap();
    let two = VaultCluster::start(&[("vault-b", Role::Active)]).await.unwrap();
    let urls = vec![one.api_addr("vault-a").unwrap(), two.api_addr("vault-b").unwrap()];
    let (round, _) = probe_round(&plain(), &nodes(&urls)).await;
    let first = judge(&round, None);
    let mut reversed = round.clone();
    reversed.reverse();
    assert_eq!(judge(&reversed, None), first);
    let Verdict::Known { active: Some(chosen), candidates, .. } = first else { panic!() };
    assert_eq!(candidates.len(), 2);
    assert_eq!(chosen.node.node, candidates[0]);
    assert_eq!(candidates[0], candidates.iter().min().unwrap().clone());
}

#[tokio::test]
async fn tls_follows_vaults_environment_names() {
    // A certificate for a name only: probing by IP needs VAULT_TLS_SERVER_NAME.
    let pki = Pki::new("vault-probe", None, &PkiSpec::leaf_for(&["vault.test"])).unwrap();
    let cluster =
        VaultCluster::start_tls(&[("vault-a", Role::Active)], &pki.chain, &pki.key).await.unwrap();
    let url = cluster.api_addr("vault-a").unwrap();
    assert!(url.starts_with("https://"), "{url}");
    let node = ep(&url);
    let probe = |tls: VaultTls| {
        let node = node.clone();
        async move { ProbeClient::new(&tls, TIMEOUT).unwrap().health(&node).await.health }
    };
    let ca = VaultTls { cacert: Some(pki.path("ca.pem")), ..VaultTls::default() };
    let named = VaultTls { server_name: Some("vault.test".into()), ..ca.clone() };
    assert_eq!(probe(named).await, Health::Active);
    let wrong_name = probe(ca).await;
    assert!(
        matches!(&wrong_name, Health::Unreachable(why) if why.contains("certificate")),
        "{wrong_name:?}"
    );
    let untrusted = probe(VaultTls::default()).await;
    assert!(
        matches!(&untrusted, Health::Unreachable(why) if why.contains("certificate")),
        "{untrusted:?}"
    );
    assert_eq!(probe(VaultTls { skip_verify: true, ..VaultTls::default() }).await, Health::Active);
    // The Location keeps Vault's scheme.
    let (round, _) = probe_round(
        &ProbeClient::new(&VaultTls { skip_verify: true, ..VaultTls::default() }, TIMEOUT).unwrap(),
        &nodes(&[url]),
    )
    .await;
    let Verdict::Known { active: Some(chosen), .. } = judge(&round, None) else { panic!() };
    assert_eq!(chosen.scheme, Scheme::Https);
}

//! Replicated pollers (issue 11): three pollers on one Consul, one Envoy cluster listing all of
//! them (health-checked on /readyz, outlier detection), the filter with two workers. Traffic
//! and failovers go on while one poller is killed; every 307 must name the node active when
//! the request was sent, one that became active while it was in flight, or the one just
//! before; every 503 must fall in an election; Envoy's log must hold no filter panic.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::three_nodes;
use vault_redirect_doubles::{ConsulDouble, Role};
use vault_redirect_e2e::envoy::{Envoy, EnvoyOptions};
use vault_redirect_e2e::poller::Poller;
use vault_redirect_e2e::wait_for;

/// Redirect prefix per node (three_nodes' loopback addresses).
fn prefix(node: &str) -> Option<&'static str> {
    match node {
        "vault-a" => Some("http://127.0.0.2:8200"),
        "vault-b" => Some("http://127.0.0.3:8200"),
        "vault-c" => Some("http://127.0.0.4:8200"),
        _ => None,
    }
}

/// What a request may be answered with: a 307 to this prefix, or a 503 (`None`).
type Expect = Option<&'static str>;

/// Every change of the active node, as the test made it.
#[derive(Default)]
struct History(Vec<(Instant, Expect)>);

impl History {
    /// The answers a request sent at `sent` and answered at `done` may carry: the state at
    /// `sent`, the one just before it, and any state that began while it was in flight.
    fn allowed(&self, sent: Instant, done: Instant) -> Vec<Expect> {
        let at_send = self.0.iter().rposition(|(t, _)| *t <= sent).unwrap_or(0);
        let mut ok = vec![self.0[at_send].1];
        if at_send > 0 {
            ok.push(self.0[at_send - 1].1);
        }
        ok.extend(self.0.iter().filter(|(t, _)| *t > sent && *t <= done).map(|(_, e)| *e));
        ok
    }
}

/// One answer seen by the traffic.
struct Seen {
    sent: Instant,
    done: Instant,
    answer: Result<(u16, Option<String>), String>,
}

fn kill_hard(p: &Poller) -> Result<()> {
    let pid = p.proc.pid().context("the poller has no pid")?;
    let ok =
        std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?.success();
    if !ok {
        bail!("kill -KILL {pid} failed");
    }
    Ok(())
}

/// The health flags Envoy's admin shows for the poller endpoint `addr`.
async fn health_flags(envoy: &Envoy, addr: std::net::SocketAddr) -> Result<String> {
    let text = vault_redirect_e2e::client()?
        .get(format!("http://{}/clusters", envoy.admin))
        .send()
        .await?
        .text()
        .await?;
    let key = format!("vault_redirect_poller::{addr}::health_flags::");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .unwrap_or("(endpoint not listed)")
        .to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_three_pollers_during_traffic_and_failovers_gives_no_wrong_redirect(
) -> Result<()> {
    let consul = ConsulDouble::start(three_nodes()).await?;
    let p1 = Poller::start(&consul.url(), &[]).await?;
    let p2 = Poller::start(&consul.url(), &[]).await?;
    let p3 = Poller::start(&consul.url(), &[]).await?;
    let mut opts = EnvoyOptions::new(p1.addr);
    opts.extra_pollers = vec![p2.addr, p3.addr];
    opts.concurrency = 2;
    opts.plugin_config = r#"{"poller_cluster":"vault_redirect_poller","retry_max_ms":1000}"#.into();
    let envoy = Envoy::start(opts).await?;
    // Both workers hold a state before traffic starts.
    wait_for("both workers' first state", Duration::from_secs(30), || async {
        let n = envoy.stat("wasmcustom.vault_redirect.state_updates").await.ok()??;
        (n >= 2).then_some(())
    })
    .await?;
    for p in [&p1, &p2, &p3] {
        let healthy =
            wait_for("every poller healthy in Envoy", Duration::from_secs(30), || async {
                (health_flags(&envoy, p.addr).await.ok()? == "healthy").then_some(())
            })
            .await;
        if let Err(e) = healthy {
            bail!(
                "{e}: poller {} has health flags {}",
                p.addr,
                health_flags(&envoy, p.addr).await?
            );
        }
    }

    let history = Arc::new(Mutex::new(History(vec![(Instant::now(), prefix("vault-a"))])));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut traffic = Vec::new();
    for _ in 0..4 {
        let (seen, stop, url) = (seen.clone(), stop.clone(), envoy.url("/v1/secret/data/app"));
        traffic.push(tokio::spawn(async move {
            // A fresh connection per request, so requests spread over both workers.
            let http = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()?;
            // Bounded: at most 5,000 requests per task, and the test stops it long before.
            for _ in 0..5_000 {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let sent = Instant::now();
                let answer = match http.get(&url).send().await {
                    Ok(r) => {
                        let loc = r
                            .headers()
                            .get("location")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        Ok((r.status().as_u16(), loc))
                    }
                    Err(e) => Err(e.to_string()),
                };
                seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.push(Seen {
                    sent,
                    done: Instant::now(),
                    answer,
                });
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        }));
    }

    // Failovers 1.5 s apart (well past the poller's Consul pacing), an election in the middle,
    // and the first poller killed (SIGKILL: no goodbye to its long-polls) after the second.
    let change = |to: Option<&str>| {
        match to {
            Some(node) => consul.set_active(node),
            None => consul.update(|nodes| {
                for n in nodes.iter_mut() {
                    n.role = Role::Standby;
                }
            }),
        }
        let expect = match to {
            Some(node) => prefix(node),
            None => None,
        };
        if let Ok(mut h) = history.lock() {
            h.0.push((Instant::now(), expect));
        }
    };
    let steps: [Option<&str>; 8] = [
        Some("vault-b"),
        Some("vault-c"),
        Some("vault-a"),
        None,
        Some("vault-b"),
        Some("vault-c"),
        Some("vault-a"),
        Some("vault-b"),
    ];
    for (i, step) in steps.iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        change(*step);
        if i == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            kill_hard(&p1)?;
        }
    }
    // The last failover reaches every worker (no change missed after moving replicas).
    let last = prefix("vault-b").context("prefix")?;
    let converged =
        wait_for("every worker on the last active node", Duration::from_secs(20), || {
            let seen = seen.clone();
            async move {
                let s = seen.lock().ok()?;
                let tail: Vec<&Seen> = s.iter().rev().take(40).collect();
                let all_last = tail.len() == 40
                    && tail
                        .iter()
                        .all(|x| matches!(&x.answer, Ok((307, Some(l))) if l.starts_with(last)));
                all_last.then_some(())
            }
        })
        .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in traffic {
        t.await??;
    }
    converged?;

    // Envoy noticed the dead replica; the live ones stayed in (the election did not eject them).
    wait_for("Envoy to mark the killed poller unhealthy", Duration::from_secs(30), || async {
        let flags = health_flags(&envoy, p1.addr).await.ok()?;
        (flags != "healthy").then_some(())
    })
    .await?;
    for p in [&p2, &p3] {
        assert_eq!(health_flags(&envoy, p.addr).await?, "healthy", "live poller {}", p.addr);
    }

    let history = history.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut wrong = Vec::new();
    let (mut redirects, mut unavailable) = (0usize, 0usize);
    for s in seen.iter() {
        let allowed = history.allowed(s.sent, s.done);
        let got: Result<Expect, String> = match &s.answer {
            Ok((307, Some(loc))) => {
                match ["http://127.0.0.2:8200", "http://127.0.0.3:8200", "http://127.0.0.4:8200"]
                    .into_iter()
                    .find(|p| loc.starts_with(p))
                {
                    Some(p) => Ok(Some(p)),
                    None => Err(format!("307 to {loc}")),
                }
            }
            Ok((503, _)) => Ok(None),
            Ok((status, loc)) => Err(format!("{status} {loc:?}")),
            Err(e) => Err(e.clone()),
        };
        match got {
            Ok(g) if allowed.contains(&g) => {
                if g.is_some() {
                    redirects += 1;
                } else {
                    unavailable += 1;
                }
            }
            Ok(g) => wrong.push(format!(
                "{:?} after start: {g:?}, allowed {allowed:?}",
                s.sent.duration_since(history.0[0].0)
            )),
            Err(e) => {
                wrong.push(format!("{:?} after start: {e}", s.sent.duration_since(history.0[0].0)))
            }
        }
    }
    println!(
        "{} answers: {redirects} correct 307s, {unavailable} 503s during the election",
        seen.len()
    );
    assert!(
        wrong.is_empty(),
        "{} wrong answers of {}, first: {:?}",
        wrong.len(),
        seen.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(redirects > 200, "too little traffic to judge: {redirects} redirects");

    let log = std::fs::read_to_string(envoy.proc.log_path())?;
    let panics: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("panicked") || l.contains("wasm trap") || l.contains("Plugin crashed")
        })
        .collect();
    assert!(panics.is_empty(), "filter panics in Envoy's log: {panics:?}");
    Ok(())
}

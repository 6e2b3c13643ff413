//! What a worker knows about the active node, and what requests see of it. Pure: no host
//! calls, so every rule here is tested natively.
//!
//! A worker learns states from its own long-poll and from siblings through shared data. It
//! keeps the newest version only (a lagging poller replica never moves it backwards), and a
//! state it has not heard confirmed for `max_stale` is no longer used.

use std::time::Duration;

use vault_redirect_core::answer;
use vault_redirect_core::json::Json;
use vault_redirect_core::{RedirectPolicy, StateDoc, TargetError};

use crate::config::ServerName;

/// The key under which workers share the newest state.
pub const SHARED_KEY: &str = "vault_redirect.state.v1";

/// A state document and when some worker of this Envoy last heard it from the poller.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    /// The poller's document.
    pub doc: StateDoc,
    /// Host time (Unix ms) of the last poller answer that carried this version.
    pub heard_ms: u64,
}

/// How a newly heard state relates to the one held.
#[derive(Debug, PartialEq, Eq)]
pub enum Merge {
    /// A newer version: requests must see it.
    Newer,
    /// The same version, heard more recently: only freshness moved.
    Refreshed,
    /// Nothing to do (older version, or not fresher).
    Ignored,
}

/// Folds `incoming` into `held`, keeping the newest version and the latest confirmation.
///
/// An older version is ignored (a lagging poller replica must not move us backwards) unless
/// nothing confirmed the held version for `reset_after`: then the poller's versions really went
/// down (Consul's index was reset, its data restored) and the older version is today's truth.
pub fn merge(held: &mut Option<Known>, incoming: Known, reset_after: Duration) -> Merge {
    let reset_after_ms = u64::try_from(reset_after.as_millis()).unwrap_or(u64::MAX);
    match held {
        Some(h) if incoming.doc.version < h.doc.version => {
            if incoming.heard_ms >= h.heard_ms.saturating_add(reset_after_ms) {
                *held = Some(incoming);
                Merge::Newer
            } else {
                Merge::Ignored
            }
        }
        Some(h) if incoming.doc.version == h.doc.version => {
            if incoming.heard_ms > h.heard_ms {
                h.heard_ms = incoming.heard_ms;
                Merge::Refreshed
            } else {
                Merge::Ignored
            }
        }
        _ => {
            *held = Some(incoming);
            Merge::Newer
        }
    }
}

/// What a request needs: the `Location` prefix, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    /// The version the view was built from (0: nothing heard yet).
    pub version: u64,
    /// `scheme://host:port` of the active node, `None` when requests get no redirect.
    pub prefix: Option<String>,
    /// Where proxy mode sends requests; `None` when there is no prefix, the node's host is a
    /// name rather than an IP literal, or its server name does not render.
    pub upstream: Option<Upstream>,
    /// Why `prefix` (or, with a prefix, `upstream`) is `None`; empty otherwise.
    pub reason: String,
    /// Host time when the state was last confirmed, for the debug header's age.
    pub heard_ms: u64,
    /// Host time after which this view must be rebuilt (it goes stale), if ever.
    pub valid_until_ms: Option<u64>,
}

/// What proxy mode writes into a request, prepared once per state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `ip:port` for the `ORIGINAL_DST` cluster ([`crate::config::UPSTREAM_HEADER`]).
    pub address: String,
    /// The name the node's certificate must hold ([`crate::config::UPSTREAM_NAME_HEADER`]).
    pub server_name: String,
}

/// Why proxy mode answers 503 while a redirect would have worked.
const NO_IP_UPSTREAM: &str =
    "the active Vault node's address is not an IP address, which proxy mode needs";
/// The same, when `upstream_server_name` does not render to a name for the active node.
const NO_SERVER_NAME: &str = "upstream_server_name gives no host name for the active Vault node";

/// The `host:port` of a `scheme://host:port` prefix when its host is an IP literal (IPv6
/// bracketed, as Envoy's address parser takes it), the only form an `ORIGINAL_DST` cluster
/// connects to, and that host; a DNS name gives `None`.
fn upstream_of(prefix: &str) -> Option<(String, &str)> {
    let authority = prefix.split_once("://")?.1;
    let (host, _port) = authority.rsplit_once(':')?;
    let is_ip = host.starts_with('[') || host.parse::<std::net::Ipv4Addr>().is_ok();
    is_ip.then(|| (authority.to_string(), host))
}

impl View {
    /// The view before anything was heard from the poller.
    pub fn unknown() -> Self {
        View {
            version: 0,
            prefix: None,
            upstream: None,
            reason: "no state received from the poller yet".into(),
            heard_ms: 0,
            valid_until_ms: None,
        }
    }

    /// Builds the view of `known` at `now_ms`, with `server_name` rendered for proxy mode.
    /// Returns the target error alongside when the poller named a host that cannot be
    /// redirected to, so the caller can count and log it.
    pub fn of(
        known: &Known,
        policy: &RedirectPolicy,
        server_name: &ServerName,
        max_stale: Duration,
        now_ms: u64,
    ) -> (View, Option<TargetError>) {
        let max_stale_ms = u64::try_from(max_stale.as_millis()).unwrap_or(u64::MAX);
        let stale_at = known.heard_ms.saturating_add(max_stale_ms);
        let mut view = View {
            version: known.doc.version,
            prefix: None,
            upstream: None,
            reason: String::new(),
            heard_ms: known.heard_ms,
            valid_until_ms: None,
        };
        if now_ms >= stale_at {
            view.reason = format!(
                "state is stale: nothing heard from the poller for {} s",
                max_stale.as_secs()
            );
            return (view, None);
        }
        view.valid_until_ms = Some(stale_at);
        let Some(active) = &known.doc.active else {
            view.reason = answer::no_active_message(known.doc.reason.as_deref());
            return (view, None);
        };
        match policy.location_prefix(active) {
            Ok(prefix) => {
                let upstream =
                    upstream_of(&prefix).ok_or(NO_IP_UPSTREAM).and_then(|(address, host)| {
                        let server_name =
                            server_name.render(&active.node, host).ok_or(NO_SERVER_NAME)?;
                        Ok(Upstream { address, server_name })
                    });
                match upstream {
                    Ok(upstream) => view.upstream = Some(upstream),
                    Err(why) => view.reason = why.into(),
                }
                view.prefix = Some(prefix);
                (view, None)
            }
            Err(e) => {
                view.reason = answer::UNREDIRECTABLE.into();
                (view, Some(e))
            }
        }
    }

    /// Whether this view has gone stale by `now_ms` and must be rebuilt.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.valid_until_ms.is_some_and(|t| now_ms >= t)
    }
}

/// The delay before poll attempt number `failures + 1` after `failures` failures in a row.
pub fn backoff(failures: u32, initial: Duration, max: Duration) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

/// Encodes a known state for shared data: `{"heard_ms":N,"doc":{...}}`.
pub fn encode(known: &Known) -> Vec<u8> {
    let mut out = format!("{{\"heard_ms\":{},\"doc\":", known.heard_ms).into_bytes();
    out.extend_from_slice(&known.doc.to_json());
    out.push(b'}');
    out
}

/// Decodes shared data written by a sibling; `None` for anything unreadable.
pub fn decode(bytes: &[u8]) -> Option<Known> {
    if bytes.len() > vault_redirect_core::state::MAX_DOC_BYTES * 2 {
        return None;
    }
    let json = Json::parse(bytes).ok()?;
    let heard_ms = json.get("heard_ms")?.as_u64()?;
    let doc = StateDoc::from_json(json.get("doc")?).ok()?;
    Some(Known { doc, heard_ms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vault_redirect_core::ActiveNode;

    #[test]
    fn the_proxy_upstream_is_the_ip_and_port_and_names_have_none() {
        assert_eq!(
            upstream_of("http://10.0.0.1:8200"),
            Some(("10.0.0.1:8200".to_string(), "10.0.0.1"))
        );
        assert_eq!(
            upstream_of("https://[fd00::1]:8200"),
            Some(("[fd00::1]:8200".to_string(), "[fd00::1]"))
        );
        assert_eq!(upstream_of("http://vault-a.service:8200"), None);
        assert_eq!(upstream_of("10.0.0.1"), None);
    }

    fn view(known: &Known, server_name: &str) -> View {
        let name = crate::config::FilterConfig::parse(
            format!(r#"{{"poller_cluster":"p","upstream_server_name":"{server_name}"}}"#)
                .as_bytes(),
        )
        .unwrap()
        .upstream_server_name;
        View::of(known, &RedirectPolicy::default(), &name, Duration::from_secs(60), 1).0
    }

    #[test]
    fn the_server_name_is_rendered_once_per_state_from_node_and_address() {
        let k = known(1, "10.0.0.1", 0);
        let upstream = |name| view(&k, name).upstream;
        assert_eq!(
            upstream("{address}"),
            Some(Upstream { address: "10.0.0.1:8200".into(), server_name: "10.0.0.1".into() })
        );
        assert_eq!(upstream("{node}.vault.example").unwrap().server_name, "n.vault.example");
        assert_eq!(upstream("vault").unwrap().server_name, "vault");
        // IPv6 in the bracketed form Envoy's authority parser reads as an IP literal.
        let v6 = known(1, "FD00::1", 0);
        assert_eq!(view(&v6, "{address}").upstream.unwrap().server_name, "[fd00::1]");
        // The vault source's node is the probe's authority: the port stays, Envoy drops it.
        let mut k = known(1, "10.0.0.1", 0);
        k.doc.active.as_mut().unwrap().node = "vault-0.vault-internal:8200".into();
        assert_eq!(view(&k, "{node}").upstream.unwrap().server_name, "vault-0.vault-internal:8200");
    }

    #[test]
    fn a_node_name_that_makes_no_host_name_gives_no_upstream_and_says_why() {
        let mut k = known(1, "10.0.0.1", 0);
        k.doc.active.as_mut().unwrap().node = "evil\r\nx: y".into();
        let v = view(&k, "{node}.vault.example");
        assert_eq!(v.upstream, None);
        assert!(v.prefix.is_some(), "redirects are unaffected");
        assert!(v.reason.contains("upstream_server_name"), "{}", v.reason);
        // The address-only default does not read the node at all.
        assert!(view(&k, "{address}").upstream.is_some());
        let by_name = view(&known(1, "vault-a.service", 0), "{address}");
        assert_eq!(by_name.upstream, None);
        assert!(by_name.reason.contains("not an IP address"), "{}", by_name.reason);
    }

    fn known(version: u64, address: &str, heard_ms: u64) -> Known {
        Known {
            doc: StateDoc {
                version,
                active: Some(ActiveNode { node: "n".into(), address: address.into(), port: 8200 }),
                reason: None,
                consul_index: version >> 16,
                last_consul_ok_unix_ms: Some(1),
                age_ms: Some(0),
                active_candidates: 1,
                scheme: None,
            },
            heard_ms,
        }
    }

    const RESET: Duration = Duration::from_secs(60);

    #[test]
    fn only_newer_versions_replace_the_held_state() {
        let mut held = None;
        assert_eq!(merge(&mut held, known(10, "10.0.0.1", 5), RESET), Merge::Newer);
        assert_eq!(merge(&mut held, known(9, "10.0.0.9", 50), RESET), Merge::Ignored);
        assert_eq!(held.as_ref().unwrap().doc.active.as_ref().unwrap().address, "10.0.0.1");
        assert_eq!(merge(&mut held, known(10, "10.0.0.1", 7), RESET), Merge::Refreshed);
        assert_eq!(held.as_ref().unwrap().heard_ms, 7);
        assert_eq!(merge(&mut held, known(10, "10.0.0.1", 6), RESET), Merge::Ignored);
        assert_eq!(merge(&mut held, known(11, "10.0.0.2", 1), RESET), Merge::Newer);
    }

    #[test]
    fn an_older_version_wins_only_after_the_held_one_went_unconfirmed_for_the_reset_period() {
        let mut held = Some(known(10 << 16, "10.0.0.1", 1_000));
        assert_eq!(merge(&mut held, known(3 << 16, "10.0.0.3", 60_999), RESET), Merge::Ignored);
        assert_eq!(merge(&mut held, known(3 << 16, "10.0.0.3", 61_000), RESET), Merge::Newer);
        assert_eq!(held.unwrap().doc.version, 3 << 16);
    }

    #[test]
    fn a_fresh_state_gives_a_prefix_until_it_goes_stale() {
        let k = known(1, "10.0.0.1", 1_000);
        let (view, err) = View::of(
            &k,
            &RedirectPolicy::default(),
            &ServerName("{address}".into()),
            Duration::from_secs(2),
            1_500,
        );
        assert_eq!((view.prefix.as_deref(), err), (Some("http://10.0.0.1:8200"), None));
        assert!(!view.expired(2_999));
        assert!(view.expired(3_000));
        let (stale, _) = View::of(
            &k,
            &RedirectPolicy::default(),
            &ServerName("{address}".into()),
            Duration::from_secs(2),
            3_000,
        );
        assert_eq!(stale.prefix, None);
        assert!(stale.reason.contains("stale"), "{}", stale.reason);
    }

    #[test]
    fn no_active_node_carries_the_pollers_reason() {
        let mut k = known(1, "x", 0);
        k.doc.active = None;
        k.doc.reason = Some("no node tagged active".into());
        let (view, _) = View::of(
            &k,
            &RedirectPolicy::default(),
            &ServerName("{address}".into()),
            Duration::from_secs(60),
            1,
        );
        assert_eq!(view.prefix, None);
        assert_eq!(view.reason, "no active Vault node: no node tagged active");
    }

    #[test]
    fn an_invalid_target_is_refused_and_reported() {
        let k = known(1, "evil.example/\r\n", 0);
        let (view, err) = View::of(
            &k,
            &RedirectPolicy::default(),
            &ServerName("{address}".into()),
            Duration::from_secs(60),
            1,
        );
        assert_eq!(view.prefix, None);
        assert!(err.is_some());
    }

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let (i, m) = (Duration::from_millis(100), Duration::from_millis(1_000));
        let delays: Vec<u128> = (0..7).map(|f| backoff(f, i, m).as_millis()).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1_000, 1_000]);
        assert_eq!(backoff(u32::MAX, i, m), m);
    }

    #[test]
    fn shared_data_round_trips_and_garbage_is_ignored() {
        let k = known(3, "10.0.0.3", 9);
        assert_eq!(decode(&encode(&k)), Some(k));
        assert_eq!(decode(b"{not json"), None);
    }
}

//! What one Vault node says about itself: its `sys/health` answer classified by Vault's
//! documented status codes, and its `sys/leader` answer read (vault: website/content/api-docs/
//! system/health.mdx, system/leader.mdx; http/sys_health.go, http/sys_leader.go).
//!
//! Pure: bytes and status codes in, plain values out; no I/O, no clock. It never guesses: a
//! code Vault does not document, a body that is not Vault's, or a body that contradicts its
//! code makes the node unreachable, so a stray HTTP server on a node's port can never be taken
//! for an active Vault.

use serde::Deserialize;

/// The largest `sys/health` or `sys/leader` body read. Vault's are about 300 bytes; anything
/// near this is not Vault.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A node's state by its `sys/health` answer, asked without any override, so each documented
/// default code means one state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// 200: initialized, unsealed and active: the only state a redirect may target.
    Active,
    /// 429: an unsealed standby.
    Standby,
    /// 472: a disaster-recovery secondary (Vault Enterprise): never serves clients.
    DrSecondary,
    /// 473: a performance standby (Vault Enterprise): serves reads, forwards writes.
    PerfStandby,
    /// 501: not initialized.
    NotInitialized,
    /// 503: sealed.
    Sealed,
    /// No usable answer: refused, timed out, an undocumented code, or a body that is not
    /// Vault's. The text says which, for operators.
    Unreachable(String),
}

impl Health {
    /// The word the status page, `status` and `/health` use.
    pub fn name(&self) -> &'static str {
        match self {
            Health::Active => "active",
            Health::Standby => "standby",
            Health::DrSecondary => "dr_secondary",
            Health::PerfStandby => "perf_standby",
            Health::NotInitialized => "not_initialized",
            Health::Sealed => "sealed",
            Health::Unreachable(_) => "unreachable",
        }
    }

    /// Whether Vault answered (any documented code with Vault's body): the node's state is
    /// then known, whatever it is.
    pub fn answered(&self) -> bool {
        !matches!(self, Health::Unreachable(_))
    }
}

/// The fields of `sys/health`'s body we check. OpenBao omits `performance_standby`.
#[derive(Deserialize)]
struct HealthBody {
    initialized: bool,
    sealed: bool,
    standby: bool,
}

/// Classifies a `sys/health` answer: `status` and its body.
///
/// The body must be Vault's health document and agree with the code (200 unsealed, initialized
/// and not a standby; 429 unsealed; 501 not initialized; 503 sealed); otherwise the node is
/// [`Health::Unreachable`] with what was wrong.
pub fn classify(status: u16, body: &[u8]) -> Health {
    let state = match status {
        200 => Health::Active,
        429 => Health::Standby,
        472 => Health::DrSecondary,
        473 => Health::PerfStandby,
        501 => Health::NotInitialized,
        503 => Health::Sealed,
        other => {
            return Health::Unreachable(format!(
                "sys/health answered {other}, not a code Vault documents"
            ))
        }
    };
    let parsed: HealthBody = match serde_json::from_slice(body) {
        Ok(b) => b,
        Err(e) => {
            return Health::Unreachable(format!(
                "sys/health answered {status} with a body that is not Vault's health document: {e}"
            ))
        }
    };
    let contradiction = match state {
        Health::Active if !parsed.initialized || parsed.sealed || parsed.standby => Some(format!(
            "initialized={} sealed={} standby={}",
            parsed.initialized, parsed.sealed, parsed.standby
        )),
        Health::Standby if parsed.sealed => Some("sealed=true".to_string()),
        Health::NotInitialized if parsed.initialized => Some("initialized=true".to_string()),
        Health::Sealed if !parsed.sealed => Some("sealed=false".to_string()),
        _ => None,
    };
    match contradiction {
        Some(fields) => {
            Health::Unreachable(format!("sys/health answered {status} but its body says {fields}"))
        }
        None => state,
    }
}

/// What a node's `sys/leader` says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leader {
    /// Whether the node answering is the active node.
    pub is_self: bool,
    /// The active node's `api_addr` as this node knows it; `None` when it knows none (OpenBao
    /// omits the field on a standby that has not learned a leader yet).
    pub leader_address: Option<String>,
    /// The Raft log index this node knows committed; `None` without integrated storage.
    pub raft_committed_index: Option<u64>,
}

#[derive(Deserialize)]
struct LeaderBody {
    #[serde(default)]
    is_self: bool,
    #[serde(default)]
    leader_address: Option<String>,
    #[serde(default)]
    raft_committed_index: Option<u64>,
}

/// Reads a `sys/leader` answer; anything but a 200 with Vault's JSON is an error in words
/// (a sealed node answers 503 `{"errors":["Vault is sealed"]}`).
pub fn read_leader(status: u16, body: &[u8]) -> Result<Leader, String> {
    if status != 200 {
        return Err(format!("sys/leader answered {status}"));
    }
    let parsed: LeaderBody = serde_json::from_slice(body)
        .map_err(|e| format!("sys/leader body is not Vault's leader document: {e}"))?;
    Ok(Leader {
        is_self: parsed.is_self,
        leader_address: parsed.leader_address.filter(|a| !a.trim().is_empty()),
        // Vault without integrated storage reports 0.
        raft_committed_index: parsed.raft_committed_index.filter(|i| *i > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies as OpenBao 2.7.2 sent them on this machine (api-facts.md, OpenBao section).
    const ACTIVE: &str = r#"{"initialized":true,"sealed":false,"standby":false,"replication_performance_mode":"primary","replication_dr_mode":"disabled","server_time_utc":1796203107,"version":"2.7.2","cluster_name":"vault-cluster-2bbc984d","cluster_id":"754f019d-90b8-a9d4-5c53-80ba20dba7df"}"#;
    const STANDBY: &str = r#"{"initialized":true,"sealed":false,"standby":true,"replication_performance_mode":"primary","replication_dr_mode":"disabled","server_time_utc":1796203107,"version":"2.7.2"}"#;
    const SEALED: &str = r#"{"initialized":true,"sealed":true,"standby":true,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1796203104,"version":"2.7.2"}"#;
    const UNINIT: &str = r#"{"initialized":false,"sealed":true,"standby":true,"replication_performance_mode":"unknown","replication_dr_mode":"unknown","server_time_utc":1796203094,"version":"2.7.2"}"#;

    #[test]
    fn every_documented_code_with_its_body_is_classified() {
        assert_eq!(classify(200, ACTIVE.as_bytes()), Health::Active);
        assert_eq!(classify(429, STANDBY.as_bytes()), Health::Standby);
        assert_eq!(classify(472, STANDBY.as_bytes()), Health::DrSecondary);
        assert_eq!(classify(473, STANDBY.as_bytes()), Health::PerfStandby);
        assert_eq!(classify(501, UNINIT.as_bytes()), Health::NotInitialized);
        assert_eq!(classify(503, SEALED.as_bytes()), Health::Sealed);
    }

    #[test]
    fn an_undocumented_code_is_unreachable_and_names_the_code() {
        for code in [201, 204, 301, 307, 400, 404, 500, 502, 504] {
            let h = classify(code, ACTIVE.as_bytes());
            assert!(
                matches!(&h, Health::Unreachable(why) if why.contains(&code.to_string())),
                "{code}: {h:?}"
            );
        }
    }

    #[test]
    fn a_200_that_is_not_vaults_document_is_never_active() {
        for body in ["", "OK", "<html>hello</html>", "{}", r#"{"sealed":false}"#, "[]"] {
            let h = classify(200, body.as_bytes());
            assert!(matches!(h, Health::Unreachable(_)), "{body:?}: {h:?}");
        }
    }

    #[test]
    fn a_code_its_body_contradicts_is_unreachable() {
        let cases = [(200, STANDBY), (200, SEALED), (200, UNINIT), (429, SEALED), (503, STANDBY)];
        for (code, body) in cases {
            let h = classify(code, body.as_bytes());
            assert!(
                matches!(&h, Health::Unreachable(why) if why.contains("body says")),
                "{code} {body}: {h:?}"
            );
        }
        assert!(!classify(200, STANDBY.as_bytes()).answered());
        assert!(classify(503, SEALED.as_bytes()).answered());
    }

    #[test]
    fn leader_answers_of_active_standby_and_sealed_nodes_are_read() {
        let active = r#"{"ha_enabled":true,"is_self":true,"active_time":"2026-12-02T09:18:24.632397575Z","leader_address":"http://127.0.0.9:18200","leader_cluster_address":"https://127.0.0.9:18201","raft_committed_index":29,"raft_applied_index":29}"#;
        assert_eq!(
            read_leader(200, active.as_bytes()),
            Ok(Leader {
                is_self: true,
                leader_address: Some("http://127.0.0.9:18200".into()),
                raft_committed_index: Some(29),
            })
        );
        // OpenBao's standby that knows no leader omits the address.
        let lost = r#"{"ha_enabled":true,"is_self":false,"raft_committed_index":30,"raft_applied_index":30}"#;
        assert_eq!(
            read_leader(200, lost.as_bytes()),
            Ok(Leader { is_self: false, leader_address: None, raft_committed_index: Some(30) })
        );
        // Vault on other storage: an empty address and index 0 mean "none".
        let consul_storage =
            r#"{"ha_enabled":true,"is_self":false,"leader_address":"","raft_committed_index":0}"#;
        assert_eq!(read_leader(200, consul_storage.as_bytes()), Ok(Leader::default()));
        let sealed = read_leader(503, br#"{"errors":["Vault is sealed"]}"#).unwrap_err();
        assert!(sealed.contains("503"), "{sealed}");
        assert!(read_leader(200, b"garbage").is_err());
    }
}

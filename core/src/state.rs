//! The poller's state document: what `GET /v1/active` answers and what filters keep.
//!
//! Nothing else in the project defines this shape; the filter and the poller both use these
//! types, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};

/// Low-order bits of [`StateDoc::version`] reserved for local events (a state going stale, a
/// Consul error that changes the answer) between two Consul index changes.
pub const LOCAL_EVENT_BITS: u32 = 16;

/// The largest document a filter accepts; anything bigger is not a state document.
pub const MAX_DOC_BYTES: usize = 16 * 1024;

/// One Vault node as the poller chose it from Consul's health view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveNode {
    /// Consul node name (`Node.Node`), used when redirecting by name.
    pub node: String,
    /// The service address (`Service.Address`, or `Node.Address` when that is empty).
    pub address: String,
    /// The Vault API port (`Service.Port`).
    pub port: u16,
}

/// The state document served at `GET /v1/active`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDoc {
    /// Strictly increasing on every change. Built as `consul_index << 16 | local events`, so
    /// versions from two pollers watching the same Consul are comparable.
    pub version: u64,
    /// The active node, or `None` while there is none (election, every node sealed, Consul
    /// unreachable past the staleness bound).
    pub active: Option<ActiveNode>,
    /// Why `active` is `None`; `None` when there is an active node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The `X-Consul-Index` of the Consul answer this state came from.
    pub consul_index: u64,
    /// Unix time in milliseconds of the last good Consul answer, if there was one.
    pub last_consul_ok_unix_ms: Option<u64>,
    /// Milliseconds since the last good Consul answer, measured by the poller when it answered
    /// (so a filter needs no clock agreement with the poller).
    pub age_ms: Option<u64>,
    /// How many Consul entries carried the active tag with a passing sealed check. More than
    /// one happens briefly during a failover; the poller then picks deterministically.
    #[serde(default)]
    pub active_candidates: u32,
}

/// Why a document from the poller was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    /// The body is larger than [`MAX_DOC_BYTES`].
    #[error("state document is {0} bytes, larger than the {MAX_DOC_BYTES}-byte limit")]
    TooLarge(usize),
    /// The body is not the JSON shape of a state document.
    #[error("state document is not valid: {0}")]
    Invalid(String),
}

impl StateDoc {
    /// A state with no active node and the given reason, at version 0.
    pub fn none(reason: impl Into<String>) -> Self {
        StateDoc {
            version: 0,
            active: None,
            reason: Some(reason.into()),
            consul_index: 0,
            last_consul_ok_unix_ms: None,
            age_ms: None,
            active_candidates: 0,
        }
    }

    /// Parses a document from the poller, refusing oversized or malformed bodies.
    pub fn parse(body: &[u8]) -> Result<Self, DocError> {
        if body.len() > MAX_DOC_BYTES {
            return Err(DocError::TooLarge(body.len()));
        }
        serde_json::from_slice(body).map_err(|e| DocError::Invalid(e.to_string()))
    }

    /// The document as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain structs with string keys cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The version for a state derived from Consul index `consul_index`, never below `previous + 1`.
    ///
    /// Consul indexes only grow except on a Consul reset; keeping `previous + 1` as a floor
    /// means the version still grows then, so no filter ever takes the new state for an old one.
    pub fn next_version(previous: u64, consul_index: u64) -> u64 {
        let from_index = consul_index.saturating_mul(1 << LOCAL_EVENT_BITS);
        from_index.max(previous.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn doc() -> StateDoc {
        StateDoc {
            version: 7 << 16,
            active: Some(ActiveNode { node: "vault-a".into(), address: "10.0.0.5".into(), port: 8200 }),
            reason: None,
            consul_index: 7,
            last_consul_ok_unix_ms: Some(1_700_000_000_000),
            age_ms: Some(12),
            active_candidates: 1,
        }
    }

    #[test]
    fn a_document_survives_a_round_trip_through_json() {
        let d = doc();
        assert_eq!(StateDoc::parse(&d.to_json()), Ok(d));
    }

    #[test]
    fn an_oversized_body_is_refused_before_parsing() {
        let body = vec![b' '; MAX_DOC_BYTES + 1];
        assert_eq!(StateDoc::parse(&body), Err(DocError::TooLarge(MAX_DOC_BYTES + 1)));
    }

    #[test]
    fn garbage_is_refused_with_the_parser_error() {
        assert!(matches!(StateDoc::parse(b"{\"version\":"), Err(DocError::Invalid(_))));
        assert!(matches!(StateDoc::parse(b"[]"), Err(DocError::Invalid(_))));
    }

    #[test]
    fn unknown_fields_from_a_newer_poller_are_ignored() {
        let mut v: serde_json::Value = serde_json::from_slice(&doc().to_json()).unwrap();
        v["future_field"] = serde_json::json!(1);
        assert_eq!(StateDoc::parse(v.to_string().as_bytes()), Ok(doc()));
    }

    #[test]
    fn versions_follow_the_consul_index_and_never_go_backwards() {
        assert_eq!(StateDoc::next_version(0, 5), 5 << 16);
        // A local event on the same index bumps the low part.
        assert_eq!(StateDoc::next_version(5 << 16, 5), (5 << 16) + 1);
        // A Consul index reset still yields a larger version.
        assert_eq!(StateDoc::next_version(9 << 16, 2), (9 << 16) + 1);
        assert_eq!(StateDoc::next_version(u64::MAX, u64::MAX), u64::MAX);
    }
}

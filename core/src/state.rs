//! The poller's state document: what `GET /v1/active` answers and what filters keep.
//!
//! Nothing else in the project defines this shape; the filter and the poller both use these
//! types, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::json::{self, Json};

/// Low-order bits of [`StateDoc::version`] reserved for local events (a state going stale, a
/// Consul error that changes the answer) between two Consul index changes.
pub const LOCAL_EVENT_BITS: u32 = 16;

/// The largest document a filter accepts; anything bigger is not a state document.
pub const MAX_DOC_BYTES: usize = 16 * 1024;

/// The scheme of the redirect, as the state document's `scheme` hint carries it and as a
/// filter or the poller is configured to redirect with. Consul does not record Vault's scheme.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// `http://`
    #[default]
    Http,
    /// `https://`
    Https,
}

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
    /// The scheme the poller was configured to redirect with, a hint for filters whose own
    /// configuration does not set one (Consul does not record Vault's scheme).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<Scheme>,
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
            scheme: None,
        }
    }

    /// Parses a document from the poller, refusing oversized or malformed bodies.
    ///
    /// Uses the small reader in [`crate::json`] rather than serde_json, so the filter carries
    /// no serde_json code; `parse_agrees_with_serde` checks the two agree.
    pub fn parse(body: &[u8]) -> Result<Self, DocError> {
        if body.len() > MAX_DOC_BYTES {
            return Err(DocError::TooLarge(body.len()));
        }
        let json = Json::parse(body).map_err(|e| DocError::Invalid(e.to_string()))?;
        Self::from_json(&json)
    }

    /// Reads a document from an already parsed JSON value.
    pub fn from_json(json: &Json) -> Result<Self, DocError> {
        let [version, active, reason, consul_index, last_ok, age, candidates, scheme] = fields(
            json,
            "state document",
            [
                "version",
                "active",
                "reason",
                "consul_index",
                "last_consul_ok_unix_ms",
                "age_ms",
                "active_candidates",
                "scheme",
            ],
        )?;
        let scheme = match scheme {
            None | Some(Json::Null) => None,
            Some(v) => match v.as_str() {
                Some("http") => Some(Scheme::Http),
                Some("https") => Some(Scheme::Https),
                _ => return Err(invalid("scheme", "must be \"http\" or \"https\"")),
            },
        };
        let active = match active {
            None | Some(Json::Null) => None,
            Some(node) => {
                let [name, address, port] = fields(node, "active", ["node", "address", "port"])?;
                let port = u16::try_from(required_u64(port, "active.port")?)
                    .map_err(|_| invalid("active.port", "is larger than 65535"))?;
                Some(ActiveNode {
                    node: required_str(name, "active.node")?.to_string(),
                    address: required_str(address, "active.address")?.to_string(),
                    port,
                })
            }
        };
        let reason = match reason {
            None | Some(Json::Null) => None,
            Some(r) => Some(required_str(Some(r), "reason")?.to_string()),
        };
        Ok(StateDoc {
            version: required_u64(version, "version")?,
            active,
            reason,
            consul_index: required_u64(consul_index, "consul_index")?,
            last_consul_ok_unix_ms: optional_u64(last_ok, "last_consul_ok_unix_ms")?,
            age_ms: optional_u64(age, "age_ms")?,
            active_candidates: match candidates {
                None => 0,
                Some(c) => u32::try_from(required_u64(Some(c), "active_candidates")?)
                    .map_err(|_| invalid("active_candidates", "is larger than a u32"))?,
            },
            scheme,
        })
    }

    /// The document as JSON bytes, written without serde so the filter can write it too;
    /// `written_json_is_what_serde_reads` checks serde reads back the same document.
    pub fn to_json(&self) -> Vec<u8> {
        use std::fmt::Write;
        let mut out = String::with_capacity(256);
        let _ = write!(out, "{{\"version\":{},\"active\":", self.version);
        match &self.active {
            Some(a) => {
                out.push_str("{\"node\":");
                json::write_str(&mut out, &a.node);
                out.push_str(",\"address\":");
                json::write_str(&mut out, &a.address);
                let _ = write!(out, ",\"port\":{}}}", a.port);
            }
            None => out.push_str("null"),
        }
        if let Some(r) = &self.reason {
            out.push_str(",\"reason\":");
            json::write_str(&mut out, r);
        }
        let _ = write!(out, ",\"consul_index\":{}", self.consul_index);
        for (name, v) in
            [("last_consul_ok_unix_ms", self.last_consul_ok_unix_ms), ("age_ms", self.age_ms)]
        {
            match v {
                Some(v) => {
                    let _ = write!(out, ",\"{name}\":{v}");
                }
                None => {
                    let _ = write!(out, ",\"{name}\":null");
                }
            }
        }
        let _ = write!(out, ",\"active_candidates\":{}", self.active_candidates);
        match self.scheme {
            Some(Scheme::Http) => out.push_str(",\"scheme\":\"http\""),
            Some(Scheme::Https) => out.push_str(",\"scheme\":\"https\""),
            None => {}
        }
        out.push('}');
        out.into_bytes()
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

fn invalid(field: &str, what: &str) -> DocError {
    DocError::Invalid(format!("`{field}` {what}"))
}

/// The members `names` of the object `json`; a repeated known member is refused, as serde does.
fn fields<'a, const N: usize>(
    json: &'a Json,
    what: &str,
    names: [&str; N],
) -> Result<[Option<&'a Json>; N], DocError> {
    let Json::Obj(members) = json else {
        return Err(invalid(what, "is not an object"));
    };
    let mut found = [None; N];
    for (key, value) in members {
        if let Some(i) = names.iter().position(|n| n == key) {
            if found[i].is_some() {
                return Err(invalid(names[i], "appears twice"));
            }
            found[i] = Some(value);
        }
    }
    Ok(found)
}

fn required_u64(v: Option<&Json>, field: &str) -> Result<u64, DocError> {
    let v = v.ok_or_else(|| invalid(field, "is missing"))?;
    v.as_u64()
        .ok_or_else(|| invalid(field, &format!("must be a non-negative integer, not {}", v.kind())))
}

fn optional_u64(v: Option<&Json>, field: &str) -> Result<Option<u64>, DocError> {
    match v {
        None | Some(Json::Null) => Ok(None),
        Some(v) => required_u64(Some(v), field).map(Some),
    }
}

fn required_str<'a>(v: Option<&'a Json>, field: &str) -> Result<&'a str, DocError> {
    let v = v.ok_or_else(|| invalid(field, "is missing"))?;
    v.as_str().ok_or_else(|| invalid(field, &format!("must be a string, not {}", v.kind())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> StateDoc {
        StateDoc {
            version: 7 << 16,
            active: Some(ActiveNode {
                node: "vault-a".into(),
                address: "10.0.0.5".into(),
                port: 8200,
            }),
            reason: None,
            consul_index: 7,
            last_consul_ok_unix_ms: Some(1_700_000_000_000),
            age_ms: Some(12),
            active_candidates: 1,
            scheme: Some(Scheme::Https),
        }
    }

    #[test]
    fn a_document_survives_a_round_trip_through_json() {
        let d = doc();
        assert_eq!(StateDoc::parse(&d.to_json()), Ok(d));
    }

    #[test]
    fn written_json_is_what_serde_reads() {
        let mut tricky = doc();
        tricky.reason = Some("quote \" newline \n nul \0".into());
        tricky.age_ms = None;
        for d in [doc(), tricky, StateDoc::none("none")] {
            assert_eq!(serde_json::from_slice::<StateDoc>(&d.to_json()).unwrap(), d);
            assert_eq!(
                serde_json::to_value(&d).unwrap(),
                serde_json::from_slice::<serde_json::Value>(&d.to_json()).unwrap()
            );
        }
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
    fn missing_or_mistyped_fields_are_named() {
        let cases = [
            (r#"{"active":null,"consul_index":1}"#, "`version` is missing"),
            (
                r#"{"version":-1,"active":null,"consul_index":1}"#,
                "`version` must be a non-negative integer",
            ),
            (
                r#"{"version":1,"active":{"node":"a","address":"b","port":70000},"consul_index":1}"#,
                "`active.port` is larger",
            ),
            (
                r#"{"version":1,"active":{"node":1,"address":"b","port":1},"consul_index":1}"#,
                "`active.node` must be a string",
            ),
            (
                r#"{"version":1,"version":2,"active":null,"consul_index":1}"#,
                "`version` appears twice",
            ),
        ];
        for (json, expected) in cases {
            let err = StateDoc::parse(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    /// The filter's reader and serde_json (which the poller's tests and users' tools may use)
    /// must agree on every document: same value when both accept, both refuse otherwise.
    #[test]
    fn parse_agrees_with_serde() {
        let base = String::from_utf8(doc().to_json()).unwrap();
        let mut variants = vec![
            base.clone(),
            String::from_utf8(StateDoc::none("no node tagged \"active\"\n").to_json()).unwrap(),
            base.replace("\"age_ms\":12", "\"age_ms\":null"),
            base.replace(",\"active_candidates\":1", ""),
            base.replace("8200", "8200.0"),
            base.replace("8200", "-8200"),
            base.replace("\"vault-a\"", "\"vault-\\u0061\""),
            base.replace("\"vault-a\"", "7"),
            base.replace("{\"version\"", "{\"extra\":[1,{\"x\":2.5e3}],\"version\""),
            base.replace("}", ",}"),
            base.replace("\"consul_index\":7", "\"consul_index\":18446744073709551616"),
        ];
        for cut in [1, 10, base.len() / 2, base.len() - 1] {
            variants.push(base[..cut].to_string());
        }
        for v in variants {
            let ours = StateDoc::parse(v.as_bytes()).ok();
            let theirs = serde_json::from_str::<StateDoc>(&v).ok();
            assert_eq!(ours, theirs, "{v}");
        }
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

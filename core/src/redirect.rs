//! The per-request decision: redirect, refuse, or let through. Shared by the proxy-wasm filter
//! and the poller's standalone redirect mode, so both give the same answer to the same request.
//!
//! The `Location` is the active node's prefix (`scheme://host:port`, computed once per state)
//! followed by the request's `:path` byte for byte. The request's `Host`, `:authority` or any
//! other header never reaches the `Location`.

use serde::Deserialize;

use crate::state::{ActiveNode, Scheme};
use crate::target::{Target, TargetError};

/// The longest `:path` copied into a `Location`; longer requests get 414.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// Which of the active node's names goes into the `Location`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostChoice {
    /// The service address: the host of Vault's `api_addr`, the one Vault's own standbys
    /// redirect to, and the one clients can reach without Consul DNS.
    #[default]
    Address,
    /// The Consul node name (vault-redirector's default).
    Node,
}

/// How a state turns into a `Location` prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RedirectPolicy {
    /// The redirect's scheme.
    pub scheme: Scheme,
    /// Node name or address.
    pub host: HostChoice,
    /// Replaces the registered service port when set.
    pub port: Option<u16>,
}

impl RedirectPolicy {
    /// `scheme://host:port` for `active`, or why its host cannot be redirected to.
    pub fn location_prefix(&self, active: &ActiveNode) -> Result<String, TargetError> {
        let host = match self.host {
            HostChoice::Address => &active.address,
            HostChoice::Node => &active.node,
        };
        let target = Target::parse(host)?;
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let port = self.port.unwrap_or(active.port);
        Ok(format!("{scheme}://{}:{port}", target.as_str()))
    }
}

/// What to answer a request with.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// 307 with this `Location`.
    Redirect(Vec<u8>),
    /// No active node is known: 503 (or pass-through, as the caller is configured).
    NoActive,
    /// The path is on the pass-through list: let the request continue to the upstream.
    PassThrough,
    /// The request target cannot be redirected safely: 400 with this reason.
    BadRequest(&'static str),
    /// The path is longer than [`MAX_PATH_BYTES`]: 414.
    PathTooLong,
}

/// Decides the answer to a request whose `:path` is `path`.
///
/// `prefix` is the current `Location` prefix, `None` when no usable active node is known;
/// `pass_through` lists exact paths, or prefixes when they end in `*`, matched against the
/// path without its query.
pub fn decide(prefix: Option<&str>, path: Option<&[u8]>, pass_through: &[String]) -> Decision {
    let Some(path) = path else {
        return Decision::BadRequest("request has no :path");
    };
    if path.first() != Some(&b'/') {
        // Absolute-form targets (`http://evil/`) and `*` must never be glued to an authority.
        return Decision::BadRequest("request target is not an origin-form path");
    }
    if path.len() > MAX_PATH_BYTES {
        return Decision::PathTooLong;
    }
    if path.iter().any(|&b| b < 0x20 || b == 0x7f) {
        // Envoy's codecs reject these already; refusing here keeps a header injection
        // impossible whatever sits in front of us.
        return Decision::BadRequest("request path contains control characters");
    }
    if is_pass_through(path, pass_through) {
        return Decision::PassThrough;
    }
    match prefix {
        Some(prefix) => {
            let mut location = Vec::with_capacity(prefix.len() + path.len());
            location.extend_from_slice(prefix.as_bytes());
            location.extend_from_slice(path);
            Decision::Redirect(location)
        }
        None => Decision::NoActive,
    }
}

fn is_pass_through(path: &[u8], patterns: &[String]) -> bool {
    if patterns.is_empty() {
        return false;
    }
    let without_query = match path.iter().position(|&b| b == b'?') {
        Some(i) => &path[..i],
        None => path,
    };
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => without_query.starts_with(prefix.as_bytes()),
        None => without_query == p.as_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> ActiveNode {
        ActiveNode { node: "vault-b".into(), address: "10.0.0.6".into(), port: 8200 }
    }

    #[test]
    fn the_prefix_uses_the_address_by_default_and_the_node_name_on_request() {
        let policy = RedirectPolicy::default();
        assert_eq!(policy.location_prefix(&node()).unwrap(), "http://10.0.0.6:8200");
        let by_name =
            RedirectPolicy { scheme: Scheme::Https, host: HostChoice::Node, port: Some(443) };
        assert_eq!(by_name.location_prefix(&node()).unwrap(), "https://vault-b:443");
    }

    #[test]
    fn an_ipv6_address_is_bracketed_in_the_prefix() {
        let v6 = ActiveNode { address: "2001:db8::7".into(), ..node() };
        assert_eq!(
            RedirectPolicy::default().location_prefix(&v6).unwrap(),
            "http://[2001:db8::7]:8200"
        );
    }

    #[test]
    fn a_poisoned_address_never_becomes_a_prefix() {
        let evil = ActiveNode { address: "evil.example/".into(), ..node() };
        assert!(RedirectPolicy::default().location_prefix(&evil).is_err());
    }

    #[test]
    fn the_path_and_query_are_copied_byte_for_byte() {
        let path = b"/v1/secret/data/a%20b?version=2&x=%0D";
        let d = decide(Some("http://10.0.0.6:8200"), Some(path), &[]);
        assert_eq!(
            d,
            Decision::Redirect(
                b"http://10.0.0.6:8200/v1/secret/data/a%20b?version=2&x=%0D".to_vec()
            )
        );
    }

    #[test]
    fn a_double_slash_path_stays_a_path_of_the_active_node() {
        let d = decide(Some("http://v:1"), Some(b"//evil.example/x"), &[]);
        assert_eq!(d, Decision::Redirect(b"http://v:1//evil.example/x".to_vec()));
    }

    #[test]
    fn targets_that_are_not_origin_form_are_refused() {
        for path in [&b"http://evil.example/"[..], b"*", b"", b"evil/x"] {
            assert!(matches!(decide(Some("http://v:1"), Some(path), &[]), Decision::BadRequest(_)));
        }
        assert!(matches!(decide(Some("http://v:1"), None, &[]), Decision::BadRequest(_)));
    }

    #[test]
    fn control_characters_are_refused_and_long_paths_get_414() {
        assert!(matches!(
            decide(Some("http://v:1"), Some(b"/a\r\nX: y"), &[]),
            Decision::BadRequest(_)
        ));
        let long = [b"/".as_slice(), &vec![b'a'; MAX_PATH_BYTES]].concat();
        assert_eq!(decide(Some("http://v:1"), Some(&long), &[]), Decision::PathTooLong);
    }

    #[test]
    fn without_an_active_node_the_answer_is_no_active() {
        assert_eq!(decide(None, Some(b"/v1/sys/health"), &[]), Decision::NoActive);
    }

    #[test]
    fn pass_through_matches_exact_paths_and_star_prefixes_ignoring_the_query() {
        let patterns = vec!["/healthz".to_string(), "/.well-known/*".to_string()];
        assert_eq!(decide(None, Some(b"/healthz?full=1"), &patterns), Decision::PassThrough);
        assert_eq!(decide(None, Some(b"/.well-known/acme"), &patterns), Decision::PassThrough);
        assert_eq!(decide(None, Some(b"/healthzz"), &patterns), Decision::NoActive);
    }
}

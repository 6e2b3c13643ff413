//! The answer to a request, defined once: the status, headers and body each [`Decision`] gets.
//! The filter and the poller's standalone mode both send exactly this, so they cannot drift.
//!
//! It owns the wire form of every answer (status codes, header values, the texts of Vault's
//! error shape). It never decides (that is [`crate::decide`]) and never does I/O. Building an
//! answer allocates nothing beyond the decision's own `Location` and an error's body: the
//! filter builds one per request.

use crate::redirect::Decision;

/// The most headers an answer carries (a 503: `retry-after`, `content-type`, `cache-control`).
pub const MAX_HEADERS: usize = 3;

/// The 503's message about the state's reason is cut to this many characters: the reason comes
/// from Consul data through the poller, and a client needs the gist, not a novel.
pub const MAX_REASON_CHARS: usize = 200;

/// Why a request gets no redirect when the poller names an active node whose address cannot
/// be put in a `Location` (refused, counted and logged where the state arrives).
pub const UNREDIRECTABLE: &str = "the active Vault node's address cannot be redirected to";

/// One header of an answer: a lower-case name and its value.
pub type Header = (&'static str, &'static [u8]);

/// Nothing the edge answers may be cached: every answer changes with the cluster.
const NO_STORE: Header = ("cache-control", b"no-store");
const JSON: Header = ("content-type", b"application/json");
/// Vault clients retry a 503 after this many seconds; an election takes about that long.
const RETRY_AFTER: Header = ("retry-after", b"1");

/// A local answer: status, an optional `Location`, fixed headers, body. The fixed headers are
/// static slices and the `Location` is the decision's own bytes, so building an answer
/// allocates nothing on the redirect path (the filter builds one per request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The `Location`, sent first, for a redirect.
    pub location: Option<Vec<u8>>,
    /// The other headers, in the order they are sent.
    pub headers: &'static [Header],
    /// The body; empty for a redirect.
    pub body: Vec<u8>,
}

impl Answer {
    /// The answer to `decision`, or `None` when the request goes on to the upstream
    /// ([`Decision::PassThrough`]). `no_active` is what the 503 says (see [`no_active_message`]).
    pub fn to(decision: Decision, no_active: &str) -> Option<Answer> {
        let (status, location, headers, body): (u16, _, &'static [Header], _) = match decision {
            Decision::Redirect(location) => (307, Some(location), &[NO_STORE], Vec::new()),
            Decision::NoActive => {
                (503, None, &[RETRY_AFTER, JSON, NO_STORE], vault_error_body(no_active))
            }
            Decision::BadRequest(why) => (400, None, &[JSON, NO_STORE], vault_error_body(why)),
            Decision::PathTooLong => {
                (414, None, &[JSON, NO_STORE], vault_error_body("request path is too long"))
            }
            Decision::PassThrough => return None,
        };
        Some(Answer { status, location, headers, body })
    }

    /// Every header, the `Location` first, as (name, value) pairs.
    pub fn all_headers(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        let location = self.location.as_deref().map(|l| ("location", l));
        location.into_iter().chain(self.headers.iter().copied())
    }
}

/// What a 503 says when the state has no usable active node: the poller's reason, if it gave
/// one, cut to [`MAX_REASON_CHARS`].
pub fn no_active_message(reason: Option<&str>) -> String {
    match reason {
        Some(r) => {
            let cut = match r.char_indices().nth(MAX_REASON_CHARS) {
                Some((i, _)) => r.get(..i).unwrap_or(r),
                None => r,
            };
            format!("no active Vault node: {cut}")
        }
        None => "no active Vault node".to_string(),
    }
}

/// Vault's error shape, `{"errors":["..."]}`, so Vault clients show the message.
pub fn vault_error_body(message: &str) -> Vec<u8> {
    let mut body = String::with_capacity(message.len() + 16);
    body.push_str("{\"errors\":[");
    crate::json::write_str(&mut body, message);
    body.push_str("]}");
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(a: &'a Answer, name: &str) -> Option<&'a [u8]> {
        a.all_headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    #[test]
    fn a_redirect_carries_the_location_and_no_store_and_no_body() {
        let a = Answer::to(Decision::Redirect(b"http://v:1/x".to_vec()), "").unwrap();
        assert_eq!(a.status, 307);
        assert_eq!(header(&a, "location"), Some(&b"http://v:1/x"[..]));
        assert_eq!(header(&a, "cache-control"), Some(&b"no-store"[..]));
        assert_eq!(a.all_headers().count(), 2);
        assert!(a.all_headers().count() <= MAX_HEADERS);
        assert!(a.body.is_empty());
    }

    #[test]
    fn no_active_node_is_a_503_in_vaults_shape_that_clients_retry_and_never_cache() {
        let a = Answer::to(Decision::NoActive, &no_active_message(Some("election"))).unwrap();
        assert_eq!(a.status, 503);
        assert_eq!(header(&a, "retry-after"), Some(&b"1"[..]));
        assert_eq!(header(&a, "content-type"), Some(&b"application/json"[..]));
        assert_eq!(header(&a, "cache-control"), Some(&b"no-store"[..]));
        assert_eq!(a.body, br#"{"errors":["no active Vault node: election"]}"#);
    }

    #[test]
    fn refusals_say_why_in_vaults_shape() {
        let bad = Answer::to(Decision::BadRequest("request has no :path"), "").unwrap();
        assert_eq!(
            (bad.status, bad.body.as_slice()),
            (400, &br#"{"errors":["request has no :path"]}"#[..])
        );
        let long = Answer::to(Decision::PathTooLong, "").unwrap();
        assert_eq!(long.status, 414);
        assert_eq!(long.body, br#"{"errors":["request path is too long"]}"#);
        assert_eq!(header(&long, "cache-control"), Some(&b"no-store"[..]));
    }

    #[test]
    fn no_answer_carries_more_than_max_headers() {
        let decisions = [
            Decision::Redirect(b"http://v:1/".to_vec()),
            Decision::NoActive,
            Decision::BadRequest("x"),
            Decision::PathTooLong,
        ];
        for d in decisions {
            let a = Answer::to(d, "x").unwrap();
            assert!(a.all_headers().count() <= MAX_HEADERS, "{a:?}");
        }
    }

    #[test]
    fn pass_through_is_no_answer() {
        assert_eq!(Answer::to(Decision::PassThrough, ""), None);
    }

    #[test]
    fn the_reason_is_cut_and_escaped() {
        let long = "é".repeat(300);
        let message = no_active_message(Some(&long));
        assert_eq!(message.chars().count(), "no active Vault node: ".len() + MAX_REASON_CHARS);
        assert_eq!(no_active_message(None), "no active Vault node");
        let body = vault_error_body("quote \" and\nnewline");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0], "quote \" and\nnewline");
    }
}

//! Validation of the host a `Location` may name.
//!
//! The authority of every redirect comes from here and from nowhere else. Anything that could
//! change the meaning of a URL once pasted after `scheme://` (CR, LF, `/`, `@`, `?`, `#`, `:`,
//! spaces, percent signs...) is refused, so a bad Consul registration can never become an open
//! redirect or a header injection.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The longest DNS name (RFC 1035 section 2.3.4, without the trailing dot).
const MAX_HOSTNAME: usize = 253;
/// The longest DNS label.
const MAX_LABEL: usize = 63;

/// A host that is safe to put in a URL authority, already in its URL form (IPv6 in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target(String);

/// Why a host from the poller cannot be redirected to.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// The host is empty.
    #[error("target host is empty")]
    Empty,
    /// The host is longer than a DNS name may be.
    #[error("target host is {0} bytes, longer than {MAX_HOSTNAME}")]
    TooLong(usize),
    /// The host holds a byte that has no place in a hostname or IP literal.
    #[error("target host {host} contains the forbidden byte {byte:#04x}")]
    ForbiddenByte {
        /// The host as received, quoted and escaped as a JSON string.
        host: String,
        /// The first offending byte.
        byte: u8,
    },
    /// A label is empty (`a..b`, leading dot) or longer than 63 bytes, or starts or ends with `-`.
    #[error("target host {0:?} has an invalid DNS label")]
    BadLabel(String),
}

impl Target {
    /// Validates `host` as a DNS name, an IPv4 literal or an IPv6 literal (bare or bracketed).
    pub fn parse(host: &str) -> Result<Self, TargetError> {
        if host.is_empty() {
            return Err(TargetError::Empty);
        }
        let unbracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if unbracketed.parse::<Ipv6Addr>().is_ok() {
            // std's parser admits only hex digits, ':' and '.' (no zone id), so the text is
            // safe as given; it is not re-printed because Ipv6Addr's Display costs wasm size.
            let mut bracketed = String::with_capacity(unbracketed.len() + 2);
            bracketed.push('[');
            bracketed.push_str(&unbracketed.to_ascii_lowercase());
            bracketed.push(']');
            return Ok(Target(bracketed));
        }
        if host.parse::<Ipv4Addr>().is_ok() {
            return Ok(Target(host.to_string()));
        }
        if host.len() > MAX_HOSTNAME {
            return Err(TargetError::TooLong(host.len()));
        }
        if let Some(&byte) = host
            .as_bytes()
            .iter()
            .find(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
        {
            let mut escaped = String::with_capacity(host.len() + 2);
            crate::json::write_str(&mut escaped, host);
            return Err(TargetError::ForbiddenByte { host: escaped, byte });
        }
        // A single trailing dot is the DNS root: legal, and kept as given.
        let name = host.strip_suffix('.').unwrap_or(host);
        let labels_ok = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if !labels_ok {
            return Err(TargetError::BadLabel(host.to_string()));
        }
        Ok(Target(host.to_string()))
    }

    /// The host as it goes into a URL authority.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ipv4_literals_are_accepted_as_given() {
        for host in
            ["vault-a", "vault-a.service.consul", "10.0.0.5", "node_1.dc1", "vault.example.com."]
        {
            assert_eq!(Target::parse(host).map(|t| t.0), Ok(host.to_string()), "{host}");
        }
    }

    #[test]
    fn ipv6_literals_are_bracketed_and_lowercased() {
        assert_eq!(Target::parse("::1").unwrap().as_str(), "[::1]");
        assert_eq!(Target::parse("[2001:DB8::0:1]").unwrap().as_str(), "[2001:db8::0:1]");
    }

    #[test]
    fn bytes_that_would_change_the_url_are_refused() {
        for host in [
            "evil.example/x",
            "a@b",
            "a b",
            "a\r\nSet-Cookie: x",
            "a:80",
            "a?b",
            "a#b",
            "a%0d",
            "a\\b",
            "fe80::1%eth0",
            "[::1",
            "a\0b",
        ] {
            assert!(
                matches!(Target::parse(host), Err(TargetError::ForbiddenByte { .. })),
                "{host:?} was accepted"
            );
        }
    }

    #[test]
    fn malformed_labels_and_lengths_are_refused() {
        assert_eq!(Target::parse(""), Err(TargetError::Empty));
        for host in ["a..b", ".a", "-a", "a-", "a.-b"] {
            assert!(matches!(Target::parse(host), Err(TargetError::BadLabel(_))), "{host}");
        }
        let long_label = "a".repeat(64);
        assert!(matches!(Target::parse(&long_label), Err(TargetError::BadLabel(_))));
        let long_name = ["a"; 130].join(".");
        assert_eq!(Target::parse(&long_name), Err(TargetError::TooLong(259)));
    }

    #[test]
    fn the_error_names_the_offending_value() {
        let err = Target::parse("evil/\n").unwrap_err().to_string();
        assert!(err.contains("evil/\\n"), "{err}");
    }
}

//! The vault source's settings read from its flags (`VaultArgs` in `config`): the nodes to
//! probe, each parsed and checked, and TLS under Vault's own variable names.
//!
//! It owns reading the flags into the source's types; it never opens a connection.

use super::client::VaultTls;
use super::decide::Endpoint;
use crate::config::{ConfigError, VaultArgs};

/// The nodes to probe, each checked, in the order given; a bad or repeated one is named.
pub fn endpoints(args: &VaultArgs) -> Result<Vec<Endpoint>, ConfigError> {
    let given: Vec<&str> =
        args.vault_nodes.iter().map(|n| n.trim()).filter(|n| !n.is_empty()).collect();
    if given.is_empty() {
        return Err(ConfigError::NoVaultNodes);
    }
    let mut out: Vec<Endpoint> = Vec::with_capacity(given.len());
    for text in given {
        let e = Endpoint::parse(text).map_err(ConfigError::VaultNode)?;
        if out.iter().any(|o| o.authority() == e.authority()) {
            return Err(ConfigError::VaultNode(format!("{}: given twice", e.authority())));
        }
        out.push(e);
    }
    Ok(out)
}

/// TLS towards Vault.
pub fn tls(args: &VaultArgs) -> VaultTls {
    VaultTls {
        cacert: args.vault_cacert.clone(),
        client_cert: args.vault_client_cert.clone(),
        client_key: args.vault_client_key.clone(),
        server_name: args.vault_tls_server_name.clone().filter(|n| !n.is_empty()),
        skip_verify: args.vault_skip_verify,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use clap::Parser;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["p", "--source", "vault"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn nodes_repeat_and_the_defaults_are_the_documented_ones() {
        let c = parse(&[
            "--vault-node",
            "https://10.0.0.1:8200",
            "--vault-node",
            "https://10.0.0.2:8200",
        ]);
        let nodes: Vec<String> = endpoints(&c.vault).unwrap().iter().map(Endpoint::url).collect();
        assert_eq!(nodes, ["https://10.0.0.1:8200", "https://10.0.0.2:8200"]);
        assert_eq!(c.vault.vault_probe_interval, Duration::from_millis(500));
        assert_eq!(c.vault.vault_probe_timeout, Duration::from_millis(500));
        assert!(!c.vault.vault_skip_verify);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn bad_values_are_named() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "at least one --vault-node"),
            (
                &["--vault-node", "http://a:1", "--vault-probe-interval", "10ms"],
                "--vault-probe-interval 10ms",
            ),
            (
                &["--vault-node", "http://a:1", "--vault-probe-timeout", "0"],
                "--vault-probe-timeout",
            ),
            (
                &["--vault-node", "http://a:1", "--vault-client-key", "/k.pem"],
                "only VAULT_CLIENT_KEY",
            ),
        ];
        for (args, needle) in cases {
            let err = parse(args).validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{args:?}: {err}");
        }
        let cases: &[(&[&str], &str)] = &[
            (&["--vault-node", "10.0.0.1:8200"], "10.0.0.1:8200"),
            (&["--vault-node", "http://a:1/v1"], "http://a:1/v1"),
            (&["--vault-node", "http://a:1", "--vault-node", "https://a:1"], "a:1: given twice"),
        ];
        for (args, needle) in cases {
            let err = endpoints(&parse(args).vault).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid --vault-node") && err.contains(needle),
                "{args:?}: {err}"
            );
        }
    }

    #[test]
    fn the_consul_source_ignores_the_vault_flags() {
        let c = Config::try_parse_from(["p"]).unwrap();
        assert!(c.vault.vault_nodes.is_empty());
        assert!(c.validate().is_ok());
    }
}

//! The poller binary as a child process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;

use crate::proc::Proc;

/// A running `vault-redirect-poller`.
pub struct Poller {
    /// The process; dropping it stops the poller.
    pub proc: Proc,
    /// Where its API listens.
    pub addr: SocketAddr,
}

/// The poller binary (`VAULT_REDIRECT_POLLER_BIN`, else the debug build), or an error saying
/// how to build it.
pub fn binary() -> Result<std::path::PathBuf> {
    if let Some(bin) = std::env::var_os("VAULT_REDIRECT_POLLER_BIN") {
        return crate::artifact(bin.into(), "cargo build --release -p vault-redirect-poller");
    }
    crate::artifact(
        crate::target_dir().join("debug/vault-redirect-poller"),
        "cargo build -p vault-redirect-poller",
    )
}

impl Poller {
    /// Starts the poller against `consul_url` on a free port and waits until `/v1/active` answers.
    pub async fn start(consul_url: &str, extra: &[&str]) -> Result<Poller> {
        Self::start_on(consul_url, crate::free_addr()?, extra).await
    }

    /// Starts the poller listening on `addr`.
    pub async fn start_on(consul_url: &str, addr: SocketAddr, extra: &[&str]) -> Result<Poller> {
        Self::start_with_env(consul_url, addr, extra, &[("RUST_LOG", "info".to_string())]).await
    }

    /// Starts the poller listening on `addr` with these environment variables.
    pub async fn start_with_env(
        consul_url: &str,
        addr: SocketAddr,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Result<Poller> {
        Self::start_program(&binary()?, consul_url, addr, extra, env).await
    }

    /// Starts this poller binary (a released one, say) listening on `addr`.
    pub async fn start_program(
        program: &std::path::Path,
        consul_url: &str,
        addr: SocketAddr,
        extra: &[&str],
        env: &[(&str, String)],
    ) -> Result<Poller> {
        let mut args = vec![
            "--consul-addr".to_string(),
            consul_url.to_string(),
            "--listen".to_string(),
            addr.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut proc = Proc::spawn("poller", program, &args, env)?;
        let client = crate::client()?;
        let url = format!("http://{addr}/v1/active");
        let started = crate::wait_for("the poller's /v1/active", Duration::from_secs(20), || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client.get(&url).send().await.ok().filter(|r| r.status().is_success()).map(|_| ())
            }
        })
        .await;
        if let Err(e) = started {
            proc.check_alive()?;
            anyhow::bail!("{e}; end of the poller's log:\n{}", proc.log_tail(30));
        }
        Ok(Poller { proc, addr })
    }

    /// Starts the poller on the vault source (`--source vault`), probing these `api_addr`s,
    /// with `extra` flags (`--vault-probe-interval 100ms`, say).
    pub async fn start_vault(nodes: &[String], extra: &[&str]) -> Result<Poller> {
        let mut args: Vec<&str> = vec!["--source", "vault"];
        for node in nodes {
            args.extend(["--vault-node", node.as_str()]);
        }
        args.extend_from_slice(extra);
        // The Consul address is never used with --source vault.
        Self::start("http://127.0.0.1:1", &args).await
    }

    /// The poller's current state document.
    pub async fn state(&self) -> Result<vault_redirect_core::StateDoc> {
        let body = crate::client()?
            .get(format!("http://{}/v1/active", self.addr))
            .send()
            .await?
            .bytes()
            .await?;
        Ok(vault_redirect_core::StateDoc::parse(&body)?)
    }
}

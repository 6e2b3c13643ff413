//! Runs the Consul double on its own, for demos and measurements:
//! `cargo run -p vault-redirect-doubles --example consul_double -- 127.0.0.1:8500`.
//! Serves vault-a (active), vault-b and vault-c (standby) until killed; each line typed on
//! stdin names the node to make active.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, BufReader};
use vault_redirect_doubles::{ConsulDouble, Role, VaultNode};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(a) => {
            a.parse().map_err(|e| std::io::Error::other(format!("bad address {a:?}: {e}")))?
        }
        None => SocketAddr::from(([127, 0, 0, 1], 0)),
    };
    let consul = ConsulDouble::start_on(
        addr,
        vec![
            VaultNode::new("vault-a", "10.0.0.1", 8200, Role::Active),
            VaultNode::new("vault-b", "10.0.0.2", 8200, Role::Standby),
            VaultNode::new("vault-c", "10.0.0.3", 8200, Role::Standby),
        ],
    )
    .await?;
    println!("{}", consul.url());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match lines.next_line().await? {
            Some(node) if !node.trim().is_empty() => {
                consul.set_active(node.trim());
                println!("active: {} (index {})", node.trim(), consul.index());
            }
            Some(_) => {}
            // stdin closed: keep serving until killed.
            None => std::future::pending::<()>().await,
        }
    }
}

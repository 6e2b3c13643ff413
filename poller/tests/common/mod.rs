//! Helpers for the poller's scenario tests: start the poller in-process on 127.0.0.1:0
//! against a Consul double, read its API, and stop everything even when a test fails (every
//! handle aborts its task on drop).

// Test support: a failed set-up step must fail the test loudly, so panicking is right here.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use vault_redirect_poller::{Config, Poller, RunError};

pub use vault_redirect_doubles::three_nodes;

/// A poller running in this process.
pub struct Running {
    pub addr: SocketAddr,
    pub redirect: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks for a graceful shutdown and returns run's result.
    pub async fn stop(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(t) => t.await.expect("poller task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Parses `args` after `--consul-addr <consul> --listen 127.0.0.1:0`.
pub fn config(consul: &str, args: &[&str]) -> Config {
    let mut all = vec!["vault-redirect-poller", "--consul-addr", consul, "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Config::try_parse_from(all).expect("test flags parse")
}

/// Starts the poller with `args` against Consul at `consul`.
pub async fn start(consul: &str, args: &[&str]) -> Running {
    let poller = Poller::bind(config(consul, args)).await.expect("poller binds");
    let addr = poller.local_addr().unwrap();
    let redirect = poller.redirect_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(poller.run(async move {
        let _ = rx.await;
    }));
    Running { addr, redirect, stop: Some(tx), task: Some(task) }
}

/// A client that never follows redirects and never waits forever.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap()
}

/// GET `url` and its JSON body.
pub async fn get_json(url: &str) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.json::<Value>().await.unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, body)
}

/// Polls `/v1/active` until `pred` holds, for at most `within` of tokio time.
pub async fn active_until(p: &Running, within: Duration, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (_, doc) = get_json(&p.url("/v1/active")).await;
        if pred(&doc) {
            return doc;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("condition not met within {within:?}; last document: {doc}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node name of the active node in a state document, if any.
pub fn active_node(doc: &Value) -> Option<&str> {
    doc["active"]["node"].as_str()
}

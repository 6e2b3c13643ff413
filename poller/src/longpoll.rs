//! The long-poll on `/v1/active`: its parameters and the wait for a newer version, shared by
//! the axum handler and the lean front (`http::front`), so both answer alike.
//!
//! A long-poll parks on the watch channel, which wakes it only when the version changes:
//! waiters cost no CPU. It never writes the document's content; it may only raise the
//! version past a sibling replica's (`doc::catch_up`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;
use vault_redirect_core::StateDoc;

use crate::context::AppState;
use crate::metrics::Metrics;

/// The long-poll wait when `index` is given without `wait`.
pub const DEFAULT_LONGPOLL_WAIT: Duration = Duration::from_secs(5 * 60);
/// Longer waits are cut to this.
pub const MAX_LONGPOLL_WAIT: Duration = Duration::from_secs(5 * 60);

/// The query of `/v1/active`.
#[derive(Debug, Deserialize)]
pub struct ActiveQuery {
    /// The version the client holds.
    pub index: Option<String>,
    /// How long it may wait for a newer one.
    pub wait: Option<String>,
}

/// Decrements the waiter gauge however the request ends (answer, shutdown, client gone).
struct WaiterGuard(Arc<Metrics>);

impl WaiterGuard {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.longpoll_waiters.inc();
        WaiterGuard(metrics)
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        self.0.longpoll_waiters.dec();
    }
}

/// Up to `wait / 16` more, as Consul does, so waiters that started together end apart.
fn jitter(wait: Duration) -> Duration {
    let max_ms = (wait / 16).as_millis() as u64;
    if max_ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand::random_range(0..=max_ms))
}

/// The `index` and `wait` of a `/v1/active` request, or why it gets a 400.
pub fn longpoll_params(
    index: Option<&str>,
    wait: Option<&str>,
) -> Result<(Option<u64>, Duration), String> {
    let index = match index.map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            let raw = index.unwrap_or_default();
            return Err(format!("invalid index {raw:?}: expected a non-negative integer"));
        }
    };
    let wait = match wait.map(crate::duration::parse) {
        None => DEFAULT_LONGPOLL_WAIT,
        Some(Ok(d)) => d.min(MAX_LONGPOLL_WAIT),
        Some(Err(e)) => return Err(format!("invalid wait: {e}")),
    };
    Ok((index, wait))
}

/// The document a `/v1/active` request gets: at once without `index`; with it, once the
/// version passes `index`, the wait (plus jitter) ends, or the poller stops. `None` when
/// `gone` resolves first (the client left).
pub async fn longpoll_doc(
    app: &AppState,
    index: Option<u64>,
    wait: Duration,
    gone: impl Future<Output = ()>,
) -> Option<StateDoc> {
    let parked = u64::try_from(app.metrics.longpoll_waiters.get()).unwrap_or(0);
    if index.is_some() && parked >= app.info.max_waiters {
        // Holding one more would grow memory without bound; the caller gets the current
        // document now, as a long-poll whose wait ended.
        app.metrics.longpoll_over_limit.inc();
    } else if let Some(n) = index {
        let _guard = WaiterGuard::new(app.metrics.clone());
        let max_stale = app.info.max_stale;
        app.versions
            .send_if_modified(|s| crate::doc::catch_up::catch_up(s, n, max_stale, Instant::now()));
        let mut state = app.state.clone();
        let mut stop = app.stop.clone();
        let wait = wait + jitter(wait);
        tokio::select! {
            _ = state.wait_for(|s| s.doc.version > n) => {}
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|stopping| *stopping) => {}
            _ = gone => return None,
        }
    }
    let mut doc = app.state.borrow().doc_at(Instant::now());
    // The source's own scheme (Vault's api_addr), else the one this poller is configured to
    // redirect with (Consul does not record Vault's): a hint for filters that set none.
    doc.scheme = Some(doc.scheme.unwrap_or(app.info.policy.scheme));
    Some(doc)
}

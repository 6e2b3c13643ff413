//! A scripted stand-in for the poller's `GET /v1/active`: the test says what it answers, so
//! real Envoy's filter hears exactly what a host-test scenario scripts for its http calls.
//!
//! Long-poll semantics as the real poller's: a state is answered at once when the request's
//! `index` is below its version, otherwise the request is held until `wait` passes (then the
//! current state is answered) or the script changes the answer. Any other scripted answer (an
//! error status, a body that is no state) is given at once to every poll.
//!
//! It owns no decision of the filter's and must never guess one: what it answers is only what
//! the test scripted. It binds 127.0.0.1 on a free port and stops when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the scripted poller answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// No state yet: every poll is held until the script changes the answer.
    Hold,
    /// A state document with this version (answered with 200).
    State {
        /// The document's `version`, for the long-poll rule.
        version: u64,
        /// The document, sent as is.
        body: String,
    },
    /// This status and body, at once, to every poll (a failing or broken poller).
    Status {
        /// The HTTP status.
        status: u16,
        /// The body, sent as is.
        body: String,
    },
}

impl Answer {
    /// A state document; its `version` field drives the long-poll rule.
    pub fn state(doc: &serde_json::Value) -> Result<Answer> {
        let version = doc["version"]
            .as_u64()
            .with_context(|| format!("state without a numeric version: {doc}"))?;
        Ok(Answer::State { version, body: doc.to_string() })
    }

    /// What a poll with this `index` gets right now: `Some((status, body))`, or `None` when the
    /// poll waits (no state yet, or nothing newer than `index`). host-test's side of the
    /// differential tests answers its scripted http calls with this same rule.
    pub fn respond_to(&self, index: u64) -> Option<(u16, String)> {
        match self {
            Answer::Hold => None,
            Answer::State { version, body } => (index < *version).then(|| (200, body.clone())),
            Answer::Status { status, body } => Some((*status, body.clone())),
        }
    }

    /// What a held poll gets when its `wait` runs out: the current state (the real poller's
    /// answer), or 503 while there is none.
    fn at_wait_end(&self) -> (u16, String) {
        match self {
            Answer::Hold => (503, r#"{"errors":["no state yet"]}"#.to_owned()),
            Answer::State { body, .. } => (200, body.clone()),
            Answer::Status { status, body } => (*status, body.clone()),
        }
    }
}

/// The `index` of a poll path such as `/v1/active?index=65536&wait=30s` (0 when absent).
pub fn index_of(path: &str) -> u64 {
    path.split_once('?')
        .map(|(_, query)| query)
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("index="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Inner {
    answer: watch::Sender<Answer>,
    /// How many polls are held right now, by their `index`.
    held: Mutex<BTreeMap<u64, usize>>,
    /// Every poll answered, as (index asked, status given).
    served: Mutex<Vec<(u64, u16)>>,
}

/// A running scripted poller.
pub struct ScriptedPoller {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: JoinHandle<()>,
}

impl Drop for ScriptedPoller {
    fn drop(&mut self) {
        // Stops accepting at once; held polls end with the test's runtime.
        self.task.abort();
    }
}

impl ScriptedPoller {
    /// Starts on a free 127.0.0.1 port, answering [`Answer::Hold`] until told otherwise.
    pub async fn start() -> Result<ScriptedPoller> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (answer, _) = watch::channel(Answer::Hold);
        let inner = Arc::new(Inner {
            answer,
            held: Mutex::new(BTreeMap::new()),
            served: Mutex::new(Vec::new()),
        });
        // Envoy's bootstrap health-checks the poller cluster on /readyz: a scripted poller is
        // always ready (a failing poller is scripted through /v1/active's answers).
        let app = Router::new()
            .route("/v1/active", get(active))
            .route("/readyz", get(|| async { "ready" }))
            .route("/livez", get(|| async { "live" }))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("scripted poller stopped: {e}");
            }
        });
        Ok(ScriptedPoller { addr, inner, task })
    }

    /// Changes the answer; held polls are re-examined at once.
    pub fn set(&self, answer: Answer) {
        self.inner.answer.send_replace(answer);
    }

    /// How many polls with this `index` are held right now. Once a filter VM has applied a
    /// state of version V it polls with `index=V`, which is held: this counts the VMs that
    /// have applied V.
    pub fn held_with_index(&self, index: u64) -> usize {
        self.inner.held.lock().map(|h| h.get(&index).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Every poll answered so far, as (index asked, status given).
    pub fn served(&self) -> Vec<(u64, u16)> {
        self.inner.served.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Counts a held poll while it waits, and uncounts it however the wait ends (even when Envoy
/// drops the request).
struct Held<'a> {
    inner: &'a Inner,
    index: u64,
}

impl<'a> Held<'a> {
    fn new(inner: &'a Inner, index: u64) -> Held<'a> {
        if let Ok(mut held) = inner.held.lock() {
            *held.entry(index).or_default() += 1;
        }
        Held { inner, index }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut held) = self.inner.held.lock() {
            if let Some(n) = held.get_mut(&self.index) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

async fn active(
    State(inner): State<Arc<Inner>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let index = query.get("index").and_then(|v| v.parse().ok()).unwrap_or(0);
    let wait_s =
        query.get("wait").and_then(|v| v.trim_end_matches('s').parse().ok()).unwrap_or(30u64);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait_s);
    let mut changes = inner.answer.subscribe();
    let (status, body) = loop {
        let current = changes.borrow_and_update().clone();
        if let Some(answer) = current.respond_to(index) {
            break answer;
        }
        let _held = Held::new(&inner, index);
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => break current.at_wait_end(),
        }
    };
    if let Ok(mut served) = inner.served.lock() {
        served.push((index, status));
    }
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_is_answered_only_to_an_older_index_and_an_error_to_every_poll() {
        let state = Answer::State { version: 5, body: "{}".into() };
        assert_eq!(state.respond_to(4), Some((200, "{}".to_owned())));
        assert_eq!(state.respond_to(5), None);
        assert_eq!(Answer::Hold.respond_to(0), None);
        let error = Answer::Status { status: 500, body: "x".into() };
        assert_eq!(error.respond_to(99), Some((500, "x".to_owned())));
    }

    #[test]
    fn the_index_is_read_from_the_poll_path() {
        assert_eq!(index_of("/v1/active?index=65536&wait=30s"), 65536);
        assert_eq!(index_of("/v1/active?wait=30s&index=7"), 7);
        assert_eq!(index_of("/v1/active"), 0);
    }
}

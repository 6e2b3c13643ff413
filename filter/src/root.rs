//! The worker's root context: owns the configuration, keeps exactly one long-poll to the
//! poller in flight, merges what it hears (and what siblings publish in shared data) into one
//! [`View`] that this worker's requests read from memory.
//!
//! It must never block a request and never move the state to an older version.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use vault_redirect_core::state::MAX_DOC_BYTES;
use vault_redirect_core::StateDoc;

use crate::config::FilterConfig;
use crate::host::{self, HostError};
use crate::metrics::{self, Metrics, RequestCounts};
use crate::sync::{self, Known, Merge, View, SHARED_KEY};
use crate::types::{BufferType, LogLevel, MapType, Status};

/// The largest plugin configuration read.
const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// How many times a shared-data write is retried after a CAS mismatch.
const CAS_ATTEMPTS: usize = 4;
/// The timer period until the first successful poll.
const STARTUP_TICK: Duration = Duration::from_millis(50);
/// How long after configuration an unknown poller cluster counts as "Envoy still starting".
const CLUSTER_GRACE_MS: u64 = 5_000;
/// An answer without a new version faster than this did not wait: the next poll is delayed.
const QUICK_ANSWER_MS: u64 = 1_000;

/// This worker's memory for one plugin configuration: what its root context keeps and its
/// requests read (the configuration, the view, metric ids, request counts). It lives in the
/// worker's own VM and is never shared with other workers; what is shared across workers is
/// Envoy's shared data, which the root context reads and writes (see `sync`).
pub struct WorkerState {
    pub(crate) config: FilterConfig,
    pub(crate) view: RefCell<View>,
    pub(crate) metrics: Metrics,
    /// This worker's request counts since the last tick (see [`RequestCounts`]).
    pub(crate) counts: RequestCounts,
}

impl WorkerState {
    /// What requests see before any configuration: no state, so every request gets a 503.
    /// Envoy never sends requests to an unconfigured plugin; a host that did gets answers.
    pub fn unconfigured() -> Self {
        WorkerState {
            config: FilterConfig::unconfigured(),
            view: RefCell::new(View::unknown()),
            metrics: Metrics::default(),
            counts: RequestCounts::default(),
        }
    }
}

struct InFlight {
    token: u32,
    since_ms: u64,
    /// Whether the call carried an `index` (a long-poll). Without one the poller answers at
    /// once by design, so a quick answer then is no sign of a poller that ignores `index`.
    long: bool,
}

/// The root context of one worker.
pub struct Root {
    context_id: u32,
    worker: Option<Rc<WorkerState>>,
    known: Option<Known>,
    in_flight: Option<InFlight>,
    failures: u32,
    next_poll_ms: u64,
    seen_shared_cas: u32,
    /// Whether the last poll succeeded. Only then does the next one carry `index`: after a
    /// failure (a restarted poller may hold the very same version) we ask for an immediate
    /// answer, or the long-poll would wait out `wait` while our state goes stale.
    confirmed: bool,
    /// Whether any poll has succeeded yet. Until then the timer runs fast (the first state is
    /// what turns 503s into redirects) and "no such cluster" is not a failure: Envoy answers
    /// BadArgument while a worker does not know the (health-checked) poller cluster yet.
    synced: bool,
    /// Host time of the last successful `on_configure`.
    configured_ms: u64,
}

impl Root {
    /// A root context that is not configured yet.
    pub fn new(context_id: u32) -> Self {
        Root {
            context_id,
            worker: None,
            known: None,
            in_flight: None,
            failures: 0,
            next_poll_ms: 0,
            seen_shared_cas: 0,
            confirmed: false,
            synced: false,
            configured_ms: 0,
        }
    }

    /// The host's id for this root context.
    pub fn context_id(&self) -> u32 {
        self.context_id
    }

    /// What this root's requests read, once configured.
    pub fn worker_state(&self) -> Option<&Rc<WorkerState>> {
        self.worker.as_ref()
    }

    fn log(&self, level: LogLevel, message: &str) {
        host::log(level, &format!("#{} {message}", self.context_id));
    }

    /// Rebuilds the requests' view from `known` at `now_ms`.
    fn refresh_view(&self, worker: &WorkerState, now_ms: u64) {
        let Some(known) = &self.known else { return };
        let policy = worker.config.policy_for(&known.doc);
        let config = &worker.config;
        let (view, refused) =
            View::of(known, &policy, &config.upstream_server_name, config.max_stale, now_ms);
        if let Some(e) = refused {
            metrics::bump(worker.metrics.refused_targets);
            self.log(
                LogLevel::Error,
                &format!("refusing state version {}: {e}", known.doc.version),
            );
        }
        metrics::set(worker.metrics.state_version, view.version);
        *worker.view.borrow_mut() = view;
    }

    /// Folds a state into what this worker knows; rebuilds the view when it matters.
    fn learn(&mut self, worker: &WorkerState, incoming: Known, now_ms: u64) -> Merge {
        let version = incoming.doc.version;
        let merged = sync::merge(&mut self.known, incoming, worker.config.reset_after());
        match merged {
            Merge::Newer => {
                metrics::bump(worker.metrics.state_updates);
                self.log(LogLevel::Info, &format!("state version {version} applied"));
                self.refresh_view(worker, now_ms);
            }
            Merge::Refreshed => self.refresh_view(worker, now_ms),
            Merge::Ignored => {}
        }
        merged
    }

    /// Reads the sibling-published state when its CAS moved since we last looked.
    fn pick_up_shared(&mut self, worker: &WorkerState, now_ms: u64) {
        match host::shared_get(SHARED_KEY) {
            Ok(Some((bytes, cas))) if cas != self.seen_shared_cas => {
                self.seen_shared_cas = cas;
                if let Some(known) = sync::decode(&bytes) {
                    self.learn(worker, known, now_ms);
                }
            }
            Ok(_) => {}
            Err(e) => self.log(LogLevel::Warn, &format!("cannot read shared data: {e}")),
        }
    }

    /// Publishes what this worker knows when it is newer (or fresher by a second) than what
    /// shared data holds, with a bounded CAS retry.
    fn publish(&mut self) {
        let Some(known) = &self.known else { return };
        let encoded = sync::encode(known);
        for _ in 0..CAS_ATTEMPTS {
            let cas = match host::shared_get(SHARED_KEY) {
                Ok(Some((bytes, cas))) => {
                    if let Some(stored) = sync::decode(&bytes) {
                        let newer = known.doc.version > stored.doc.version;
                        let fresher = known.doc.version == stored.doc.version
                            && known.heard_ms >= stored.heard_ms.saturating_add(1_000);
                        if !newer && !fresher {
                            return;
                        }
                    }
                    cas
                }
                Ok(None) => 0,
                Err(e) => {
                    self.log(LogLevel::Warn, &format!("cannot read shared data: {e}"));
                    return;
                }
            };
            match host::shared_set(SHARED_KEY, &encoded, cas) {
                Ok(()) => return,
                Err(HostError::Status(Status::CasMismatch)) => continue,
                Err(e) => {
                    self.log(LogLevel::Warn, &format!("cannot write shared data: {e}"));
                    return;
                }
            }
        }
        self.log(LogLevel::Debug, "shared data kept changing; a sibling published first");
    }

    /// Starts the next long-poll if none is in flight and the backoff has passed.
    fn poll(&mut self, worker: &WorkerState, now_ms: u64) {
        if self.in_flight.is_some() || now_ms < self.next_poll_ms {
            return;
        }
        let config = &worker.config;
        let index = match (&self.known, self.confirmed) {
            (Some(k), true) => k.doc.version,
            _ => 0,
        };
        let path = format!("{}?index={index}&wait={}s", config.poller_path, config.wait.as_secs());
        let headers: [(&str, &[u8]); 4] = [
            (":method", b"GET"),
            (":path", path.as_bytes()),
            (":authority", config.poller_authority.as_bytes()),
            ("accept", b"application/json"),
        ];
        match host::http_call(&config.poller_cluster, &headers, config.call_timeout()) {
            Ok(token) => {
                self.in_flight = Some(InFlight { token, since_ms: now_ms, long: index != 0 })
            }
            Err(HostError::Status(Status::BadArgument))
                if !self.synced && now_ms < self.configured_ms.saturating_add(CLUSTER_GRACE_MS) =>
            {
                // The worker does not know the cluster yet (Envoy is still starting): try again
                // on the next (fast) tick, without counting or warning. Past the grace period a
                // cluster that still does not exist is a configuration error, and warned about.
                self.log(
                    LogLevel::Debug,
                    &format!("cluster {:?} not known yet; retrying", config.poller_cluster),
                );
            }
            Err(e) => self.poll_failed(
                worker,
                now_ms,
                &format!("cannot call cluster {:?}: {e}", config.poller_cluster),
            ),
        }
    }

    fn poll_failed(&mut self, worker: &WorkerState, now_ms: u64, why: &str) {
        self.confirmed = false;
        self.failures = self.failures.saturating_add(1);
        metrics::bump(worker.metrics.poll_failures);
        let delay =
            sync::backoff(self.failures, worker.config.retry_initial, worker.config.retry_max);
        self.next_poll_ms =
            now_ms.saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        // The first failure of a run is worth a warning; the rest would flood the log.
        let level = if self.failures == 1 { LogLevel::Warn } else { LogLevel::Debug };
        self.log(
            level,
            &format!(
                "poll failed ({} in a row), next in {} ms: {why}",
                self.failures,
                delay.as_millis()
            ),
        );
    }

    /// Reads a poller answer: status 200 and a state document, or why not.
    fn read_answer(num_headers: usize) -> Result<StateDoc, String> {
        if num_headers == 0 {
            return Err("the call failed or timed out".into());
        }
        let status = host::header(MapType::HttpCallResponseHeaders, ":status")
            .map_err(|e| format!("cannot read :status: {e}"))?
            .unwrap_or_default();
        if status != b"200" {
            return Err(format!("poller answered status {}", String::from_utf8_lossy(&status)));
        }
        let body = host::buffer(BufferType::HttpCallResponseBody, MAX_DOC_BYTES + 1)
            .map_err(|e| format!("cannot read the body: {e}"))?;
        StateDoc::parse(&body).map_err(|e| e.to_string())
    }
}

/// The callbacks of a root context (dispatched by `crate::abi`).
impl Root {
    /// An answer (or failure: no headers) to the long-poll `token_id`.
    pub fn on_http_call_response(&mut self, token_id: u32, num_headers: usize) {
        let Some(worker) = self.worker.clone() else { return };
        if self.in_flight.as_ref().map(|f| f.token) != Some(token_id) {
            // An answer to a call we already gave up on: its state may be old news.
            return;
        }
        let (since_ms, long) = self.in_flight.take().map_or((0, false), |f| (f.since_ms, f.long));
        let now = host::now_ms();
        match Self::read_answer(num_headers) {
            Ok(doc) => {
                if self.failures > 0 {
                    self.log(
                        LogLevel::Info,
                        &format!("poller reachable again after {} failures", self.failures),
                    );
                }
                self.failures = 0;
                self.confirmed = true;
                if !self.synced {
                    self.synced = true;
                    if let Err(e) = host::set_tick_period(worker.config.tick) {
                        self.log(
                            LogLevel::Warn,
                            &format!("cannot slow the timer down after the first state: {e}"),
                        );
                    }
                }
                let merged = self.learn(&worker, Known { doc, heard_ms: now }, now);
                if merged != Merge::Ignored {
                    self.publish();
                }
                // A poller that answers a long-poll at once without news (no long-poll support,
                // a lagging replica) must not turn this loop into a busy one: wait a backoff
                // step then. An answer to a poll without `index` is meant to be immediate.
                let quick = long && now.saturating_sub(since_ms) < QUICK_ANSWER_MS;
                self.next_poll_ms = if merged != Merge::Newer && quick {
                    now.saturating_add(
                        u64::try_from(worker.config.retry_initial.as_millis()).unwrap_or(u64::MAX),
                    )
                } else {
                    0
                };
                self.poll(&worker, now);
            }
            Err(why) => self.poll_failed(&worker, now, &why),
        }
    }

    /// Reads and validates the plugin configuration; `false` makes Envoy refuse it.
    pub fn on_configure(&mut self) -> bool {
        let bytes = match host::buffer(BufferType::PluginConfiguration, MAX_CONFIG_BYTES) {
            Ok(b) => b,
            Err(e) => {
                self.log(LogLevel::Error, &format!("cannot read the plugin configuration: {e}"));
                return false;
            }
        };
        let config = match FilterConfig::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                self.log(LogLevel::Critical, &format!("{e}"));
                return false;
            }
        };
        let first_period = if self.synced { config.tick } else { config.tick.min(STARTUP_TICK) };
        if let Err(e) = host::set_tick_period(first_period) {
            self.log(LogLevel::Error, &format!("cannot set the tick period: {e}"));
            return false;
        }
        // Counts of the previous configuration not flushed yet go to the host first.
        if let Some(old) = &self.worker {
            old.counts.flush(&old.metrics);
        }
        let worker = Rc::new(WorkerState {
            config,
            view: RefCell::new(View::unknown()),
            metrics: Metrics::define(),
            counts: RequestCounts::default(),
        });
        let now = host::now_ms();
        self.configured_ms = now;
        // A new configuration may change how a state maps to a Location: rebuild the view.
        self.refresh_view(&worker, now);
        self.pick_up_shared(&worker, now);
        self.in_flight = None;
        self.poll(&worker, now);
        self.worker = Some(worker);
        true
    }

    /// The timer: request counts to the host, stale-state checks, sibling pick-up, next poll.
    pub fn on_tick(&mut self) {
        let Some(worker) = self.worker.clone() else { return };
        worker.counts.flush(&worker.metrics);
        let now = host::now_ms();
        if let Some(f) = &self.in_flight {
            // Envoy always answers a call by its timeout; this guards against a host that does not.
            let limit =
                u64::try_from((worker.config.call_timeout() + Duration::from_secs(5)).as_millis())
                    .unwrap_or(u64::MAX);
            if now.saturating_sub(f.since_ms) > limit {
                self.in_flight = None;
                self.poll_failed(&worker, now, "no answer from the host past the call timeout");
            }
        }
        // Every tick, even while this worker's own poll looks healthy: a long-poll held by a
        // hung poller replica looks healthy until its timeout, while a sibling connected to a
        // live replica already knows better. One shared-data read per tick is cheap.
        self.pick_up_shared(&worker, now);
        if worker.view.borrow().expired(now) {
            self.log(LogLevel::Warn, "state went stale: nothing heard from the poller");
            self.refresh_view(&worker, now);
        }
        if let Some(k) = &self.known {
            metrics::set(worker.metrics.state_age_ms, now.saturating_sub(k.heard_ms));
        }
        self.poll(&worker, now);
    }
}

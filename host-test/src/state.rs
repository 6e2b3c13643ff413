//! Everything the host remembers: per VM (inside the wasmtime `Store`) and per host process
//! (the [`World`] the VMs of one [`crate::Host`] share behind a mutex, like Envoy's workers share
//! one shared-data store, one clock and one stats store).
//!
//! No globals: two hosts in two tests never see each other's state.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::abi::{LogLevel, MetricType, Status};
use crate::pairs::Pair;

/// What the embedder configured on the [`crate::Host`]; frozen into every VM it starts.
#[derive(Clone, Debug)]
pub(crate) struct HostConfig {
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub vm_id: String,
    pub root_id: String,
    pub plugin_name: String,
    /// `None`: every cluster name is accepted.
    pub known_clusters: Option<BTreeSet<String>>,
    pub log_level: LogLevel,
    /// Property overrides, keyed by the NUL-joined path.
    pub properties: BTreeMap<Vec<u8>, Vec<u8>>,
    pub fuel_per_call: u64,
    pub random_seed: u64,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            plugin_config: Vec::new(),
            vm_config: Vec::new(),
            vm_id: String::new(),
            root_id: String::new(),
            plugin_name: "host-test".to_owned(),
            known_clusters: None,
            log_level: LogLevel::Trace,
            properties: BTreeMap::new(),
            fuel_per_call: 10_000_000_000,
            random_seed: 0x5eed,
        }
    }
}

/// The value of one metric as the embedder reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A counter's total.
    Counter(u64),
    /// A gauge's current value.
    Gauge(u64),
    /// Every sample recorded into a histogram, in order.
    Histogram(Vec<u64>),
}

impl Metric {
    /// The counter or gauge value; a histogram's sample count.
    pub fn value(&self) -> u64 {
        match self {
            Metric::Counter(v) | Metric::Gauge(v) => *v,
            Metric::Histogram(samples) => samples.len() as u64,
        }
    }
}

/// One `vm_id`'s shared data: key -> (value, CAS).
type SharedMap = BTreeMap<Vec<u8>, (Vec<u8>, u32)>;

/// Envoy's shared data: one map per `vm_id`; a process-wide CAS counter.
#[derive(Debug)]
pub(crate) struct SharedData {
    next_cas: u32,
    by_vm: BTreeMap<String, SharedMap>,
}

impl Default for SharedData {
    fn default() -> Self {
        SharedData { next_cas: 1, by_vm: BTreeMap::new() }
    }
}

impl SharedData {
    fn next_cas(&mut self) -> u32 {
        let cas = self.next_cas;
        // Envoy skips 0 on wrap-around: 0 means "no CAS" to the guest.
        self.next_cas = self.next_cas.wrapping_add(1).max(1);
        cas
    }

    pub(crate) fn get(&self, vm_id: &str, key: &[u8]) -> Option<(Vec<u8>, u32)> {
        self.by_vm.get(vm_id)?.get(key).cloned()
    }

    /// Envoy's rule: a non-zero CAS must match an existing entry's; a non-zero CAS on a missing
    /// key succeeds (Envoy only compares when the key exists).
    pub(crate) fn set(
        &mut self,
        vm_id: &str,
        key: &[u8],
        value: &[u8],
        cas: u32,
    ) -> Result<u32, Status> {
        if let Some((_, current)) = self.by_vm.get(vm_id).and_then(|m| m.get(key)) {
            if cas != 0 && cas != *current {
                return Err(Status::CasMismatch);
            }
        }
        let new_cas = self.next_cas();
        self.by_vm
            .entry(vm_id.to_owned())
            .or_default()
            .insert(key.to_vec(), (value.to_vec(), new_cas));
        Ok(new_cas)
    }
}

/// One shared queue; `on_queue_ready` goes to the root context that registered it last.
#[derive(Debug)]
pub(crate) struct Queue {
    pub vm_id: String,
    pub name: Vec<u8>,
    pub owner_vm: u32,
    pub owner_context: u32,
    pub items: VecDeque<Vec<u8>>,
}

/// Shared queues and the `on_queue_ready` notifications not yet delivered.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    pub next_id: u32,
    pub by_id: BTreeMap<u32, Queue>,
    /// (vm index, root context id, queue id)
    pub ready: Vec<(u32, u32, u32)>,
}

/// The virtual clock every VM of a host reads.
#[derive(Debug)]
pub(crate) struct Clock {
    pub start_unix_ns: u64,
    pub elapsed: Duration,
}

impl Clock {
    pub(crate) fn realtime_ns(&self) -> u64 {
        let elapsed = u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.start_unix_ns.saturating_add(elapsed)
    }

    pub(crate) fn monotonic_ns(&self) -> u64 {
        u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// State the VMs of one host share, as Envoy's workers share the process.
#[derive(Debug)]
pub(crate) struct World {
    pub clock: Clock,
    pub shared: SharedData,
    pub queues: Queues,
    pub metrics: BTreeMap<String, Metric>,
    pub next_vm_index: u32,
}

impl World {
    pub(crate) fn new(start_unix_ns: u64) -> Self {
        World {
            clock: Clock { start_unix_ns, elapsed: Duration::ZERO },
            shared: SharedData::default(),
            queues: Queues::default(),
            metrics: BTreeMap::new(),
            next_vm_index: 0,
        }
    }
}

pub(crate) type SharedWorld = Arc<Mutex<World>>;

/// One open HTTP stream (request and its response) as the guest sees it.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub request_headers: Vec<Pair>,
    pub request_body: Vec<u8>,
    pub request_trailers: Vec<Pair>,
    pub response_headers: Vec<Pair>,
    pub response_body: Vec<u8>,
    pub response_trailers: Vec<Pair>,
    pub local_response: Option<crate::LocalResponse>,
    pub continued: bool,
    pub closed: bool,
    /// Values set with `proxy_set_property`, keyed by path.
    pub filter_state: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// An http call the guest dispatched and nobody answered yet.
#[derive(Debug, Clone)]
pub(crate) struct PendingCall {
    pub token: u32,
    pub upstream: String,
    pub headers: Vec<Pair>,
    pub body: Vec<u8>,
    pub trailers: Vec<Pair>,
    pub timeout_ms: u32,
    /// Virtual elapsed time at which the call times out; `None` when the timeout is 0.
    pub deadline: Option<Duration>,
}

/// The answer being delivered during `proxy_on_http_call_response`.
#[derive(Debug, Default)]
pub(crate) struct CallResponse {
    pub headers: Vec<Pair>,
    pub body: Vec<u8>,
    pub trailers: Vec<Pair>,
}

/// Everything one VM (one simulated Envoy worker) holds: the `Store`'s data.
pub(crate) struct VmState {
    pub world: SharedWorld,
    pub config: Arc<HostConfig>,
    pub vm_index: u32,
    pub root_context_id: u32,
    pub logs: Vec<(LogLevel, String)>,
    pub tick_period_ms: u32,
    pub next_tick_at: Option<Duration>,
    /// The context the running callback was called for.
    pub active_context: u32,
    /// Set by `proxy_set_effective_context`; cleared before every callback.
    pub effective_context: Option<u32>,
    /// True while the plugin configuration is readable (root creation, vm start, configure).
    pub plugin_config_readable: bool,
    pub streams: BTreeMap<u32, Stream>,
    pub http_calls: BTreeMap<u32, PendingCall>,
    pub next_http_token: u32,
    pub call_response: Option<CallResponse>,
    /// What `proxy_get_status` answers: code and message.
    pub status: (u32, Vec<u8>),
    pub metric_ids: BTreeMap<u32, (String, MetricType)>,
    pub next_metric_seq: u32,
    pub rng: u64,
    pub hostcalls: BTreeMap<&'static str, u64>,
    /// Root or stream contexts whose `proxy_on_done` answered false.
    pub pending_done: BTreeSet<u32>,
}

impl VmState {
    pub(crate) fn new(world: SharedWorld, config: Arc<HostConfig>, vm_index: u32) -> Self {
        let rng =
            config.random_seed ^ (u64::from(vm_index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        VmState {
            world,
            config,
            vm_index,
            root_context_id: 1,
            logs: Vec::new(),
            tick_period_ms: 0,
            next_tick_at: None,
            active_context: 0,
            effective_context: None,
            plugin_config_readable: false,
            streams: BTreeMap::new(),
            http_calls: BTreeMap::new(),
            next_http_token: 1,
            call_response: None,
            status: (0, Vec::new()),
            metric_ids: BTreeMap::new(),
            next_metric_seq: 1,
            rng,
            hostcalls: BTreeMap::new(),
            pending_done: BTreeSet::new(),
        }
    }

    /// The shared world; a poisoned lock (a panic elsewhere) becomes a trap, not a panic here.
    pub(crate) fn world(&self) -> Result<MutexGuard<'_, World>, crate::error::Fault> {
        self.world
            .lock()
            .map_err(|_| crate::error::trap("the state shared between VMs is poisoned"))
    }

    /// The context host calls act on: the effective context if the guest set one.
    pub(crate) fn current_context(&self) -> u32 {
        self.effective_context.unwrap_or(self.active_context)
    }

    /// The stream host calls act on, if the current context is a stream.
    pub(crate) fn current_stream(&self) -> Option<&Stream> {
        self.streams.get(&self.current_context())
    }

    pub(crate) fn current_stream_mut(&mut self) -> Option<&mut Stream> {
        let id = self.current_context();
        self.streams.get_mut(&id)
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        if level >= self.config.log_level {
            self.logs.push((level, message));
        }
    }

    /// splitmix64: deterministic, seeded per host and VM.
    pub(crate) fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_write_gets_a_new_cas_and_a_stale_cas_is_refused() {
        let mut s = SharedData::default();
        let first = s.set("vm", b"k", b"1", 0).unwrap();
        let second = s.set("vm", b"k", b"2", first).unwrap();
        assert_ne!(first, second);
        assert_eq!(s.set("vm", b"k", b"3", first), Err(Status::CasMismatch));
        assert_eq!(s.get("vm", b"k"), Some((b"2".to_vec(), second)));
    }

    #[test]
    fn cas_zero_writes_unconditionally_and_vm_ids_are_separate_stores() {
        let mut s = SharedData::default();
        s.set("a", b"k", b"1", 0).unwrap();
        s.set("a", b"k", b"2", 0).unwrap();
        assert!(s.get("b", b"k").is_none());
        assert_eq!(s.get("a", b"k").map(|(v, _)| v), Some(b"2".to_vec()));
    }

    #[test]
    fn a_nonzero_cas_on_a_missing_key_succeeds_as_in_envoy() {
        let mut s = SharedData::default();
        assert!(s.set("vm", b"new", b"v", 42).is_ok());
    }
}

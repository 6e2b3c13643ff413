//! The embedder's entry point: a [`Host`] is one simulated Envoy process: the compiled module,
//! its configuration, and the shared-data store, clock and stats its workers share. Each worker
//! is a [`Vm`] (vm.rs); what goes in and out of them are plain values (exchange.rs).
//!
//! This module never implements an import and never calls the guest: vm.rs does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Config, Engine, Linker, Module, Store};

use crate::abi::LogLevel;
use crate::error::{HostError, Result};
use crate::state::{HostConfig, Metric, SharedWorld, VmState, World};
use crate::vm::Vm;

/// 2024-01-01T00:00:00Z: where every host's virtual clock starts unless told otherwise.
const DEFAULT_START_UNIX_S: u64 = 1_704_067_200;

/// A compiled filter module and the simulated Envoy process that runs it.
pub struct Host {
    engine: Engine,
    module: Module,
    linker: Linker<VmState>,
    config: HostConfig,
    world: SharedWorld,
}

impl Host {
    /// Loads a `.wasm` (or `.wat`) file.
    pub fn new(wasm_path: impl AsRef<Path>) -> Result<Host> {
        let path = wasm_path.as_ref();
        let bytes = std::fs::read(path)
            .map_err(|source| HostError::Read { path: path.to_owned(), source })?;
        Host::from_bytes(&bytes)
    }

    /// Compiles a module from its binary (or text) form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Host> {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(|e| HostError::Engine(format!("{e:?}")))?;
        let module =
            Module::new(&engine, bytes).map_err(|e| HostError::Compile(format!("{e:?}")))?;
        let mut linker = Linker::new(&engine);
        crate::imports::register_all(&mut linker)
            .map_err(|e| HostError::Engine(format!("{e:?}")))?;
        let start_unix_ns = DEFAULT_START_UNIX_S * 1_000_000_000;
        Ok(Host {
            engine,
            module,
            linker,
            config: HostConfig::default(),
            world: Arc::new(Mutex::new(World::new(start_unix_ns))),
        })
    }

    /// A new simulated Envoy process running the same compiled module, with this host's
    /// configuration and clock start but its own (empty) shared data, stats and clock. Compiling
    /// is the slow part (seconds for a real filter in a debug build); forking costs nothing.
    pub fn fork(&self) -> Host {
        let start_unix_ns = self.world.lock().map(|w| w.clock.start_unix_ns).unwrap_or(0);
        Host {
            engine: self.engine.clone(),
            module: self.module.clone(),
            linker: self.linker.clone(),
            config: self.config.clone(),
            world: Arc::new(Mutex::new(World::new(start_unix_ns))),
        }
    }

    /// The plugin configuration (`proxy_on_configure` reads it).
    pub fn with_plugin_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config.plugin_config = bytes.into();
        self
    }

    /// The VM configuration (`proxy_on_vm_start` reads it).
    pub fn with_vm_config(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.config.vm_config = bytes.into();
        self
    }

    /// The `vm_id`: the shared-data and queue namespace (default empty, as in Envoy).
    pub fn with_vm_id(mut self, vm_id: impl Into<String>) -> Self {
        self.config.vm_id = vm_id.into();
        self
    }

    /// The plugin's `root_id` (property `plugin_root_id`).
    pub fn with_root_id(mut self, root_id: impl Into<String>) -> Self {
        self.config.root_id = root_id.into();
        self
    }

    /// The plugin's name (property `plugin_name`).
    pub fn with_plugin_name(mut self, name: impl Into<String>) -> Self {
        self.config.plugin_name = name.into();
        self
    }

    /// The clusters `proxy_http_call` accepts; any other name is `BadArgument`, as in Envoy.
    /// Without this call every name is accepted.
    pub fn with_known_clusters<I, S>(mut self, clusters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.known_clusters =
            Some(clusters.into_iter().map(Into::into).collect::<BTreeSet<_>>());
        self
    }

    /// The host's log level: `proxy_get_log_level` answers it and lower messages are dropped
    /// (Envoy's default is `Info`; the host's default, `Trace`, keeps everything).
    pub fn with_log_level(mut self, level: LogLevel) -> Self {
        self.config.log_level = level;
        self
    }

    /// Answers `proxy_get_property(path)` with `value`, before any built-in default.
    pub fn with_property(mut self, path: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.config.properties.insert(path.join("\0").into_bytes(), value.into());
        self
    }

    /// The fuel one guest call may burn before it traps (default 10^10).
    pub fn with_fuel_per_call(mut self, fuel: u64) -> Self {
        self.config.fuel_per_call = fuel;
        self
    }

    /// Seeds `random_get` (every VM gets its own stream from this seed).
    pub fn with_random_seed(mut self, seed: u64) -> Self {
        self.config.random_seed = seed;
        self
    }

    /// Where the virtual wall clock starts (default 2024-01-01T00:00:00Z).
    pub fn with_start_time(self, start: SystemTime) -> Self {
        let ns = start.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        if let Ok(mut world) = self.world.lock() {
            world.clock.start_unix_ns = u64::try_from(ns).unwrap_or(u64::MAX);
        }
        self
    }

    /// Starts one VM as Envoy starts a worker's: instantiate, `_initialize`, create the root
    /// context, `proxy_on_vm_start`, then `proxy_on_configure` (skipped, like Envoy, when the
    /// VM start failed). The outcomes are [`Vm::vm_start_result`] and [`Vm::configure_result`].
    pub fn start_vm(&self) -> Result<Vm> {
        let config = Arc::new(self.config.clone());
        let vm_index = {
            let mut world = self.world.lock().map_err(|_| HostError::Poisoned)?;
            world.next_vm_index += 1;
            world.next_vm_index - 1
        };
        let mut store =
            Store::new(&self.engine, VmState::new(self.world.clone(), config.clone(), vm_index));
        store.set_fuel(config.fuel_per_call).map_err(|e| HostError::Engine(format!("{e:?}")))?;
        let instance = self
            .linker
            .instantiate(&mut store, &self.module)
            .map_err(|e| HostError::Instantiate(format!("{e:?}")))?;
        Vm::start(store, instance, self.world.clone(), &config)
    }

    /// Moves the virtual clock forward. Nothing runs until a VM is told to ([`Vm::run_due`]).
    pub fn advance(&self, by: Duration) {
        if let Ok(mut world) = self.world.lock() {
            world.clock.elapsed += by;
        }
    }

    /// How far the virtual clock has moved since the host was created.
    pub fn elapsed(&self) -> Duration {
        self.world.lock().map(|w| w.clock.elapsed).unwrap_or_default()
    }

    /// The virtual wall-clock time.
    pub fn now(&self) -> SystemTime {
        let ns = self.world.lock().map(|w| w.clock.realtime_ns()).unwrap_or(0);
        UNIX_EPOCH + Duration::from_nanos(ns)
    }

    /// Calls `proxy_on_tick` on every VM that set a tick period.
    pub fn tick_all(&self, vms: &mut [Vm]) -> Result<()> {
        for vm in vms {
            vm.tick()?;
        }
        Ok(())
    }

    /// The value and CAS stored under `key` for this host's `vm_id`.
    pub fn shared_data_get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        let world = self.world.lock().ok()?;
        world.shared.get(&self.config.vm_id, key.as_bytes())
    }

    /// Stores `value` under `key` unconditionally, as another plugin of the same `vm_id` would;
    /// returns the new CAS.
    pub fn shared_data_set(&self, key: &str, value: &[u8]) -> Result<u32> {
        let mut world = self.world.lock().map_err(|_| HostError::Poisoned)?;
        world.shared.set(&self.config.vm_id, key.as_bytes(), value, 0).map_err(|status| {
            HostError::Engine(format!("unconditional shared data write refused: {status:?}"))
        })
    }

    /// Every metric the guests defined, by name.
    pub fn metrics(&self) -> BTreeMap<String, Metric> {
        self.world.lock().map(|w| w.metrics.clone()).unwrap_or_default()
    }

    /// One metric's value (a histogram's sample count), if defined.
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.world.lock().ok()?.metrics.get(name).map(Metric::value)
    }

    /// What the module imports, as (module, name).
    pub fn module_imports(&self) -> Vec<(String, String)> {
        self.module.imports().map(|i| (i.module().to_owned(), i.name().to_owned())).collect()
    }

    /// What this host provides, as (module, name): exactly Envoy's set for ABI 0.2.1.
    pub fn provided_imports() -> Vec<(String, String)> {
        crate::imports::ENVOY_IMPORTS
            .iter()
            .map(|(m, n)| ((*m).to_owned(), (*n).to_owned()))
            .collect()
    }
}

//! One simulated Envoy worker ([`Vm`]): a wasm instance with its root context, driven through
//! the guest's exports in Envoy's order (start, configure, ticks, requests, http call answers).
//!
//! It never implements an import (imports/ does) and owns nothing shared between workers
//! (the host's world does).

use std::collections::BTreeMap;
use std::time::Duration;

use wasmtime::{Instance, Store, Val, ValType, WasmParams, WasmResults};

use crate::abi::{Action, LogLevel};
use crate::error::{HostError, Result};
use crate::exchange::{HttpCall, HttpCallResponse, Request, RequestOutcome, UpstreamResponse};
use crate::pairs::Pair;
use crate::state::{CallResponse, HostConfig, SharedWorld, Stream, VmState};

/// One simulated Envoy worker: a wasm instance with its root context.
pub struct Vm {
    store: Store<VmState>,
    instance: Instance,
    world: SharedWorld,
    vm_start_ok: bool,
    configure_ok: bool,
    failed: Option<String>,
    fuel_last_call: u64,
    fuel_total: u64,
    next_context_id: u32,
}

impl Vm {
    /// Wraps a fresh instance and starts it as Envoy starts a worker (see [`crate::Host::start_vm`]).
    pub(crate) fn start(
        store: Store<VmState>,
        instance: Instance,
        world: SharedWorld,
        config: &HostConfig,
    ) -> Result<Vm> {
        let mut vm = Vm {
            store,
            instance,
            world,
            vm_start_ok: false,
            configure_ok: false,
            failed: None,
            fuel_last_call: 0,
            fuel_total: 0,
            next_context_id: 2,
        };
        vm.run_start(config)?;
        Ok(vm)
    }

    fn run_start(&mut self, config: &HostConfig) -> Result<()> {
        // Envoy's startVm: `_initialize`, else `_start`, else `__wasm_call_ctors`.
        for init in ["_initialize", "_start", "__wasm_call_ctors"] {
            if self.has_export(init) {
                self.call::<(), ()>(init, ())?;
                break;
            }
        }
        let root = self.store.data().root_context_id;
        self.store.data_mut().plugin_config_readable = true;
        let started = self.start_root(root, config);
        self.store.data_mut().plugin_config_readable = false;
        started
    }

    fn start_root(&mut self, root: u32, config: &HostConfig) -> Result<()> {
        self.store.data_mut().active_context = root;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (root as i32, 0))?;
        let vm_config_len = len_i32(config.vm_config.len());
        self.vm_start_ok = self
            .call::<(i32, i32), i32>("proxy_on_vm_start", (root as i32, vm_config_len))?
            .is_none_or(|ok| ok != 0);
        if self.vm_start_ok {
            let plugin_config_len = len_i32(config.plugin_config.len());
            self.configure_ok = self
                .call::<(i32, i32), i32>("proxy_on_configure", (root as i32, plugin_config_len))?
                .is_none_or(|ok| ok != 0);
        }
        Ok(())
    }

    /// Whether `proxy_on_vm_start` answered true (Envoy refuses the VM otherwise).
    pub fn vm_start_result(&self) -> bool {
        self.vm_start_ok
    }

    /// Whether `proxy_on_configure` answered true (Envoy rejects the configuration otherwise).
    pub fn configure_result(&self) -> bool {
        self.configure_ok
    }

    /// The root context's id.
    pub fn root_context_id(&self) -> u32 {
        self.store.data().root_context_id
    }

    /// The tick period the guest set, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        let ms = self.store.data().tick_period_ms;
        (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
    }

    /// Calls `proxy_on_tick` now if the guest set a tick period; returns whether it did. The
    /// next tick is then due one period from now.
    pub fn tick(&mut self) -> Result<bool> {
        let Some(period) = self.tick_period() else {
            return Ok(false);
        };
        let now = self.elapsed()?;
        self.store.data_mut().next_tick_at = Some(now + period);
        let root = self.root_context_id();
        self.store.data_mut().active_context = root;
        self.call::<i32, ()>("proxy_on_tick", root as i32)?;
        Ok(true)
    }

    /// Runs what the virtual clock made due, in time order: http calls past their timeout fail
    /// (`num_headers == 0`, as Envoy reports a timeout), the tick fires once if its time has come
    /// (missed periods collapse into one, like Envoy's re-armed timer), and `proxy_on_queue_ready`
    /// is delivered for items enqueued to this VM's queues. Returns how many callbacks ran.
    pub fn run_due(&mut self) -> Result<u32> {
        let now = self.elapsed()?;
        let mut ran = 0;
        let mut expired: Vec<(Duration, u32)> = self
            .store
            .data()
            .http_calls
            .values()
            .filter_map(|c| c.deadline.filter(|d| *d <= now).map(|d| (d, c.token)))
            .collect();
        expired.sort();
        for (_, token) in expired {
            self.fail_http_call(token)?;
            ran += 1;
        }
        if self.store.data().next_tick_at.is_some_and(|due| due <= now) && self.tick()? {
            ran += 1;
        }
        ran += self.deliver_queue_notifications()?;
        Ok(ran)
    }

    fn deliver_queue_notifications(&mut self) -> Result<u32> {
        let index = self.store.data().vm_index;
        let mine: Vec<(u32, u32, u32)> = {
            let mut world = self.world.lock().map_err(|_| HostError::Poisoned)?;
            let (mine, others) = world.queues.ready.drain(..).partition(|(vm, _, _)| *vm == index);
            world.queues.ready = others;
            mine
        };
        let mut ran = 0;
        for (_, context, queue) in mine {
            self.store.data_mut().active_context = context;
            self.call::<(i32, i32), ()>("proxy_on_queue_ready", (context as i32, queue as i32))?;
            ran += 1;
        }
        Ok(ran)
    }

    /// The http calls waiting for an answer, oldest first.
    pub fn pending_http_calls(&self) -> Vec<HttpCall> {
        self.store
            .data()
            .http_calls
            .values()
            .map(|c| HttpCall {
                token: c.token,
                upstream: c.upstream.clone(),
                headers: strings(&c.headers),
                body: c.body.clone(),
                trailers: strings(&c.trailers),
                timeout_ms: c.timeout_ms,
            })
            .collect()
    }

    /// Delivers an answer to the call `token` (in any order relative to other calls).
    pub fn respond_http_call(&mut self, token: u32, response: HttpCallResponse) -> Result<()> {
        let mut headers = vec![(b":status".to_vec(), response.status.to_string().into_bytes())];
        headers.extend(
            response
                .headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v.into_bytes())),
        );
        let answer = CallResponse { headers, body: response.body, trailers: Vec::new() };
        self.deliver_call(token, Some(answer))
    }

    /// Fails the call `token` as a reset or timeout does: `num_headers == 0`, no body.
    pub fn fail_http_call(&mut self, token: u32) -> Result<()> {
        self.deliver_call(token, None)
    }

    fn deliver_call(&mut self, token: u32, answer: Option<CallResponse>) -> Result<()> {
        if self.store.data_mut().http_calls.remove(&token).is_none() {
            return Err(HostError::UnknownHttpCall(token));
        }
        let (headers, body, trailers) = answer
            .as_ref()
            .map(|a| (a.headers.len(), a.body.len(), a.trailers.len()))
            .unwrap_or((0, 0, 0));
        let root = self.root_context_id();
        let state = self.store.data_mut();
        state.status = match &answer {
            Some(_) => (0, Vec::new()),
            // What Envoy's `onHttpCallFailure` leaves for `proxy_get_status`.
            None => (crate::abi::Status::BrokenConnection as u32, b"reset".to_vec()),
        };
        state.call_response = answer;
        state.active_context = root;
        let result = self.call::<(i32, i32, i32, i32, i32), ()>(
            "proxy_on_http_call_response",
            (root as i32, token as i32, len_i32(headers), len_i32(body), len_i32(trailers)),
        );
        self.store.data_mut().call_response = None;
        result.map(|_| ())
    }

    /// Sends a body-less request with these headers through the filter.
    pub fn send_request(&mut self, headers: &[(&str, &str)]) -> Result<RequestOutcome> {
        self.send(Request::new(headers))
    }

    /// Like [`Vm::send_request`] with header values as raw bytes.
    pub fn send_request_bytes(&mut self, headers: &[(&str, &[u8])]) -> Result<RequestOutcome> {
        self.send(Request {
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect(),
            ..Request::default()
        })
    }

    /// Runs a request through the stream callbacks: context creation, request headers, then the
    /// body and trailers if the filter let the headers through. A request the filter answered or
    /// let through is finished at once (`proxy_on_done`, `proxy_on_log`, `proxy_on_delete`); a
    /// paused one stays open.
    pub fn send(&mut self, request: Request) -> Result<RequestOutcome> {
        self.send_inner(request, None)
    }

    /// Like [`Vm::send`], and when the filter lets the request go upstream, feeds `response` to
    /// the response callbacks as Envoy does with the upstream's answer:
    /// `proxy_on_response_headers`, then the body and trailers while the filter continues. The
    /// outcome carries the response as the filter left it. A request the filter answered
    /// itself gets no response callbacks here.
    pub fn send_with_response(
        &mut self,
        request: Request,
        response: UpstreamResponse,
    ) -> Result<RequestOutcome> {
        self.send_inner(request, Some(response))
    }

    fn send_inner(
        &mut self,
        request: Request,
        response: Option<UpstreamResponse>,
    ) -> Result<RequestOutcome> {
        let fuel_before = self.fuel_total;
        let calls_before = self.hostcall_total();
        let id = self.next_context_id;
        self.next_context_id += 1;
        let root = self.root_context_id();
        let to_pairs = |items: Vec<(String, Vec<u8>)>| -> Vec<Pair> {
            items.into_iter().map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v)).collect()
        };
        let header_count = request.headers.len();
        let stream = Stream {
            request_headers: to_pairs(request.headers),
            request_body: request.body.clone().unwrap_or_default(),
            request_trailers: to_pairs(request.trailers.clone()),
            ..Stream::default()
        };
        let state = self.store.data_mut();
        state.streams.insert(id, stream);
        state.active_context = id;
        self.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, root as i32))?;
        let end_of_stream = request.body.is_none() && request.trailers.is_empty();
        let mut action = self
            .call::<(i32, i32, i32), i32>(
                "proxy_on_request_headers",
                (id as i32, len_i32(header_count), i32::from(end_of_stream)),
            )?
            .map_or(Action::Continue, Action::from_raw);
        if action == Action::Continue && !self.answered(id) {
            if let Some(body) = &request.body {
                let end = request.trailers.is_empty();
                action = self
                    .call::<(i32, i32, i32), i32>(
                        "proxy_on_request_body",
                        (id as i32, len_i32(body.len()), i32::from(end)),
                    )?
                    .map_or(Action::Continue, Action::from_raw);
            }
        }
        if action == Action::Continue && !self.answered(id) && !request.trailers.is_empty() {
            action = self
                .call::<(i32, i32), i32>(
                    "proxy_on_request_trailers",
                    (id as i32, len_i32(request.trailers.len())),
                )?
                .map_or(Action::Continue, Action::from_raw);
        }
        if let Some(response) =
            response.filter(|_| action == Action::Continue && !self.answered(id))
        {
            action = self.respond_upstream(id, response)?;
        }
        let open = action != Action::Continue && !self.answered(id);
        let mut outcome = self.outcome(id, action, open)?;
        if !open {
            self.finish(id)?;
        }
        outcome.fuel = self.fuel_total - fuel_before;
        outcome.hostcalls = self.hostcall_total() - calls_before;
        Ok(outcome)
    }

    /// Runs the response callbacks of stream `id` on `response`; answers the last action.
    fn respond_upstream(&mut self, id: u32, response: UpstreamResponse) -> Result<Action> {
        let mut headers = vec![(b":status".to_vec(), response.status.to_string().into_bytes())];
        headers.extend(
            response.headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v)),
        );
        let trailers: Vec<Pair> = response
            .trailers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase().into_bytes(), v))
            .collect();
        let header_count = headers.len();
        let trailer_count = trailers.len();
        let end_of_stream = response.body.is_none() && trailer_count == 0;
        let state = self.store.data_mut();
        state.active_context = id;
        if let Some(stream) = state.streams.get_mut(&id) {
            stream.response_headers = headers;
            stream.response_body = response.body.clone().unwrap_or_default();
            stream.response_trailers = trailers;
        }
        let mut action = self
            .call::<(i32, i32, i32), i32>(
                "proxy_on_response_headers",
                (id as i32, len_i32(header_count), i32::from(end_of_stream)),
            )?
            .map_or(Action::Continue, Action::from_raw);
        if action == Action::Continue && !self.answered(id) {
            if let Some(body) = &response.body {
                action = self
                    .call::<(i32, i32, i32), i32>(
                        "proxy_on_response_body",
                        (id as i32, len_i32(body.len()), i32::from(trailer_count == 0)),
                    )?
                    .map_or(Action::Continue, Action::from_raw);
            }
        }
        if action == Action::Continue && !self.answered(id) && trailer_count > 0 {
            action = self
                .call::<(i32, i32), i32>(
                    "proxy_on_response_trailers",
                    (id as i32, len_i32(trailer_count)),
                )?
                .map_or(Action::Continue, Action::from_raw);
        }
        Ok(action)
    }

    /// Finishes a request the filter paused: reports what the guest did since (a local response,
    /// `proxy_continue_stream`) and runs `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish_request(&mut self, context_id: u32) -> Result<RequestOutcome> {
        let fuel_before = self.fuel_total;
        let calls_before = self.hostcall_total();
        if !self.store.data().streams.contains_key(&context_id) {
            return Err(HostError::UnknownRequest(context_id));
        }
        let mut outcome = self.outcome(context_id, Action::Pause, false)?;
        self.finish(context_id)?;
        outcome.fuel = self.fuel_total - fuel_before;
        outcome.hostcalls = self.hostcall_total() - calls_before;
        Ok(outcome)
    }

    fn answered(&self, id: u32) -> bool {
        self.store.data().streams.get(&id).is_some_and(|s| s.local_response.is_some() || s.closed)
    }

    fn outcome(&self, id: u32, action: Action, open: bool) -> Result<RequestOutcome> {
        let stream = self.store.data().streams.get(&id).ok_or(HostError::UnknownRequest(id))?;
        Ok(RequestOutcome {
            context_id: id,
            action,
            local_response: stream.local_response.clone(),
            open,
            continued: stream.continued,
            request_headers: stream
                .request_headers
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                .collect(),
            response_headers: stream
                .response_headers
                .iter()
                .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.clone()))
                .collect(),
            response_body: stream.response_body.clone(),
            fuel: 0,
            hostcalls: 0,
        })
    }

    /// The spec's end of a context: `proxy_on_done`; if it answers true, `proxy_on_log` and
    /// `proxy_on_delete`; otherwise the context waits for `proxy_done`.
    fn finish(&mut self, id: u32) -> Result<()> {
        self.store.data_mut().active_context = id;
        let done = self.call::<i32, i32>("proxy_on_done", id as i32)?.is_none_or(|d| d != 0);
        if done {
            self.call::<i32, ()>("proxy_on_log", id as i32)?;
            self.call::<i32, ()>("proxy_on_delete", id as i32)?;
            self.store.data_mut().streams.remove(&id);
        } else {
            self.store.data_mut().pending_done.insert(id);
        }
        Ok(())
    }

    /// Every log line so far: `proxy_log` and stdout (info) / stderr (error).
    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.store.data().logs.clone()
    }

    /// Takes the log lines, leaving none.
    pub fn take_logs(&mut self) -> Vec<(LogLevel, String)> {
        std::mem::take(&mut self.store.data_mut().logs)
    }

    /// Fuel the last guest call burned (host calls into the guest's allocator included).
    pub fn fuel_used_last_call(&self) -> u64 {
        self.fuel_last_call
    }

    /// Fuel burned since the VM was created.
    pub fn fuel_used_total(&self) -> u64 {
        self.fuel_total
    }

    /// How many times the guest called each import.
    pub fn hostcall_counts(&self) -> BTreeMap<String, u64> {
        self.store.data().hostcalls.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    fn hostcall_total(&self) -> u64 {
        self.store.data().hostcalls.values().sum()
    }

    /// Calls any export taking and returning `i32`s, in the context `context_id` (the root
    /// context when `None`), with the same fuel metering and trap handling as the callbacks.
    /// Meant for testing at the ABI level (hand-written modules calling host functions).
    pub fn call_export(
        &mut self,
        context_id: Option<u32>,
        name: &str,
        args: &[i32],
    ) -> Result<Vec<i32>> {
        let func = self
            .instance
            .get_func(&mut self.store, name)
            .ok_or_else(|| HostError::MissingExport(name.to_owned()))?;
        let ty = func.ty(&self.store);
        let all_i32 = ty.params().chain(ty.results()).all(|t| matches!(t, ValType::I32));
        if !all_i32 || ty.params().len() != args.len() {
            return Err(HostError::BadExport {
                name: name.to_owned(),
                reason: format!("it is {ty:?}, called with {} i32 arguments", args.len()),
            });
        }
        let params: Vec<Val> = args.iter().map(|a| Val::I32(*a)).collect();
        let mut results = vec![Val::I32(0); ty.results().len()];
        let context = context_id.unwrap_or_else(|| self.root_context_id());
        if context != self.root_context_id() && !self.store.data().streams.contains_key(&context) {
            return Err(HostError::UnknownRequest(context));
        }
        self.store.data_mut().active_context = context;
        self.metered(name, |store| func.call(store, &params, &mut results))?;
        Ok(results.iter().filter_map(Val::i32).collect())
    }

    /// Copies `len` bytes out of the guest's memory; `None` when out of bounds.
    pub fn read_guest_memory(&mut self, ptr: u32, len: u32) -> Option<Vec<u8>> {
        let memory = self.instance.get_memory(&mut self.store, "memory")?;
        let start = ptr as usize;
        let end = start.checked_add(len as usize)?;
        memory.data(&self.store).get(start..end).map(<[u8]>::to_vec)
    }

    /// Writes bytes into the guest's memory; false when out of bounds.
    pub fn write_guest_memory(&mut self, ptr: u32, bytes: &[u8]) -> bool {
        let Some(memory) = self.instance.get_memory(&mut self.store, "memory") else {
            return false;
        };
        let start = ptr as usize;
        let Some(end) = start.checked_add(bytes.len()) else {
            return false;
        };
        match memory.data_mut(&mut self.store).get_mut(start..end) {
            Some(target) => {
                target.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Whether an earlier trap failed this VM.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    fn elapsed(&self) -> Result<Duration> {
        Ok(self.world.lock().map_err(|_| HostError::Poisoned)?.clock.elapsed)
    }

    fn has_export(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    /// Calls an export if the module has it (`Ok(None)` otherwise: every callback is optional).
    fn call<P: WasmParams, R: WasmResults>(&mut self, name: &str, params: P) -> Result<Option<R>> {
        if let Some(reason) = &self.failed {
            return Err(HostError::VmFailed(reason.clone()));
        }
        let Some(func) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let typed = func
            .typed::<P, R>(&self.store)
            .map_err(|e| HostError::BadExport { name: name.to_owned(), reason: format!("{e}") })?;
        self.metered(name, |store| typed.call(store, params)).map(Some)
    }

    /// Runs one guest call with a fresh fuel budget, records the fuel it burned, and turns a trap
    /// into an error carrying the backtrace and the guest's last error output; a trap fails the VM.
    fn metered<T>(
        &mut self,
        name: &str,
        run: impl FnOnce(&mut Store<VmState>) -> wasmtime::Result<T>,
    ) -> Result<T> {
        if let Some(reason) = &self.failed {
            return Err(HostError::VmFailed(reason.clone()));
        }
        let budget = self.store.data().config.fuel_per_call;
        self.store.set_fuel(budget).map_err(|e| HostError::Engine(format!("{e:?}")))?;
        self.store.data_mut().effective_context = None;
        let logs_before = self.store.data().logs.len();
        let result = run(&mut self.store);
        self.store.data_mut().effective_context = None;
        let left = self.store.get_fuel().unwrap_or(0);
        self.fuel_last_call = budget.saturating_sub(left);
        self.fuel_total += self.fuel_last_call;
        result.map_err(|error| {
            let mut details = format!("{error:?}");
            let stderr: Vec<&str> = self.store.data().logs[logs_before..]
                .iter()
                .filter(|(level, _)| *level >= LogLevel::Error)
                .map(|(_, line)| line.as_str())
                .collect();
            if !stderr.is_empty() {
                details.push_str("\nguest error output before the trap:\n");
                details.push_str(&stderr.join("\n"));
            }
            self.failed = Some(format!("trapped in {name}"));
            HostError::Trap { function: name.to_owned(), details }
        })
    }
}

fn strings(pairs: &[Pair]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())
        })
        .collect()
}

/// Sizes handed to the guest are wasm32 `usize`s.
fn len_i32(n: usize) -> i32 {
    u32::try_from(n).unwrap_or(u32::MAX) as i32
}

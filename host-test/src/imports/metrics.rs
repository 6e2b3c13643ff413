//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric`.
//!
//! Semantics are Envoy's `Context::*Metric`: ids carry the type in their low two bits; counters
//! only grow (an increment <= 0 is `BadArgument`, a record adds); gauges are set, added to and
//! subtracted from; histograms record samples and cannot be read back (`BadArgument`). Values
//! live in the host's shared registry by name, so every VM adds to the same stat, as Envoy's
//! workers do.

use wasmtime::Linker;

use super::host_fn;
use crate::abi::{MetricType, Status};
use crate::error::HostResult;
use crate::memory::{read, write_u32, write_u64};
use crate::state::{Metric, VmState};

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(
        linker,
        "env",
        "proxy_define_metric",
        |c, kind: i32, name_ptr: i32, name_len: i32, id_ptr: i32| {
            let kind = MetricType::from_raw(kind).ok_or(Status::BadArgument)?;
            let name = String::from_utf8_lossy(&read(c, name_ptr, name_len)?).into_owned();
            crate::memory::check(c, id_ptr, 4)?;
            let id = define(c.data_mut(), kind, name)?;
            write_u32(c, id_ptr, id)
        }
    );
    host_fn!(linker, "env", "proxy_increment_metric", |c, id: i32, offset: i64| {
        increment(c.data(), id as u32, offset)
    });
    host_fn!(linker, "env", "proxy_record_metric", |c, id: i32, value: i64| {
        record(c.data(), id as u32, value as u64)
    });
    host_fn!(linker, "env", "proxy_get_metric", |c, id: i32, value_ptr: i32| {
        let value = get(c.data(), id as u32)?;
        write_u64(c, value_ptr, value)
    });
    Ok(())
}

fn define(state: &mut VmState, kind: MetricType, name: String) -> HostResult<u32> {
    let id = (state.next_metric_seq << 2) | kind.raw();
    state.next_metric_seq += 1;
    state.world()?.metrics.entry(name.clone()).or_insert_with(|| match kind {
        MetricType::Counter => Metric::Counter(0),
        MetricType::Gauge => Metric::Gauge(0),
        MetricType::Histogram => Metric::Histogram(Vec::new()),
    });
    state.metric_ids.insert(id, (name, kind));
    Ok(id)
}

/// Runs `f` on the metric behind `id`; an unknown id is `NotFound`.
fn with_metric<T>(
    state: &VmState,
    id: u32,
    f: impl FnOnce(&mut Metric) -> HostResult<T>,
) -> HostResult<T> {
    let (name, _) = state.metric_ids.get(&id).ok_or(Status::NotFound)?;
    let mut world = state.world()?;
    let metric = world.metrics.get_mut(name).ok_or(Status::NotFound)?;
    f(metric)
}

/// The type an id claims in its low bits; 3 is no type at all.
fn claimed_type(id: u32) -> Option<MetricType> {
    MetricType::from_raw((id & 3) as i32)
}

fn increment(state: &VmState, id: u32, offset: i64) -> HostResult {
    match claimed_type(id) {
        Some(MetricType::Counter) | Some(MetricType::Gauge) => {}
        _ => return Err(Status::BadArgument.into()),
    }
    with_metric(state, id, |metric| match metric {
        Metric::Counter(value) if offset > 0 => {
            *value = value.saturating_add(offset as u64);
            Ok(())
        }
        Metric::Counter(_) => Err(Status::BadArgument.into()),
        Metric::Gauge(value) => {
            *value = if offset > 0 {
                value.saturating_add(offset as u64)
            } else {
                value.saturating_sub(offset.unsigned_abs())
            };
            Ok(())
        }
        Metric::Histogram(_) => Err(Status::BadArgument.into()),
    })
}

fn record(state: &VmState, id: u32, value: u64) -> HostResult {
    with_metric(state, id, |metric| {
        match metric {
            Metric::Counter(total) => *total = total.saturating_add(value),
            Metric::Gauge(current) => *current = value,
            Metric::Histogram(samples) => samples.push(value),
        }
        Ok(())
    })
}

fn get(state: &VmState, id: u32) -> HostResult<u64> {
    if claimed_type(id) == Some(MetricType::Histogram) || claimed_type(id).is_none() {
        return Err(Status::BadArgument.into());
    }
    with_metric(state, id, |metric| match metric {
        Metric::Counter(value) | Metric::Gauge(value) => Ok(*value),
        Metric::Histogram(_) => Err(Status::BadArgument.into()),
    })
}

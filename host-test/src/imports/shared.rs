//! Shared data and shared queues: `proxy_get/set_shared_data`,
//! `proxy_register/resolve/enqueue/dequeue_shared_queue`.
//!
//! Both live in the host's [`crate::state::World`], so every VM of a host sees them, keyed by
//! `vm_id` as in Envoy. The world lock is never held while the guest runs (its allocator).

use wasmtime::{Caller, Linker};

use super::host_fn;
use crate::abi::Status;
use crate::error::HostResult;
use crate::memory::{read, return_bytes, write_u32};
use crate::state::{Queue, VmState};

pub(crate) fn register(linker: &mut Linker<VmState>) -> wasmtime::Result<()> {
    host_fn!(
        linker,
        "env",
        "proxy_get_shared_data",
        |c, key_ptr: i32, key_len: i32, ptr_ptr: i32, size_ptr: i32, cas_ptr: i32| {
            get(c, key_ptr, key_len, ptr_ptr, size_ptr, cas_ptr)
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_set_shared_data",
        |c, key_ptr: i32, key_len: i32, value_ptr: i32, value_len: i32, cas: i32| {
            let key = read(c, key_ptr, key_len)?;
            let value = read(c, value_ptr, value_len)?;
            let vm_id = c.data().config.vm_id.clone();
            c.data().world()?.shared.set(&vm_id, &key, &value, cas as u32)?;
            Ok(())
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_register_shared_queue",
        |c, name_ptr: i32, name_len: i32, id_ptr: i32| {
            let name = read(c, name_ptr, name_len)?;
            let id = register_queue(c.data(), name)?;
            write_u32(c, id_ptr, id)
        }
    );
    host_fn!(
        linker,
        "env",
        "proxy_resolve_shared_queue",
        |c, vm_ptr: i32, vm_len: i32, name_ptr: i32, name_len: i32, id_ptr: i32| {
            let vm_id = read(c, vm_ptr, vm_len)?;
            let name = read(c, name_ptr, name_len)?;
            let vm_id = String::from_utf8_lossy(&vm_id).into_owned();
            let id = c
                .data()
                .world()?
                .queues
                .by_id
                .iter()
                .find(|(_, q)| q.vm_id == vm_id && q.name == name)
                .map(|(id, _)| *id)
                .ok_or(Status::NotFound)?;
            write_u32(c, id_ptr, id)
        }
    );
    host_fn!(linker, "env", "proxy_enqueue_shared_queue", |c, id: i32, ptr: i32, len: i32| {
        let value = read(c, ptr, len)?;
        let mut world = c.data().world()?;
        let queue = world.queues.by_id.get_mut(&(id as u32)).ok_or(Status::NotFound)?;
        queue.items.push_back(value);
        let notice = (queue.owner_vm, queue.owner_context, id as u32);
        world.queues.ready.push(notice);
        Ok(())
    });
    host_fn!(
        linker,
        "env",
        "proxy_dequeue_shared_queue",
        |c, id: i32, ptr_ptr: i32, size_ptr: i32| {
            let item = {
                let mut world = c.data().world()?;
                let queue = world.queues.by_id.get_mut(&(id as u32)).ok_or(Status::NotFound)?;
                queue.items.pop_front().ok_or(Status::Empty)?
            };
            return_bytes(c, &item, ptr_ptr, size_ptr)
        }
    );
    Ok(())
}

fn get(
    c: &mut Caller<'_, VmState>,
    key_ptr: i32,
    key_len: i32,
    ptr_ptr: i32,
    size_ptr: i32,
    cas_ptr: i32,
) -> HostResult {
    let key = read(c, key_ptr, key_len)?;
    let found = {
        let state = c.data();
        let world = state.world()?;
        world.shared.get(&state.config.vm_id, &key)
    };
    let (value, cas) = found.ok_or(Status::NotFound)?;
    crate::memory::check(c, cas_ptr, 4)?;
    return_bytes(c, &value, ptr_ptr, size_ptr)?;
    write_u32(c, cas_ptr, cas)
}

/// Opens the queue (vm_id, name), creating it if needed; the caller's root context becomes the
/// one `proxy_on_queue_ready` is delivered to.
fn register_queue(state: &VmState, name: Vec<u8>) -> HostResult<u32> {
    let (vm_id, owner_vm, owner_context) =
        (state.config.vm_id.clone(), state.vm_index, state.root_context_id);
    let mut world = state.world()?;
    let queues = &mut world.queues;
    if let Some((id, queue)) =
        queues.by_id.iter_mut().find(|(_, q)| q.vm_id == vm_id && q.name == name)
    {
        queue.owner_vm = owner_vm;
        queue.owner_context = owner_context;
        return Ok(*id);
    }
    queues.next_id += 1;
    let id = queues.next_id;
    queues
        .by_id
        .insert(id, Queue { vm_id, name, owner_vm, owner_context, items: Default::default() });
    Ok(id)
}

//! The documents the poller serves besides `/v1/active`, as pure code (no HTTP, no I/O):
//! `health` (`/health`), `status` (`/v1/status`, the status page's and `status`'s facts),
//! `readiness` (`/readyz`) and `catch_up` (the version step that keeps replicas comparable).
//! Handlers in `http` serve them; they only read a snapshot.

pub mod catch_up;
pub mod health;
pub mod readiness;
pub mod status;

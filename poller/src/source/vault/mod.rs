//! The `vault` source: the active node as Vault itself says it, from every node's
//! `GET /v1/sys/health` probed at once on a fixed interval, with `GET /v1/sys/leader` for the
//! active node's `api_addr` (the `Location` Vault's own standbys redirect to), for the Raft
//! index versions are built from, and, while no node answers 200, for what the standbys know.
//!
//! - `health`: one node's answers, classified (pure).
//! - `decide`: the round's verdict and its index (pure).
//! - `client`: the HTTP probes, TLS from Vault's own environment names.
//! - `round`: one probe round over every node at once.
//! - `settings`: the flags and their checks.
//!
//! It never redirects to a node whose `sys/health` did not answer 200 within the probe
//! timeout, and it never talks to Vault but through `sys/health` and `sys/leader`
//! (unauthenticated, no token ever sent).

pub mod client;
pub mod decide;
pub mod health;
pub mod round;
pub mod settings;

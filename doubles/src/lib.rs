//! Test doubles for the systems vault-redirect talks to, each following the upstream
//! documented HTTP API (shapes, headers, status codes, blocking semantics) rather than what
//! our own code happens to expect. A double that drifts from the real API is a bug.
//!
//! This crate is for tests only: it may bind sockets and spawn tasks, but it must never be a
//! dependency of a shipped binary.
//!
//! - [`consul`]: Consul's `GET /v1/health/service/<name>` with blocking queries, ACL tokens,
//!   and fault injection, populated the way Vault's Consul service registration writes it.
//! - [`vault`]: Vault HA nodes on their own loopback addresses: `sys/health`, `sys/leader`,
//!   KV v2 behind `X-Vault-Token`, standby forwarding, and a record of every request received.
//! - [`kubernetes`]: the Kubernetes API's pod list and watch (chunked JSON lines, bookmarks,
//!   410 Gone, bearer tokens, RBAC refusals) over TLS, with the labels Vault's Kubernetes
//!   service registration puts on its pods, and the faults a watcher must survive.
//! - [`pki`]: a throw-away CA (with an optional intermediate) and a leaf for the names a
//!   TLS test serves.

pub mod consul;
mod go_duration;
pub mod kubernetes;
pub mod pki;
mod serve;
mod tls;
pub mod vault;

pub use consul::{three_nodes, ConsulDouble, Fault, Role, VaultNode};
pub use kubernetes::{three_pods, write_service_account, Flavor, KubeApiDouble, VaultPod};
pub use pki::{Pki, PkiSpec};
pub use vault::{Received, VaultCluster};

//! The Kubernetes source: Vault's pods and the labels its Kubernetes service registration
//! patches on them (`vault-active`, `vault-sealed`, ...; `openbao-` for OpenBao), watched
//! through the API server, as the source of truth for the active node.
//!
//! It owns the source's flags (`flags`), the connection to the API server (`cluster`), the
//! list-and-watch loop (`source`), the pure choice of the active pod (`pods`) and the
//! versions of the states it learns (below). It must never compare resource versions for
//! order: they are opaque strings, good only for equality and for resuming a watch.
//!
//! ## Versions
//!
//! A state learned from Kubernetes gets `max(previous + 1, observed_unix_ms << 16)`
//! (`StateDoc::next_version` with the observation time in the index's place): the high 48
//! bits are the wall-clock millisecond at which this replica applied the change, the low 16
//! bits count its own local events within one millisecond or after a clock step back.
//! - Never backwards: within a process by the `previous + 1` floor; across a restart because
//!   the clock has moved on by the restart's length (a clock stepped back by more than that
//!   is the one case left; filters then take the lower version after their reset period).
//! - Comparable across replicas: replicas watching the same API server see the same change
//!   within milliseconds of each other, so any change that comes after another by more than
//!   the replicas' clock skew plus their watch lag (milliseconds with NTP; failovers are
//!   seconds apart) gets a higher version on every replica. Two replicas give the same data
//!   slightly different versions; a filter takes whichever is newer, same content.
//! - Not from `resourceVersion`: it is an etcd revision in practice, but opaque by contract
//!   (and may differ between API servers' caches). Nor from pod timestamps: `managedFields`
//!   times have second precision, too coarse for the label patches of one failover.
//! - So a replica must not step its version up to a filter's (the Consul source's Lamport
//!   step): a higher time on another replica does not mean this replica has seen that data.

pub mod cluster;
pub mod flags;
pub mod pods;
pub mod source;

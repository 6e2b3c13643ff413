//! Which source of truth the poller runs (`--source`), and the words each one's states use.

use serde::{Deserialize, Serialize};

/// A source of truth for the active node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Consul's health view of the Vault service (Vault's service registration).
    #[default]
    Consul,
    /// Vault's own `sys/health` on every node, with `sys/leader` (`source/vault/`).
    Vault,
    /// The Vault pods' labels in Kubernetes.
    Kubernetes,
}

impl SourceKind {
    /// The name in flags, metrics labels and documents.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Consul => "consul",
            SourceKind::Vault => "vault",
            SourceKind::Kubernetes => "kubernetes",
        }
    }

    /// The name in sentences.
    pub fn display(self) -> &'static str {
        match self {
            SourceKind::Consul => "Consul",
            SourceKind::Vault => "Vault",
            SourceKind::Kubernetes => "Kubernetes",
        }
    }

    /// Whether two replicas give the same data the same version, so one may step its version
    /// up to a filter's from a sibling (doc/catch_up.rs): Consul's index is the same on every
    /// replica; Kubernetes versions are each replica's own observation time.
    pub fn versions_agree_across_replicas(self) -> bool {
        !matches!(self, SourceKind::Kubernetes)
    }

    /// The reason served before the source's first good answer.
    pub fn starting_reason(self) -> &'static str {
        match self {
            SourceKind::Consul => "waiting for the first answer from Consul",
            SourceKind::Vault => "waiting for the first answer from Vault",
            SourceKind::Kubernetes => "waiting for the first answer from Kubernetes",
        }
    }

    /// The reason served once the source has failed for longer than `--max-stale` (or before
    /// any good answer). Readiness and the staleness check recognise a given-up state by it.
    pub fn down_reason(self) -> &'static str {
        match self {
            SourceKind::Consul => "no good answer from Consul within --max-stale",
            SourceKind::Vault => "no good answer from Vault within --max-stale",
            SourceKind::Kubernetes => "no good answer from Kubernetes within --max-stale",
        }
    }
}

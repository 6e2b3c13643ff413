//! Sources of truth (placeholder until the source seam lands on main).

pub mod vault;

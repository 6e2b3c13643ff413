//! The `status` subcommand: `client` reads a running poller's status document, `table`
//! renders it for a terminal. Nothing here runs inside the daemon.

pub mod client;
pub mod table;

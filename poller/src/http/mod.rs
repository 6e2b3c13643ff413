//! Everything that speaks HTTP, as leaves over the documents and the long-poll: the state
//! API's handlers (`api`), the lean long-poll front on the same listener (`front`), `/livez`
//! and `/readyz` (`probes`), standalone redirects (`redirect`) and their TLS listener (`tls`).
//! Nothing here decides or changes the state's content.

pub mod api;
pub mod front;
pub mod probes;
pub mod redirect;
pub mod tls;

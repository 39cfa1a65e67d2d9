//! The control socket: its protocol, the server the switch runs, and the client
//! `vswitchctl` uses.
//!
//! Protocol: one JSON object per line over a unix stream socket. A request is
//! `{"cmd":"show"|"stats"|"fdb"|"pmd-stats"|"pmd-rxq-show"|"pmd-rxq-rebalance"|"channels"|
//! "add-port"|"del-port"|"capture", ...args}`; each request
//! line gets exactly one response line, `{"ok":true,"data":...}` or
//! `{"ok":false,"error":"message"}`, except `capture`, whose reply line starts a stream of
//! pcap bytes that ends the connection ([`stream`]). Requests are bounded in size, connections in number and
//! idleness; whatever a client sends, the server answers or closes that one connection, and
//! keeps serving the others.
//!
//! The switch's side is the [`CtlHandler`] trait. The protocol's types live in `protocol`,
//! request parsing and routing to the handler in `dispatch`, the socket server in `server`,
//! the capture stream in `stream`, and `vswitchctl`'s side in `client`.

mod client;
mod dispatch;
mod protocol;
mod server;
pub mod stream;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;

pub use client::{CtlClient, CtlError};
pub use dispatch::{dispatch, CtlHandler};
pub use protocol::*;
pub use server::{serve, serve_with, ServeOptions};

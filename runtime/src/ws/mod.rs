//! WebSocket sessions: the upgrade handshake on hyper's connection, and each session's
//! task that reads client frames and writes queued ones; and the outbound clients
//! of `sdk/net`.

pub mod client;
pub mod clients;
pub mod codec;
mod pace;
mod session;
mod upgrade;

pub use upgrade::{is_upgrade, upgrade};

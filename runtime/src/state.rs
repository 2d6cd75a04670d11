//! What every request handler shares, in a module of its own so the parts it holds
//! (and the HTTP, MCM and WebSocket code that reads it) never import the wiring in
//! `host.rs`.

use crate::config::Config;
use crate::hub::Hub;
use crate::registry::Registry;
use std::sync::Arc;

/// What request handlers share.
pub struct HostState {
    /// The settings.
    pub config: Config,
    /// The containers.
    pub registry: Arc<Registry>,
    /// The port actually bound.
    pub local_port: u16,
    /// The MCM API token (`Authorization: Bearer <token>`).
    pub token: String,
    /// The MCM API's images and deployed containers.
    pub mcm: Arc<crate::mcm::state::Mcm>,
    /// Counters for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// WebSocket sessions, groups and fan-out.
    pub hub: Arc<Hub>,
    /// This node's handle on the cluster's Redis (`--cluster`), if any.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

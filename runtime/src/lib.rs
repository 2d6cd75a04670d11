//! The mimhost host process: an HTTP server in front of one supervised worker process
//! per container, each running the container's JavaScript in Boa.

pub mod cluster;
pub mod config;
pub mod console;
pub mod endpoints;
pub mod host;
pub mod http;
pub mod hub;
pub mod ipc;
pub mod logs;
pub mod mcm;
pub mod metrics;
pub mod mims_dir;
pub mod outbound;
pub mod registry;
pub mod store;
pub mod supervisor;
pub mod worker;
pub mod ws;

pub use config::Config;

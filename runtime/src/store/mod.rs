//! Container storage behind `context.storage`.
//!
//! The [`mimhost_bindings::Storage`] trait is the seam; [`SledStore`] is the embedded
//! default. Each container's worker opens its own store folder, so containers are
//! isolated by construction and reads never cross the process boundary.

mod sled_store;

pub use sled_store::{Durability, SledStore};

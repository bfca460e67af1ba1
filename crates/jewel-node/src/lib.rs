//! Jewel's node: the daemon (`jewel node`), its control API, its maintenance, and the
//! client side of put, get and repair over the network.
//!
//! It joins the engine (`jewel`: store, pipeline, manifests, caps, keys) to the network
//! (`jewel-net`: peers and blocks). Nothing below it imports it.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod client;
pub mod daemon;

pub use daemon::{run, ApiInfo, NodeConfig};

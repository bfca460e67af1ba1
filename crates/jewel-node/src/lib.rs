//! Jewel's node: the daemon (`jewel node`), its typed control API, its background workers,
//! and the client side of put, get and repair over the network.
//!
//! It joins the engine (`jewel`: store, pipeline, manifests, caps, keys, policy) to the
//! network (`jewel-net`: peers and blocks). Nothing below it imports it; the CLI uses its
//! [`api`] types to talk to a running node.
//!
//! - [`api`]: every endpoint's request and reply, shared with the CLI.
//! - [`client`]: put, get and repair of files over the network (async).
//! - [`bridge`]: where the blocking pipelines meet the async network, and nowhere else.
//! - [`state`]: the node's state in one transactional store.
//! - [`workers`]: GC, lease renewal, audit and repair, on an injected clock.
//! - [`daemon`]: starts it all; `identity`, `node`, `audit`, `repair`, `renew`, `jobs` and
//!   `http` are its parts.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod api;
pub mod audit;
pub mod bridge;
pub mod client;
pub mod daemon;
mod gateway;
mod http;
pub mod identity;
pub mod index;
mod jobs;
mod node;
mod pack;
pub mod renew;
pub mod repair;
mod restic;
pub mod serve;
pub mod state;
pub mod user;
pub mod users;
pub mod workers;

pub use api::ApiInfo;
pub use daemon::{run, NodeConfig, NodeError, DEFAULT_LEASE, DEFAULT_SCRUB_EVERY, DEFAULT_SCRUB_RATE};
pub use node::{check_output, GetError, OutputError, PutError, RmError, DEFAULT_SCHEME};

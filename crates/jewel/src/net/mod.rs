//! The peer-to-peer layer (in progress): the block protocol's wire format.
//!
//! Owns how blocks move between peers. It knows blocks and peers, never schemes,
//! manifests or keys.

pub mod wire;

//! Jewel's codec: every storage scheme behind one [`Scheme`] trait, the spec strings that
//! name them, and the availability maths that compares them.
//!
//! This crate is pure and synchronous: no I/O, no async, no randomness except seeded
//! sampling. It knows segments and slots, never files, keys, stores or peers.
//!
//! The Reed-Solomon fast path (feature `simd-accel`, on by default) is C code compiled
//! with `-march=haswell` and has no runtime CPU check; build with
//! `--no-default-features` for CPUs without AVX2.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

mod plan;
mod scheme;
mod schemes;
mod spec;

pub use plan::{
    availability, binomial_below, enumerate_failure, figures, monte_carlo_failure, plan, Availability,
    FamilyPlan, Figures, Method, PlanError, SplitMix64, MAX_ENUMERATED_PEERS, MONTE_CARLO_SAMPLES,
};
pub use scheme::{CodecError, Encoded, Scheme};
pub use schemes::build;
pub use spec::{
    stripe, SchemeSpec, SpecError, MAX_NESTING, MAX_SHARDS, MAX_SHARD_PEERS, MAX_SLOTS, MAX_SPEC_LEN,
};

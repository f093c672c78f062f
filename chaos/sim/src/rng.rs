//! The seeded generator every part of a run draws from; shared with the chaos harness (see
//! `hc_checker::rng`).

pub use hc_checker::rng::Rng;

//! The seeded generator every schedule, fault and agent draws from; shared with the
//! deterministic simulation (see `hc_checker::rng`).

pub use hc_checker::rng::Rng;

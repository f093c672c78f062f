//! [`CheckConfig`]: the parameters of a check.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConfig {
    /// Recovery: after the last heal an allocation must succeed within this long.
    pub recovery_bound_ns: u64,
    /// Linearizability: search steps allowed per address before it is reported inconclusive.
    pub max_search_steps: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig { recovery_bound_ns: 10_000_000_000, max_search_steps: 1_000_000 }
    }
}

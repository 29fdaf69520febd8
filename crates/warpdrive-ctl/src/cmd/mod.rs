//! One module per subcommand.

pub mod metrics;
pub mod stale;
pub mod stats;
pub mod status;
pub mod usage;

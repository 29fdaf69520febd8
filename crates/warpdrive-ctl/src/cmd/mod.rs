//! One module per subcommand.

pub mod copy;
pub mod evict;
pub mod fleet;
pub mod metrics;
pub mod plan;
pub mod quota;
pub mod restart;
pub mod serve;
pub mod stale;
pub mod stats;
pub mod status;
pub mod usage;
pub mod verify;
pub mod warm;

//! One module per subcommand.

pub mod metrics;
pub mod stats;
pub mod status;

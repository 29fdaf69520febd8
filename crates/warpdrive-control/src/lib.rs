//! WarpDrive's control plane: the `/api/v1` HTTP API (doc/API.md, doc/openapi.yaml).
//!
//! * [`server`]: one router over the live cache and filesystem core, served by the daemon
//!   on its Unix socket (0600) and optionally on TCP behind a bearer token ([`token`]), and
//!   by `warpdrive-ctl serve` when no daemon runs.
//! * [`api`] and [`client`] (re-exported from `warpdrive-api`, which needs neither the
//!   server nor the filesystem core): the types and what `warpdrive-ctl` talks to it with.
//! * [`report`]: the figures of each command, computed the same way by the daemon and by
//!   `warpdrive-ctl` working on the cache directly when no daemon runs.
//! * [`jobs`]: long operations (`warm`) with progress and cancellation.

pub mod copy;
pub mod jobs;
pub mod quotas;
pub mod report;
pub mod server;
mod target;
pub mod token;

pub use target::Target;
/// The API's types and client live in `warpdrive-api` (no server, no filesystem core).
pub use warpdrive_api::{api, client};

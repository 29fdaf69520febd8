//! WarpDrive's filesystem: a FUSE-free core and a thin FUSE adapter over it.
//!
//! Data flows one way: the FUSE adapter (in the daemon, `warpdrive-mount`) → [`core::Fs`] → [`blocks`] (block cache and
//! prefetch) → [`warpdrive_store::Backend`]. The core owns the namespace ([`inode`]),
//! directory listings ([`listing`]), metadata freshness, open handles and versions; the
//! adapter converts FUSE arguments and replies. Tests drive the core without a kernel.
//! [`integrity`] checks fully cached objects against the checksums their stores keep.

pub mod backing;
pub mod blocks;
pub mod breaker;
pub mod control;
pub mod core;
pub mod error;
pub mod flight;
pub mod inode;
pub mod integrity;
pub mod landed;
pub mod listing;
pub mod mountinfo;
pub mod negative;
pub mod plan;
pub mod resume;
pub mod window;
pub mod writer;

pub use crate::core::{
    Attr, DirEntry, Fs, FsConfig, Invalidator, Listed, Opened, ReadStart, Warmed,
};
pub use crate::error::{FsError, FsResult};
pub use crate::inode::{Ino, Kind};

/// Longest file name we report in `statfs` (Linux's `NAME_MAX`).
pub const NAME_MAX: u32 = 255;

// SPDX-License-Identifier: GPL-2.0

//! User-space access to the blksnap kernel module: the ABI types and pure
//! logic (shared, source for source, with the module), safe wrappers of its
//! ioctls, storage files and the backup workflow.

#[path = "../../src/uapi.rs"]
pub mod uapi;

#[path = "../../src/logic/mod.rs"]
pub mod logic;

pub mod backup;
pub mod ctl;
pub mod fiemap;
pub mod storage;
pub mod util;

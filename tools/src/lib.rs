// SPDX-License-Identifier: GPL-2.0

//! User-space access to the blksnap kernel module: the ABI types (shared,
//! source for source, with the module) and safe wrappers of its ioctls.

#[path = "../../src/uapi.rs"]
pub mod uapi;

#[path = "../../src/logic/mod.rs"]
pub mod logic;

pub mod ctl;

// SPDX-License-Identifier: GPL-2.0

//! blksnap's pure logic: change tracking maps, chunk and block geometry,
//! diff storage bookkeeping, event queues and which devices share blocks.
//!
//! Nothing here touches the kernel: the code uses `core` alone and takes its
//! memory from the caller (slices, or small traits the caller implements), so
//! that the same source builds in the module and on the host, where
//! `cargo test` in `tools/` covers it. The module allocates at the edges.

// Shared with user space, which uses other parts than the module does.
#![allow(dead_code, unreachable_pub)]

pub mod cbt;
pub mod cbt_store;
pub mod devices;
pub mod events;
pub mod fifo;
pub mod geometry;
pub mod persist;
pub mod storage;

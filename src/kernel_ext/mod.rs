// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over the C interfaces that the 6.12 `kernel` crate
//! lacks.
//!
//! This is the one layer of blksnap that uses `unsafe`: each type here
//! documents its invariants and each `unsafe` block says why it is sound.
//! The rest of the module is safe Rust built on these types and on the
//! `kernel` crate. When a later kernel's `kernel` crate offers one of these
//! abstractions, the module should move to it and the copy here go away.

// Each abstraction offers the whole of what it wraps, not only what today's
// callers use.
#![allow(dead_code)]

pub(crate) mod bio;
pub(crate) mod bio_list;
pub(crate) mod bioset;
pub(crate) mod block;
pub(crate) mod bytes;
pub(crate) mod cred;
pub(crate) mod errno;
pub(crate) mod filter;
pub(crate) mod gendisk;
pub(crate) mod inflight;
pub(crate) mod mem;
pub(crate) mod misc;
pub(crate) mod page_io;
pub(crate) mod params;
pub(crate) mod random;
pub(crate) mod rcu;
pub(crate) mod shrinker;
pub(crate) mod time;
pub(crate) mod workqueue;

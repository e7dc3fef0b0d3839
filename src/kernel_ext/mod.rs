// SPDX-License-Identifier: GPL-2.0

//! Safe abstractions over the C interfaces that the 6.12 `kernel` crate
//! lacks.
//!
//! This is the one layer of blksnap that uses `unsafe`: each type here
//! documents its invariants and each `unsafe` block says why it is sound.
//! The rest of the module is safe Rust built on these types and on the
//! `kernel` crate. When a later kernel's `kernel` crate offers one of these
//! abstractions, the module should move to it and the copy here go away.

pub(crate) mod bytes;
pub(crate) mod cred;
pub(crate) mod misc;

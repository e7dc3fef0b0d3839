// SPDX-License-Identifier: GPL-2.0

//! Which devices share blocks, from their numbers alone: the rule behind
//! "a disk and its partitions are never both tracked" and "storage appended
//! after TAKE never reaches a device of the snapshot". The module applies it
//! to what it is asked; the tool applies it before it asks, to choose where
//! storage goes.
//!
//! A device is given as a pair: its own number and its whole disk's (the
//! same for a disk, and for a device without partitions). Devices built on
//! others (device mapper, loop) are the caller's to walk: this only
//! compares two pairs.

/// Whether `a` and `b` are a disk and one of its partitions, either way
/// round.
pub fn disk_and_partition<T: PartialEq>(a: (T, T), b: (T, T)) -> bool {
    a.0 != b.0 && (a.1 == b.0 || a.0 == b.1)
}

/// Whether `a` and `b` share blocks: the same device, or a disk and one of
/// its partitions. Two partitions of one disk do not.
pub fn shares_blocks<T: PartialEq>(a: (T, T), b: (T, T)) -> bool {
    a.0 == b.0 || disk_and_partition(a, b)
}

#[cfg(test)]
#[path = "tests/devices.rs"]
mod tests;

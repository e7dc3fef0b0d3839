// SPDX-License-Identifier: GPL-2.0

//! Host tests of `devices.rs` (`cargo test` in `tools/`).

use super::*;

/// (major, minor) numbers: disk 8:0 with partitions 8:1 and 8:2, and a
/// device of its own, 253:0.
const DISK: ((u32, u32), (u32, u32)) = ((8, 0), (8, 0));
const PART1: ((u32, u32), (u32, u32)) = ((8, 1), (8, 0));
const PART2: ((u32, u32), (u32, u32)) = ((8, 2), (8, 0));
const OTHER: ((u32, u32), (u32, u32)) = ((253, 0), (253, 0));

#[test]
fn a_disk_and_its_partitions() {
    assert!(disk_and_partition(DISK, PART1));
    assert!(disk_and_partition(PART2, DISK));
    assert!(!disk_and_partition(DISK, DISK));
    assert!(!disk_and_partition(PART1, PART1));
    assert!(!disk_and_partition(PART1, PART2));
    assert!(!disk_and_partition(OTHER, DISK));
}

#[test]
fn shared_blocks() {
    assert!(shares_blocks(PART1, PART1));
    assert!(shares_blocks(DISK, DISK));
    assert!(shares_blocks(DISK, PART1));
    assert!(shares_blocks(PART1, DISK));
    assert!(!shares_blocks(PART1, PART2));
    assert!(!shares_blocks(OTHER, PART1));
    assert!(!shares_blocks(DISK, OTHER));
}

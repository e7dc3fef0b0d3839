// SPDX-License-Identifier: GPL-2.0

//! Host tests of `storage.rs` (`cargo test` in `tools/`).

use super::*;

fn v(new: &mut [(u64, u64)], existing: &[(u64, u64)]) -> Result<(), RangeError> {
    validate_ranges(new, existing.iter().copied(), 1000, 8)
}

#[test]
fn accepts_good_ranges_and_sorts() {
    let mut r = [(800, 200), (0, 8), (8, 16)];
    assert_eq!(v(&mut r, &[(100, 100)]), Ok(()));
    assert_eq!(r, [(0, 8), (8, 16), (800, 200)]);
}

#[test]
fn rejects_bad_ranges() {
    assert_eq!(v(&mut [(0, 0)], &[]), Err(RangeError::Empty));
    assert_eq!(v(&mut [(4, 8)], &[]), Err(RangeError::Unaligned));
    assert_eq!(v(&mut [(8, 12)], &[]), Err(RangeError::Unaligned));
    assert_eq!(v(&mut [(992, 16)], &[]), Err(RangeError::PastEnd));
    assert_eq!(v(&mut [(u64::MAX - 6, 8)], &[]), Err(RangeError::Unaligned));
    assert_eq!(v(&mut [(u64::MAX - 15, 8)], &[]), Err(RangeError::PastEnd));
    assert_eq!(v(&mut [(0, 16), (8, 8)], &[]), Err(RangeError::Overlap));
    assert_eq!(
        v(&mut [(96, 16)], &[(100 - 4, 8)]),
        Err(RangeError::Overlap)
    );
    assert_eq!(v(&mut [(0, 1000)], &[(500, 8)]), Err(RangeError::Overlap));
    assert_eq!(v(&mut [(504, 8)], &[(500, 8)]), Err(RangeError::Overlap));
    // Touching is not overlapping.
    assert_eq!(v(&mut [(16, 8), (0, 8)], &[(8, 8), (24, 8)]), Ok(()));
}

#[test]
fn allocates_page_aligned_within_ranges() {
    let ranges = [
        StorageRange {
            dev: 1,
            start: 3,
            len: 21,
        }, // room for one 8-sector region at 8
        StorageRange {
            dev: 2,
            start: 100,
            len: 40,
        },
    ];
    let mut a = Allocator::new();
    for r in &ranges {
        a.appended(r.len);
    }
    assert_eq!(a.free(), 61);
    assert_eq!(
        a.alloc(&ranges, 8),
        Some(Region {
            dev: 1,
            sector: 8,
            len: 8
        })
    );
    assert_eq!(
        a.alloc(&ranges, 8),
        Some(Region {
            dev: 1,
            sector: 16,
            len: 8
        })
    );
    // 0 sectors left in range 0 ... next range, aligned to 104.
    assert_eq!(
        a.alloc(&ranges, 16),
        Some(Region {
            dev: 2,
            sector: 104,
            len: 16
        })
    );
    assert_eq!(
        a.alloc(&ranges, 16),
        Some(Region {
            dev: 2,
            sector: 120,
            len: 16
        })
    );
    assert_eq!(a.alloc(&ranges, 16), None);
    assert_eq!(a.free(), 0);
}

#[test]
fn grows_with_appends() {
    let mut list = vec![StorageRange {
        dev: 1,
        start: 0,
        len: 16,
    }];
    let mut a = Allocator::new();
    a.appended(16);
    assert!(a.alloc(&list, 16).is_some());
    assert_eq!(a.alloc(&list, 16), None);
    list.push(StorageRange {
        dev: 1,
        start: 64,
        len: 32,
    });
    a.appended(32);
    assert_eq!(
        a.alloc(&list, 16),
        Some(Region {
            dev: 1,
            sector: 64,
            len: 16
        })
    );
    // Consumption counts what was handed out, and nothing else.
    assert_eq!((a.total(), a.used(), a.free()), (48, 32, 16));
}

#[test]
fn used_counts_skipped_tails_and_alignment() {
    let list = [
        StorageRange {
            dev: 0,
            start: 3,
            len: 21,
        },
        StorageRange {
            dev: 0,
            start: 64,
            len: 16,
        },
    ];
    let mut a = Allocator::new();
    a.appended(37);
    assert_eq!(a.used(), 0);
    // 5 sectors of padding to the page at sector 8, then 8 sectors.
    assert!(a.alloc(&list, 8).is_some());
    assert_eq!(a.used(), 13);
    // The 8 sectors left in the first range are too few for 16: skipped.
    assert!(a.alloc(&list, 16).is_some());
    assert_eq!((a.used(), a.free()), (37, 0));
}

#[test]
fn low_space_fires_once_per_append() {
    let list = [StorageRange {
        dev: 1,
        start: 0,
        len: 64,
    }];
    let mut a = Allocator::new();
    a.appended(64);
    assert!(!a.low_space_due(32));
    a.alloc(&list, 40);
    assert!(a.low_space_due(32));
    assert!(!a.low_space_due(32));
    a.appended(0); // an append re-arms, even a small one
    assert!(a.low_space_due(32));
}

#[test]
fn empty_storage_is_low() {
    let mut a = Allocator::new();
    assert_eq!(a.alloc(&[], 8), None);
    assert!(a.low_space_due(1));
}

#[test]
fn overlap_against_sorted_ranges() {
    let sorted = [(10, 10), (40, 5), (u64::MAX - 8, 8)];
    assert!(!overlaps_sorted(&sorted, 0, 10));
    assert!(overlaps_sorted(&sorted, 0, 11));
    assert!(overlaps_sorted(&sorted, 19, 1));
    assert!(!overlaps_sorted(&sorted, 20, 20));
    assert!(overlaps_sorted(&sorted, 20, 21));
    assert!(overlaps_sorted(&sorted, 44, 100));
    assert!(!overlaps_sorted(&sorted, 45, 1000));
    assert!(overlaps_sorted(&sorted, u64::MAX - 1, 5));
    assert!(!overlaps_sorted(&[], 0, u64::MAX));
}

#[test]
fn release_all_frees_what_was_allocated() {
    let ranges = [StorageRange {
        dev: 0,
        start: 0,
        len: 64,
    }];
    let mut a = Allocator::new();
    a.appended(64);
    assert!(a.alloc(&ranges, 32).is_some());
    assert_eq!(a.used(), 32);
    a.release_all();
    assert_eq!((a.used(), a.total()), (0, 64));
    let r = a.alloc(&ranges, 64).unwrap();
    assert_eq!((r.sector, a.used()), (0, 64));
}

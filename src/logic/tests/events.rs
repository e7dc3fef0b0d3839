// SPDX-License-Identifier: GPL-2.0

//! Host tests of `events.rs` (`cargo test` in `tools/`).

use super::*;

#[test]
fn fifo() {
    let mut r = EventRing::<4>::new();
    assert!(r.pop().is_none());
    for t in 0..3 {
        assert!(r.push(Event::low_free_space(t, 8)));
    }
    assert_eq!(r.pop().map(|e| e.time_ns), Some(0));
    assert!(r.push(Event::corrupted(10, 1, 2, 28)));
    assert!(r.push(Event::corrupted(11, 1, 2, 28)));
    let order: Vec<i64> = core::iter::from_fn(|| r.pop()).map(|e| e.time_ns).collect();
    assert_eq!(order, vec![1, 2, 10, 11]);
    assert!(r.is_empty());
}

#[test]
fn full_queue_drops_oldest_low_space_first() {
    let mut r = EventRing::<3>::new();
    r.push(Event::corrupted(0, 1, 1, 5));
    r.push(Event::low_free_space(1, 8));
    r.push(Event::corrupted(2, 1, 1, 5));
    assert!(r.push(Event::low_free_space(3, 8)));
    let order: Vec<i64> = core::iter::from_fn(|| r.pop()).map(|e| e.time_ns).collect();
    assert_eq!(order, vec![0, 2, 3]);
}

#[test]
fn full_of_corruption_loses_new() {
    let mut r = EventRing::<2>::new();
    r.push(Event::corrupted(0, 1, 1, 5));
    r.push(Event::corrupted(1, 1, 1, 5));
    assert!(!r.push(Event::corrupted(2, 1, 1, 5)));
    assert_eq!(r.lost(), 1);
    assert_eq!(r.len(), 2);
}

#[test]
fn payloads() {
    let e = Event::low_free_space(5, 2097152);
    assert_eq!(u64::from_ne_bytes(e.data[..8].try_into().unwrap()), 2097152);
    let c = Event::corrupted(5, 253, 16, 28);
    assert_eq!(u32::from_ne_bytes(c.data[..4].try_into().unwrap()), 253);
    assert_eq!(u32::from_ne_bytes(c.data[4..8].try_into().unwrap()), 16);
    assert_eq!(i32::from_ne_bytes(c.data[8..12].try_into().unwrap()), 28);
}

#[test]
fn wraps_around() {
    let mut r = EventRing::<2>::new();
    for t in 0..10 {
        r.push(Event::low_free_space(t, 1));
        assert_eq!(r.pop().map(|e| e.time_ns), Some(t));
    }
}

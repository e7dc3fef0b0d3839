// SPDX-License-Identifier: GPL-2.0

//! Host tests of `fifo.rs` (`cargo test` in `tools/`).

use super::*;

#[test]
fn first_in_first_out_across_the_wrap() {
    let mut ring = [0u32; 3];
    let mut q = Fifo::new();
    assert_eq!(q.pop(&ring), None);
    assert!(q.push(&mut ring, 1));
    assert!(q.push(&mut ring, 2));
    assert_eq!(q.pop(&ring), Some(1));
    assert!(q.push(&mut ring, 3));
    assert!(q.push(&mut ring, 4));
    assert_eq!(q.room(&ring), 0);
    assert!(!q.push(&mut ring, 5));
    assert_eq!(q.len(), 3);
    assert_eq!(q.pop(&ring), Some(2));
    assert_eq!(q.pop(&ring), Some(3));
    assert_eq!(q.pop(&ring), Some(4));
    assert_eq!(q.pop(&ring), None);
    assert!(q.is_empty());
}

#[test]
fn moves_into_a_bigger_ring_in_order() {
    let mut ring = [0u32; 3];
    let mut q = Fifo::new();
    for v in [1, 2, 3] {
        assert!(q.push(&mut ring, v));
    }
    assert_eq!(q.pop(&ring), Some(1));
    assert!(q.push(&mut ring, 4));
    let mut small = [0u32; 2];
    assert!(!q.move_to(&ring, &mut small));
    let mut big = [0u32; 6];
    assert!(q.move_to(&ring, &mut big));
    assert!(q.push(&mut big, 5));
    let got: Vec<u32> = core::iter::from_fn(|| q.pop(&big)).collect();
    assert_eq!(got, [2, 3, 4, 5]);
}

#[test]
fn an_empty_ring_holds_nothing() {
    let mut q = Fifo::new();
    assert!(!q.push(&mut [], 1));
    assert_eq!(q.pop(&[]), None);
    let mut big = [0u32; 2];
    assert!(q.move_to(&[], &mut big));
    q.clear();
    assert_eq!(q, Fifo::new());
}

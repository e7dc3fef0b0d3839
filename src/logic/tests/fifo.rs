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

#[test]
fn owned_values_first_in_first_out_across_the_wrap() {
    let mut ring: [Option<String>; 2] = [None, None];
    let mut q = Fifo::new();
    assert_eq!(q.take(&mut ring), None);
    assert_eq!(q.put(&mut ring, "a".to_string()), Ok(()));
    assert_eq!(q.put(&mut ring, "b".to_string()), Ok(()));
    // Full: the value comes back, nothing is overwritten.
    assert_eq!(q.put(&mut ring, "c".to_string()), Err("c".to_string()));
    assert_eq!(q.take(&mut ring).as_deref(), Some("a"));
    assert_eq!(q.put(&mut ring, "d".to_string()), Ok(()));
    assert_eq!(q.take(&mut ring).as_deref(), Some("b"));
    assert_eq!(q.take(&mut ring).as_deref(), Some("d"));
    assert_eq!(q.take(&mut ring), None);
    assert!(q.is_empty());
    assert!(ring.iter().all(Option::is_none));
}

#[test]
fn owned_values_never_overwrite_or_come_from_an_empty_ring() {
    let mut empty: [Option<u8>; 0] = [];
    let mut q = Fifo::new();
    assert_eq!(q.put(&mut empty, 1), Err(1));
    assert_eq!(q.take(&mut empty), None);
    // A place taken behind the queue's back is not overwritten.
    let mut ring = [Some(9u8), None];
    assert_eq!(q.put(&mut ring, 1), Err(1));
    assert_eq!(ring, [Some(9), None]);
}

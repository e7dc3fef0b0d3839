// SPDX-License-Identifier: GPL-2.0

//! Host tests of `cbt.rs` (`cargo test` in `tools/`).

use super::*;

/// Host map: small pages so tests cross page boundaries; `None` is an
/// absent page.
struct VecMap(Vec<Option<[u8; 8]>>);

const ZERO_PAGE: [u8; 8] = [0; 8];

impl PagedBytes for VecMap {
    const PAGE: usize = 8;
    type Page = [u8; 8];
    fn pages(&self) -> usize {
        self.0.len()
    }
    fn present(&self, i: usize) -> bool {
        self.0[i].is_some()
    }
    fn page(&self, i: usize) -> &[u8] {
        self.0[i].as_ref().map_or(&ZERO_PAGE[..], |p| &p[..])
    }
    fn page_mut(&mut self, i: usize) -> &mut [u8] {
        self.0[i].as_mut().map_or(&mut [][..], |p| &mut p[..])
    }
    fn put(&mut self, i: usize, page: [u8; 8]) {
        assert!(self.0[i].is_none(), "put over a present page");
        self.0[i] = Some(page);
    }
}

/// A map with every page present.
fn map(bytes: usize) -> VecMap {
    VecMap(vec![Some([0u8; 8]); pages_for::<VecMap>(bytes)])
}

/// A map with no page present.
fn sparse(bytes: usize) -> VecMap {
    VecMap(vec![None; pages_for::<VecMap>(bytes)])
}

/// Zeroed pages, as many as asked for.
fn plenty() -> impl FnMut() -> Option<[u8; 8]> {
    || Some([0u8; 8])
}

/// 20 blocks of 64 KiB (128 sectors); the last one partial.
fn cbt() -> Cbt<VecMap> {
    let g = Geometry::new(19 * 128 + 5, 16, 26, 1 << 20).unwrap();
    assert_eq!(g.count(), 20);
    Cbt::new(
        g,
        map(20),
        sparse(20),
        map(differs_bytes::<VecMap>(20)),
        [7; 16],
    )
    .unwrap()
}

fn snapshot(c: &Cbt<VecMap>) -> Vec<u8> {
    let mut out = vec![0xee; 32];
    let n = c.read_snapshot(0, &mut out);
    out.truncate(n);
    out
}

fn active(c: &Cbt<VecMap>) -> Vec<u8> {
    let mut out = vec![0xee; 32];
    let n = c.read_active(0, &mut out);
    out.truncate(n);
    out
}

#[test]
fn fresh_tracker() {
    let c = cbt();
    assert_eq!((c.previous_number(), c.active_number()), (0, 1));
    assert_eq!(snapshot(&c), vec![0; 20]);
    assert_eq!(c.generation(), &[7; 16]);
}

#[test]
fn map_too_small() {
    let g = Geometry::new(100 * 128, 16, 26, 1 << 20).unwrap();
    assert_eq!(
        Cbt::new(
            g,
            map(90),
            map(100),
            map(differs_bytes::<VecMap>(100)),
            [0; 16]
        )
        .err(),
        Some(CbtError::MapTooSmall)
    );
}

#[test]
fn writes_mark_touched_blocks_only() {
    let mut c = cbt();
    c.mark_write(0, 1); // block 0
    c.mark_write(127 + 128 * 4, 2); // blocks 4 and 5
    c.mark_write(128 * 8, 128 * 3); // blocks 8..11
    c.mark_write(19 * 128 + 4, 100); // last block, clipped
    let mut want = vec![0u8; 20];
    for b in [0, 4, 5, 8, 9, 10, 19] {
        want[b] = 1;
    }
    assert_eq!(active(&c), want);
    // The snapshot map changes only at switch.
    assert_eq!(snapshot(&c), vec![0; 20]);
    assert!(c.switch(|| unreachable!(), &mut plenty()));
    assert_eq!(snapshot(&c), want);
    assert_eq!((c.previous_number(), c.active_number()), (1, 2));
}

#[test]
fn changes_since_a_snapshot() {
    let mut c = cbt();
    c.mark_write(0, 128 * 20);
    assert!(c.switch(|| unreachable!(), &mut plenty())); // snapshot 1: everything
    c.mark_write(128 * 3, 1);
    c.mark_write(128 * 9, 1);
    assert!(c.switch(|| unreachable!(), &mut plenty())); // snapshot 2
    let s = snapshot(&c);
    let since1: Vec<_> = changed_runs(&s, 1).collect();
    assert_eq!(since1, vec![(3, 1), (9, 1)]);
    assert_eq!(changed_runs(&s, 0).collect::<Vec<_>>(), vec![(0, 20)]);
    assert_eq!(changed_runs(&s, 2).count(), 0);
}

#[test]
fn write_keeps_larger_number() {
    let mut c = cbt();
    assert!(c.switch(|| unreachable!(), &mut plenty()));
    c.mark_write(0, 1); // 2
    assert!(c.mark_dirty(128, 1, &mut plenty())); // active 2, snapshot 1
    assert_eq!(active(&c)[..2], [2, 2]);
    assert_eq!(snapshot(&c)[..2], [0, 1]);
}

#[test]
fn mark_dirty_before_first_snapshot_only_touches_active() {
    let mut c = cbt();
    assert!(c.mark_dirty(0, 1, &mut plenty()));
    assert_eq!(active(&c)[0], 1);
    assert_eq!(snapshot(&c)[0], 0);
}

#[test]
fn wrap_starts_new_generation() {
    let mut c = cbt();
    for _ in 0..254 {
        assert!(c.switch(|| unreachable!(), &mut plenty()));
    }
    assert_eq!((c.previous_number(), c.active_number()), (254, 255));
    c.mark_write(128 * 2, 1);
    assert!(c.switch(|| [9; 16], &mut plenty()));
    assert_eq!((c.previous_number(), c.active_number()), (255, 1));
    assert_eq!(c.generation(), &[9; 16]);
    assert_eq!(snapshot(&c)[2], 255);
    assert_eq!(active(&c), vec![0; 20]);
    c.mark_write(0, 1);
    assert_eq!(active(&c)[0], 1);
}

#[test]
fn reads_at_offsets() {
    let mut c = cbt();
    c.mark_write(128 * 7, 128 * 3); // blocks 7, 8, 9 straddle a page
    assert!(c.switch(|| unreachable!(), &mut plenty()));
    let mut out = [0u8; 4];
    assert_eq!(c.read_snapshot(6, &mut out), 4);
    assert_eq!(out, [0, 1, 1, 1]);
    assert_eq!(c.read_snapshot(18, &mut out), 2);
    assert_eq!(c.read_snapshot(20, &mut out), 0);
    assert_eq!(c.read_snapshot(usize::MAX, &mut out), 0);
    assert_eq!(c.read_snapshot(0, &mut []), 0);
}

#[test]
fn runs_at_edges() {
    assert_eq!(
        changed_runs(&[1, 1, 0, 1], 0).collect::<Vec<_>>(),
        vec![(0, 2), (3, 1)]
    );
    assert_eq!(changed_runs(&[], 0).count(), 0);
}

#[test]
fn resize_means_a_fresh_map() {
    let mut c = cbt();
    c.mark_write(0, 1);
    assert!(c.switch(|| unreachable!(), &mut plenty()));
    assert!(!c.resized(19 * 128 + 5));
    assert!(c.resized(40 * 128));
    // The replacement starts over: numbers 0/1, new generation, empty maps.
    let g = Geometry::new(40 * 128, 16, 26, 1 << 20).unwrap();
    let fresh = Cbt::new(
        g,
        map(40),
        map(40),
        map(differs_bytes::<VecMap>(40)),
        [8; 16],
    )
    .unwrap();
    assert_eq!((fresh.previous_number(), fresh.active_number()), (0, 1));
    assert_ne!(fresh.generation(), c.generation());
    assert_eq!(fresh.geometry().count(), 40);
    let mut out = [0xffu8; 40];
    assert_eq!(fresh.read_snapshot(0, &mut out), 40);
    assert!(out.iter().all(|&b| b == 0));
}

#[test]
fn runs_where_picks_the_blocks_a_range_of_numbers_holds() {
    let map = [0u8, 3, 3, 5, 0, 4, 6, 2];
    // Written by the last run (numbers 3 to 5) and not since.
    let last: Vec<_> = runs_where(&map, |v| v > 2 && v <= 5).collect();
    assert_eq!(last, vec![(1, 3), (5, 1)]);
    // Not changed since snapshot 5: everything but block 6.
    let kept: Vec<_> = runs_where(&map, |v| v <= 5).collect();
    assert_eq!(kept, vec![(0, 6), (7, 1)]);
    assert_eq!(runs_where(&map, |_| false).count(), 0);
}

/// Writes, reported changes and snapshots in a pseudo-random order: the
/// maps always equal those of a model that copies the whole active map at
/// every snapshot (the tracker copies only the pages written since).
#[test]
fn switch_copies_what_a_full_copy_would() {
    let g = Geometry::new(100 * 8, 12, 20, 1 << 20).unwrap();
    let count = g.count() as usize;
    let mut c = Cbt::new(
        g,
        map(count),
        sparse(count),
        map(differs_bytes::<VecMap>(count)),
        [1; 16],
    )
    .unwrap();
    let (mut act, mut snap) = (vec![0u8; count], vec![0u8; count]);
    let (mut a, mut p) = (1u8, 0u8);
    let mut seed = 12345u64;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _ in 0..3000 {
        let first = next(count as u64) as usize;
        let len = 1 + next(4) as usize;
        let end = (first + len).min(count);
        match next(10) {
            0 => {
                assert!(c.switch(|| [2; 16], &mut plenty()));
                snap.copy_from_slice(&act);
                p = a;
                if a == u8::MAX {
                    act.fill(0);
                    a = 1;
                } else {
                    a += 1;
                }
            }
            1 => {
                assert!(c.mark_dirty(first as u64 * 8, (end - first) as u64 * 8, &mut plenty()));
                for i in first..end {
                    act[i] = act[i].max(a);
                    snap[i] = snap[i].max(p);
                }
            }
            _ => {
                c.mark_write(first as u64 * 8, (end - first) as u64 * 8);
                for v in &mut act[first..end] {
                    *v = (*v).max(a);
                }
            }
        }
        let mut out = vec![0xee; count];
        assert_eq!(c.read_snapshot(0, &mut out), count);
        assert_eq!(out, snap);
        assert_eq!(c.read_active(0, &mut out), count);
        assert_eq!(out, act);
    }
    assert!(
        c.generation() == &[2; 16],
        "the numbers wrapped at least once"
    );
}

/// The snapshot map gets memory only for pages that hold changes, exactly
/// as many as missing_for_* say; a supply that runs out makes TAKE start a
/// new generation (never a map that misses changes) and makes mark_dirty
/// mark nothing.
#[test]
fn snapshot_map_pages_come_from_the_supply() {
    let mut c = cbt();
    assert_eq!(c.missing_for_switch(), 0);
    c.mark_write(0, 1); // block 0, page 0
    c.mark_write(19 * 128, 1); // block 19, page 2
    assert_eq!(c.missing_for_switch(), 2);
    let mut given = 0;
    assert!(c.switch(|| unreachable!(), &mut || {
        given += 1;
        Some([0u8; 8])
    }));
    assert_eq!(given, 2);
    assert_eq!(c.missing_for_switch(), 0);
    assert_eq!(c.missing_for_dirty(9 * 128, 1), 1); // page 1
    assert!(!c.mark_dirty(9 * 128, 1, &mut || None));
    assert_eq!(snapshot(&c)[9], 0);
    assert!(c.mark_dirty(9 * 128, 1, &mut plenty()));
    assert_eq!(snapshot(&c)[9], 1);
    // Block 12 written: page 1 is present now, nothing is missing; block
    // 0 again, nothing either. A fresh tracker's page 2 is, and a supply
    // that runs out starts a new generation with empty maps.
    c.mark_write(12 * 128, 1);
    assert_eq!(c.missing_for_switch(), 0);
    let mut d = cbt();
    d.mark_write(19 * 128, 1);
    assert!(!d.switch(|| [5; 16], &mut || None));
    assert_eq!(d.generation(), &[5; 16]);
    assert_eq!((d.previous_number(), d.active_number()), (0, 1));
    assert!(snapshot(&d)
        .iter()
        .chain(active(&d).iter())
        .all(|&b| b == 0));
}

#[test]
fn a_failed_take_gives_its_number_back() {
    let mut c = cbt();
    c.mark_write(0, 128 * 20);
    assert!(c.switch(|| unreachable!(), &mut plenty())); // snapshot 1
    c.mark_write(128 * 4, 1);
    let before = c.numbers();
    assert!(c.switch(|| unreachable!(), &mut plenty())); // snapshot 2, which fails
    c.mark_write(128 * 6, 1); // written after the failed switch: 3
    assert!(c.undo_switch(before));
    assert_eq!((c.previous_number(), c.active_number()), (1, 2));
    c.mark_write(128 * 8, 1);
    assert!(c.switch(|| unreachable!(), &mut plenty())); // snapshot 2 again
    assert_eq!((c.previous_number(), c.active_number()), (2, 3));
    // Every block changed since snapshot 1 is in the map, none lost.
    let s = snapshot(&c);
    assert_eq!(
        changed_runs(&s, 1).collect::<Vec<_>>(),
        vec![(4, 1), (6, 1), (8, 1)]
    );
}

#[test]
fn a_failed_take_that_wrapped_keeps_its_new_generation() {
    let mut c = cbt();
    for _ in 0..254 {
        assert!(c.switch(|| unreachable!(), &mut plenty()));
    }
    let before = c.numbers();
    assert!(c.switch(|| [9; 16], &mut plenty()));
    assert!(!c.undo_switch(before));
    assert_eq!(c.generation(), &[9; 16]);
    assert_eq!((c.previous_number(), c.active_number()), (255, 1));
}

#[test]
fn a_stored_map_comes_back_and_the_chain_goes_on() {
    // What a tracker held: two snapshots taken, then writes.
    let mut was = cbt();
    was.mark_write(0, 128);
    assert!(was.switch(|| [8; 16], &mut plenty()));
    was.mark_write(5 * 128, 300);
    assert!(was.switch(|| [8; 16], &mut plenty()));
    was.mark_write(19 * 128, 5);
    let (act, snap) = (active(&was), snapshot(&was));
    // A fresh tracker takes them up, block by block of any size.
    let mut c = cbt();
    for (i, piece) in act.chunks(3).enumerate() {
        assert!(c.load_bytes(false, i * 3, piece, &mut plenty()));
    }
    for (i, piece) in snap.chunks(7).enumerate() {
        assert!(c.load_bytes(true, i * 7, piece, &mut plenty()));
    }
    assert_eq!(c.adopt(2, 3, [7; 16]), Ok(()));
    assert_eq!((active(&c), snapshot(&c)), (act.clone(), snap));
    assert_eq!((c.previous_number(), c.active_number()), (2, 3));
    // The next snapshot reports what changed since the last one.
    assert!(c.switch(|| [9; 16], &mut plenty()));
    let since_2: Vec<usize> = snapshot(&c)
        .iter()
        .enumerate()
        .filter(|(_, &v)| v > 2)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(since_2, vec![19]);
    assert_eq!(c.generation(), &[7; 16]);
}

#[test]
fn stored_maps_no_tracker_could_hold_are_refused() {
    let mut c = cbt();
    assert!(c.load_bytes(false, 0, &[4, 0, 1], &mut plenty()));
    // An active byte above the active number.
    assert_eq!(c.adopt(2, 3, [7; 16]), Err(CbtError::Inconsistent));
    assert_eq!(c.adopt(3, 3, [7; 16]), Err(CbtError::Inconsistent));
    assert_eq!(c.adopt(0, 0, [7; 16]), Err(CbtError::Inconsistent));
    assert_eq!((c.previous_number(), c.active_number()), (0, 1));
    // A snapshot byte above the previous number.
    let mut c = cbt();
    assert!(c.load_bytes(true, 10, &[3], &mut plenty()));
    assert_eq!(c.adopt(2, 3, [7; 16]), Err(CbtError::Inconsistent));
    assert_eq!(c.adopt(3, 4, [7; 16]), Ok(()));
    // Zeros need no snapshot page; other bytes do, and may run out.
    let mut c = cbt();
    assert!(c.load_bytes(true, 0, &[0; 20], &mut || None));
    assert!(!c.load_bytes(true, 0, &[1], &mut || None));
    // Bytes past the map's end are not taken.
    assert!(c.load_bytes(false, 18, &[1, 1, 1, 1], &mut plenty()));
    assert_eq!(active(&c).len(), 20);
}

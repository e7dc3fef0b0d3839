// SPDX-License-Identifier: GPL-2.0

//! Host tests of `cbt_store.rs` (`cargo test` in `tools/`).

use super::*;
use crate::logic::persist::IDENTITY_BYTES;

/// A store in memory. Writes go to a cache until a flush makes them
/// durable; `crash` forgets what is not, and `fail_after` makes every
/// write after that many fail.
struct Mem {
    durable: Vec<Vec<u8>>,
    cache: Vec<(u64, Vec<u8>)>,
    writes: usize,
    fail_after: Option<usize>,
}

impl Mem {
    fn new(blocks: u64) -> Self {
        Self {
            durable: vec![vec![0; STORE_BLOCK]; blocks as usize],
            cache: Vec::new(),
            writes: 0,
            fail_after: None,
        }
    }

    fn crash(&mut self) {
        self.cache.clear();
        self.fail_after = None;
    }
}

impl StoreIo for Mem {
    fn read(&mut self, block: u64, buf: &mut [u8]) -> bool {
        let Some(d) = self.durable.get(block as usize) else {
            return false;
        };
        buf[..STORE_BLOCK].copy_from_slice(d);
        // What was written but not flushed reads back too.
        for (b, data) in &self.cache {
            if *b == block {
                buf[..STORE_BLOCK].copy_from_slice(data);
            }
        }
        true
    }

    fn write(&mut self, block: u64, buf: &[u8]) -> bool {
        self.writes += 1;
        if self.fail_after.is_some_and(|n| self.writes > n) || block as usize >= self.durable.len()
        {
            return false;
        }
        self.cache.push((block, buf[..STORE_BLOCK].to_vec()));
        true
    }

    fn flush(&mut self) -> bool {
        for (b, data) in self.cache.drain(..) {
            self.durable[b as usize] = data;
        }
        true
    }
}

const COUNT: u32 = 10_000;
const SHIFT: u32 = 16;

fn identity() -> [u8; IDENTITY_BYTES] {
    let mut id = [0u8; IDENTITY_BYTES];
    id[..5].copy_from_slice(b"WWN-1");
    id
}

/// The header a tracker would write, for maps of `COUNT` blocks.
fn header(store_blocks: u64, written: u64, clean: bool) -> Header {
    Header {
        seq: 0,
        clean,
        intent: false,
        block_shift: SHIFT,
        capacity: u64::from(COUNT) << (SHIFT - 9),
        block_count: COUNT,
        store_blocks,
        generation: [9; 16],
        previous: 3,
        active: 4,
        map_slot: 0,
        map_seq: 0,
        epoch: 0,
        identity: identity(),
        boot_id: [1; 16],
        written,
    }
}

/// A tracker's active and snapshot maps.
type Maps = (Vec<u8>, Vec<u8>);

fn maps(seed: u8) -> Maps {
    let active = (0..COUNT).map(|i| ((i as u8) ^ seed) % 5).collect();
    let snapshot = (0..COUNT).map(|i| ((i as u8) ^ seed) % 4).collect();
    (active, snapshot)
}

fn write_maps(
    io: &mut Mem,
    current: Option<(u8, Header)>,
    h: Header,
    m: &Maps,
) -> Result<(u8, Header), CheckpointError> {
    let read = |snapshot: bool, off: usize, out: &mut [u8]| {
        let src = if snapshot { &m.1 } else { &m.0 };
        let n = src.len().saturating_sub(off).min(out.len());
        out[..n].copy_from_slice(&src[off..off + n]);
        n
    };
    checkpoint(io, current, h, &read, &mut vec![0; STORE_BLOCK])
}

fn read_maps(
    io: &mut Mem,
    blocks: u64,
    now: &DeviceNow<'_>,
) -> Result<((u8, Header), Maps), Reset> {
    let mut got = (vec![0u8; COUNT as usize], vec![0u8; COUNT as usize]);
    let mut got_written = Vec::new();
    let mut put = |snapshot: bool, off: usize, data: &[u8]| {
        let dst = if snapshot { &mut got.1 } else { &mut got.0 };
        dst[off..off + data.len()].copy_from_slice(data);
    };
    let mut written = |b: u32| got_written.push(b);
    let h = attach(
        io,
        blocks,
        now,
        &mut put,
        &mut written,
        &mut vec![0; STORE_BLOCK],
    )?;
    // As the tracker counts them: written with the active number.
    for &b in &got_written {
        got.0[b as usize] = h.1.active;
    }
    Ok((h, got))
}

fn now<'a>(id: &'a [u8; IDENTITY_BYTES], boot: &'a [u8; 16], written: u64) -> DeviceNow<'a> {
    DeviceNow {
        capacity: u64::from(COUNT) << (SHIFT - 9),
        block_shift: SHIFT,
        identity: id,
        boot_id: boot,
        written,
    }
}

#[test]
fn a_sealed_store_gives_its_maps_back() {
    let blocks = Layout::new(COUNT).total();
    let mut io = Mem::new(blocks);
    let id = identity();
    assert_eq!(
        read_maps(&mut io, blocks, &now(&id, &[1; 16], 0)).err(),
        Some(Reset::NewStore)
    );
    let m1 = maps(1);
    let c1 = write_maps(&mut io, None, header(blocks, 50, true), &m1).unwrap();
    let (h, got) = read_maps(&mut io, blocks, &now(&id, &[1; 16], 50)).unwrap();
    assert_eq!(h, c1);
    assert!(got == m1);
    assert_eq!((h.1.generation, h.1.previous, h.1.active), ([9; 16], 3, 4));
    // A second checkpoint goes to the other slot and header block.
    let m2 = maps(2);
    let c2 = write_maps(&mut io, Some(c1), header(blocks, 70, true), &m2).unwrap();
    assert_eq!((c2.0, c2.1.seq, c2.1.map_slot, c2.1.epoch), (1, 2, 1, 1));
    let (h, got) = read_maps(&mut io, blocks, &now(&id, &[1; 16], 70)).unwrap();
    assert_eq!(h, c2);
    assert!(got == m2);
    // A later boot, nothing written since the device appeared.
    assert!(read_maps(&mut io, blocks, &now(&id, &[2; 16], 0)).is_ok());
}

#[test]
fn what_continuity_refuses_is_never_read() {
    let blocks = Layout::new(COUNT).total();
    let mut io = Mem::new(blocks);
    let id = identity();
    write_maps(&mut io, None, header(blocks, 50, true), &maps(1)).unwrap();
    // Written while untracked, in this boot and in the next.
    let r = read_maps(&mut io, blocks, &now(&id, &[1; 16], 58));
    assert_eq!(r.err(), Some(Reset::WrittenUntracked));
    let r = read_maps(&mut io, blocks, &now(&id, &[2; 16], 8));
    assert_eq!(r.err(), Some(Reset::WrittenUntracked));
    let mut other = id;
    other[0] ^= 1;
    let r = read_maps(&mut io, blocks, &now(&other, &[1; 16], 50));
    assert_eq!(r.err(), Some(Reset::OtherDevice));
    // A store cut shorter than it was made.
    let r = read_maps(&mut io, blocks - 1, &now(&id, &[1; 16], 50));
    assert_eq!(r.err(), Some(Reset::StoreDamaged));
    // Not sealed, in the boot that wrote it: writes after it are unknown.
    let mut io = Mem::new(blocks);
    write_maps(&mut io, None, header(blocks, 50, false), &maps(1)).unwrap();
    let r = read_maps(&mut io, blocks, &now(&id, &[1; 16], 50));
    assert_eq!(r.err(), Some(Reset::UncleanSameBoot));
}

#[test]
fn any_damaged_byte_of_the_maps_is_found() {
    let blocks = Layout::new(COUNT).total();
    let id = identity();
    let layout = Layout::new(COUNT);
    let mut io = Mem::new(blocks);
    let (_, h) = write_maps(&mut io, None, header(blocks, 50, true), &maps(1)).unwrap();
    for snapshot in [false, true] {
        for i in 0..layout.map_blocks() {
            let at = layout.map_block(h.map_slot, snapshot, i) as usize;
            for byte in [0, 5, HEAD_BYTES + 3, STORE_BLOCK - 1] {
                let mut bad = Mem::new(blocks);
                bad.durable = io.durable.clone();
                bad.durable[at][byte] ^= 0x40;
                let r = read_maps(&mut bad, blocks, &now(&id, &[1; 16], 50));
                assert_eq!(r.err(), Some(Reset::StoreDamaged), "block {at} byte {byte}");
            }
        }
    }
    // Both headers damaged: nothing is trusted.
    let mut bad = Mem::new(blocks);
    bad.durable = io.durable.clone();
    bad.durable[0][100] ^= 1;
    bad.durable[1][0] = b'B';
    let r = read_maps(&mut bad, blocks, &now(&id, &[1; 16], 50));
    assert_eq!(r.err(), Some(Reset::StoreDamaged));
}

#[test]
fn a_checkpoint_cut_short_leaves_the_previous_one() {
    let blocks = Layout::new(COUNT).total();
    let id = identity();
    let m1 = maps(1);
    let m2 = maps(2);
    // Every moment of the second checkpoint: its writes fail from there
    // on, then the power goes. The first checkpoint is what attach finds,
    // or the second once its header is durable.
    // Its writes: both maps' blocks, the empty intent region and the
    // header; one cut past them
    // lets it complete.
    let layout = Layout::new(COUNT);
    let writes = 2 * layout.map_blocks() as usize + layout.intent_blocks() as usize + 1;
    let mut completed = 0;
    for cut in 0..=writes {
        let mut io = Mem::new(blocks);
        let c1 = write_maps(&mut io, None, header(blocks, 50, true), &m1).unwrap();
        io.writes = 0;
        io.fail_after = Some(cut);
        let second = write_maps(&mut io, Some(c1), header(blocks, 50, true), &m2);
        io.crash();
        let (h, got) = read_maps(&mut io, blocks, &now(&id, &[1; 16], 50)).unwrap();
        match second {
            Ok(c2) => {
                completed += 1;
                assert_eq!(h, c2, "cut {cut}");
                assert!(got == m2, "cut {cut}");
            }
            Err(e) => {
                assert_eq!(e, CheckpointError::Io);
                assert_eq!(h, c1, "cut {cut}");
                assert!(got == m1, "cut {cut}");
            }
        }
    }
    assert_eq!(completed, 1);
}

#[test]
fn after_a_refused_attach_the_next_checkpoint_counts() {
    let blocks = Layout::new(COUNT).total();
    let id = identity();
    let mut io = Mem::new(blocks);
    let mut c = write_maps(&mut io, None, header(blocks, 50, true), &maps(1)).unwrap();
    c = write_maps(&mut io, Some(c), header(blocks, 50, true), &maps(2)).unwrap();
    assert_eq!(c.1.seq, 2);
    // Refused (written since), so a fresh tracker's checkpoint follows the
    // header still there: it must count at the next attach.
    let r = read_maps(&mut io, blocks, &now(&id, &[1; 16], 51));
    assert_eq!(r.err(), Some(Reset::WrittenUntracked));
    let cur = current_header(&mut io, &mut vec![0; STORE_BLOCK]);
    assert_eq!(cur, Some(c));
    let m3 = maps(3);
    let c3 = write_maps(&mut io, cur, header(blocks, 51, true), &m3).unwrap();
    let (h, got) = read_maps(&mut io, blocks, &now(&id, &[1; 16], 51)).unwrap();
    assert_eq!(h, c3);
    assert!(got == m3);
    assert_eq!(
        current_header(&mut Mem::new(blocks), &mut vec![0; STORE_BLOCK]),
        None
    );
}

#[test]
fn a_store_too_small_is_refused() {
    let blocks = Layout::new(COUNT).total();
    let mut io = Mem::new(blocks);
    let r = write_maps(&mut io, None, header(blocks - 1, 50, true), &maps(1));
    assert_eq!(r.err(), Some(CheckpointError::Invalid));
}

#[test]
fn extents_place_every_block_once() {
    // A file in three extents, out of the device's order.
    let ranges = [(800, 16), (8, 8), (4096, 24)];
    let e = Extents::new(&ranges, 1 << 20).unwrap();
    assert_eq!(e.blocks(), 6);
    let at: Vec<Option<u64>> = (0..7).map(|b| e.sector_of(b)).collect();
    assert_eq!(
        at,
        vec![
            Some(800),
            Some(808),
            Some(8),
            Some(4096),
            Some(4104),
            Some(4112),
            None
        ]
    );
    // Not whole blocks, empty, past the device, overlapping, overflowing.
    for bad in [
        &[(4, 8)][..],
        &[(8, 4)],
        &[(8, 0)],
        &[(1 << 20, 8)],
        &[(0, 16), (8, 8)],
        &[(8, 8), (0, 16)],
        &[(u64::MAX - 7, 8)],
    ] {
        assert!(Extents::new(bad, 1 << 20).is_err(), "{bad:?}");
    }
    assert!(Extents::new(&[(0, 8), (8, 8)], 16).is_ok());
}

/// Writes intent block `i` of `h`'s epoch as a flush does, with the bits
/// of tracking blocks `marked`.
fn write_intent(io: &mut Mem, h: &Header, i: u32, marked: &[u32]) {
    let layout = h.layout();
    let at = layout.intent_block(h.epoch, i);
    let mut buf = vec![0u8; STORE_BLOCK];
    for &b in marked {
        let (blk, bit) = Layout::intent_bit(b);
        assert_eq!(blk, i);
        buf[HEAD_BYTES + bit / 8] |= 1 << (bit % 8);
    }
    intent_head(at, h.epoch).seal(&mut buf).unwrap();
    assert!(io.write(at, &buf) && io.flush());
}

#[test]
fn a_crash_with_intent_marks_counts_every_marked_block_as_written() {
    let blocks = Layout::new(COUNT).total();
    let id = identity();
    let m1 = maps(1);
    let open = Header {
        intent: true,
        ..header(blocks, 0, false)
    };
    let mut io = Mem::new(blocks);
    let c1 = write_maps(&mut io, None, open, &m1).unwrap();
    // A crash before any mark: the maps as checkpointed.
    let (h, got) = read_maps(&mut io, blocks, &now(&id, &[2; 16], 0)).unwrap();
    assert_eq!(h, c1);
    assert!(got == m1);
    // Marks made durable before writes to blocks 7 and 9999.
    write_intent(&mut io, &c1.1, 0, &[7, 9999]);
    let (_, got) = read_maps(&mut io, blocks, &now(&id, &[2; 16], 0)).unwrap();
    let mut want = m1.clone();
    want.0[7] = c1.1.active;
    want.0[9999] = c1.1.active;
    assert!(got == want);
    // In the boot that wrote it, an unsealed store stays refused.
    let r = read_maps(&mut io, blocks, &now(&id, &[1; 16], 0));
    assert_eq!(r.err(), Some(Reset::UncleanSameBoot));
    // Any damaged byte of the region, or a block of another epoch, makes
    // the whole store untrusted.
    let at = c1.1.layout().intent_block(c1.1.epoch, 0) as usize;
    for byte in [0, 12, HEAD_BYTES, STORE_BLOCK - 1] {
        let mut bad = Mem::new(blocks);
        bad.durable = io.durable.clone();
        bad.durable[at][byte] ^= 0x10;
        let r = read_maps(&mut bad, blocks, &now(&id, &[2; 16], 0));
        assert_eq!(r.err(), Some(Reset::StoreDamaged), "byte {byte}");
    }
    let mut stale = Mem::new(blocks);
    stale.durable = io.durable.clone();
    let old = Header {
        epoch: c1.1.epoch + 2,
        ..c1.1
    };
    write_intent(&mut stale, &old, 0, &[1]);
    let r = read_maps(&mut stale, blocks, &now(&id, &[2; 16], 0));
    assert_eq!(r.err(), Some(Reset::StoreDamaged));
    // The next checkpoint starts its epoch with an empty region: the old
    // marks are in its maps, and nothing else counts.
    let c2 = write_maps(&mut io, Some(c1), open, &want).unwrap();
    assert_eq!(c2.1.epoch, c1.1.epoch + 1);
    let (_, got) = read_maps(&mut io, blocks, &now(&id, &[3; 16], 0)).unwrap();
    assert!(got == want);
    // A seal makes the region count for nothing.
    write_intent(&mut io, &c2.1, 0, &[5]);
    let c3 = write_maps(&mut io, Some(c2), header(blocks, 0, true), &want).unwrap();
    write_intent(&mut io, &c3.1, 0, &[6]);
    let (_, got) = read_maps(&mut io, blocks, &now(&id, &[4; 16], 0)).unwrap();
    assert!(got == want);
}

#[test]
fn a_spoiled_store_is_damaged_not_new() {
    let blocks = Layout::new(COUNT).total();
    let id = identity();
    let mut io = Mem::new(blocks);
    let open = Header {
        intent: true,
        ..header(blocks, 0, false)
    };
    write_maps(&mut io, None, open, &maps(1)).unwrap();
    let mut buf = vec![0xffu8; STORE_BLOCK];
    spoiled_header(&mut buf);
    assert!(io.write(0, &buf) && io.write(1, &buf) && io.flush());
    let r = read_maps(&mut io, blocks, &now(&id, &[2; 16], 0));
    assert_eq!(r.err(), Some(Reset::StoreDamaged));
    // Still a store: an attach from recorded ranges may write there.
    assert!(store_is_there(&mut io, &mut buf));
    assert!(!store_is_there(&mut Mem::new(blocks), &mut buf));
}

// SPDX-License-Identifier: GPL-2.0

//! Host tests of `persist.rs` (`cargo test` in `tools/`).

use super::*;

fn header() -> Header {
    let mut identity = [0u8; IDENTITY_BYTES];
    identity[..9].copy_from_slice(b"PARTUUID1");
    Header {
        seq: 7,
        clean: true,
        intent: false,
        block_shift: 18,
        // 1 GiB in 256 KiB tracking blocks.
        capacity: 2 << 20,
        block_count: 4096,
        store_blocks: Layout::new(4096).total(),
        generation: [3; 16],
        previous: 4,
        active: 5,
        map_slot: 1,
        map_seq: 6,
        epoch: 9,
        identity,
        boot_id: [1; 16],
        written: 123_456,
    }
}

#[test]
fn crc32c_matches_the_standard_check_value() {
    // The check value of CRC-32C for "123456789".
    assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    assert_eq!(crc32c(b""), 0);
}

#[test]
fn header_round_trip() {
    let h = header();
    let mut block = vec![0xaau8; STORE_BLOCK];
    h.encode(&mut block).unwrap();
    assert_eq!(Header::decode(&block), Ok(h));
    let marked = Header {
        clean: false,
        intent: true,
        ..h
    };
    marked.encode(&mut block).unwrap();
    assert_eq!(Header::decode(&block), Ok(marked));
    let open = Header { clean: false, ..h };
    open.encode(&mut block).unwrap();
    assert_eq!(Header::decode(&block), Ok(open));
}

#[test]
fn a_header_with_any_byte_changed_is_refused() {
    let mut block = vec![0u8; STORE_BLOCK];
    header().encode(&mut block).unwrap();
    for at in [0usize, 9, 12, 16, 24, 40, 73, 100, 200, 4095] {
        let mut bad = block.clone();
        bad[at] ^= 0x10;
        assert!(
            Header::decode(&bad).is_err(),
            "byte {at} changed and still valid"
        );
    }
    assert_eq!(Header::decode(&block[..100]), Err(StoreError::Short));
    assert_eq!(
        Header::decode(&[0u8; STORE_BLOCK]),
        Err(StoreError::NotAStore)
    );
}

#[test]
fn header_fields_out_of_range_are_refused() {
    let cases: [fn(&mut Header); 7] = [
        |h| h.block_shift = 11,
        |h| h.block_count += 1,
        |h| h.active = 0,
        |h| h.previous = h.active,
        |h| h.map_slot = 2,
        |h| h.map_seq = h.seq + 1,
        |h| h.store_blocks -= 1,
    ];
    for (k, change) in cases.iter().enumerate() {
        let mut h = header();
        change(&mut h);
        let mut block = vec![0u8; STORE_BLOCK];
        h.encode(&mut block).unwrap();
        assert_eq!(Header::decode(&block), Err(StoreError::Invalid), "case {k}");
    }
}

#[test]
fn the_newer_valid_header_counts() {
    let a = header();
    let b = Header { seq: 8, ..a };
    assert_eq!(newest(Ok(a), Ok(b)), Ok((1, b)));
    assert_eq!(newest(Ok(b), Ok(a)), Ok((0, b)));
    // A torn write of the newer one leaves the older.
    assert_eq!(newest(Ok(a), Err(StoreError::Checksum)), Ok((0, a)));
    assert_eq!(newest(Err(StoreError::Checksum), Ok(a)), Ok((1, a)));
    assert_eq!(
        newest(Err(StoreError::NotAStore), Err(StoreError::Checksum)),
        Err(StoreError::NotAStore)
    );
    assert_eq!(next_header_block(0), 1);
    assert_eq!(next_header_block(1), 0);
}

#[test]
fn blocks_are_sealed_where_they_belong() {
    let head = BlockHead {
        kind: BlockKind::ActiveMap,
        index: 12,
        stamp: (5u64 << 32) | 6,
    };
    let mut block = vec![0u8; STORE_BLOCK];
    block[HEAD_BYTES..]
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    head.seal(&mut block).unwrap();
    assert_eq!(head.check(&block), Ok(()));
    // Another place, kind or checkpoint: not this block.
    for other in [
        BlockHead { index: 13, ..head },
        BlockHead {
            kind: BlockKind::SnapshotMap,
            ..head
        },
        BlockHead { stamp: 6, ..head },
        BlockHead {
            stamp: (4u64 << 32) | 6,
            ..head
        },
    ] {
        assert!(other.check(&block).is_err(), "{other:?}");
    }
    let mut torn = block.clone();
    torn[STORE_BLOCK - 1] ^= 1;
    assert_eq!(head.check(&torn), Err(StoreError::Checksum));
}

#[test]
fn layout_parts_do_not_overlap() {
    let l = Layout::new(PAYLOAD as u32 * 3 + 1);
    assert_eq!(l.map_blocks(), 4);
    assert_eq!(l.intent_blocks(), 1);
    assert_eq!(l.total(), 2 + 16 + 2);
    let mut seen = std::collections::BTreeSet::new();
    for slot in 0..2 {
        for snap in [false, true] {
            for i in 0..l.map_blocks() {
                assert!(seen.insert(l.map_block(slot, snap, i)));
            }
        }
    }
    for epoch in 0..2 {
        assert!(seen.insert(l.intent_block(epoch, 0)));
    }
    assert_eq!(seen.iter().next(), Some(&2));
    assert_eq!(seen.iter().last(), Some(&(l.total() - 1)));
    // Epochs alternate between the two regions.
    assert_eq!(l.intent_block(7, 0), l.intent_block(1, 0));
    assert_eq!(Layout::intent_bit(PAYLOAD as u32 * 8 + 3), (1, 3));
}

#[test]
fn continuity_sees_what_it_can() {
    let h = header();
    let same = DeviceNow {
        capacity: h.capacity,
        block_shift: h.block_shift,
        identity: &h.identity,
        boot_id: &h.boot_id,
        written: h.written,
    };
    assert_eq!(continuity(&h, &same), Ok(()));
    let other_id = [9u8; IDENTITY_BYTES];
    assert_eq!(
        continuity(
            &h,
            &DeviceNow {
                identity: &other_id,
                ..same
            }
        ),
        Err(Reset::OtherDevice)
    );
    assert_eq!(
        continuity(
            &h,
            &DeviceNow {
                capacity: 1,
                ..same
            }
        ),
        Err(Reset::Resized)
    );
    assert_eq!(
        continuity(
            &h,
            &DeviceNow {
                block_shift: 17,
                ..same
            }
        ),
        Err(Reset::BlockSize)
    );
    // Same boot: one sector written since the seal is one too many.
    assert_eq!(
        continuity(
            &h,
            &DeviceNow {
                written: h.written + 1,
                ..same
            }
        ),
        Err(Reset::WrittenUntracked)
    );
    assert_eq!(
        continuity(&Header { clean: false, ..h }, &same),
        Err(Reset::UncleanSameBoot)
    );
    // A new boot: the counter must not have moved since the device came.
    let boot = [2u8; 16];
    let fresh = DeviceNow {
        boot_id: &boot,
        written: 0,
        ..same
    };
    assert_eq!(continuity(&h, &fresh), Ok(()));
    assert_eq!(continuity(&Header { clean: false, ..h }, &fresh), Ok(()));
    // Without write-intent marks, an unsealed store is not taken up: the
    // reason says whether this boot or an earlier one left it so. With
    // them, it is, from an earlier boot only.
    assert_eq!(require_marks(&h, &boot), Ok(()));
    let open = Header { clean: false, ..h };
    assert_eq!(
        require_marks(&open, &h.boot_id),
        Err(Reset::UncleanSameBoot)
    );
    assert_eq!(require_marks(&open, &boot), Err(Reset::UncleanShutdown));
    let marked = Header {
        intent: true,
        ..open
    };
    assert_eq!(require_marks(&marked, &boot), Ok(()));
    assert_eq!(
        require_marks(&marked, &h.boot_id),
        Err(Reset::UncleanSameBoot)
    );
    assert_eq!(Reset::from_number(9), Some(Reset::UncleanShutdown));
    assert_eq!(Reset::from_number(8), None);
    assert_eq!(
        continuity(
            &h,
            &DeviceNow {
                written: 8,
                ..fresh
            }
        ),
        Err(Reset::WrittenUntracked)
    );
    assert!(!Reset::WrittenUntracked.describe().is_empty());
}

#[test]
fn writes_wait_for_their_marks_to_be_durable() {
    let g = MARK_GROUP;
    let count = PAYLOAD as u32 * 8 + 100;
    let (nb, nd) = intent_bytes(count);
    assert_eq!((nb, nd), ((count as usize).div_ceil(8), 1));
    let bits = || vec![0u8; nb];
    let blocks = || vec![0u8; nd];
    let mut intent = Intent::new([bits(), bits(), bits()], [blocks(), blocks()], count).unwrap();
    // Two writes before any flush wait for the first one.
    assert_eq!(intent.note(0, 2), Note::Wait(1));
    assert_eq!(intent.note(count - 1, count + 5), Note::Wait(1));
    // A write in a group already marked waits for the same flush.
    assert_eq!(intent.note(g - 1, g), Note::Wait(1));
    assert_eq!(intent.begin_flush(), Some(Flush { ticket: 1 }));
    assert_eq!(intent.flush_blocks().collect::<Vec<_>>(), vec![0, 1]);
    // The flush carries the whole group of each write, and no bit past
    // the device.
    let mut payload = vec![0u8; PAYLOAD];
    intent.block_payload(0, &mut payload);
    let group_bytes = g as usize / 8;
    assert!(payload[..group_bytes].iter().all(|&b| b == 0xff));
    assert!(payload[group_bytes..].iter().all(|&b| b == 0));
    intent.block_payload(1, &mut payload);
    let tail = (count - PAYLOAD as u32 * 8) as usize;
    let mut want = vec![0u8; PAYLOAD];
    for i in (tail / g as usize * g as usize)..tail {
        want[i / 8] |= 1 << (i % 8);
    }
    assert_eq!(payload, want);
    // While it is in flight: a block it carries waits for it, a new group
    // for the next flush, which cannot start before.
    assert_eq!(intent.note(1, 2), Note::Wait(1));
    assert_eq!(intent.note(5, 6), Note::Wait(1));
    assert_eq!(intent.note(g + 5, g + 6), Note::Wait(2));
    assert_eq!(intent.note(0, g + 6), Note::Wait(2));
    assert_eq!(intent.begin_flush(), None);
    assert_eq!(intent.flushed(1), 1);
    // Flush 1 did not carry the second group: still not durable.
    assert_eq!(intent.note(0, g), Note::Durable);
    assert_eq!(intent.note(g + 5, g + 6), Note::Wait(2));
    assert_eq!(intent.begin_flush(), Some(Flush { ticket: 2 }));
    assert_eq!(intent.flush_blocks().collect::<Vec<_>>(), vec![0]);
    assert_eq!(intent.flushed(2), 2);
    assert_eq!(intent.note(g, 2 * g), Note::Durable);
    assert_eq!(intent.note(0, 2 * g), Note::Durable);
    assert_eq!(intent.begin_flush(), None);
    // A write past the groups marked, or partly past them, waits.
    assert_eq!(intent.note(2 * g - 1, 2 * g + 1), Note::Wait(3));
    // A stale or repeated completion changes nothing.
    assert_eq!(intent.flushed(1), 2);
    assert_eq!(intent.flushed(2), 2);
    assert_eq!(intent.completed(), 2);
    // A new epoch: nothing durable, nothing pending; writes noted again
    // wait for the next flush number.
    assert_eq!(intent.note(3 * g + 9, 3 * g + 10), Note::Wait(3));
    intent.clear();
    assert!(!intent.in_flight());
    assert_eq!(intent.begin_flush(), None);
    assert_eq!(intent.note(0, 1), Note::Wait(3));
    assert_eq!(intent.begin_flush(), Some(Flush { ticket: 3 }));
    assert!(intent.in_flight());
    // A flush in flight when the epoch changes makes nothing durable.
    intent.clear();
    assert_eq!(intent.flushed(3), 3);
    assert_eq!(intent.note(0, 1), Note::Wait(4));
    // Empty or out-of-range writes touch nothing.
    assert_eq!(intent.note(7, 7), Note::Durable);
    assert_eq!(intent.note(count, count + 9), Note::Durable);
}

#[test]
fn a_write_over_many_groups_marks_each_once() {
    let count = 1000;
    let (nb, nd) = intent_bytes(count);
    let mut intent = Intent::new(
        [vec![0u8; nb], vec![0u8; nb], vec![0u8; nb]],
        [vec![0u8; nd], vec![0u8; nd]],
        count,
    )
    .unwrap();
    // A discard of the whole device, from an odd block to past its end.
    assert_eq!(intent.note(3, u32::MAX), Note::Wait(1));
    assert_eq!(intent.begin_flush(), Some(Flush { ticket: 1 }));
    let mut payload = vec![0u8; PAYLOAD];
    intent.block_payload(0, &mut payload);
    let mut got = Vec::new();
    replay_intent(&payload, 0, count, |b| got.push(b));
    assert_eq!(got, (0..count).collect::<Vec<_>>());
    assert_eq!(intent.flushed(1), 1);
    assert_eq!(intent.note(0, count), Note::Durable);
}

#[test]
fn intent_memory_is_checked() {
    let mut a = [0u8; 1];
    let mut b = [0u8; 1];
    let mut c = [0u8; 1];
    let mut x = [0u8; 1];
    let mut y = [0u8; 1];
    assert!(Intent::new([&mut a[..], &mut b, &mut c], [&mut x[..], &mut y], 9).is_err());
    assert!(Intent::new([&mut a[..], &mut b, &mut c], [&mut x[..], &mut y], 8).is_ok());
}

#[test]
fn replay_marks_every_block_with_a_bit() {
    let mut payload = vec![0u8; PAYLOAD];
    payload[0] = 0b1000_0001;
    payload[2] = 0b0001_0000;
    // A bit past the device (24 blocks) is ignored.
    payload[3] = 0b0000_1000;
    let mut got = Vec::new();
    replay_intent(&payload, 0, 24, |b| got.push(b));
    assert_eq!(got, vec![0, 7, 20]);
    // Block 1 of a region starts PAYLOAD * 8 blocks further.
    got.clear();
    replay_intent(&payload[..1], 1, u32::MAX, |b| got.push(b));
    assert_eq!(got, vec![PAYLOAD as u32 * 8, PAYLOAD as u32 * 8 + 7]);
}

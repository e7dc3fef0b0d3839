// SPDX-License-Identifier: GPL-2.0

//! Host tests of `geometry.rs` (`cargo test` in `tools/`).

use super::*;

const GIB: u64 = 1 << 30;

#[test]
fn small_device_uses_minimum() {
    let g = Geometry::new(GIB / SECTOR_SIZE, 16, 26, 2_097_152).unwrap();
    assert_eq!(g.shift(), 16);
    assert_eq!(g.count(), 16384);
    assert_eq!(g.unit_sectors(), 128);
}

#[test]
fn grows_until_count_fits() {
    // 1 TiB with 64 KiB blocks needs 16M blocks; 512 KiB blocks give 2M.
    let g = Geometry::new(1024 * GIB / SECTOR_SIZE, 16, 26, 2_097_152).unwrap();
    assert_eq!(g.shift(), 19);
    assert_eq!(g.count(), 2_097_152);
}

#[test]
fn stops_at_maximum_shift() {
    let g = Geometry::new(1 << 40, 16, 20, 16).unwrap();
    assert_eq!(g.shift(), 20);
    assert_eq!(u64::from(g.count()), (1u64 << 40) >> 11);
}

#[test]
fn too_many_units_is_an_error() {
    assert_eq!(
        Geometry::new(u64::MAX, 9, 9, 1),
        Err(GeometryError::TooLarge)
    );
}

#[test]
fn bad_parameters() {
    assert_eq!(
        Geometry::new(100, 8, 16, 1),
        Err(GeometryError::BadParameters)
    );
    assert_eq!(
        Geometry::new(100, 17, 16, 1),
        Err(GeometryError::BadParameters)
    );
    assert_eq!(
        Geometry::new(100, 16, 32, 1),
        Err(GeometryError::BadParameters)
    );
    assert_eq!(
        Geometry::new(100, 16, 20, 0),
        Err(GeometryError::BadParameters)
    );
}

#[test]
fn partial_last_unit() {
    let g = Geometry::new(1000, 16, 16, 100).unwrap(); // 128-sector units
    assert_eq!(g.count(), 8);
    assert_eq!(g.unit_len(7), 1000 - 7 * 128);
    assert_eq!(g.unit_len(8), 0);
    assert_eq!(g.unit_start(7), 896);
}

#[test]
fn empty_device() {
    let g = Geometry::new(0, 16, 26, 10).unwrap();
    assert_eq!(g.count(), 0);
    assert_eq!(g.units_of(0, 1), None);
}

#[test]
fn units_of_ranges() {
    let g = Geometry::new(1000, 16, 16, 100).unwrap();
    assert_eq!(g.units_of(0, 1), Some((0, 1)));
    assert_eq!(g.units_of(127, 2), Some((0, 2)));
    assert_eq!(g.units_of(128, 128), Some((1, 2)));
    assert_eq!(g.units_of(990, 100), Some((7, 8))); // clipped at the end
    assert_eq!(g.units_of(1000, 1), None);
    assert_eq!(g.units_of(5, 0), None);
    assert_eq!(g.units_of(u64::MAX, u64::MAX), None);
    assert_eq!(g.units_of(0, u64::MAX), Some((0, 8)));
}

#[test]
fn io_shift_covers_every_io_size() {
    assert_eq!(io_shift(512, 512, 0), 9);
    assert_eq!(io_shift(512, 4096, 4096), 12);
    assert_eq!(io_shift(4096, 4096, 65536), 16);
    // A stripe of three 64 KiB units: 192 KiB, rounded up to 256 KiB.
    assert_eq!(io_shift(512, 4096, 3 * 65536), 18);
    assert_eq!(io_shift(0, 0, 0), 0);
    assert_eq!(io_shift(512, 512, u32::MAX), 31);
}

// SPDX-License-Identifier: GPL-2.0

//! Splitting a device into equal power-of-two units: tracking blocks for
//! the change map, chunks for copy-on-write.

/// Bytes in a sector, the unit of every offset and length in the ABI.
pub const SECTOR_SHIFT: u32 = 9;
/// Bytes in a sector.
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;

/// Why a geometry cannot be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// The parameters make no sense (minimum above maximum, shift below a
    /// sector or above 2^31 bytes, zero maximum count).
    BadParameters,
    /// The device needs more units than a `u32` counts.
    TooLarge,
}

/// A device of `capacity` sectors cut into units of `1 << shift` bytes; the
/// last unit may be partial.
///
/// # Invariants
///
/// `SECTOR_SHIFT <= shift < 32` and `count == ceil(capacity / unit sectors)`,
/// which fits a `u32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    capacity: u64,
    shift: u32,
    count: u32,
}

impl Geometry {
    /// The unit size for a device of `capacity` sectors: `1 << min_shift`
    /// bytes, doubled while more than `max_count` units are needed, but not
    /// past `1 << max_shift`.
    pub fn new(capacity: u64, min_shift: u32, max_shift: u32, max_count: u64) -> Result<Self, GeometryError> {
        if min_shift < SECTOR_SHIFT || min_shift > max_shift || max_shift >= 32 || max_count == 0 {
            return Err(GeometryError::BadParameters);
        }
        let mut shift = min_shift;
        while shift < max_shift && units(capacity, shift) > max_count {
            shift += 1;
        }
        let count = u32::try_from(units(capacity, shift)).map_err(|_| GeometryError::TooLarge)?;
        Ok(Self { capacity, shift, count })
    }

    /// Device size in sectors.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// log2 of the unit size in bytes.
    pub fn shift(&self) -> u32 {
        self.shift
    }

    /// Unit size in bytes.
    pub fn unit_bytes(&self) -> u32 {
        1u32 << self.shift
    }

    /// Unit size in sectors.
    pub fn unit_sectors(&self) -> u64 {
        1u64 << (self.shift - SECTOR_SHIFT)
    }

    /// Number of units.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The units that sectors `[sector, sector + len)` touch, clipped to the
    /// device, as a half-open index range; `None` if nothing of it lies on
    /// the device.
    pub fn units_of(&self, sector: u64, len: u64) -> Option<(u32, u32)> {
        if len == 0 || sector >= self.capacity {
            return None;
        }
        let end = sector.saturating_add(len).min(self.capacity);
        let s = self.shift - SECTOR_SHIFT;
        let first = sector >> s;
        let last = (end - 1) >> s;
        // Both are below `count` because `end <= capacity`.
        Some((first as u32, last as u32 + 1))
    }

    /// First sector of unit `index`.
    pub fn unit_start(&self, index: u32) -> u64 {
        u64::from(index) << (self.shift - SECTOR_SHIFT)
    }

    /// Sectors in unit `index` (the last unit may be short; 0 past the end).
    pub fn unit_len(&self, index: u32) -> u64 {
        let start = self.unit_start(index);
        if start >= self.capacity {
            return 0;
        }
        self.unit_sectors().min(self.capacity - start)
    }
}

/// Units of `1 << shift` bytes needed for `capacity` sectors.
fn units(capacity: u64, shift: u32) -> u64 {
    let s = shift - SECTOR_SHIFT;
    (capacity >> s) + u64::from(capacity & ((1u64 << s) - 1) != 0)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(Geometry::new(u64::MAX, 9, 9, 1), Err(GeometryError::TooLarge));
    }

    #[test]
    fn bad_parameters() {
        assert_eq!(Geometry::new(100, 8, 16, 1), Err(GeometryError::BadParameters));
        assert_eq!(Geometry::new(100, 17, 16, 1), Err(GeometryError::BadParameters));
        assert_eq!(Geometry::new(100, 16, 32, 1), Err(GeometryError::BadParameters));
        assert_eq!(Geometry::new(100, 16, 20, 0), Err(GeometryError::BadParameters));
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
}

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
    pub fn new(
        capacity: u64,
        min_shift: u32,
        max_shift: u32,
        max_count: u64,
    ) -> Result<Self, GeometryError> {
        if min_shift < SECTOR_SHIFT || min_shift > max_shift || max_shift >= 32 || max_count == 0 {
            return Err(GeometryError::BadParameters);
        }
        let mut shift = min_shift;
        while shift < max_shift && units(capacity, shift) > max_count {
            shift += 1;
        }
        let count = u32::try_from(units(capacity, shift)).map_err(|_| GeometryError::TooLarge)?;
        Ok(Self {
            capacity,
            shift,
            count,
        })
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

/// The smallest unit shift that does whole I/Os of a device with these
/// logical and physical block sizes and preferred minimum I/O size (bytes,
/// 0 for none): a chunk smaller than any of them would make every copy a
/// read-modify-write in the device (or be impossible). A minimum I/O size
/// that is not a power of two (a RAID stripe of three disks) is rounded up
/// to one.
pub fn io_shift(logical: u32, physical: u32, io_min: u32) -> u32 {
    let largest = logical.max(physical).max(io_min).max(1);
    largest
        .checked_next_power_of_two()
        .map_or(31, |p| p.trailing_zeros())
}

/// Units of `1 << shift` bytes needed for `capacity` sectors.
fn units(capacity: u64, shift: u32) -> u64 {
    let s = shift - SECTOR_SHIFT;
    (capacity >> s) + u64::from(capacity & ((1u64 << s) - 1) != 0)
}

#[cfg(test)]
#[path = "tests/geometry.rs"]
mod tests;

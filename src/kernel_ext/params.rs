// SPDX-License-Identifier: GPL-2.0

//! The module parameters, declared in `src/params.c` (6.12's `module!` has
//! no parameter support) and read here when they are used.

/// A module parameter; the discriminant is the C side's index.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub(crate) enum Param {
    TrackingBlockMinimumShift = 0,
    TrackingBlockMaximumShift = 1,
    TrackingBlockMaximumCount = 2,
    ChunkMinimumShift = 3,
    ChunkMaximumShift = 4,
    ChunkMaximumCount = 5,
    ChunkMaximumInCache = 6,
    FreeDiffBufferPoolSize = 7,
    DiffStorageMinimum = 8,
    DiffStorageWaitMs = 9,
}

extern "C" {
    /// Defined in `src/params.c`: the current value of parameter `id`.
    fn blksnap_param(id: u32) -> u64;
}

impl Param {
    /// The parameter's current value (it may change through sysfs at any time).
    pub(crate) fn get(self) -> u64 {
        // SAFETY: `blksnap_param` is our own C function: it reads one
        // parameter with READ_ONCE() and accepts any id.
        unsafe { blksnap_param(self as u32) }
    }
}

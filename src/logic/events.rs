// SPDX-License-Identifier: GPL-2.0

//! A snapshot's event queue: first in, first out, bounded.
//!
//! The queue has a fixed capacity so that a snapshot nobody listens to
//! cannot grow without bound. When it is full, the oldest low free space
//! event makes room (a newer one asks for the same thing); if there is none,
//! the new event is counted as lost.

/// Payload bytes an event carries (the largest payload is 12 bytes).
pub const EVENT_PAYLOAD: usize = 16;

/// Event code: more storage is needed.
pub const CODE_LOW_FREE_SPACE: u32 = 0;
/// Event code: an image is no longer exact.
pub const CODE_CORRUPTED: u32 = 1;

/// One event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    pub code: u32,
    /// CLOCK_MONOTONIC, nanoseconds.
    pub time_ns: i64,
    pub data: [u8; EVENT_PAYLOAD],
}

impl Event {
    /// A low free space event asking for `sectors`.
    pub fn low_free_space(time_ns: i64, sectors: u64) -> Self {
        let mut data = [0u8; EVENT_PAYLOAD];
        data[..8].copy_from_slice(&sectors.to_ne_bytes());
        Self {
            code: CODE_LOW_FREE_SPACE,
            time_ns,
            data,
        }
    }

    /// A corrupted event for device `mj:mn` with positive errno `err`.
    pub fn corrupted(time_ns: i64, mj: u32, mn: u32, err: i32) -> Self {
        let mut data = [0u8; EVENT_PAYLOAD];
        data[..4].copy_from_slice(&mj.to_ne_bytes());
        data[4..8].copy_from_slice(&mn.to_ne_bytes());
        data[8..12].copy_from_slice(&err.to_ne_bytes());
        Self {
            code: CODE_CORRUPTED,
            time_ns,
            data,
        }
    }
}

/// A ring of at most `N` events.
pub struct EventRing<const N: usize> {
    slots: [Option<Event>; N],
    head: usize,
    len: usize,
    lost: u64,
}

impl<const N: usize> EventRing<N> {
    pub const fn new() -> Self {
        Self {
            slots: [None; N],
            head: 0,
            len: 0,
            lost: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Events dropped because the queue was full.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    fn slot(&self, i: usize) -> usize {
        (self.head + i) % N
    }

    /// Appends `ev`; returns false if it had to be dropped.
    pub fn push(&mut self, ev: Event) -> bool {
        if N == 0 {
            self.lost += 1;
            return false;
        }
        if self.len == N && !self.drop_oldest(CODE_LOW_FREE_SPACE) {
            self.lost += 1;
            return false;
        }
        let at = self.slot(self.len);
        self.slots[at] = Some(ev);
        self.len += 1;
        true
    }

    /// Removes the oldest event of `code`, closing the gap.
    fn drop_oldest(&mut self, code: u32) -> bool {
        let Some(pos) =
            (0..self.len).find(|&i| self.slots[self.slot(i)].map(|e| e.code) == Some(code))
        else {
            return false;
        };
        for i in pos..self.len - 1 {
            let (to, from) = (self.slot(i), self.slot(i + 1));
            self.slots[to] = self.slots[from];
        }
        let last = self.slot(self.len - 1);
        self.slots[last] = None;
        self.len -= 1;
        true
    }

    /// Takes the oldest event.
    pub fn pop(&mut self) -> Option<Event> {
        if self.len == 0 {
            return None;
        }
        let ev = self.slots[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        ev
    }
}

impl<const N: usize> Default for EventRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
#[path = "tests/events.rs"]
mod tests;

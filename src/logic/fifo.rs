// SPDX-License-Identifier: GPL-2.0

//! A first-in, first-out queue of numbers over a ring the caller owns.
//!
//! Copy-on-write keeps the chunks waiting for a copy slot in one: the caller
//! allocates the ring (outside any spinlock), checks [`Fifo::room`] under its
//! lock before pushing, and moves the queue into a bigger ring when it needs
//! more room. The device's due copy steps wait in one whose ring holds
//! the values themselves ([`Fifo::put`], [`Fifo::take`]), in places made
//! for all of them at once. Nothing here allocates or panics.

/// Head and length of a queue kept in a caller's ring of `u32`s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fifo {
    head: usize,
    len: usize,
}

impl Fifo {
    pub const fn new() -> Self {
        Self { head: 0, len: 0 }
    }

    /// Numbers queued.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Free places in `ring`.
    pub fn room<T>(&self, ring: &[T]) -> usize {
        ring.len().saturating_sub(self.len)
    }

    /// Where the next value goes in a ring of `n` places; `None` when full.
    fn tail(&self, n: usize) -> Option<usize> {
        (self.len < n).then(|| (self.head + self.len) % n)
    }

    /// Moves the head past the oldest value of a ring of `n` places.
    fn advance(&mut self, n: usize) {
        self.head = (self.head + 1) % n.max(1);
        self.len = self.len.saturating_sub(1);
    }

    /// Queues `v`; `false` (and nothing queued) when `ring` is full.
    pub fn push(&mut self, ring: &mut [u32], v: u32) -> bool {
        let Some(slot) = self.tail(ring.len()).and_then(|at| ring.get_mut(at)) else {
            return false;
        };
        *slot = v;
        self.len += 1;
        true
    }

    /// Takes the oldest number.
    pub fn pop(&mut self, ring: &[u32]) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        let v = *ring.get(self.head)?;
        self.advance(ring.len());
        Some(v)
    }

    /// Queues `v` in a ring of places that own their values; hands it back
    /// when the ring is full (or the next place, against the queue's own
    /// account, is taken: nothing is overwritten).
    pub fn put<T>(&mut self, ring: &mut [Option<T>], v: T) -> Result<(), T> {
        match self.tail(ring.len()).and_then(|at| ring.get_mut(at)) {
            Some(place) if place.is_none() => {
                *place = Some(v);
                self.len += 1;
                Ok(())
            }
            _ => Err(v),
        }
    }

    /// Takes the oldest value out of its place in `ring`.
    pub fn take<T>(&mut self, ring: &mut [Option<T>]) -> Option<T> {
        if self.len == 0 || ring.is_empty() {
            return None;
        }
        let v = ring.get_mut(self.head).and_then(Option::take);
        self.advance(ring.len());
        v
    }

    /// Moves the queue from `old` into `new`, oldest first at the start;
    /// `false` (nothing changed) if `new` is too small for it.
    pub fn move_to(&mut self, old: &[u32], new: &mut [u32]) -> bool {
        if new.len() < self.len || old.is_empty() && self.len > 0 {
            return false;
        }
        for (i, slot) in new.iter_mut().take(self.len).enumerate() {
            match old.get((self.head + i) % old.len()) {
                Some(&v) => *slot = v,
                None => return false,
            }
        }
        self.head = 0;
        true
    }

    /// Forgets everything queued.
    pub fn clear(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
#[path = "tests/fifo.rs"]
mod tests;

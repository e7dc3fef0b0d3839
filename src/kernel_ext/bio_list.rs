// SPDX-License-Identifier: GPL-2.0

//! Lists of bios a filter has taken over, queued without allocating.
//!
//! C header: [`include/linux/bio.h`](srctree/include/linux/bio.h)

use core::ptr::NonNull;

use kernel::bindings;

use super::bio::OwnedBio;

/// A FIFO of owned bios, linked through their `bi_next` field: pushing never
/// allocates, so bios can be queued under a spinlock.
///
/// # Invariants
///
/// `head`..`tail` link bios owned by this list through `bi_next`, the last
/// one's `bi_next` NULL; both are `None` when empty.
pub(crate) struct BioList {
    head: Option<NonNull<bindings::bio>>,
    tail: Option<NonNull<bindings::bio>>,
}

// SAFETY: The bios may be moved between threads (see `OwnedBio`).
unsafe impl Send for BioList {}

impl BioList {
    pub(crate) const fn new() -> Self {
        Self {
            head: None,
            tail: None,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    pub(crate) fn push(&mut self, bio: OwnedBio) {
        let p = bio.into_raw();
        // SAFETY: We own `p` now; linking through `bi_next` is how the block
        // layer queues bios it owns, and no one else links it.
        unsafe { (*p.as_ptr()).bi_next = core::ptr::null_mut() };
        match self.tail {
            // SAFETY: `t` is the last bio of our list (type invariant).
            Some(t) => unsafe { (*t.as_ptr()).bi_next = p.as_ptr() },
            None => self.head = Some(p),
        }
        self.tail = Some(p);
    }

    pub(crate) fn pop(&mut self) -> Option<OwnedBio> {
        let h = self.head?;
        // SAFETY: `h` is the first bio of our list (type invariant).
        let next = unsafe { (*h.as_ptr()).bi_next };
        // SAFETY: As above; a bio leaving the list has no `bi_next`.
        unsafe { (*h.as_ptr()).bi_next = core::ptr::null_mut() };
        self.head = NonNull::new(next);
        if self.head.is_none() {
            self.tail = None;
        }
        // SAFETY: The bio was ours through the list, and is no longer in
        // it.
        Some(unsafe { OwnedBio::from_raw(h.as_ptr()) })
    }

    /// Moves every bio of `other` to the end of `self`.
    pub(crate) fn append(&mut self, mut other: Self) {
        while let Some(bio) = other.pop() {
            self.push(bio);
        }
    }

    /// Moves every bio of `self` out into a new list.
    pub(crate) fn take(&mut self) -> Self {
        core::mem::replace(self, Self::new())
    }
}

impl Drop for BioList {
    fn drop(&mut self) {
        // Each dropped `OwnedBio` is ended with an error: never lost.
        while self.pop().is_some() {}
    }
}

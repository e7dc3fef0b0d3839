// SPDX-License-Identifier: GPL-2.0

//! Random identifiers.
//!
//! C header: [`include/linux/uuid.h`](srctree/include/linux/uuid.h)

use kernel::bindings;

/// A random (version 4) UUID.
pub(crate) fn random_uuid() -> [u8; 16] {
    let mut b = [0u8; 16];
    // SAFETY: `b` is a writable 16-byte buffer, what the function fills.
    unsafe { bindings::generate_random_uuid(b.as_mut_ptr()) };
    b
}

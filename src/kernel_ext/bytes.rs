// SPDX-License-Identifier: GPL-2.0

//! Byte views of the ABI structures, so that `kernel::uaccess` can copy them
//! to and from user space.

use kernel::types::{AsBytes, FromBytes};

use crate::uapi::*;

macro_rules! impl_bytes {
    ($t:ident) => {
        // SAFETY: Every ABI structure is `#[repr(C)]`, made only of integers
        // and integer arrays (user pointers are `u64`), with every byte of
        // padding spelled out as a field (checked by the layout assertions in
        // `uapi.rs`). So any bit pattern is a valid value, and a value has no
        // uninitialised bytes.
        unsafe impl FromBytes for $t {}
        // SAFETY: See above.
        unsafe impl AsBytes for $t {}
    };
}

crate::for_each_uapi_struct!(impl_bytes);

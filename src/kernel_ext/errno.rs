// SPDX-License-Identifier: GPL-2.0

//! Error codes that the 6.12 `kernel::error::code` module does not name.

use kernel::bindings;
use kernel::error::Error;

/// `ENODATA`: a user array is too small for the answer.
pub(crate) fn enodata() -> Error {
    Error::from_errno(-(bindings::ENODATA as i32))
}

/// `EALREADY`: the operation has already been done.
pub(crate) fn ealready() -> Error {
    Error::from_errno(-(bindings::EALREADY as i32))
}

/// `EOPNOTSUPP`: the operation is not supported.
pub(crate) fn eopnotsupp() -> Error {
    Error::from_errno(-(bindings::EOPNOTSUPP as i32))
}

// SPDX-License-Identifier: GPL-2.0

//! blksnap: snapshots of live block devices and changed block tracking.
//!
//! User space drives the module through the ioctls of `/dev/blksnap`
//! (`include/uapi/linux/blksnap.h`).

// Blksnap's logic is safe Rust: `unsafe` lives in `kernel_ext` alone, the
// small abstractions over the C APIs that 6.12's kernel crate lacks, and the
// compiler holds that boundary.
#![deny(unsafe_code)]
// `DiffArea` has more fields than `pin_init!` expands within the default
// limit of 128.
#![recursion_limit = "256"]

use kernel::c_str;
use kernel::prelude::*;

mod cbt_store_io;
mod ctl;
mod diff_area;
mod event_queue;
mod intent;
#[allow(unsafe_code)]
mod kernel_ext;
mod logic;
mod persist;
mod slots;
mod snapshot;
mod storage;
mod tracker;
mod uapi;

use kernel_ext::bioset::BioSetOwner;
use kernel_ext::misc::Registration;

module! {
    type: Blksnap,
    name: "blksnap",
    author: "blksnap developers",
    description: "Snapshots of block devices and changed block tracking",
    license: "GPL",
}

struct Blksnap {
    _ctl: Registration<ctl::Control>,
    /// Dropped after the control device, whose I/O allocates from it.
    _bios: BioSetOwner,
}

impl kernel::Module for Blksnap {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let bios = BioSetOwner::init()?;
        let ctl =
            Registration::register(c_str!("blksnap"), 0o600, ctl::Control::new(module)?, module)?;
        let v = uapi::VERSION;
        pr_info!(
            "version {}.{}.{}.{} loaded\n",
            v.major,
            v.minor,
            v.revision,
            v.build
        );
        Ok(Blksnap {
            _ctl: ctl,
            _bios: bios,
        })
    }
}

impl Drop for Blksnap {
    fn drop(&mut self) {
        pr_info!("unloaded\n");
    }
}

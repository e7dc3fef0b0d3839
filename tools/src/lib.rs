// SPDX-License-Identifier: GPL-2.0

//! User-space access to the blksnap kernel module: the ABI types and pure
//! logic (shared, source for source, with the module), safe wrappers of its
//! ioctls, storage files and the backup workflow.

#[path = "../../src/uapi.rs"]
pub mod uapi;

#[path = "../../src/logic/mod.rs"]
pub mod logic;

pub mod backup;
pub mod ctl;
pub mod fiemap;
pub mod manifest;
pub mod persist;
pub mod points;
pub mod runs;
pub mod storage;
pub mod util;

#[cfg(test)]
mod version_tests {
    /// One version everywhere: the VERSION file (which the packages use),
    /// the tool's Cargo version and the module's VERSION answer.
    #[test]
    fn versions_agree() {
        let file = include_str!("../../VERSION").trim();
        assert_eq!(file, env!("CARGO_PKG_VERSION"));
        let v = crate::uapi::VERSION;
        assert_eq!(file, format!("{}.{}.{}", v.major, v.minor, v.revision));
    }
}

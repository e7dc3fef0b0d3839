// SPDX-License-Identifier: GPL-2.0

//! Storage files: allocated with fallocate, mapped with FIEMAP into sector
//! ranges of the block device that holds the file system.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::uapi::{BlkSnapBlockRange, BlkSnapDev};

const FS_IOC_FIEMAP: u64 = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_UNKNOWN: u32 = 0x2;
const FIEMAP_EXTENT_DELALLOC: u32 = 0x4;
const FIEMAP_EXTENT_ENCODED: u32 = 0x8;
const FIEMAP_EXTENT_DATA_ENCRYPTED: u32 = 0x80;
const FIEMAP_EXTENT_NOT_ALIGNED: u32 = 0x100;
const FIEMAP_EXTENT_DATA_INLINE: u32 = 0x200;
const FIEMAP_EXTENT_DATA_TAIL: u32 = 0x400;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;

/// Flags that mean an extent's sectors cannot be written directly.
const UNTRUSTED: &[(u32, &str)] = &[
    (FIEMAP_EXTENT_UNKNOWN, "unknown location"),
    (FIEMAP_EXTENT_DELALLOC, "delayed allocation"),
    (FIEMAP_EXTENT_ENCODED, "encoded"),
    (FIEMAP_EXTENT_DATA_ENCRYPTED, "encrypted"),
    (FIEMAP_EXTENT_NOT_ALIGNED, "not block aligned"),
    (FIEMAP_EXTENT_DATA_INLINE, "inline"),
    (FIEMAP_EXTENT_DATA_TAIL, "packed tail"),
    (FIEMAP_EXTENT_SHARED, "shared"),
];

/// One FIEMAP extent as the kernel reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub flags: u32,
}

/// `struct fiemap` header (32 bytes).
#[repr(C)]
#[derive(Default)]
struct FiemapHeader {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
}

/// `struct fiemap_extent` (56 bytes).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

const _: () = assert!(std::mem::size_of::<FiemapHeader>() == 32);
const _: () = assert!(std::mem::size_of::<FiemapExtent>() == 56);

#[repr(C)]
struct FiemapBuf {
    hdr: FiemapHeader,
    ext: [FiemapExtent; 128],
}

/// Every extent of `file`, in order.
pub fn extents(file: &File) -> io::Result<Vec<Extent>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    loop {
        let mut buf = Box::new(FiemapBuf {
            hdr: FiemapHeader::default(),
            ext: [FiemapExtent::default(); 128],
        });
        buf.hdr.start = start;
        buf.hdr.length = u64::MAX - start;
        buf.hdr.flags = FIEMAP_FLAG_SYNC;
        buf.hdr.extent_count = 128;
        // SAFETY: `buf` is a `struct fiemap` followed by room for the 128
        // extents its header announces.
        let ret = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_FIEMAP as _,
                &mut *buf as *mut FiemapBuf,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (buf.hdr.mapped_extents as usize).min(128);
        if n == 0 {
            return Ok(out);
        }
        let mut last = false;
        for e in &buf.ext[..n] {
            out.push(Extent {
                logical: e.logical,
                physical: e.physical,
                length: e.length,
                flags: e.flags,
            });
            start = e.logical + e.length;
            last |= e.flags & FIEMAP_EXTENT_LAST != 0;
        }
        if last {
            return Ok(out);
        }
    }
}

/// Turns extents into sector ranges, refusing any that cannot be trusted
/// as fixed sectors; `Err` names the reason.
pub fn extents_to_ranges(ext: &[Extent]) -> Result<Vec<BlkSnapBlockRange>, String> {
    let mut ranges: Vec<BlkSnapBlockRange> = Vec::with_capacity(ext.len());
    for e in ext {
        if let Some((_, why)) = UNTRUSTED.iter().find(|(f, _)| e.flags & f != 0) {
            return Err(format!("an extent at offset {} is {why}", e.logical));
        }
        if e.physical % 512 != 0 || e.length % 512 != 0 || e.length == 0 {
            return Err(format!(
                "an extent at offset {} is not sector aligned",
                e.logical
            ));
        }
        let r = BlkSnapBlockRange {
            sector_offset: e.physical / 512,
            sector_count: e.length / 512,
        };
        // Merge physically adjacent extents.
        match ranges.last_mut() {
            Some(prev) if prev.sector_offset + prev.sector_count == r.sector_offset => {
                prev.sector_count += r.sector_count
            }
            _ => ranges.push(r),
        }
    }
    Ok(ranges)
}

/// A storage file ready to hand over.
pub struct StorageFile {
    pub dev: BlkSnapDev,
    pub ranges: Vec<BlkSnapBlockRange>,
    pub bytes: u64,
}

/// Creates `path` of `size` bytes (fallocate: unwritten extents are fine)
/// and maps it. The file is kept; the caller removes it when done.
pub fn allocate(path: &Path, size: u64) -> Result<StorageFile, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create storage file {}: {e}", path.display()))?;
    // SAFETY: A valid descriptor and a plain range.
    let ret = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) };
    if ret != 0 {
        let e = io::Error::last_os_error();
        // The error to report is the allocation's, not the cleanup's.
        let _ = std::fs::remove_file(path);
        return Err(format!(
            "cannot allocate {} bytes for {}: {e}",
            size,
            path.display()
        ));
    }
    map_file(path, &file).inspect_err(|_| {
        // As above: the mapping's error is the one to report.
        let _ = std::fs::remove_file(path);
    })
}

/// Maps an existing file.
pub fn map_file(path: &Path, file: &File) -> Result<StorageFile, String> {
    let md = file.metadata().map_err(|e| e.to_string())?;
    let dev = BlkSnapDev {
        mj: libc::major(md.dev()),
        mn: libc::minor(md.dev()),
    };
    if !Path::new(&format!("/sys/dev/block/{}:{}", dev.mj, dev.mn)).exists() {
        return Err(format!(
            "{} is on a file system without a block device of its own ({}:{}): put storage files on a disk-backed file system such as ext4 or xfs",
            path.display(), dev.mj, dev.mn
        ));
    }
    let ext = extents(file).map_err(|e| {
        format!("{}: FIEMAP failed ({e}): this file system cannot map files to sectors (tmpfs cannot); use ext4 or xfs", path.display())
    })?;
    let ranges = extents_to_ranges(&ext).map_err(|why| {
        format!(
            "{}: {why}: its sectors cannot be used as snapshot storage",
            path.display()
        )
    })?;
    let bytes = ranges.iter().map(|r| r.sector_count * 512).sum();
    if bytes < md.len() {
        return Err(format!(
            "{}: the file has holes; allocate it fully (fallocate)",
            path.display()
        ));
    }
    Ok(StorageFile { dev, ranges, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_refuse() {
        let e = |logical, physical, length, flags| Extent {
            logical,
            physical,
            length,
            flags,
        };
        let r = extents_to_ranges(&[
            e(0, 4096, 4096, 0),
            e(4096, 8192, 4096, 0x800),
            e(8192, 65536, 8192, 1),
        ])
        .unwrap();
        assert_eq!(
            r,
            vec![
                BlkSnapBlockRange {
                    sector_offset: 8,
                    sector_count: 16
                },
                BlkSnapBlockRange {
                    sector_offset: 128,
                    sector_count: 16
                },
            ]
        );
        assert!(extents_to_ranges(&[e(0, 0, 4096, FIEMAP_EXTENT_SHARED)])
            .unwrap_err()
            .contains("shared"));
        assert!(extents_to_ranges(&[e(0, 0, 4096, FIEMAP_EXTENT_DELALLOC)])
            .unwrap_err()
            .contains("delayed"));
        assert!(
            extents_to_ranges(&[e(0, 0, 4096, FIEMAP_EXTENT_DATA_INLINE)])
                .unwrap_err()
                .contains("inline")
        );
        assert!(extents_to_ranges(&[e(0, 100, 4096, 0)])
            .unwrap_err()
            .contains("aligned"));
    }

    /// FIEMAP on a real file, where the file system supports it.
    #[test]
    fn maps_a_real_file() {
        let dir = std::env::var("BLKSNAP_FIEMAP_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into());
        let path = Path::new(&dir).join(format!("fiemap-test-{}", std::process::id()));
        // Left by an earlier run, or (mostly) not there.
        let _ = std::fs::remove_file(&path);
        match allocate(&path, 1 << 20) {
            Ok(sf) => {
                assert!(sf.bytes >= 1 << 20, "{} bytes mapped", sf.bytes);
                assert!(!sf.ranges.is_empty());
                std::fs::remove_file(&path).unwrap();
            }
            // tmpfs, overlay without a block device, or no FIEMAP: the error
            // must say so clearly.
            Err(e) => {
                // Cleanup only; the assertion below is what counts.
                let _ = std::fs::remove_file(&path);
                assert!(
                    e.contains("FIEMAP") || e.contains("block device") || e.contains("allocate"),
                    "{e}"
                );
                eprintln!("skipped: {e}");
            }
        }
    }
}

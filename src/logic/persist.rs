// SPDX-License-Identifier: GPL-2.0

//! The CBT store: the format that keeps a tracker's change maps across a
//! restart, and the write-intent protocol that keeps them right through a
//! crash (see `Documentation/persistence.rst`). Pure logic: encoding,
//! checks, layout and decisions. The module does the I/O.
//!
//! A store is a run of [`STORE_BLOCK`]-byte blocks (a file's extents or a
//! device range, as diff storage is given):
//!
//! - blocks 0 and 1: two copies of the [`Header`], written in turn; the
//!   valid one with the higher sequence number counts, so a header write
//!   torn by a power cut leaves the other;
//! - two map slots, each the active and the snapshot map of a checkpoint
//!   (one byte per tracking block, as in memory); the header names the slot
//!   of the last complete checkpoint, and the next checkpoint writes the
//!   other one;
//! - two intent regions, one bit per tracking block: a bit set in the
//!   region of the header's epoch says that the block may have been
//!   written with the header's active number since the checkpoint. Before
//!   a write to a block whose bit is not yet durable completes, the bit is
//!   written and flushed ([`Intent`]).
//!
//! Every block past the headers starts with a [`BlockHead`]: a checksum,
//! what the block is, where it belongs and which checkpoint (or epoch)
//! wrote it, so that a block from another place or an older life is never
//! trusted.

/// Bytes in a store block.
pub const STORE_BLOCK: usize = 4096;
/// Bytes of a block's head; the payload follows.
pub const HEAD_BYTES: usize = 16;
/// Payload bytes in a map or intent block.
pub const PAYLOAD: usize = STORE_BLOCK - HEAD_BYTES;
/// First bytes of a header.
pub const MAGIC: [u8; 8] = *b"BLKSNCBT";
/// Format version of this code.
pub const VERSION: u32 = 1;
/// Bytes of the device identity a header records.
pub const IDENTITY_BYTES: usize = 64;

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82f6_3b78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// CRC-32C (Castagnoli) of `data`, as `crc32c()` in the kernel computes it
/// with seed `!0` and the result inverted.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Why a store, or a block of it, is not trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Not a store (no magic), or a version this code does not know.
    NotAStore,
    /// A checksum does not match: the block is damaged or torn.
    Checksum,
    /// A valid block in the wrong place, or from another checkpoint.
    Misplaced,
    /// Fields out of range (a block count the store cannot hold, ...).
    Invalid,
    /// A buffer shorter than a store block.
    Short,
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        v.copy_from_slice(s);
    }
    u32::from_le_bytes(v)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        v.copy_from_slice(s);
    }
    u64::from_le_bytes(v)
}

fn put(b: &mut [u8], at: usize, v: &[u8]) {
    if let Some(s) = b.get_mut(at..at + v.len()) {
        s.copy_from_slice(v);
    }
}

/// What a block past the headers holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKind {
    /// Part of an active map.
    ActiveMap = 1,
    /// Part of a snapshot map.
    SnapshotMap = 2,
    /// Part of an intent region.
    Intent = 3,
}

/// The head of a map or intent block: `crc` covers the rest of the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHead {
    pub kind: BlockKind,
    /// The block's place in the store.
    pub index: u32,
    /// The header sequence of the checkpoint that wrote a map block; the
    /// epoch of an intent block.
    pub stamp: u64,
}

impl BlockHead {
    /// Writes the head into `block` (whose payload is in place) with the
    /// checksum of the whole.
    pub fn seal(&self, block: &mut [u8]) -> Result<(), StoreError> {
        if block.len() < STORE_BLOCK {
            return Err(StoreError::Short);
        }
        put(block, 4, &(self.kind as u32).to_le_bytes());
        put(block, 8, &self.index.to_le_bytes());
        // The stamp's low 32 bits go in the head; the high ones are part
        // of what the checksum seeds, below.
        put(block, 12, &(self.stamp as u32).to_le_bytes());
        let crc = crc32c(block.get(4..STORE_BLOCK).unwrap_or(&[])) ^ (self.stamp >> 32) as u32;
        put(block, 0, &crc.to_le_bytes());
        Ok(())
    }

    /// Checks that `block` is whole and is this block.
    pub fn check(&self, block: &[u8]) -> Result<(), StoreError> {
        if block.len() < STORE_BLOCK {
            return Err(StoreError::Short);
        }
        let crc = crc32c(block.get(4..STORE_BLOCK).unwrap_or(&[])) ^ (self.stamp >> 32) as u32;
        if crc != get_u32(block, 0) {
            return Err(StoreError::Checksum);
        }
        if get_u32(block, 4) != self.kind as u32
            || get_u32(block, 8) != self.index
            || get_u32(block, 12) != self.stamp as u32
        {
            return Err(StoreError::Misplaced);
        }
        Ok(())
    }
}

/// Where the parts of a store for `block_count` tracking blocks lie, in
/// store blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    block_count: u32,
    map_blocks: u32,
    intent_blocks: u32,
}

impl Layout {
    pub fn new(block_count: u32) -> Self {
        let n = block_count as usize;
        Self {
            block_count,
            map_blocks: n.div_ceil(PAYLOAD) as u32,
            intent_blocks: n.div_ceil(PAYLOAD * 8) as u32,
        }
    }

    pub fn block_count(&self) -> u32 {
        self.block_count
    }

    /// Store blocks per map.
    pub fn map_blocks(&self) -> u32 {
        self.map_blocks
    }

    /// Store blocks per intent region.
    pub fn intent_blocks(&self) -> u32 {
        self.intent_blocks
    }

    /// Store blocks of the whole store.
    pub fn total(&self) -> u64 {
        2 + 4 * u64::from(self.map_blocks) + 2 * u64::from(self.intent_blocks)
    }

    /// Block `i` of the active (`snapshot` false) or snapshot map in map
    /// slot `slot` (0 or 1).
    pub fn map_block(&self, slot: u8, snapshot: bool, i: u32) -> u64 {
        let m = u64::from(self.map_blocks);
        2 + u64::from(slot & 1) * 2 * m + u64::from(snapshot) * m + u64::from(i)
    }

    /// Block `i` of the intent region of `epoch`.
    pub fn intent_block(&self, epoch: u64, i: u32) -> u64 {
        2 + 4 * u64::from(self.map_blocks)
            + (epoch & 1) * u64::from(self.intent_blocks)
            + u64::from(i)
    }

    /// The intent block and the bit in its payload of tracking block `b`.
    pub fn intent_bit(b: u32) -> (u32, usize) {
        let bits = (PAYLOAD * 8) as u32;
        (b / bits, (b % bits) as usize)
    }
}

/// A store's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Grows by one with each header written.
    pub seq: u64,
    /// Sealed by a clean detach: the maps are whole and no write came
    /// after them (the intent region holds nothing that counts).
    pub clean: bool,
    /// In use with write-intent marks (never with `clean`): the intent
    /// region of `epoch` has a bit for every tracking block written since
    /// this checkpoint. In use without them (neither flag), nothing says
    /// what was written after it.
    pub intent: bool,
    /// Tracking block size, as a shift of bytes.
    pub block_shift: u32,
    /// The device's size in sectors.
    pub capacity: u64,
    pub block_count: u32,
    /// Store blocks the store has: a store cut shorter is not trusted.
    pub store_blocks: u64,
    pub generation: [u8; 16],
    pub previous: u8,
    pub active: u8,
    /// The map slot of the last checkpoint.
    pub map_slot: u8,
    /// The checkpoint's sequence number, which stamps its map blocks.
    pub map_seq: u64,
    /// The intent epoch of `active`: its region is `epoch & 1`.
    pub epoch: u64,
    /// What names the device (a partition UUID, a WWN), as user space gave
    /// it when the store was made; zero padded.
    pub identity: [u8; IDENTITY_BYTES],
    /// The boot the header was written in.
    pub boot_id: [u8; 16],
    /// Sectors written to the device since it appeared in that boot, when
    /// the header was written.
    pub written: u64,
}

const H_MAGIC: usize = 0;
const H_VERSION: usize = 8;
const H_CRC: usize = 12;
const H_SEQ: usize = 16;
const H_CLEAN: usize = 24;
const H_SHIFT: usize = 28;
const H_CAPACITY: usize = 32;
const H_COUNT: usize = 40;
const H_STORE: usize = 48;
const H_GENERATION: usize = 56;
const H_PREVIOUS: usize = 72;
const H_ACTIVE: usize = 73;
const H_SLOT: usize = 74;
const H_MAP_SEQ: usize = 80;
const H_EPOCH: usize = 88;
const H_IDENTITY: usize = 96;
const H_BOOT: usize = H_IDENTITY + IDENTITY_BYTES;
const H_WRITTEN: usize = H_BOOT + 16;
const H_END: usize = H_WRITTEN + 8;

/// Tracking block sizes a store may record: 4 KiB to 1 GiB.
const SHIFTS: core::ops::RangeInclusive<u32> = 12..=30;

impl Header {
    /// Writes the header into `block` (a whole store block, zeroed past
    /// the fields), with its checksum.
    pub fn encode(&self, block: &mut [u8]) -> Result<(), StoreError> {
        if block.len() < STORE_BLOCK {
            return Err(StoreError::Short);
        }
        block.iter_mut().take(STORE_BLOCK).for_each(|b| *b = 0);
        put(block, H_MAGIC, &MAGIC);
        put(block, H_VERSION, &VERSION.to_le_bytes());
        put(block, H_SEQ, &self.seq.to_le_bytes());
        let state: u32 = match (self.clean, self.intent) {
            (true, _) => 1,
            (false, true) => 2,
            (false, false) => 0,
        };
        put(block, H_CLEAN, &state.to_le_bytes());
        put(block, H_SHIFT, &self.block_shift.to_le_bytes());
        put(block, H_CAPACITY, &self.capacity.to_le_bytes());
        put(block, H_COUNT, &self.block_count.to_le_bytes());
        put(block, H_STORE, &self.store_blocks.to_le_bytes());
        put(block, H_GENERATION, &self.generation);
        put(
            block,
            H_PREVIOUS,
            &[self.previous, self.active, self.map_slot],
        );
        put(block, H_MAP_SEQ, &self.map_seq.to_le_bytes());
        put(block, H_EPOCH, &self.epoch.to_le_bytes());
        put(block, H_IDENTITY, &self.identity);
        put(block, H_BOOT, &self.boot_id);
        put(block, H_WRITTEN, &self.written.to_le_bytes());
        let crc = crc32c(block.get(..STORE_BLOCK).unwrap_or(&[]));
        put(block, H_CRC, &crc.to_le_bytes());
        Ok(())
    }

    /// Reads and checks a header from `block`.
    pub fn decode(block: &[u8]) -> Result<Self, StoreError> {
        if block.len() < STORE_BLOCK {
            return Err(StoreError::Short);
        }
        if block.get(..8) != Some(&MAGIC[..]) || get_u32(block, H_VERSION) != VERSION {
            return Err(StoreError::NotAStore);
        }
        let mut copy = [0u8; H_END];
        copy.copy_from_slice(block.get(..H_END).unwrap_or(&[0u8; H_END]));
        put(&mut copy, H_CRC, &[0; 4]);
        // The checksum covers the whole block: the fields, then zeros.
        let tail = block.get(H_END..STORE_BLOCK).unwrap_or(&[]);
        if tail.iter().any(|&b| b != 0) || crc_with_zero_tail(&copy) != get_u32(block, H_CRC) {
            return Err(StoreError::Checksum);
        }
        let mut generation = [0u8; 16];
        generation.copy_from_slice(
            block
                .get(H_GENERATION..H_GENERATION + 16)
                .unwrap_or(&[0; 16]),
        );
        let mut identity = [0u8; IDENTITY_BYTES];
        identity.copy_from_slice(
            block
                .get(H_IDENTITY..H_IDENTITY + IDENTITY_BYTES)
                .unwrap_or(&[0; IDENTITY_BYTES]),
        );
        let mut boot_id = [0u8; 16];
        boot_id.copy_from_slice(block.get(H_BOOT..H_BOOT + 16).unwrap_or(&[0; 16]));
        let (clean, intent) = match get_u32(block, H_CLEAN) {
            0 => (false, false),
            1 => (true, false),
            2 => (false, true),
            _ => return Err(StoreError::Invalid),
        };
        let h = Header {
            seq: get_u64(block, H_SEQ),
            clean,
            intent,
            block_shift: get_u32(block, H_SHIFT),
            capacity: get_u64(block, H_CAPACITY),
            block_count: get_u32(block, H_COUNT),
            store_blocks: get_u64(block, H_STORE),
            generation,
            previous: block.get(H_PREVIOUS).copied().unwrap_or(0),
            active: block.get(H_ACTIVE).copied().unwrap_or(0),
            map_slot: block.get(H_SLOT).copied().unwrap_or(0),
            map_seq: get_u64(block, H_MAP_SEQ),
            epoch: get_u64(block, H_EPOCH),
            identity,
            boot_id,
            written: get_u64(block, H_WRITTEN),
        };
        h.validate()?;
        Ok(h)
    }

    /// Fields in range, and a store large enough for them.
    fn validate(&self) -> Result<(), StoreError> {
        if !SHIFTS.contains(&self.block_shift) {
            return Err(StoreError::Invalid);
        }
        let per_block = 1u64 << (self.block_shift - 9);
        if self.block_count == 0
            || self.capacity.div_ceil(per_block) != u64::from(self.block_count)
            || self.active == 0
            || self.previous >= self.active
            || self.map_slot > 1
            || self.map_seq > self.seq
            || Layout::new(self.block_count).total() > self.store_blocks
        {
            return Err(StoreError::Invalid);
        }
        Ok(())
    }

    /// The layout of this header's store.
    pub fn layout(&self) -> Layout {
        Layout::new(self.block_count)
    }
}

/// CRC-32C of `fields` followed by zeros up to a whole store block.
fn crc_with_zero_tail(fields: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in fields {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    for _ in fields.len()..STORE_BLOCK {
        c = CRC_TABLE[(c & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// The header that counts, of the two copies read from blocks 0 and 1:
/// the valid one with the higher sequence, and its block. If neither is
/// valid, why the first is not.
pub fn newest(
    a: Result<Header, StoreError>,
    b: Result<Header, StoreError>,
) -> Result<(u8, Header), StoreError> {
    match (a, b) {
        (Ok(x), Ok(y)) if y.seq > x.seq => Ok((1, y)),
        (Ok(x), _) => Ok((0, x)),
        (Err(_), Ok(y)) => Ok((1, y)),
        (Err(e), Err(_)) => Err(e),
    }
}

/// The header block that the next header write goes to: the one that
/// does not hold the header that counts.
pub fn next_header_block(current: u8) -> u8 {
    (current & 1) ^ 1
}

/// Why tracking starts a new generation instead of going on with a store's.
/// The numbers are part of the ABI extension that reports them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Reset {
    /// The store holds no header: it is new.
    NewStore = 1,
    /// The store failed its checks (a header, or a map block).
    StoreDamaged = 2,
    /// The store belongs to another device.
    OtherDevice = 3,
    /// The device's size changed.
    Resized = 4,
    /// The store's tracking block size is not the tracker's.
    BlockSize = 5,
    /// The device was written while no tracker watched it.
    WrittenUntracked = 6,
    /// The module stopped without sealing the store in this same boot
    /// (nothing can say what was written after it stopped).
    UncleanSameBoot = 7,
    /// An earlier boot ended without sealing the store (a crash or a power
    /// cut) while write-intent marks were off (during a snapshot, or by a
    /// build without them): nothing says what that boot wrote after the
    /// store's last checkpoint.
    UncleanShutdown = 9,
}

impl Reset {
    /// A line for the kernel log and the tool.
    pub fn describe(self) -> &'static str {
        match self {
            Reset::NewStore => "the store is new",
            Reset::StoreDamaged => "the store failed its checks",
            Reset::OtherDevice => "the store belongs to another device",
            Reset::Resized => "the device's size changed",
            Reset::BlockSize => "the tracking block size changed",
            Reset::WrittenUntracked => "the device was written while untracked",
            Reset::UncleanSameBoot => {
                "tracking stopped without sealing the store (a crash, or a removal without detach)"
            }
            Reset::UncleanShutdown => {
                "the last boot ended without sealing the store while write-intent marks were off (a crash or power cut during a snapshot)"
            }
        }
    }

    /// The reason numbered `n` (as the ABI reports it), if there is one.
    pub fn from_number(n: u32) -> Option<Self> {
        [
            Reset::NewStore,
            Reset::StoreDamaged,
            Reset::OtherDevice,
            Reset::Resized,
            Reset::BlockSize,
            Reset::WrittenUntracked,
            Reset::UncleanSameBoot,
            Reset::UncleanShutdown,
        ]
        .into_iter()
        .find(|r| *r as u32 == n)
    }
}

/// What the device is now, for [`continuity`].
#[derive(Clone, Copy, Debug)]
pub struct DeviceNow<'a> {
    pub capacity: u64,
    pub block_shift: u32,
    pub identity: &'a [u8; IDENTITY_BYTES],
    pub boot_id: &'a [u8; 16],
    /// Sectors written to the device since it appeared in this boot.
    pub written: u64,
}

/// Whether the changes recorded in the store (header `h`) may be taken up
/// by a tracker attaching to the device as it is now; if not, why a new
/// generation starts.
///
/// The test sees a write made in this boot before the attach (the
/// device's write counter), a store made for another device or size, and
/// a store left unsealed. It cannot see a write made while the device was
/// attached to another system or another boot without the module (the
/// seal of the last detach is all that speaks for that time): the boot
/// scripts attach before any file system is mounted read-write, and the
/// documentation says what this leaves out.
pub fn continuity(h: &Header, now: &DeviceNow<'_>) -> Result<(), Reset> {
    if &h.identity != now.identity {
        return Err(Reset::OtherDevice);
    }
    if h.capacity != now.capacity {
        return Err(Reset::Resized);
    }
    if h.block_shift != now.block_shift {
        return Err(Reset::BlockSize);
    }
    if &h.boot_id == now.boot_id {
        // Detached and attached again in one boot (module upgrade): every
        // write since the seal shows in the counter.
        if !h.clean {
            return Err(Reset::UncleanSameBoot);
        }
        if now.written != h.written {
            return Err(Reset::WrittenUntracked);
        }
    } else if now.written != 0 {
        // A new boot: the counter started at zero when the device appeared.
        return Err(Reset::WrittenUntracked);
    }
    Ok(())
}

/// Whether what header `h` says of the time after its checkpoint lets a
/// tracker in the boot `boot_id` take the store up: a seal, or, from an
/// earlier boot, write-intent marks (which the caller then replays). A
/// store left in use in this same boot, or by a boot without marks, is
/// not taken up.
pub fn require_marks(h: &Header, boot_id: &[u8; 16]) -> Result<(), Reset> {
    match (h.clean, h.intent, &h.boot_id == boot_id) {
        (true, _, _) => Ok(()),
        (false, _, true) => Err(Reset::UncleanSameBoot),
        (false, true, false) => Ok(()),
        (false, false, false) => Err(Reset::UncleanShutdown),
    }
}

/// Sets bit `i` of a bitmap in `bytes`; whether it was clear.
fn set_bit(bytes: &mut [u8], i: usize) -> bool {
    match bytes.get_mut(i / 8) {
        Some(b) => {
            let m = 1u8 << (i % 8);
            let was = *b & m == 0;
            *b |= m;
            was
        }
        None => false,
    }
}

fn bit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

fn byte(bytes: &[u8], k: usize) -> u8 {
    bytes.get(k).copied().unwrap_or(0)
}

/// Bits `[from, to)` of a byte (`to` at most 8).
fn span_mask(from: usize, to: usize) -> u8 {
    let upto = |n: usize| ((1u16 << n.min(8)) - 1) as u8;
    upto(to) & !upto(from)
}

/// Tracking blocks marked together in the write-intent bitmap: a group is
/// aligned, and lies in one intent block (whose payload holds a whole
/// number of groups). After a crash, every block of a group one write
/// reached counts as changed.
pub const MARK_GROUP: u32 = 64;
const GROUP_BYTES: usize = MARK_GROUP as usize / 8;
const _: () = assert!(PAYLOAD / GROUP_BYTES * GROUP_BYTES == PAYLOAD);

/// What [`Intent::note`] says of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Note {
    /// Every block it touches is marked in the store: it may complete.
    Durable,
    /// It must wait until flush `ticket` has completed.
    Wait(u64),
}

/// The write-intent bitmap of one epoch, in memory, in three bitmaps of
/// `block_count` bits: which tracking blocks are marked in the store
/// (`durable`), which are being written there by the flush in flight
/// (`inflight`), and which are marked here only (`pending`, for the next
/// flush); and two of one bit per intent block: those with pending bits
/// (`dirty`) and those the flush in flight writes (`writing`). The caller
/// provides the memory, zeroed.
///
/// Flushes are numbered from 1, one in flight at a time: a write that
/// finds a block not durable waits for the flush that carries its bit,
/// [`Intent::begin_flush`] takes what is pending, and [`Intent::flushed`]
/// makes it durable. Only what a flush wrote is ever taken as durable.
/// `B` is the memory: `&mut [u8]`, a `Vec` or a `KVec`.
pub struct Intent<B> {
    durable: B,
    inflight: B,
    pending: B,
    dirty: B,
    writing: B,
    block_count: u32,
    /// Number of the flush in flight, or of the last one completed.
    issued: u64,
    completed: u64,
    /// Something is pending.
    any_pending: bool,
}

/// A flush to do: write the intent blocks of [`Intent::flush_blocks`]
/// durably (FUA, or writes then a flush of the device), then call
/// [`Intent::flushed`] with `ticket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flush {
    pub ticket: u64,
}

/// The memory an [`Intent`] of `block_count` blocks needs: bytes of each
/// of its three block bitmaps, and of each of its two intent block ones.
pub fn intent_bytes(block_count: u32) -> (usize, usize) {
    let blocks = Layout::new(block_count).intent_blocks() as usize;
    ((block_count as usize).div_ceil(8), blocks.div_ceil(8))
}

impl<B: core::ops::DerefMut<Target = [u8]>> Intent<B> {
    /// An empty bitmap (a new epoch), in zeroed memory of the sizes
    /// [`intent_bytes`] gives.
    pub fn new(bits: [B; 3], blocks: [B; 2], block_count: u32) -> Result<Self, StoreError> {
        let (nb, nd) = intent_bytes(block_count);
        if bits.iter().any(|b| b.len() < nb) || blocks.iter().any(|b| b.len() < nd) {
            return Err(StoreError::Short);
        }
        let [durable, inflight, pending] = bits;
        let [dirty, writing] = blocks;
        Ok(Self {
            durable,
            inflight,
            pending,
            dirty,
            writing,
            block_count,
            issued: 0,
            completed: 0,
            any_pending: false,
        })
    }

    /// A write to tracking blocks `[first, end)`: whether it may complete
    /// now, or which flush it waits for. A block neither durable nor in
    /// flight is marked with its whole group of [`MARK_GROUP`] blocks, so
    /// that the first writes to its neighbours find their marks on the way
    /// or durable. Works a byte (8 blocks) at a time: it runs under the
    /// tracker's lock, for discards of a whole device too.
    pub fn note(&mut self, first: u32, end: u32) -> Note {
        let end = end.min(self.block_count);
        if first >= end {
            return Note::Durable;
        }
        let (lo, hi) = (first as usize, end as usize);
        let mut wait = None;
        let mut marked = None;
        for k in lo / 8..=(hi - 1) / 8 {
            let from = lo.max(k * 8) - k * 8;
            let to = hi.min(k * 8 + 8) - k * 8;
            let mask = span_mask(from, to);
            let durable = byte(&self.durable, k);
            if durable & mask == mask {
                continue;
            }
            let ticket = if (durable | byte(&self.inflight, k)) & mask == mask {
                self.issued
            } else {
                let group = k / GROUP_BYTES;
                if marked != Some(group) {
                    self.mark_group(group);
                    marked = Some(group);
                }
                self.issued + 1
            };
            wait = wait.max(Some(ticket));
        }
        wait.map_or(Note::Durable, Note::Wait)
    }

    /// Marks every block of group `group` that is neither durable nor in
    /// flight as pending.
    fn mark_group(&mut self, group: usize) {
        let start = group * GROUP_BYTES;
        let mut any = false;
        for k in start..start + GROUP_BYTES {
            let valid = span_mask(0, (self.block_count as usize).saturating_sub(k * 8).min(8));
            let add = valid & !(byte(&self.durable, k) | byte(&self.inflight, k));
            if let Some(p) = self.pending.get_mut(k) {
                any |= add & !*p != 0;
                *p |= add;
            }
        }
        if any {
            self.any_pending = true;
            let first = (start * 8) as u32;
            set_bit(&mut self.dirty, Layout::intent_bit(first).0 as usize);
        }
    }

    /// Starts the next flush, if something is pending and none is in
    /// flight: the caller writes each intent block that
    /// [`Intent::flush_blocks`] names, with [`Intent::block_payload`],
    /// durably.
    pub fn begin_flush(&mut self) -> Option<Flush> {
        if !self.any_pending || self.issued > self.completed {
            return None;
        }
        for (f, p) in self.inflight.iter_mut().zip(self.pending.iter_mut()) {
            *f |= *p;
            *p = 0;
        }
        for (w, d) in self.writing.iter_mut().zip(self.dirty.iter_mut()) {
            *w = *d;
            *d = 0;
        }
        self.issued += 1;
        self.any_pending = false;
        Some(Flush {
            ticket: self.issued,
        })
    }

    /// Intent blocks the flush in flight writes.
    pub fn flush_blocks(&self) -> impl Iterator<Item = u32> + '_ {
        let n = Layout::new(self.block_count).intent_blocks();
        (0..n).filter(|&i| bit(&self.writing, i as usize))
    }

    /// The payload of intent block `i` as a flush writes it: every bit
    /// marked, durable or not (more bits than the flush carries is safe).
    pub fn block_payload(&self, i: u32, out: &mut [u8]) {
        let start = i as usize * PAYLOAD;
        for (k, o) in out.iter_mut().take(PAYLOAD).enumerate() {
            let at = start + k;
            let get = |m: &[u8]| m.get(at).copied().unwrap_or(0);
            *o = get(&self.durable) | get(&self.inflight) | get(&self.pending);
        }
    }

    /// Flush `ticket` completed: what it wrote is durable. Returns the
    /// last flush completed: writes waiting for it, or an earlier one, may
    /// complete.
    pub fn flushed(&mut self, ticket: u64) -> u64 {
        if ticket != self.issued || ticket == self.completed {
            return self.completed;
        }
        for (d, f) in self.durable.iter_mut().zip(self.inflight.iter_mut()) {
            *d |= *f;
            *f = 0;
        }
        self.writing.iter_mut().for_each(|b| *b = 0);
        self.completed = ticket;
        ticket
    }

    /// The last flush completed.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// Whether a flush is in flight.
    pub fn in_flight(&self) -> bool {
        self.issued > self.completed
    }

    /// Starts a new epoch (after a checkpoint, with no flush in flight):
    /// every bit cleared, nothing pending. Flushes keep their numbering, so
    /// the caller lets every write waiting for one go through [`Intent::note`]
    /// again.
    pub fn clear(&mut self) {
        for m in [
            &mut self.durable,
            &mut self.inflight,
            &mut self.pending,
            &mut self.dirty,
            &mut self.writing,
        ] {
            m.iter_mut().for_each(|b| *b = 0);
        }
        self.any_pending = false;
        self.completed = self.issued;
    }
}

/// After a crash: every tracking block whose bit is set in an intent
/// block's payload (block `i` of the region) may have been written with
/// number `active`; `mark` is called with each such block.
pub fn replay_intent(payload: &[u8], i: u32, block_count: u32, mut mark: impl FnMut(u32)) {
    let base = u64::from(i) * (PAYLOAD * 8) as u64;
    for (k, &byte) in payload.iter().take(PAYLOAD).enumerate() {
        if byte == 0 {
            continue;
        }
        for j in 0..8 {
            if byte & (1 << j) != 0 {
                let b = base + (k * 8 + j) as u64;
                if b < u64::from(block_count) {
                    mark(b as u32);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "tests/persist.rs"]
mod tests;

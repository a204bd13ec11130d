//! The fixed-layout parts of a shard file, as specified in `docs/FORMAT.md`: header, record header,
//! index entry and footer. Every multi-byte integer is little-endian. Each part validates itself
//! before anything after it is trusted.

use super::error::ShardError;

/// First 8 bytes of every shard.
pub(crate) const SHARD_MAGIC: [u8; 8] = *b"FKSHARD\0";
/// Last 8 bytes of every shard.
pub(crate) const FOOTER_MAGIC: [u8; 8] = *b"FKSHEND\0";
/// First 4 bytes of every record.
pub(crate) const RECORD_MAGIC: [u8; 4] = *b"FKRC";
/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u16 = 1;
/// Size of the shard header in bytes.
pub const HEADER_LEN: usize = 32;
/// Size of the footer in bytes.
pub const FOOTER_LEN: usize = 32;
/// Size of a record header in bytes (the origin path and the payload follow it).
pub const RECORD_HEADER_LEN: usize = 48;
/// Size of one index entry in bytes.
pub const INDEX_ENTRY_LEN: usize = 16;
/// Largest payload a record may hold; larger claims are rejected before any allocation.
pub(crate) const MAX_PAYLOAD_LEN: u32 = 64 << 20;
/// Largest origin path length in bytes.
pub const MAX_PATH_LEN: u16 = 4096;
/// Largest image a record may hold, in pixels: its RGB8 pixels fit the payload limit (64 MiB), so
/// no record, however compressed, decodes to more than that.
pub const MAX_RECORD_PIXELS: u64 = MAX_PAYLOAD_LEN as u64 / 3;
/// The value that stands for "unknown" in a record's class field.
pub const UNKNOWN_CLASS: u32 = u32::MAX;
/// The value that stands for "unknown" in a record's age field.
pub const UNKNOWN_AGE: u16 = u16::MAX;
/// The value that stands for "unknown" in a record's gender field.
pub(crate) const UNKNOWN_GENDER: u8 = 0xFF;

/// How a record's image bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JPEG at `--quality` (smallest; quality is in the manifest).
    Jpeg,
    /// PNG, lossless.
    Png,
    /// Raw interleaved RGB8, `width * height * 3` bytes, row-major: fastest to read.
    Raw,
    /// Raw RGB8 as above, compressed as one zstd frame: lossless.
    RawZstd,
}

impl Encoding {
    /// The code stored in the record header.
    pub fn code(self) -> u8 {
        match self {
            Encoding::Jpeg => 0,
            Encoding::Png => 1,
            Encoding::Raw => 2,
            Encoding::RawZstd => 3,
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Encoding::Jpeg,
            1 => Encoding::Png,
            2 => Encoding::Raw,
            3 => Encoding::RawZstd,
            _ => return None,
        })
    }
}

/// A person's gender label as the training tasks use it: code 0 is male, 1 female (UTKFace's
/// convention), which is also the class index of the gender head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Gender {
    /// Code 0 (UTKFace's 0).
    Male,
    /// Code 1 (UTKFace's 1).
    Female,
}

impl Gender {
    /// The code stored in the record header (and the class index of the Gender task).
    pub fn code(self) -> u8 {
        match self {
            Gender::Male => 0,
            Gender::Female => 1,
        }
    }
}

/// The shard header: 32 bytes at offset 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Format version (1).
    pub version: u16,
    /// Flags; none are defined in version 1, so readers reject any set bit.
    pub flags: u16,
    /// This shard's number within its dataset.
    pub shard_number: u32,
}

impl Header {
    /// Serialises the header, CRC included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&SHARD_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..16].copy_from_slice(&self.shard_number.to_le_bytes());
        // bytes 16..28 are reserved and zero
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and validates a header.
    pub fn decode(b: &[u8]) -> Result<Self, ShardError> {
        if b.len() < HEADER_LEN {
            return Err(ShardError::corrupt(0, "file shorter than the 32-byte header"));
        }
        if b[0..8] != SHARD_MAGIC {
            return Err(ShardError::corrupt(0, "bad magic: not a facekit shard"));
        }
        if crc32fast::hash(&b[0..28]) != le_u32(b, 28) {
            return Err(ShardError::corrupt(0, "header CRC mismatch"));
        }
        let header = Header { version: le_u16(b, 8), flags: le_u16(b, 10), shard_number: le_u32(b, 12) };
        if header.version != FORMAT_VERSION {
            return Err(ShardError::corrupt(8, format!("unsupported format version {}", header.version)));
        }
        if header.flags != 0 {
            return Err(ShardError::corrupt(10, format!("unknown flags {:#06x}", header.flags)));
        }
        if b[16..28].iter().any(|&x| x != 0) {
            return Err(ShardError::corrupt(16, "reserved header bytes are not zero"));
        }
        Ok(header)
    }
}

/// The footer: the last 32 bytes of a shard, pointing at the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// Byte offset of the first index entry.
    pub index_offset: u64,
    /// Number of records (and index entries).
    pub record_count: u64,
    /// CRC32 of the whole index (all entries).
    pub index_crc32: u32,
}

impl Footer {
    /// Serialises the footer, CRC included.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(&self.index_offset.to_le_bytes());
        b[8..16].copy_from_slice(&self.record_count.to_le_bytes());
        b[16..20].copy_from_slice(&self.index_crc32.to_le_bytes());
        let crc = crc32fast::hash(&b[0..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b[24..32].copy_from_slice(&FOOTER_MAGIC);
        b
    }

    /// Parses the footer of a file of `file_len` bytes and checks that it is consistent with that
    /// length, so that no later read can go out of bounds or allocate more than the file holds.
    pub fn decode(b: &[u8], file_len: u64) -> Result<Self, ShardError> {
        let at = file_len.saturating_sub(FOOTER_LEN as u64);
        if b.len() != FOOTER_LEN || file_len < (HEADER_LEN + FOOTER_LEN) as u64 {
            return Err(ShardError::corrupt(at, "file too short to hold a footer (truncated?)"));
        }
        if b[24..32] != FOOTER_MAGIC {
            return Err(ShardError::corrupt(at + 24, "footer magic missing (truncated or unfinished shard)"));
        }
        if crc32fast::hash(&b[0..20]) != le_u32(b, 20) {
            return Err(ShardError::corrupt(at, "footer CRC mismatch"));
        }
        let footer = Footer { index_offset: le_u64(b, 0), record_count: le_u64(b, 8), index_crc32: le_u32(b, 16) };
        // The index must sit exactly between the records and the footer.
        let max_records = (file_len - (HEADER_LEN + FOOTER_LEN) as u64) / (INDEX_ENTRY_LEN + RECORD_HEADER_LEN) as u64;
        if footer.record_count > max_records {
            return Err(ShardError::corrupt(
                at + 8,
                format!("footer claims {} records, the file can hold at most {max_records}", footer.record_count),
            ));
        }
        let expected_index = file_len - FOOTER_LEN as u64 - footer.record_count * INDEX_ENTRY_LEN as u64;
        if footer.index_offset != expected_index {
            return Err(ShardError::corrupt(
                at,
                format!("footer points at index offset {}, expected {expected_index}", footer.index_offset),
            ));
        }
        Ok(footer)
    }
}

/// One index entry: where a record starts and how long it is, plus its class for label-only scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Byte offset of the record's header.
    pub offset: u64,
    /// Total record length: header, origin path and payload.
    pub len: u32,
    /// The record's identity class (`UNKNOWN_CLASS` when unknown), copied from its header.
    pub class_id: u32,
}

impl IndexEntry {
    /// Serialises the entry.
    pub fn encode(&self) -> [u8; INDEX_ENTRY_LEN] {
        let mut b = [0u8; INDEX_ENTRY_LEN];
        b[0..8].copy_from_slice(&self.offset.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.class_id.to_le_bytes());
        b
    }

    /// Parses an entry (no validation; the reader checks entries against each other).
    pub fn decode(b: &[u8]) -> Self {
        IndexEntry { offset: le_u64(b, 0), len: le_u32(b, 8), class_id: le_u32(b, 12) }
    }
}

/// The fixed part of a record, 48 bytes, followed by `path_len` bytes of UTF-8 origin path and
/// `payload_len` bytes of encoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Length of the encoded image in bytes.
    pub payload_len: u32,
    /// Identity class, or `UNKNOWN_CLASS`.
    pub class_id: u32,
    /// Source number (index into the manifest's `sources`).
    pub source: u16,
    /// Encoding code (see [`Encoding`]).
    pub encoding: u8,
    /// Gender code: 0 male, 1 female, 0xFF unknown.
    pub gender: u8,
    /// Age in years, or `UNKNOWN_AGE`.
    pub age: u16,
    /// Image width in pixels.
    pub width: u16,
    /// Image height in pixels.
    pub height: u16,
    /// Length of the origin path in bytes.
    pub path_len: u16,
    /// First 16 bytes of the SHA-256 of the original file's bytes.
    pub origin_sha256: [u8; 16],
    /// CRC32 over header bytes 0..40, the path and the payload.
    pub crc32: u32,
}

impl RecordHeader {
    /// Serialises the header with the given CRC field.
    pub fn encode(&self) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0u8; RECORD_HEADER_LEN];
        b[0..4].copy_from_slice(&RECORD_MAGIC);
        b[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        b[8..12].copy_from_slice(&self.class_id.to_le_bytes());
        b[12..14].copy_from_slice(&self.source.to_le_bytes());
        b[14] = self.encoding;
        b[15] = self.gender;
        b[16..18].copy_from_slice(&self.age.to_le_bytes());
        b[18..20].copy_from_slice(&self.width.to_le_bytes());
        b[20..22].copy_from_slice(&self.height.to_le_bytes());
        b[22..24].copy_from_slice(&self.path_len.to_le_bytes());
        b[24..40].copy_from_slice(&self.origin_sha256);
        b[40..44].copy_from_slice(&self.crc32.to_le_bytes());
        // bytes 44..48 are reserved and zero (covered by the index bounds, not the CRC)
        b
    }

    /// Parses a record header found at byte `offset` of its shard; checks magic and field ranges,
    /// not the CRC (that needs the payload).
    pub fn decode(b: &[u8], offset: u64) -> Result<Self, ShardError> {
        if b.len() < RECORD_HEADER_LEN {
            return Err(ShardError::corrupt(offset, "record shorter than its 48-byte header"));
        }
        if b[0..4] != RECORD_MAGIC {
            return Err(ShardError::corrupt(offset, "bad record magic"));
        }
        let mut origin_sha256 = [0u8; 16];
        origin_sha256.copy_from_slice(&b[24..40]);
        let h = RecordHeader {
            payload_len: le_u32(b, 4),
            class_id: le_u32(b, 8),
            source: le_u16(b, 12),
            encoding: b[14],
            gender: b[15],
            age: le_u16(b, 16),
            width: le_u16(b, 18),
            height: le_u16(b, 20),
            path_len: le_u16(b, 22),
            origin_sha256,
            crc32: le_u32(b, 40),
        };
        if h.payload_len > MAX_PAYLOAD_LEN {
            return Err(ShardError::corrupt(offset + 4, format!("payload length {} exceeds the limit", h.payload_len)));
        }
        if h.path_len > MAX_PATH_LEN {
            return Err(ShardError::corrupt(offset + 22, format!("path length {} exceeds the limit", h.path_len)));
        }
        if Encoding::from_code(h.encoding).is_none() {
            return Err(ShardError::corrupt(offset + 14, format!("unknown encoding code {}", h.encoding)));
        }
        if h.gender > 1 && h.gender != UNKNOWN_GENDER {
            return Err(ShardError::corrupt(offset + 15, format!("invalid gender code {}", h.gender)));
        }
        if b[44..48].iter().any(|&x| x != 0) {
            return Err(ShardError::corrupt(offset + 44, "reserved record bytes are not zero"));
        }
        Ok(h)
    }

    /// Total record length: header, path and payload.
    pub(crate) fn record_len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.path_len as u64 + self.payload_len as u64
    }
}

/// CRC32 of a record as stored: header bytes 0..40, then path, then payload.
pub(crate) fn record_crc(header_bytes: &[u8], path: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header_bytes[0..40]);
    h.update(path);
    h.update(payload);
    h.finalize()
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

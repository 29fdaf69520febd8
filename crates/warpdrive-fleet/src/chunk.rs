//! The chunk format: where a chunk of an object version lives in the shared store, and the
//! bytes that make it self-validating.
//!
//! **Key.** A source version is named by its [`Identity`]: the backend's kind and location
//! (account and container, or bucket, and the endpoint), the object's key, its ETag (or
//! generation), its size and the chunk size. Each field is written with its length before
//! it and hashed with SHA-256 under a domain tag that carries the format version, so no two
//! identities share a hash and object-key bytes never appear in the store. Chunk `i` of the
//! version is `wd1/<source>/<h[0..2]>/<h>-<i>` under the tier's prefix, where `<source>` is a
//! short hash of the backend's location alone (so chunks can be counted per backend by
//! listing one prefix) and the two-character level spreads keys over the store's partitions.
//!
//! **Chunk.** A header, then the data. Numbers are little-endian. The data is checked in
//! pieces of [`PIECE`] bytes (the last one shorter), each with its own CRC32C, so a reader can
//! use each piece as soon as it has arrived and passed, without waiting for the whole chunk.
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `WDCHUNK\0` |
//! | 8..10 | format version (1) |
//! | 10..12 | header length `H` = 72 + 4 × pieces |
//! | 12..44 | the identity's hash |
//! | 44..52 | chunk index |
//! | 52..60 | offset of the data in the object |
//! | 60..64 | length of the data |
//! | 64..68 | number of pieces |
//! | 68..H-4 | CRC32C of each piece |
//! | H-4..H | CRC32C of bytes 0..H-4 |
//!
//! **Reading** a chunk checks, in order: the header's own CRC32C (a damaged header), the
//! magic and version, that the hash, index, offset and length are those of the chunk that was
//! asked for (a chunk copied under another key, or written for another version), then each
//! piece's CRC32C as it arrives, and that the data is exactly that long (truncated or
//! padded). The first check that fails is the reason the chunk is refused ([`Invalid`]); the
//! pieces that passed before it are right and may be used.

use bytes::{BufMut, Bytes, BytesMut};
use sha2::{Digest, Sha256};

/// The chunk format's version: in the key prefix, the hash's domain tag and the header.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes of a chunk's data checked by one CRC32C: a reader uses each piece once it passed.
pub const PIECE: u64 = 1 << 20;
/// The header's length before the piece checksums (and its own checksum after them).
const FIXED: usize = 68;
/// The most pieces a chunk has (256 MiB, the largest chunk size, of 1 MiB pieces).
const MAX_PIECES: usize = 256;
const MAGIC: &[u8; 8] = b"WDCHUNK\0";
/// The key prefix of this format's chunks (under the tier's own prefix).
pub const KEY_ROOT: &str = "wd1";

/// The header length of a chunk of `len` data bytes.
pub fn header_len(len: u64) -> usize {
    FIXED + 4 * len.div_ceil(PIECE) as usize + 4
}

/// One version of one object, as the shared tier names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// `azure`, `s3`, `gcs`.
    pub kind: String,
    /// Where the backend's objects are: `azure://account/container`, `s3://bucket`, with the
    /// endpoint when one is set (two emulators' buckets of one name are different stores).
    pub location: String,
    /// The object's full key in its bucket (the backend's prefix included).
    pub key: String,
    /// The version: ETag, or generation.
    pub etag: String,
    pub size: u64,
    /// Chunks of one size are not chunks of another: the index means another range.
    pub chunk_size: u64,
}

/// Appends `field` with its length before it.
fn field(h: &mut Sha256, field: &[u8]) {
    h.update((field.len() as u64).to_le_bytes());
    h.update(field);
}

impl Identity {
    /// The version's hash: every field, length-prefixed, under the format's domain tag.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        field(
            &mut h,
            format!("warpdrive-chunk/{FORMAT_VERSION}").as_bytes(),
        );
        field(&mut h, self.kind.as_bytes());
        field(&mut h, self.location.as_bytes());
        field(&mut h, self.key.as_bytes());
        field(&mut h, self.etag.as_bytes());
        h.update(self.size.to_le_bytes());
        h.update(self.chunk_size.to_le_bytes());
        h.finalize().into()
    }

    /// Chunks in this version.
    pub fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    /// The range of the object chunk `index` holds.
    pub fn range(&self, index: u64) -> std::ops::Range<u64> {
        let start = index * self.chunk_size;
        start.min(self.size)..(start + self.chunk_size).min(self.size)
    }
}

/// The short name of a backend's location in chunk keys (16 hex digits of its hash).
pub fn source_label(kind: &str, location: &str) -> String {
    let mut h = Sha256::new();
    field(
        &mut h,
        format!("warpdrive-source/{FORMAT_VERSION}").as_bytes(),
    );
    field(&mut h, kind.as_bytes());
    field(&mut h, location.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// The key of chunk `index` of `id`, below the tier's prefix.
pub fn key(id: &Identity, index: u64) -> String {
    let h = hex::encode(id.hash());
    format!(
        "{KEY_ROOT}/{}/{}/{h}-{index}",
        source_label(&id.kind, &id.location),
        &h[..2]
    )
}

/// Why a chunk read from the store was refused (the metric's `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// Shorter than a header, or its header's checksum fails.
    #[error("damaged header")]
    Header,
    /// Not a chunk of a format this daemon reads.
    #[error("unknown format")]
    Format,
    /// A whole, intact chunk of another object, version or index.
    #[error("chunk of another object or version")]
    Identity,
    /// The data is not as long as the header and the request say.
    #[error("truncated or padded")]
    Length,
    /// The data's checksum fails.
    #[error("damaged data")]
    Data,
}

impl Invalid {
    pub fn label(self) -> &'static str {
        match self {
            Invalid::Header => "header",
            Invalid::Format => "format",
            Invalid::Identity => "identity",
            Invalid::Length => "length",
            Invalid::Data => "data",
        }
    }
}

/// The bytes of chunk `index` of `id`: header, then `data` (which must be its whole range).
pub fn encode(id: &Identity, index: u64, data: &[u8]) -> Bytes {
    let range = id.range(index);
    debug_assert_eq!(data.len() as u64, range.end - range.start);
    let h = header_len(data.len() as u64);
    let mut b = BytesMut::with_capacity(h + data.len());
    b.put_slice(MAGIC);
    b.put_u16_le(FORMAT_VERSION);
    b.put_u16_le(h as u16);
    b.put_slice(&id.hash());
    b.put_u64_le(index);
    b.put_u64_le(range.start);
    b.put_u32_le(data.len() as u32);
    b.put_u32_le(data.len().div_ceil(PIECE as usize) as u32);
    for piece in data.chunks(PIECE as usize) {
        b.put_u32_le(crc32c::crc32c(piece));
    }
    let crc = crc32c::crc32c(&b[..h - 4]);
    b.put_u32_le(crc);
    b.put_slice(data);
    b.freeze()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

/// A chunk's header, checked against the chunk that was asked for.
#[derive(Debug, Clone)]
pub struct Header {
    /// Bytes before the data.
    pub len: usize,
    /// Data bytes.
    pub data_len: u64,
    /// One CRC32C per piece.
    pub pieces: Vec<u32>,
}

impl Header {
    /// The header at the start of `prefix`, checked against chunk `index` of `id`; `Ok(None)`
    /// while `prefix` is too short to hold it.
    pub fn read(id: &Identity, index: u64, prefix: &[u8]) -> Result<Option<Header>, Invalid> {
        if prefix.len() < 12 {
            return Ok(None);
        }
        // The length comes from bytes not yet checked: bounded before it is trusted.
        let h = u16_at(prefix, 10) as usize;
        if !(FIXED + 4..=FIXED + 4 * MAX_PIECES + 4).contains(&h) {
            return Err(Invalid::Header);
        }
        if prefix.len() < h {
            return Ok(None);
        }
        if u32_at(prefix, h - 4) != crc32c::crc32c(&prefix[..h - 4]) {
            return Err(Invalid::Header);
        }
        if &prefix[..8] != MAGIC || u16_at(prefix, 8) != FORMAT_VERSION {
            return Err(Invalid::Format);
        }
        let range = id.range(index);
        let len = range.end - range.start;
        let n = u32_at(prefix, 64) as usize;
        if prefix[12..44] != id.hash()
            || u64_at(prefix, 44) != index
            || u64_at(prefix, 52) != range.start
            || u64::from(u32_at(prefix, 60)) != len
            || n as u64 != len.div_ceil(PIECE)
            || h != header_len(len)
        {
            return Err(Invalid::Identity);
        }
        Ok(Some(Header {
            len: h,
            data_len: len,
            pieces: (0..n).map(|i| u32_at(prefix, FIXED + 4 * i)).collect(),
        }))
    }

    /// Bytes of piece `i`.
    pub fn piece_len(&self, i: usize) -> u64 {
        self.data_len.saturating_sub(i as u64 * PIECE).min(PIECE)
    }

    /// Whether `data` is piece `i`.
    pub fn check(&self, i: usize, data: &[u8]) -> bool {
        self.pieces.get(i) == Some(&crc32c::crc32c(data))
    }
}

/// The data of chunk `index` of `id` from `bytes` read from the store, if they are exactly
/// that chunk.
pub fn decode(id: &Identity, index: u64, bytes: Bytes) -> Result<Bytes, Invalid> {
    let Some(h) = Header::read(id, index, &bytes)? else {
        return Err(Invalid::Header);
    };
    let data = bytes.slice(h.len..);
    for (i, piece) in data.chunks(PIECE as usize).enumerate() {
        if i >= h.pieces.len() {
            break;
        }
        let want = h.piece_len(i) as usize;
        if piece.len() < want {
            return Err(Invalid::Length);
        }
        if !h.check(i, piece) {
            return Err(Invalid::Data);
        }
    }
    if data.len() as u64 != h.data_len {
        return Err(Invalid::Length);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(key: &str, etag: &str, size: u64) -> Identity {
        Identity {
            kind: "s3".into(),
            location: "s3://bucket@http://127.0.0.1:9000".into(),
            key: key.into(),
            etag: etag.into(),
            size,
            chunk_size: 1 << 20,
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_chunk_reads_back_as_itself() {
        let v = id("train/shard-0001.tar", "\"abc\"", 2_500_000);
        assert_eq!(v.chunks(), 3);
        for i in 0..3 {
            let r = v.range(i);
            let d = data((r.end - r.start) as usize, i as u8);
            let c = encode(&v, i, &d);
            assert_eq!(c.len(), header_len(d.len() as u64) + d.len());
            assert_eq!(decode(&v, i, c).expect("valid")[..], d[..]);
        }
    }

    #[test]
    fn keys_hide_the_object_key_and_differ_per_version_and_index() {
        let v = id("secret/customer-42/part.bin", "\"e1\"", 3 << 20);
        let k = key(&v, 0);
        assert!(!k.contains("secret") && !k.contains("customer"), "{k}");
        assert!(k.starts_with("wd1/"), "{k}");
        assert_ne!(k, key(&v, 1));
        assert_ne!(
            k,
            key(
                &Identity {
                    etag: "\"e2\"".into(),
                    ..v.clone()
                },
                0
            )
        );
        assert_ne!(
            k,
            key(
                &Identity {
                    chunk_size: 2 << 20,
                    ..v.clone()
                },
                0
            )
        );
        // The source level is the backend's alone: every object of a backend shares it.
        let other = id("another", "\"x\"", 1);
        assert_eq!(k.split('/').nth(1), key(&other, 0).split('/').nth(1));
    }

    #[test]
    fn length_prefixes_keep_shifted_fields_apart() {
        // Without lengths, ("ab", "c") and ("a", "bc") would hash the same bytes.
        let a = Identity {
            key: "ab".into(),
            etag: "c".into(),
            ..id("", "", 10)
        };
        let b = Identity {
            key: "a".into(),
            etag: "bc".into(),
            ..id("", "", 10)
        };
        assert_ne!(a.hash(), b.hash());
    }

    /// Every way a chunk can be wrong is refused, with its reason.
    #[test]
    fn damaged_swapped_and_foreign_chunks_are_refused_by_reason() {
        let v = id("k", "\"1\"", 3 << 20);
        let d = data(1 << 20, 7);
        let good = encode(&v, 1, &d);
        let flip = |at: usize| {
            let mut b = good.to_vec();
            b[at] ^= 0x40;
            Bytes::from(b)
        };
        let h = header_len(1 << 20);
        assert_eq!(decode(&v, 1, flip(h + 1000)), Err(Invalid::Data));
        assert_eq!(decode(&v, 1, flip(20)), Err(Invalid::Header));
        assert_eq!(decode(&v, 1, good.slice(..h + 10)), Err(Invalid::Length));
        assert_eq!(decode(&v, 1, good.slice(..40)), Err(Invalid::Header));
        assert_eq!(decode(&v, 1, Bytes::new()), Err(Invalid::Header));
        let mut padded = good.to_vec();
        padded.push(0);
        assert_eq!(decode(&v, 1, Bytes::from(padded)), Err(Invalid::Length));
        // Another index of the same version (a chunk copied under the wrong key).
        assert_eq!(decode(&v, 2, good.clone()), Err(Invalid::Identity));
        // The same bytes asked for as another version or object.
        let v2 = Identity {
            etag: "\"2\"".into(),
            ..v.clone()
        };
        assert_eq!(decode(&v2, 1, good.clone()), Err(Invalid::Identity));
        let other = Identity {
            key: "other".into(),
            ..v.clone()
        };
        assert_eq!(decode(&other, 1, good.clone()), Err(Invalid::Identity));
        // A header re-written with valid checksums for another identity: still refused.
        let forged = encode(&other, 1, &d);
        assert_eq!(decode(&v, 1, forged), Err(Invalid::Identity));
        // An unknown format version, with a consistent header checksum.
        let mut future = good.to_vec();
        future[8] = 2;
        let crc = crc32c::crc32c(&future[..h - 4]);
        future[h - 4..h].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&v, 1, Bytes::from(future)), Err(Invalid::Format));
    }

    proptest! {
        /// Any single flipped byte, anywhere, is refused: no damaged chunk is ever read.
        #[test]
        fn any_flipped_byte_is_refused(at in 0usize..(header_len(5000) + 5000), bit in 0u8..8) {
            let v = id("k", "\"1\"", 5000);
            let d = data(5000, 3);
            let mut b = encode(&v, 0, &d).to_vec();
            b[at] ^= 1 << bit;
            prop_assert!(decode(&v, 0, Bytes::from(b)).is_err());
        }
    }
}

//! Whole-object checksums the stores keep: learnt from their answers, and checked against
//! cached bytes.
//!
//! The algorithm: every successful GET or HEAD answer passes the HTTP layer
//! ([`crate::attempts`]), which reads the object's checksum from its headers (below) and
//! remembers it by (URL path, ETag) in a bounded table per backend ([`Seen`]). When an object
//! is fully cached, the filesystem asks [`crate::Backend::store_checksum`] for its version's
//! checksum and hashes the cached bytes in order with a [`Hasher`]; the cache keeps the
//! checksum's text form ([`Checksum::to_string`]) so that later checks, and `warpdrive-ctl
//! verify` without a daemon, need no request.
//!
//! What each store gives, whole object only (no store offers a checksum of an arbitrary
//! range without a request header that would change how requests are signed):
//!
//! * **S3**: the ETag of an object uploaded in one PUT is the MD5 of its bytes, unless it is
//!   encrypted with SSE-KMS or SSE-C (the answer says so: `x-amz-server-side-encryption:
//!   aws:kms`, `x-amz-server-side-encryption-customer-algorithm`). A multipart upload's ETag
//!   is the MD5 of its parts' MD5s followed by `-N`; the part size is not in the answer, so it
//!   is checked under each part size uploaders commonly use that gives N parts
//!   ([`PART_SIZES_MIB`]) and counts as checked when one matches.
//! * **Azure**: the blob's `Content-MD5`, when it has one (Put Blob sets it; a blob committed
//!   from a block list only when its uploader set it). A GET of a range answers it in
//!   `x-ms-blob-content-md5`, HEAD and whole GETs in `Content-MD5`.
//! * **GCS**: `x-goog-hash` on every GET and HEAD: `crc32c` of the whole object (always) and
//!   `md5` (not for composite objects). CRC32C is used when present: it costs a fraction of
//!   MD5's CPU.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use md5::Digest;
use parking_lot::Mutex;

/// A whole-object checksum a store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Md5([u8; 16]),
    Crc32c(u32),
    /// An S3 multipart ETag: MD5 of the concatenated MD5s of `parts` parts.
    MultipartMd5 {
        digest: [u8; 16],
        parts: u32,
    },
}

/// Part sizes (MiB) that S3 uploaders commonly use: the AWS CLI and SDKs (8), boto3's
/// transfer manager (8), `object_store` and rclone (5, 10, 16), s5cmd (50), the console and
/// others (15, 25, 32, 64, 100, 128, 256, 512).
pub const PART_SIZES_MIB: [u64; 13] = [5, 8, 10, 15, 16, 25, 32, 50, 64, 100, 128, 256, 512];

impl Checksum {
    /// The checksum an S3 ETag stands for, if it is one (32 hex digits, optionally `-N`).
    pub fn from_s3_etag(etag: &str) -> Option<Checksum> {
        let tag = etag.trim_start_matches("W/").trim_matches('"');
        let (hex, parts) = match tag.split_once('-') {
            Some((h, n)) => (h, Some(n.parse::<u32>().ok().filter(|n| *n > 0)?)),
            None => (tag, None),
        };
        let digest = parse_hex16(hex)?;
        Some(match parts {
            Some(parts) => Checksum::MultipartMd5 { digest, parts },
            None => Checksum::Md5(digest),
        })
    }

    /// The algorithm's name, for logs and reports.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "MD5",
            Checksum::Crc32c(_) => "CRC32C",
            Checksum::MultipartMd5 { .. } => "multipart MD5",
        }
    }

    /// The text form the cache keeps; [`Checksum::parse`] reads it back.
    pub fn parse(s: &str) -> Option<Checksum> {
        let (alg, rest) = s.split_once(':')?;
        match alg {
            "md5" => Some(Checksum::Md5(parse_hex16(rest)?)),
            "crc32c" => Some(Checksum::Crc32c(u32::from_str_radix(rest, 16).ok()?)),
            "md5-parts" => {
                let (n, hex) = rest.split_once(':')?;
                Some(Checksum::MultipartMd5 {
                    digest: parse_hex16(hex)?,
                    parts: n.parse().ok().filter(|n| *n > 0)?,
                })
            }
            _ => None,
        }
    }

    /// A hasher for the bytes of an object of `size` bytes, fed in order.
    pub fn hasher(&self, size: u64) -> Hasher {
        let state = match *self {
            Checksum::Md5(want) => State::Md5(md5::Md5::new(), want),
            Checksum::Crc32c(want) => State::Crc32c(0, want),
            Checksum::MultipartMd5 { digest, parts } => {
                let mut sizes: Vec<u64> = PART_SIZES_MIB
                    .iter()
                    .map(|m| m << 20)
                    .chain([crate::PART_SIZE as u64])
                    .filter(|p| size.div_ceil(*p).max(1) == u64::from(parts))
                    .collect();
                sizes.sort_unstable();
                sizes.dedup();
                State::Parts {
                    want: digest,
                    candidates: sizes
                        .into_iter()
                        .map(|part| Candidate {
                            part,
                            filled: 0,
                            current: md5::Md5::new(),
                            outer: md5::Md5::new(),
                        })
                        .collect(),
                }
            }
        };
        Hasher { state }
    }
}

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checksum::Md5(d) => write!(f, "md5:{}", hex(d)),
            Checksum::Crc32c(c) => write!(f, "crc32c:{c:08x}"),
            Checksum::MultipartMd5 { digest, parts } => {
                write!(f, "md5-parts:{parts}:{}", hex(digest))
            }
        }
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex16(hex: &str) -> Option<[u8; 16]> {
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Hashes an object's bytes, fed in order, to compare with a [`Checksum`].
pub struct Hasher {
    state: State,
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.state {
            State::Md5(..) => "Hasher(MD5)",
            State::Crc32c(..) => "Hasher(CRC32C)",
            State::Parts { .. } => "Hasher(multipart MD5)",
        })
    }
}

enum State {
    Md5(md5::Md5, [u8; 16]),
    Crc32c(u32, u32),
    Parts {
        want: [u8; 16],
        candidates: Vec<Candidate>,
    },
}

/// One guess at a multipart upload's part size.
struct Candidate {
    part: u64,
    /// Bytes of the current part hashed so far.
    filled: u64,
    current: md5::Md5,
    /// Over the finished parts' digests.
    outer: md5::Md5,
}

impl Hasher {
    pub fn update(&mut self, data: &[u8]) {
        match &mut self.state {
            State::Md5(h, _) => h.update(data),
            State::Crc32c(c, _) => *c = crc32c::crc32c_append(*c, data),
            State::Parts { candidates, .. } => {
                for c in candidates {
                    let mut rest = data;
                    while !rest.is_empty() {
                        let take = ((c.part - c.filled) as usize).min(rest.len());
                        c.current.update(&rest[..take]);
                        c.filled += take as u64;
                        rest = &rest[take..];
                        if c.filled == c.part {
                            let d = std::mem::take(&mut c.current).finalize();
                            c.outer.update(d);
                            c.filled = 0;
                        }
                    }
                }
            }
        }
    }

    /// `Some(true)` when the bytes match, `Some(false)` when they do not, `None` when this
    /// checksum cannot tell (a multipart ETag none of whose candidate part sizes matched).
    pub fn matches(self) -> Option<bool> {
        match self.state {
            State::Md5(h, want) => Some(<[u8; 16]>::from(h.finalize()) == want),
            State::Crc32c(c, want) => Some(c == want),
            State::Parts { want, candidates } => candidates
                .into_iter()
                .any(|mut c| {
                    if c.filled > 0 {
                        let d = std::mem::take(&mut c.current).finalize();
                        c.outer.update(d);
                    }
                    <[u8; 16]>::from(c.outer.finalize()) == want
                })
                .then_some(true),
        }
    }
}

/// Which headers carry a checksum: the store's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Azure,
    S3,
    Gcs,
}

/// What one answer says about its object's checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// The store keeps this checksum of the version.
    Checksum(Checksum),
    /// The store keeps none that covers these bytes (an S3 object encrypted with SSE-KMS or
    /// SSE-C, whose ETag is no MD5; an Azure blob without `Content-MD5`).
    None,
}

/// The checksum an answer's headers give for the whole object, if the answer says.
pub(crate) fn from_headers(dialect: Dialect, ranged: bool, h: &http::HeaderMap) -> Option<Known> {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    let b64 = |v: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .ok()
    };
    match dialect {
        Dialect::S3 => {
            let encrypted = text("x-amz-server-side-encryption").is_some_and(|v| v != "AES256")
                || text("x-amz-server-side-encryption-customer-algorithm").is_some();
            if encrypted {
                return Some(Known::None);
            }
            text("etag")
                .and_then(Checksum::from_s3_etag)
                .map(Known::Checksum)
        }
        Dialect::Azure => {
            let whole =
                text("x-ms-blob-content-md5").or(if ranged { None } else { text("content-md5") });
            match whole.and_then(b64) {
                Some(d) if d.len() == 16 => {
                    Some(Known::Checksum(Checksum::Md5(d.try_into().ok()?)))
                }
                // An answer that would carry it and does not: the blob has none.
                _ if !ranged => Some(Known::None),
                _ => None,
            }
        }
        Dialect::Gcs => {
            if text("x-goog-stored-content-encoding").is_some_and(|e| e != "identity") {
                // Served decompressed: the hashes are of the stored (compressed) bytes.
                return Some(Known::None);
            }
            let mut crc = None;
            let mut md5 = None;
            for v in h.get_all("x-goog-hash") {
                for part in v.to_str().unwrap_or("").split(',') {
                    match part.trim().split_once('=') {
                        Some(("crc32c", v)) => {
                            crc = b64(v).and_then(|d| <[u8; 4]>::try_from(d).ok())
                        }
                        Some(("md5", v)) => md5 = b64(v).and_then(|d| d.try_into().ok()),
                        _ => {}
                    }
                }
            }
            match (crc, md5) {
                (Some(c), _) => Some(Known::Checksum(Checksum::Crc32c(u32::from_be_bytes(c)))),
                (None, Some(d)) => Some(Known::Checksum(Checksum::Md5(d))),
                (None, None) => None,
            }
        }
    }
}

/// Most answers remembered per backend; past it the table starts again (a forgotten
/// checksum is read again from the next HEAD or GET of its object, or from the cache).
const SEEN_MAX: usize = 65_536;

/// The checksums answers gave, by ETag, then URL path (decoded).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    by_etag: Mutex<HashMap<String, Vec<(String, Known)>>>,
}

impl Seen {
    pub(crate) fn record(&self, path: &str, etag: &str, known: Known) {
        let path = percent_encoding::percent_decode_str(path)
            .decode_utf8_lossy()
            .into_owned();
        let etag = crate::canonical_etag(etag.to_string());
        let mut map = self.by_etag.lock();
        if map.len() >= SEEN_MAX {
            map.clear();
        }
        let paths = map.entry(etag).or_default();
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some(slot) => slot.1 = known,
            None => paths.push((path, known)),
        }
    }

    /// What was seen for `key` (the full key) at `etag`, in bucket or container `bucket`:
    /// a path-style URL ends in `/{bucket}/{key}`, a virtual-hosted one is `/{key}`.
    pub(crate) fn get(&self, bucket: &str, key: &str, etag: &str) -> Option<Known> {
        let map = self.by_etag.lock();
        let paths = map.get(etag)?;
        let hosted = format!("/{key}");
        let path_style = format!("/{bucket}/{key}");
        paths
            .iter()
            .find(|(p, _)| *p == hosted || p.ends_with(&path_style))
            .map(|(_, k)| *k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md5_of(data: &[u8]) -> [u8; 16] {
        md5::Md5::digest(data).into()
    }

    #[test]
    fn text_form_round_trips() {
        for c in [
            Checksum::Md5([7; 16]),
            Checksum::Crc32c(0x0102_0304),
            Checksum::MultipartMd5 {
                digest: [9; 16],
                parts: 12,
            },
        ] {
            assert_eq!(Checksum::parse(&c.to_string()), Some(c));
        }
        assert_eq!(Checksum::parse("sha1:00"), None);
        assert_eq!(Checksum::parse("md5:xyz"), None);
    }

    #[test]
    fn s3_etags_that_are_checksums() {
        let d = md5_of(b"abc");
        let hex = hex(&d);
        assert_eq!(
            Checksum::from_s3_etag(&format!("\"{hex}\"")),
            Some(Checksum::Md5(d))
        );
        assert_eq!(
            Checksum::from_s3_etag(&format!("\"{hex}-3\"")),
            Some(Checksum::MultipartMd5 {
                digest: d,
                parts: 3
            })
        );
        assert_eq!(Checksum::from_s3_etag("\"0x8DC0\""), None);
        assert_eq!(Checksum::from_s3_etag(&format!("\"{hex}-0\"")), None);
    }

    #[test]
    fn whole_object_checksums_match_their_bytes_only() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let crc = crc32c::crc32c(&data);
        for c in [Checksum::Md5(md5_of(&data)), Checksum::Crc32c(crc)] {
            let mut h = c.hasher(data.len() as u64);
            for chunk in data.chunks(4096) {
                h.update(chunk);
            }
            assert_eq!(h.matches(), Some(true), "{c}");
            let mut bad = data.clone();
            bad[50_000] ^= 1;
            let mut h = c.hasher(data.len() as u64);
            h.update(&bad);
            assert_eq!(h.matches(), Some(false), "{c}");
        }
    }

    #[test]
    fn multipart_etags_are_checked_under_common_part_sizes() {
        let part = 5u64 << 20;
        let data: Vec<u8> = (0..(2 * part + 1234)).map(|i| (i % 253) as u8).collect();
        let mut outer = md5::Md5::new();
        for p in data.chunks(part as usize) {
            outer.update(md5_of(p));
        }
        let c = Checksum::MultipartMd5 {
            digest: outer.finalize().into(),
            parts: 3,
        };
        let mut h = c.hasher(data.len() as u64);
        // Fed in pieces that straddle the part boundaries.
        for chunk in data.chunks(1 << 20 | 17) {
            h.update(chunk);
        }
        assert_eq!(h.matches(), Some(true));
        let mut bad = data.clone();
        bad[7] ^= 0x80;
        let mut h = c.hasher(data.len() as u64);
        h.update(&bad);
        assert_eq!(h.matches(), None, "an unmatched multipart ETag cannot tell");
    }

    #[test]
    fn headers_per_store() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "etag",
            "\"900150983cd24fb0d6963f7d28e17f72\""
                .parse()
                .expect("header value"),
        );
        assert_eq!(
            from_headers(Dialect::S3, true, &h),
            Some(Known::Checksum(Checksum::Md5(md5_of(b"abc"))))
        );
        h.insert(
            "x-amz-server-side-encryption",
            "aws:kms".parse().expect("header value"),
        );
        assert_eq!(from_headers(Dialect::S3, true, &h), Some(Known::None));

        let mut h = http::HeaderMap::new();
        h.insert(
            "x-ms-blob-content-md5",
            "kAFQmDzST7DWlj99KOF/cg==".parse().expect("header value"),
        );
        assert_eq!(
            from_headers(Dialect::Azure, true, &h),
            Some(Known::Checksum(Checksum::Md5(md5_of(b"abc"))))
        );
        assert_eq!(
            from_headers(Dialect::Azure, true, &http::HeaderMap::new()),
            None,
            "a ranged answer without the header says nothing"
        );
        assert_eq!(
            from_headers(Dialect::Azure, false, &http::HeaderMap::new()),
            Some(Known::None)
        );

        let mut h = http::HeaderMap::new();
        h.append(
            "x-goog-hash",
            "crc32c=Nks/tw==".parse().expect("header value"),
        );
        h.append(
            "x-goog-hash",
            "md5=kAFQmDzST7DWlj99KOF/cg=="
                .parse()
                .expect("header value"),
        );
        assert_eq!(
            from_headers(Dialect::Gcs, true, &h),
            Some(Known::Checksum(Checksum::Crc32c(crc32c::crc32c(b"abc"))))
        );
    }

    #[test]
    fn seen_answers_are_found_by_bucket_and_key() {
        let s = Seen::default();
        let k = Known::Checksum(Checksum::Crc32c(1));
        s.record("/devstoreaccount1/c/a%20b/x", "0x8D1", k);
        assert_eq!(s.get("c", "a b/x", "\"0x8D1\""), Some(k));
        assert_eq!(s.get("c", "b/x", "\"0x8D1\""), None);
        assert_eq!(s.get("c", "a b/x", "\"0x8D2\""), None);
        s.record("/k/y", "\"e\"", Known::None);
        assert_eq!(s.get("bucket", "k/y", "\"e\""), Some(Known::None));
    }
}

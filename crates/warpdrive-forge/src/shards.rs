//! Reading WebDataset shards: tar files whose entries are grouped into samples by key (the
//! entry's path up to the first dot of its file name), as `000042.jpg` + `000042.cls`.
//!
//! A shard is read front to back once, as a stream, through a 1 MiB buffer (so a FUSE mount
//! sees 1 MiB reads). Entries of one key are collected until the key changes; a group with
//! both an image and a label becomes a [`Sample`]. Whatever cannot become a sample is counted
//! in [`Problems`], warned about once per shard and kind, and skipped: a shard that cannot be
//! opened, a corrupt or truncated tar (the samples before the damage are kept), an image
//! without a label, a label that is not a class number below `classes`, an image larger than
//! [`MAX_IMAGE`]. Nothing here panics on hostile input.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// The read buffer: the size of the reads a mount sees.
pub const READ_BUFFER: usize = 1 << 20;

/// The largest image accepted; a bigger entry is skipped (a hostile or broken shard must not
/// make a worker allocate without bound).
pub const MAX_IMAGE: u64 = 64 << 20;

/// The largest label file accepted.
const MAX_LABEL: u64 = 64;

/// One image with its class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The sample's key inside its shard (`000042`).
    pub key: String,
    pub class: u32,
    pub image: Vec<u8>,
}

/// What went wrong while reading shards, counted across all workers.
#[derive(Debug, Default)]
pub struct Problems {
    pub unreadable_shards: AtomicU64,
    /// Loose files that could not be opened or read.
    pub unreadable_files: AtomicU64,
    pub corrupt_shards: AtomicU64,
    pub unlabeled_samples: AtomicU64,
    pub bad_labels: AtomicU64,
    pub oversized_images: AtomicU64,
    /// (kind, shard) pairs already warned about.
    warned: Mutex<BTreeSet<(&'static str, PathBuf)>>,
}

/// [`Problems`] as plain numbers, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProblemCounts {
    pub unreadable_shards: u64,
    pub unreadable_files: u64,
    pub corrupt_shards: u64,
    pub unlabeled_samples: u64,
    pub bad_labels: u64,
    pub oversized_images: u64,
}

impl ProblemCounts {
    pub fn total(&self) -> u64 {
        self.unreadable_shards
            + self.unreadable_files
            + self.corrupt_shards
            + self.unlabeled_samples
            + self.bad_labels
            + self.oversized_images
    }
}

impl Problems {
    pub(crate) fn count(
        &self,
        counter: &AtomicU64,
        kind: &'static str,
        shard: &Path,
        detail: &str,
    ) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.insert((kind, shard.to_path_buf())) {
            eprintln!(
                "warning: {}: {kind}: {detail} (skipped; further {kind} in this shard are counted, not shown)",
                shard.display()
            );
        }
    }

    pub fn counts(&self) -> ProblemCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProblemCounts {
            unreadable_shards: g(&self.unreadable_shards),
            unreadable_files: g(&self.unreadable_files),
            corrupt_shards: g(&self.corrupt_shards),
            unlabeled_samples: g(&self.unlabeled_samples),
            bad_labels: g(&self.bad_labels),
            oversized_images: g(&self.oversized_images),
        }
    }
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    bytes: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
}

/// The error for an entry whose data ends early (the tar reader returns short data at the
/// end of a truncated file rather than an error).
fn truncated(name: &str, got: usize, size: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("`{name}` ends after {got} of its {size} bytes"),
    )
}

/// A group of entries sharing one key.
#[derive(Default)]
struct Group {
    key: String,
    image: Option<Vec<u8>>,
    label: Option<Vec<u8>>,
}

/// Splits an entry path into (key, extension): `a/000042.jpg` → (`a/000042`, `jpg`).
fn split_key(path: &str) -> (&str, &str) {
    let start = path.rfind('/').map_or(0, |i| i + 1);
    match path[start..].find('.') {
        Some(dot) => (&path[..start + dot], &path[start + dot + 1..]),
        None => (path, ""),
    }
}

/// Parses a label: one class number below `classes`, surrounding whitespace allowed.
pub fn parse_label(bytes: &[u8], classes: u32) -> Option<u32> {
    let class: u32 = std::str::from_utf8(bytes).ok()?.trim().parse().ok()?;
    (class < classes).then_some(class)
}

/// Reads every sample of the shard at `path`, in order, handing each to `emit`; stops early
/// when `emit` returns false. Returns the bytes read from the file.
pub fn read_shard(
    path: &Path,
    classes: u32,
    problems: &Problems,
    mut emit: impl FnMut(Sample) -> bool,
) -> u64 {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            problems.count(
                &problems.unreadable_shards,
                "unreadable shard",
                path,
                &e.to_string(),
            );
            return 0;
        }
    };
    let mut reader = std::io::BufReader::with_capacity(
        READ_BUFFER,
        Counting {
            inner: file,
            bytes: 0,
        },
    );
    let mut group = Group::default();
    let finish = |g: Group, emit: &mut dyn FnMut(Sample) -> bool| -> bool {
        match (g.image, g.label) {
            (None, None) => true,
            (Some(_), None) => {
                problems.count(
                    &problems.unlabeled_samples,
                    "sample without a label",
                    path,
                    &format!("`{}` has an image and no .cls", g.key),
                );
                true
            }
            (None, Some(_)) => true, // a label without an image carries nothing to learn from
            (Some(image), Some(label)) => match parse_label(&label, classes) {
                Some(class) => emit(Sample {
                    key: g.key,
                    class,
                    image,
                }),
                None => {
                    problems.count(
                        &problems.bad_labels,
                        "bad label",
                        path,
                        &format!(
                            "`{}.cls` is not a class number below {classes}: {:?}",
                            g.key,
                            String::from_utf8_lossy(&label)
                        ),
                    );
                    true
                }
            },
        }
    };
    let outcome = (|| -> std::io::Result<bool> {
        let mut archive = tar::Archive::new(&mut reader);
        for entry in archive.entries()? {
            let mut entry = entry?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let (key, ext) = split_key(&name);
            if key != group.key {
                let done = std::mem::take(&mut group);
                if !finish(done, &mut emit) {
                    return Ok(false);
                }
                group.key = key.to_string();
            }
            let size = entry.size();
            match ext.to_ascii_lowercase().as_str() {
                "jpg" | "jpeg" if size > MAX_IMAGE => problems.count(
                    &problems.oversized_images,
                    "oversized image",
                    path,
                    &format!("`{name}` is {size} bytes (limit {MAX_IMAGE})"),
                ),
                "jpg" | "jpeg" => {
                    let mut data = Vec::with_capacity(size as usize);
                    entry.read_to_end(&mut data)?;
                    if data.len() as u64 != size {
                        return Err(truncated(&name, data.len(), size));
                    }
                    group.image = Some(data);
                }
                "cls" => {
                    let mut data = Vec::new();
                    entry.by_ref().take(MAX_LABEL).read_to_end(&mut data)?;
                    if (data.len() as u64) < size.min(MAX_LABEL) {
                        return Err(truncated(&name, data.len(), size));
                    }
                    group.label = Some(data);
                }
                _ => {} // other members of a sample (json, txt...) are not used
            }
        }
        Ok(true)
    })();
    match outcome {
        Ok(true) => {
            finish(group, &mut emit);
        }
        Ok(false) => {}
        Err(e) => problems.count(
            &problems.corrupt_shards,
            "corrupt shard",
            path,
            &format!(
                "{e} after {} bytes (the samples before it are used)",
                reader.get_ref().bytes
            ),
        ),
    }
    reader.get_ref().bytes
}

/// The file name of shard `i`.
pub fn shard_name(i: u32) -> String {
    format!("shard-{i:06}.tar")
}

/// Writes one shard: samples go to a temporary name, renamed into place by
/// [`ShardWriter::finish`], so a crash never leaves half a shard under its real name.
pub struct ShardWriter {
    tar: tar::Builder<std::io::BufWriter<std::fs::File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl std::fmt::Debug for ShardWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardWriter")
            .field("path", &self.path)
            .finish()
    }
}

impl ShardWriter {
    /// Starts shard `i` in `dir`.
    pub fn create(dir: &Path, i: u32) -> anyhow::Result<ShardWriter> {
        use anyhow::Context;
        let (path, tmp) = (
            dir.join(shard_name(i)),
            dir.join(format!(".{}.partial", shard_name(i))),
        );
        let file =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(ShardWriter {
            tar: tar::Builder::new(std::io::BufWriter::new(file)),
            tmp,
            path,
        })
    }

    /// Appends sample `index`: `NNNNNN.jpg` and `NNNNNN.cls`.
    pub fn sample(&mut self, index: u64, class: u32, jpeg: &[u8]) -> anyhow::Result<()> {
        self.entry(&format!("{index:06}.jpg"), jpeg)?;
        self.entry(&format!("{index:06}.cls"), format!("{class}\n").as_bytes())
    }

    fn entry(&mut self, name: &str, data: &[u8]) -> anyhow::Result<()> {
        use anyhow::Context;
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        self.tar
            .append_data(&mut header, name, data)
            .with_context(|| format!("writing {name}"))
    }

    /// Completes the shard and renames it into place; returns its size.
    pub fn finish(self) -> anyhow::Result<u64> {
        use anyhow::Context;
        use std::io::Write;
        let mut w = self.tar.into_inner().context("finishing the tar")?;
        w.flush().context("writing the shard")?;
        drop(w);
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming into {}", self.path.display()))?;
        Ok(std::fs::metadata(&self.path)?.len())
    }
}

/// The shards (`*.tar`, sorted by name) directly under each root, in root order.
pub fn discover(roots: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    use anyhow::Context;
    let mut all = Vec::new();
    for root in roots {
        let mut here: Vec<PathBuf> = std::fs::read_dir(root)
            .with_context(|| format!("listing the training root {}", root.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "tar") && p.is_file())
            .collect();
        if here.is_empty() {
            anyhow::bail!(
                "{} holds no .tar shards (write some with `warpdrive-forge gen --out {}`)",
                root.display(),
                root.display()
            );
        }
        here.sort();
        all.extend(here);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    fn read(bytes: &[u8], problems: &Problems) -> Vec<Sample> {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("s.tar");
        std::fs::write(&p, bytes).expect("write");
        let mut out = Vec::new();
        let n = read_shard(&p, 10, problems, |s| {
            out.push(s);
            true
        });
        assert_eq!(n, bytes.len() as u64, "every byte of the file is read once");
        out
    }

    #[test]
    fn keys_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(split_key("000042.jpg"), ("000042", "jpg"));
        assert_eq!(split_key("a.b/000042.seg.png"), ("a.b/000042", "seg.png"));
        assert_eq!(split_key("noext"), ("noext", ""));
    }

    #[test]
    fn pairs_become_samples_in_order() {
        let t = tar_of(&[
            ("000001.jpg", b"img1"),
            ("000001.cls", b"3\n"),
            ("000002.cls", b"7"),
            ("000002.jpg", b"img2"),
            ("000002.json", b"{}"),
        ]);
        let p = Problems::default();
        let s = read(&t, &p);
        assert_eq!(
            s,
            [
                Sample {
                    key: "000001".into(),
                    class: 3,
                    image: b"img1".to_vec()
                },
                Sample {
                    key: "000002".into(),
                    class: 7,
                    image: b"img2".to_vec()
                }
            ]
        );
        assert_eq!(p.counts().total(), 0);
    }

    #[test]
    fn a_sample_without_a_label_and_a_bad_label_are_counted_and_skipped() {
        let t = tar_of(&[
            ("000001.jpg", b"img1"),
            ("000002.jpg", b"img2"),
            ("000002.cls", b"12"),
            ("000003.jpg", b"img3"),
            ("000003.cls", b"cat"),
            ("000004.jpg", b"img4"),
            ("000004.cls", b"4"),
            ("000005.jpg", b"img5"),
        ]);
        let p = Problems::default();
        let s = read(&t, &p);
        assert_eq!(
            s.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(),
            ["000004"]
        );
        let c = p.counts();
        assert_eq!((c.unlabeled_samples, c.bad_labels), (2, 2));
        assert_eq!(c.corrupt_shards, 0);
    }

    #[test]
    fn a_truncated_shard_keeps_the_samples_before_the_damage() {
        let mut entries = Vec::new();
        let img = vec![0xAB; 3000];
        let names: Vec<(String, String)> = (0..10)
            .map(|i| (format!("{i:06}.jpg"), format!("{i:06}.cls")))
            .collect();
        for (j, c) in &names {
            entries.push((j.as_str(), img.as_slice()));
            entries.push((c.as_str(), b"1".as_slice()));
        }
        let t = tar_of(&entries);
        // Cut in the middle of the 6th image's data.
        let cut = 5 * (512 + 3072 + 512 + 512) + 512 + 1000;
        let p = Problems::default();
        let s = read(&t[..cut], &p);
        assert_eq!(s.len(), 5, "the five whole samples before the cut");
        assert_eq!(p.counts().corrupt_shards, 1);
    }

    #[test]
    fn garbage_is_a_corrupt_shard_not_a_crash() {
        let p = Problems::default();
        let junk: Vec<u8> = (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(read(&junk, &p).is_empty());
        assert_eq!(p.counts().corrupt_shards, 1);
    }

    #[test]
    fn a_missing_shard_is_counted_as_unreadable() {
        let p = Problems::default();
        let n = read_shard(Path::new("/nonexistent/x.tar"), 10, &p, |_| true);
        assert_eq!(n, 0);
        assert_eq!(p.counts().unreadable_shards, 1);
    }

    #[test]
    fn warnings_are_given_once_per_shard_and_kind() {
        let p = Problems::default();
        for _ in 0..3 {
            read_shard(Path::new("/nonexistent/x.tar"), 10, &p, |_| true);
        }
        assert_eq!(p.counts().unreadable_shards, 3);
        assert_eq!(p.warned.lock().expect("lock").len(), 1);
    }
}

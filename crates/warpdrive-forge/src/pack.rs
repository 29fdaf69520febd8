//! `forge pack`: packs a folder of JPEGs and a label file into WebDataset shards that `train`
//! reads, so the showcase runs on real data (COCO train2017 or any labelled image folder).
//!
//! The label file has one image per line, `NAME LABEL` (separated by a comma, a tab or
//! spaces; `#` starts a comment). NAME is the image's path relative to `--images`, or just its
//! file name when that is unique. LABEL is either a class number or a class name; names are
//! numbered in sorted order and the numbering is written to `classes.txt` beside the shards.
//! Images are packed in sorted path order (or a seeded shuffle with `--shuffle-seed`, which
//! mixes classes within each shard), `--samples-per-shard` to a shard, each shard written to a
//! temporary name and renamed when whole. An image without a label, a label without an image
//! and a file that is not a JPEG are counted, named once in a warning, and skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::shards::ShardWriter;

/// What to pack.
#[derive(Debug, Clone)]
pub struct PackConfig {
    pub images: PathBuf,
    pub labels: PathBuf,
    pub out: PathBuf,
    pub samples_per_shard: usize,
    pub classes: u32,
    pub shuffle_seed: Option<u64>,
}

/// What `pack` did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Packed {
    pub shards: usize,
    pub samples: usize,
    pub bytes: u64,
    pub unlabeled_images: usize,
    pub labels_without_image: usize,
    pub not_jpeg: usize,
}

/// Parses the label file into (name, label text) pairs.
fn parse_labels(text: &str, file: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (name, label) = line
            .split_once([',', '\t'])
            .or_else(|| line.rsplit_once(' '))
            .map(|(a, b)| (a.trim(), b.trim()))
            .filter(|(a, b)| !a.is_empty() && !b.is_empty())
            .with_context(|| {
                format!(
                    "{} line {}: expected `NAME LABEL`, got {line:?}",
                    file.display(),
                    n + 1
                )
            })?;
        out.push((name.to_string(), label.to_string()));
    }
    if out.is_empty() {
        bail!("{} holds no labels", file.display());
    }
    Ok(out)
}

/// Every JPEG-named file under `dir`, as paths relative to it.
fn images_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let here = dir.join(&rel);
        for e in std::fs::read_dir(&here).with_context(|| format!("listing {}", here.display()))? {
            let e = e.with_context(|| format!("listing {}", here.display()))?;
            let ty = e.file_type()?;
            let r = rel.join(e.file_name());
            if ty.is_dir() {
                stack.push(r);
            } else if ty.is_file()
                && r.extension().and_then(|x| x.to_str()).is_some_and(|x| {
                    x.eq_ignore_ascii_case("jpg") || x.eq_ignore_ascii_case("jpeg")
                })
            {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Packs as `cfg` says, reporting progress on `log`.
pub fn pack(cfg: &PackConfig, log: &mut impl Write) -> Result<Packed> {
    if cfg.samples_per_shard == 0 {
        bail!("--samples-per-shard must be at least 1");
    }
    let text = std::fs::read_to_string(&cfg.labels)
        .with_context(|| format!("reading the label file {}", cfg.labels.display()))?;
    let labels = parse_labels(&text, &cfg.labels)?;
    // Class numbers, or names numbered in sorted order.
    let numeric = labels.iter().all(|(_, l)| l.parse::<u32>().is_ok());
    let names: BTreeSet<&str> = labels.iter().map(|(_, l)| l.as_str()).collect();
    let number: BTreeMap<&str, u32> = if numeric {
        names.iter().map(|l| (*l, l.parse().unwrap_or(0))).collect()
    } else {
        names
            .iter()
            .enumerate()
            .map(|(i, l)| (*l, i as u32))
            .collect()
    };
    if let Some((l, c)) = number.iter().find(|(_, c)| **c >= cfg.classes) {
        bail!(
            "label `{l}` is class {c}, but there are {} classes: pass --classes {} (and the same to `train`)",
            cfg.classes,
            if numeric { c + 1 } else { number.len() as u32 }
        );
    }

    let images = images_under(&cfg.images)?;
    let mut by_file_name: BTreeMap<String, Vec<&PathBuf>> = BTreeMap::new();
    for p in &images {
        if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
            by_file_name.entry(n.to_string()).or_default().push(p);
        }
    }
    let known: BTreeSet<&PathBuf> = images.iter().collect();
    let mut labelled: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let mut report = Packed::default();
    let mut first_missing = None;
    for (name, label) in &labels {
        let p = PathBuf::from(name);
        let found = if known.contains(&p) {
            Some(p)
        } else {
            match by_file_name.get(name.as_str()).map(Vec::as_slice) {
                Some([one]) => Some((*one).clone()),
                _ => None,
            }
        };
        match found {
            Some(p) => {
                labelled.insert(p, number[label.as_str()]);
            }
            None => {
                report.labels_without_image += 1;
                first_missing.get_or_insert_with(|| name.clone());
            }
        }
    }
    if let Some(name) = first_missing {
        writeln!(
            log,
            "warning: {} labels name no image under {} (first: {name}); skipped",
            report.labels_without_image,
            cfg.images.display()
        )?;
    }
    let unlabeled: Vec<&PathBuf> = images
        .iter()
        .filter(|p| !labelled.contains_key(*p))
        .collect();
    report.unlabeled_images = unlabeled.len();
    if let Some(first) = unlabeled.first() {
        writeln!(
            log,
            "warning: {} images have no label (first: {}); skipped",
            unlabeled.len(),
            first.display()
        )?;
    }
    let mut todo: Vec<(PathBuf, u32)> = labelled.into_iter().collect();
    if let Some(seed) = cfg.shuffle_seed {
        todo.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    }
    if todo.is_empty() {
        bail!(
            "no image under {} has a label in {}",
            cfg.images.display(),
            cfg.labels.display()
        );
    }

    std::fs::create_dir_all(&cfg.out).with_context(|| format!("creating {}", cfg.out.display()))?;
    if !numeric {
        let mut t = String::new();
        for (l, c) in &number {
            t.push_str(&format!("{c} {l}\n"));
        }
        std::fs::write(cfg.out.join("classes.txt"), t).context("writing classes.txt")?;
    }
    let total_shards = todo.len().div_ceil(cfg.samples_per_shard);
    let mut index = 0u64;
    let mut not_jpeg_first = None;
    for (s, chunk) in todo.chunks(cfg.samples_per_shard).enumerate() {
        let mut shard = ShardWriter::create(&cfg.out, s as u32)?;
        for (rel, class) in chunk {
            let src = cfg.images.join(rel);
            let data = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
            if !data.starts_with(&[0xFF, 0xD8]) {
                report.not_jpeg += 1;
                not_jpeg_first.get_or_insert_with(|| src.clone());
                continue;
            }
            shard.sample(index, *class, &data)?;
            index += 1;
            report.samples += 1;
        }
        report.bytes += shard.finish()?;
        report.shards += 1;
        writeln!(
            log,
            "shard {}/{total_shards}  {:.1} MB so far",
            s + 1,
            report.bytes as f64 / 1e6
        )?;
    }
    if let Some(first) = not_jpeg_first {
        writeln!(
            log,
            "warning: {} files are not JPEGs (first: {}); skipped",
            report.not_jpeg,
            first.display()
        )?;
    }
    writeln!(
        log,
        "{} samples in {} shards under {} ({:.1} MB); skipped: {} unlabelled images, {} labels without an image, {} non-JPEG files",
        report.samples,
        report.shards,
        cfg.out.display(),
        report.bytes as f64 / 1e6,
        report.unlabeled_images,
        report.labels_without_image,
        report.not_jpeg
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shards::{Problems, read_shard, shard_name};

    fn jpeg(seed: u8) -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([seed, x as u8 * 8, y as u8 * 8]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut out)
            .encode(img.as_raw(), 16, 16, image::ExtendedColorType::Rgb8)
            .expect("encode");
        out
    }

    #[test]
    fn a_labelled_folder_packs_into_shards_train_can_read() {
        let d = tempfile::tempdir().expect("tempdir");
        let imgs = d.path().join("imgs");
        std::fs::create_dir_all(imgs.join("sub")).expect("mkdir");
        for i in 0..5u8 {
            std::fs::write(imgs.join(format!("{i}.jpg")), jpeg(i)).expect("write");
        }
        std::fs::write(imgs.join("sub/deep.JPG"), jpeg(9)).expect("write");
        std::fs::write(imgs.join("fake.jpg"), b"not a jpeg").expect("write");
        std::fs::write(imgs.join("nolabel.jpg"), jpeg(7)).expect("write");
        std::fs::write(
            d.path().join("labels.txt"),
            "# name label\n0.jpg cat\n1.jpg,dog\n2.jpg\tcat\n3.jpg bird\n4.jpg dog\ndeep.JPG bird\nfake.jpg cat\nmissing.jpg dog\n",
        )
        .expect("labels");
        let cfg = PackConfig {
            images: imgs,
            labels: d.path().join("labels.txt"),
            out: d.path().join("out"),
            samples_per_shard: 4,
            classes: 10,
            shuffle_seed: None,
        };
        let r = pack(&cfg, &mut Vec::new()).expect("pack");
        assert_eq!(
            r,
            Packed {
                shards: 2,
                samples: 6,
                bytes: r.bytes,
                unlabeled_images: 1,
                labels_without_image: 1,
                not_jpeg: 1,
            }
        );
        assert_eq!(
            std::fs::read_to_string(cfg.out.join("classes.txt")).expect("classes"),
            "0 bird\n1 cat\n2 dog\n"
        );
        let p = Problems::default();
        let mut classes = Vec::new();
        for s in 0..2 {
            read_shard(&cfg.out.join(shard_name(s)), 10, &p, |s| {
                assert!(s.image.starts_with(&[0xFF, 0xD8]));
                classes.push(s.class);
                true
            });
        }
        // Sorted paths: 0 1 2 3 4 (fake skipped) sub/deep.
        assert_eq!(classes, [1, 2, 1, 0, 2, 0]);
        assert_eq!(p.counts().total(), 0);
    }

    #[test]
    fn too_many_classes_is_a_clear_error() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("a.jpg"), jpeg(1)).expect("write");
        std::fs::write(d.path().join("l.txt"), "a.jpg 12\n").expect("labels");
        let e = pack(
            &PackConfig {
                images: d.path().to_path_buf(),
                labels: d.path().join("l.txt"),
                out: d.path().join("out"),
                samples_per_shard: 4,
                classes: 10,
                shuffle_seed: None,
            },
            &mut Vec::new(),
        )
        .expect_err("class 12 of 10");
        assert!(e.to_string().contains("--classes 13"), "{e}");
    }
}

//! Generated training data: WebDataset shards of JPEG pictures in 10 classes.
//!
//! A sample's class sets the picture's hue, the orientation and frequency of its stripes and
//! its JPEG quality; seeded noise makes every picture different. The classifier `forge train`
//! fits (see `model`) looks at raw JPEG bytes (it does not decode them), and all three leave marks there:
//! the quality in the quantisation tables, the picture in the coded data and the file's
//! length. Each sample has its own random stream, derived from the seed and its index, so
//! the bytes do not depend on the order or the machine they are generated on.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, RgbImage};
use rand::{Rng, SeedableRng};

use crate::shards::{ShardWriter, shard_name};

/// Classes of the generated data.
pub const CLASSES: u32 = 10;

/// Preset scales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    /// 16 shards × 64 images of 160×120: seconds on two cores.
    Quick,
    /// The seed's scale: 200 shards × 592 images of 640×480 (about 100 MB a shard; the
    /// seed's COCO shards: about 95 MB).
    Coco,
    /// ImageNet-like loose files: 10 × 1,000 images of 520×390 (about 110 KB each, near
    /// ImageNet's mean); with `--layout files`, 10,000 files in 10 class directories.
    Imagenet,
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub shards: u32,
    pub samples_per_shard: u32,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
}

impl Preset {
    pub fn spec(self) -> Spec {
        match self {
            Preset::Quick => Spec {
                shards: 16,
                samples_per_shard: 64,
                width: 160,
                height: 120,
                seed: 42,
            },
            Preset::Coco => Spec {
                shards: 200,
                samples_per_shard: 592,
                width: 640,
                height: 480,
                seed: 42,
            },
            Preset::Imagenet => Spec {
                shards: 10,
                samples_per_shard: 1000,
                width: 520,
                height: 390,
                seed: 42,
            },
        }
    }
}

/// Parses `WIDTHxHEIGHT`.
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not WIDTHxHEIGHT (for example 640x480)");
    let (w, h) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let (w, h): (u32, u32) = (w.parse().map_err(|_| bad())?, h.parse().map_err(|_| bad())?);
    if !(8..=8192).contains(&w) || !(8..=8192).contains(&h) {
        return Err(format!("{w}x{h}: each side must be 8 to 8192 pixels"));
    }
    Ok((w, h))
}

/// The class and JPEG bytes of sample `index`.
pub fn sample(spec: &Spec, index: u64) -> Result<(u32, Vec<u8>)> {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(spec.seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let class = rng.random_range(0..CLASSES);
    let (w, h) = (spec.width, spec.height);
    let c = class as f32;
    // Hue from the class; stripes whose angle and frequency grow with it.
    let hue = [
        (c * 0.628).sin() * 0.5 + 0.5,
        (c * 0.628 + 2.1).sin() * 0.5 + 0.5,
        (c * 0.628 + 4.2).sin() * 0.5 + 0.5,
    ];
    let angle = c * std::f32::consts::PI / CLASSES as f32;
    let freq = 0.02 + 0.015 * c;
    let (ca, sa) = (angle.cos(), angle.sin());
    let noise = 24.0 + rng.random_range(0.0..16.0);
    let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let mut img = RgbImage::new(w, h);
    for (x, y, px) in img.enumerate_pixels_mut() {
        let t = ((x as f32 * ca + y as f32 * sa) * freq * std::f32::consts::TAU + phase).sin();
        for (ch, v) in px.0.iter_mut().enumerate() {
            let base = 40.0 + 170.0 * hue[ch] * (0.6 + 0.4 * t);
            let n = rng.random_range(-noise..noise);
            *v = (base + n).clamp(0.0, 255.0) as u8;
        }
    }
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 60 + 3 * class as u8)
        .encode(img.as_raw(), w, h, ExtendedColorType::Rgb8)
        .context("encoding a JPEG")?;
    Ok((class, jpeg))
}

/// Writes shard `i`; returns its size.
fn write_shard(dir: &Path, spec: &Spec, i: u32) -> Result<u64> {
    let mut shard = ShardWriter::create(dir, i)?;
    for s in 0..spec.samples_per_shard {
        let index = u64::from(i) * u64::from(spec.samples_per_shard) + u64::from(s);
        let (class, jpeg) = sample(spec, index)?;
        shard.sample(index, class, &jpeg)?;
    }
    shard.finish()
}

/// Runs `work(i)` for every `i` in `0..count`, on one thread per core, each taking the next
/// index; the first error stops the others at their next index and is returned.
pub fn on_every_core(count: u64, work: impl Fn(u64) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicU64::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count || failed.load(Ordering::Relaxed) {
                            return Ok(());
                        }
                        if let Err(e) = work(i) {
                            failed.store(true, Ordering::Relaxed);
                            return Err(e);
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok(())
    })
}

/// Writes every shard of `spec` into `dir`, one thread per core, reporting progress on `log`.
pub fn write_shards(
    dir: &Path,
    spec: &Spec,
    force: bool,
    log: &mut (impl Write + Send),
) -> Result<()> {
    if spec.shards == 0 || spec.samples_per_shard == 0 {
        bail!("--shards and --samples-per-shard must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let start = Instant::now();
    let state = Mutex::new((0u32, 0u32, 0u64, &mut *log));
    on_every_core(u64::from(spec.shards), |i| {
        let i = i as u32;
        let path = dir.join(shard_name(i));
        if !force && path.exists() {
            let len = std::fs::metadata(&path)?.len();
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            st.1 += 1;
            st.2 += len;
            return Ok(());
        }
        let len = write_shard(dir, spec, i)?;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 += 1;
        st.2 += len;
        let (done, bytes) = (st.0 + st.1, st.2);
        let _ = writeln!(
            st.3,
            "shard {done}/{}  {:.1} MB so far, {:.0} s",
            spec.shards,
            bytes as f64 / 1e6,
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })?;
    let (written, kept, bytes, log) = state.into_inner().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(
        log,
        "{} shards in {} ({written} written, {kept} already there), {} images, {:.1} MB, {:.1} s",
        spec.shards,
        dir.display(),
        u64::from(spec.shards) * u64::from(spec.samples_per_shard),
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(seed: u64) -> Spec {
        Spec {
            shards: 2,
            samples_per_shard: 3,
            width: 32,
            height: 24,
            seed,
        }
    }

    fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(std::fs::File::open(path).expect("shard"));
        a.entries()
            .expect("tar")
            .map(|e| {
                let mut e = e.expect("entry");
                let name = e.path().expect("name").display().to_string();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).expect("data");
                (name, data)
            })
            .collect()
    }

    #[test]
    fn shards_hold_decodable_jpegs_with_labels() {
        let d = tempfile::tempdir().expect("tempdir");
        write_shards(d.path(), &tiny(7), false, &mut Vec::new()).expect("gen");
        let e = entries(&d.path().join("shard-000001.tar"));
        let names: Vec<&str> = e.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "000003.jpg",
                "000003.cls",
                "000004.jpg",
                "000004.cls",
                "000005.jpg",
                "000005.cls"
            ]
        );
        for pair in e.chunks(2) {
            let img = image::load_from_memory(&pair[0].1).expect("a real JPEG");
            assert_eq!((img.width(), img.height()), (32, 24));
            let class: u32 = std::str::from_utf8(&pair[1].1)
                .expect("text")
                .trim()
                .parse()
                .expect("a class number");
            assert!(class < CLASSES);
        }
    }

    #[test]
    fn the_same_seed_writes_the_same_bytes() {
        let (a, b, c) = (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        );
        write_shards(a.path(), &tiny(7), false, &mut Vec::new()).expect("gen");
        write_shards(b.path(), &tiny(7), false, &mut Vec::new()).expect("gen");
        write_shards(c.path(), &tiny(8), false, &mut Vec::new()).expect("gen");
        let read = |d: &Path| std::fs::read(d.join("shard-000000.tar")).expect("shard");
        assert_eq!(read(a.path()), read(b.path()));
        assert_ne!(read(a.path()), read(c.path()));
    }

    #[test]
    fn classes_differ_in_their_bytes() {
        // Every class appears, and a JPEG of one class is not byte-identical in its header to
        // one of another (the quality differs).
        let spec = tiny(1);
        let mut by_class: std::collections::BTreeMap<u32, Vec<u8>> = Default::default();
        for i in 0..200 {
            let (c, j) = sample(&spec, i).expect("sample");
            by_class.entry(c).or_insert(j);
        }
        assert_eq!(by_class.len(), CLASSES as usize, "all classes drawn");
        let heads: std::collections::BTreeSet<Vec<u8>> =
            by_class.values().map(|j| j[..200].to_vec()).collect();
        assert_eq!(heads.len(), CLASSES as usize);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert!(parse_size("640").is_err());
        assert!(parse_size("1x1").is_err());
    }
}

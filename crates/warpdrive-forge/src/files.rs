//! Loose-file datasets: an ImageNet-style tree of class directories of JPEGs, read one file
//! per sample by its path, as PyTorch's `ImageFolder` reads them.
//!
//! A dataset is a root and the files under it with their classes. It comes from a file list
//! (`--files LIST`: one path per line, relative to the list's directory; nothing is listed)
//! or from the root itself (`--image-folder ROOT`: its subdirectories are the classes and
//! their files the samples, both sorted, as `ImageFolder` finds them). Either way a file's
//! class is the index of its directory's name among the sorted class names, so the same tree
//! gives the same labels whichever way it is named.
//!
//! `gen --layout files` writes such a tree: `train/n<class>/<index>.jpg`, each file written
//! under a temporary name and renamed, and `files.txt` (every path, in index order) last, so
//! a tree with its list is complete.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::generate::{Spec, on_every_core, sample};
use crate::shards::{MAX_IMAGE, Problems, Sample};

/// The file list `gen --layout files` writes beside the tree.
pub const LIST_NAME: &str = "files.txt";

/// A loose-file dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSet {
    /// What the paths are relative to.
    pub root: PathBuf,
    /// Every file (relative path) with its class, in list order.
    pub files: Vec<(String, u32)>,
    /// The class directory names, sorted: class `i` is `classes[i]`.
    pub classes: Vec<String>,
}

/// The directory of `gen`'s file `index` of class `class`, relative to the root.
pub fn class_dir(class: u32) -> String {
    format!("train/n{class:08}")
}

/// Reads a file list (one path per line, relative to the list's directory; blank lines and
/// lines starting with `#` are skipped). At most `max_classes` class directories.
pub fn from_list(list: &Path, max_classes: u32) -> Result<FileSet> {
    let text = std::fs::read_to_string(list)
        .with_context(|| format!("reading the file list {}", list.display()))?;
    let root = list
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let mut paths = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let p = Path::new(line);
        if p.components().any(|c| !matches!(c, Component::Normal(_))) {
            bail!(
                "{} line {}: `{line}` must be a relative path inside the list's directory (no `/` at the start, no `..`)",
                list.display(),
                n + 1
            );
        }
        paths.push(line.to_string());
    }
    if paths.is_empty() {
        bail!("the file list {} names no files", list.display());
    }
    assign(root, paths, max_classes, &list.display().to_string())
}

/// Lists `root`'s class directories and their files, both sorted, as `ImageFolder` does.
pub fn from_folder(root: &Path, max_classes: u32) -> Result<FileSet> {
    let mut dirs: Vec<String> = std::fs::read_dir(root)
        .with_context(|| format!("listing the image folder {}", root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    dirs.sort();
    let mut paths = Vec::new();
    for d in &dirs {
        let mut here: Vec<String> = std::fs::read_dir(root.join(d))
            .with_context(|| format!("listing {}", root.join(d).display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|e| e.file_name().into_string().ok())
            .map(|f| format!("{d}/{f}"))
            .collect();
        here.sort();
        paths.extend(here);
    }
    if paths.is_empty() {
        bail!(
            "{} holds no class directories of files (write some with `warpdrive-forge gen --layout files --out DIR`, then use DIR/train)",
            root.display()
        );
    }
    assign(
        root.to_path_buf(),
        paths,
        max_classes,
        &root.display().to_string(),
    )
}

/// Gives each path the index of its directory among the sorted directory names.
fn assign(root: PathBuf, paths: Vec<String>, max_classes: u32, what: &str) -> Result<FileSet> {
    let dir_of = |p: &str| p.rsplit_once('/').map(|(d, _)| d.to_string());
    let mut classes = BTreeSet::new();
    for p in &paths {
        let d = dir_of(p).with_context(|| {
            format!("{what}: `{p}` is not inside a class directory (CLASS/FILE)")
        })?;
        classes.insert(d);
    }
    let classes: Vec<String> = classes.into_iter().collect();
    if classes.len() > max_classes as usize {
        bail!(
            "{what}: {} class directories, more than --classes {max_classes}; raise --classes",
            classes.len()
        );
    }
    let files = paths
        .into_iter()
        .map(|p| {
            let d = dir_of(&p).unwrap_or_default();
            let class = classes.binary_search(&d).unwrap_or(0) as u32;
            (p, class)
        })
        .collect();
    Ok(FileSet {
        root,
        files,
        classes,
    })
}

/// Reads the file at `path` whole (as `ImageFolder` does: open, read to the end) as one
/// sample of `class`; returns the bytes read. An unreadable or oversized file is counted and
/// gives no sample.
pub fn read_file(path: &Path, class: u32, problems: &Problems, emit: impl FnOnce(Sample)) -> u64 {
    use std::io::Read;
    let read = std::fs::File::open(path).and_then(|f| {
        let mut image = Vec::new();
        f.take(MAX_IMAGE + 1).read_to_end(&mut image).map(|_| image)
    });
    match read {
        Ok(image) if image.len() as u64 > MAX_IMAGE => {
            problems.count(
                &problems.oversized_images,
                "oversized image",
                path,
                &format!("more than {MAX_IMAGE} bytes"),
            );
            image.len() as u64
        }
        Ok(image) => {
            let n = image.len() as u64;
            emit(Sample {
                key: String::new(),
                class,
                image,
            });
            n
        }
        Err(e) => {
            problems.count(
                &problems.unreadable_files,
                "unreadable file",
                path,
                &e.to_string(),
            );
            0
        }
    }
}

/// Writes `files` generated samples as `dir/train/n<class>/<index>.jpg` and then
/// `dir/files.txt`, one thread per core; files already there are kept unless `force`.
pub fn write_files(
    dir: &Path,
    spec: &Spec,
    files: u64,
    force: bool,
    log: &mut (impl Write + Send),
) -> Result<()> {
    if files == 0 {
        bail!("--files must be at least 1");
    }
    let start = Instant::now();
    let classes: Vec<u32> = (0..crate::generate::CLASSES).collect();
    for c in &classes {
        let d = dir.join(class_dir(*c));
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    let paths = Mutex::new(vec![String::new(); files as usize]);
    let state = Mutex::new((0u64, 0u64, &mut *log));
    on_every_core(files, |i| {
        let (class, jpeg) = sample(spec, i)?;
        let rel = format!("{}/{i:08}.jpg", class_dir(class));
        let path = dir.join(&rel);
        let len = if !force && path.exists() {
            std::fs::metadata(&path)?.len()
        } else {
            let tmp = path.with_extension("jpg.tmp");
            std::fs::write(&tmp, &jpeg).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .with_context(|| format!("renaming into {}", path.display()))?;
            jpeg.len() as u64
        };
        paths.lock().unwrap_or_else(|p| p.into_inner())[i as usize] = rel;
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        st.0 += 1;
        st.1 += len;
        if st.0.is_multiple_of(1000) || st.0 == files {
            let (done, bytes) = (st.0, st.1);
            let _ = writeln!(
                st.2,
                "file {done}/{files}  {:.1} MB so far, {:.0} s",
                bytes as f64 / 1e6,
                start.elapsed().as_secs_f64()
            );
        }
        Ok(())
    })?;
    let paths = paths.into_inner().unwrap_or_else(|p| p.into_inner());
    let list = dir.join(LIST_NAME);
    let tmp = dir.join(format!("{LIST_NAME}.tmp"));
    std::fs::write(&tmp, paths.join("\n") + "\n")
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &list).with_context(|| format!("renaming into {}", list.display()))?;
    let (_, bytes, log) = state.into_inner().unwrap_or_else(|p| p.into_inner());
    let _ = writeln!(
        log,
        "{files} files in {} ({} class directories, mean {:.1} KB), list {}, {:.1} s",
        dir.join("train").display(),
        classes.len(),
        bytes as f64 / files as f64 / 1e3,
        list.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Spec {
        Spec {
            shards: 1,
            samples_per_shard: 1,
            width: 32,
            height: 24,
            seed: 3,
        }
    }

    #[test]
    fn a_generated_tree_reads_back_the_same_from_its_list_and_its_folder() {
        let d = tempfile::tempdir().expect("tempdir");
        write_files(d.path(), &tiny(), 40, false, &mut Vec::new()).expect("gen");
        let listed = from_list(&d.path().join(LIST_NAME), 10).expect("list");
        assert_eq!(listed.files.len(), 40);
        // The list is in index order; every file's class is the one it was generated with.
        for (i, (p, class)) in listed.files.iter().enumerate() {
            let (want, jpeg) = sample(&tiny(), i as u64).expect("sample");
            assert_eq!(std::fs::read(d.path().join(p)).expect("file"), jpeg, "{p}");
            assert_eq!(listed.classes[*class as usize], class_dir(want), "{p}");
        }
        // ImageFolder over train/: the same files with the same classes (by directory name).
        let folder = from_folder(&d.path().join("train"), 10).expect("folder");
        let mut a: Vec<(String, String)> = listed
            .files
            .iter()
            .map(|(p, c)| {
                (
                    p.trim_start_matches("train/").to_string(),
                    listed.classes[*c as usize].clone(),
                )
            })
            .collect();
        let mut b: Vec<(String, String)> = folder
            .files
            .iter()
            .map(|(p, c)| (p.clone(), format!("train/{}", folder.classes[*c as usize])))
            .collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // The same seed writes the same bytes.
        let e = tempfile::tempdir().expect("tempdir");
        write_files(e.path(), &tiny(), 40, false, &mut Vec::new()).expect("gen");
        assert_eq!(
            std::fs::read(d.path().join(LIST_NAME)).expect("list"),
            std::fs::read(e.path().join(LIST_NAME)).expect("list")
        );
    }

    #[test]
    fn bad_lists_are_refused_with_the_line() {
        let d = tempfile::tempdir().expect("tempdir");
        let list = d.path().join("l.txt");
        for (text, words) in [
            ("a/x.jpg\n/etc/passwd\n", vec!["line 2", "relative path"]),
            ("a/x.jpg\n../y.jpg\n", vec!["line 2", "`..`"]),
            ("# nothing\n\n", vec!["names no files"]),
            ("x.jpg\n", vec!["not inside a class directory"]),
            (
                "a/1\nb/1\nc/1\n",
                vec!["3 class directories", "--classes 2"],
            ),
        ] {
            std::fs::write(&list, text).expect("write");
            let e = format!("{:#}", from_list(&list, 2).expect_err(text));
            for w in words {
                assert!(e.contains(w), "{text:?}: {e}");
            }
        }
        assert!(from_list(&d.path().join("missing"), 2).is_err());
    }
}

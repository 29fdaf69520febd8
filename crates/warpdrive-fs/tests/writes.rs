//! Files written through the core over the in-memory store (and the fault-injecting one),
//! without a kernel: a file streams to a multipart upload as it is written and appears in the
//! store only at its commit; a write that goes back stages it; create-only names, renames,
//! unlinks and directories under writable prefixes; a failed part leaves nothing behind.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use warpdrive_config::MetadataTtl;
use warpdrive_fs::{Fs, FsConfig, FsError, Ino};
use warpdrive_metrics::BackendMetrics;
use warpdrive_store::faulty::{Fault, FaultyStore, Op};
use warpdrive_store::memory::MemoryStore;
use warpdrive_store::{Backend, Store};
use warpdrive_testkit::random_bytes;

const PART: u64 = 1 << 20;

struct Setup {
    mem: Arc<MemoryStore>,
    faulty: Arc<FaultyStore>,
    fs: Arc<Fs>,
    root: Ino,
    _cache_dir: tempfile::TempDir,
}

/// A mount of one backend (`mem`) whose `ckpt/` is writable (`overwrite`, `delete` as given),
/// 1 MiB parts within 4 MiB of memory.
fn setup(overwrite: bool, delete: bool) -> Setup {
    let mem = Arc::new(MemoryStore::new("mem"));
    let faulty = Arc::new(FaultyStore::new("mem", mem.clone() as Arc<dyn Store>));
    let mut cfg = support::mem_config();
    cfg.write.prefixes = vec!["ckpt/".into()];
    cfg.write.overwrite = overwrite;
    cfg.write.delete = delete;
    let backend = Arc::new(Backend::with_store(
        &cfg,
        faulty.clone() as Arc<dyn Store>,
        BackendMetrics::detached("mem"),
    ));
    let (dir, cache) = support::temp_cache();
    let fs = Fs::new(
        FsConfig {
            write_part_size: PART,
            write_memory: 4 * PART,
            ..support::fs_config(MetadataTtl::Indefinite, 0)
        },
        vec![backend],
        Some(cache),
    );
    Setup {
        mem,
        faulty,
        fs,
        root: Ino::ROOT,
        _cache_dir: dir,
    }
}

impl Setup {
    async fn dir(&self, path: &str) -> Ino {
        let mut ino = self.fs.lookup(self.root, "mem").await.expect("backend").ino;
        for name in path.split('/').filter(|s| !s.is_empty()) {
            ino = match self.fs.lookup(ino, name).await {
                Ok(a) => a.ino,
                Err(_) => self.fs.mkdir(ino, name).await.expect("mkdir").ino,
            };
        }
        ino
    }

    /// Writes `data` to new file `dir/name` in `chunk`-byte writes; returns the handle, open.
    async fn write_new(&self, dir: Ino, name: &str, data: &[u8], chunk: usize) -> u64 {
        let (_, o) = self.fs.create(dir, name).await.expect("create");
        for (i, c) in data.chunks(chunk).enumerate() {
            let n = self
                .fs
                .write(o.fh, (i * chunk) as u64, c)
                .await
                .expect("write");
            assert_eq!(n as usize, c.len());
        }
        o.fh
    }

    async fn read_back(&self, dir: Ino, name: &str) -> Vec<u8> {
        let a = self.fs.lookup(dir, name).await.expect("lookup");
        let o = self.fs.open(a.ino, false).await.expect("open");
        let mut out = Vec::new();
        loop {
            let b = self
                .fs
                .read(o.fh, out.len() as u64, 1 << 20)
                .await
                .expect("read");
            if b.is_empty() {
                break;
            }
            out.extend_from_slice(&b);
        }
        self.fs.release(o.fh);
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_streams_as_written_and_appears_only_at_its_commit() {
    let s = setup(false, false);
    let dir = s.dir("ckpt/run1").await;
    let data = random_bytes((5 * PART + 12_345) as usize, 1);
    let fh = s.write_new(dir, "model.pt", &data, 128 << 10).await;
    // Five full parts were streamed while writing; nothing is visible yet.
    assert!(s.mem.current("ckpt/run1/model.pt").is_none());
    // Full parts go up while the file is written (their uploads run in tasks of their own).
    let t0 = std::time::Instant::now();
    while s.mem.counts.parts.load(Ordering::Relaxed) < 5 {
        assert!(t0.elapsed().as_secs() < 10, "the full parts never went up");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        s.mem.current("ckpt/run1/model.pt").is_none(),
        "still nothing visible"
    );
    assert_eq!(s.mem.counts.open_uploads.load(Ordering::Relaxed), 1);
    s.fs.flush(fh).await.expect("commit at close");
    assert_eq!(
        s.mem.current("ckpt/run1/model.pt").expect("committed").data,
        &data[..]
    );
    assert_eq!(s.mem.counts.open_uploads.load(Ordering::Relaxed), 0);
    let a = s.fs.lookup(dir, "model.pt").await.expect("lookup");
    assert_eq!(a.size, data.len() as u64);
    s.fs.release_write(fh).await;
    // The spool became the cached copy: reading it back sends no GET.
    let gets = s.mem.counts.get.load(Ordering::Relaxed);
    assert_eq!(s.read_back(dir, "model.pt").await, data);
    assert_eq!(s.mem.counts.get.load(Ordering::Relaxed), gets);
    // A second close of a clean file commits nothing new.
    let puts = s.mem.counts.puts.load(Ordering::Relaxed);
    assert_eq!(puts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_goes_back_stages_the_file_and_it_commits_whole() {
    let s = setup(false, false);
    let dir = s.dir("ckpt").await;
    let mut data = random_bytes((3 * PART) as usize, 2);
    let fh = s.write_new(dir, "archive.zip", &data, 256 << 10).await;
    // A zip writer patches its header at the start.
    s.fs.write(fh, 10, b"PATCHED").await.expect("seek back");
    data[10..17].copy_from_slice(b"PATCHED");
    // The file reads back as written, through the same handle.
    let head = s.fs.read(fh, 0, 32).await.expect("read own file");
    assert_eq!(&head[..], &data[..32]);
    s.fs.flush(fh).await.expect("commit");
    s.fs.release_write(fh).await;
    assert_eq!(
        s.mem.current("ckpt/archive.zip").expect("committed").data,
        &data[..]
    );
    assert_eq!(
        s.mem.counts.open_uploads.load(Ordering::Relaxed),
        0,
        "the streamed upload was aborted"
    );
    // An empty file is an object too.
    let (_, o) = s.fs.create(dir, "empty").await.expect("create");
    s.fs.flush(o.fh).await.expect("commit");
    s.fs.release_write(o.fh).await;
    assert_eq!(
        s.mem.current("ckpt/empty").expect("committed").data.len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_create_only_and_writes_stay_under_writable_prefixes() {
    let s = setup(false, false);
    s.mem.put("ckpt/taken.pt", b"theirs".to_vec());
    s.mem.put("data/a.bin", b"read only".to_vec());
    let dir = s.dir("ckpt").await;
    assert!(matches!(
        s.fs.create(dir, "taken.pt").await,
        Err(FsError::Exists)
    ));
    let data_dir =
        s.fs.lookup(s.fs.lookup(s.root, "mem").await.expect("mem").ino, "data")
            .await
            .expect("data")
            .ino;
    assert!(matches!(
        s.fs.create(data_dir, "new").await,
        Err(FsError::ReadOnly)
    ));
    assert!(matches!(
        s.fs.mkdir(data_dir, "sub").await,
        Err(FsError::ReadOnly)
    ));
    let a = s.fs.lookup(data_dir, "a.bin").await.expect("lookup");
    assert!(matches!(
        s.fs.open(a.ino, true).await,
        Err(FsError::ReadOnly)
    ));
    assert!(matches!(
        s.fs.unlink(data_dir, "a.bin").await,
        Err(FsError::ReadOnly)
    ));
    let taken = s.fs.lookup(dir, "taken.pt").await.expect("lookup");
    assert!(matches!(
        s.fs.open_writing(taken.ino, true).await,
        Err(FsError::Exists)
    ));
    // Someone else takes a name between the create and the commit: the commit refuses.
    let fh = s.write_new(dir, "race.pt", b"mine", 4).await;
    s.mem.put("ckpt/race.pt", b"theirs".to_vec());
    assert!(matches!(s.fs.flush(fh).await, Err(FsError::Store(_))));
    s.fs.release_write(fh).await;
    assert_eq!(
        s.mem.current("ckpt/race.pt").expect("theirs").data,
        &b"theirs"[..]
    );
    assert_eq!(
        s.mem.current("ckpt/taken.pt").expect("theirs").data,
        &b"theirs"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rename_publishes_and_unlink_follows_the_settings() {
    let s = setup(false, false);
    let dir = s.dir("ckpt").await;
    // torch.save: write a temporary name, close, os.replace.
    let data = random_bytes((2 * PART + 7) as usize, 3);
    let fh = s.write_new(dir, "model.pt.tmp", &data, 1 << 20).await;
    s.fs.flush(fh).await.expect("commit");
    s.fs.release_write(fh).await;
    s.fs.rename(dir, "model.pt.tmp", dir, "model.pt", false)
        .await
        .expect("rename");
    assert!(s.mem.current("ckpt/model.pt.tmp").is_none());
    assert_eq!(
        s.mem.current("ckpt/model.pt").expect("published").data,
        &data[..]
    );
    assert_eq!(s.read_back(dir, "model.pt").await, data);
    // A rename before the commit: the file commits under its new name only.
    let fh = s.write_new(dir, "open.tmp", b"still writing", 5).await;
    s.fs.rename(dir, "open.tmp", dir, "final.bin", false)
        .await
        .expect("rename open file");
    s.fs.flush(fh).await.expect("commit");
    s.fs.release_write(fh).await;
    assert!(s.mem.current("ckpt/open.tmp").is_none());
    assert_eq!(
        s.mem.current("ckpt/final.bin").expect("committed").data,
        &b"still writing"[..]
    );
    // Over an existing object: refused without `overwrite`.
    let fh = s.write_new(dir, "other.tmp", b"x", 1).await;
    s.fs.flush(fh).await.expect("commit");
    s.fs.release_write(fh).await;
    assert!(matches!(
        s.fs.rename(dir, "other.tmp", dir, "model.pt", false).await,
        Err(FsError::Exists)
    ));
    // Unlink: a file not yet committed leaves nothing; this mount's own object may go; an
    // object someone else wrote needs `delete`.
    let fh = s.write_new(dir, "scratch", b"temporary", 3).await;
    s.fs.unlink(dir, "scratch")
        .await
        .expect("unlink while open");
    s.fs.flush(fh).await.expect("close after unlink");
    s.fs.release_write(fh).await;
    assert!(s.mem.current("ckpt/scratch").is_none());
    s.fs.unlink(dir, "other.tmp").await.expect("own object");
    assert!(s.mem.current("ckpt/other.tmp").is_none());
    s.mem.put("ckpt/theirs", b"x".to_vec());
    s.fs.lookup(dir, "theirs").await.ok();
    assert!(matches!(
        s.fs.unlink(dir, "theirs").await,
        Err(FsError::NotPermitted)
    ));
    assert!(s.mem.current("ckpt/theirs").is_some());

    let s = setup(true, true);
    let dir = s.dir("ckpt").await;
    s.mem.put("ckpt/theirs", b"old".to_vec());
    let theirs = s.fs.lookup(dir, "theirs").await.expect("lookup");
    let o =
        s.fs.open_writing(theirs.ino, true)
            .await
            .expect("overwrite allowed");
    s.fs.write(o.fh, 0, b"new").await.expect("write");
    s.fs.flush(o.fh).await.expect("commit");
    s.fs.release_write(o.fh).await;
    assert_eq!(
        s.mem.current("ckpt/theirs").expect("replaced").data,
        &b"new"[..]
    );
    s.fs.unlink(dir, "theirs").await.expect("delete allowed");
    assert!(s.mem.current("ckpt/theirs").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_part_fails_the_writer_and_leaves_nothing_behind() {
    let s = setup(false, false);
    let dir = s.dir("ckpt").await;
    // The upload starts, its first part is stored, the second fails for good.
    s.faulty.script(
        Op::Write,
        [
            Fault::Stall(std::time::Duration::ZERO),
            Fault::Stall(std::time::Duration::ZERO),
            Fault::Status(500),
        ],
    );
    let (_, o) = s.fs.create(dir, "broken.pt").await.expect("create");
    let data = random_bytes((4 * PART) as usize, 4);
    let mut failed = None;
    for (i, c) in data.chunks(PART as usize).enumerate() {
        if let Err(e) = s.fs.write(o.fh, i as u64 * PART, c).await {
            failed = Some(e);
        }
    }
    let commit = s.fs.flush(o.fh).await;
    assert!(
        failed.is_some() || commit.is_err(),
        "the writer hears of the failure at a write or at close"
    );
    assert!(commit.is_err(), "no commit after a failed part");
    s.fs.release_write(o.fh).await;
    assert!(
        s.mem.current("ckpt/broken.pt").is_none(),
        "no partial object"
    );
    let t0 = std::time::Instant::now();
    while s.mem.counts.open_uploads.load(Ordering::Relaxed) != 0 {
        assert!(t0.elapsed().as_secs() < 10, "the upload was never aborted");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // The name was never in the store, so it is gone from the mount too.
    assert!(matches!(
        s.fs.lookup(dir, "broken.pt").await,
        Err(FsError::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_makes_a_directory_the_mount_remembers() {
    let s = setup(false, false);
    let mem_root = s.fs.lookup(s.root, "mem").await.expect("mem").ino;
    let ckpt =
        s.fs.mkdir(mem_root, "ckpt")
            .await
            .expect("mkdir of the writable prefix itself")
            .ino;
    assert!(matches!(
        s.fs.mkdir(mem_root, "elsewhere").await,
        Err(FsError::ReadOnly)
    ));
    let step = s.fs.mkdir(ckpt, "step-100").await.expect("mkdir").ino;
    assert!(matches!(
        s.fs.mkdir(ckpt, "step-100").await,
        Err(FsError::Exists)
    ));
    assert_eq!(
        s.fs.lookup(ckpt, "step-100").await.expect("lookup").ino,
        step
    );
    // Listed in its parent too, though the store has nothing below it yet.
    let dh = s.fs.opendir(ckpt).expect("opendir");
    let names: Vec<String> =
        s.fs.readdir(dh, 0, 100)
            .await
            .expect("readdir")
            .into_iter()
            .map(|e| e.name)
            .collect();
    s.fs.releasedir(dh);
    assert_eq!(names, [".", "..", "step-100"]);
    let fh = s.write_new(step, "shard-0.bin", b"weights", 7).await;
    assert!(matches!(
        s.fs.rmdir(ckpt, "step-100").await,
        Err(FsError::NotEmpty)
    ));
    s.fs.flush(fh).await.expect("commit");
    s.fs.release_write(fh).await;
    assert_eq!(
        s.mem
            .current("ckpt/step-100/shard-0.bin")
            .expect("committed")
            .data,
        &b"weights"[..]
    );
    assert!(matches!(
        s.fs.rmdir(ckpt, "step-100").await,
        Err(FsError::NotEmpty)
    ));
    s.fs.mkdir(ckpt, "empty").await.expect("mkdir");
    s.fs.rmdir(ckpt, "empty")
        .await
        .expect("rmdir of an empty directory made here");
    assert!(matches!(
        s.fs.lookup(ckpt, "empty").await,
        Err(FsError::NotFound)
    ));
}

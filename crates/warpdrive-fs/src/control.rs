//! The control directory inside the mount, `<mount>/.warpdrive/`, whose one file `plan` is the
//! mount's one writable path: a reader that can reach the mount but not the control socket
//! (a container given only the mount) submits its epoch plans there.
//!
//! The directory and the file have fixed inode numbers at the top of the range, which the
//! inode table never hands out; the directory is found by name only (the root's listing
//! does not show it, so tree walks and copies of the mount do not see it). Each open of
//! `plan` gets its own handle (numbered from [`FIRST_FH`], apart from file handles), which
//! collects what is written to it. The first `flush` (every `close` of a descriptor) or
//! `fsync` after a write parses the text ([`parse`]) and submits or clears a plan: a
//! refused text answers that `close` or `fsync` `EINVAL`, changes nothing, and is logged
//! with its reason. A read of `plan` returns text: the handle's own last result, the last
//! results of every writer, and one line per plan kept ([`status_text`]), rebuilt at each
//! read from offset 0. The kernel passes reads and writes of `plan` straight to the daemon
//! (direct I/O), so its reported size of 0 hides nothing.
//!
//! The text written is a header line and the plan's entries, one per line as in plan files
//! ([`crate::plan::parse_lines`]):
//!
//! ```text
//! warpdrive-plan job=resnet rank=0 epoch=3 root=/wd
//! imagenet/train/n01440764/n01440764_10026.JPEG
//! shards/train-000042.tar<TAB>1048576<TAB>524288
//! ```
//!
//! or `warpdrive-plan clear job=resnet [rank=0]`. Entry paths are `BACKEND/KEY`,
//! `wd://BACKEND/KEY`, or absolute paths under `root=` (where the writer sees the mount:
//! inside a container that is rarely where the daemon mounted it), or under the daemon's mount
//! point when there is no `root=`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use warpdrive_api::api::{PlanRequest, PlanStatus};

use crate::inode::Ino;
use crate::plan::{PlanError, parse_lines_from};

/// The control directory's name in the mount root.
pub const DIR_NAME: &str = ".warpdrive";
/// The plan file's name in the control directory.
pub const PLAN_NAME: &str = "plan";
/// The control directory's inode.
pub const DIR_INO: Ino = Ino(u64::MAX - 1);
/// The plan file's inode.
pub const PLAN_INO: Ino = Ino(u64::MAX - 2);
/// The first handle of the control file: far above any file or directory handle.
pub const FIRST_FH: u64 = 1 << 62;
/// The most one handle collects: a plan's largest text, [`crate::plan::MAX_ENTRIES`] lines
/// of about 128 bytes (as the control API's body limit).
pub const MAX_TEXT: usize = 256 << 20;
/// The first word of a control file's text.
pub const HEADER: &str = "warpdrive-plan";
/// Results of earlier writes kept for reads of the file.
const RESULTS_KEPT: usize = 16;

/// Whether `ino` is one of the control directory's inodes.
pub fn owns(ino: Ino) -> bool {
    ino == DIR_INO || ino == PLAN_INO
}

/// Whether `fh` is a handle of the control file.
pub fn owns_fh(fh: u64) -> bool {
    fh >= FIRST_FH
}

/// What a control file's text asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Submit(PlanRequest),
    Clear { job: String, rank: Option<u32> },
}

/// Parses a control file's text: the header line, then (for a submission) the entries, each
/// path made `BACKEND/KEY` (absolute paths against `root=`, else `mount_point`). Errors name
/// the line.
pub fn parse(text: &str, mount_point: &Path) -> Result<Command, PlanError> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let mut words = first.trim_end_matches('\r').split_whitespace();
    if words.next() != Some(HEADER) {
        return Err(PlanError(format!(
            "line 1: start with `{HEADER} job=JOB rank=R epoch=E [root=/mount/as/you/see/it]` (or `{HEADER} clear job=JOB`)"
        )));
    }
    let mut clear = false;
    let mut fields: HashMap<&str, &str> = HashMap::new();
    for w in words {
        if w == "clear" && fields.is_empty() && !clear {
            clear = true;
            continue;
        }
        let Some((k, v)) = w.split_once('=') else {
            return Err(PlanError(format!("line 1: `{w}` is not KEY=VALUE")));
        };
        if !matches!(k, "job" | "rank" | "epoch" | "root")
            || (clear && !matches!(k, "job" | "rank"))
        {
            return Err(PlanError(format!("line 1: unknown field `{k}`")));
        }
        if fields.insert(k, v).is_some() {
            return Err(PlanError(format!("line 1: `{k}` given twice")));
        }
    }
    let job = fields
        .get("job")
        .ok_or_else(|| PlanError("line 1: give job=JOB".into()))?
        .to_string();
    let number = |k: &str| -> Result<Option<u64>, PlanError> {
        fields
            .get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| PlanError(format!("line 1: {k}={v} is not a number")))
            })
            .transpose()
    };
    let rank = number("rank")?
        .map(|r| u32::try_from(r).map_err(|_| PlanError(format!("line 1: rank={r} is too large"))))
        .transpose()?;
    if clear {
        if rest
            .lines()
            .any(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            return Err(PlanError("a clear takes no entries".into()));
        }
        return Ok(Command::Clear { job, rank });
    }
    let root = fields.get("root").map_or(mount_point, Path::new);
    // Entry lines start on line 2 of the file.
    let mut entries = parse_lines_from(rest, 2)?;
    for (i, e) in entries.iter_mut().enumerate() {
        e.path = relative(&e.path, root)
            .map_err(|why| PlanError(format!("entry {} ({:?}): {why}", i + 1, e.path)))?;
    }
    Ok(Command::Submit(PlanRequest {
        job,
        rank: rank.unwrap_or(0),
        epoch: number("epoch")?.unwrap_or(0),
        entries,
    }))
}

/// `path` as `BACKEND/KEY`: `wd://` stripped, an absolute path taken below `root`.
fn relative(path: &str, root: &Path) -> Result<String, String> {
    if let Some(r) = path.strip_prefix("wd://") {
        return Ok(r.to_string());
    }
    if !path.starts_with('/') {
        return Ok(path.to_string());
    }
    match Path::new(path).strip_prefix(root) {
        Ok(r) => r
            .to_str()
            .map(str::to_string)
            .ok_or_else(|| "not UTF-8".to_string()),
        Err(_) => Err(format!(
            "not under the mount at {} (give root=WHERE/YOU/MOUNT/IT in the header, or BACKEND/KEY paths)",
            root.display()
        )),
    }
}

/// The text a read of the control file returns: `own` (the handle's last result), the last
/// results of every writer, newest last, then one line per plan.
pub fn status_text(own: Option<&str>, results: &[String], plans: &[PlanStatus]) -> String {
    let mut s = String::new();
    if let Some(own) = own {
        s.push_str(&format!("this {own}\n"));
    }
    for r in results {
        s.push_str(&format!("last {r}\n"));
    }
    for p in plans {
        s.push_str(&format!(
            "plan job={} rank={} epoch={} entries={} reached={} ahead={} late={} failed={} fetched_bytes={} lead_bytes={} rate_bytes_per_second={:.0} lead_seconds={:.1} state={}\n",
            p.job,
            p.rank,
            p.epoch,
            p.entries,
            p.reached,
            p.ahead,
            p.late,
            p.failed,
            p.fetched_bytes,
            p.lead_bytes,
            p.rate_bytes_per_second,
            p.lead_seconds,
            p.state
        ));
    }
    if plans.is_empty() {
        s.push_str("no plans\n");
    }
    s
}

/// One open of the control file.
#[derive(Debug, Default)]
struct Handle {
    /// What has been written.
    text: Vec<u8>,
    /// Written since the last submission.
    dirty: bool,
    /// This handle's last result, for its reads.
    result: Option<String>,
    /// The text its reads return, built at a read from offset 0.
    status: Vec<u8>,
}

/// The control file's handles and its writers' last results.
#[derive(Debug)]
pub struct Control {
    /// `None`: no control directory (`fuse.control_file: false`, or zero-message opens,
    /// where the daemon never hears of a `close`).
    pub(crate) mount_point: Option<PathBuf>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    results: Mutex<VecDeque<String>>,
}

/// Why a write to the control file was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    BadHandle,
    TooLarge,
}

impl Control {
    pub fn new(mount_point: Option<PathBuf>) -> Control {
        Control {
            mount_point,
            handles: Mutex::default(),
            next_fh: AtomicU64::new(FIRST_FH),
            results: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.mount_point.is_some()
    }

    /// Numbers handles from `FIRST_FH + base` (a replacement daemon's own range).
    pub fn set_handle_base(&self, base: u64) {
        self.next_fh.store(FIRST_FH + base, Ordering::Relaxed);
    }

    pub fn open(&self) -> u64 {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Handle::default());
        fh
    }

    /// Writes `data` at `offset` of the handle's text.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, WriteError> {
        let mut handles = self.handles.lock();
        let h = handles.get_mut(&fh).ok_or(WriteError::BadHandle)?;
        let end = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(data.len()))
            .filter(|end| *end <= MAX_TEXT)
            .ok_or(WriteError::TooLarge)?;
        let start = end - data.len();
        if h.text.len() < end {
            h.text.resize(end, 0);
        }
        h.text[start..end].copy_from_slice(data);
        h.dirty = true;
        Ok(data.len() as u32)
    }

    /// Truncates the handle's text (`open` with `O_TRUNC`, `truncate`).
    pub fn truncate(&self, fh: u64, size: u64) {
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.text.truncate(usize::try_from(size).unwrap_or(usize::MAX));
        }
    }

    /// The handle's text if written since its last submission (taken: a second `close` of
    /// the same text does not submit it again).
    pub fn take_dirty(&self, fh: u64) -> Option<Vec<u8>> {
        let mut handles = self.handles.lock();
        let h = handles.get_mut(&fh)?;
        if !std::mem::take(&mut h.dirty) {
            return None;
        }
        Some(h.text.clone())
    }

    /// Records a submission's result for the handle's reads and everyone's.
    pub fn record(&self, fh: u64, result: String) {
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.result = Some(result.clone());
        }
        let mut r = self.results.lock();
        if r.len() == RESULTS_KEPT {
            r.pop_front();
        }
        r.push_back(result);
    }

    /// Up to `size` bytes of the handle's status text from `offset`; `status` builds the text
    /// (from the handle's own result and everyone's) at a read from offset 0.
    pub fn read(
        &self,
        fh: u64,
        offset: u64,
        size: u32,
        status: impl FnOnce(Option<&str>, &[String]) -> String,
    ) -> Option<Vec<u8>> {
        let mut handles = self.handles.lock();
        let h = handles.get_mut(&fh)?;
        if offset == 0 {
            let results: Vec<String> = self.results.lock().iter().cloned().collect();
            h.status = status(h.result.as_deref(), &results).into_bytes();
        }
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(h.status.len());
        let end = start.saturating_add(size as usize).min(h.status.len());
        Some(h.status[start..end].to_vec())
    }

    pub fn release(&self, fh: u64) {
        self.handles.lock().remove(&fh);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(text: &str) -> PlanRequest {
        match parse(text, Path::new("/mnt/wd")) {
            Ok(Command::Submit(r)) => r,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    fn refused(text: &str) -> String {
        match parse(text, Path::new("/mnt/wd")) {
            Err(e) => e.0,
            Ok(c) => panic!("{text:?} was accepted: {c:?}"),
        }
    }

    #[test]
    fn a_header_and_entries_make_a_request_with_paths_below_the_mount() {
        let r = submit(
            "warpdrive-plan job=resnet rank=2 epoch=7\n\
             # a comment\n\
             data/a.jpg\n\
             wd://data/b.jpg\n\
             /mnt/wd/data/c.tar\t512\t1024\n",
        );
        assert_eq!((r.job.as_str(), r.rank, r.epoch), ("resnet", 2, 7));
        let paths: Vec<&str> = r.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["data/a.jpg", "data/b.jpg", "data/c.tar"]);
        assert_eq!(
            (r.entries[2].offset, r.entries[2].length),
            (Some(512), Some(1024))
        );
        // rank and epoch default to 0; root= names where the writer sees the mount.
        let r = submit("warpdrive-plan job=j root=/wd\n/wd/data/a.jpg\n");
        assert_eq!((r.rank, r.epoch), (0, 0));
        assert_eq!(r.entries[0].path, "data/a.jpg");
    }

    #[test]
    fn a_clear_names_its_job_and_maybe_a_rank() {
        let c = parse("warpdrive-plan clear job=resnet rank=1\n", Path::new("/"));
        assert_eq!(
            c,
            Ok(Command::Clear {
                job: "resnet".into(),
                rank: Some(1)
            })
        );
        let c = parse("warpdrive-plan clear job=resnet", Path::new("/"));
        assert!(matches!(c, Ok(Command::Clear { rank: None, .. })), "{c:?}");
    }

    #[test]
    fn bad_texts_are_refused_naming_the_line() {
        for (text, says) in [
            ("", "line 1: start with"),
            ("data/a.jpg\n", "line 1: start with"),
            ("warpdrive-plan rank=0\ndata/a\n", "give job=JOB"),
            (
                "warpdrive-plan job=j rank=x\ndata/a\n",
                "rank=x is not a number",
            ),
            (
                "warpdrive-plan job=j rank=99999999999\ndata/a\n",
                "too large",
            ),
            (
                "warpdrive-plan job=j colour=red\n",
                "unknown field `colour`",
            ),
            ("warpdrive-plan job=j job=k\n", "`job` given twice"),
            ("warpdrive-plan job=j epoch\n", "not KEY=VALUE"),
            (
                "warpdrive-plan clear job=j epoch=3\n",
                "unknown field `epoch`",
            ),
            (
                "warpdrive-plan clear job=j\ndata/a\n",
                "a clear takes no entries",
            ),
            (
                "warpdrive-plan job=j\ndata/a\ndata/b\tx\t3\n",
                "line 3: offset",
            ),
            ("warpdrive-plan job=j\ndata/a\t1\n", "line 2: expected PATH"),
            (
                "warpdrive-plan job=j\n/etc/passwd\n",
                "entry 1 (\"/etc/passwd\"): not under the mount at /mnt/wd",
            ),
            (
                "warpdrive-plan job=j root=/wd\n/mnt/wd/data/a\n",
                "not under the mount at /wd",
            ),
        ] {
            let e = refused(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn writes_collect_until_taken_and_reads_show_the_status_from_offset_zero() {
        let c = Control::new(Some("/wd".into()));
        let fh = c.open();
        assert!(owns_fh(fh));
        assert_eq!(c.take_dirty(fh), None, "nothing written");
        assert_eq!(c.write(fh, 0, b"hello "), Ok(6));
        assert_eq!(c.write(fh, 6, b"world"), Ok(5));
        assert_eq!(c.write(fh, 0, b"J"), Ok(1));
        assert_eq!(c.take_dirty(fh).as_deref(), Some(&b"Jello world"[..]));
        assert_eq!(c.take_dirty(fh), None, "taken once per write");
        c.truncate(fh, 0);
        assert_eq!(
            c.write(fh, MAX_TEXT as u64, b"x"),
            Err(WriteError::TooLarge)
        );
        assert_eq!(c.write(fh + 1, 0, b"x"), Err(WriteError::BadHandle));

        c.record(fh, "accepted job=j".into());
        let other = c.open();
        c.record(other, "refused: line 1".into());
        let text = |c: &Control, fh, off, size| {
            c.read(fh, off, size, |own, all| status_text(own, all, &[]))
                .map(|b| String::from_utf8(b).expect("utf-8"))
        };
        let whole = text(&c, fh, 0, 4096).expect("open handle");
        assert_eq!(
            whole,
            "this accepted job=j\nlast accepted job=j\nlast refused: line 1\nno plans\n"
        );
        // Later offsets read the text built at offset 0, even as results change.
        c.record(other, "accepted job=k".into());
        assert_eq!(text(&c, fh, 5, 8).as_deref(), Some("accepted"));
        assert_eq!(text(&c, fh, 10_000, 8).as_deref(), Some(""));
        c.release(fh);
        assert_eq!(text(&c, fh, 0, 8), None);
    }
}

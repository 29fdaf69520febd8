//! Taking over a live mount from a previous daemon: the inode journal, handle numbers, and
//! the passthrough opens it left (see [`crate::resume`]).

use std::path::Path;
use std::sync::atomic::Ordering;

use warpdrive_cache::ObjectId;

use super::Fs;
use crate::inode::Ino;
use crate::resume::{self, InodeJournal, ResumeError};

impl Fs {
    /// Starts writing the session state to `dir` for daemon `generation` of this mount
    /// (0: the one that mounted, which starts a new journal; later ones replay their
    /// predecessors' first). `backends` identifies each backend (where its keys are), in
    /// order: a journal of other backends is refused. Returns how many inodes were
    /// restored. Call before serving.
    pub fn start_session(
        &self,
        dir: &Path,
        generation: u64,
        backends: &[String],
    ) -> Result<usize, ResumeError> {
        let names = backends;
        let path = dir.join("inodes");
        let io_err = |source| ResumeError::Io {
            path: path.clone(),
            source,
        };
        let restored = if generation == 0 {
            self.inodes
                .attach_journal(InodeJournal::create(&path, names).map_err(io_err)?);
            0
        } else {
            let replayed = resume::replay(&path, names)?;
            let n = replayed.records.len();
            self.inodes.restore(replayed.records);
            // New inodes are numbered in a range of this daemon's own, above any number an
            // earlier one handed out, even one whose record was lost (a full disk).
            self.inodes.number_from(resume::handle_base(generation));
            self.inodes
                .attach_journal(InodeJournal::append_to(&path, replayed.whole).map_err(io_err)?);
            n
        };
        let base = resume::handle_base(generation);
        self.next_fh.store(base, Ordering::Relaxed);
        self.control.set_handle_base(base);
        Ok(restored)
    }

    /// Pins cache file `oid` for inode `ino`, which a previous daemon handed the kernel for
    /// passthrough and which handles it opened still read, until [`Fs::backing_closed`].
    pub fn adopt_passthrough(&self, ino: Ino, oid: u64) {
        let Some(cache) = self.reader.cache() else {
            return;
        };
        let Some(node) = self.inodes.get(ino) else {
            return;
        };
        let Some(b) = node.path.backend else { return };
        let id = ObjectId {
            backend: self.backend(b).name().to_string(),
            key: node.path.key.clone(),
            etag: String::new(),
        };
        if cache.pin_again(&id, oid) {
            self.adopted.lock().insert(ino, (id, oid));
        }
    }

    /// The [`resume::version_tag`] of the object version handle `fh` reads, if it is one
    /// of this daemon's read handles.
    pub fn handle_version(&self, fh: u64) -> Option<u64> {
        let h = self.files.read().get(&fh).cloned()?;
        Some(resume::version_tag(&h.obj.id.etag))
    }

    /// The kernel's backing of `ino` closed: a pin [`Fs::adopt_passthrough`] took is let go.
    pub fn backing_closed(&self, ino: Ino) {
        if let Some((id, oid)) = self.adopted.lock().remove(&ino)
            && let Some(cache) = self.reader.cache()
        {
            cache.unpin(&id, oid);
        }
    }
}

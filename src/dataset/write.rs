//! Crash-safe file replacement: every file consentry writes goes through `AtomicFile`.
//!
//! Bytes go to a temporary file in the target's own directory (so the final rename never
//! crosses a file system), which is flushed and synced, renamed into place, and then the
//! directory is synced so the rename itself survives a power cut. A temporary file that is
//! dropped without `commit` is removed; one orphaned by a kill carries `TEMP_PREFIX` and is
//! swept by the next run. The writing process holds an exclusive lock on its temporary
//! file until it is done with it, and the sweep skips a locked one: a job sweeping a
//! directory never removes a file that another running job (of any name) is writing there.
//! The kernel drops a killed process's locks, so its orphans are swept.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::digest::{self, Sha256};
use super::{is_temp_name, TEMP_PREFIX, TEMP_RANDOM};

/// How `commit` treats an existing file at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Fail if the target exists (filter outputs never overwrite).
    Never,
    /// Atomically replace the target (in-place rewrites).
    Always,
}

/// Slices handed to one `writev` (Linux's `IOV_MAX`).
const MAX_SLICES: usize = 1024;

/// How many temporary files `AtomicFile::create` makes before giving up, when concurrent
/// sweeps keep taking them before it can lock them.
const CREATE_ATTEMPTS: usize = 8;

/// Written bytes are handed to the disk in windows of this size while writing goes on.
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// A file being written beside its target, hashed as it is written.
pub struct AtomicFile {
    target: PathBuf,
    temp: NamedTempFile,
    hasher: Sha256,
    bytes: u64,
    /// Bytes before this offset have had their writeback started.
    flushed: u64,
    /// The permission bits to set before the rename, when they differ from the temp file's
    /// (which its owner can always read and write, so that a sweep can lock and remove it).
    final_mode: Option<u32>,
}

/// Which file a path named when it was written: its inode number and birth time, which a
/// rename keeps. (Not the device number: a remount or a reboot may change it.) The birth
/// time is absent where the file system does not keep one; the inode must then do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileId {
    pub ino: u64,
    /// Nanoseconds since the Unix epoch.
    pub born_ns: Option<u64>,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        let born_ns = meta
            .created()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .and_then(|d| u64::try_from(d.as_nanos()).ok());
        FileId {
            ino: meta.ino(),
            born_ns,
        }
    }

    /// Whether `now` is this file: the same inode, born at the same instant where both
    /// know when (a journal written before birth times were recorded, a build or file
    /// system without them, go by the inode alone).
    pub fn is(&self, now: &FileId) -> bool {
        self.ino == now.ino
            && match (self.born_ns, now.born_ns) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The file at `path` itself (not a symlink's target); `None` when there is none.
    pub fn at(path: &Path) -> io::Result<Option<FileId>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) => Ok(Some(FileId::of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// What a committed file holds, for the report.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

impl AtomicFile {
    /// Creates the temporary file in `target`'s directory (creating that directory if needed)
    /// with permission bits `mode`, which the committed file keeps.
    pub fn create(target: &Path, mode: u32) -> io::Result<AtomicFile> {
        let dir = parent(target);
        std::fs::create_dir_all(dir)?;
        // A sweep by another job may take a new file for an orphan between its creation and
        // the lock below: the file is then made again under another name.
        for _ in 0..CREATE_ATTEMPTS {
            let temp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .rand_bytes(TEMP_RANDOM)
                .suffix(".tmp")
                .permissions(std::fs::Permissions::from_mode((mode & 0o777) | 0o600))
                .tempfile_in(dir)?;
            match temp.as_file().try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => continue,
                // No locks on this file system (some NFS setups): written unlocked, as a
                // sweep there leaves every file it cannot lock.
                Err(std::fs::TryLockError::Error(_)) => {}
            }
            if !same_file(temp.as_file(), temp.path())? {
                continue;
            }
            // As created (the umask applied), less the owner bits `mode` lacks.
            let created = temp.as_file().metadata()?.permissions().mode() & 0o777;
            let wanted = created & !(0o600 & !mode);
            return Ok(AtomicFile {
                target: target.to_path_buf(),
                temp,
                hasher: Sha256::new(),
                bytes: 0,
                flushed: 0,
                final_mode: (wanted != created).then_some(wanted),
            });
        }
        Err(io::Error::other(
            "temporary files kept being removed by a concurrent clean-up",
        ))
    }

    /// The file being written, which the target will be once committed.
    pub fn file_id(&self) -> io::Result<FileId> {
        Ok(FileId::of(&self.temp.as_file().metadata()?))
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// The sha256 (hex) of what has been written so far.
    pub fn digest(&self) -> String {
        self.hasher.hex()
    }

    /// Starts the still-empty file with the first `len` bytes of `src`, copied inside the
    /// kernel where the file system allows (`copy_file_range`), and takes `digest` as their
    /// hash: the caller hashed those bytes when it read them. Fails if `src` holds fewer.
    pub fn splice(&mut self, src: File, len: u64, digest: Sha256) -> io::Result<()> {
        if self.bytes != 0 {
            return Err(io::Error::other("splice into a file already written to"));
        }
        let copied = io::copy(&mut src.take(len), self.temp.as_file_mut())?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the file shrank while being read ({copied} of {len} bytes left)"),
            ));
        }
        self.hasher = digest;
        self.wrote(len);
        Ok(())
    }

    /// Writes the `kept` ranges of `data` (in order, not overlapping) straight from it, and
    /// hashes them. With `input`, all of `data` also goes into that stream, each kept range
    /// hashed side by side with its copy in this file's (two streams hash faster on one core
    /// than one after the other; see `digest`).
    pub fn write_ranges(
        &mut self,
        data: &[u8],
        kept: &[Range<usize>],
        input: Option<&mut Sha256>,
    ) -> io::Result<()> {
        match input {
            Some(input) => {
                let mut at = 0;
                for r in kept {
                    input.update(&data[at..r.start]);
                    let piece = &data[r.clone()];
                    digest::update_pair(&mut self.hasher, piece, input, piece);
                    at = r.end;
                }
                input.update(&data[at..]);
            }
            None => kept
                .iter()
                .for_each(|r| self.hasher.update(&data[r.clone()])),
        }
        for group in kept.chunks(MAX_SLICES) {
            // An empty slice left alone at the end would make writev return 0.
            let mut slices: Vec<IoSlice<'_>> = group
                .iter()
                .filter(|r| !r.is_empty())
                .map(|r| IoSlice::new(&data[r.clone()]))
                .collect();
            let mut rest = &mut slices[..];
            while !rest.is_empty() {
                let n = match self.temp.as_file_mut().write_vectored(rest) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.wrote(n as u64);
                IoSlice::advance_slices(&mut rest, n);
            }
        }
        Ok(())
    }

    fn wrote(&mut self, n: u64) {
        self.bytes += n;
        if self.bytes - self.flushed >= WRITEBACK_WINDOW {
            start_writeback(self.temp.as_file(), self.flushed, self.bytes - self.flushed);
            self.flushed = self.bytes;
        }
    }

    /// Syncs the data, renames it onto the target and syncs the directory.
    pub fn commit(self, replace: Replace) -> io::Result<Written> {
        self.finish(replace)
    }

    /// Replaces the target like `commit(Replace::Always)`, and hands back a handle on the
    /// file it replaced, on a local file system (see `hold`). The kernel frees a replaced
    /// file's blocks and cached pages when its last handle closes, which for a file of a
    /// hundred megabytes takes tens of milliseconds: the caller closes the handle where that
    /// holds up no work. The replaced file is gone from its directory; until the handle
    /// closes (at the latest when the process ends) it can be reached only through it.
    pub fn replace(self) -> io::Result<(Written, Option<File>)> {
        let held = hold(&self.target);
        Ok((self.finish(Replace::Always)?, held))
    }

    fn finish(mut self, replace: Replace) -> io::Result<Written> {
        self.temp.as_file_mut().flush()?;
        if let Some(mode) = self.final_mode {
            self.temp
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        self.temp.as_file().sync_all()?;
        let sha256 = self.hasher.hex();
        match replace {
            Replace::Never => self
                .temp
                .persist_noclobber(&self.target)
                .map_err(|e| e.error)?,
            Replace::Always => self.temp.persist(&self.target).map_err(|e| e.error)?,
        };
        sync_dir(parent(&self.target))?;
        Ok(Written {
            path: self.target,
            sha256,
            bytes: self.bytes,
        })
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.temp.as_file_mut().write(buf)?;
        self.hasher.update(&buf[..n]);
        self.wrote(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.temp.as_file_mut().flush()
    }
}

/// File systems that free an unlinked file's blocks when its last handle closes. A network
/// or FUSE file system instead renames a file still open on this client out of the way
/// (`.nfsXXXX`, `.fuse_hiddenXXXX`), which would leave a replaced file's rows at a readable
/// path: there, nothing is held. Magic numbers from `statfs(2)`.
#[cfg(target_os = "linux")]
const FREES_ON_LAST_CLOSE: [(u32, &str); 5] = [
    (0xEF53, "ext2/3/4"),
    (0x5846_5342, "xfs"),
    (0x9123_683E, "btrfs"),
    (0xF2F5_2010, "f2fs"),
    (0x0102_1994, "tmpfs"),
];

/// A handle that only keeps the file at `path` alive: `O_PATH` neither reads the file nor
/// runs a device's or FIFO's open, and `O_NOFOLLOW` holds a symlink itself, not its target.
#[cfg(target_os = "linux")]
fn hold(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let fs = rustix::fs::statfs(parent(path)).ok()?;
    // `f_type`'s integer type differs between targets; every magic number fits in 32 bits.
    let magic = fs.f_type as u32;
    if !FREES_ON_LAST_CLOSE.iter().any(|&(m, _)| m == magic) {
        return None;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn hold(_path: &Path) -> Option<File> {
    None
}

/// Starts writing `len` bytes at `offset` to disk without waiting, so that the fsync in
/// `commit` finds most of a large file already written instead of all of it dirty (the
/// kernel would otherwise hold it in memory until then, and the sync would stall the job).
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range takes a descriptor and three integers and touches no memory of
    // ours; the descriptor stays open for the call since `file` is borrowed. Its result is
    // ignored on purpose: if it fails, `commit`'s fsync simply does all the writing.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// The permission bits of an existing file, for an output that mirrors or replaces it:
/// read, write and execute only. Set-user-id, set-group-id and sticky bits are not carried
/// over: a data file has no use for them, and a copy made by this process must not gain them.
pub fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o777)
}

/// Makes a completed rename durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes temporary files a killed run left in `dir` (not recursive), leaving those that a
/// live process still holds locked (another job writing there now). Returns how many.
pub fn sweep_temp_files(dir: &Path) -> io::Result<usize> {
    let mut removed = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_temp_name(&name) && entry.file_type()?.is_file() && remove_orphan(&entry.path())? {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes the temporary file at `path` unless a live writer holds it. The lock is taken on
/// the file the path names when opened, and the path must still name that file when it is
/// removed (a writer may have renamed it into place in between). A file that cannot be
/// opened or locked (no locks on this file system, or not readable) may be a running job's:
/// it is left, with a note.
fn remove_orphan(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    let leave = |e: &dyn std::fmt::Display| {
        eprintln!(
            "consentry: note: {}: cannot tell whether a running job is writing it ({e}): left as it is",
            path.display()
        );
        Ok(false)
    };
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return leave(&e),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
        Err(std::fs::TryLockError::Error(e)) if no_locks(&e) => return leave(&e),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    if !same_file(&file, path)? {
        return Ok(false);
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether a lock failed because this file system does not do `flock` (as some NFS setups
/// refuse it on a file opened read-only, or have no lock daemon).
fn no_locks(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(
            e.raw_os_error(),
            Some(libc::EBADF | libc::ENOLCK | libc::EOPNOTSUPP)
        )
}

/// Whether `path` (not following a symlink) names the open `file`.
fn same_file(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    match std::fs::symlink_metadata(path) {
        Ok(now) => Ok(now.dev() == held.dev() && now.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_take_an_inputs_permission_bits_but_never_setuid_setgid_or_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, "x").unwrap();
        for (given, kept) in [
            (0o4755, 0o755),
            (0o2640, 0o640),
            (0o1600, 0o600),
            (0o644, 0o644),
        ] {
            std::fs::set_permissions(&input, std::fs::Permissions::from_mode(given)).unwrap();
            assert_eq!(mode_of(&input), kept, "{given:o}");
            let out = dir.path().join("out.jsonl");
            let mut f = AtomicFile::create(&out, given).unwrap();
            f.write_all(b"x").unwrap();
            f.commit(Replace::Always).unwrap();
            let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode & 0o7000, 0, "{given:o} gave {mode:o}");
        }
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
    }

    #[test]
    fn kept_ranges_land_in_order_and_both_digests_are_right() {
        let mut rng = crate::testing::Rng(7);
        let data = rng.bytes(200_000);
        // Ranges of every length from empty up, with and without gaps between them, and
        // more of them than one writev takes.
        let mut kept = Vec::new();
        let mut at = rng.below(3);
        while at < data.len() {
            let len = rng.below(150).min(data.len() - at);
            kept.push(at..at + len);
            at += len + rng.below(3);
        }
        assert!(kept.len() > 2 * MAX_SLICES);
        let expected: Vec<u8> = kept.iter().flat_map(|r| data[r.clone()].to_vec()).collect();
        let dir = tempfile::tempdir().unwrap();
        for with_input in [false, true] {
            let target = dir.path().join(format!("out-{with_input}"));
            let mut f = AtomicFile::create(&target, 0o600).unwrap();
            f.write_all(b"head\n").unwrap();
            let mut input = Sha256::new();
            input.update(b"before");
            f.write_ranges(&data, &kept, with_input.then_some(&mut input))
                .unwrap();
            f.write_ranges(&data, &[], with_input.then_some(&mut input))
                .unwrap();
            let w = f.commit(Replace::Never).unwrap();
            let written = std::fs::read(&target).unwrap();
            assert_eq!(written, [b"head\n".as_slice(), &expected].concat());
            assert_eq!(w.sha256, sha(&written));
            assert_eq!(w.bytes, written.len() as u64);
            if with_input {
                let whole = [b"before".as_slice(), &data, &data].concat();
                assert_eq!(
                    input.hex(),
                    sha(&whole),
                    "the input stream gets all of data"
                );
            }
        }
    }

    #[test]
    fn a_spliced_prefix_is_copied_whole_and_carries_the_callers_digest() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("in");
        let data = crate::testing::Rng(3).bytes(3 << 20);
        std::fs::write(&source, &data).unwrap();
        let prefix = (2 << 20) + 17;
        let mut digest = Sha256::new();
        digest.update(&data[..prefix]);

        let target = dir.path().join("out");
        let mut f = AtomicFile::create(&target, 0o600).unwrap();
        f.splice(File::open(&source).unwrap(), prefix as u64, digest)
            .unwrap();
        f.write_all(b"tail").unwrap();
        let w = f.commit(Replace::Never).unwrap();
        let expected = [&data[..prefix], b"tail"].concat();
        assert_eq!(std::fs::read(&target).unwrap(), expected);
        assert_eq!(w.sha256, sha(&expected));
        assert_eq!(w.bytes, expected.len() as u64);

        // A source shorter than the prefix asked for, or a file already begun, is an error.
        let short = AtomicFile::create(&dir.path().join("short"), 0o600);
        let err = short
            .unwrap()
            .splice(
                File::open(&source).unwrap(),
                data.len() as u64 + 1,
                Sha256::new(),
            )
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let mut begun = AtomicFile::create(&dir.path().join("begun"), 0o600).unwrap();
        begun.write_all(b"x").unwrap();
        assert!(begun
            .splice(File::open(&source).unwrap(), 1, Sha256::new())
            .is_err());
    }

    #[test]
    fn commit_lands_whole_and_never_clobbers() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("sub/out.jsonl");
        let mut f = AtomicFile::create(&target, 0o644).unwrap();
        f.write_all(b"{\"a\":1}\n").unwrap();
        assert!(!target.exists(), "nothing at the target before commit");
        let w = f.commit(Replace::Never).unwrap();
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert_eq!(std::fs::read(&target).unwrap(), b"{\"a\":1}\n");
        assert_eq!(w.sha256, sha(b"{\"a\":1}\n"));
        let again = AtomicFile::create(&target, 0o644).unwrap();
        assert!(again.commit(Replace::Never).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"{\"a\":1}\n");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left behind: {names:?}");
    }

    #[test]
    fn replace_hands_back_the_replaced_file_and_no_symlink_target() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("data.jsonl");
        std::fs::write(&target, b"the old rows\n").unwrap();
        let mut f = AtomicFile::create(&target, 0o600).unwrap();
        f.write_all(b"new\n").unwrap();
        let (w, replaced) = f.replace().unwrap();
        assert_eq!(w.bytes, 4);
        assert_eq!(std::fs::read(&target).unwrap(), b"new\n");
        // tmpfs and the usual local file systems hold; where the tests run elsewhere,
        // nothing is held and the rest still applies.
        if let Some(held) = replaced {
            let meta = held.metadata().unwrap();
            assert_eq!(
                meta.len(),
                13,
                "the handle is on the file that was replaced"
            );
            assert_eq!(meta.nlink(), 0, "which is gone from the directory");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A symlink at the target is replaced as a name; what it points to is not held.
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, b"keep\n").unwrap();
        let link = dir.path().join("link.jsonl");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let (_, replaced) = AtomicFile::create(&link, 0o600).unwrap().replace().unwrap();
        if let Some(held) = replaced {
            assert!(
                held.metadata().unwrap().file_type().is_symlink(),
                "the link, not its target"
            );
        }
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"keep\n");
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }

    #[test]
    fn dropped_writes_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(&dir.path().join("x"), 0o644).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_sweep_removes_orphans_but_not_a_file_another_writer_is_writing() {
        let dir = tempfile::tempdir().unwrap();
        // An orphan: a killed run's temporary file, which no process holds.
        let orphan = dir.path().join(format!("{TEMP_PREFIX}abcdef.tmp"));
        std::fs::write(&orphan, "half").unwrap();
        // A live writer's, as another job has it open while this one sweeps.
        let target = dir.path().join("out.jsonl");
        let mut live = AtomicFile::create(&target, 0o600).unwrap();
        live.write_all(b"rows\n").unwrap();
        assert_eq!(sweep_temp_files(dir.path()).unwrap(), 1);
        assert!(!orphan.exists());
        live.commit(Replace::Never).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "rows\n");

        // Once its writer is gone (a kill drops the lock with the process), it is an orphan,
        // even one of an output whose owner may not read it.
        let mut dropped = AtomicFile::create(&target, 0o044).unwrap();
        dropped.write_all(b"more").unwrap();
        let temp = dropped.temp.path().to_path_buf();
        let kept = dropped.temp.into_temp_path().keep().unwrap();
        assert_eq!(kept, temp);
        assert_eq!(sweep_temp_files(dir.path()).unwrap(), 1);
        assert!(!temp.exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "rows\n");
    }

    #[test]
    fn an_output_gets_owner_bits_its_input_lacks_only_at_the_rename() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.jsonl");
        let mut f = AtomicFile::create(&target, 0o444).unwrap();
        let temp_mode = f.temp.as_file().metadata().unwrap().permissions().mode();
        assert_eq!(
            temp_mode & 0o600,
            0o600,
            "a sweep can open and remove the temp file"
        );
        f.write_all(b"x").unwrap();
        f.commit(Replace::Never).unwrap();
        let mode = std::fs::metadata(&target).unwrap().permissions().mode();
        assert_eq!(mode & 0o700, 0o400);
    }

    #[test]
    fn a_file_is_told_by_inode_and_by_birth_time_where_both_sides_know_it() {
        let old: FileId = serde_json::from_str(r#"{"dev":1,"ino":2}"#).unwrap();
        let now = FileId {
            ino: 2,
            born_ns: Some(5),
        };
        assert!(
            old.is(&now),
            "a journal without birth times goes by the inode"
        );
        assert!(now.is(&now));
        assert!(!now.is(&FileId {
            ino: 2,
            born_ns: Some(6)
        }));
        assert!(!now.is(&FileId {
            ino: 3,
            born_ns: Some(5)
        }));
    }
}

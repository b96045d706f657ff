//! The erase operation: remove every row of a set of subjects from one dataset file, in
//! place, and prove afterwards that none is left.
//!
//! A file with no erased subject is never written, nor is anything created beside it (same
//! inode, same mtime, same directory). Plain JSONL is judged and rewritten in one pass that
//! creates its output only at the first erased row, copying the untouched prefix; gzip and
//! zstd files, whose recompression is costly, and Parquet files are scanned first (Parquet:
//! the subject column only) and rewritten only on a match. The
//! rewrite goes to a temporary file beside the target that is synced and renamed over it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::rows::{Decision, Engine, RowRule, Sink};
use super::{Outcome, OutputRef, Reason, RowCounts};
use crate::consent::SubjectTable;
use crate::dataset::parquet::{Cell, ParquetInput};
use crate::dataset::scan::{self, Line};
use crate::dataset::write::{mode_of, AtomicFile};
use crate::dataset::{Codec, Format, InputFile};
use crate::exec;

/// The subjects an erase job removes.
#[derive(Debug, Default)]
pub struct Erased {
    ids: SubjectTable<()>,
}

impl Erased {
    /// Adds `id`; true if it was not there yet.
    pub fn insert(&mut self, id: &str) -> Result<bool, &'static str> {
        let before = self.ids.len();
        self.ids.entry(id, || ())?;
        Ok(self.ids.len() > before)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.ids.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.ids.iter().map(|(id, _)| id)
    }
}

/// Removes a row when any subject it names is erased; keeps everything else, including
/// rows without a subject, and flags malformed lines it cannot rule out.
pub struct EraseRule<'a> {
    pub erased: &'a Erased,
}

impl RowRule for EraseRule<'_> {
    fn line(&self, parsed: &Line<'_>, raw: &[u8]) -> Decision {
        let erased = match parsed {
            Line::Subject(id) => self.erased.contains(id),
            Line::Ambiguous(ids) => ids.iter().any(|id| self.erased.contains(id)),
            // A line that cannot be parsed is removed if an erased id appears among its string
            // or integer tokens; otherwise it is kept but counted, since it could not be ruled out.
            Line::Malformed => {
                if scan::any_token(raw, |token| self.erased.contains(token)) {
                    true
                } else {
                    return Decision::KeepUnchecked;
                }
            }
            // A float, bool or container where the subject should be names no subject (§4).
            Line::Invalid | Line::Missing => return Decision::KeepUnnamed,
            Line::Blank => return Decision::Keep,
        };
        if erased {
            Decision::Drop(Reason::Erased)
        } else {
            Decision::KeepNamed
        }
    }

    fn cell(&self, cell: Cell<'_>) -> Decision {
        match cell {
            Cell::Id(id) if self.erased.contains(id) => Decision::Drop(Reason::Erased),
            Cell::Id(_) => Decision::KeepNamed,
            Cell::Missing => Decision::KeepUnnamed,
            // The whole column's type cannot hold ids (float, decimal, bool…): the subject_field
            // is likely wrong, and no row can be ruled out.
            Cell::Invalid => Decision::KeepUnchecked,
        }
    }
}

/// A rewrite ready to be renamed over its file.
pub struct Pending<'p> {
    pub path: &'p Path,
    pub sha256_before: &'p str,
    pub bytes_before: u64,
    pub sha256_after: String,
    pub counts: &'p RowCounts,
}

/// Where a sweep records its rewrites, before and after each rename (the job's journal).
pub trait Ledger: Sync {
    fn pending(&self, rewrite: &Pending<'_>) -> Result<(), String>;
    fn done(&self, rewrite: &Pending<'_>) -> Result<(), String>;
}

/// Sweeps erased subjects out of dataset files.
pub struct Sweep<'a> {
    pub engine: Engine<'a>,
    pub rule: EraseRule<'a>,
    pub dry_run: bool,
    pub ledger: Option<&'a dyn Ledger>,
    pub show: &'a (dyn Fn(&Path) -> String + Sync),
    /// Where the handles on replaced files are closed, off the sweep's path.
    pub replaced: &'a exec::Dropper<std::fs::File>,
}

impl Sweep<'_> {
    /// Erases from one file. The outcome's `output` is set only when the file was rewritten.
    pub fn run(&self, file: &InputFile) -> Outcome {
        super::per_file(file, self.show, |format| self.sweep(file, format))
    }

    /// Counts the rows of erased subjects still in a file (the verification pass).
    pub fn residual(&self, file: &InputFile) -> Result<u64, String> {
        let format = file.format.ok_or("not a dataset format")?;
        let engine = self.engine.unhashed();
        let counts = exec::guard(|| match format {
            Format::Jsonl(codec) => Ok(engine
                .jsonl(&file.path, codec, &self.rule, Sink::None)?
                .counts),
            Format::Parquet => {
                let input = self.parquet_input(file)?;
                Ok(engine
                    .parquet_decide(&file.path, &input, &self.rule)?
                    .counts)
            }
        })?;
        Ok(counts.dropped_for(Reason::Erased))
    }

    fn parquet_input(&self, file: &InputFile) -> Result<ParquetInput, String> {
        ParquetInput::open(&file.path, self.engine.subject)
    }

    fn sink(&self, file: &InputFile) -> Result<AtomicFile, String> {
        let meta =
            std::fs::symlink_metadata(&file.path).map_err(|e| format!("cannot read: {e}"))?;
        if meta.nlink() > 1 {
            return Err(format!(
                "has {} hard links: rewriting this name would leave the rows under the others; not rewritten",
                meta.nlink()
            ));
        }
        AtomicFile::create(&file.path, mode_of(&file.path))
            .map_err(|e| format!("cannot create the rewrite: {e}"))
    }

    fn sweep(&self, file: &InputFile, format: Format) -> Result<Outcome, String> {
        let shown = (self.show)(&file.path);
        let identity = Identity::of(&file.path)?;
        let (sha_before, bytes, counts, sink) = match format {
            Format::Jsonl(Codec::None) if !self.dry_run && single_link(&file.path) => {
                let make = || self.sink(file);
                let pass = self.engine.jsonl(
                    &file.path,
                    Codec::None,
                    &self.rule,
                    Sink::OnFirstDrop(&make),
                )?;
                (pass.sha256, pass.bytes, pass.counts, pass.sink)
            }
            Format::Jsonl(codec) => {
                let scanned = self
                    .engine
                    .jsonl(&file.path, codec, &self.rule, Sink::None)?;
                if scanned.counts.dropped_for(Reason::Erased) == 0 || self.dry_run {
                    (scanned.sha256, scanned.bytes, scanned.counts, None)
                } else {
                    let pass = self.engine.jsonl(
                        &file.path,
                        codec,
                        &self.rule,
                        Sink::Now(self.sink(file)?),
                    )?;
                    if pass.sha256 != scanned.sha256 {
                        return Err("changed while the job read it; not rewritten".into());
                    }
                    (pass.sha256, pass.bytes, pass.counts, pass.sink)
                }
            }
            Format::Parquet => {
                let input = self.parquet_input(file)?;
                let decided = self.engine.parquet_decide(&file.path, &input, &self.rule)?;
                let sink = match decided.counts.dropped_for(Reason::Erased) {
                    0 => None,
                    _ if self.dry_run => None,
                    _ => Some(
                        self.engine
                            .parquet_write(&input, &decided, self.sink(file)?)?,
                    ),
                };
                (decided.sha256, decided.bytes, decided.counts, sink)
            }
        };
        let removed = counts.dropped_for(Reason::Erased);
        let (sha_after, output) = match sink {
            Some(sink) if removed > 0 => {
                if Identity::of(&file.path)? != identity {
                    return Err(
                        "changed while the job read it (another writer?); not rewritten".into(),
                    );
                }
                let pending = Pending {
                    path: &file.path,
                    sha256_before: &sha_before,
                    bytes_before: bytes,
                    sha256_after: sink.digest(),
                    counts: &counts,
                };
                if let Some(ledger) = self.ledger {
                    ledger.pending(&pending)?;
                }
                let (w, replaced) = sink.replace().map_err(|e| format!("cannot replace: {e}"))?;
                if let Some(old) = replaced {
                    self.replaced.drop_later(old);
                }
                if let Some(ledger) = self.ledger {
                    ledger.done(&pending)?;
                }
                let output = OutputRef {
                    path: shown.clone(),
                    sha256: w.sha256.clone(),
                    bytes: w.bytes,
                };
                (w.sha256, Some(output))
            }
            // Nothing matched: the speculative rewrite is dropped and the file left untouched.
            _ => (sha_before.clone(), None),
        };
        Ok(Outcome::of(
            shown,
            format.name(),
            bytes,
            sha_before,
            sha_after,
            output,
            counts,
        ))
    }
}

fn single_link(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.nlink() == 1)
}

/// What tells a file apart from a changed or replaced one between reading and renaming.
/// The ctime catches a rewrite that keeps the size and puts the mtime back (which anyone
/// may set; the ctime only the kernel), unless it lands within the same clock tick.
#[derive(Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(path: &Path) -> Result<Identity, String> {
        let m = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read: {e}"))?;
        Ok(Identity {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::dataset::scan::SubjectPath;

    /// A file rewritten in place while the sweep reads it, with its size and mtime put back
    /// (as a careless sync tool might): the unchanged prefix the sweep copies inside the
    /// kernel would then not be the bytes it judged and hashed.
    #[test]
    fn a_same_size_rewrite_that_restores_the_mtime_is_caught_before_the_rename() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let mut file = String::new();
        for i in 0..400 {
            let user = if i == 300 { "alice" } else { "bob00" };
            file.push_str(&format!("{{\"id\":{i:04},\"user_id\":\"{user}\"}}\n"));
        }
        std::fs::write(&path, &file).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let ctime = |p: &Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.ctime(), m.ctime_nsec())
        };
        let created = ctime(&path);
        // Past the file system's timestamp tick, so that a change is visible in ctime.
        std::thread::sleep(Duration::from_millis(30));

        let rewritten = Arc::new(AtomicBool::new(false));
        let on_read: crate::dataset::jsonl::OnRead = {
            let (path, rewritten) = (path.clone(), rewritten.clone());
            Arc::new(move |_| {
                if !rewritten.swap(true, Ordering::SeqCst) {
                    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                    f.write_all_at(b"{\"id\":0000,\"user_id\":\"eve00\"}\n", 0)
                        .unwrap();
                    f.set_times(std::fs::FileTimes::new().set_modified(mtime))
                        .unwrap();
                }
            })
        };
        let subject = SubjectPath::parse("user_id").unwrap();
        let on_rows = |_: u64| {};
        let mut erased = Erased::default();
        erased.insert("alice").unwrap();
        let replaced = exec::Dropper::start(1);
        let show = |p: &Path| p.display().to_string();
        let sweep = Sweep {
            engine: Engine {
                subject: &subject,
                hash: true,
                chunk_size: 4096,
                chunks_per_batch: 2,
                on_read,
                on_rows: &on_rows,
            },
            rule: EraseRule { erased: &erased },
            dry_run: false,
            ledger: None,
            show: &show,
            replaced: &replaced,
        };
        let input = InputFile {
            path: path.clone(),
            rel: "a.jsonl".into(),
            format: Some(Format::Jsonl(Codec::None)),
            bytes: file.len() as u64,
        };
        let result = sweep.sweep(&input, Format::Jsonl(Codec::None));
        replaced.finish();
        assert!(rewritten.load(Ordering::SeqCst), "the rewrite happened");
        if ctime(&path) == created {
            eprintln!("skipped: this file system's clock did not move the ctime within 30 ms");
            return;
        }
        let err = result.map(|_| ()).expect_err("the changed file is refused");
        assert!(err.contains("changed while the job read it"), "{err}");
        let now = std::fs::read_to_string(&path).unwrap();
        assert!(now.starts_with("{\"id\":0000,\"user_id\":\"eve00\"}"));
        assert!(
            now.contains("alice"),
            "the file is left as the other writer made it"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left");
    }
}

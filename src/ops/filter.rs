//! The filter operation: copy one input file to the output tree, keeping only rows whose
//! subject holds valid consent.

use std::path::{Path, PathBuf};

use super::rows::{Decision, Engine, RowRule, Sink};
use super::{Outcome, OutputRef, Reason};
use crate::consent::Snapshot;
use crate::dataset::parquet::{Cell, ParquetInput};
use crate::dataset::scan::Line;
use crate::dataset::write::{mode_of, AtomicFile, FileId, Replace, Written};
use crate::dataset::{Format, InputFile};

/// Keeps a row only when its single subject holds valid consent.
pub struct ConsentRule<'a> {
    pub snapshot: &'a Snapshot,
}

impl ConsentRule<'_> {
    fn id(&self, id: &str) -> Decision {
        match self.snapshot.verdict(id) {
            v if v.is_valid() => Decision::Keep,
            v => Decision::Drop(Reason::Consent(v)),
        }
    }
}

impl RowRule for ConsentRule<'_> {
    fn line(&self, parsed: &Line<'_>, _raw: &[u8]) -> Decision {
        match parsed {
            Line::Subject(id) => self.id(id),
            other => Decision::Drop(Reason::of_line(other).unwrap_or(Reason::Malformed)),
        }
    }

    fn prefetch(&self, parsed: &Line<'_>) {
        if let Line::Subject(id) = parsed {
            self.snapshot.prefetch(id);
        }
    }

    fn cell(&self, cell: Cell<'_>) -> Decision {
        match cell {
            Cell::Id(id) => self.id(id),
            Cell::Missing => Decision::Drop(Reason::MissingSubject),
            Cell::Invalid => Decision::Drop(Reason::InvalidSubject),
        }
    }
}

/// Everything a filter needs besides the file itself.
pub struct Filter<'a> {
    pub engine: Engine<'a>,
    pub rule: ConsentRule<'a>,
    pub out_root: &'a Path,
    /// Writes nothing when set; the outcome still counts every row.
    pub dry_run: bool,
    /// Shows a path in reports: relative to the job's directory.
    pub show: &'a (dyn Fn(&Path) -> String + Sync),
    /// Told each output path, and the temp file that will become it, before anything is
    /// written (the job's journal).
    pub before_write: &'a (dyn Fn(&Path, FileId) -> Result<(), String> + Sync),
}

impl Filter<'_> {
    pub fn target(&self, file: &InputFile) -> PathBuf {
        self.out_root.join(&file.rel)
    }

    /// Filters one file. Never panics on its bytes and never leaves a partial output: on any
    /// error the temporary file is removed and the outcome says what failed.
    pub fn run(&self, file: &InputFile) -> Outcome {
        super::per_file(file, self.show, |format| self.filter(file, format))
    }

    fn sink(&self, file: &InputFile) -> Result<Option<AtomicFile>, String> {
        if self.dry_run {
            return Ok(None);
        }
        let target = self.target(file);
        let sink = AtomicFile::create(&target, mode_of(&file.path))
            .map_err(|e| format!("cannot create output {}: {e}", (self.show)(&target)))?;
        let id = sink
            .file_id()
            .map_err(|e| format!("cannot read output {}: {e}", (self.show)(&target)))?;
        (self.before_write)(&target, id)?;
        Ok(Some(sink))
    }

    fn commit(&self, sink: Option<AtomicFile>) -> Result<Option<OutputRef>, String> {
        let Some(sink) = sink else { return Ok(None) };
        let target = sink.target().to_path_buf();
        let w: Written = sink.commit(Replace::Never).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!(
                    "output {} appeared while the job ran; not overwritten",
                    (self.show)(&target)
                )
            }
            _ => format!("cannot write output {}: {e}", (self.show)(&target)),
        })?;
        Ok(Some(OutputRef {
            path: (self.show)(&w.path),
            sha256: w.sha256,
            bytes: w.bytes,
        }))
    }

    fn filter(&self, file: &InputFile, format: Format) -> Result<Outcome, String> {
        let (sha256, bytes, counts, sink) = match format {
            Format::Jsonl(codec) => {
                let pass = self.engine.jsonl(
                    &file.path,
                    codec,
                    &self.rule,
                    self.sink(file)?.map_or(Sink::None, Sink::Now),
                )?;
                (pass.sha256, pass.bytes, pass.counts, pass.sink)
            }
            Format::Parquet => {
                let input = ParquetInput::open(&file.path, self.engine.subject)?;
                let decided = self.engine.parquet_decide(&file.path, &input, &self.rule)?;
                let sink = match self.sink(file)? {
                    Some(s) => Some(self.engine.parquet_write(&input, &decided, s)?),
                    None => None,
                };
                (decided.sha256, decided.bytes, decided.counts, sink)
            }
        };
        let output = self.commit(sink)?;
        Ok(Outcome::of(
            (self.show)(&file.path),
            format.name(),
            bytes,
            sha256.clone(),
            sha256,
            output,
            counts,
        ))
    }
}

//! The filter operation: copy one input file to the output tree, keeping only rows whose
//! subject holds valid consent.
//!
//! A JSONL file is read in chunks of whole lines; each chunk is judged (and, for gzip or
//! zstd, recompressed) on its own worker, and the results are written in input order, so a
//! kept line is byte-identical to its input line and in the same place relative to the
//! others. Only the subject field of a line is parsed. Dropped lines are counted and go
//! nowhere.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{FileStatus, Outcome, OutputRef, Reason, RowCounts};
use crate::consent::Snapshot;
use crate::dataset::jsonl::{self, Chunk, LineReader, OnRead};
use crate::dataset::scan::{self, Line, SubjectPath};
use crate::dataset::write::{AtomicFile, Replace};
use crate::dataset::{Codec, Format, InputFile};
use crate::exec;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Everything a filter needs besides the file itself.
pub struct Filter<'a> {
    pub snapshot: &'a Snapshot,
    pub subject: &'a SubjectPath,
    pub out_root: &'a Path,
    /// Writes nothing when set; the outcome still counts every row.
    pub dry_run: bool,
    pub chunk_size: usize,
    pub chunks_per_batch: usize,
    pub on_read: OnRead,
    pub on_rows: &'a (dyn Fn(u64) + Sync),
    /// Shows a path in reports: relative to the job's directory when below it.
    pub show: &'a (dyn Fn(&Path) -> String + Sync),
}

impl Filter<'_> {
    pub fn target(&self, file: &InputFile) -> PathBuf {
        self.out_root.join(&file.rel)
    }

    /// Filters one file. Never panics on its bytes and never leaves a partial output: on any
    /// error the temporary file is removed and the outcome says what failed.
    pub fn run(&self, file: &InputFile) -> Outcome {
        let shown = (self.show)(&file.path);
        match file.format {
            Some(Format::Jsonl(codec)) => match self.jsonl(file, codec) {
                Ok(outcome) => outcome,
                Err(e) => Outcome::failed(shown, Format::Jsonl(codec).name(), file.bytes, e),
            },
            Some(Format::Parquet) => Outcome::failed(
                shown,
                "parquet",
                file.bytes,
                "parquet datasets are not supported by this version; the file was not copied"
                    .into(),
            ),
            None => Outcome::failed(
                shown,
                "unknown",
                file.bytes,
                "not a dataset format consentry reads (.jsonl, .jsonl.gz, .jsonl.zst, .parquet)"
                    .into(),
            ),
        }
    }

    fn jsonl(&self, file: &InputFile, codec: Codec) -> Result<Outcome, String> {
        let target = self.target(file);
        let read_err = |e: io::Error| format!("cannot read: {e}");
        let mut reader =
            LineReader::open(&file.path, codec, self.on_read.clone()).map_err(read_err)?;
        let mut out = match self.dry_run {
            true => None,
            false => Some(
                AtomicFile::create(&target)
                    .map_err(|e| format!("cannot create output {}: {e}", (self.show)(&target)))?,
            ),
        };
        let write_err = |e: io::Error| format!("cannot write output {}: {e}", (self.show)(&target));
        let mut counts = RowCounts::default();
        let mut wrote = false;
        loop {
            let mut batch: Vec<Chunk> = Vec::with_capacity(self.chunks_per_batch);
            while batch.len() < self.chunks_per_batch {
                match reader
                    .next_chunk(self.chunk_size)
                    .map_err(|e| read_err_at(e, counts.rows_in))?
                {
                    Some(chunk) => batch.push(chunk),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let encode = !self.dry_run;
            let judged = exec::par_map(&batch, |chunk| {
                let (kept, counts) = self.chunk(chunk);
                let bytes = if encode {
                    jsonl::encode(codec, &kept)?
                } else {
                    Vec::new()
                };
                Ok::<_, io::Error>((bytes, counts, !kept.is_empty()))
            });
            drop(batch);
            for result in judged {
                let (bytes, chunk_counts, any) = result.map_err(write_err)?;
                (self.on_rows)(chunk_counts.rows_in);
                counts += chunk_counts;
                if let (Some(out), true) = (&mut out, any) {
                    out.write_all(&bytes).map_err(write_err)?;
                    wrote = true;
                }
            }
        }
        if let (Some(out), false, true) = (&mut out, wrote, codec != Codec::None) {
            // A compressed file with no rows is still a valid, empty stream.
            out.write_all(&jsonl::encode(codec, b"").map_err(write_err)?)
                .map_err(write_err)?;
        }
        let (sha256, bytes) = reader.finish();
        let output = match out {
            None => None,
            Some(out) => {
                let w = out.commit(Replace::Never).map_err(|e| match e.kind() {
                    io::ErrorKind::AlreadyExists => {
                        format!(
                            "output {} appeared while the job ran; not overwritten",
                            (self.show)(&target)
                        )
                    }
                    _ => write_err(e),
                })?;
                Some(OutputRef {
                    path: (self.show)(&w.path),
                    sha256: w.sha256,
                    bytes: w.bytes,
                })
            }
        };
        Ok(Outcome {
            path: (self.show)(&file.path),
            format: Format::Jsonl(codec).name(),
            bytes,
            sha256_before: Some(sha256.clone()),
            sha256_after: Some(sha256),
            output,
            rows_in: counts.rows_in,
            rows_kept: counts.kept,
            rows_dropped: counts.by_reason(),
            status: FileStatus::Ok,
            error: None,
            counts,
        })
    }

    /// Judges every line of a chunk; returns the kept lines' bytes, unchanged and in order.
    fn chunk(&self, chunk: &Chunk) -> (Vec<u8>, RowCounts) {
        let mut kept = Vec::with_capacity(chunk.data.len());
        let mut counts = RowCounts::default();
        let mut first = chunk.is_first;
        for line in jsonl::lines(&chunk.data) {
            let mut body = jsonl::content(line);
            if std::mem::take(&mut first) {
                body = body.strip_prefix(BOM).unwrap_or(body);
            }
            let parsed = scan::classify(body, self.subject);
            let reason = match &parsed {
                Line::Subject(id) => match self.snapshot.verdict(id) {
                    v if v.is_valid() => None,
                    v => Some(Reason::Consent(v)),
                },
                other => Reason::of_line(other),
            };
            match reason {
                None => {
                    kept.extend_from_slice(line);
                    counts.keep();
                }
                Some(r) => counts.drop_row(r),
            }
        }
        (kept, counts)
    }
}

fn read_err_at(e: io::Error, rows_before: u64) -> String {
    format!("cannot read after line {rows_before}: {e}")
}

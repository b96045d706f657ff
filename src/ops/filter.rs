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
use crate::dataset::parquet::{Cell, ParquetInput, ParquetOutput};
use crate::dataset::scan::{self, Line, SubjectPath};
use crate::dataset::write::{mode_of, AtomicFile, Replace};
use crate::dataset::{sha256_file, Codec, Format, InputFile};
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
            Some(Format::Parquet) => match exec::guard(|| self.parquet(file)) {
                Ok(outcome) => outcome,
                Err(e) => Outcome::failed(shown, "parquet", file.bytes, e),
            },
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
                AtomicFile::create(&target, mode_of(&file.path))
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

    /// Decides every row group from its subject column alone, then writes the output: row
    /// groups that keep every row are spliced in encoded, those that keep none are left out,
    /// the rest are decoded, filtered and re-encoded, a few at a time.
    fn parquet(&self, file: &InputFile) -> Result<Outcome, String> {
        let input = ParquetInput::open(&file.path, self.subject)?;
        if !input.has_subject() {
            return Err(format!(
                "no column {} (the job's subject_field); the file was not copied",
                self.subject.segments().join(".")
            ));
        }
        let groups: Vec<usize> = (0..input.row_groups()).collect();
        let (hashed, decided) = exec::join(
            || sha256_file(&file.path),
            || exec::par_map(&groups, |&rg| self.decide_row_group(&input, rg)),
        );
        let (sha256, bytes) = hashed.map_err(|e| format!("cannot read: {e}"))?;
        (self.on_read)(bytes);
        let decided: Vec<(Vec<bool>, RowCounts)> = decided.into_iter().collect::<Result<_, _>>()?;
        let mut counts = RowCounts::default();
        for (_, c) in &decided {
            counts += *c;
        }
        let output = match self.dry_run {
            true => None,
            false => Some(self.write_parquet(file, &input, &decided)?),
        };
        Ok(Outcome {
            path: (self.show)(&file.path),
            format: Format::Parquet.name(),
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

    /// Which rows of a row group stay, judged from its subject column.
    fn decide_row_group(
        &self,
        input: &ParquetInput,
        rg: usize,
    ) -> Result<(Vec<bool>, RowCounts), String> {
        let mut keep = Vec::with_capacity(input.rows(rg) as usize);
        let mut counts = RowCounts::default();
        input.subjects(rg, |cell| {
            let reason = match cell {
                Cell::Id(id) => match self.snapshot.verdict(id) {
                    v if v.is_valid() => None,
                    v => Some(Reason::Consent(v)),
                },
                Cell::Missing => Some(Reason::MissingSubject),
                Cell::Invalid => Some(Reason::InvalidSubject),
            };
            keep.push(reason.is_none());
            match reason {
                None => counts.keep(),
                Some(r) => counts.drop_row(r),
            }
        })?;
        if keep.len() as u64 != input.rows(rg) {
            return Err(format!(
                "row group {rg}: {} rows where its metadata says {}",
                keep.len(),
                input.rows(rg)
            ));
        }
        (self.on_rows)(counts.rows_in);
        Ok((keep, counts))
    }

    fn write_parquet(
        &self,
        file: &InputFile,
        input: &ParquetInput,
        decided: &[(Vec<bool>, RowCounts)],
    ) -> Result<OutputRef, String> {
        let target = self.target(file);
        let sink = AtomicFile::create(&target, mode_of(&file.path))
            .map_err(|e| format!("cannot create output {}: {e}", (self.show)(&target)))?;
        let mut out = ParquetOutput::create(input, sink)?;
        let groups: Vec<usize> = (0..decided.len()).collect();
        for batch in groups.chunks(exec::workers().max(1)) {
            let encoded = exec::par_map(batch, |&rg| {
                let (keep, counts) = &decided[rg];
                match (counts.kept, counts.rows_in) {
                    (0, _) => Ok(RowGroupPlan::Drop),
                    (k, n) if k == n => Ok(RowGroupPlan::Copy),
                    _ => input.filtered(rg, keep, &out).map(RowGroupPlan::Encoded),
                }
            });
            for (&rg, plan) in batch.iter().zip(encoded) {
                match plan? {
                    RowGroupPlan::Drop => {}
                    RowGroupPlan::Copy => out.copy_row_group(input, rg)?,
                    RowGroupPlan::Encoded(chunks) => out.append(rg, chunks)?,
                }
            }
        }
        let sink = out.finish()?;
        let w = sink
            .commit(Replace::Never)
            .map_err(|e| format!("cannot write output {}: {e}", (self.show)(&target)))?;
        Ok(OutputRef {
            path: (self.show)(&w.path),
            sha256: w.sha256,
            bytes: w.bytes,
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

/// What becomes of one input row group in the output.
enum RowGroupPlan {
    /// Every row dropped: the row group is left out.
    Drop,
    /// Every row kept: spliced in without decoding.
    Copy,
    /// Some rows kept: these re-encoded column chunks.
    Encoded(Vec<parquet::arrow::arrow_writer::ArrowColumnChunk>),
}

fn read_err_at(e: io::Error, rows_before: u64) -> String {
    format!("cannot read after line {rows_before}: {e}")
}

//! The row engine filter and erase share: read a dataset file, decide every row with a
//! `RowRule`, and write the rows that stay.
//!
//! A JSONL file is read in chunks of whole lines; each chunk is judged (and, for gzip or
//! zstd, recompressed) on its own worker, and results are written in input order, so a kept
//! line is byte-identical to its input line and in the same place relative to the others.
//! Only the subject field of a line is parsed. A Parquet file is decided from its subject
//! column alone; row groups that keep every row are spliced in encoded, those that keep none
//! are left out, and only the rest are decoded and re-encoded. Dropped rows go nowhere.

use std::io::{self, Read, Write};
use std::ops::Range;
use std::path::Path;

use super::{Reason, RowCounts};
use crate::dataset::digest::Sha256;
use crate::dataset::jsonl::{self, Chunk, LineReader, OnRead};
use crate::dataset::parquet::{Cell, ParquetInput, ParquetOutput};
use crate::dataset::scan::{self, Line, SubjectPath};
use crate::dataset::write::AtomicFile;
use crate::dataset::{sha256_file, Codec};
use crate::exec;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Bytes of plain JSONL judged as one chunk. Small enough that a chunk is still in the
/// core's L2 cache when it is hashed and its kept lines written after being judged:
/// against 4 MiB chunks, 1 MiB ones cut a JSONL job's CPU time by 12-17% (SHA-256 runs
/// about 30% faster on data in L2 than on data streamed from memory).
pub const CHUNK_SIZE: usize = 1 << 20;

/// How many times larger a compressed JSONL file's chunks are than a plain file's. Each
/// chunk's kept lines become one gzip member or zstd frame of the output, and 4 MiB frames
/// come out 0.7% smaller than 1 MiB ones; decompression and recompression, not cache
/// misses, set the pace there.
const COMPRESSED_CHUNKS: usize = 4;

/// What becomes of one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Kept although it could not be judged (a malformed line an erasure cannot rule out).
    KeepUnchecked,
    /// Kept because the subject it names is not erased (erase jobs).
    KeepNamed,
    /// Kept because it names no subject (the field missing, null or no id).
    KeepUnnamed,
    Drop(Reason),
}

/// Decides rows. Implementations must be cheap: they run once per row.
pub trait RowRule: Sync {
    /// A JSONL line: what the scanner found at the subject path, and the line's bytes
    /// (without terminator or byte order mark).
    fn line(&self, parsed: &Line<'_>, raw: &[u8]) -> Decision;
    /// Told of a line a little before `line` is asked about it, so a rule whose lookup
    /// misses the cache can start loading what it will read.
    fn prefetch(&self, _parsed: &Line<'_>) {}
    /// A Parquet row's subject cell.
    fn cell(&self, cell: Cell<'_>) -> Decision;
}

/// How the engine reads, and whom it tells about progress.
pub struct Engine<'a> {
    pub subject: &'a SubjectPath,
    /// Compute each input's sha256 while reading (off only for verification re-reads).
    pub hash: bool,
    /// Bytes of plain JSONL judged as one chunk (a compressed file's chunks are
    /// `COMPRESSED_CHUNKS` times larger).
    pub chunk_size: usize,
    pub chunks_per_batch: usize,
    pub on_read: OnRead,
    pub on_rows: &'a (dyn Fn(u64) + Sync),
}

/// Where an engine pass writes the rows it keeps.
pub enum Sink<'s> {
    /// Nowhere: the pass only counts.
    None,
    /// Into this file from the first row.
    Now(AtomicFile),
    /// Uncompressed JSONL only: nowhere until the first dropped row. Then `make` creates the
    /// file, the unchanged prefix is copied from the input, and the rest is written; a file
    /// with no dropped row is never written at all (not even a temporary file).
    OnFirstDrop(&'s dyn Fn() -> Result<AtomicFile, String>),
}

/// One pass over a file: its digest and size as read, the row counts, and the output
/// written so far (not yet committed: the caller decides).
pub struct Pass {
    pub sha256: String,
    pub bytes: u64,
    pub counts: RowCounts,
    pub sink: Option<AtomicFile>,
}

impl RowCounts {
    fn record(&mut self, d: Decision) -> bool {
        match d {
            Decision::Keep => self.keep(),
            Decision::KeepUnchecked => {
                self.keep();
                self.unchecked += 1;
            }
            Decision::KeepNamed => {
                self.keep();
                self.named += 1;
            }
            Decision::KeepUnnamed => {
                self.keep();
                self.unnamed += 1;
            }
            Decision::Drop(r) => self.drop_row(r),
        }
        !matches!(d, Decision::Drop(_))
    }
}

impl<'a> Engine<'a> {
    /// The same engine without hashing, for re-reads whose digest is already known.
    pub fn unhashed(&self) -> Engine<'a> {
        Engine {
            subject: self.subject,
            hash: false,
            chunk_size: self.chunk_size,
            chunks_per_batch: self.chunks_per_batch,
            on_read: self.on_read.clone(),
            on_rows: self.on_rows,
        }
    }

    /// Reads a JSONL file and judges every line, writing the kept lines to `sink` in the
    /// file's codec.
    pub fn jsonl(
        &self,
        path: &Path,
        codec: Codec,
        rule: &dyn RowRule,
        sink: Sink<'_>,
    ) -> Result<Pass, String> {
        // An uncompressed file's chunks are its raw bytes: they are hashed here, beside the
        // kept bytes written from them, rather than by the reader (see `digest`).
        let mut chunk_hash = (self.hash && codec == Codec::None).then(Sha256::new);
        let reader_hashes = self.hash && chunk_hash.is_none();
        let mut reader = LineReader::open(path, codec, self.on_read.clone(), reader_hashes)
            .map_err(|e| format!("cannot read: {e}"))?;
        let chunk_size = match codec {
            Codec::None => self.chunk_size,
            _ => self.chunk_size.saturating_mul(COMPRESSED_CHUNKS),
        };
        let write_err = |e: io::Error| format!("cannot write: {e}");
        let mut counts = RowCounts::default();
        let mut wrote = false;
        let collect = !matches!(sink, Sink::None);
        let (mut out, lazy) = match sink {
            Sink::None => (None, None),
            Sink::Now(f) => (Some(f), None),
            // The prefix it copies is counted in decompressed bytes: plain files only.
            Sink::OnFirstDrop(make) if codec == Codec::None => (None, Some(make)),
            Sink::OnFirstDrop(_) => return Err("a lazy sink needs plain JSONL".into()),
        };
        // Bytes of the chunks judged so far (for a lazy sink: the prefix to copy unchanged).
        let mut consumed = 0u64;
        loop {
            let mut batch: Vec<Chunk> = Vec::with_capacity(self.chunks_per_batch);
            while batch.len() < self.chunks_per_batch {
                let next = reader
                    .next_chunk(chunk_size)
                    .map_err(|e| format!("cannot read (after line {}): {e}", counts.rows_in))?;
                match next {
                    Some(chunk) => batch.push(chunk),
                    None => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            let judged = exec::par_map(&batch, |chunk| {
                let (kept, counts) = judge_chunk(chunk, self.subject, rule, collect);
                let judged = match codec {
                    Codec::None => Judged::Ranges(kept),
                    _ if kept.is_empty() => Judged::Encoded(Vec::new()),
                    _ => Judged::Encoded(jsonl::encode(codec, gather(chunk.data(), &kept))?),
                };
                Ok::<_, io::Error>((judged, counts, chunk.data().len() as u64))
            });
            for (chunk, result) in batch.into_iter().zip(judged) {
                let (judged, chunk_counts, len) = result.map_err(write_err)?;
                (self.on_rows)(chunk_counts.rows_in);
                counts += chunk_counts;
                if let (None, Some(make), true) = (&out, lazy, chunk_counts.dropped() > 0) {
                    // The unchanged prefix is copied from the file as it stands; its
                    // digest so far is the input's, which has hashed exactly that prefix.
                    let mut f = make()?;
                    let src = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
                    match &chunk_hash {
                        Some(prefix) => f.splice(src, consumed, prefix.clone()),
                        None => io::copy(&mut src.take(consumed), &mut f).map(drop),
                    }
                    .map_err(write_err)?;
                    wrote = consumed > 0;
                    out = Some(f);
                }
                consumed += len;
                let dest = out.as_mut().filter(|_| !judged.is_empty());
                wrote |= dest.is_some();
                match (dest, judged) {
                    (Some(out), Judged::Ranges(kept)) => {
                        out.write_ranges(chunk.data(), &kept, chunk_hash.as_mut())
                    }
                    (dest, judged) => {
                        if let Some(input) = &mut chunk_hash {
                            input.update(chunk.data());
                        }
                        match (dest, judged) {
                            (Some(out), Judged::Encoded(bytes)) => out.write_all(&bytes),
                            _ => Ok(()),
                        }
                    }
                }
                .map_err(write_err)?;
                reader.recycle(chunk);
            }
        }
        if let (Some(out), false, true) = (&mut out, wrote, codec != Codec::None) {
            // A compressed file with no rows is still a valid, empty stream.
            out.write_all(&jsonl::encode(codec, Vec::new()).map_err(write_err)?)
                .map_err(write_err)?;
        }
        let sink = out;
        let (read_sha256, bytes) = reader.finish();
        let sha256 = chunk_hash.map_or(read_sha256, |h| h.hex());
        Ok(Pass {
            sha256,
            bytes,
            counts,
            sink,
        })
    }

    /// Decides every row group of a Parquet file from its subject column, hashing the file
    /// at the same time. Returns the digest, size, and per row group the rows kept.
    pub fn parquet_decide(
        &self,
        path: &Path,
        input: &ParquetInput,
        rule: &dyn RowRule,
    ) -> Result<Decided, String> {
        let groups: Vec<usize> = (0..input.row_groups()).collect();
        let (hashed, decided) = exec::join(
            || match self.hash {
                true => sha256_file(path),
                false => std::fs::metadata(path).map(|m| (String::new(), m.len())),
            },
            || exec::par_map(&groups, |&rg| self.decide_row_group(input, rg, rule)),
        );
        let (sha256, bytes) = hashed.map_err(|e| format!("cannot read: {e}"))?;
        (self.on_read)(bytes);
        let groups: Vec<(Vec<bool>, RowCounts)> = decided.into_iter().collect::<Result<_, _>>()?;
        let mut counts = RowCounts::default();
        for (_, c) in &groups {
            counts += *c;
        }
        Ok(Decided {
            sha256,
            bytes,
            counts,
            groups,
        })
    }

    fn decide_row_group(
        &self,
        input: &ParquetInput,
        rg: usize,
        rule: &dyn RowRule,
    ) -> Result<(Vec<bool>, RowCounts), String> {
        // The footer's row count is untrusted: a hostile one must not size an allocation.
        let mut keep = Vec::with_capacity(input.rows(rg).min(1 << 20) as usize);
        let mut counts = RowCounts::default();
        input.subjects(rg, |cell| keep.push(counts.record(rule.cell(cell))))?;
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

    /// Writes the rows `decided` keeps to `sink`, a few row groups at a time.
    pub fn parquet_write(
        &self,
        input: &ParquetInput,
        decided: &Decided,
        sink: AtomicFile,
    ) -> Result<AtomicFile, String> {
        let mut out = ParquetOutput::create(input, sink)?;
        let groups: Vec<usize> = (0..decided.groups.len()).collect();
        for batch in groups.chunks(exec::workers().max(1)) {
            let encoded = exec::par_map(batch, |&rg| {
                let (keep, counts) = &decided.groups[rg];
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
        out.finish()
    }
}

/// A Parquet file's rows, decided.
pub struct Decided {
    pub sha256: String,
    pub bytes: u64,
    pub counts: RowCounts,
    /// Per row group: which rows stay, and the counts.
    pub groups: Vec<(Vec<bool>, RowCounts)>,
}

/// What becomes of one input row group in the output.
enum RowGroupPlan {
    /// Every row dropped: the row group is left out.
    Drop,
    /// Every row kept: spliced in without decoding.
    Copy,
    /// Some rows kept: these re-encoded column chunks.
    Encoded(Vec<crate::dataset::parquet::Encoded>),
}

/// What a judged chunk adds to the output.
enum Judged {
    /// Plain JSONL: the kept lines as byte ranges of the chunk, written straight from it.
    Ranges(Vec<Range<usize>>),
    /// Compressed JSONL: the kept lines as one complete member or frame.
    Encoded(Vec<u8>),
}

impl Judged {
    fn is_empty(&self) -> bool {
        match self {
            Judged::Ranges(kept) => kept.is_empty(),
            Judged::Encoded(bytes) => bytes.is_empty(),
        }
    }
}

/// Judges every line of a chunk; returns (when `collect`) the kept lines as byte ranges of
/// the chunk, in order, neighbouring lines merged into one range.
fn judge_chunk(
    chunk: &Chunk,
    subject: &SubjectPath,
    rule: &dyn RowRule,
    collect: bool,
) -> (Vec<Range<usize>>, RowCounts) {
    let mut kept: Vec<Range<usize>> = Vec::new();
    let mut counts = RowCounts::default();
    let mut judge = |parsed: Line<'_>, body: &[u8], line: Range<usize>| {
        if counts.record(rule.line(&parsed, body)) && collect {
            match kept.last_mut() {
                Some(last) if last.end == line.start => last.end = line.end,
                _ => kept.push(line),
            }
        }
    };
    // Each line is judged after the next one is classified: the rule's lookup for a line
    // (a likely cache miss in a large consent table) loads while the scanner reads the next.
    let mut waiting = None;
    let mut first = chunk.is_first;
    let mut end = 0;
    for line in jsonl::lines(chunk.data()) {
        let start = end;
        end += line.len();
        let mut body = jsonl::content(line);
        if std::mem::take(&mut first) {
            body = body.strip_prefix(BOM).unwrap_or(body);
        }
        let parsed = scan::classify(body, subject);
        rule.prefetch(&parsed);
        if let Some((parsed, body, line)) = waiting.replace((parsed, body, start..end)) {
            judge(parsed, body, line);
        }
    }
    if let Some((parsed, body, line)) = waiting {
        judge(parsed, body, line);
    }
    (kept, counts)
}

/// The bytes of `ranges` of `data`, one after the other.
fn gather(data: &[u8], ranges: &[Range<usize>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ranges.iter().map(|r| r.len()).sum());
    for r in ranges {
        out.extend_from_slice(&data[r.clone()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;
    use std::sync::Arc;

    struct DropMarked;
    impl RowRule for DropMarked {
        fn line(&self, _: &Line<'_>, raw: &[u8]) -> Decision {
            if raw.windows(4).any(|w| w == b"DROP") {
                Decision::Drop(Reason::Erased)
            } else {
                Decision::Keep
            }
        }
        fn cell(&self, _: Cell<'_>) -> Decision {
            Decision::Keep
        }
    }

    fn sha(b: &[u8]) -> String {
        hex::encode(sha2::Sha256::digest(b))
    }

    fn kept(file: &[u8]) -> Vec<u8> {
        jsonl::lines(file)
            .filter(|l| !l.windows(4).any(|w| w == b"DROP"))
            .flat_map(|l| l.iter().copied())
            .collect()
    }

    fn inputs() -> Vec<(&'static str, Vec<u8>)> {
        let mut v: Vec<(&'static str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("one line no newline", b"{\"user_id\":\"a\"}".to_vec()),
            ("one dropped no newline", b"{\"user_id\":\"DROP\"}".to_vec()),
            (
                "bom kept",
                b"\xEF\xBB\xBF{\"user_id\":\"a\"}\n{\"user_id\":\"b\"}\n".to_vec(),
            ),
            (
                "bom dropped",
                b"\xEF\xBB\xBF{\"user_id\":\"DROP\"}\n{\"user_id\":\"b\"}".to_vec(),
            ),
            ("blank lines", b"\n\n{\"user_id\":\"DROP\"}\n\n".to_vec()),
        ];
        for (name, every, n) in [
            ("none dropped", 0usize, 3000usize),
            ("every 7th dropped", 7, 3000),
            ("all dropped", 1, 2000),
            ("only the last dropped", 2999, 3000),
        ] {
            let mut f = Vec::new();
            for i in 0..n {
                let drop = every > 0 && i % every == every - 1;
                let pad = "x".repeat(i * 37 % 150);
                f.extend_from_slice(
                    format!(
                        "{{\"user_id\":\"{}\",\"p\":\"{pad}\"}}\n",
                        if drop {
                            "DROP".to_string()
                        } else {
                            format!("u{i}")
                        }
                    )
                    .as_bytes(),
                );
            }
            if name == "only the last dropped" {
                f.pop(); // and no final newline
            }
            v.push((name, f));
        }
        v
    }

    #[test]
    fn a_lazy_sink_without_input_hashing_still_writes_and_hashes_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let subject = SubjectPath::parse("user_id").unwrap();
        let on_rows = |_n: u64| {};
        let (_, file) = inputs()
            .into_iter()
            .find(|(name, _)| *name == "only the last dropped")
            .unwrap();
        let input = dir.path().join("in.jsonl");
        std::fs::write(&input, &file).unwrap();
        let out = dir.path().join("out.jsonl");
        let engine = Engine {
            subject: &subject,
            hash: false,
            chunk_size: 4096,
            chunks_per_batch: 2,
            on_read: Arc::new(|_| {}),
            on_rows: &on_rows,
        };
        let make = || AtomicFile::create(&out, 0o600).map_err(|e| e.to_string());
        let pass = engine
            .jsonl(&input, Codec::None, &DropMarked, Sink::OnFirstDrop(&make))
            .unwrap();
        let w = pass
            .sink
            .unwrap()
            .commit(crate::dataset::write::Replace::Never)
            .unwrap();
        let written = std::fs::read(&out).unwrap();
        assert_eq!(written, kept(&file));
        assert_eq!(w.sha256, sha(&written));
        let zst = dir.path().join("in.jsonl.zst");
        std::fs::write(&zst, zstd::encode_all(&file[..], 1).unwrap()).unwrap();
        let refused = engine.jsonl(&zst, Codec::Zstd, &DropMarked, Sink::OnFirstDrop(&make));
        assert!(
            refused.is_err(),
            "a compressed file's prefix is not its bytes"
        );
    }

    #[test]
    fn input_and_output_digests_are_those_of_the_bytes_in_every_sink() {
        let dir = tempfile::tempdir().unwrap();
        let subject = SubjectPath::parse("user_id").unwrap();
        let on_rows = |_n: u64| {};
        let mut case = 0;
        for (name, file) in inputs() {
            for chunk_size in [1usize, 7, 64, 100, 4096, 1 << 20] {
                if chunk_size < 64 && file.len() > 1000 {
                    continue; // tiny chunks only for the short inputs, to keep the test quick
                }
                for chunks_per_batch in [1usize, 3] {
                    for sink_kind in 0..3 {
                        case += 1;
                        let input = dir.path().join(format!("in{case}.jsonl"));
                        std::fs::write(&input, &file).unwrap();
                        let out = dir.path().join(format!("out{case}.jsonl"));
                        let engine = Engine {
                            subject: &subject,
                            hash: true,
                            chunk_size,
                            chunks_per_batch,
                            on_read: Arc::new(|_| {}),
                            on_rows: &on_rows,
                        };
                        let make = || AtomicFile::create(&out, 0o600).map_err(|e| e.to_string());
                        let sink = match sink_kind {
                            0 => Sink::None,
                            1 => Sink::Now(make().unwrap()),
                            _ => Sink::OnFirstDrop(&make),
                        };
                        let what = format!(
                            "{name} chunk {chunk_size} batch {chunks_per_batch} sink {sink_kind}"
                        );
                        let pass = engine
                            .jsonl(&input, Codec::None, &DropMarked, sink)
                            .unwrap();
                        assert_eq!(pass.sha256, sha(&file), "input digest: {what}");
                        assert_eq!(pass.bytes, file.len() as u64, "input size: {what}");
                        let dropped = pass.counts.dropped() > 0;
                        match (sink_kind, pass.sink) {
                            (0, None) => {}
                            (1, Some(f)) => {
                                let digest = f.digest();
                                let w = f.commit(crate::dataset::write::Replace::Never).unwrap();
                                let written = std::fs::read(&out).unwrap();
                                assert_eq!(written, kept(&file), "output bytes: {what}");
                                assert_eq!(w.sha256, sha(&written), "output digest: {what}");
                                assert_eq!(digest, w.sha256, "{what}");
                                assert_eq!(w.bytes, written.len() as u64, "{what}");
                            }
                            (2, None) => assert!(!dropped, "lazy sink never made: {what}"),
                            (2, Some(f)) => {
                                assert!(dropped, "{what}");
                                let w = f.commit(crate::dataset::write::Replace::Never).unwrap();
                                let written = std::fs::read(&out).unwrap();
                                assert_eq!(written, kept(&file), "output bytes: {what}");
                                assert_eq!(w.sha256, sha(&written), "output digest: {what}");
                            }
                            (k, s) => panic!("sink {k} gave {:?}: {what}", s.is_some()),
                        }
                        // A verification-style re-read (hash off) still counts the same rows.
                        let again = engine
                            .unhashed()
                            .jsonl(&input, Codec::None, &DropMarked, Sink::None)
                            .unwrap();
                        assert_eq!(again.counts.dropped(), pass.counts.dropped(), "{what}");
                    }
                }
            }
        }
    }
}

//! Operations on one dataset file, and the per-file outcome they report.
//!
//! Each operation takes one file at a time (`exec` runs files in parallel, and `rows` the
//! chunks or row groups inside a file) and returns its outcome; the job merges the outcomes.
//! Every row an operation does not keep is counted under a reason.

pub mod embeddings;
pub mod erase;
pub mod filter;
pub mod rows;

use std::collections::BTreeMap;
use std::ops::AddAssign;

use serde::Serialize;

use crate::consent::Verdict;
use crate::dataset::scan::Line;

/// Why a row was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Blank,
    Malformed,
    MissingSubject,
    InvalidSubject,
    AmbiguousSubject,
    Consent(Verdict),
    /// The row names a subject whose data an erase job removes.
    Erased,
}

const REASONS: usize = 14;

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Blank => "blank",
            Reason::Malformed => "malformed",
            Reason::MissingSubject => "missing_subject",
            Reason::InvalidSubject => "invalid_subject",
            Reason::AmbiguousSubject => "ambiguous_subject",
            Reason::Consent(v) => v.as_str(),
            Reason::Erased => "erased",
        }
    }

    fn index(self) -> usize {
        match self {
            Reason::Blank => 0,
            Reason::Malformed => 1,
            Reason::MissingSubject => 2,
            Reason::InvalidSubject => 3,
            Reason::AmbiguousSubject => 4,
            Reason::Consent(v) => 5 + v as usize,
            Reason::Erased => 13,
        }
    }

    fn all() -> impl Iterator<Item = Reason> {
        [
            Reason::Blank,
            Reason::Malformed,
            Reason::MissingSubject,
            Reason::InvalidSubject,
            Reason::AmbiguousSubject,
        ]
        .into_iter()
        .chain(
            [
                Verdict::Valid,
                Verdict::LegalBasis,
                Verdict::CategoryMissing,
                Verdict::NoticeOutdated,
                Verdict::Expired,
                Verdict::Pending,
                Verdict::Revoked,
                Verdict::NoConsent,
            ]
            .map(Reason::Consent),
        )
        .chain([Reason::Erased])
    }

    /// The reason a line that names no single subject is not kept, if it is not one.
    pub fn of_line(line: &Line<'_>) -> Option<Reason> {
        match line {
            Line::Subject(_) => None,
            Line::Blank => Some(Reason::Blank),
            Line::Malformed => Some(Reason::Malformed),
            Line::Missing => Some(Reason::MissingSubject),
            Line::Invalid => Some(Reason::InvalidSubject),
            Line::Ambiguous(_) => Some(Reason::AmbiguousSubject),
        }
    }
}

/// Row counts of one chunk, file or job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub rows_in: u64,
    pub kept: u64,
    /// Kept rows that could not be judged (malformed lines an erasure cannot rule out).
    pub unchecked: u64,
    /// Kept rows that name no subject (erase jobs: the field missing, null or no id).
    pub unnamed: u64,
    /// Kept rows that name a subject not erased (erase jobs).
    pub named: u64,
    dropped: [u64; REASONS],
}

impl RowCounts {
    pub fn keep(&mut self) {
        self.rows_in += 1;
        self.kept += 1;
    }

    pub fn drop_row(&mut self, reason: Reason) {
        self.rows_in += 1;
        self.dropped[reason.index()] += 1;
    }

    /// Counts `n` rows as dropped for `reason` without counting them in again.
    pub fn add_dropped(&mut self, reason: Reason, n: u64) {
        self.dropped[reason.index()] += n;
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.iter().sum()
    }

    pub fn dropped_for(&self, reason: Reason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Non-zero drop counts by reason name, in a stable order.
    pub fn by_reason(&self) -> BTreeMap<&'static str, u64> {
        Reason::all()
            .filter(|r| self.dropped[r.index()] > 0)
            .map(|r| (r.as_str(), self.dropped[r.index()]))
            .collect()
    }
}

impl AddAssign for RowCounts {
    fn add_assign(&mut self, o: RowCounts) {
        self.rows_in += o.rows_in;
        self.kept += o.kept;
        self.unchecked += o.unchecked;
        self.unnamed += o.unnamed;
        self.named += o.named;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Ok,
    Failed,
}

/// A file the job wrote.
#[derive(Debug, Clone, Serialize)]
pub struct OutputRef {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// What happened to one input file.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub path: String,
    pub format: &'static str,
    pub bytes: u64,
    pub sha256_before: Option<String>,
    pub sha256_after: Option<String>,
    pub output: Option<OutputRef>,
    pub rows_in: u64,
    pub rows_kept: u64,
    pub rows_dropped: BTreeMap<&'static str, u64>,
    pub status: FileStatus,
    pub error: Option<String>,
    #[serde(skip)]
    pub counts: RowCounts,
}

/// Runs `op` on a dataset file, turning an unknown format, an error or a reader panic into a
/// failed outcome: one file failing never stops the others.
pub fn per_file(
    file: &crate::dataset::InputFile,
    show: &(dyn Fn(&std::path::Path) -> String + Sync),
    op: impl FnOnce(crate::dataset::Format) -> Result<Outcome, String>,
) -> Outcome {
    let format = file.format.map_or("unknown", crate::dataset::Format::name);
    let result = match file.format {
        Some(f) => crate::exec::guard(|| op(f)),
        None => Err(
            "not a dataset format consentry reads (.jsonl, .jsonl.gz, .jsonl.zst, .parquet)".into(),
        ),
    };
    result.unwrap_or_else(|e| Outcome::failed(show(&file.path), format, file.bytes, e))
}

impl Outcome {
    /// A file processed in full.
    pub fn of(
        path: String,
        format: &'static str,
        bytes: u64,
        sha256_before: String,
        sha256_after: String,
        output: Option<OutputRef>,
        counts: RowCounts,
    ) -> Outcome {
        Outcome {
            path,
            format,
            bytes,
            sha256_before: Some(sha256_before),
            sha256_after: Some(sha256_after),
            output,
            rows_in: counts.rows_in,
            rows_kept: counts.kept,
            rows_dropped: counts.by_reason(),
            status: FileStatus::Ok,
            error: None,
            counts,
        }
    }

    pub fn failed(path: String, format: &'static str, bytes: u64, error: String) -> Outcome {
        Outcome {
            path,
            format,
            bytes,
            sha256_before: None,
            sha256_after: None,
            output: None,
            rows_in: 0,
            rows_kept: 0,
            rows_dropped: BTreeMap::new(),
            status: FileStatus::Failed,
            error: Some(error),
            counts: RowCounts::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_is_reported() {
        let all: Vec<Reason> = Reason::all().collect();
        assert_eq!(all.len(), REASONS);
        let mut counts = RowCounts::default();
        for r in &all {
            counts.drop_row(*r);
        }
        assert_eq!(
            counts.by_reason().len(),
            REASONS,
            "no two reasons share a name or a counter"
        );
        assert_eq!(counts.dropped(), REASONS as u64);
    }
}

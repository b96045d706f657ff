//! An erase job: gather the subjects, sweep them out of every dataset and embedding cache
//! in place, re-read everything that changed, and sign one report.
//!
//! Crash safety comes from three things together: every rewrite is a temp file renamed over
//! its target; a file with no erased row is never written, so a re-run skips the files an
//! interrupted run finished; and the journal carries what an interrupted run did into the
//! report of the run that completes it.

use std::collections::BTreeSet;
use std::path::Path;

use super::journal::{CachePlan, Identity, Journal, Rewrite};
use super::{shower, JobCtx, Keys};
use crate::cli::RunArgs;
use crate::consent::{self, Snapshot, Verdict};
use crate::dataset::scan::SubjectPath;
use crate::dataset::{self, Discovery, InputFile};
use crate::error::{Error, Result};
use crate::exec::{self, Progress, ProgressMode};

/// Replaced originals that may wait for their handle to be closed (see `AtomicFile::replace`):
/// each keeps its disk space until then, so a sweep on a nearly full disk needs at most this
/// many originals' worth of room beyond the rewrites in progress.
const REPLACED_IN_FLIGHT: usize = 2;
use crate::job::{EmbeddingSpec, EraseSpec, InputSpec, Job, Layout, DEFAULT_INCLUDE};
use crate::ops::embeddings::{self, names_an_entry};
use crate::ops::erase::{EraseRule, Erased, Ledger, Pending, Sweep};
use crate::ops::rows::{Engine, CHUNK_SIZE};
use crate::ops::{FileStatus, Outcome, Reason, RowCounts};
use crate::report::{CacheInfo, EraseInfo, RejectedId, Verification};
use crate::time::Timestamp;
use crate::Exit;

/// The subjects of an erase job and where they came from.
struct Subjects {
    erased: Erased,
    from_file: u64,
    from_revocations: u64,
    rejected: Vec<RejectedId>,
}

/// Reads `subjects_file`: one id per line; blank lines are skipped and surrounding
/// whitespace (Unicode's, and byte order marks, which concatenated files carry mid-file)
/// trimmed. A line that cannot hold an id is reported by number, never echoed. Returns the
/// number of distinct ids.
fn read_subjects_file(
    path: &Path,
    erased: &mut Erased,
    rejected: &mut Vec<RejectedId>,
) -> Result<u64> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("cannot read subjects file", path, e))?;
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut added = 0;
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = i as u64 + 1;
        let Ok(text) = std::str::from_utf8(raw) else {
            rejected.push(RejectedId {
                line,
                reason: "not UTF-8",
            });
            continue;
        };
        let id = text.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
        if id.is_empty() {
            continue;
        }
        if id.chars().any(char::is_control) {
            rejected.push(RejectedId {
                line,
                reason: "holds a control character",
            });
            continue;
        }
        let new = erased.insert(id).map_err(|e| Error::Input {
            path: path.to_path_buf(),
            message: e.into(),
        })?;
        added += u64::from(new);
    }
    Ok(added)
}

fn gather(job: &Job, spec: &EraseSpec, as_of: Timestamp) -> Result<(Subjects, Option<Snapshot>)> {
    let mut s = Subjects {
        erased: Erased::default(),
        from_file: 0,
        from_revocations: 0,
        rejected: Vec::new(),
    };
    if let Some(path) = &spec.subjects_file {
        s.from_file = read_subjects_file(path, &mut s.erased, &mut s.rejected)?;
    }
    let snapshot = match (spec.subjects_from_revocations, &job.consent) {
        (true, Some(c)) => Some(consent::load_as(
            &c.snapshot,
            &c.schema,
            &c.purpose,
            as_of,
            &c.rules,
            consent::Reading::Revocations,
        )?),
        _ => None,
    };
    if let Some(snap) = &snapshot {
        for id in snap.subjects_with(Verdict::Revoked) {
            s.erased
                .insert(id)
                .map_err(|e| Error::snapshot(&snap.file.path, e))?;
            s.from_revocations += 1;
        }
    }
    Ok((s, snapshot))
}

/// The journal as the sweep's ledger.
struct JournalLedger<'a>(&'a Journal);

impl Ledger for JournalLedger<'_> {
    fn pending(&self, r: &Pending<'_>) -> Result<(), String> {
        self.record(r, false)
    }
    fn done(&self, r: &Pending<'_>) -> Result<(), String> {
        self.record(r, true)
    }
}

impl JournalLedger<'_> {
    fn record(&self, r: &Pending<'_>, done: bool) -> Result<(), String> {
        let rewrite = Rewrite {
            sha256_before: r.sha256_before.to_string(),
            bytes_before: r.bytes_before,
            sha256_after: r.sha256_after.clone(),
            rows_in: r.counts.rows_in,
            rows_removed: r.counts.dropped_for(Reason::Erased),
            done,
        };
        self.0
            .record(r.path, rewrite)
            .map_err(|e| format!("cannot update the journal: {e}"))
    }
}

/// The files of one sweep target: the datasets, or one `table` cache.
struct Target {
    subject: SubjectPath,
    found: Discovery,
}

fn table_target(job: &Job, cache: &EmbeddingSpec) -> Result<Target> {
    let field = cache.subject_field.clone().unwrap_or_default();
    let subject = SubjectPath::parse(&field).map_err(|e| Error::spec(&job.spec_path, e))?;
    let spec = InputSpec {
        paths: vec![cache.path.clone()],
        include: DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
        exclude: Vec::new(),
        subject_field: field,
    };
    Ok(Target {
        subject,
        found: dataset::discover(&spec)?,
    })
}

/// Removes temp files a killed run left beside the files this run may rewrite.
fn sweep_leftovers(files: &[&InputFile]) -> Result<()> {
    let dirs: BTreeSet<&Path> = files.iter().filter_map(|f| f.path.parent()).collect();
    for dir in dirs {
        dataset::write::sweep_temp_files(dir).map_err(|e| Error::io("cannot clean up", dir, e))?;
    }
    Ok(())
}

/// Folds into `o` the rewrite an interrupted run of this job made of `f`, when the file
/// still holds what that rewrite wrote: its rows count in this report.
fn absorb_earlier(o: &mut Outcome, f: &InputFile, journal: &Journal) {
    if o.status != FileStatus::Ok || o.output.is_some() {
        return;
    }
    let Some(earlier) = o
        .sha256_before
        .as_deref()
        .and_then(|sha| journal.earlier(&f.path, sha))
    else {
        return;
    };
    let mut counts = RowCounts::default();
    counts.rows_in = earlier.rows_in;
    counts.unchecked = o.counts.unchecked;
    counts.unnamed = o.counts.unnamed;
    counts.named = o.counts.named;
    counts.kept = earlier.rows_in.saturating_sub(earlier.rows_removed);
    counts.add_dropped(Reason::Erased, earlier.rows_removed);
    o.sha256_before = Some(earlier.sha256_before.clone());
    o.rows_in = counts.rows_in;
    o.rows_kept = counts.kept;
    o.rows_dropped = counts.by_reason();
    o.output = Some(crate::ops::OutputRef {
        path: o.path.clone(),
        sha256: earlier.sha256_after.clone(),
        bytes: o.bytes,
    });
    o.bytes = earlier.bytes_before;
    o.counts = counts;
}

/// What the report says of one cache root.
#[derive(Debug, PartialEq, Eq)]
struct CacheCounts {
    removed: u64,
    found: u64,
    absent: u64,
}

impl CacheCounts {
    /// `earlier` is what an interrupted run of this job found before it began removing (and
    /// `legacy` what an older journal counted as removed); `now` is what this run found and
    /// `removed_now` how many of those it removed. A planned entry gone by now was removed by
    /// this job, and its subject was found.
    fn of(
        earlier: &CachePlan,
        legacy: u64,
        now: &CachePlan,
        removed_now: u64,
        erased: u64,
    ) -> CacheCounts {
        let removed_before = earlier.entries.difference(&now.entries).count() as u64;
        let found = earlier.subjects.union(&now.subjects).count() as u64;
        CacheCounts {
            removed: removed_now + removed_before + legacy,
            found,
            absent: erased.saturating_sub(found),
        }
    }
}

pub fn run(job: &Job, args: &RunArgs, started: Timestamp, as_of: Timestamp) -> Result<Exit> {
    let show = shower(&job.base_dir);
    let spec = job
        .erase
        .as_ref()
        .ok_or_else(|| Error::spec(&job.spec_path, "an erase job needs [erase]"))?;
    let keys = Keys::load(&job.report, !args.dry_run)?;
    let (subjects, snapshot) = gather(job, spec, as_of)?;
    // The snapshot (if any) is loaded: from here on, memory freed is kept for reuse.
    crate::memory::keep_freed_memory();
    let erased = &subjects.erased;

    let mut sorted: Vec<&str> = erased.iter().collect();
    sorted.sort_unstable();
    let identity = Identity {
        job: job.name.clone(),
        spec_sha256: job.spec_sha256.clone(),
        subjects: keys.pseudonymizer.pseudonym(&sorted.join("\n")),
        snapshot_sha256: snapshot.as_ref().map(|s| s.file.sha256.clone()),
    };
    let journal_path = Journal::path_for(&job.report.dir, &job.name);
    let journal = super::open_journal(
        job,
        &journal_path,
        identity,
        args.discard_journal,
        !args.dry_run,
    )?;
    let signed = journal
        .signing()
        .filter(|_| !args.dry_run)
        .and_then(|id| super::signed_report(&job.report.dir, &id));
    if let Some(report) = signed {
        return super::finish_signed(journal, "erase", job, &report);
    }

    let datasets = match spec.datasets {
        true => Target {
            subject: SubjectPath::parse(&job.input.subject_field)
                .map_err(|e| Error::spec(&job.spec_path, e))?,
            found: dataset::discover(&job.input)?,
        },
        false => Target {
            subject: SubjectPath::parse("_").map_err(Error::Usage)?,
            found: Discovery::default(),
        },
    };
    let mut targets = vec![datasets];
    for cache in spec.embeddings.iter().filter(|c| c.layout == Layout::Table) {
        targets.push(table_target(job, cache)?);
    }
    let path_caches: Vec<&EmbeddingSpec> = spec
        .embeddings
        .iter()
        .filter(|c| c.layout != Layout::Table)
        .collect();
    for cache in &path_caches {
        if !cache.path.is_dir() {
            return Err(Error::Input {
                path: cache.path.clone(),
                message: "embedding cache root is not a directory".into(),
            });
        }
    }
    if !args.dry_run {
        let all: Vec<&InputFile> = targets.iter().flat_map(|t| t.found.files.iter()).collect();
        sweep_leftovers(&all)?;
    }

    let mode = ProgressMode::detect(args.no_progress);
    let total_files = targets.iter().map(|t| t.found.files.len() as u64).sum();
    let total_bytes = targets
        .iter()
        .flat_map(|t| &t.found.files)
        .map(|f| f.bytes)
        .sum();
    let ledger = JournalLedger(&journal);
    // Replaced originals waiting to be closed: each holds its disk space until then.
    let replaced = exec::Dropper::start(REPLACED_IN_FLIGHT);
    let (outcomes, verification_rows) = exec::with_pool(args.threads, || {
        let progress = Progress::start(mode, "swept", total_files, total_bytes);
        let on_rows = |n| progress.add_rows(n);
        let mut outcomes = Vec::new();
        let mut residual: Result<(u64, u64), String> = Ok((0, 0));
        for target in &targets {
            let sweep = Sweep {
                engine: Engine {
                    subject: &target.subject,
                    hash: true,
                    chunk_size: CHUNK_SIZE,
                    chunks_per_batch: 2 * exec::workers().max(1),
                    on_read: progress.on_read(),
                    on_rows: &on_rows,
                },
                rule: EraseRule { erased },
                dry_run: args.dry_run,
                ledger: Some(&ledger),
                show: &show,
                replaced: &replaced,
            };
            // Verification: every file rewritten (by this run or an interrupted one) is read
            // again and must hold no erased row. A file this run rewrites is re-read as soon
            // as it is committed, so that the re-reading fills the time other workers spend
            // waiting for the disk to take their rewrites.
            let swept = exec::par_map(&target.found.files, |f| {
                let o = sweep.run(f);
                let check = o.output.is_some().then(|| sweep.residual(f));
                progress.file_done();
                (o, check)
            });
            let mut done = Vec::with_capacity(swept.len());
            let mut checks = Vec::new();
            let mut unchecked = Vec::new();
            for ((mut o, check), f) in swept.into_iter().zip(&target.found.files) {
                match check {
                    Some(check) => checks.push(check),
                    None => {
                        absorb_earlier(&mut o, f, &journal);
                        if o.output.is_some() {
                            unchecked.push(f);
                        }
                    }
                }
                done.push(o);
            }
            checks.extend(exec::par_map(&unchecked, |f| sweep.residual(f)));
            for r in checks {
                residual = match (residual, r) {
                    (Ok((files, rows)), Ok(n)) => Ok((files + 1, rows + n)),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
            }
            outcomes.extend(done);
        }
        progress.finish();
        (outcomes, residual)
    })?;
    replaced.finish();

    let mut caches = Vec::new();
    let mut verification = Verification::default();
    let unusable = erased.iter().filter(|id| !names_an_entry(id)).count() as u64;
    for cache in &path_caches {
        let layout = match cache.layout {
            Layout::DirPerSubject => "dir-per-subject",
            _ => "file-per-subject",
        };
        let earlier = journal.cache_plan(&cache.path);
        let mut now = CachePlan::default();
        let mut plan = |found: &[embeddings::Found]| {
            now = CachePlan {
                entries: found
                    .iter()
                    .map(|f| keys.pseudonymizer.pseudonym(&f.name))
                    .collect(),
                subjects: found
                    .iter()
                    .map(|f| keys.pseudonymizer.pseudonym(&f.subject))
                    .collect(),
            };
            match args.dry_run {
                true => Ok(()),
                false => journal
                    .plan_cache(&cache.path, now.clone())
                    .map_err(|e| format!("cannot update the journal: {e}")),
            }
        };
        let swept = embeddings::sweep(&cache.path, cache.layout, erased, args.dry_run, &mut plan);
        let info = match swept {
            Ok(s) => {
                let counts = CacheCounts::of(
                    &earlier,
                    journal.cache_removed_before_plans(&cache.path),
                    &now,
                    s.entries_removed,
                    erased.len() as u64,
                );
                CacheInfo {
                    path: show(&cache.path),
                    layout,
                    entries_removed: counts.removed,
                    subjects_found: counts.found,
                    subjects_absent: counts.absent,
                    error: (!s.failures.is_empty()).then(|| s.failures.join("; ")),
                }
            }
            Err(mut e) => {
                if !earlier.entries.is_empty() {
                    e.push_str(&format!(
                        "; an interrupted run of this job had found {} entries here, and how many it removed is unknown",
                        earlier.entries.len()
                    ));
                }
                CacheInfo {
                    path: show(&cache.path),
                    layout,
                    entries_removed: 0,
                    subjects_found: 0,
                    subjects_absent: 0,
                    error: Some(e),
                }
            }
        };
        caches.push(info);
        if !args.dry_run {
            match embeddings::residual(&cache.path, cache.layout, erased) {
                Ok(n) => verification.residual_entries += n,
                Err(e) => verification
                    .errors
                    .push(format!("{}: {e}", show(&cache.path))),
            }
            verification.caches_checked += 1;
        }
    }
    match verification_rows {
        Ok((files, rows)) => {
            verification.files_checked = files;
            verification.residual_rows = rows;
        }
        Err(e) => verification.errors.push(e),
    }

    let mut problems = Vec::new();
    let count =
        |pred: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| pred(o)).count() as u64;
    let unchecked: u64 = outcomes.iter().map(|o| o.counts.unchecked).sum();
    if unchecked > 0 {
        problems.push(format!(
            "{unchecked} rows were kept unchecked (malformed lines, or subject values that are no id): no erased id was found in them, but they could not be ruled out"
        ));
    }
    // A JSONL file in which no row names a subject was not checked at all: most likely the
    // job's subject_field (or a table cache's) is not where the file keeps its subjects. (A
    // Parquet file without the column fails; one whose column is all null is anonymous.)
    let unnamed: Vec<&str> = outcomes
        .iter()
        .filter(|o| {
            o.status == FileStatus::Ok
                && o.format != "parquet"
                && o.counts.unnamed > 0
                && o.counts.named == 0
                && o.counts.dropped_for(Reason::Erased) == 0
        })
        .map(|o| o.path.as_str())
        .collect();
    if !unnamed.is_empty() {
        problems.push(format!(
            "no row of {} names a subject where the job looks for it (subject_field): nothing in {} was checked",
            unnamed.join(", "),
            if unnamed.len() == 1 { "it" } else { "them" }
        ));
    }
    let symlinks: usize = targets.iter().map(|t| t.found.symlinks.len()).sum();
    if symlinks > 0 {
        problems.push(format!(
            "{symlinks} symlinks below the inputs were not followed, so what they point to was not swept (listed under skipped)"
        ));
    }
    if !subjects.rejected.is_empty() {
        problems.push(format!(
            "{} lines of the subjects file hold no usable id",
            subjects.rejected.len()
        ));
    }
    if unusable > 0 && !path_caches.is_empty() {
        problems.push(format!(
            "{unusable} erased ids cannot name a cache entry (empty, '.', '..', '/', NUL or control characters); \
             their cache entries were not looked up"
        ));
    }
    for c in caches.iter().filter(|c| c.error.is_some()) {
        problems.push(format!(
            "{}: {}",
            c.path,
            c.error.as_deref().unwrap_or_default()
        ));
    }
    if !args.dry_run {
        verification.passed = verification.residual_rows == 0
            && verification.residual_entries == 0
            && verification.errors.is_empty();
        if !verification.passed {
            problems.push(format!(
                "verification found {} rows and {} cache entries of erased subjects still present{}",
                verification.residual_rows,
                verification.residual_entries,
                if verification.errors.is_empty() { String::new() } else { format!("; {}", verification.errors.join("; ")) }
            ));
        }
    }

    let mut pseudonyms: Vec<String> = erased
        .iter()
        .map(|id| keys.pseudonymizer.pseudonym(id))
        .collect();
    pseudonyms.sort_unstable();
    let info = EraseInfo {
        subjects: pseudonyms,
        subjects_from_file: subjects.from_file,
        subjects_from_revocations: subjects.from_revocations,
        rejected_ids: subjects.rejected,
        ids_unusable_as_names: unusable,
        rows_removed: outcomes
            .iter()
            .map(|o| o.rows_dropped.get("erased").copied().unwrap_or(0))
            .sum(),
        files_rewritten: count(&|o| {
            o.output.is_some() || (args.dry_run && o.counts.dropped_for(Reason::Erased) > 0)
        }),
        files_untouched: count(&|o| {
            o.status == FileStatus::Ok
                && o.output.is_none()
                && !(args.dry_run && o.counts.dropped_for(Reason::Erased) > 0)
        }),
        files_failed: count(&|o| o.status == FileStatus::Failed),
        malformed_kept: unchecked,
        rows_without_subject: outcomes.iter().map(|o| o.counts.unnamed).sum(),
        caches,
        verification,
        resumed: journal.resumed,
    };
    let found = Discovery {
        symlinks: targets
            .iter()
            .flat_map(|t| t.found.symlinks.clone())
            .collect(),
        unreadable: targets
            .iter()
            .flat_map(|t| t.found.unreadable.clone())
            .collect(),
        ..Discovery::default()
    };
    let ctx = JobCtx {
        job,
        args,
        started,
        as_of,
        keys: &keys,
        show: &show,
    };
    let predicate = ctx.predicate(snapshot.as_ref(), &found, outcomes, problems, Some(info));
    let journal = (!args.dry_run).then_some(journal);
    super::sign_and_close(job, args, predicate, &keys, journal)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(entries: &[&str], subjects: &[&str]) -> CachePlan {
        CachePlan {
            entries: entries.iter().map(|s| s.to_string()).collect(),
            subjects: subjects.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn counts(removed: u64, found: u64, absent: u64) -> CacheCounts {
        CacheCounts {
            removed,
            found,
            absent,
        }
    }

    #[test]
    fn cache_counts_add_up_however_the_earlier_run_ended() {
        let none = CachePlan::default();
        let all = plan(&["a.npy", "a.txt", "c.npy"], &["a", "c"]);
        // A first run finds three entries of two subjects (of five erased) and removes them.
        assert_eq!(CacheCounts::of(&none, 0, &all, 3, 5), counts(3, 2, 3));
        // Killed after removing a.npy: the re-run finds the other two.
        let rest = plan(&["a.txt", "c.npy"], &["a", "c"]);
        assert_eq!(CacheCounts::of(&all, 0, &rest, 2, 5), counts(3, 2, 3));
        // Killed after removing a.npy and a.txt: subject a is found, not absent.
        let last = plan(&["c.npy"], &["c"]);
        assert_eq!(CacheCounts::of(&all, 0, &last, 1, 5), counts(3, 2, 3));
        // Killed after the sweep (before signing): nothing is left to find.
        assert_eq!(CacheCounts::of(&all, 0, &none, 0, 5), counts(3, 2, 3));
        // a.npy came back between the runs: removed again, counted once.
        let back = plan(&["a.npy", "c.npy"], &["a", "c"]);
        assert_eq!(CacheCounts::of(&all, 0, &back, 2, 5), counts(3, 2, 3));
        // An entry of a new subject appeared between the runs.
        let new = plan(&["b.npy"], &["b"]);
        assert_eq!(CacheCounts::of(&all, 0, &new, 1, 5), counts(4, 3, 2));
        // An entry that resisted removal stays planned and is not counted.
        assert_eq!(CacheCounts::of(&all, 0, &rest, 1, 5), counts(2, 2, 3));
        // A journal from before plans counted what a finished sweep removed.
        assert_eq!(CacheCounts::of(&none, 4, &none, 0, 5), counts(4, 0, 5));
    }
}

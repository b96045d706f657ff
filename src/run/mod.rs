//! `consentry run`: a job from spec to signed report.
//!
//! The order is the contract's: everything that can make a job invalid (spec, keys,
//! snapshot, inputs, existing outputs) is checked before the first byte is written, and
//! fails with exit code 2; after that, a file that fails is recorded and the job goes on,
//! ending `partial`.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::cli::RunArgs;
use crate::consent::{self, Snapshot};
use crate::dataset::scan::SubjectPath;
use crate::dataset::write::FileId;
use crate::dataset::{self, Discovery};
use crate::error::{Error, Result};
use crate::exec::{self, Progress, ProgressMode};
use crate::job::{Job, Kind, ReportSpec};
use crate::ops::filter::{ConsentRule, Filter};
use crate::ops::rows::{Engine, CHUNK_SIZE};
use crate::ops::{FileStatus, Outcome};
use crate::report::sign::{self, Pseudonymizer, Signer};
use crate::report::{
    self, render, ConsentInfo, JobInfo, Predicate, Skipped, Statement, Status, Tool, Totals,
    Unreadable,
};
use crate::time::Timestamp;
use crate::Exit;

mod erase;
mod journal;

use journal::Journal;

/// The keys a job signs and pseudonymises with.
pub struct Keys {
    pub signer: Signer,
    pub pseudonymizer: Pseudonymizer,
    pub public_key: PathBuf,
}

impl Keys {
    /// Loads the job's keys, creating them first when the spec says `create_keys = true` and
    /// none exist yet.
    pub fn load(spec: &ReportSpec, may_create: bool) -> Result<Keys> {
        let key_err = |path: &Path, e: sign::KeyError| Error::Key {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if spec.create_keys
            && may_create
            && !spec.signing_key.exists()
            && !spec.pseudonym_key.exists()
        {
            let dir = spec.signing_key.parent().unwrap_or(Path::new("."));
            let standard = spec.signing_key == dir.join(sign::SIGNING_KEY_FILE)
                && spec.pseudonym_key == dir.join(sign::PSEUDONYM_KEY_FILE);
            if !standard {
                return Err(Error::Key {
                    path: spec.signing_key.clone(),
                    message: format!(
                        "create_keys needs signing_key and pseudonym_key to be {} and {} in one directory",
                        sign::SIGNING_KEY_FILE,
                        sign::PSEUDONYM_KEY_FILE
                    ),
                });
            }
            sign::keygen(dir).map_err(|e| key_err(dir, e))?;
        }
        let signer = Signer::load(&spec.signing_key).map_err(|e| key_err(&spec.signing_key, e))?;
        let pseudonymizer = Pseudonymizer::load(&spec.pseudonym_key)
            .map_err(|e| key_err(&spec.pseudonym_key, e))?;
        let public_key = spec.signing_key.with_file_name(sign::PUBLIC_KEY_FILE);
        Ok(Keys {
            signer,
            pseudonymizer,
            public_key,
        })
    }
}

/// Shows a path relative to the job's directory (`../data/x.jsonl` for a sibling), so
/// reports do not depend on where the job ran; `job.base_dir` in the report anchors them.
pub(crate) fn shower(base: &Path) -> impl Fn(&Path) -> String + Sync + '_ {
    move |p: &Path| relative_to(p, base).display().to_string()
}

fn relative_to(path: &Path, base: &Path) -> PathBuf {
    if !path.is_absolute() || !base.is_absolute() {
        return path.to_path_buf();
    }
    let (p, b): (Vec<_>, Vec<_>) = (path.components().collect(), base.components().collect());
    let shared = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in shared..b.len() {
        rel.push("..");
    }
    for c in &p[shared..] {
        rel.push(c);
    }
    if rel.as_os_str().is_empty() {
        rel.push(".");
    }
    rel
}

pub fn run(args: &RunArgs) -> Result<Exit> {
    let started = Timestamp::now();
    let job = Job::load(&args.job)?;
    let as_of = job.as_of.unwrap_or(started);
    let _running = match args.dry_run {
        true => None,
        false => {
            let lock = RunLock::take(&job)?;
            crate::report::chain::check_appendable(&job.report.dir)?;
            Some(lock)
        }
    };
    match job.kind {
        Kind::Filter => filter(&job, args, started, as_of),
        Kind::Erase => erase::run(&job, args, started, as_of),
    }
}

fn filter(job: &Job, args: &RunArgs, started: Timestamp, as_of: Timestamp) -> Result<Exit> {
    let show = shower(&job.base_dir);
    let keys = Keys::load(&job.report, !args.dry_run)?;
    let consent = job
        .consent
        .as_ref()
        .ok_or_else(|| Error::spec(&job.spec_path, "a filter job needs [consent]"))?;
    let out_root = &job
        .output
        .as_ref()
        .ok_or_else(|| Error::spec(&job.spec_path, "a filter job needs [output]"))?
        .dir;
    let subject =
        SubjectPath::parse(&job.input.subject_field).map_err(|e| Error::spec(&job.spec_path, e))?;
    let snapshot = consent::load(
        &consent.snapshot,
        &consent.schema,
        &consent.purpose,
        as_of,
        &consent.rules,
    )?;
    // The snapshot is loaded: from here on, memory freed is kept for reuse.
    crate::memory::keep_freed_memory();
    let found = dataset::discover(&job.input)?;
    let identity = journal::Identity {
        job: job.name.clone(),
        spec_sha256: job.spec_sha256.clone(),
        subjects: String::new(),
        snapshot_sha256: Some(snapshot.file.sha256.clone()),
    };
    let journal_path = Journal::path_for(&job.report.dir, &job.name);
    let journal = match args.dry_run {
        true => None,
        false => Some(open_journal(
            job,
            &journal_path,
            identity,
            args.discard_journal,
            true,
        )?),
    };
    // Before an interrupted run's outputs are removed: [output] dir must not have become
    // (through a symlink) an input tree.
    check_overlap(job, out_root)?;
    let signed = journal
        .as_ref()
        .filter(|j| j.resumed)
        .and_then(|j| j.signing())
        .and_then(|id| signed_report(&job.report.dir, &id));
    if let Some(report) = signed {
        if let Some(j) = journal {
            return finish_signed(j, "filter", job, &report);
        }
    }
    if let Some(j) = journal.as_ref().filter(|j| j.resumed) {
        undo_interrupted_outputs(j, out_root)?;
    }
    if let Some(j) = journal.as_ref().filter(|j| !j.resumed) {
        // --discard-journal: the discarded run's unsigned outputs go too (those still under
        // [output] dir; the spec may have moved it).
        for left in j.forget_outputs_outside(out_root) {
            eprintln!(
                "consentry: note: an interrupted run's output {} lies outside [output] dir: left as it is",
                left.display()
            );
        }
        undo_interrupted_outputs(j, out_root)?;
    }
    check_outputs(job, out_root, &found)?;
    if !args.dry_run {
        sweep_output_temps(out_root)?;
    }
    let before_write = |target: &Path, file| match &journal {
        Some(j) => j
            .add_output(target, file)
            .map_err(|e| format!("cannot update the journal: {e}")),
        None => Ok(()),
    };

    let mode = ProgressMode::detect(args.no_progress);
    let total_bytes = found.files.iter().map(|f| f.bytes).sum();
    let outcomes = exec::with_pool(args.threads, || {
        let progress = Progress::start(mode, "filtered", found.files.len() as u64, total_bytes);
        let on_rows = |n| progress.add_rows(n);
        let op = Filter {
            engine: Engine {
                subject: &subject,
                hash: true,
                chunk_size: CHUNK_SIZE,
                chunks_per_batch: 2 * exec::workers().max(1),
                on_read: progress.on_read(),
                on_rows: &on_rows,
            },
            rule: ConsentRule {
                snapshot: &snapshot,
            },
            out_root,
            dry_run: args.dry_run,
            show: &show,
            before_write: &before_write,
        };
        let outcomes = exec::par_map(&found.files, |f| {
            let o = op.run(f);
            progress.file_done();
            o
        });
        progress.finish();
        outcomes
    })?;

    let ctx = JobCtx {
        job,
        args,
        started,
        as_of,
        keys: &keys,
        show: &show,
    };
    let predicate = ctx.predicate(Some(&snapshot), &found, outcomes, Vec::new(), None);
    sign_and_close(job, args, predicate, &keys, journal)
}

/// Marks the journal as signing (so a re-run after a kill can tell the report was signed),
/// signs and prints the report, then removes the journal: the last steps of every job.
pub(crate) fn sign_and_close(
    job: &Job,
    args: &RunArgs,
    predicate: Predicate,
    keys: &Keys,
    journal: Option<Journal>,
) -> Result<Exit> {
    let journal_err = |what, j: &Journal, e| Error::io(what, j.path(), e).late();
    if let Some(j) = &journal {
        j.mark_signing(&predicate.job.id)
            .map_err(|e| journal_err("cannot update journal", j, e))?;
    }
    let exit = finish(job, args, predicate, keys)?;
    if let Some(j) = journal {
        let path = j.path().to_path_buf();
        j.remove()
            .map_err(|e| Error::io("cannot remove journal", &path, e).late())?;
    }
    Ok(exit)
}

/// The report of the directory that carries `job_id`, if one does: an interrupted run that
/// had marked its journal as signing did sign (the kill came before the journal was removed).
pub(crate) fn signed_report(report_dir: &Path, job_id: &str) -> Option<PathBuf> {
    let files = crate::report::chain::list(report_dir).ok()?;
    files.into_iter().rev().find(|file| {
        std::fs::read(file)
            .ok()
            .and_then(|bytes| crate::report::read_unverified(&bytes).ok())
            .is_some_and(|s| s["predicate"]["job"]["id"].as_str() == Some(job_id))
    })
}

/// Ends a re-run whose interrupted predecessor had already signed `report`: the journal goes,
/// and the summary names the report, its place in the chain and its digest in the words a
/// completed run's summary uses (an auditor anchoring chains records that line).
pub(crate) fn finish_signed(
    journal: Journal,
    kind: &str,
    job: &Job,
    report: &Path,
) -> Result<Exit> {
    let bytes = std::fs::read(report).map_err(|e| Error::io("cannot read report", report, e))?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let sequence = crate::report::read_unverified(&bytes)
        .ok()
        .and_then(|s| s["predicate"]["chain"]["sequence"].as_u64())
        .map_or_else(|| "?".into(), |n| n.to_string());
    let id = journal.signing().unwrap_or_default();
    let path = journal.path().to_path_buf();
    journal
        .remove()
        .map_err(|e| Error::io("cannot remove journal", &path, e))?;
    crate::commands::emit(&format!(
        "consentry {kind} job {}: an interrupted run had already signed its report (job id {id}); nothing left to do\n  report     {}\n  chain      sequence {sequence}, report sha256 {sha}\n",
        job.name,
        shower(&job.base_dir)(report)
    ))?;
    Ok(Exit::Ok)
}

/// Held for a whole run, so two runs of one job never share its journal or outputs. It is
/// a lock on the job spec file itself, so taking it creates nothing.
struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    fn take(job: &Job) -> Result<RunLock> {
        let path = &job.spec_path;
        let file =
            std::fs::File::open(path).map_err(|e| Error::io("cannot open job spec", path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Usage(format!(
                "job {} is already running (another process holds {}); nothing was changed",
                job.name,
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io("cannot lock job spec", path, e)),
        }
    }
}

/// Opens the journal of a job (refusing one an interrupted run made with other inputs).
pub(crate) fn open_journal(
    job: &Job,
    path: &Path,
    identity: journal::Identity,
    discard: bool,
    lock: bool,
) -> Result<Journal> {
    Journal::open(path.to_path_buf(), identity, discard, lock).map_err(|r| {
        let why = match r {
            journal::Refusal::Different(what) => format!(
                "an interrupted run of job {} used a different {what}; run it again with the same inputs to \
                 finish it, or pass --discard-journal to start over",
                job.name
            ),
            journal::Refusal::Unreadable(e) => format!("unreadable journal ({e}); pass --discard-journal to start over"),
            journal::Refusal::Lock(lock, e) => format!("cannot lock {} ({e})", lock.display()),
            journal::Refusal::Running(lock) => format!(
                "job {} is already running (another run holds {}); nothing was changed",
                job.name,
                lock.display()
            ),
        };
        Error::Usage(format!("{}: {why}", path.display()))
    })
}

/// A filter job killed part-way left outputs (and perhaps temp files) that this job made: the
/// re-run removes them and writes every output afresh, so nothing half-done is kept and
/// nothing that was there before the job is touched (the journal names only its own files).
fn undo_interrupted_outputs(journal: &Journal, out_root: &Path) -> Result<()> {
    for target in journal.outputs() {
        // Removed only where the interrupted run wrote it: not through a directory that has
        // since become a symlink (which could lead into an input), nor outside the root.
        let below = target.strip_prefix(out_root).ok();
        let linked = below.and_then(|rel| {
            rel.ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .map(|a| out_root.join(a))
                .find(|d| {
                    d.symlink_metadata()
                        .is_ok_and(|m| m.file_type().is_symlink())
                })
        });
        if below.is_none() || linked.is_some() {
            return Err(Error::Output {
                path: linked.unwrap_or(target),
                message: "an interrupted run's output is no longer reached without a symlink \
                          (or lies outside [output] dir): not removed; remove it by hand"
                    .into(),
            });
        }
        // And only if the path still names the file that run wrote: one put there since
        // (or a different file from the start, if it was killed before its rename) stays.
        let now = FileId::at(&target)
            .map_err(|e| Error::io("cannot read an interrupted run's output", &target, e))?;
        let ours = match (journal.output_file(&target), now) {
            (_, None) => false,
            (Some(wrote), Some(now)) => wrote.is(&now),
            // A journal from before output files were recorded: the path is all it has.
            (None, Some(_)) => true,
        };
        if now.is_some() && !ours {
            eprintln!(
                "consentry: note: {} is not the file an interrupted run of this job wrote there: left as it is",
                target.display()
            );
        }
        if ours {
            match std::fs::remove_file(&target) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(
                        "cannot remove an interrupted run's output",
                        &target,
                        e,
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Removes the temp files killed runs left below `out_root`. An output's temp file exists
/// before the journal records it (so that the record names the file), and a run killed
/// before its first journal save leaves no journal at all; the inputs may have changed
/// since. So the whole tree is swept, not only where this run's or the journal's outputs
/// go. A file another running job is writing is left alone (see `sweep_temp_files`), as is
/// a directory that cannot be read (with a note). Symlinks are not followed.
fn sweep_output_temps(out_root: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(out_root).follow_links(false) {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if e.io_error().map(std::io::Error::kind) != Some(std::io::ErrorKind::NotFound) {
                    let path = e.path().unwrap_or(out_root).display().to_string();
                    eprintln!("consentry: note: {path}: not swept for temporary files ({e})");
                }
                continue;
            }
        };
        if entry.file_type().is_dir() {
            dataset::write::sweep_temp_files(entry.path())
                .map_err(|e| Error::io("cannot clean up", entry.path(), e))?;
        }
    }
    Ok(())
}

/// Refuses an [output] dir that is, or holds, an input tree once symlinks are resolved.
fn check_overlap(job: &Job, out_root: &Path) -> Result<()> {
    let real_out = real_path(out_root);
    for input in &job.input.paths {
        let real_in = real_path(input);
        if real_out.starts_with(&real_in) || real_in.starts_with(&real_out) {
            return Err(Error::spec(
                &job.spec_path,
                format!(
                    "[output] dir {} overlaps input {}",
                    out_root.display(),
                    input.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses to start when an output would overwrite anything or land inside an input.
fn check_outputs(job: &Job, out_root: &Path, found: &Discovery) -> Result<()> {
    check_overlap(job, out_root)?;
    let mut ancestor = out_root;
    loop {
        if ancestor.symlink_metadata().is_ok() {
            match std::fs::metadata(ancestor) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(Error::Output {
                        path: ancestor.to_path_buf(),
                        message:
                            "exists and is not a directory, so the output tree cannot be made there"
                                .into(),
                    })
                }
                Err(e) => {
                    return Err(Error::Output {
                        path: ancestor.to_path_buf(),
                        message: format!("cannot be used as a directory: {e}"),
                    })
                }
            }
        }
        match ancestor.parent() {
            Some(parent) => ancestor = parent,
            None => break,
        }
    }
    // Below the output root, every directory an output goes into is made by this job or is a
    // real directory: a symlink there could lead anywhere, an input tree included.
    let mut dirs = std::collections::BTreeSet::new();
    for f in &found.files {
        let mut dir = f.rel.parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(out_root.join(d));
            dir = d.parent();
        }
    }
    if let Some(link) = dirs.iter().find(|d| {
        d.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
    }) {
        return Err(Error::Output {
            path: link.clone(),
            message: "is a symlink: outputs are never written through one (it could lead into an \
                      input or anywhere else); remove it or choose another [output] dir"
                .into(),
        });
    }
    let existing: Vec<String> = found
        .files
        .iter()
        .map(|f| out_root.join(&f.rel))
        .filter(|t| t.symlink_metadata().is_ok())
        .map(|t| t.display().to_string())
        .collect();
    if let Some(first) = existing.first() {
        return Err(Error::Output {
            path: PathBuf::from(first),
            message: format!(
                "already exists ({} output files exist); a filter job never overwrites: remove them or choose another [output] dir",
                existing.len()
            ),
        });
    }
    Ok(())
}

/// The canonical form of `p`, or of its nearest existing ancestor with the rest appended.
fn real_path(p: &Path) -> PathBuf {
    let mut head = p.to_path_buf();
    let mut tail = Vec::new();
    loop {
        if let Ok(real) = head.canonicalize() {
            return tail
                .iter()
                .rev()
                .fold(real, |acc: PathBuf, part| acc.join(part));
        }
        match (head.file_name().map(|n| n.to_os_string()), head.parent()) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                head = parent.to_path_buf();
            }
            _ => return p.to_path_buf(),
        }
    }
}

/// What every job's report says about the job itself.
pub(crate) struct JobCtx<'a> {
    pub job: &'a Job,
    pub args: &'a RunArgs,
    pub started: Timestamp,
    pub as_of: Timestamp,
    pub keys: &'a Keys,
    pub show: &'a (dyn Fn(&Path) -> String + Sync),
}

impl JobCtx<'_> {
    /// Builds the report's predicate. `problems` are the job-level reasons it is partial;
    /// failed files and unreadable paths are added here.
    pub fn predicate(
        &self,
        snapshot: Option<&Snapshot>,
        found: &Discovery,
        inputs: Vec<Outcome>,
        mut problems: Vec<String>,
        erase: Option<report::EraseInfo>,
    ) -> Predicate {
        let show = self.show;
        for o in inputs.iter().filter(|o| o.status == FileStatus::Failed) {
            problems.push(format!(
                "{}: {}",
                o.path,
                o.error.as_deref().unwrap_or("failed")
            ));
        }
        let skipped = Skipped {
            symlinks: found.symlinks.iter().map(|p| show(p)).collect(),
            unreadable: found
                .unreadable
                .iter()
                .map(|(p, e)| Unreadable {
                    path: show(p),
                    error: e.clone(),
                })
                .collect(),
        };
        for u in &skipped.unreadable {
            problems.push(format!("{}: cannot read: {}", u.path, u.error));
        }
        let status = if problems.is_empty() {
            Status::Complete
        } else {
            Status::Partial
        };
        let totals = Totals::of(&inputs);
        let job = self.job;
        Predicate {
            job: JobInfo {
                name: job.name.clone(),
                kind: job.kind.as_str(),
                id: job_id(),
                as_of: self.as_of,
                started_at: self.started,
                finished_at: Timestamp::now(),
                spec_path: show(&job.spec_path),
                spec_sha256: job.spec_sha256.clone(),
                base_dir: job.base_dir.display().to_string(),
                dry_run: self.args.dry_run,
                tool: Tool::THIS,
            },
            consent: snapshot.map(|snapshot| ConsentInfo {
                path: show(&snapshot.file.path),
                sha256: snapshot.file.sha256.clone(),
                bytes: snapshot.file.bytes,
                schema: snapshot.schema,
                purpose: snapshot.purpose.clone(),
                rules: snapshot.rules.clone(),
                records_read: snapshot.records_read,
                subjects: snapshot.counts(),
                warnings: snapshot.warnings.clone(),
            }),
            inputs,
            skipped,
            totals,
            erase,
            chain: report::Chain {
                sequence: 0,
                previous_sha256: None,
            },
            status,
            problems,
            signing: report::SigningInfo {
                key_id: self.keys.signer.key_id().to_string(),
                public_key: self.keys.public_key.display().to_string(),
            },
        }
    }
}

fn job_id() -> String {
    let mut id = [0u8; 16];
    if getrandom::fill(&mut id).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        id[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    hex::encode(id)
}

/// Signs and chains the report (unless this is a dry run), prints the summary, and says
/// how the process should exit.
pub(crate) fn finish(
    job: &Job,
    args: &RunArgs,
    mut predicate: Predicate,
    keys: &Keys,
) -> Result<Exit> {
    let exit = match predicate.status {
        Status::Complete => Exit::Ok,
        Status::Partial => Exit::Partial,
    };
    let mut written = None;
    if !args.dry_run {
        let (path, sha) = report::chain::append(&job.report.dir, &job.name, |link| {
            predicate.chain = link.clone();
            let payload =
                serde_json::to_vec(&Statement::new(&predicate)).map_err(|e| Error::Report {
                    path: job.report.dir.clone(),
                    message: e.to_string(),
                })?;
            let envelope = keys.signer.sign_envelope(&payload);
            let mut bytes = serde_json::to_vec_pretty(&envelope).map_err(|e| Error::Report {
                path: job.report.dir.clone(),
                message: e.to_string(),
            })?;
            bytes.push(b'\n');
            Ok(bytes)
        })
        .map_err(Error::late)?;
        written = Some((shower(&job.base_dir)(&path), sha));
    }
    let statement = serde_json::to_value(Statement::new(&predicate)).unwrap_or(Value::Null);
    if args.json {
        let mut summary = statement["predicate"].clone();
        if let Value::Object(map) = &mut summary {
            map.insert("exit_code".into(), Value::from(exit as i32));
            map.insert(
                "report".into(),
                written
                    .as_ref()
                    .map_or(Value::Null, |(p, _)| Value::from(p.clone())),
            );
            map.insert(
                "report_sha256".into(),
                written
                    .as_ref()
                    .map_or(Value::Null, |(_, s)| Value::from(s.clone())),
            );
            map.insert("outputs".into(), statement["subject"].clone());
        }
        crate::commands::emit(&format!("{summary}\n")).map_err(Error::late)?;
    } else {
        crate::commands::emit(&render::summary(
            &statement,
            written.as_ref().map(|(p, _)| p.as_str()),
            written.as_ref().map(|(_, s)| s.as_str()),
        ))
        .map_err(Error::late)?;
    }
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A filter job's journal in a fresh directory (reports in `reports/`).
    fn filter_journal() -> (tempfile::TempDir, Journal) {
        let dir = tempfile::tempdir().unwrap();
        let identity = journal::Identity {
            job: "f".into(),
            spec_sha256: "spec".into(),
            subjects: String::new(),
            snapshot_sha256: None,
        };
        let path = Journal::path_for(&dir.path().join("reports"), "f");
        let j = Journal::open(path, identity, false, true).unwrap_or_else(|_| panic!());
        (dir, j)
    }

    /// The outputs an interrupted filter run journaled are removed on its re-run, but never
    /// through a directory that has since become a symlink (here, into an "input").
    #[test]
    fn an_interrupted_runs_outputs_are_not_removed_through_a_symlink() {
        let (dir, j) = filter_journal();
        let out_root = dir.path().join("out");
        let kept = out_root.join("a.jsonl");
        let linked = out_root.join("sub/b.jsonl");
        std::fs::create_dir_all(&out_root).unwrap();
        std::fs::write(&kept, "partial").unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/b.jsonl"), "an input").unwrap();
        std::os::unix::fs::symlink("../data", out_root.join("sub")).unwrap();
        // Even recorded as the very file the path now reaches, a symlinked one stays.
        j.add_output(&kept, FileId::at(&kept).unwrap().unwrap())
            .unwrap();
        j.add_output(&linked, FileId::at(&linked).unwrap().unwrap())
            .unwrap();

        let err = undo_interrupted_outputs(&j, &out_root).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data/b.jsonl")).unwrap(),
            "an input"
        );

        std::fs::remove_file(out_root.join("sub")).unwrap();
        undo_interrupted_outputs(&j, &out_root).unwrap();
        assert!(
            !kept.exists(),
            "the interrupted run's own output is removed"
        );
    }

    /// A path the interrupted run recorded but that names another file now (put there
    /// since, or never renamed into place by that run) is left as it is.
    #[test]
    fn an_interrupted_runs_output_replaced_since_is_not_removed() {
        let (dir, j) = filter_journal();
        let out_root = dir.path().join("out");
        std::fs::create_dir_all(&out_root).unwrap();
        let (ours, theirs) = (out_root.join("a.jsonl"), out_root.join("b.jsonl"));
        std::fs::write(&ours, "half").unwrap();
        std::fs::write(&theirs, "the run's").unwrap();
        j.add_output(&ours, FileId::at(&ours).unwrap().unwrap())
            .unwrap();
        j.add_output(&theirs, FileId::at(&theirs).unwrap().unwrap())
            .unwrap();
        // Someone replaces the second output with their own file.
        let replacement = out_root.join("replacement");
        std::fs::write(&replacement, "a user's file").unwrap();
        std::fs::rename(&replacement, &theirs).unwrap();

        undo_interrupted_outputs(&j, &out_root).unwrap();
        assert!(!ours.exists(), "the run's own output is removed");
        assert_eq!(std::fs::read_to_string(&theirs).unwrap(), "a user's file");
    }
}

//! The erase journal: what an erase job has done so far, so that the same job killed at any
//! instant and run again finishes the work and signs exactly one report for all of it.
//!
//! It lives beside the reports as `.consentry-journal-<job>.json` and is removed once the
//! report is signed. It is a JSON Lines file: the first line names the job's identity and
//! each later line records one change, appended and synced before anything else happens.
//! (A journal rewritten whole at every change would cost a job of n files n² bytes and two
//! renames per file.) A run's first save writes the whole journal afresh, through a temporary
//! file renamed into place; only a kill during an append can leave a line cut short, and
//! only as the last line, without its newline, which reading ignores: the change it began to
//! record was never acted on. A rewrite is recorded as pending (with the digests before and after) before its
//! rename and as done after, so a run killed between the two tells which happened by
//! hashing the file. Before a cache sweep removes anything, the entries it found are
//! recorded, so that the re-run of a sweep killed part-way counts the entries already gone
//! as removed, not as absent. The journal holds paths, digests, counts and pseudonyms,
//! never a subject id.
//!
//! The journal belongs to one run at a time: the run holds `.consentry-run-<job>.lock`
//! beside it, taken when the journal is opened if the report directory exists and at its
//! first save otherwise. So a second run of the job (from a copy of its spec, or another
//! spec with the same name and report directory) never resumes a journal that is still
//! being written, nor overwrites one.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::dataset::write::{AtomicFile, FileId, Replace};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub job: String,
    pub spec_sha256: String,
    /// HMAC of the sorted erased ids under the pseudonym key.
    pub subjects: String,
    pub snapshot_sha256: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rewrite {
    pub sha256_before: String,
    pub bytes_before: u64,
    pub sha256_after: String,
    pub rows_in: u64,
    pub rows_removed: u64,
    pub done: bool,
}

/// What a cache sweep found before it removed anything, as pseudonyms (HMAC under the
/// pseudonym key) of entry names and of subjects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CachePlan {
    pub entries: BTreeSet<String>,
    pub subjects: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    identity: Identity,
    /// Rewrites by absolute path.
    files: BTreeMap<String, Rewrite>,
    /// Per cache root, the entries of erased subjects found there before any was removed.
    #[serde(default)]
    cache_plans: BTreeMap<String, CachePlan>,
    /// Entries removed per cache root, as journals written before cache plans counted them
    /// (once a root's sweep had finished): kept so that a run interrupted before an upgrade
    /// keeps its count. Nothing adds to it any more.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    caches: BTreeMap<String, u64>,
    /// Set just before signing: the id the report carries.
    signing: Option<String>,
    /// Filter jobs: every output this job started to write, recorded once its temp file exists.
    #[serde(default)]
    outputs: BTreeSet<String>,
    /// The file each output was being written as (its temp file, renamed into place): a
    /// re-run removes an output only if the path still names that file. Journals written
    /// before this was kept have none, and their outputs are removed by path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    output_files: BTreeMap<String, FileId>,
}

/// One line of the journal file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Entry {
    /// The first line, and only the first.
    Identity(Identity),
    /// A rewrite of `file`; a later line for the same file replaces an earlier one.
    Rewrite { file: String, rewrite: Rewrite },
    /// Entries found under a cache root, added to those found before.
    CachePlan { root: String, plan: CachePlan },
    /// What a journal from before cache plans counted as removed from a root.
    CacheRemoved { root: String, removed: u64 },
    /// A filter output this job started to write, and the file it is written as.
    Output {
        target: String,
        file: Option<FileId>,
    },
    /// The id of the report about to be signed.
    Signing(String),
}

impl State {
    fn new(identity: Identity) -> State {
        State {
            identity,
            files: BTreeMap::new(),
            cache_plans: BTreeMap::new(),
            caches: BTreeMap::new(),
            signing: None,
            outputs: BTreeSet::new(),
            output_files: BTreeMap::new(),
        }
    }

    fn apply(&mut self, entry: Entry) -> Result<(), &'static str> {
        match entry {
            Entry::Identity(_) => return Err("a second identity line"),
            Entry::Rewrite { file, rewrite } => {
                self.files.insert(file, rewrite);
            }
            Entry::CachePlan { root, plan } => {
                let known = self.cache_plans.entry(root).or_default();
                known.entries.extend(plan.entries);
                known.subjects.extend(plan.subjects);
            }
            Entry::CacheRemoved { root, removed } => {
                self.caches.insert(root, removed);
            }
            Entry::Output { target, file } => {
                if let Some(file) = file {
                    self.output_files.insert(target.clone(), file);
                }
                self.outputs.insert(target);
            }
            Entry::Signing(id) => self.signing = Some(id),
        }
        Ok(())
    }

    /// The lines that rebuild this state.
    fn entries(&self) -> Vec<Entry> {
        let mut out = vec![Entry::Identity(self.identity.clone())];
        out.extend(self.files.iter().map(|(file, rewrite)| Entry::Rewrite {
            file: file.clone(),
            rewrite: rewrite.clone(),
        }));
        out.extend(
            self.cache_plans
                .iter()
                .map(|(root, plan)| Entry::CachePlan {
                    root: root.clone(),
                    plan: plan.clone(),
                }),
        );
        out.extend(
            self.caches
                .iter()
                .map(|(root, &removed)| Entry::CacheRemoved {
                    root: root.clone(),
                    removed,
                }),
        );
        out.extend(self.outputs.iter().map(|target| Entry::Output {
            target: target.clone(),
            file: self.output_files.get(target).copied(),
        }));
        out.extend(self.signing.clone().map(Entry::Signing));
        out
    }

    /// Reads a journal file: JSON Lines, or the single JSON object journals were before.
    fn parse(bytes: &[u8]) -> Result<State, String> {
        if let Ok(state) = serde_json::from_slice::<State>(bytes) {
            return Ok(state);
        }
        let mut state: Option<State> = None;
        let mut lines = bytes
            .split_inclusive(|&b| b == b'\n')
            .enumerate()
            .peekable();
        while let Some((n, line)) = lines.next() {
            let last = lines.peek().is_none();
            // A last line without its newline was cut short by a kill during its append:
            // what it began to record was never acted on. (Only the last line can be: each
            // is synced before the next is written.) Any other line must be whole.
            if last && !line.ends_with(b"\n") {
                break;
            }
            let entry = serde_json::from_slice::<Entry>(line)
                .map_err(|e| format!("line {}: {e}", n + 1))?;
            match (&mut state, entry) {
                (None, Entry::Identity(identity)) => state = Some(State::new(identity)),
                (None, _) => return Err("line 1: not the job's identity".into()),
                (Some(s), entry) => s.apply(entry).map_err(|e| format!("line {}: {e}", n + 1))?,
            }
        }
        state.ok_or_else(|| "empty".into())
    }
}

fn encode(entries: &[Entry]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    for entry in entries {
        serde_json::to_writer(&mut out, entry).map_err(std::io::Error::other)?;
        out.push(b'\n');
    }
    Ok(out)
}

pub struct Journal {
    path: PathBuf,
    state: Mutex<State>,
    /// An earlier run of this job left this journal.
    pub resumed: bool,
    /// The run lock, once taken, and whether this run may replace a journal file.
    owner: Mutex<Owner>,
}

#[derive(Default)]
struct Owner {
    lock: Option<std::fs::File>,
    /// Set when this run resumed or discarded the journal, or has saved it once: until
    /// then, a journal file at the path belongs to another run.
    replaces: bool,
    /// Another run took the job while this one worked: every save fails from then on, so
    /// this run never writes a journal or signs a report, even once that run has ended.
    lost: bool,
    /// The journal file, open for appending, once this run has written it whole.
    file: Option<std::fs::File>,
}

/// Why an existing journal cannot be continued.
pub enum Refusal {
    Different(&'static str),
    Unreadable(String),
    /// Another run of the job holds its lock (the path of the lock file).
    Running(PathBuf),
    /// The lock file cannot be created or locked.
    Lock(PathBuf, std::io::Error),
}

/// The lock file that marks the run owning the journal at `journal`.
fn lock_path(journal: &Path) -> PathBuf {
    let name = journal
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let job = name
        .strip_prefix(".consentry-journal-")
        .and_then(|n| n.strip_suffix(".json"))
        .unwrap_or(&name);
    journal.with_file_name(format!(".consentry-run-{job}.lock"))
}

/// Takes the run lock of the journal at `journal` (its directory must exist): `Ok(None)`
/// when another run holds it.
fn take_lock(journal: &Path) -> std::io::Result<Option<std::fs::File>> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(journal))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

impl Journal {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn path_for(report_dir: &Path, job: &str) -> PathBuf {
        report_dir.join(format!(".consentry-journal-{job}.json"))
    }

    /// Opens the journal an interrupted run left, if it was made with the same identity,
    /// or starts a new one (in memory until the first `save`). With `lock`, takes the run
    /// lock when the report directory exists; a dry run, which saves nothing, does not (it
    /// creates nothing and runs beside a real run).
    pub fn open(
        path: PathBuf,
        identity: Identity,
        discard: bool,
        lock: bool,
    ) -> Result<Journal, Refusal> {
        let mut owner = Owner::default();
        if lock && path.parent().is_some_and(Path::is_dir) {
            let taken = take_lock(&path).map_err(|e| Refusal::Lock(lock_path(&path), e))?;
            owner.lock = Some(taken.ok_or_else(|| Refusal::Running(lock_path(&path)))?);
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Journal {
                    path,
                    state: Mutex::new(State::new(identity)),
                    resumed: false,
                    owner: Mutex::new(owner),
                })
            }
            Err(e) => return Err(Refusal::Unreadable(e.to_string())),
        };
        owner.replaces = true;
        if discard {
            // The outputs a filter run left unsigned are carried over, so that this run can
            // remove them before writing afresh (they are this job's own, half-done).
            let mut state = State::new(identity);
            if let Ok(old) = State::parse(&bytes) {
                let dir = path.parent().unwrap_or(Path::new("."));
                let signed = old
                    .signing
                    .is_some_and(|id| super::signed_report(dir, &id).is_some());
                if !signed {
                    state.outputs = old.outputs;
                    state.output_files = old.output_files;
                }
            }
            return Ok(Journal {
                path,
                state: Mutex::new(state),
                resumed: false,
                owner: Mutex::new(owner),
            });
        }
        let old = State::parse(&bytes).map_err(Refusal::Unreadable)?;
        let differs = |what| Err(Refusal::Different(what));
        if old.identity.spec_sha256 != identity.spec_sha256 {
            return differs("job spec");
        }
        if old.identity.subjects != identity.subjects {
            return differs("list of subjects");
        }
        if old.identity.snapshot_sha256 != identity.snapshot_sha256 {
            return differs("consent snapshot");
        }
        Ok(Journal {
            path,
            state: Mutex::new(old),
            resumed: true,
            owner: Mutex::new(owner),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `entry` and writes it to the journal durably: appended and synced, or, at
    /// this run's first save, with the whole journal written afresh and synced. (Every line
    /// is synced before the next is written, so only the last can ever be cut short.) The
    /// first save happens under the report directory's lock; a run that found no report
    /// directory takes the run lock then, and fails if another run of the job took it
    /// meanwhile, or left a journal this run did not see. Changes made in memory before the
    /// first save (`forget_outputs_outside`) reach the file with it.
    fn save(&self, entry: Entry) -> std::io::Result<()> {
        let mut state = self.lock();
        let line = encode(std::slice::from_ref(&entry))?;
        state.apply(entry).map_err(std::io::Error::other)?;
        let mut owner = self.owner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(file) = &mut owner.file {
            let appended = file.write_all(&line).and_then(|()| file.sync_data());
            if appended.is_err() {
                // The file may end in part of this line: the next save writes it whole.
                owner.file = None;
            }
            return appended;
        }
        let bytes = encode(&state.entries())?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::report::chain::locked(dir, || {
            let meanwhile = || {
                crate::Error::Usage(format!(
                    "another run of job {} started while this one was working (it holds {}); \
                     this run stopped before changing anything more",
                    state.identity.job,
                    lock_path(&self.path).display()
                ))
            };
            if owner.lost {
                return Err(meanwhile());
            }
            if owner.lock.is_none() {
                let taken = take_lock(&self.path).map_err(|e| {
                    crate::Error::io("cannot lock journal", &lock_path(&self.path), e)
                })?;
                // Another run holds the job, or held it and left a journal this run never
                // saw. (Holding the lock since `open`, no other run can have saved.)
                if taken.is_none() || (!owner.replaces && self.path.symlink_metadata().is_ok()) {
                    owner.lost = true;
                    return Err(meanwhile());
                }
                owner.lock = taken;
            }
            let failed = |e| crate::Error::io("cannot write journal", &self.path, e);
            let mut f = AtomicFile::create(&self.path, 0o600).map_err(failed)?;
            f.write_all(&bytes).map_err(failed)?;
            f.commit(Replace::Always).map_err(failed)?;
            owner.replaces = true;
            owner.file = Some(
                std::fs::OpenOptions::new()
                    .append(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&self.path)
                    .map_err(failed)?,
            );
            Ok(())
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Records a rewrite about to be renamed into place (`done = false`) or renamed (`true`).
    pub fn record(&self, file: &Path, rewrite: Rewrite) -> std::io::Result<()> {
        let file = file.display().to_string();
        self.save(Entry::Rewrite { file, rewrite })
    }

    /// What an earlier run rewrote at `file`, if that rewrite is what the file holds now
    /// (`current_sha256`): a pending rewrite whose rename did happen counts as done.
    pub fn earlier(&self, file: &Path, current_sha256: &str) -> Option<Rewrite> {
        let state = self.lock();
        state
            .files
            .get(&file.display().to_string())
            .filter(|r| r.sha256_after == current_sha256)
            .cloned()
    }

    /// Adds what a cache sweep found under `root` to the plan, durably, before it removes
    /// anything.
    pub fn plan_cache(&self, root: &Path, found: CachePlan) -> std::io::Result<()> {
        let root = root.display().to_string();
        let new = {
            let state = self.lock();
            let known = state.cache_plans.get(&root);
            let knows = |set: &BTreeSet<String>, item: &String| set.contains(item);
            found
                .entries
                .iter()
                .any(|e| !known.is_some_and(|k| knows(&k.entries, e)))
                || found
                    .subjects
                    .iter()
                    .any(|s| !known.is_some_and(|k| knows(&k.subjects, s)))
        };
        match new {
            true => self.save(Entry::CachePlan { root, plan: found }),
            false => Ok(()),
        }
    }

    /// What an earlier run of this job found under `root` before it began removing.
    pub fn cache_plan(&self, root: &Path) -> CachePlan {
        self.lock()
            .cache_plans
            .get(&root.display().to_string())
            .cloned()
            .unwrap_or_default()
    }

    /// Entries a run of an earlier version removed from `root`, as its journal counted them
    /// (see `caches`).
    pub fn cache_removed_before_plans(&self, root: &Path) -> u64 {
        self.lock()
            .caches
            .get(&root.display().to_string())
            .copied()
            .unwrap_or(0)
    }

    /// Records an output about to be written as `file` (its temp file), so a re-run of a
    /// killed filter job can tell the files this job made from anything that was there
    /// before, or was put there since.
    pub fn add_output(&self, target: &Path, file: FileId) -> std::io::Result<()> {
        let target = target.display().to_string();
        let known = {
            let state = self.lock();
            state.outputs.contains(&target) && state.output_files.get(&target) == Some(&file)
        };
        match known {
            true => Ok(()),
            false => self.save(Entry::Output {
                target,
                file: Some(file),
            }),
        }
    }

    /// The outputs an interrupted run of this job started to write.
    pub fn outputs(&self) -> Vec<PathBuf> {
        self.lock().outputs.iter().map(PathBuf::from).collect()
    }

    /// The file the interrupted run wrote `target` as, when its journal recorded it.
    pub fn output_file(&self, target: &Path) -> Option<FileId> {
        self.lock()
            .output_files
            .get(&target.display().to_string())
            .copied()
    }

    /// Forgets the recorded outputs outside `root` (a discarded run's, written where an
    /// earlier spec put them) and returns them, so that no later run stops at them.
    pub fn forget_outputs_outside(&self, root: &Path) -> Vec<PathBuf> {
        let mut state = self.lock();
        let (below, outside): (BTreeSet<String>, BTreeSet<String>) =
            std::mem::take(&mut state.outputs)
                .into_iter()
                .partition(|o| Path::new(o).starts_with(root));
        state.outputs = below;
        let files = std::mem::take(&mut state.output_files);
        state.output_files = files
            .into_iter()
            .filter(|(o, _)| state.outputs.contains(o))
            .collect();
        outside.into_iter().map(PathBuf::from).collect()
    }

    pub fn mark_signing(&self, job_id: &str) -> std::io::Result<()> {
        self.save(Entry::Signing(job_id.to_string()))
    }

    pub fn signing(&self) -> Option<String> {
        self.lock().signing.clone()
    }

    pub fn remove(self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => crate::dataset::write::sync_dir(self.path.parent().unwrap_or(Path::new("."))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        Identity {
            job: "e".into(),
            spec_sha256: "spec".into(),
            subjects: "subjects".into(),
            snapshot_sha256: None,
        }
    }

    /// Opens (or resumes) the journal at `path` for `identity()`, taking its lock.
    fn opened(path: &Path) -> Journal {
        Journal::open(path.to_path_buf(), identity(), false, true)
            .unwrap_or_else(|_| panic!("the journal at {} opens", path.display()))
    }

    #[test]
    fn a_journal_from_before_cache_plans_keeps_its_cache_count_through_later_saves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".consentry-journal-e.json");
        let old = serde_json::json!({
            "identity": identity(),
            "files": {},
            "caches": {"/data/cache": 7},
            "signing": null,
        });
        std::fs::write(&path, serde_json::to_vec(&old).unwrap()).unwrap();
        let root = Path::new("/data/cache");

        let journal = opened(&path);
        assert!(journal.resumed);
        assert_eq!(journal.cache_removed_before_plans(root), 7);
        assert!(journal.cache_plan(root).entries.is_empty());
        let found = CachePlan {
            entries: ["e1".to_string()].into(),
            subjects: ["s1".to_string()].into(),
        };
        journal.plan_cache(root, found).unwrap();
        drop(journal);

        let again = opened(&path);
        assert_eq!(again.cache_removed_before_plans(root), 7);
        assert_eq!(again.cache_plan(root).entries.len(), 1);
        assert_eq!(again.cache_plan(Path::new("/other")).subjects.len(), 0);
    }

    fn rewrite(n: u64, done: bool) -> Rewrite {
        Rewrite {
            sha256_before: format!("before-{n}"),
            bytes_before: n,
            sha256_after: format!("after-{n}"),
            rows_in: n,
            rows_removed: 1,
            done,
        }
    }

    #[test]
    fn each_change_appends_one_line_and_a_resumed_run_reads_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(dir.path(), "e");
        let journal = opened(&path);
        // A second name for the file the first save writes: appends land in it too, where
        // a journal replaced whole at each change would leave it behind.
        let witness = dir.path().join("witness");
        for n in 0..500 {
            let file = PathBuf::from(format!("/data/part-{n:04}.jsonl"));
            journal.record(&file, rewrite(n, false)).unwrap();
            if n == 0 {
                std::fs::hard_link(&path, &witness).unwrap();
            }
            journal.record(&file, rewrite(n, true)).unwrap();
        }
        assert!(
            std::fs::read(&witness).unwrap() == std::fs::read(&path).unwrap(),
            "the journal was written again whole, not appended to"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1 + 2 * 500);
        drop(journal);

        let resumed = opened(&path);
        assert!(resumed.resumed);
        let last = Path::new("/data/part-0499.jsonl");
        let got = resumed
            .earlier(last, "after-499")
            .expect("the last rewrite is known");
        assert!(got.done);
        assert_eq!(got.sha256_before, "before-499");
        assert!(resumed.earlier(last, "after-498").is_none());
        assert_eq!(resumed.lock().files.len(), 500);
    }

    #[test]
    fn a_last_line_cut_short_is_ignored_and_a_broken_line_before_it_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(dir.path(), "e");
        let journal = opened(&path);
        for n in 0..3 {
            let file = PathBuf::from(format!("/data/{n}.jsonl"));
            journal.record(&file, rewrite(n, false)).unwrap();
        }
        drop(journal);
        let whole = std::fs::read(&path).unwrap();
        // A kill during the append of the fourth record, at every byte of it.
        let fourth = {
            let mut line = serde_json::to_vec(&Entry::Rewrite {
                file: "/data/3.jsonl".into(),
                rewrite: rewrite(3, false),
            })
            .unwrap();
            line.push(b'\n');
            line
        };
        for cut in 0..fourth.len() {
            let mut bytes = whole.clone();
            bytes.extend_from_slice(&fourth[..cut]);
            std::fs::write(&path, &bytes).unwrap();
            let j = Journal::open(path.clone(), identity(), false, true)
                .unwrap_or_else(|_| panic!("cut at {cut}: the journal must resume"));
            assert_eq!(j.lock().files.len(), 3, "cut at {cut}");
            // Its first save writes the journal whole again, without the cut line, so the
            // record it saves is read back.
            j.record(Path::new("/data/9.jsonl"), rewrite(9, false))
                .unwrap();
            drop(j);
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(text.lines().count(), 5, "cut at {cut}");
            let again = opened(&path);
            assert_eq!(again.lock().files.len(), 4, "cut at {cut}");
            assert!(again
                .earlier(Path::new("/data/9.jsonl"), "after-9")
                .is_some());
        }
        // A last line that ends but does not parse was not cut by a kill: it is refused.
        let mut bytes = whole.clone();
        bytes.extend_from_slice(&fourth[..fourth.len() / 2]);
        bytes.push(b'\n');
        std::fs::write(&path, &bytes).unwrap();
        match Journal::open(path.clone(), identity(), false, true) {
            Err(Refusal::Unreadable(e)) => assert!(e.contains("line 5"), "{e}"),
            _ => panic!("a broken last line with its newline must be refused"),
        }
        // A broken line followed by others is not a cut append: the journal is unreadable.
        let mut bytes = whole.clone();
        let first_end = bytes.iter().position(|&b| b == b'\n').unwrap();
        bytes[first_end + 5] = b'#';
        std::fs::write(&path, &bytes).unwrap();
        match Journal::open(path.clone(), identity(), false, true) {
            Err(Refusal::Unreadable(e)) => assert!(e.contains("line 2"), "{e}"),
            _ => panic!("a broken line inside the journal must be refused"),
        }
        // Nor is a file that does not open with the job's identity a journal to resume.
        std::fs::write(&path, &whole[first_end + 1..]).unwrap();
        match Journal::open(path, identity(), false, true) {
            Err(Refusal::Unreadable(e)) => assert!(e.contains("identity"), "{e}"),
            _ => panic!("a journal without its identity must be refused"),
        }
    }

    #[test]
    fn a_discarded_runs_outputs_outside_the_new_root_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(dir.path(), "e");
        let old = opened(&path);
        output(&old, "/old-out/x").unwrap();
        output(&old, "/out/a").unwrap();
        drop(old);
        let new = Journal::open(path.clone(), identity(), true, true).unwrap_or_else(|_| panic!());
        assert_eq!(
            new.outputs().len(),
            2,
            "carried over from the discarded run"
        );
        assert_eq!(
            new.forget_outputs_outside(Path::new("/out")),
            [PathBuf::from("/old-out/x")]
        );
        output(&new, "/out/b").unwrap();
        drop(new);
        let resumed = opened(&path);
        assert_eq!(
            resumed.outputs(),
            [PathBuf::from("/out/a"), PathBuf::from("/out/b")]
        );
    }

    #[test]
    fn a_dry_run_takes_no_lock_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(dir.path(), "e");
        let real = opened(&path);
        let dry = Journal::open(path.clone(), identity(), false, false);
        assert!(dry.is_ok(), "a dry run runs beside a real one");
        drop((real, dry));
        std::fs::remove_file(lock_path(&path)).unwrap();
        let _dry = Journal::open(path, identity(), false, false).unwrap_or_else(|_| panic!());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    fn output(journal: &Journal, name: &str) -> std::io::Result<()> {
        journal.add_output(
            Path::new(name),
            FileId {
                ino: 1,
                born_ns: None,
            },
        )
    }

    #[test]
    fn a_journal_belongs_to_one_run_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(dir.path(), "e");
        let first = opened(&path);
        output(&first, "/out/a").unwrap();
        // A second run (a copy of the spec, say) neither resumes nor discards it.
        for discard in [false, true] {
            match Journal::open(path.clone(), identity(), discard, true) {
                Err(Refusal::Running(lock)) => {
                    assert_eq!(lock, dir.path().join(".consentry-run-e.lock"))
                }
                _ => panic!("a second run of the job must be refused"),
            }
        }
        drop(first);
        let resumed = opened(&path);
        assert!(resumed.resumed);
        assert_eq!(resumed.outputs(), [PathBuf::from("/out/a")]);
    }

    #[test]
    fn a_run_that_found_no_report_dir_stops_at_its_first_save_if_another_run_took_the_job() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path_for(&dir.path().join("reports"), "e");
        let early = opened(&path);
        let late_while_held = Journal::open(path.clone(), identity(), false, true);
        assert!(late_while_held.is_ok(), "no directory, no lock yet");
        std::fs::create_dir(dir.path().join("reports")).unwrap();
        let other = opened(&path);
        let err = output(&early, "/out/a").unwrap_err();
        assert!(err.to_string().contains("another run of job e"), "{err}");
        assert!(!path.exists(), "nothing saved");
        output(&other, "/out/b").unwrap();
        drop(other);
        // The other run is gone, but it left a journal this run never saw.
        let err = output(&early, "/out/a2").unwrap_err();
        assert!(err.to_string().contains("another run of job e"), "{err}");
        let left = opened(&path);
        assert_eq!(left.outputs(), [PathBuf::from("/out/b")]);
        left.remove().unwrap();
        // Lost for good: with the other run finished and its journal gone, this run still
        // saves nothing (it would otherwise sign for outputs it never wrote).
        let err = output(&early, "/out/a3").unwrap_err();
        assert!(err.to_string().contains("another run of job e"), "{err}");
        assert!(!path.exists());
        let discarding =
            Journal::open(path.clone(), identity(), true, true).unwrap_or_else(|_| panic!());
        output(&discarding, "/out/c").unwrap();
        output(&discarding, "/out/d").unwrap();
    }
}

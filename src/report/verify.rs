//! Checking reports as an auditor would: signature, statement, chain and output files.
//!
//! Nothing in a report is trusted before its signature verifies, except the path of the
//! public key to try when none is given (and that key's id must match the signature's).
//! Every problem found is named with the report it concerns; verification never stops at
//! the first one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::sign::{self, Verifier};
use super::{chain, PREDICATE_TYPE, STATEMENT_TYPE};

#[derive(Debug, Serialize)]
pub struct Finding {
    pub report: String,
    pub ok: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Verification {
    /// The public key was given (`--pubkey`), not taken from where the reports say it is.
    pub pinned: bool,
    /// Ids of the keys the signatures verified against.
    pub key_ids: BTreeSet<String>,
    pub reports: Vec<Finding>,
    pub chains: Vec<Finding>,
    /// The newest report of each chain checked: the digest to record as the next anchor.
    pub heads: Vec<Head>,
    /// Each `--anchor`, found in a chain or not.
    pub anchors: Vec<Finding>,
}

#[derive(Debug, Serialize)]
pub struct Head {
    pub report: String,
    pub sha256: String,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.reports
            .iter()
            .chain(&self.chains)
            .chain(&self.anchors)
            .all(|f| f.ok)
    }
}

pub struct Options<'a> {
    pub pubkey: Option<&'a Path>,
    pub chain: bool,
    pub check_files: bool,
    /// Digests of reports (lowercase hex) that a chain checked must still hold.
    pub anchors: &'a [String],
}

pub fn verify(reports: &[PathBuf], opts: &Options<'_>) -> Verification {
    let fixed = opts
        .pubkey
        .map(|p| Verifier::load(p).map_err(|e| e.to_string()));
    let mut out = Verification {
        pinned: fixed.is_some(),
        ..Verification::default()
    };
    let opened: Vec<Result<(Value, String), String>> =
        reports.iter().map(|p| open(p, fixed.as_ref())).collect();
    let latest = latest_digests(reports, &opened);
    for (path, opened) in reports.iter().zip(opened) {
        let mut problems = Vec::new();
        match opened {
            Ok((statement, key_id)) => {
                if opts.check_files {
                    check_files(path, &statement, &key_id, &latest, &mut problems);
                }
                out.key_ids.insert(key_id);
            }
            Err(e) => problems.push(e),
        }
        out.reports.push(Finding {
            report: path.display().to_string(),
            ok: problems.is_empty(),
            problems,
        });
    }
    if opts.chain {
        let dirs: BTreeSet<PathBuf> = reports
            .iter()
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
                    .to_path_buf()
            })
            .collect();
        let mut held = Vec::new();
        for dir in dirs {
            let (problems, files) = check_chain(&dir, fixed.as_ref());
            // A head is only worth recording from a chain that verified.
            if let (true, Some((report, Some(sha256)))) = (problems.is_empty(), files.last()) {
                out.heads.push(Head {
                    report: report.display().to_string(),
                    sha256: sha256.clone(),
                });
            }
            let verified = problems.is_empty();
            held.extend(files.into_iter().map(|(file, sha)| (file, sha, verified)));
            out.chains.push(Finding {
                report: dir.display().to_string(),
                ok: problems.is_empty(),
                problems,
            });
        }
        for anchor in opts.anchors {
            // A verified chain holding it wins over a failing copy (a backup, say).
            let holds = |(_, sha, _): &&(PathBuf, Option<String>, bool)| {
                sha.as_deref() == Some(anchor.as_str())
            };
            let found = held
                .iter()
                .filter(holds)
                .find(|(_, _, verified)| *verified)
                .or_else(|| held.iter().find(holds));
            out.anchors.push(match found {
                // Held by a chain that verifies: no report up to the anchored one is gone.
                Some((file, _, verified)) => Finding {
                    report: format!("{anchor} is {}", file.display()),
                    ok: *verified,
                    problems: match verified {
                        true => Vec::new(),
                        false => vec!["the chain holding it does not verify".into()],
                    },
                },
                None => Finding {
                    report: anchor.clone(),
                    ok: false,
                    problems: vec![
                        "no report of the chains checked has this sha256: a report up to the anchored one \
                         was removed or replaced (or the anchor is of another report directory)"
                            .into(),
                    ],
                },
            });
        }
    }
    out
}

/// Reports are small; a larger file is not one (and is not read into memory).
const MAX_REPORT: u64 = 256 << 20;

/// A report file's bytes: a regular file (a FIFO or a device would block or never end)
/// of at most `MAX_REPORT` bytes.
fn read_report(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_REPORT + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > MAX_REPORT {
        return Err(format!(
            "larger than {} MiB: not a report",
            MAX_REPORT >> 20
        ));
    }
    Ok(bytes)
}

/// Verifies one report's signature and returns its statement and the key id it verified with.
fn open(path: &Path, fixed: Option<&Result<Verifier, String>>) -> Result<(Value, String), String> {
    let bytes = read_report(path)?;
    let verifier = match fixed {
        Some(Ok(v)) => v.clone(),
        Some(Err(e)) => return Err(e.clone()),
        None => Verifier::load(&named_public_key(&bytes)?).map_err(|e| e.to_string())?,
    };
    let payload =
        sign::verify_envelope(&bytes, &verifier).map_err(|e| format!("signature: {e}"))?;
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| format!("signed payload is not JSON: {e}"))?;
    if statement["_type"] != STATEMENT_TYPE {
        return Err(format!(
            "signed payload is not an in-toto Statement v1 ({STATEMENT_TYPE})"
        ));
    }
    if statement["predicateType"] != PREDICATE_TYPE {
        return Err(format!("predicateType is not {PREDICATE_TYPE}"));
    }
    Ok((statement, verifier.key_id().to_string()))
}

/// The public key a report names (read before verification, only to choose the key).
fn named_public_key(envelope: &[u8]) -> Result<PathBuf, String> {
    let statement = super::read_unverified(envelope)?;
    match statement["predicate"]["signing"]["public_key"].as_str() {
        Some(p) => Ok(PathBuf::from(p)),
        None => Err("the report names no public key; pass --pubkey".into()),
    }
}

/// An output file as a report names it: where it is, and the digest signed for it.
fn outputs(statement: &Value) -> impl Iterator<Item = (String, PathBuf, String)> + '_ {
    let base = statement["predicate"]["job"]["base_dir"]
        .as_str()
        .map(PathBuf::from)
        .unwrap_or_default();
    statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .map(move |subject| {
            let name = subject["name"].as_str().unwrap_or_default().to_string();
            let want = subject["digest"]["sha256"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let file = crate::job::lexical_normalize(&base.join(&name));
            (name, file, want)
        })
}

/// Where a report is in its chain: its directory and signed sequence number.
fn place(path: &Path, statement: &Value) -> Option<(PathBuf, u64)> {
    let dir = std::fs::canonicalize(path).ok()?.parent()?.to_path_buf();
    Some((dir, statement["predicate"]["chain"]["sequence"].as_u64()?))
}

/// Per output file, the latest report among `reports` that signed a digest for it (by
/// signed sequence, within one report directory, with its key id): an erase job that
/// rewrites a filter job's outputs signs their new digests, and the older report's are then
/// superseded, not broken. Only a report signed by the same key supersedes.
type Latest = std::collections::HashMap<PathBuf, (PathBuf, u64, String, String, String)>;

fn latest_digests(reports: &[PathBuf], opened: &[Result<(Value, String), String>]) -> Latest {
    let mut latest = Latest::new();
    for (path, opened) in reports.iter().zip(opened) {
        let Ok((statement, key)) = opened else {
            continue;
        };
        let Some((dir, seq)) = place(path, statement) else {
            continue;
        };
        let report = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (_, file, want) in outputs(statement) {
            let newer = latest
                .get(&file)
                .is_none_or(|(d, s, _, _, k)| *d == dir && *s < seq && k == key);
            if newer {
                latest.insert(file, (dir.clone(), seq, want, report.clone(), key.clone()));
            }
        }
    }
    latest
}

fn check_files(
    path: &Path,
    statement: &Value,
    key: &str,
    latest: &Latest,
    problems: &mut Vec<String>,
) {
    let here = place(path, statement);
    for (name, file, want) in outputs(statement) {
        // A later report of the same chain and key that signed this file says what it holds
        // now.
        let (want, by) = match (latest.get(&file), &here) {
            (Some((dir, seq, sha, report, k)), Some((d, s))) if dir == d && seq > s && k == key => {
                (sha.clone(), Some(report.clone()))
            }
            _ => (want, None),
        };
        if !std::fs::metadata(&file).is_ok_and(|m| m.is_file()) {
            problems.push(format!("output {name} is missing or not a regular file"));
            continue;
        }
        match crate::dataset::sha256_file(&file) {
            Ok((got, _)) if got == want => {}
            Ok(_) => problems.push(match by {
                Some(r) => format!(
                    "output {name} changed since {r}, the latest report to sign it (sha256 differs)"
                ),
                None => {
                    format!("output {name} changed since the report was signed (sha256 differs)")
                }
            }),
            Err(e) => problems.push(format!("output {name} cannot be read: {e}")),
        }
    }
}

/// Checks that the report files of `dir` form one chain: sequences 1, 2, 3… matching their
/// file names, each naming the sha256 of the file before it.
/// The problems of the chain of `dir`, and its report files in order with their sha256
/// (none where a file could not be read).
fn check_chain(
    dir: &Path,
    fixed: Option<&Result<Verifier, String>>,
) -> (Vec<String>, Vec<(PathBuf, Option<String>)>) {
    let mut problems = Vec::new();
    let files = match chain::list(dir) {
        Ok(f) => f,
        Err(e) => return (vec![e.to_string()], Vec::new()),
    };
    let mut digests = Vec::new();
    if files.is_empty() {
        problems.push("no report files".into());
    }
    let mut previous: Option<(String, String)> = None;
    let mut first_key: Option<(String, String)> = None;
    for (i, file) in files.iter().enumerate() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = i as u64 + 1;
        let sha = chain::sha256_file(file);
        digests.push((file.clone(), sha.as_ref().ok().cloned()));
        let statement = match open(file, fixed) {
            Ok((s, key_id)) => {
                match &first_key {
                    None => first_key = Some((name.clone(), key_id)),
                    Some((first, k)) if *k != key_id => problems.push(format!(
                        "{name}: signed by key {key_id}, but {first} by key {k}: a chain is signed by one key \
                         (verify each key's reports with --pubkey)"
                    )),
                    Some(_) => {}
                }
                s
            }
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                previous = sha.ok().map(|s| (name, s));
                continue;
            }
        };
        let link = &statement["predicate"]["chain"];
        let sequence = link["sequence"].as_u64();
        if sequence != Some(expected) {
            problems.push(format!(
                "{name}: sequence {} where {expected} was expected (a report is missing, duplicated or reordered)",
                sequence.map_or("missing".into(), |s| s.to_string())
            ));
        }
        if chain::sequence_of(&name) != sequence {
            problems.push(format!(
                "{name}: file name does not match its signed sequence number"
            ));
        }
        let prev_claimed = link["previous_sha256"].as_str();
        match (&previous, prev_claimed) {
            (None, None) => {}
            (None, Some(_)) => problems.push(format!(
                "{name}: names a previous report, but it is the first in the directory"
            )),
            (Some((pname, _)), None) => problems.push(format!(
                "{name}: names no previous report, but {pname} comes before it"
            )),
            (Some((pname, psha)), Some(claimed)) if claimed != psha => problems.push(format!(
                "{name}: previous_sha256 does not match {pname} (altered, removed or replaced)"
            )),
            _ => {}
        }
        match sha {
            Ok(sha) => previous = Some((name, sha)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (problems, digests)
}

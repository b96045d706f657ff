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
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.reports.iter().chain(&self.chains).all(|f| f.ok)
    }
}

pub struct Options<'a> {
    pub pubkey: Option<&'a Path>,
    pub chain: bool,
    pub check_files: bool,
}

pub fn verify(reports: &[PathBuf], opts: &Options<'_>) -> Verification {
    let fixed = opts
        .pubkey
        .map(|p| Verifier::load(p).map_err(|e| e.to_string()));
    let mut out = Verification {
        pinned: fixed.is_some(),
        ..Verification::default()
    };
    for path in reports {
        let mut problems = Vec::new();
        match check_one(path, fixed.as_ref(), opts.check_files, &mut problems) {
            Ok(key_id) => {
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
        for dir in dirs {
            let problems = check_chain(&dir, fixed.as_ref());
            out.chains.push(Finding {
                report: dir.display().to_string(),
                ok: problems.is_empty(),
                problems,
            });
        }
    }
    out
}

/// Verifies one report's signature and returns its statement and the key id it verified with.
fn open(path: &Path, fixed: Option<&Result<Verifier, String>>) -> Result<(Value, String), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
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

fn check_one(
    path: &Path,
    fixed: Option<&Result<Verifier, String>>,
    check_files: bool,
    problems: &mut Vec<String>,
) -> Result<String, String> {
    let (statement, key_id) = open(path, fixed)?;
    if check_files {
        let base = statement["predicate"]["job"]["base_dir"]
            .as_str()
            .map(PathBuf::from)
            .unwrap_or_default();
        for subject in statement["subject"].as_array().into_iter().flatten() {
            let name = subject["name"].as_str().unwrap_or_default();
            let want = subject["digest"]["sha256"].as_str().unwrap_or_default();
            let file = base.join(name);
            match chain::sha256_file(&file) {
                Ok(got) if got == want => {}
                Ok(_) => problems.push(format!(
                    "output {name} changed since the report was signed (sha256 differs)"
                )),
                Err(e) => problems.push(format!("output {name}: {e}")),
            }
        }
    }
    Ok(key_id)
}

/// Checks that the report files of `dir` form one chain: sequences 1, 2, 3… matching their
/// file names, each naming the sha256 of the file before it.
fn check_chain(dir: &Path, fixed: Option<&Result<Verifier, String>>) -> Vec<String> {
    let mut problems = Vec::new();
    let files = match chain::list(dir) {
        Ok(f) => f,
        Err(e) => return vec![e.to_string()],
    };
    if files.is_empty() {
        problems.push("no report files".into());
    }
    let mut previous: Option<(String, String)> = None;
    for (i, file) in files.iter().enumerate() {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = i as u64 + 1;
        let statement = match open(file, fixed) {
            Ok((s, _)) => s,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                previous = chain::sha256_file(file).ok().map(|s| (name, s));
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
        match chain::sha256_file(file) {
            Ok(sha) => previous = Some((name, sha)),
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems
}

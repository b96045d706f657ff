//! The chain of signed reports in one report directory.
//!
//! Report files are named `<sequence, 8 digits>-<job name>.dsse.json`, so their names sort in
//! chain order. Each report's predicate carries its sequence number and the sha256 of the
//! previous report file; appending holds an exclusive lock on `.consentry.lock` in the
//! directory from reading the last report to renaming the new one into place, so two jobs
//! writing at once cannot fork the chain.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Chain;
use crate::dataset::write::{AtomicFile, Replace};
use crate::error::{Error, IoContext, Result};

const LOCK_FILE: &str = ".consentry.lock";
const SUFFIX: &str = ".dsse.json";

/// The sequence number a report file name carries, if it is a report file name.
pub fn sequence_of(name: &str) -> Option<u64> {
    let (digits, rest) = name.split_at_checked(8)?;
    let valid = digits.bytes().all(|b| b.is_ascii_digit())
        && rest.starts_with('-')
        && rest.ends_with(SUFFIX);
    valid.then(|| digits.parse().ok()).flatten()
}

/// Report files of a directory in name (= chain) order. An entry with a report's name that
/// is not a regular file (a FIFO, a device, a link to one) is an error: reading it would
/// block or never end.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).at("cannot read report directory", dir)? {
        let entry = entry.at("cannot read report directory", dir)?;
        if sequence_of(&entry.file_name().to_string_lossy()).is_some() {
            let path = entry.path();
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                return Err(Error::Input {
                    path,
                    message: "has a report's name but is not a regular file".into(),
                });
            }
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Checks, before a job does any work, that its report can join the chain of `dir`: the
/// directory is one (or is yet to be made), every entry with a report's name is a regular
/// file, and the last report can be opened. Found at the end instead, each of these would
/// fail a job that had already changed files.
pub fn check_appendable(dir: &Path) -> Result<()> {
    match std::fs::metadata(dir) {
        // A dangling symlink cannot be made into a directory: only a path with nothing
        // there at all is one still to be made.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.symlink_metadata().is_err() => {
            return Ok(())
        }
        Err(e) => return Err(Error::io("cannot read report directory", dir, e)),
        Ok(m) if !m.is_dir() => {
            return Err(Error::Input {
                path: dir.to_path_buf(),
                message: "is the report directory, but not a directory".into(),
            })
        }
        Ok(_) => {}
    }
    if let Some(last) = list(dir)?.last() {
        File::open(last).at("cannot read report", last)?;
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Err(Error::Input {
            path: path.to_path_buf(),
            message: "is not a regular file".into(),
        });
    }
    crate::dataset::sha256_file(path)
        .map(|(sha, _)| sha)
        .at("cannot read report", path)
}

/// Appends a report to the chain of `dir`: `build` gets the chain link and returns the
/// bytes of the signed report. Returns the new file's path and sha256.
pub fn append(
    dir: &Path,
    job_name: &str,
    build: impl FnOnce(&Chain) -> Result<Vec<u8>>,
) -> Result<(PathBuf, String)> {
    locked(dir, || append_locked(dir, job_name, build))
}

/// Runs `work` holding the exclusive lock of report directory `dir` (created if missing).
/// Everything that writes into a report directory does so under this lock, so a run may
/// sweep the temporary files a killed run left there without touching another's.
pub fn locked<T>(dir: &Path, work: impl FnOnce() -> Result<T>) -> Result<T> {
    std::fs::create_dir_all(dir).at("cannot create report directory", dir)?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at("cannot open report lock", &lock_path)?;
    lock.lock().at("cannot lock report directory", dir)?;
    let result = work();
    let _ = File::unlock(&lock);
    result
}

fn append_locked(
    dir: &Path,
    job_name: &str,
    build: impl FnOnce(&Chain) -> Result<Vec<u8>>,
) -> Result<(PathBuf, String)> {
    crate::dataset::write::sweep_temp_files(dir).at("cannot clean report directory", dir)?;
    let existing = list(dir)?;
    let chain = match existing.last() {
        None => Chain {
            sequence: 1,
            previous_sha256: None,
        },
        Some(last) => {
            let name = last
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let sequence = sequence_of(&name).unwrap_or(0) + 1;
            Chain {
                sequence,
                previous_sha256: Some(sha256_file(last)?),
            }
        }
    };
    let bytes = build(&chain)?;
    let path = dir.join(format!("{:08}-{job_name}{SUFFIX}", chain.sequence));
    let mut file = AtomicFile::create(&path, 0o644).at("cannot create report", &path)?;
    file.write_all(&bytes).at("cannot write report", &path)?;
    let written = file.commit(Replace::Never).map_err(|e| Error::Report {
        path: path.clone(),
        message: format!("cannot write: {e}"),
    })?;
    Ok((written.path, written.sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_chain_order() {
        assert_eq!(sequence_of("00000001-job.dsse.json"), Some(1));
        assert_eq!(sequence_of("00000012-a-b.c.dsse.json"), Some(12));
        assert_eq!(sequence_of("0000001-job.dsse.json"), None);
        assert_eq!(sequence_of("00000001-job.json"), None);
        assert_eq!(sequence_of(".consentry.lock"), None);
    }

    #[test]
    fn appends_link_each_report_to_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_sha) = append(dir.path(), "j", |c| {
            assert_eq!(
                c,
                &Chain {
                    sequence: 1,
                    previous_sha256: None
                }
            );
            Ok(b"one".to_vec())
        })
        .unwrap();
        let (second, _) = append(dir.path(), "j", |c| {
            assert_eq!(
                c,
                &Chain {
                    sequence: 2,
                    previous_sha256: Some(first_sha.clone())
                }
            );
            Ok(b"two".to_vec())
        })
        .unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![first, second]);
    }
}

//! Embedding caches laid out one entry per subject: remove the erased subjects' entries.
//!
//! The cache root is opened once and every operation is relative to it (cap-std), so no
//! symlink, `..` or absolute name can lead outside it. Entries are found by listing the root
//! and matching names against the erased set, never by building a path from a subject id;
//! ids that could not name an entry safely (empty, `.`, `..`, a path separator, NUL or a
//! control character) are counted by the caller and never looked up.

use std::path::Path;

use cap_std::ambient_authority;
use cap_std::fs::Dir;
use serde::Serialize;

use super::erase::Erased;
use crate::job::Layout;

/// What a sweep of one cache root did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CacheSweep {
    /// Entries removed (a `dir-per-subject` directory counts once).
    pub entries_removed: u64,
    /// Erased subjects with an entry here.
    pub subjects_found: u64,
    /// Entries that could not be removed, with the reason; no subject id is named.
    pub failures: Vec<String>,
}

/// Whether `id` can be compared with a directory entry name at all.
pub fn names_an_entry(id: &str) -> bool {
    !(id.is_empty()
        || id == "."
        || id == ".."
        || id.contains('/')
        || id.chars().any(char::is_control))
}

/// The subject an entry name stands for under `layout`: the whole name for
/// `dir-per-subject`; for `file-per-subject` the whole name when it is itself an erased id
/// (`john.doe`), else the name without its last extension (`john.doe.npy`).
fn subject_of<'n>(name: &'n str, layout: Layout, erased: &Erased) -> Option<&'n str> {
    if erased.contains(name) {
        return Some(name);
    }
    match layout {
        Layout::FilePerSubject => name
            .rsplit_once('.')
            .map(|(stem, _)| stem)
            .filter(|s| erased.contains(s)),
        _ => None,
    }
}

/// An entry of an erased subject found under a cache root. (No `Debug`: it holds an id.)
pub struct Found {
    /// Its name in the root.
    pub name: String,
    /// The erased subject it belongs to.
    pub subject: String,
    is_dir: bool,
}

/// Removes (or, with `dry_run`, counts) the entries of erased subjects under `root`.
///
/// `plan` sees every entry found before the first is removed (an erase job journals them,
/// so that a run killed part-way through the sweep knows on its re-run what it had removed),
/// and the sweep stops if it fails.
pub fn sweep(
    root: &Path,
    layout: Layout,
    erased: &Erased,
    dry_run: bool,
    plan: &mut dyn FnMut(&[Found]) -> Result<(), String>,
) -> Result<CacheSweep, String> {
    let dir = Dir::open_ambient_dir(root, ambient_authority())
        .map_err(|e| format!("cannot open cache root: {e}"))?;
    let found = find(&dir, layout, erased)?;
    let subjects: std::collections::HashSet<&str> =
        found.iter().map(|f| f.subject.as_str()).collect();
    let mut out = CacheSweep {
        subjects_found: subjects.len() as u64,
        ..CacheSweep::default()
    };
    plan(&found)?;
    if dry_run {
        out.entries_removed = found.len() as u64;
        return Ok(out);
    }
    for entry in &found {
        // `file_type` does not follow symlinks: a symlink is removed itself, never its target.
        let removed = match entry.is_dir {
            true => dir.remove_dir_all(&entry.name),
            false => dir.remove_file(&entry.name),
        };
        match removed {
            Ok(()) => out.entries_removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out
                .failures
                .push(format!("an entry could not be removed: {e}")),
        }
    }
    if out.entries_removed > 0 {
        crate::dataset::write::sync_dir(root)
            .map_err(|e| format!("cannot sync cache root: {e}"))?;
    }
    Ok(out)
}

/// The root's own entries that belong to erased subjects, in listing order.
fn find(dir: &Dir, layout: Layout, erased: &Erased) -> Result<Vec<Found>, String> {
    let mut found = Vec::new();
    let entries = dir
        .entries()
        .map_err(|e| format!("cannot list cache root: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list cache root: {e}"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(subject) = subject_of(name, layout, erased) else {
            continue;
        };
        let kind = entry
            .file_type()
            .map_err(|e| format!("cannot inspect a cache entry: {e}"))?;
        if layout == Layout::FilePerSubject && kind.is_dir() {
            continue;
        }
        found.push(Found {
            name: name.to_string(),
            subject: subject.to_string(),
            is_dir: kind.is_dir(),
        });
    }
    Ok(found)
}

/// Counts the entries of erased subjects still under `root` (the verification pass).
pub fn residual(root: &Path, layout: Layout, erased: &Erased) -> Result<u64, String> {
    sweep(root, layout, erased, true, &mut |_| Ok(())).map(|s| s.entries_removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erased(ids: &[&str]) -> Erased {
        let mut e = Erased::default();
        for id in ids {
            e.insert(id).unwrap();
        }
        e
    }

    fn names(root: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn the_plan_sees_every_entry_before_any_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["alice.npy", "alice.txt", "bob.npy", "carol.npy"] {
            std::fs::write(dir.path().join(name), name).unwrap();
        }
        let ids = erased(&["alice", "carol", "dave"]);
        let mut seen = Vec::new();
        let swept = sweep(
            dir.path(),
            Layout::FilePerSubject,
            &ids,
            false,
            &mut |found| {
                seen = found
                    .iter()
                    .map(|f| (f.name.clone(), f.subject.clone()))
                    .collect();
                assert_eq!(names(dir.path()).len(), 4, "nothing removed yet");
                Ok(())
            },
        )
        .unwrap();
        seen.sort();
        let pair = |n: &str, s: &str| (n.to_string(), s.to_string());
        assert_eq!(
            seen,
            [
                pair("alice.npy", "alice"),
                pair("alice.txt", "alice"),
                pair("carol.npy", "carol")
            ]
        );
        assert_eq!((swept.entries_removed, swept.subjects_found), (3, 2));
        assert_eq!(names(dir.path()), ["bob.npy"]);
    }

    #[test]
    fn a_plan_that_cannot_be_recorded_removes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("alice")).unwrap();
        std::fs::write(dir.path().join("alice/v.npy"), "a").unwrap();
        let ids = erased(&["alice"]);
        let err = sweep(dir.path(), Layout::DirPerSubject, &ids, false, &mut |_| {
            Err("cannot update the journal: disk full".into())
        })
        .unwrap_err();
        assert!(err.contains("journal"), "{err}");
        assert_eq!(names(dir.path()), ["alice"]);
        assert!(dir.path().join("alice/v.npy").exists());
    }
}

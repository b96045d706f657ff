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

/// Removes (or, with `dry_run`, counts) the entries of erased subjects under `root`.
pub fn sweep(
    root: &Path,
    layout: Layout,
    erased: &Erased,
    dry_run: bool,
) -> Result<CacheSweep, String> {
    let dir = Dir::open_ambient_dir(root, ambient_authority())
        .map_err(|e| format!("cannot open cache root: {e}"))?;
    let mut out = CacheSweep::default();
    let mut found = std::collections::HashSet::new();
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
        found.insert(subject.to_string());
        if dry_run {
            out.entries_removed += 1;
            continue;
        }
        // `file_type` does not follow symlinks: a symlink is removed itself, never its target.
        let removed = if kind.is_dir() {
            dir.remove_dir_all(name)
        } else {
            dir.remove_file(name)
        };
        match removed {
            Ok(()) => out.entries_removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => out
                .failures
                .push(format!("an entry could not be removed: {e}")),
        }
    }
    out.subjects_found = found.len() as u64;
    if !dry_run && out.entries_removed > 0 {
        crate::dataset::write::sync_dir(root)
            .map_err(|e| format!("cannot sync cache root: {e}"))?;
    }
    Ok(out)
}

/// Counts the entries of erased subjects still under `root` (the verification pass).
pub fn residual(root: &Path, layout: Layout, erased: &Erased) -> Result<u64, String> {
    sweep(root, layout, erased, true).map(|s| s.entries_removed)
}

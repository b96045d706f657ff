//! Datasets: finding the input files and every reader and writer of their bytes.
//!
//! Discovery walks the input paths without following symlinks (they are counted and
//! reported), applies the include/exclude globs to each file's path relative to its input
//! root, and returns files in a stable order. This is the one module that opens dataset
//! files; operations in `ops` get readers and writers from here.

pub mod digest;
pub mod jsonl;
pub mod pages;
pub mod parquet;
pub mod scan;
pub mod write;

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::InputSpec;

/// The sha256 (lowercase hex) and size of a file, read whole in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = digest::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.hex(), bytes));
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
}

/// Prefix of every temporary file consentry writes; discovery never treats one as input.
pub const TEMP_PREFIX: &str = ".consentry-";

/// Random characters between `TEMP_PREFIX` and `.tmp` in a temporary file's name.
pub const TEMP_RANDOM: usize = 6;

/// Whether `name` is one of consentry's own temporary files (`.consentry-XXXXXX.tmp`), which
/// discovery skips and a new run removes as left by a killed one. Nothing else is: a user's
/// `.consentry-notes.jsonl` is read like any dataset and never removed.
pub fn is_temp_name(name: &str) -> bool {
    name.strip_prefix(TEMP_PREFIX)
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .is_some_and(|r| r.len() == TEMP_RANDOM && r.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl(Codec),
    Parquet,
}

impl Format {
    /// Recognises a dataset by its file name; `None` for anything else.
    pub fn of(name: &str) -> Option<Format> {
        let lower = name.to_ascii_lowercase();
        for stem in [".jsonl", ".ndjson"] {
            for (suffix, codec) in [
                ("", Codec::None),
                (".gz", Codec::Gzip),
                (".zst", Codec::Zstd),
                (".zstd", Codec::Zstd),
            ] {
                if lower.ends_with(&format!("{stem}{suffix}")) {
                    return Some(Format::Jsonl(codec));
                }
            }
        }
        lower.ends_with(".parquet").then_some(Format::Parquet)
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl(Codec::None) => "jsonl",
            Format::Jsonl(Codec::Gzip) => "jsonl.gz",
            Format::Jsonl(Codec::Zstd) => "jsonl.zst",
            Format::Parquet => "parquet",
        }
    }
}

/// One dataset file to process.
#[derive(Debug, Clone)]
pub struct InputFile {
    pub path: PathBuf,
    /// Path below the mirroring root, used for output paths and in reports.
    pub rel: PathBuf,
    pub format: Option<Format>,
    pub bytes: u64,
}

/// What discovery found, including what it would not read.
#[derive(Debug, Default)]
pub struct Discovery {
    pub files: Vec<InputFile>,
    /// Symlinks met during the walk and not followed.
    pub symlinks: Vec<PathBuf>,
    /// Paths that could not be read (an unreadable directory, a vanished file).
    pub unreadable: Vec<(PathBuf, String)>,
    /// The directory every `rel` is relative to.
    pub root: PathBuf,
}

/// Walks every input path. A missing input path is an error (the spec is wrong); an
/// unreadable directory below one is recorded and the walk goes on.
pub fn discover(spec: &InputSpec) -> Result<Discovery> {
    let include = globs(&spec.include)?;
    let exclude = globs(&spec.exclude)?;
    let mut found = Discovery {
        root: mirror_root(&spec.paths),
        ..Discovery::default()
    };
    for named in &spec.paths {
        let meta =
            std::fs::metadata(named).map_err(|e| Error::io("cannot read input path", named, e))?;
        // A file named in the spec through a symlink is read, and rewritten in place, at its
        // real location: replacing the link would leave the rows in its target.
        let real;
        let input = match (
            meta.is_file(),
            named.symlink_metadata().map(|m| m.file_type().is_symlink()),
        ) {
            (true, Ok(true)) => {
                real = named
                    .canonicalize()
                    .map_err(|e| Error::io("cannot resolve input path", named, e))?;
                &real
            }
            _ => named,
        };
        if meta.is_file() {
            let rel = named.strip_prefix(&found.root).map_or_else(
                |_| PathBuf::from(named.file_name().unwrap_or_default()),
                Path::to_path_buf,
            );
            let name = named
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            found.files.push(InputFile {
                path: input.clone(),
                rel,
                format: Format::of(name),
                bytes: meta.len(),
            });
            continue;
        }
        let walk = walkdir::WalkDir::new(input)
            .follow_links(false)
            .sort_by_file_name();
        for entry in walk {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e.path().unwrap_or(input).to_path_buf();
                    let reason = e
                        .io_error()
                        .map_or_else(|| e.to_string(), |io| io.to_string());
                    found.unreadable.push((path, reason));
                    continue;
                }
            };
            let path = entry.path();
            if entry.path_is_symlink() {
                found.symlinks.push(path.to_path_buf());
                continue;
            }
            if !entry.file_type().is_file() {
                continue;
            }
            let name = entry.file_name().to_string_lossy();
            if is_temp_name(&name) {
                continue;
            }
            let below_input = path.strip_prefix(input).unwrap_or(path);
            let key = below_input.to_string_lossy().replace('\\', "/");
            if !include.is_match(&key) || exclude.is_match(&key) {
                continue;
            }
            let bytes = match entry.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    found.unreadable.push((path.to_path_buf(), e.to_string()));
                    continue;
                }
            };
            let rel = path.strip_prefix(&found.root).unwrap_or(path).to_path_buf();
            found.files.push(InputFile {
                path: path.to_path_buf(),
                rel,
                format: Format::of(&name),
                bytes,
            });
        }
    }
    found
        .files
        .sort_by(|a, b| a.rel.cmp(&b.rel).then(a.path.cmp(&b.path)));
    found.files.dedup_by(|a, b| a.path == b.path);
    Ok(found)
}

fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut builder = GlobSetBuilder::new();
    for p in patterns {
        builder.add(Glob::new(p).map_err(|e| Error::Usage(format!("pattern {p:?}: {e}")))?);
    }
    builder.build().map_err(|e| Error::Usage(e.to_string()))
}

/// The directory outputs mirror: a single input directory itself, otherwise the deepest
/// directory holding every input (a file input counts as its parent directory).
pub fn mirror_root(paths: &[PathBuf]) -> PathBuf {
    let dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| {
            if p.is_dir() {
                p.clone()
            } else {
                p.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        })
        .collect();
    let Some(first) = dirs.first() else {
        return PathBuf::new();
    };
    let mut root = first.clone();
    for d in &dirs[1..] {
        while !d.starts_with(&root) {
            if !root.pop() {
                return PathBuf::from("/");
            }
        }
    }
    root
}

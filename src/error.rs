//! The one error type of the library.
//!
//! Every variant names the file it concerns. Errors that stop a job before it changes
//! anything (a bad spec, snapshot or key) map to exit code 2; a file that fails while a
//! job runs is not an `Error` at all but a failed outcome in the report (see `report`).
//! No message ever carries a raw subject id.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read job spec {path}")]
    JobRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("job spec {path}: {message}")]
    JobSpec { path: PathBuf, message: String },

    #[error("consent snapshot {path}: {message}")]
    Snapshot { path: PathBuf, message: String },

    #[error("consent snapshot {path}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    #[error("key {path}: {message}")]
    Key { path: PathBuf, message: String },

    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },

    #[error("output {path}: {message}")]
    Output { path: PathBuf, message: String },

    #[error("{context} {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("report {path}: {message}")]
    Report { path: PathBuf, message: String },

    #[error("{0}")]
    Usage(String),

    /// An error after the job had changed files: not the "nothing was changed" of exit 2.
    #[error("{0} (files had already been written; see the outputs and reports)")]
    Late(Box<Error>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(context: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Io {
            context,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn spec(path: &Path, message: impl Into<String>) -> Error {
        Error::JobSpec {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }

    /// Marks an error that happened after the job changed files.
    pub fn late(self) -> Error {
        match self {
            Error::Late(_) => self,
            other => Error::Late(Box::new(other)),
        }
    }

    pub fn snapshot(path: &Path, message: impl Into<String>) -> Error {
        Error::Snapshot {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

/// Adds the path an I/O call concerned, so no `io::Error` reaches the user without one.
pub trait IoContext<T> {
    fn at(self, context: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, context: &'static str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(context, path, e))
    }
}

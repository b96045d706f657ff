//! consentry: keeps ML training data lawful.
//!
//! It judges a consent snapshot for a purpose at an instant (`consent`), streams JSONL and
//! Parquet datasets keeping only rows whose subject holds valid consent or sweeping erased
//! subjects out of datasets and embedding caches in place (`dataset`, `ops`), runs files in
//! parallel (`exec`) and signs a chained audit report of every job (`report`).
//! `run` is the entry point; `main.rs` only turns its result into an exit code.

pub mod cli;
pub mod commands;
pub mod consent;
pub mod dataset;
pub mod error;
pub mod exec;
pub mod job;
pub mod memory;
pub mod ops;
pub mod report;
pub mod run;
#[cfg(test)]
mod testing;
pub mod time;

use cli::{Cli, Command, ConsentCommand, ReportCommand};
pub use error::{Error, Result};

/// How the process ends (CONTRACT §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Exit {
    /// The job ran and everything was processed.
    Ok = 0,
    /// The job ran but something failed or could not be checked.
    Partial = 1,
    /// Bad invocation, job spec, snapshot or key; nothing was changed.
    Invalid = 2,
    /// Verification failed.
    VerifyFailed = 3,
}

impl Error {
    /// Errors that reach the top stopped the command before it changed anything, except
    /// those raised while writing a report, after outputs were written.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Report { .. } | Error::Late(_) => Exit::Partial,
            _ => Exit::Invalid,
        }
    }
}

pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Verify(args) => commands::verify(&args),
        Command::Keygen(args) => commands::keygen(&args),
        Command::Consent(ConsentCommand::Check(args)) => commands::consent_check(&args),
        Command::Consent(ConsentCommand::Inspect(args)) => commands::consent_inspect(&args),
        Command::Report(ReportCommand::Show(args)) => commands::report_show(&args),
    }
}

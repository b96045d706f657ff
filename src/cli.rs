//! Command-line flags, parsed by clap into plain structs. No logic lives here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Keep ML training data lawful: filter datasets by consent, sweep erased subjects out of
/// datasets and embedding caches, and sign an audit report for every job.
#[derive(Debug, Parser)]
#[command(name = "consentry", version, about, long_about = None)]
#[command(after_help = "\
Exit codes:
  0  the job ran and everything was processed
  1  the job ran but something failed or could not be checked (report status `partial`)
  2  bad invocation, job spec, snapshot or key: nothing was changed
  3  verification failed

Start with `consentry run jobs/demo-filter.toml` in a checkout of the repository.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a filter or erase job described by a TOML job spec.
    Run(RunArgs),
    /// Verify signed job reports (signature, and optionally the chain and output files).
    Verify(VerifyArgs),
    /// Create a signing key pair and a pseudonym key in a new directory.
    Keygen(KeygenArgs),
    /// Ask a consent snapshot about one subject, or summarise it.
    #[command(subcommand)]
    Consent(ConsentCommand),
    /// Show a signed report for a human, on the terminal or as one HTML page.
    #[command(subcommand)]
    Report(ReportCommand),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The job spec (TOML). Relative paths inside it resolve against its directory.
    pub job: PathBuf,
    /// Judge every row and print what would happen, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: one per core).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Print no progress on stderr.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the summary as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Start afresh although an interrupted run of this job left a journal made with a
    /// different spec, subject list or snapshot (its progress is then not reported). A
    /// filter job first removes the outputs the interrupted run had started below [output]
    /// dir, unless that run had signed its report.
    #[arg(long)]
    pub discard_journal: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Report files (DSSE envelopes) to verify.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Public key (SPKI PEM) to verify against. Default: `signing.pub` beside the
    /// signing key named in each report.
    #[arg(long, value_name = "PUB.pem")]
    pub pubkey: Option<PathBuf>,
    /// Also check that the reports of each report directory form one unbroken chain, and
    /// print the sha256 of each chain's newest report (its head).
    #[arg(long)]
    pub chain: bool,
    /// A report's sha256 recorded earlier (a chain head printed by `verify --chain`, or a
    /// job's `report sha256`): the chain must still hold that report, which proves no report
    /// up to it was removed or replaced. Repeatable. Nothing can show that reports newer
    /// than the newest anchor were not removed: record each head where the report directory's
    /// writers cannot reach.
    #[arg(long, value_name = "SHA256", requires = "chain")]
    pub anchor: Vec<String>,
    /// Also re-hash every output file a report lists and compare with the signed digest.
    #[arg(long)]
    pub check_files: bool,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Directory to create the keys in (created if missing; existing keys are never overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum ConsentCommand {
    /// Is one subject's consent for a purpose valid at an instant? Exit 0 valid, 1 not valid.
    Check(CheckArgs),
    /// Summarise a snapshot: schema, sha256, records and subjects per purpose and status.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The consent snapshot (SQLite file, opened read-only).
    #[arg(long, value_name = "DB")]
    pub snapshot: PathBuf,
    /// Snapshot schema: consent-records or dpdp-cmp (default: detected from the tables).
    #[arg(long, value_name = "S")]
    pub schema: Option<String>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// The subject id to look up, exactly as datasets hold it.
    #[arg(long, value_name = "ID")]
    pub subject: String,
    /// The purpose to judge consent for.
    #[arg(long, value_name = "P")]
    pub purpose: String,
    /// The instant to judge at (ISO-8601, or Unix seconds). Default: now.
    #[arg(long, value_name = "T")]
    pub as_of: Option<String>,
    /// Print the answer as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub snapshot: SnapshotArgs,
    /// Also count how many subjects hold valid consent for this purpose, and why the rest do not.
    #[arg(long, value_name = "P")]
    pub purpose: Option<String>,
    /// The instant to judge at with --purpose (default: now).
    #[arg(long, value_name = "T", requires = "purpose")]
    pub as_of: Option<String>,
    /// Print the summary as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Print what an auditor needs from one report on one screen.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The report file (DSSE envelope).
    pub report: PathBuf,
    /// Also write one self-contained HTML page (no external assets, no script).
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
}

//! The job report: its model, the in-toto statement around it, and the signed chain.
//!
//! A job's outcome becomes a `Predicate` (CONTRACT §6), wrapped in an in-toto Statement v1
//! whose subjects are the files the job wrote, signed as a DSSE envelope (`sign`) and
//! appended to the chain of its report directory (`chain`). `verify` checks all of it
//! without trusting anything but the public key; `render` shows it to people. No subject
//! id enters this module except as an HMAC pseudonym.

pub mod chain;
pub mod render;
pub mod sign;
pub mod verify;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consent::{Rules, SubjectCounts};
use crate::ops::{Outcome, RowCounts};
use crate::time::Timestamp;

/// The statement inside a report envelope, decoded but NOT verified: for choosing a key,
/// showing a report, or finding a job id. Anything trusted must go through `verify`.
pub fn read_unverified(envelope: &[u8]) -> Result<serde_json::Value, String> {
    use base64::Engine as _;
    let env: sign::Envelope =
        serde_json::from_slice(envelope).map_err(|_| "not a DSSE envelope".to_string())?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env.payload.as_bytes())
        .map_err(|_| "payload is not base64".to_string())?;
    serde_json::from_slice(&payload).map_err(|_| "payload is not JSON".to_string())
}

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://consentry.dev/job-report/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Complete,
    Partial,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Partial => "partial",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub name: String,
    pub kind: &'static str,
    pub id: String,
    pub as_of: Timestamp,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub spec_path: String,
    pub spec_sha256: String,
    /// The directory relative paths in this report are relative to.
    pub base_dir: String,
    pub dry_run: bool,
    pub tool: Tool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tool {
    pub name: &'static str,
    pub version: &'static str,
}

impl Tool {
    pub const THIS: Tool = Tool {
        name: "consentry",
        version: env!("CARGO_PKG_VERSION"),
    };
}

#[derive(Debug, Clone, Serialize)]
pub struct ConsentInfo {
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
    pub schema: &'static str,
    pub purpose: String,
    pub rules: Rules,
    pub records_read: u64,
    pub subjects: SubjectCounts,
    pub warnings: Vec<String>,
}

/// What discovery passed over, so nothing is skipped silently.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Skipped {
    pub symlinks: Vec<String>,
    pub unreadable: Vec<Unreadable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Unreadable {
    pub path: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub files: u64,
    pub files_failed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub rows_in: u64,
    pub rows_kept: u64,
    pub rows_dropped: u64,
    pub rows_dropped_by_reason: BTreeMap<&'static str, u64>,
}

impl Totals {
    pub fn of(outcomes: &[Outcome]) -> Totals {
        let mut counts = RowCounts::default();
        let mut t = Totals::default();
        for o in outcomes {
            counts += o.counts;
            t.files += 1;
            t.files_failed += u64::from(o.error.is_some());
            t.bytes_in += o.bytes;
            t.bytes_out += o.output.as_ref().map_or(0, |w| w.bytes);
        }
        t.rows_in = counts.rows_in;
        t.rows_kept = counts.kept;
        t.rows_dropped = counts.dropped();
        t.rows_dropped_by_reason = counts.by_reason();
        t
    }
}

/// What an erase job removed, and the proof it re-read afterwards.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EraseInfo {
    /// HMAC-SHA256 pseudonyms of the erased subjects (never the ids), sorted.
    pub subjects: Vec<String>,
    pub subjects_from_file: u64,
    pub subjects_from_revocations: u64,
    /// Lines of the subjects file that hold no usable id (the id itself is not repeated).
    pub rejected_ids: Vec<RejectedId>,
    /// Erased ids that cannot name a cache entry (empty, `.`, `..`, `/`, NUL, control
    /// characters); their cache entries were not looked up.
    pub ids_unusable_as_names: u64,
    pub rows_removed: u64,
    pub files_rewritten: u64,
    pub files_untouched: u64,
    pub files_failed: u64,
    /// Rows kept although they could not be ruled out: malformed lines, or subject values
    /// that are no id, in which no erased id was found (CONTRACT §4 `malformed_kept`).
    pub malformed_kept: u64,
    /// Rows kept because they name no subject: blank lines, and rows whose subject field is
    /// missing, null or holds no id.
    pub rows_without_subject: u64,
    pub caches: Vec<CacheInfo>,
    pub verification: Verification,
    /// This run finished the work of an earlier run of the same job that was interrupted.
    pub resumed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RejectedId {
    pub line: u64,
    pub reason: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheInfo {
    pub path: String,
    pub layout: &'static str,
    pub entries_removed: u64,
    pub subjects_found: u64,
    pub subjects_absent: u64,
    pub error: Option<String>,
}

/// The re-read after erasure: only zero residue gives a `complete` job.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    pub files_checked: u64,
    pub caches_checked: u64,
    pub residual_rows: u64,
    pub residual_entries: u64,
    pub errors: Vec<String>,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Chain {
    pub sequence: u64,
    pub previous_sha256: Option<String>,
}

/// The signed content of a report (CONTRACT §6).
#[derive(Debug, Clone, Serialize)]
pub struct Predicate {
    pub job: JobInfo,
    pub consent: Option<ConsentInfo>,
    pub inputs: Vec<Outcome>,
    pub skipped: Skipped,
    pub totals: Totals,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erase: Option<EraseInfo>,
    pub chain: Chain,
    pub status: Status,
    /// Why the job is `partial`, one line per problem.
    pub problems: Vec<String>,
    pub signing: SigningInfo,
}

/// Which key signed the report, and where its public half was when it did.
#[derive(Debug, Clone, Serialize)]
pub struct SigningInfo {
    pub key_id: String,
    pub public_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: BTreeMap<String, String>,
}

/// An in-toto Statement v1 over the files a job wrote.
#[derive(Debug, Serialize)]
pub struct Statement<'a> {
    #[serde(rename = "_type")]
    pub statement_type: &'static str,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: &'static str,
    pub predicate: &'a Predicate,
}

impl<'a> Statement<'a> {
    pub fn new(predicate: &'a Predicate) -> Statement<'a> {
        let subject = predicate
            .inputs
            .iter()
            .filter_map(|o| o.output.as_ref())
            .map(|w| Subject {
                name: w.path.clone(),
                digest: BTreeMap::from([("sha256".into(), w.sha256.clone())]),
            })
            .collect();
        Statement {
            statement_type: STATEMENT_TYPE,
            subject,
            predicate_type: PREDICATE_TYPE,
            predicate,
        }
    }
}

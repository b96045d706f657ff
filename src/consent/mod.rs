//! Consent: the rules of CONTRACT §3 and the judged state of a snapshot.
//!
//! `load` is the only code that touches SQLite; it streams the snapshot's records once and
//! folds each into a compact per-subject state (`table`). This module owns what a record
//! means: which records cover a purpose, how one record is judged at an instant, and how a
//! subject's records combine into one verdict. It knows nothing of datasets.

mod load;
mod table;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use load::{explain, inspect, load, load_as, Explanation, Inspection, Reading, SnapshotFile};
pub use table::SubjectTable;

use crate::time::Timestamp;

/// Why a subject's consent is not valid. Ordered by severity: on a tie between records of the
/// same instant, the more severe verdict wins (so `revoked` beats everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum Verdict {
    Valid = 0,
    LegalBasis,
    CategoryMissing,
    NoticeOutdated,
    Expired,
    Pending,
    Revoked,
    NoConsent,
}

impl Verdict {
    pub fn is_valid(self) -> bool {
        self == Verdict::Valid
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Valid => "valid",
            Verdict::LegalBasis => "legal_basis",
            Verdict::CategoryMissing => "category_missing",
            Verdict::NoticeOutdated => "notice_outdated",
            Verdict::Expired => "expired",
            Verdict::Pending => "pending",
            Verdict::Revoked => "revoked",
            Verdict::NoConsent => "no_consent",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The job's extra conditions on a `granted` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rules {
    pub min_notice_version: Option<i64>,
    pub required_categories: Vec<String>,
    pub allowed_legal_bases: Vec<String>,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            min_notice_version: None,
            required_categories: Vec::new(),
            allowed_legal_bases: vec!["consent".into()],
        }
    }
}

/// The logical columns of the `consent-records` schema, in the order `load` selects them.
pub const RECORD_COLUMNS: [&str; 12] = [
    "id",
    "user_id",
    "purpose",
    "status",
    "granted_at",
    "revoked_at",
    "expiry_at",
    "notice_version",
    "data_categories",
    "legal_basis",
    "derived_purposes",
    "created_at",
];

/// The columns a snapshot table must have for records to mean anything.
pub const REQUIRED_COLUMNS: [&str; 3] = ["user_id", "purpose", "status"];

/// `[consent.columns]`: the table and column names of a custom platform, by the
/// `consent-records` column they stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnMap {
    pub table: String,
    pub columns: BTreeMap<String, String>,
}

impl ColumnMap {
    pub fn try_new(mut raw: BTreeMap<String, String>) -> Result<ColumnMap, String> {
        let table = raw
            .remove("table")
            .ok_or("needs table = \"<name of the table>\"")?;
        for (logical, actual) in &raw {
            if !RECORD_COLUMNS.contains(&logical.as_str()) {
                return Err(format!(
                    "unknown key {logical:?}; expected table or one of: {}",
                    RECORD_COLUMNS.join(", ")
                ));
            }
            if actual.is_empty() {
                return Err(format!("{logical} maps to an empty column name"));
            }
        }
        for needed in REQUIRED_COLUMNS {
            if !raw.contains_key(needed) {
                return Err(format!("needs {needed} = \"<column name>\""));
            }
        }
        Ok(ColumnMap {
            table,
            columns: raw,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaKind {
    ConsentRecords,
    DpdpCmp,
    Custom(ColumnMap),
}

impl SchemaKind {
    pub fn from_name(name: &str) -> Option<SchemaKind> {
        match name {
            "consent-records" => Some(SchemaKind::ConsentRecords),
            "dpdp-cmp" => Some(SchemaKind::DpdpCmp),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SchemaKind::ConsentRecords => "consent-records",
            SchemaKind::DpdpCmp => "dpdp-cmp",
            SchemaKind::Custom(_) => "custom",
        }
    }
}

/// Record statuses of the `consent-records` schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Granted,
    Revoked,
    Pending,
}

impl Status {
    pub fn parse(s: &str) -> Option<Status> {
        if s.eq_ignore_ascii_case("granted") {
            Some(Status::Granted)
        } else if s.eq_ignore_ascii_case("revoked") {
            Some(Status::Revoked)
        } else if s.eq_ignore_ascii_case("pending") {
            Some(Status::Pending)
        } else {
            None
        }
    }
}

/// One record, reduced to what judging it needs. `None` in an `Option` field means the
/// column is absent from the snapshot (no constraint); a present column that holds NULL is
/// `Some(None)`-like and spelled out in each field's type.
#[derive(Debug, Clone, Default)]
pub struct Facts<'a> {
    pub status: Option<Status>,
    pub granted_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub expiry_at: Option<Timestamp>,
    /// Outer `None`: column absent. Inner `None`: NULL.
    pub notice_version: Option<Option<i64>>,
    /// Only read when the job requires categories.
    pub categories: Option<Option<Vec<String>>>,
    pub legal_basis: Option<Option<&'a str>>,
}

/// Judges one `granted`/`revoked`/`pending` record at `at`.
///
/// An absent column imposes no constraint (CONTRACT §3). A NULL `notice_version` or
/// `data_categories` cannot satisfy a rule the job sets (fail closed: nothing proves the
/// notice was read or the category covered). A NULL `legal_basis` reads as `consent`: a
/// consent record that states no other basis rests on consent, so it passes only where
/// consent is allowed.
pub fn judge(f: &Facts<'_>, at: Timestamp, rules: &Rules) -> Verdict {
    match f.status {
        Some(Status::Revoked) => return Verdict::Revoked,
        Some(Status::Pending) | None => return Verdict::Pending,
        Some(Status::Granted) => {}
    }
    if f.revoked_at.is_some_and(|t| t <= at) {
        return Verdict::Revoked;
    }
    if f.granted_at.is_some_and(|t| t > at) {
        return Verdict::Pending;
    }
    if f.expiry_at.is_some_and(|t| t <= at) {
        return Verdict::Expired;
    }
    if let (Some(min), Some(version)) = (rules.min_notice_version, &f.notice_version) {
        if !version.is_some_and(|v| v >= min) {
            return Verdict::NoticeOutdated;
        }
    }
    if let (false, Some(cats)) = (rules.required_categories.is_empty(), &f.categories) {
        let covered = cats
            .as_ref()
            .is_some_and(|c| rules.required_categories.iter().all(|r| c.contains(r)));
        if !covered {
            return Verdict::CategoryMissing;
        }
    }
    // A NULL basis is the platform's default, consent: it passes only where consent does.
    if let Some(basis) = f.legal_basis {
        let basis = basis.unwrap_or("consent");
        if !rules.allowed_legal_bases.iter().any(|a| a == basis) {
            return Verdict::LegalBasis;
        }
    }
    Verdict::Valid
}

/// How one subject's judged records combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fold {
    /// `consent-records`: the latest covering record decides; on a tie the more severe verdict.
    Latest,
    /// `dpdp-cmp`: valid if any covering row is valid; otherwise the latest row says why not.
    AnyValid,
}

/// A subject's folded state: the deciding record's instant and verdict, and whether any
/// record was valid (used by `Fold::AnyValid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    pub at: Timestamp,
    pub verdict: Verdict,
    pub any_valid: bool,
}

impl State {
    pub const EMPTY: State = State {
        at: Timestamp::MIN,
        verdict: Verdict::NoConsent,
        any_valid: false,
    };

    /// Folds in one record; returns whether it became the deciding record.
    pub fn add(&mut self, at: Timestamp, verdict: Verdict) -> bool {
        self.any_valid |= verdict.is_valid();
        let decides = self.verdict == Verdict::NoConsent || (at, verdict) > (self.at, self.verdict);
        if decides {
            self.at = at;
            self.verdict = verdict;
        }
        decides
    }

    pub fn merge(&mut self, other: State) {
        if other.verdict != Verdict::NoConsent {
            self.add(other.at, other.verdict);
        }
        self.any_valid |= other.any_valid;
    }

    pub fn verdict(&self, fold: Fold) -> Verdict {
        match fold {
            Fold::AnyValid if self.any_valid => Verdict::Valid,
            _ => self.verdict,
        }
    }
}

/// Counts of judged subjects, for the report and `consent inspect`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SubjectCounts {
    pub judged: u64,
    pub valid: u64,
    pub not_valid: BTreeMap<Verdict, u64>,
}

/// A snapshot judged for one purpose at one instant: every subject's verdict.
#[derive(Debug)]
pub struct Snapshot {
    pub file: SnapshotFile,
    pub schema: &'static str,
    pub purpose: String,
    pub as_of: Timestamp,
    pub rules: Rules,
    pub records_read: u64,
    pub warnings: Vec<String>,
    subjects: SubjectTable<Verdict>,
}

impl Snapshot {
    /// The verdict for a subject id; a subject without any covering record has `no_consent`.
    pub fn verdict(&self, subject: &str) -> Verdict {
        self.subjects
            .get(subject)
            .copied()
            .unwrap_or(Verdict::NoConsent)
    }

    /// Starts fetching what `verdict(subject)` will read, for a caller with other work to do
    /// before it asks (see `SubjectTable::prefetch`).
    pub fn prefetch(&self, subject: &str) {
        self.subjects.prefetch(subject);
    }

    pub fn counts(&self) -> SubjectCounts {
        let mut counts = SubjectCounts::default();
        for (_, v) in self.subjects.iter() {
            counts.judged += 1;
            if v.is_valid() {
                counts.valid += 1;
            } else {
                *counts.not_valid.entry(*v).or_default() += 1;
            }
        }
        counts
    }

    /// Subject ids whose verdict is `v`, e.g. every revoked subject for an erasure sweep.
    pub fn subjects_with(&self, v: Verdict) -> impl Iterator<Item = &str> {
        self.subjects
            .iter()
            .filter(move |(_, s)| **s == v)
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn granted() -> Facts<'static> {
        Facts {
            status: Some(Status::Granted),
            ..Facts::default()
        }
    }

    #[test]
    fn judge_applies_every_rule_in_order() {
        let at = t("2026-11-01T00:00:00Z");
        let rules = Rules {
            min_notice_version: Some(2),
            required_categories: vec!["text".into()],
            allowed_legal_bases: vec!["consent".into()],
        };
        assert_eq!(
            judge(&granted(), at, &rules),
            Verdict::Valid,
            "absent columns impose nothing"
        );
        let revoked_at = Facts {
            revoked_at: Some(at),
            ..granted()
        };
        assert_eq!(
            judge(&revoked_at, at, &rules),
            Verdict::Revoked,
            "revoked_at at T counts as revoked"
        );
        let later = Facts {
            revoked_at: Some(t("2026-11-02T00:00:00Z")),
            ..granted()
        };
        assert_eq!(judge(&later, at, &rules), Verdict::Valid);
        let expired = Facts {
            expiry_at: Some(at),
            ..granted()
        };
        assert_eq!(
            judge(&expired, at, &rules),
            Verdict::Expired,
            "expiry at T is expired"
        );
        let old = Facts {
            notice_version: Some(Some(1)),
            ..granted()
        };
        assert_eq!(judge(&old, at, &rules), Verdict::NoticeOutdated);
        let unknown = Facts {
            notice_version: Some(None),
            ..granted()
        };
        assert_eq!(
            judge(&unknown, at, &rules),
            Verdict::NoticeOutdated,
            "NULL fails closed"
        );
        let cats = Facts {
            categories: Some(Some(vec!["audio".into()])),
            ..granted()
        };
        assert_eq!(judge(&cats, at, &rules), Verdict::CategoryMissing);
        let basis = Facts {
            legal_basis: Some(Some("contract")),
            ..granted()
        };
        assert_eq!(judge(&basis, at, &rules), Verdict::LegalBasis);
        let future = Facts {
            granted_at: Some(t("2026-12-01T00:00:00Z")),
            ..granted()
        };
        assert_eq!(judge(&future, at, &rules), Verdict::Pending);
    }

    #[test]
    fn latest_decides_and_revoked_wins_ties() {
        let (a, b) = (t("2026-01-01T00:00:00Z"), t("2026-02-01T00:00:00Z"));
        let mut s = State::EMPTY;
        s.add(b, Verdict::Valid);
        s.add(a, Verdict::Revoked);
        assert_eq!(s.verdict(Fold::Latest), Verdict::Valid);
        s.add(b, Verdict::Revoked);
        assert_eq!(s.verdict(Fold::Latest), Verdict::Revoked);
        s.add(b, Verdict::Valid);
        assert_eq!(
            s.verdict(Fold::Latest),
            Verdict::Revoked,
            "order of arrival does not matter"
        );
        assert_eq!(s.verdict(Fold::AnyValid), Verdict::Valid);
    }
}

//! Reading a consent snapshot: the only code in consentry that touches SQLite.
//!
//! A snapshot is opened read-only with SQLite's defensive settings (no triggers, no views,
//! no attached databases, untrusted schema), read in one transaction, and streamed once: each
//! covering record is judged as it arrives and folded into its subject's state, so memory
//! grows with subjects, not records. Table and column names come from the file's own schema
//! and are quoted; nothing from a job spec or the command line is spliced into SQL.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::config::DbConfig;
use rusqlite::limits::Limit;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use super::{
    judge, Facts, Fold, Rules, SchemaKind, Snapshot, State, Status, SubjectTable, Verdict,
    RECORD_COLUMNS,
};
use crate::error::{Error, Result};
use crate::time::Timestamp;

/// The snapshot file as the report records it.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotFile {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
}

/// Which columns a query reads, resolved against the file's real schema.
struct Plan {
    table: String,
    kind: PlanKind,
    fold: Fold,
    /// Quoted column name per logical column, `None` when the snapshot lacks it.
    cols: BTreeMap<&'static str, String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PlanKind {
    Records,
    Dpdp,
}

const DPDP_COLUMNS: [&str; 6] = [
    "id",
    "user_id",
    "purpose",
    "granted",
    "granted_at",
    "withdrawn_at",
];

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

struct Db<'p> {
    path: &'p Path,
    conn: Connection,
}

impl<'p> Db<'p> {
    fn open(path: &'p Path) -> Result<Db<'p>> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io("cannot open consent snapshot", path, e))?;
        if !meta.is_file() {
            return Err(Error::snapshot(path, "not a regular file"));
        }
        let sqlite = |source| Error::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        for (setting, on) in [
            (DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true),
            (DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA, false),
            (DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false),
            (DbConfig::SQLITE_DBCONFIG_ENABLE_VIEW, false),
        ] {
            conn.set_db_config(setting, on).map_err(sqlite)?;
        }
        conn.set_limit(Limit::SQLITE_LIMIT_ATTACHED, 0)
            .map_err(sqlite)?;
        let db = Db { path, conn };
        // Reading the schema is the first read: a file that is not SQLite fails here.
        db.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::NotADatabase =>
                {
                    Error::snapshot(path, "not a SQLite database")
                }
                other => sqlite(other),
            })?;
        Ok(db)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::snapshot(self.path, message)
    }

    fn sqlite(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn tables(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .map_err(|e| self.sqlite(e))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.sqlite(e))?;
        names
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sqlite(e))
    }

    fn columns(&self, table: &str) -> Result<Vec<String>> {
        if !self.tables()?.iter().any(|t| t == table) {
            return Err(self.err(format!(
                "no table {table:?} (tables: {})",
                self.tables()?.join(", ")
            )));
        }
        // `table_xinfo` also lists generated columns (hidden 2 and 3), which SQL reads like
        // any other; hidden 1 marks a virtual table's hidden columns, which it does not.
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM pragma_table_xinfo(?1) WHERE hidden IN (0, 2, 3)")
            .map_err(|e| self.sqlite(e))?;
        let names = stmt
            .query_map([table], |r| r.get::<_, String>(0))
            .map_err(|e| self.sqlite(e))?;
        names
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.sqlite(e))
    }

    /// Chooses a schema when none was named: `consent_records` first, then `consents`.
    fn detect(&self) -> Result<SchemaKind> {
        let tables = self.tables()?;
        if tables.iter().any(|t| t == "consent_records") {
            Ok(SchemaKind::ConsentRecords)
        } else if tables.iter().any(|t| t == "consents") {
            Ok(SchemaKind::DpdpCmp)
        } else {
            Err(self.err(format!(
                "found neither consent_records (consent-records) nor consents (dpdp-cmp); tables: {}; \
                 use schema = \"custom\" with [consent.columns] for other layouts",
                tables.join(", ")
            )))
        }
    }

    fn plan(&self, schema: &SchemaKind) -> Result<Plan> {
        let (table, kind, wanted): (&str, PlanKind, Vec<(&'static str, String)>) = match schema {
            SchemaKind::ConsentRecords => (
                "consent_records",
                PlanKind::Records,
                RECORD_COLUMNS.iter().map(|c| (*c, c.to_string())).collect(),
            ),
            SchemaKind::DpdpCmp => (
                "consents",
                PlanKind::Dpdp,
                DPDP_COLUMNS.iter().map(|c| (*c, c.to_string())).collect(),
            ),
            SchemaKind::Custom(map) => (
                map.table.as_str(),
                PlanKind::Records,
                RECORD_COLUMNS
                    .iter()
                    .filter_map(|c| map.columns.get(*c).map(|actual| (*c, actual.clone())))
                    .collect(),
            ),
        };
        let real = self.columns(table)?;
        let required: &[&str] = match kind {
            PlanKind::Records => &["user_id", "purpose", "status"],
            PlanKind::Dpdp => &[
                "user_id",
                "purpose",
                "granted",
                "granted_at",
                "withdrawn_at",
            ],
        };
        let mut cols = BTreeMap::new();
        for (logical, actual) in wanted {
            // SQLite names columns case-insensitively: `Expiry_At` is `expiry_at`.
            if let Some(r) = real.iter().find(|r| r.eq_ignore_ascii_case(&actual)) {
                cols.insert(logical, quote(r));
            } else if required.contains(&logical) || matches!(schema, SchemaKind::Custom(_)) {
                return Err(self.err(format!(
                    "table {table:?} has no column {actual:?}{} (columns: {})",
                    if actual != logical {
                        format!(" (for {logical})")
                    } else {
                        String::new()
                    },
                    real.join(", ")
                )));
            }
        }
        let fold = if kind == PlanKind::Dpdp {
            Fold::AnyValid
        } else {
            Fold::Latest
        };
        Ok(Plan {
            table: quote(table),
            kind,
            fold,
            cols,
        })
    }
}

/// How pending records count when a snapshot is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// As CONTRACT §3 says: the latest covering record decides, a pending one too.
    Consent,
    /// For finding who revoked (an erase job's `subjects_from_revocations`): pending records
    /// (and grants that take effect after `as_of`) are passed over, so a new consent request
    /// after a revocation does not hide the revocation. Every other verdict is the same.
    Revocations,
}

/// Opens, hashes and judges a snapshot for one purpose at one instant.
pub fn load(
    path: &Path,
    schema: &SchemaKind,
    purpose: &str,
    as_of: Timestamp,
    rules: &Rules,
) -> Result<Snapshot> {
    load_as(path, schema, purpose, as_of, rules, Reading::Consent)
}

/// `load`, reading pending records as `reading` says.
pub fn load_as(
    path: &Path,
    schema: &SchemaKind,
    purpose: &str,
    as_of: Timestamp,
    rules: &Rules,
    reading: Reading,
) -> Result<Snapshot> {
    std::thread::scope(|s| {
        let hashing = s.spawn(|| hash_file(path));
        let judged = judge_all(path, schema, purpose, as_of, rules, reading);
        let file = hashing
            .join()
            .map_err(|_| Error::snapshot(path, "hashing thread panicked"))??;
        let (subjects, records_read, mut warnings, schema_name) = judged?;
        warnings.extend(pending_wal(path));
        Ok(Snapshot {
            file,
            schema: schema_name,
            purpose: purpose.to_string(),
            as_of,
            rules: rules.clone(),
            records_read,
            warnings,
            subjects,
        })
    })
}

/// A warning when a write-ahead log lies beside the snapshot: SQLite reads the records in
/// it, but the recorded sha256 is of the database file alone. SQLite looks for the log
/// beside the file a symlink leads to, and so does this.
fn pending_wal(path: &Path) -> Option<String> {
    let mut wal = std::fs::canonicalize(path).ok()?.into_os_string();
    wal.push("-wal");
    let bytes = std::fs::metadata(&wal).ok()?.len();
    (bytes > 0).then(|| {
        format!(
            "the snapshot has a write-ahead log ({bytes} bytes) that may hold records SQLite \
             read but the recorded sha256 does not cover: export snapshots checkpointed \
             (PRAGMA wal_checkpoint(TRUNCATE)) so that the digest covers every record"
        )
    })
}

fn hash_file(path: &Path) -> Result<SnapshotFile> {
    let (sha256, bytes) = crate::dataset::sha256_file(path)
        .map_err(|e| Error::io("cannot read consent snapshot", path, e))?;
    Ok(SnapshotFile {
        path: path.to_path_buf(),
        sha256,
        bytes,
    })
}

type Judged = (SubjectTable<Verdict>, u64, Vec<String>, &'static str);

/// Records per batch handed from the SQLite thread to the folding thread, and the most id
/// bytes one batch holds (ids can be long text).
const BATCH: usize = 16 * 1024;
const BATCH_BYTES: usize = 1 << 20;

/// Judged records on their way from the thread stepping SQLite to the one folding them into
/// subject states: the two halves of a load take about as long each, so a snapshot of
/// millions of records loads in about half the time.
#[derive(Default)]
struct Batch {
    /// The records' subject ids, back to back.
    users: String,
    records: Vec<Judged1>,
}

struct Judged1 {
    /// Where this record's id ends in `users` (it starts where the previous one ends).
    end: usize,
    at: Timestamp,
    verdict: Verdict,
    deriver: Option<u16>,
    derives: bool,
    /// The verdict counts (false: the record only says its purpose derives ours).
    counts: bool,
}

impl Batch {
    fn push(&mut self, row: &Row<'_>, counts: bool) {
        self.users.push_str(&row.user);
        self.records.push(Judged1 {
            end: self.users.len(),
            at: row.at,
            verdict: row.verdict,
            deriver: row.deriver,
            derives: row.derives,
            counts,
        });
    }

    /// Each record with its id.
    fn iter(&self) -> impl Iterator<Item = (&str, &Judged1)> {
        let mut start = 0;
        self.records.iter().map(move |r| {
            // Every id was pushed whole, so its bounds are character boundaries.
            let id = self.users.get(start..r.end).unwrap_or_default();
            start = r.end;
            (id, r)
        })
    }
}

/// Subject states: for the job's purpose, and per deriving purpose (with whether that
/// purpose derives ours for the subject).
struct Folded {
    subjects: SubjectTable<State>,
    derived: Vec<SubjectTable<(State, bool)>>,
}

fn fold_batches(
    batches: std::sync::mpsc::Receiver<Batch>,
    deriving: &[SubjectTable<()>],
) -> std::result::Result<Folded, &'static str> {
    let mut f = Folded {
        subjects: SubjectTable::default(),
        derived: deriving.iter().map(|_| SubjectTable::default()).collect(),
    };
    for batch in batches {
        for (user, r) in batch.iter() {
            let state = match r.deriver {
                None => f.subjects.entry(user, || State::EMPTY)?,
                // Only subjects with a record of this purpose that lists ours can be affected.
                Some(q) if deriving[q as usize].get(user).is_none() => continue,
                Some(q) => {
                    let slot = f.derived[q as usize].entry(user, || (State::EMPTY, false))?;
                    slot.1 |= r.derives;
                    &mut slot.0
                }
            };
            if r.counts {
                state.add(r.at, r.verdict);
            }
        }
    }
    Ok(f)
}

fn judge_all(
    path: &Path,
    schema: &SchemaKind,
    purpose: &str,
    as_of: Timestamp,
    rules: &Rules,
    reading: Reading,
) -> Result<Judged> {
    let db = Db::open(path)?;
    let plan = db.plan(schema)?;
    let warnings = unchecked_rules(&plan, rules);
    db.conn.execute_batch("BEGIN").map_err(|e| db.sqlite(e))?;
    let (derivers, deriving) = derivers_with_subjects(&db, &plan, purpose)?;
    let mut records = 0u64;
    let (scanned, folded) = std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(4);
        let folder = s.spawn(|| fold_batches(rx, &deriving));
        let mut batch = Batch::default();
        let scanned = scan(&db, &plan, purpose, &derivers, None, as_of, rules, |row| {
            records += 1;
            // A pending record passed over still says that its purpose derives ours.
            let counts = !(reading == Reading::Revocations && row.verdict == Verdict::Pending);
            batch.push(&row, counts);
            if batch.records.len() >= BATCH || batch.users.len() >= BATCH_BYTES {
                tx.send(std::mem::take(&mut batch))
                    .map_err(|_| db.err("stopped folding records"))?;
            }
            Ok(())
        })
        .and_then(|()| {
            tx.send(batch)
                .map_err(|_| db.err("stopped folding records"))
        });
        drop(tx);
        let folded = folder.join();
        (scanned, folded)
    });
    // The folder's own error explains a failed send better than the send does.
    let Folded {
        mut subjects,
        derived,
    } = match folded {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => return Err(db.err(e)),
        Err(_) => return Err(db.err("the thread folding records panicked")),
    };
    scanned?;
    db.conn.execute_batch("COMMIT").map_err(|e| db.sqlite(e))?;
    for table in derived {
        for (user, (state, derives)) in table.iter() {
            if *derives {
                subjects
                    .entry(user, || State::EMPTY)
                    .map_err(|e| db.err(e))?
                    .merge(*state);
            }
        }
    }
    let fold = plan.fold;
    Ok((
        subjects.map(|s| s.verdict(fold)),
        records,
        warnings,
        schema.name(),
    ))
}

/// Rules the job sets that no column of this snapshot can check: said out loud in the report.
fn unchecked_rules(plan: &Plan, rules: &Rules) -> Vec<String> {
    let mut out = Vec::new();
    let mut note = |set: bool, column: &str, rule: &str| {
        if set && !plan.cols.contains_key(column) {
            out.push(format!(
                "{rule} is not checked: the snapshot has no {column} column"
            ));
        }
    };
    note(
        rules.min_notice_version.is_some(),
        "notice_version",
        "min_notice_version",
    );
    note(
        !rules.required_categories.is_empty(),
        "data_categories",
        "required_categories",
    );
    note(
        rules.allowed_legal_bases != ["consent"],
        "legal_basis",
        "allowed_legal_bases",
    );
    out
}

/// The purposes whose records derive `purpose` for some subject (`derived_purposes` lists
/// it) and, in the same scan, per deriving purpose the subjects that have a record of it
/// listing `purpose` (at any time: a superset of those for which it derives at `as_of`,
/// which `scan` still decides). Records of a deriving purpose for any other
/// subject cannot change a verdict, so `judge_all` keeps no state for them.
fn derivers_with_subjects(
    db: &Db<'_>,
    plan: &Plan,
    purpose: &str,
) -> Result<(Vec<String>, Vec<SubjectTable<()>>)> {
    let (Some(p), Some(d), Some(u)) = (
        plan.cols.get("purpose"),
        plan.cols.get("derived_purposes"),
        plan.cols.get("user_id"),
    ) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let sql = format!(
        "SELECT {p}, {d}, {u} FROM {t} WHERE {d} IS NOT NULL AND {p} COLLATE BINARY IS NOT ?1",
        t = plan.table
    );
    let mut stmt = db.conn.prepare(&sql).map_err(|e| db.sqlite(e))?;
    let mut rows = stmt.query([purpose]).map_err(|e| db.sqlite(e))?;
    let mut lists: std::collections::HashMap<Vec<u8>, bool> = Default::default();
    let mut found: BTreeMap<String, SubjectTable<()>> = BTreeMap::new();
    while let Some(row) = rows.next().map_err(|e| db.sqlite(e))? {
        let (Ok(ValueRef::Text(q)), Ok(list)) = (row.get_ref(0), row.get_ref(1)) else {
            continue;
        };
        let key = match list {
            ValueRef::Text(t) | ValueRef::Blob(t) => t,
            _ => &[][..],
        };
        let lists_purpose = match lists.get(key) {
            Some(b) => *b,
            None => {
                let b = json_list(list)
                    .map_err(|e| db.err(format!("table {}: derived_purposes {e}", plan.table)))?
                    .iter()
                    .any(|x| x == purpose);
                lists.insert(key.to_vec(), b);
                b
            }
        };
        if !lists_purpose {
            continue;
        }
        let user: Cow<'_, str> = match row.get_ref(2).map_err(|e| db.sqlite(e))? {
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => continue,
            },
            ValueRef::Integer(n) => Cow::Owned(n.to_string()),
            _ => continue,
        };
        let set = found
            .entry(String::from_utf8_lossy(q).into_owned())
            .or_default();
        set.entry(&user, || ()).map_err(|e| db.err(e))?;
    }
    Ok(found.into_iter().unzip())
}

/// A JSON array of strings as a list column holds it; NULL and empty text are the empty list.
fn json_list(v: ValueRef<'_>) -> Result<Vec<String>, String> {
    match v {
        ValueRef::Null => Ok(Vec::new()),
        ValueRef::Text(t) if t.iter().all(u8::is_ascii_whitespace) => Ok(Vec::new()),
        ValueRef::Text(t) => serde_json::from_slice::<Vec<String>>(t).map_err(|_| {
            format!(
                "{:?} is not a JSON array of strings",
                String::from_utf8_lossy(t)
            )
        }),
        _ => Err("is not text holding a JSON array of strings".into()),
    }
}

/// One covering record, judged.
struct Row<'a> {
    user: Cow<'a, str>,
    at: Timestamp,
    verdict: Verdict,
    /// Index into the deriving purposes when the record is not of the job's own purpose.
    deriver: Option<u16>,
    /// The record lists the job's purpose in its derived_purposes.
    derives: bool,
    id: String,
}

/// Streams every covering record at or before `as_of` through `visit`, judged.
#[allow(clippy::too_many_arguments)]
fn scan(
    db: &Db<'_>,
    plan: &Plan,
    purpose: &str,
    derivers: &[String],
    subject: Option<&str>,
    as_of: Timestamp,
    rules: &Rules,
    mut visit: impl FnMut(Row<'_>) -> Result<()>,
) -> Result<()> {
    let names: &[&str] = match plan.kind {
        PlanKind::Records => &RECORD_COLUMNS,
        PlanKind::Dpdp => &DPDP_COLUMNS,
    };
    let select: Vec<String> = names
        .iter()
        .map(|c| match (*c, plan.cols.get(c)) {
            // A column judging never reads is not decoded.
            ("data_categories", Some(_)) if rules.required_categories.is_empty() => {
                "NULL".to_string()
            }
            (_, Some(q)) => q.clone(),
            ("id", None) => "rowid".to_string(),
            (_, None) => "NULL".to_string(),
        })
        .collect();
    let pcol = &plan.cols["purpose"];
    let ucol = &plan.cols["user_id"];
    let mut params: Vec<rusqlite::types::Value> = vec![purpose.to_string().into()];
    params.extend(
        derivers
            .iter()
            .map(|d| rusqlite::types::Value::from(d.clone())),
    );
    let placeholders = (1..=params.len())
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Purposes match byte for byte, whatever the column's collation. Records whose purpose
    // differs only in letter case are fetched too (`COLLATE NOCASE`), to be refused below:
    // `Model_Training` may or may not be `model_training`, and either guess could keep the
    // rows of a subject who revoked.
    let mut sql = format!(
        "SELECT {} FROM {} WHERE {pcol} COLLATE NOCASE IN ({placeholders})",
        select.join(", "),
        plan.table
    );
    if let Some(s) = subject {
        params.push(s.to_string().into());
        sql += &format!(" AND ({ucol} = ?{}", params.len());
        if let Ok(n) = s.parse::<i64>() {
            if n.to_string() == s {
                params.push(n.into());
                sql += &format!(" OR {ucol} = ?{}", params.len());
            }
        }
        sql += ")";
    }
    let mut stmt = db.conn.prepare(&sql).map_err(|e| db.sqlite(e))?;
    let mut rows = stmt
        .query(rusqlite::params_from_iter(params.iter()))
        .map_err(|e| db.sqlite(e))?;
    let cell_err = |row: &rusqlite::Row<'_>, what: String| -> Error {
        let id = row
            .get_ref(0)
            .map(display_value)
            .unwrap_or_else(|_| "?".into());
        db.err(format!(
            "table {}, row id {id}: {what}",
            plan.table.trim_matches('"')
        ))
    };
    let need_categories = !rules.required_categories.is_empty();
    let has_notice = plan.cols.contains_key("notice_version");
    let has_categories = plan.cols.contains_key("data_categories");
    let has_basis = plan.cols.contains_key("legal_basis");
    while let Some(row) = rows.next().map_err(|e| db.sqlite(e))? {
        let cell = |i: usize| row.get_ref(i).map_err(|e| db.sqlite(e));
        let user = match cell(1)? {
            ValueRef::Text(t) => match std::str::from_utf8(t) {
                Ok(s) => Cow::Borrowed(s),
                Err(_) => return Err(cell_err(row, "user_id is not UTF-8 text".into())),
            },
            ValueRef::Integer(n) => Cow::Owned(n.to_string()),
            ValueRef::Null => return Err(cell_err(row, "user_id is NULL".into())),
            _ => {
                return Err(cell_err(
                    row,
                    "user_id is neither text nor an integer".into(),
                ))
            }
        };
        if let Some(s) = subject {
            if user != s {
                continue;
            }
        }
        let row_purpose = match cell(2)? {
            ValueRef::Text(t) => t,
            _ => return Err(cell_err(row, "purpose is not text".into())),
        };
        let deriver = if row_purpose == purpose.as_bytes() {
            None
        } else {
            match derivers.iter().position(|d| d.as_bytes() == row_purpose) {
                Some(i) => Some(i as u16),
                None => {
                    let like = std::iter::once(purpose)
                        .chain(derivers.iter().map(String::as_str))
                        .find(|p| p.as_bytes().eq_ignore_ascii_case(row_purpose))
                        .unwrap_or(purpose);
                    return Err(cell_err(
                        row,
                        format!(
                            "purpose {} differs from {like:?} only in letter case; purposes are \
                             matched exactly, so correct the snapshot rather than have either \
                             spelling guessed",
                            display_value(cell(2)?)
                        ),
                    ));
                }
            }
        };
        let time = |i: usize, name: &str| -> Result<Option<Timestamp>> {
            timestamp(cell(i)?).map_err(|e| cell_err(row, format!("{name} {e}")))
        };
        let (at, facts, derives) = match plan.kind {
            PlanKind::Records => {
                let status = match cell(3)? {
                    ValueRef::Text(t) => std::str::from_utf8(t).ok().and_then(Status::parse),
                    _ => None,
                };
                let Some(status) = status else {
                    return Err(cell_err(
                        row,
                        format!(
                            "status {} is not granted, revoked or pending",
                            display_value(cell(3)?)
                        ),
                    ));
                };
                let granted_at = time(4, "granted_at")?;
                let revoked_at = time(5, "revoked_at")?;
                let created_at = time(11, "created_at")?;
                let at = created_at
                    .or(if status == Status::Revoked {
                        revoked_at.or(granted_at)
                    } else {
                        granted_at.or(revoked_at)
                    })
                    .ok_or_else(|| {
                        cell_err(
                            row,
                            "has no event time: created_at, granted_at and revoked_at are all NULL"
                                .into(),
                        )
                    })?;
                let notice_version = if has_notice {
                    Some(match cell(7)? {
                        ValueRef::Null => None,
                        ValueRef::Integer(n) => Some(n),
                        ValueRef::Text(t) => match std::str::from_utf8(t)
                            .ok()
                            .and_then(|s| s.trim().parse().ok())
                        {
                            Some(n) => Some(n),
                            None => {
                                return Err(cell_err(
                                    row,
                                    "notice_version is not an integer".into(),
                                ))
                            }
                        },
                        _ => return Err(cell_err(row, "notice_version is not an integer".into())),
                    })
                } else {
                    None
                };
                let categories = if has_categories && need_categories {
                    Some(match cell(8)? {
                        ValueRef::Null => None,
                        v => Some(
                            json_list(v)
                                .map_err(|e| cell_err(row, format!("data_categories {e}")))?,
                        ),
                    })
                } else {
                    None
                };
                let legal_basis = if has_basis {
                    Some(match cell(9)? {
                        ValueRef::Null => None,
                        ValueRef::Text(t) => match std::str::from_utf8(t) {
                            Ok(b) => Some(b),
                            Err(_) => {
                                return Err(cell_err(row, "legal_basis is not UTF-8 text".into()))
                            }
                        },
                        _ => return Err(cell_err(row, "legal_basis is not text".into())),
                    })
                } else {
                    None
                };
                let derives = deriver.is_some()
                    && json_list(cell(10)?)
                        .map_err(|e| cell_err(row, format!("derived_purposes {e}")))?
                        .iter()
                        .any(|p| p == purpose);
                let expiry_at = time(6, "expiry_at")?;
                let facts = Facts {
                    status: Some(status),
                    granted_at,
                    revoked_at,
                    expiry_at,
                    notice_version,
                    categories,
                    legal_basis,
                };
                (at, facts, derives)
            }
            PlanKind::Dpdp => {
                let granted = match cell(3)? {
                    ValueRef::Integer(n) => n != 0,
                    ValueRef::Text(t) if t == b"1" || t.eq_ignore_ascii_case(b"true") => true,
                    ValueRef::Text(t) if t == b"0" || t.eq_ignore_ascii_case(b"false") => false,
                    v => {
                        return Err(cell_err(
                            row,
                            format!("granted {} is not 0 or 1", display_value(v)),
                        ))
                    }
                };
                let granted_at = time(4, "granted_at")?;
                let withdrawn_at = time(5, "withdrawn_at")?;
                let status = if granted || withdrawn_at.is_some() {
                    Status::Granted
                } else {
                    Status::Pending
                };
                let at = match (status, granted_at, withdrawn_at) {
                    (_, Some(g), _) => g,
                    (Status::Pending, None, _) => Timestamp::MIN,
                    (_, None, _) => {
                        return Err(cell_err(
                            row,
                            "is granted or withdrawn but granted_at is NULL".into(),
                        ));
                    }
                };
                let facts = Facts {
                    status: Some(status),
                    granted_at,
                    revoked_at: withdrawn_at,
                    ..Facts::default()
                };
                (at, facts, false)
            }
        };
        if at > as_of {
            continue;
        }
        let verdict = judge(&facts, as_of, rules);
        let id = if subject.is_some() {
            display_value(cell(0)?)
        } else {
            String::new()
        };
        visit(Row {
            user,
            at,
            verdict,
            deriver,
            derives,
            id,
        })?;
    }
    Ok(())
}

/// Numeric timestamps are Unix seconds from 2000-01-01 to the end of 9999 (which takes in
/// "never expires" sentinels such as 253402300799). Other numbers are more likely
/// milliseconds (which start at 9.5e11 for 2000), a Julian day (SQLite's REAL dates) or a
/// `YYYYMMDD` date than a consent given before 2000, and read as seconds they would put a
/// revocation in 1970 or far after `as_of`, where it would be ignored: they are errors.
const UNIX_SECONDS: std::ops::Range<i64> = 946_684_800..253_402_300_800;

fn unix_seconds(n: i64) -> Result<Timestamp, String> {
    UNIX_SECONDS
        .contains(&n)
        .then(|| Timestamp::from_unix_seconds(n))
        .flatten()
        .ok_or_else(|| format!("{n} is not Unix seconds between 2000 and 9999 (milliseconds? a Julian day? YYYYMMDD?)"))
}

/// A timestamp cell: text in any accepted form, or Unix seconds as an integer, a real or
/// digits in text (see `UNIX_SECONDS`).
fn timestamp(v: ValueRef<'_>) -> Result<Option<Timestamp>, String> {
    match v {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(n) => unix_seconds(n).map(Some),
        ValueRef::Real(r) => {
            let whole = r.floor();
            if !(r.is_finite()
                && (UNIX_SECONDS.start as f64..UNIX_SECONDS.end as f64).contains(&whole))
            {
                return Err(format!(
                    "{r} is not Unix seconds between 2000 and 9999 (a Julian day?)"
                ));
            }
            Ok(Some(Timestamp::from_micros((r * 1e6) as i64)))
        }
        ValueRef::Text(t) => {
            let s = std::str::from_utf8(t).map_err(|_| "is not UTF-8 text".to_string())?;
            let digits = s.trim();
            if !digits.is_empty()
                && digits
                    .trim_start_matches('-')
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            {
                return match digits.parse::<i64>() {
                    Ok(n) => unix_seconds(n).map(Some),
                    Err(_) => Err(format!("{s:?} is not Unix seconds between 2000 and 9999")),
                };
            }
            Timestamp::parse(s)
                .map(Some)
                .map_err(|e| format!("{s:?} is not a timestamp: {e}"))
        }
        other => Err(format!("{} is not a timestamp", display_value(other))),
    }
}

/// A cell as an error message may show it. Only ever used on record ids, statuses and
/// timestamps, never on subject ids.
fn display_value(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "NULL".into(),
        ValueRef::Integer(n) => n.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Text(t) => format!("{:?}", String::from_utf8_lossy(t)),
        ValueRef::Blob(b) => format!("<blob of {} bytes>", b.len()),
    }
}

/// Why one subject is in or out: every covering record, and which one decided.
#[derive(Debug, Serialize)]
pub struct Explanation {
    pub schema: &'static str,
    pub purpose: String,
    pub as_of: Timestamp,
    pub verdict: Verdict,
    pub deciding_record: Option<String>,
    pub records: Vec<ExplainedRecord>,
}

#[derive(Debug, Serialize)]
pub struct ExplainedRecord {
    pub id: String,
    pub purpose: String,
    pub at: Timestamp,
    pub verdict: Verdict,
}

/// Judges one subject, keeping every covering record for the operator to see.
pub fn explain(
    path: &Path,
    schema: Option<&SchemaKind>,
    subject: &str,
    purpose: &str,
    as_of: Timestamp,
    rules: &Rules,
) -> Result<Explanation> {
    let db = Db::open(path)?;
    let schema = match schema {
        Some(s) => s.clone(),
        None => db.detect()?,
    };
    let plan = db.plan(&schema)?;
    db.conn.execute_batch("BEGIN").map_err(|e| db.sqlite(e))?;
    let (derivers, _) = derivers_with_subjects(&db, &plan, purpose)?;
    let mut own = State::EMPTY;
    let mut own_decider = None;
    let mut by_deriver: BTreeMap<u16, (State, bool, Option<String>)> = BTreeMap::new();
    let mut records = Vec::new();
    scan(
        &db,
        &plan,
        purpose,
        &derivers,
        Some(subject),
        as_of,
        rules,
        |row| {
            let label = match row.deriver {
                None => purpose.to_string(),
                Some(q) => derivers[q as usize].clone(),
            };
            records.push(ExplainedRecord {
                id: row.id.clone(),
                purpose: label,
                at: row.at,
                verdict: row.verdict,
            });
            match row.deriver {
                None => {
                    if own.add(row.at, row.verdict) {
                        own_decider = Some(row.id);
                    }
                }
                Some(q) => {
                    let slot = by_deriver.entry(q).or_insert((State::EMPTY, false, None));
                    if slot.0.add(row.at, row.verdict) {
                        slot.2 = Some(row.id);
                    }
                    slot.1 |= row.derives;
                }
            }
            Ok(())
        },
    )?;
    db.conn.execute_batch("COMMIT").map_err(|e| db.sqlite(e))?;
    let mut state = own;
    let mut decider = own_decider;
    for (q, (s, derives, id)) in by_deriver {
        if !derives {
            records.retain(|r| r.purpose != derivers[q as usize]);
            continue;
        }
        let before = (state.at, state.verdict);
        state.merge(s);
        if (state.at, state.verdict) != before {
            decider = id;
        }
    }
    let verdict = state.verdict(plan.fold);
    if plan.fold == Fold::AnyValid && verdict.is_valid() {
        decider = records
            .iter()
            .find(|r| r.verdict.is_valid())
            .map(|r| r.id.clone());
    }
    records.sort_by(|a, b| a.at.cmp(&b.at).then(a.id.cmp(&b.id)));
    Ok(Explanation {
        schema: schema.name(),
        purpose: purpose.to_string(),
        as_of,
        verdict,
        deciding_record: if verdict == Verdict::NoConsent {
            None
        } else {
            decider
        },
        records,
    })
}

/// What `consent inspect` shows about a snapshot.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub file: SnapshotFile,
    pub schema: &'static str,
    pub table: String,
    pub records: u64,
    pub subjects: u64,
    pub purposes: Vec<PurposeCounts>,
    pub earliest: Option<Timestamp>,
    pub latest: Option<Timestamp>,
}

#[derive(Debug, Serialize)]
pub struct PurposeCounts {
    pub purpose: String,
    pub subjects: u64,
    pub records_by_status: BTreeMap<String, u64>,
}

/// Counts records and subjects per purpose and status, and the span of event times.
pub fn inspect(path: &Path, schema: Option<&SchemaKind>) -> Result<Inspection> {
    let file = hash_file(path)?;
    let db = Db::open(path)?;
    let schema = match schema {
        Some(s) => s.clone(),
        None => db.detect()?,
    };
    let plan = db.plan(&schema)?;
    let (t, p, u) = (&plan.table, &plan.cols["purpose"], &plan.cols["user_id"]);
    let status = match plan.kind {
        PlanKind::Records => format!("lower({})", plan.cols["status"]),
        PlanKind::Dpdp => format!(
            "CASE WHEN {w} IS NOT NULL THEN 'withdrawn' WHEN {g} IN (1, '1', 'true', 'TRUE') THEN 'granted' ELSE 'not_granted' END",
            w = plan.cols["withdrawn_at"],
            g = plan.cols["granted"]
        ),
    };
    db.conn.execute_batch("BEGIN").map_err(|e| db.sqlite(e))?;
    let mut purposes: BTreeMap<String, PurposeCounts> = BTreeMap::new();
    let mut records = 0;
    {
        let sql = format!("SELECT {p}, {status}, count(*) FROM {t} GROUP BY 1, 2");
        let mut stmt = db.conn.prepare(&sql).map_err(|e| db.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| db.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| db.sqlite(e))? {
            let purpose = display_text(row.get_ref(0).map_err(|e| db.sqlite(e))?);
            let status = display_text(row.get_ref(1).map_err(|e| db.sqlite(e))?);
            let n: i64 = row.get(2).map_err(|e| db.sqlite(e))?;
            records += n as u64;
            let entry = purposes
                .entry(purpose.clone())
                .or_insert_with(|| PurposeCounts {
                    purpose,
                    subjects: 0,
                    records_by_status: BTreeMap::new(),
                });
            *entry.records_by_status.entry(status).or_default() += n as u64;
        }
        let sql = format!("SELECT {p}, count(DISTINCT {u}) FROM {t} GROUP BY 1");
        let mut stmt = db.conn.prepare(&sql).map_err(|e| db.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| db.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| db.sqlite(e))? {
            let purpose = display_text(row.get_ref(0).map_err(|e| db.sqlite(e))?);
            let n: i64 = row.get(1).map_err(|e| db.sqlite(e))?;
            if let Some(entry) = purposes.get_mut(&purpose) {
                entry.subjects = n as u64;
            }
        }
    }
    let subjects: i64 = db
        .conn
        .query_row(&format!("SELECT count(DISTINCT {u}) FROM {t}"), [], |r| {
            r.get(0)
        })
        .map_err(|e| db.sqlite(e))?;
    let time_cols: Vec<&String> = ["created_at", "granted_at", "revoked_at", "withdrawn_at"]
        .iter()
        .filter_map(|c| plan.cols.get(c))
        .collect();
    let (mut earliest, mut latest) = (None::<Timestamp>, None::<Timestamp>);
    if !time_cols.is_empty() {
        let id = plan
            .cols
            .get("id")
            .cloned()
            .unwrap_or_else(|| "rowid".into());
        let sql = format!(
            "SELECT {id}, {} FROM {t}",
            time_cols
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut stmt = db.conn.prepare(&sql).map_err(|e| db.sqlite(e))?;
        let mut rows = stmt.query([]).map_err(|e| db.sqlite(e))?;
        while let Some(row) = rows.next().map_err(|e| db.sqlite(e))? {
            for (i, col) in time_cols.iter().enumerate() {
                let v = row.get_ref(i + 1).map_err(|e| db.sqlite(e))?;
                let ts = timestamp(v).map_err(|e| {
                    let id = row.get_ref(0).map(display_value).unwrap_or_default();
                    db.err(format!(
                        "table {}, row id {id}: {} {e}",
                        t.trim_matches('"'),
                        col.trim_matches('"')
                    ))
                })?;
                if let Some(ts) = ts {
                    earliest = Some(earliest.map_or(ts, |e| e.min(ts)));
                    latest = Some(latest.map_or(ts, |l| l.max(ts)));
                }
            }
        }
    }
    db.conn.execute_batch("COMMIT").map_err(|e| db.sqlite(e))?;
    Ok(Inspection {
        file,
        schema: schema.name(),
        table: t.trim_matches('"').to_string(),
        records,
        subjects: subjects as u64,
        purposes: purposes.into_values().collect(),
        earliest,
        latest,
    })
}

fn display_text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        other => display_value(other),
    }
}

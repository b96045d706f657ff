//! The job spec: TOML types, their validation, and resolution into a ready `Job`.
//!
//! Unknown keys are errors (a typo must not silently disable a rule), relative paths
//! resolve against the directory of the job file, and every mistake is reported with
//! the spec's path before anything is read or written. This module does not open
//! datasets or snapshots; it only says where they are.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::consent::{ColumnMap, Rules, SchemaKind};
use crate::error::{Error, Result};
use crate::time::Timestamp;

pub const DEFAULT_INCLUDE: [&str; 4] = ["*.jsonl", "*.jsonl.gz", "*.jsonl.zst", "*.parquet"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Filter,
    Erase,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Filter => "filter",
            Kind::Erase => "erase",
        }
    }
}

/// A validated job, every path absolute.
#[derive(Debug, Clone)]
pub struct Job {
    pub spec_path: PathBuf,
    pub base_dir: PathBuf,
    pub spec_sha256: String,
    pub name: String,
    pub kind: Kind,
    pub as_of: Option<Timestamp>,
    pub consent: Option<ConsentSpec>,
    pub input: InputSpec,
    pub output: Option<OutputSpec>,
    pub erase: Option<EraseSpec>,
    pub report: ReportSpec,
}

#[derive(Debug, Clone)]
pub struct ConsentSpec {
    pub snapshot: PathBuf,
    pub schema: SchemaKind,
    pub purpose: String,
    pub rules: Rules,
}

#[derive(Debug, Clone)]
pub struct InputSpec {
    pub paths: Vec<PathBuf>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub subject_field: String,
}

#[derive(Debug, Clone)]
pub struct OutputSpec {
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct EraseSpec {
    pub subjects_file: Option<PathBuf>,
    pub subjects_from_revocations: bool,
    pub datasets: bool,
    pub embeddings: Vec<EmbeddingSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    DirPerSubject,
    FilePerSubject,
    Table,
}

#[derive(Debug, Clone)]
pub struct EmbeddingSpec {
    pub path: PathBuf,
    pub layout: Layout,
    pub subject_field: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ReportSpec {
    pub dir: PathBuf,
    pub signing_key: PathBuf,
    pub pseudonym_key: PathBuf,
    /// Create the key files when they are missing. Meant for demos and first runs;
    /// production jobs should point at keys made once with `consentry keygen`.
    pub create_keys: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    job: RawJob,
    consent: Option<RawConsent>,
    input: RawInput,
    output: Option<RawOutput>,
    erase: Option<RawErase>,
    report: RawReport,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: String,
    kind: String,
    as_of: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    snapshot: PathBuf,
    schema: Option<String>,
    purpose: String,
    min_notice_version: Option<i64>,
    required_categories: Option<Vec<String>>,
    allowed_legal_bases: Option<Vec<String>>,
    columns: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    paths: Vec<PathBuf>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    subject_field: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    dir: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErase {
    subjects_file: Option<PathBuf>,
    #[serde(default)]
    subjects_from_revocations: bool,
    #[serde(default = "yes")]
    datasets: bool,
    #[serde(default)]
    embeddings: Vec<RawEmbedding>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedding {
    path: PathBuf,
    layout: Layout,
    subject_field: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    dir: PathBuf,
    signing_key: PathBuf,
    pseudonym_key: PathBuf,
    #[serde(default)]
    create_keys: bool,
}

impl Job {
    /// Reads, parses and validates the job spec at `path`.
    pub fn load(path: &Path) -> Result<Job> {
        let bytes = std::fs::read(path).map_err(|source| Error::JobRead {
            path: path.to_path_buf(),
            source,
        })?;
        let text = std::str::from_utf8(&bytes).map_err(|_| Error::spec(path, "not UTF-8 text"))?;
        let raw: RawSpec = toml::from_str(text)
            .map_err(|e| Error::spec(path, e.to_string().trim_end().to_string()))?;
        let abs = std::path::absolute(path).map_err(|e| Error::io("cannot resolve", path, e))?;
        let base_dir = abs
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        let spec_sha256 = hex::encode(Sha256::digest(&bytes));
        Resolver {
            spec: path,
            base: &base_dir,
        }
        .resolve(raw, abs.clone(), spec_sha256)
    }
}

struct Resolver<'a> {
    spec: &'a Path,
    base: &'a Path,
}

impl Resolver<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::spec(self.spec, message)
    }

    fn path(&self, p: &Path, key: &str) -> Result<PathBuf> {
        if p.as_os_str().is_empty() {
            return Err(self.err(format!("{key} is empty")));
        }
        Ok(lexical_normalize(&self.base.join(p)))
    }

    fn resolve(&self, raw: RawSpec, spec_path: PathBuf, spec_sha256: String) -> Result<Job> {
        let name = raw.job.name;
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(self.err(format!("[job] name {name:?} must match [A-Za-z0-9._-]+")));
        }
        let kind = match raw.job.kind.as_str() {
            "filter" => Kind::Filter,
            "erase" => Kind::Erase,
            other => {
                return Err(self.err(format!(
                    "[job] kind {other:?} must be \"filter\" or \"erase\""
                )))
            }
        };
        let as_of = match raw.job.as_of {
            None => None,
            Some(s) => Some(
                Timestamp::parse(&s).map_err(|e| self.err(format!("[job] as_of {s:?}: {e}")))?,
            ),
        };

        let erase = match (kind, raw.erase) {
            (Kind::Erase, Some(e)) => Some(self.erase(e)?),
            (Kind::Erase, None) => return Err(self.err("an erase job needs an [erase] section")),
            (Kind::Filter, Some(_)) => {
                return Err(self.err("[erase] is only for erase jobs (kind = \"erase\")"))
            }
            (Kind::Filter, None) => None,
        };
        let needs_consent =
            kind == Kind::Filter || erase.as_ref().is_some_and(|e| e.subjects_from_revocations);
        let consent = match raw.consent {
            Some(c) => Some(self.consent(c)?),
            None if needs_consent => {
                return Err(self.err(match kind {
                    Kind::Filter => "a filter job needs a [consent] section",
                    Kind::Erase => "subjects_from_revocations needs a [consent] section",
                }))
            }
            None => None,
        };

        let input = self.input(raw.input)?;
        let output =
            match (kind, raw.output) {
                (Kind::Filter, Some(o)) => Some(OutputSpec {
                    dir: self.path(&o.dir, "[output] dir")?,
                }),
                (Kind::Filter, None) => {
                    return Err(self.err("a filter job needs an [output] section with dir"))
                }
                (Kind::Erase, Some(_)) => return Err(self.err(
                    "[output] is only for filter jobs: an erase job rewrites its inputs in place",
                )),
                (Kind::Erase, None) => None,
            };
        if let Some(out) = &output {
            for p in &input.paths {
                if out.dir.starts_with(p) || p.starts_with(&out.dir) {
                    return Err(self.err(format!(
                        "[output] dir {} overlaps input {}: outputs must not land in an input tree",
                        out.dir.display(),
                        p.display()
                    )));
                }
            }
        }
        let report = ReportSpec {
            dir: self.path(&raw.report.dir, "[report] dir")?,
            signing_key: self.path(&raw.report.signing_key, "[report] signing_key")?,
            pseudonym_key: self.path(&raw.report.pseudonym_key, "[report] pseudonym_key")?,
            create_keys: raw.report.create_keys,
        };
        Ok(Job {
            spec_path,
            base_dir: self.base.to_path_buf(),
            spec_sha256,
            name,
            kind,
            as_of,
            consent,
            input,
            output,
            erase,
            report,
        })
    }

    fn consent(&self, c: RawConsent) -> Result<ConsentSpec> {
        let schema = match (c.schema.as_deref().unwrap_or("consent-records"), c.columns) {
            ("custom", Some(columns)) => {
                SchemaKind::Custom(ColumnMap::try_new(columns).map_err(|e| self.err(format!("[consent.columns] {e}")))?)
            }
            ("custom", None) => return Err(self.err("schema = \"custom\" needs a [consent.columns] table")),
            (_, Some(_)) => return Err(self.err("[consent.columns] is only for schema = \"custom\"")),
            (name, None) => SchemaKind::from_name(name).ok_or_else(|| {
                self.err(format!(
                    "[consent] schema {name:?} must be \"consent-records\", \"dpdp-cmp\" or \"custom\""
                ))
            })?,
        };
        if c.purpose.is_empty() {
            return Err(self.err("[consent] purpose is empty"));
        }
        let allowed_legal_bases = c
            .allowed_legal_bases
            .unwrap_or_else(|| vec!["consent".to_string()]);
        if allowed_legal_bases.is_empty() {
            return Err(
                self.err("[consent] allowed_legal_bases is empty: no record could ever be valid")
            );
        }
        Ok(ConsentSpec {
            snapshot: self.path(&c.snapshot, "[consent] snapshot")?,
            schema,
            purpose: c.purpose,
            rules: Rules {
                min_notice_version: c.min_notice_version,
                required_categories: c.required_categories.unwrap_or_default(),
                allowed_legal_bases,
            },
        })
    }

    fn input(&self, i: RawInput) -> Result<InputSpec> {
        if i.paths.is_empty() {
            return Err(self.err("[input] paths is empty"));
        }
        let paths = i
            .paths
            .iter()
            .map(|p| self.path(p, "[input] paths"))
            .collect::<Result<Vec<_>>>()?;
        let include = i
            .include
            .unwrap_or_else(|| DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect());
        if include.is_empty() {
            return Err(self.err("[input] include is empty: no file would be read"));
        }
        let exclude = i.exclude.unwrap_or_default();
        for pattern in include.iter().chain(&exclude) {
            globset::Glob::new(pattern)
                .map_err(|e| self.err(format!("[input] pattern {pattern:?}: {e}")))?;
        }
        crate::dataset::scan::SubjectPath::parse(&i.subject_field)
            .map_err(|e| self.err(format!("[input] subject_field {:?}: {e}", i.subject_field)))?;
        Ok(InputSpec {
            paths,
            include,
            exclude,
            subject_field: i.subject_field,
        })
    }

    fn erase(&self, e: RawErase) -> Result<EraseSpec> {
        if e.subjects_file.is_none() && !e.subjects_from_revocations {
            return Err(self.err("[erase] names no subjects: set subjects_file and/or subjects_from_revocations = true"));
        }
        let subjects_file = e
            .subjects_file
            .map(|p| self.path(&p, "[erase] subjects_file"))
            .transpose()?;
        let mut embeddings = Vec::new();
        for emb in e.embeddings {
            match (emb.layout, &emb.subject_field) {
                (Layout::Table, None) => {
                    return Err(
                        self.err("[[erase.embeddings]] layout = \"table\" needs subject_field")
                    )
                }
                (Layout::DirPerSubject | Layout::FilePerSubject, Some(_)) => {
                    return Err(self
                        .err("[[erase.embeddings]] subject_field is only for layout = \"table\""))
                }
                _ => {}
            }
            let path = self.path(&emb.path, "[[erase.embeddings]] path")?;
            // A root swept twice would count its entries twice.
            if embeddings.iter().any(|e: &EmbeddingSpec| e.path == path) {
                return Err(self.err(format!(
                    "[[erase.embeddings]] path {} is listed twice",
                    emb.path.display()
                )));
            }
            embeddings.push(EmbeddingSpec {
                path,
                layout: emb.layout,
                subject_field: emb.subject_field,
            });
        }
        Ok(EraseSpec {
            subjects_file,
            subjects_from_revocations: e.subjects_from_revocations,
            datasets: e.datasets,
            embeddings,
        })
    }
}

/// Removes `.` and resolves `..` without touching the file system, so that overlap checks
/// and mirrored output paths work on paths that do not exist yet.
pub fn lexical_normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

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
use toml::Spanned;

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
    output: Option<Spanned<RawOutput>>,
    erase: Option<Spanned<RawErase>>,
    report: RawReport,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Spanned<String>,
    kind: Spanned<String>,
    as_of: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    snapshot: Spanned<PathBuf>,
    schema: Option<Spanned<String>>,
    purpose: Spanned<String>,
    min_notice_version: Option<i64>,
    required_categories: Option<Vec<String>>,
    allowed_legal_bases: Option<Spanned<Vec<String>>>,
    columns: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput {
    paths: Spanned<Vec<Spanned<PathBuf>>>,
    include: Option<Spanned<Vec<Spanned<String>>>>,
    exclude: Option<Vec<Spanned<String>>>,
    subject_field: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    dir: Spanned<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErase {
    subjects_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    subjects_from_revocations: bool,
    #[serde(default = "yes")]
    datasets: bool,
    #[serde(default)]
    embeddings: Vec<Spanned<RawEmbedding>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEmbedding {
    path: Spanned<PathBuf>,
    layout: Spanned<Layout>,
    subject_field: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReport {
    dir: Spanned<PathBuf>,
    signing_key: Spanned<PathBuf>,
    pseudonym_key: Spanned<PathBuf>,
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
            text,
            base: &base_dir,
        }
        .resolve(raw, abs.clone(), spec_sha256)
    }
}

struct Resolver<'a> {
    spec: &'a Path,
    /// The spec's text, to name the line of a value that is wrong.
    text: &'a str,
    base: &'a Path,
}

impl Resolver<'_> {
    fn err(&self, message: impl Into<String>) -> Error {
        Error::spec(self.spec, message)
    }

    /// An error about the value written at `at`, naming its line.
    fn err_at<T>(&self, at: &Spanned<T>, message: impl std::fmt::Display) -> Error {
        let start = at.span().start.min(self.text.len());
        let line = self.text.as_bytes()[..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::spec(self.spec, format!("line {line}: {message}"))
    }

    fn path(&self, p: &Spanned<PathBuf>, key: &str) -> Result<PathBuf> {
        if p.get_ref().as_os_str().is_empty() {
            return Err(self.err_at(p, format!("{key} is empty")));
        }
        Ok(lexical_normalize(&self.base.join(p.get_ref())))
    }

    fn resolve(&self, raw: RawSpec, spec_path: PathBuf, spec_sha256: String) -> Result<Job> {
        let name = raw.job.name.get_ref().clone();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(self.err_at(
                &raw.job.name,
                format!("[job] name {name:?} must match [A-Za-z0-9._-]+"),
            ));
        }
        let kind = match raw.job.kind.get_ref().as_str() {
            "filter" => Kind::Filter,
            "erase" => Kind::Erase,
            other => {
                return Err(self.err_at(
                    &raw.job.kind,
                    format!("[job] kind {other:?} must be \"filter\" or \"erase\""),
                ))
            }
        };
        let as_of = match &raw.job.as_of {
            None => None,
            Some(s) => Some(
                Timestamp::parse(s.get_ref())
                    .map_err(|e| self.err_at(s, format!("[job] as_of {:?}: {e}", s.get_ref())))?,
            ),
        };

        let erase = match (kind, raw.erase) {
            (Kind::Erase, Some(e)) => Some(self.erase(e)?),
            (Kind::Erase, None) => return Err(self.err("an erase job needs an [erase] section")),
            (Kind::Filter, Some(e)) => {
                return Err(self.err_at(&e, "[erase] is only for erase jobs (kind = \"erase\")"))
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
        let output = match (kind, raw.output) {
            (Kind::Filter, Some(o)) => {
                let dir = &o.get_ref().dir;
                let out = self.path(dir, "[output] dir")?;
                for p in &input.paths {
                    if out.starts_with(p) || p.starts_with(&out) {
                        return Err(self.err_at(
                            dir,
                            format!(
                                "[output] dir {} overlaps input {}: outputs must not land in an input tree",
                                out.display(),
                                p.display()
                            ),
                        ));
                    }
                }
                Some(OutputSpec { dir: out })
            }
            (Kind::Filter, None) => {
                return Err(self.err("a filter job needs an [output] section with dir"))
            }
            (Kind::Erase, Some(o)) => {
                return Err(self.err_at(
                    &o,
                    "[output] is only for filter jobs: an erase job rewrites its inputs in place",
                ))
            }
            (Kind::Erase, None) => None,
        };
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
        let schema_name = c
            .schema
            .as_ref()
            .map_or("consent-records", |s| s.get_ref().as_str());
        let schema = match (schema_name, c.columns) {
            ("custom", Some(columns)) => {
                let at = columns.span();
                SchemaKind::Custom(ColumnMap::try_new(columns.into_inner()).map_err(|e| {
                    self.err_at(&Spanned::new(at, ()), format!("[consent.columns] {e}"))
                })?)
            }
            ("custom", None) => {
                return Err(self.err("schema = \"custom\" needs a [consent.columns] table"))
            }
            (_, Some(columns)) => {
                return Err(
                    self.err_at(&columns, "[consent.columns] is only for schema = \"custom\"")
                )
            }
            (name, None) => SchemaKind::from_name(name).ok_or_else(|| {
                let message = format!(
                    "[consent] schema {name:?} must be \"consent-records\", \"dpdp-cmp\" or \"custom\""
                );
                match &c.schema {
                    Some(at) => self.err_at(at, message),
                    None => self.err(message),
                }
            })?,
        };
        if c.purpose.get_ref().is_empty() {
            return Err(self.err_at(&c.purpose, "[consent] purpose is empty"));
        }
        let allowed_legal_bases = match c.allowed_legal_bases {
            None => vec!["consent".to_string()],
            Some(b) if b.get_ref().is_empty() => {
                return Err(self.err_at(
                    &b,
                    "[consent] allowed_legal_bases is empty: no record could ever be valid",
                ))
            }
            Some(b) => b.into_inner(),
        };
        Ok(ConsentSpec {
            snapshot: self.path(&c.snapshot, "[consent] snapshot")?,
            schema,
            purpose: c.purpose.into_inner(),
            rules: Rules {
                min_notice_version: c.min_notice_version,
                required_categories: c.required_categories.unwrap_or_default(),
                allowed_legal_bases,
            },
        })
    }

    fn input(&self, i: RawInput) -> Result<InputSpec> {
        if i.paths.get_ref().is_empty() {
            return Err(self.err_at(&i.paths, "[input] paths is empty"));
        }
        let paths = i
            .paths
            .get_ref()
            .iter()
            .map(|p| self.path(p, "[input] paths"))
            .collect::<Result<Vec<_>>>()?;
        let include = match i.include {
            None => DEFAULT_INCLUDE.iter().map(|s| s.to_string()).collect(),
            Some(list) if list.get_ref().is_empty() => {
                return Err(self.err_at(&list, "[input] include is empty: no file would be read"))
            }
            Some(list) => self.patterns(list.into_inner())?,
        };
        let exclude = self.patterns(i.exclude.unwrap_or_default())?;
        let field = &i.subject_field;
        crate::dataset::scan::SubjectPath::parse(field.get_ref()).map_err(|e| {
            self.err_at(
                field,
                format!("[input] subject_field {:?}: {e}", field.get_ref()),
            )
        })?;
        Ok(InputSpec {
            paths,
            include,
            exclude,
            subject_field: i.subject_field.into_inner(),
        })
    }

    /// Glob patterns of `include` or `exclude`, each checked.
    fn patterns(&self, list: Vec<Spanned<String>>) -> Result<Vec<String>> {
        list.into_iter()
            .map(|p| match globset::Glob::new(p.get_ref()) {
                Ok(_) => Ok(p.into_inner()),
                Err(e) => Err(self.err_at(&p, format!("[input] pattern {:?}: {e}", p.get_ref()))),
            })
            .collect()
    }

    fn erase(&self, section: Spanned<RawErase>) -> Result<EraseSpec> {
        if section.get_ref().subjects_file.is_none() && !section.get_ref().subjects_from_revocations
        {
            return Err(self.err_at(
                &section,
                "[erase] names no subjects: set subjects_file and/or subjects_from_revocations = true",
            ));
        }
        let e = section.into_inner();
        let subjects_file = e
            .subjects_file
            .map(|p| self.path(&p, "[erase] subjects_file"))
            .transpose()?;
        let mut embeddings = Vec::new();
        for emb in e.embeddings {
            let emb = emb.into_inner();
            match (emb.layout.get_ref(), &emb.subject_field) {
                (Layout::Table, None) => {
                    return Err(self.err_at(
                        &emb.layout,
                        "[[erase.embeddings]] layout = \"table\" needs subject_field",
                    ))
                }
                (Layout::DirPerSubject | Layout::FilePerSubject, Some(field)) => {
                    return Err(self.err_at(
                        field,
                        "[[erase.embeddings]] subject_field is only for layout = \"table\"",
                    ))
                }
                _ => {}
            }
            let path = self.path(&emb.path, "[[erase.embeddings]] path")?;
            // A root swept twice would count its entries twice.
            if embeddings.iter().any(|e: &EmbeddingSpec| e.path == path) {
                return Err(self.err_at(
                    &emb.path,
                    format!(
                        "[[erase.embeddings]] path {} is listed twice",
                        emb.path.get_ref().display()
                    ),
                ));
            }
            embeddings.push(EmbeddingSpec {
                path,
                layout: emb.layout.into_inner(),
                subject_field: emb.subject_field.map(Spanned::into_inner),
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

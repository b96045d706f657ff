//! Test helpers: a temp directory per test, fixtures built from text, and a runner for the
//! real `consentry` binary that captures exit code, stdout and stderr.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_consentry");

/// The longest any one run of the binary may take in a test.
pub const RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

/// The repository root (for the bundled fixtures and jobs).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a command did.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Fails the test with everything the command printed unless it exited with `code`.
    pub fn expect(self, code: i32) -> Output {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A scratch directory that lives as long as the test.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("consentry-test-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file, creating its directories.
    pub fn write(&self, rel: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    pub fn read_string(&self, rel: &str) -> String {
        String::from_utf8(self.read(rel)).unwrap()
    }

    /// Builds a SQLite database from SQL text.
    pub fn sqlite(&self, rel: &str, sql: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&path);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(sql).unwrap();
        path
    }

    /// Makes a key directory `keys/` with `consentry keygen`.
    pub fn keys(&self) -> PathBuf {
        let dir = self.path("keys");
        if !dir.join("signing.key").exists() {
            self.run(&["keygen", "--out", dir.to_str().unwrap()])
                .expect(0);
        }
        dir
    }

    /// Runs the binary here. A run that has not ended after `RUN_LIMIT` is killed and fails
    /// the test, so a hang (a FIFO read, a lock never released) fails CI instead of stalling it.
    pub fn run(&self, args: &[&str]) -> Output {
        use std::io::Read;
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run consentry");
        let drain = |mut pipe: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                String::from_utf8_lossy(&bytes).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().unwrap()));
        let stderr = drain(Box::new(child.stderr.take().unwrap()));
        // Polled rather than killed by PID from another thread: the child is not reaped until
        // `try_wait` sees it end, so `kill` can never reach a reused PID.
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_micros(200);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for consentry") {
                break status;
            }
            if started.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("consentry {args:?} did not end within {RUN_LIMIT:?}; killed");
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(5));
        };
        Output {
            code: status.code().unwrap_or(-1),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        }
    }

    /// Writes `job.toml` for a filter job over `data/` into `out/`, with keys and reports in
    /// this directory. `consent` is the body of the [consent] section; `extra` is appended.
    pub fn filter_job(&self, consent: &str, subject_field: &str, extra: &str) -> PathBuf {
        self.keys();
        self.write(
            "job.toml",
            format!(
                "[job]\nname = \"t\"\nkind = \"filter\"\nas_of = \"2026-11-01T00:00:00Z\"\n\n\
                 [consent]\n{consent}\n\n[input]\npaths = [\"data\"]\nsubject_field = \"{subject_field}\"\n\n\
                 [output]\ndir = \"out\"\n\n[report]\ndir = \"reports\"\nsigning_key = \"keys/signing.key\"\n\
                 pseudonym_key = \"keys/pseudonym.key\"\n{extra}"
            ),
        )
    }

    /// The signed reports in `reports/`, oldest first (their names start with the sequence).
    pub fn reports(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.path("reports"))
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".dsse.json"))
            .collect();
        files.sort();
        files
    }

    /// The decoded in-toto statement of the newest report in `reports/`.
    pub fn last_statement(&self) -> serde_json::Value {
        let files = self.reports();
        let env: serde_json::Value =
            serde_json::from_slice(&std::fs::read(files.last().unwrap()).unwrap()).unwrap();
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::STANDARD
            .decode(env["payload"].as_str().unwrap())
            .unwrap();
        serde_json::from_slice(&payload).unwrap()
    }
}

/// A consent-records table with one row per (user, status, time); other columns NULL.
pub const RECORDS_TABLE: &str = "CREATE TABLE consent_records (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, \
    purpose TEXT NOT NULL, status TEXT NOT NULL, granted_at DATETIME, revoked_at DATETIME, expiry_at DATETIME, \
    notice_version INTEGER, data_categories TEXT, legal_basis TEXT, derived_purposes TEXT, created_at DATETIME);";

/// gzip bytes as one member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(data), &mut out).unwrap();
    out
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 3).unwrap()
}

pub fn unzstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(data).unwrap()
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A Parquet fixture made by another writer (fixtures/parquet/make.py).
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("fixtures/parquet").join(name)).unwrap()
}

/// Every row of a Parquet file, as one batch.
pub fn read_all(path: &Path) -> arrow::array::RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let builder =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let schema = builder.schema().clone();
    let batches: Vec<_> = builder.build().unwrap().map(Result::unwrap).collect();
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// A column of a batch as text, in row order.
pub fn text_column(batch: &arrow::array::RecordBatch, name: &str) -> Vec<Option<String>> {
    use arrow::array::AsArray;
    let col = arrow::compute::cast(
        batch.column_by_name(name).unwrap(),
        &arrow::datatypes::DataType::Utf8,
    )
    .unwrap();
    col.as_string::<i32>()
        .iter()
        .map(|v| v.map(String::from))
        .collect()
}

/// The `doc` ids of a batch's rows, in order.
pub fn docs_of(batch: &arrow::array::RecordBatch) -> Vec<String> {
    text_column(batch, "doc")
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// The `doc` ids of a Parquet file's rows, in order.
pub fn docs(path: &Path) -> Vec<String> {
    docs_of(&read_all(path))
}

/// The unit tests' seeded generator, so both test crates draw the same way.
#[path = "../src/testing.rs"]
mod testing;
pub use testing::Rng;

/// `len` lowercase ASCII letters.
pub fn text(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| (b'a' + rng.below(26) as u8) as char)
        .collect()
}

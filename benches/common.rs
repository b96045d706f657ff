//! Bench data shared by the benches: corpus-shaped JSONL lines and a consent snapshot,
//! generated from a fixed seed so every run times the same work.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use consentry::consent::{self, Rules, SchemaKind};
use consentry::time::Timestamp;

const WORDS: &[&str] = &[
    "consent", "data", "model", "training", "purpose", "notice", "record", "subject", "erasure",
    "audit", "the", "a", "of", "and", "to", "in", "is", "for", "on", "with",
];

/// A small xorshift generator: the bench data is the same on every run.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

/// Lines shaped like the pre-training corpus of `compare.py`: ~800 bytes, subject `u%08d`.
pub fn corpus(lines: usize, users: u64, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(lines * 900);
    for n in 0..lines {
        let words: Vec<&str> = (0..60 + rng.below(160))
            .map(|_| WORDS[rng.below(WORDS.len() as u64) as usize])
            .collect();
        let text = words.join(" ");
        let line = format!(
            "{{\"id\":\"doc-{n:010}\",\"user_id\":\"u{:08}\",\"source\":\"forum\",\"created_at\":\"2025-03-01T10:00:00Z\",\"text\":\"{text}\",\"meta\":{{\"lang\":\"en\",\"tokens\":{}}}}}\n",
            rng.below(users),
            text.len() / 4
        );
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// A snapshot where every even-numbered user holds valid consent.
pub fn snapshot(dir: &Path, users: u64) -> consent::Snapshot {
    let path = dir.join("consent.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE consent_records (id INTEGER PRIMARY KEY, user_id TEXT, purpose TEXT, status TEXT, created_at TEXT);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut insert = tx
            .prepare("INSERT INTO consent_records (user_id, purpose, status, created_at) VALUES (?1, 'model_training', ?2, '2025-01-01T00:00:00Z')")
            .unwrap();
        for u in 0..users {
            insert
                .execute((
                    format!("u{u:08}"),
                    if u % 2 == 0 { "granted" } else { "revoked" },
                ))
                .unwrap();
        }
    }
    tx.commit().unwrap();
    let as_of = Timestamp::parse("2026-11-01T00:00:00Z").unwrap();
    consent::load(
        &path,
        &SchemaKind::ConsentRecords,
        "model_training",
        as_of,
        &Rules::default(),
    )
    .unwrap()
}

/// The `u%08d` subject of a corpus line.
pub fn user(line: &str) -> &str {
    let at = line.find("\"user_id\":\"").unwrap() + 11;
    &line[at..at + 9]
}

/// Writes the corpus lines as a zstd Parquet file of 8k-row groups (id, user_id, line), as
/// pyarrow and arrow-rs write one: the long `text` column overflows its dictionary and is
/// stored PLAIN.
pub fn parquet_of(lines: &[u8], path: &Path) {
    let rows: Vec<&str> = std::str::from_utf8(lines).unwrap().lines().collect();
    let users: Vec<&str> = rows.iter().map(|l| user(l)).collect();
    let ids: Vec<String> = (0..rows.len()).map(|i| format!("doc-{i:010}")).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(users)),
            Arc::new(StringArray::from(rows)),
        ],
    )
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(8192))
        .build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

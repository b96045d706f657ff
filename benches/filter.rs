//! Filter throughput: the subject scanner alone, and a whole JSONL file through `Filter::run`.
//!
//! Data is generated outside the timed loop from a fixed seed, and every iteration asserts
//! the rows it kept, so the bench cannot time a no-op.

use std::path::Path;
use std::sync::Arc;

use consentry::consent::{self, Rules, SchemaKind};
use consentry::dataset::scan::{classify, Line, SubjectPath};
use consentry::dataset::{Codec, Format, InputFile};
use consentry::ops::filter::{ConsentRule, Filter};
use consentry::ops::rows::Engine;
use consentry::time::Timestamp;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const WORDS: &[&str] = &[
    "consent", "data", "model", "training", "purpose", "notice", "record", "subject", "erasure",
    "audit", "the", "a", "of", "and", "to", "in", "is", "for", "on", "with",
];

/// A small xorshift generator: the bench data is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Lines shaped like the pre-training corpus of `compare.py`: ~800 bytes, subject `u%08d`.
fn corpus(lines: usize, users: u64, seed: u64) -> Vec<u8> {
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
fn snapshot(dir: &Path, users: u64) -> consent::Snapshot {
    let path = dir.join("consent.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE consent_records (id INTEGER PRIMARY KEY, user_id TEXT, purpose TEXT, status TEXT, created_at TEXT);",
    )
    .unwrap();
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO consent_records (user_id, purpose, status, created_at) VALUES (?1, 'model_training', ?2, '2025-01-01T00:00:00Z')").unwrap();
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

fn expected_kept(data: &[u8], snapshot: &consent::Snapshot, path: &SubjectPath) -> u64 {
    data.split(|&b| b == b'\n')
        .filter(
            |l| matches!(classify(l, path), Line::Subject(id) if snapshot.verdict(&id).is_valid()),
        )
        .count() as u64
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let users = 20_000;
    let data = corpus(40_000, users, 7);
    let snap = snapshot(dir.path(), users);
    let path = SubjectPath::parse("user_id").unwrap();
    let want = expected_kept(&data, &snap, &path);
    assert!(
        want > 10_000 && want < 30_000,
        "about half the rows are kept: {want}"
    );

    let mut group = c.benchmark_group("filter");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("classify", |b| {
        b.iter(|| {
            let subjects = data
                .split(|&b| b == b'\n')
                .filter(|l| matches!(classify(l, &path), Line::Subject(_)))
                .count();
            assert_eq!(subjects, 40_000);
        })
    });

    let input = dir.path().join("in/part.jsonl");
    std::fs::create_dir_all(input.parent().unwrap()).unwrap();
    std::fs::write(&input, &data).unwrap();
    let file = InputFile {
        path: input.clone(),
        rel: "part.jsonl".into(),
        format: Some(Format::Jsonl(Codec::None)),
        bytes: data.len() as u64,
    };
    let out_root = dir.path().join("out");
    let show = |p: &Path| p.display().to_string();
    let on_rows = |_n: u64| {};
    let op = Filter {
        engine: Engine {
            subject: &path,
            chunk_size: 4 << 20,
            chunks_per_batch: 4,
            on_read: Arc::new(|_n| {}),
            on_rows: &on_rows,
        },
        rule: ConsentRule { snapshot: &snap },
        out_root: &out_root,
        dry_run: false,
        show: &show,
    };
    group.bench_function("jsonl_file", |b| {
        b.iter_batched(
            || {
                let _ = std::fs::remove_dir_all(&out_root);
            },
            |()| {
                let outcome = op.run(&file);
                assert_eq!(outcome.rows_kept, want, "{:?}", outcome.error);
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

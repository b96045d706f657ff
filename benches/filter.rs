//! Filter throughput: the subject scanner alone, and a whole JSONL file and the same rows as
//! a Parquet file through `Filter::run`.
//!
//! Data is generated outside the timed loop from a fixed seed, and every iteration asserts
//! the rows it kept, so the bench cannot time a no-op.

use std::path::Path;
use std::sync::Arc;

#[path = "common.rs"]
mod common;

use common::{corpus, parquet_of, snapshot};
use consentry::consent;
use consentry::dataset::scan::{classify, Line, SubjectPath};
use consentry::dataset::{Codec, Format, InputFile};
use consentry::ops::filter::{ConsentRule, Filter};
use consentry::ops::rows::{Engine, CHUNK_SIZE};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

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
            hash: true,
            chunk_size: CHUNK_SIZE,
            chunks_per_batch: 4,
            on_read: Arc::new(|_n| {}),
            on_rows: &on_rows,
        },
        rule: ConsentRule { snapshot: &snap },
        out_root: &out_root,
        dry_run: false,
        show: &show,
        before_write: &|_: &Path, _| Ok(()),
    };
    // The same rows as Parquet: every row group loses about half its rows, so the long
    // text column is rewritten page by page and the others through Arrow.
    let parquet = dir.path().join("in/part.parquet");
    parquet_of(&data, &parquet);
    let parquet_file = InputFile {
        path: parquet.clone(),
        rel: "part.parquet".into(),
        format: Some(Format::Parquet),
        bytes: std::fs::metadata(&parquet).unwrap().len(),
    };
    for (name, input) in [("jsonl_file", &file), ("parquet_file", &parquet_file)] {
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let _ = std::fs::remove_dir_all(&out_root);
                },
                |()| {
                    let outcome = op.run(input);
                    assert_eq!(outcome.rows_kept, want, "{:?}", outcome.error);
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

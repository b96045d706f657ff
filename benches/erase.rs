//! Erasure: the pre-scan (reads only subjects) and the in-place rewrite, for JSONL and
//! Parquet, with 1% of subjects erased; and the rewrite with one subject erased (a sparse
//! erasure, whose cost should approach the pre-scan's).
//!
//! Data is generated outside the timed loop from a fixed seed; every rewrite starts from a
//! fresh copy and asserts the rows it removed, so the bench cannot time a no-op.

#[path = "common.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;

use common::{corpus, parquet_of, user};
use consentry::dataset::scan::SubjectPath;
use consentry::dataset::{Codec, Format, InputFile};
use consentry::ops::erase::{EraseRule, Erased, Sweep};
use consentry::ops::rows::{Engine, CHUNK_SIZE};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const LINES: usize = 40_000;

const USERS: u64 = 20_000;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(LINES, USERS, 11);
    let mut erased = Erased::default();
    for u in (0..USERS).step_by(100) {
        erased.insert(&format!("u{u:08}")).unwrap();
    }
    let rows_of = |erased: &Erased| {
        std::str::from_utf8(&data)
            .unwrap()
            .lines()
            .filter(|l| erased.contains(user(l)))
            .count() as u64
    };
    let want = rows_of(&erased);
    assert!(
        want > 100,
        "about 1% of rows name an erased subject: {want}"
    );
    let mut one = Erased::default();
    // The first line's subject.
    one.insert(user(std::str::from_utf8(&data).unwrap()))
        .unwrap();
    let one_wants = rows_of(&one);

    let originals = dir.path().join("originals");
    std::fs::create_dir_all(&originals).unwrap();
    std::fs::write(originals.join("part.jsonl"), &data).unwrap();
    parquet_of(&data, &originals.join("part.parquet"));

    let subject = SubjectPath::parse("user_id").unwrap();
    let on_rows = |_n: u64| {};
    let show = |p: &Path| p.display().to_string();
    let replaced = consentry::exec::Dropper::start(4);
    let sweep_of = |erased| Sweep {
        engine: Engine {
            subject: &subject,
            hash: true,
            chunk_size: CHUNK_SIZE,
            chunks_per_batch: 4,
            on_read: Arc::new(|_n| {}),
            on_rows: &on_rows,
        },
        rule: EraseRule { erased },
        dry_run: false,
        ledger: None,
        show: &show,
        replaced: &replaced,
    };
    let (sweep, one_sweep) = (sweep_of(&erased), sweep_of(&one));
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    let mut group = c.benchmark_group("erase");
    group.sample_size(20);
    for (name, format) in [
        ("part.jsonl", Format::Jsonl(Codec::None)),
        ("part.parquet", Format::Parquet),
    ] {
        let original = originals.join(name);
        let bytes = std::fs::metadata(&original).unwrap().len();
        group.throughput(Throughput::Bytes(bytes));
        let scan_file = InputFile {
            path: original.clone(),
            rel: name.into(),
            format: Some(format),
            bytes,
        };
        group.bench_function(format!("prescan/{name}"), |b| {
            b.iter(|| assert_eq!(sweep.residual(&scan_file).unwrap(), want))
        });
        let target = work.join(name);
        let file = InputFile {
            path: target.clone(),
            rel: name.into(),
            format: Some(format),
            bytes,
        };
        for (label, sweep, want) in [
            ("rewrite", &sweep, want),
            ("rewrite-one-subject", &one_sweep, one_wants),
        ] {
            group.bench_function(format!("{label}/{name}"), |b| {
                b.iter_batched(
                    || std::fs::copy(&original, &target).unwrap(),
                    |_| {
                        let outcome = sweep.run(&file);
                        assert_eq!(
                            outcome.counts.dropped_for(consentry::ops::Reason::Erased),
                            want,
                            "{:?}",
                            outcome.error
                        );
                        assert!(outcome.output.is_some());
                    },
                    BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

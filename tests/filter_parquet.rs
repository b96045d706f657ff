//! CONTRACT §4/§5 for Parquet: files written by pyarrow and DuckDB (fixtures/parquet/make.py)
//! come out with the same schema, metadata and codecs, minus exactly the dropped rows.

use std::fs::File;
use std::path::Path;

use arrow::array::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};

use crate::util::*;

/// alice and 1 hold valid consent; bob and 2 revoked it; nobody else has a record.
fn consent(env: &Env) {
    env.sqlite(
        "consent.db",
        &format!(
            "{RECORDS_TABLE} INSERT INTO consent_records (id, user_id, purpose, status, created_at) VALUES
             ('1','alice','model_training','granted','2025-01-01T00:00:00Z'),
             ('2','1','model_training','granted','2025-01-01T00:00:00Z'),
             ('3','bob','model_training','granted','2025-01-01T00:00:00Z'),
             ('4','bob','model_training','revoked','2025-06-01T00:00:00Z'),
             ('5','2','model_training','revoked','2025-06-01T00:00:00Z');"
        ),
    );
}

/// Writes a filter job over `data/` (into `out/`) by the `model_training` consent of
/// `consent.db`, and runs it.
fn filter(env: &Env, subject_field: &str, flags: &[&str]) -> Output {
    env.filter_job(
        "snapshot = \"consent.db\"\npurpose = \"model_training\"",
        subject_field,
        "",
    );
    let mut args = vec!["run", "job.toml", "--no-progress"];
    args.extend(flags);
    env.run(&args)
}

/// A Parquet file holding each batch as a row group of its own.
fn parquet_of(batches: &[&RecordBatch], props: WriterProperties) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut w = ArrowWriter::try_new(&mut bytes, batches[0].schema(), Some(props)).unwrap();
    for batch in batches {
        w.write(batch).unwrap();
        w.flush().unwrap();
    }
    w.close().unwrap();
    bytes
}

/// `doc` (d0, d1, …) and `user_id` columns of `n` rows, the users alice, bob, carol and 1
/// in turn: rows `i % 4 == 0` and `i % 4 == 3` hold valid consent.
fn docs_and_users(n: usize) -> [(&'static str, arrow::array::ArrayRef); 2] {
    use arrow::array::StringArray;
    use std::sync::Arc;
    let users = ["alice", "bob", "carol", "1"];
    [
        (
            "doc",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("d{i}")),
            )),
        ),
        (
            "user_id",
            Arc::new(StringArray::from_iter_values((0..n).map(|i| users[i % 4]))),
        ),
    ]
}

/// Runs a filter job over one fixture and checks the output against the input.
fn filter_one(name: &str, subject_field: &str, expected_docs: &[&str]) -> Env {
    let env = Env::new();
    consent(&env);
    env.write(&format!("data/{name}"), fixture(name));
    filter(&env, subject_field, &[]).expect(0);
    let (input, output) = (
        env.path(&format!("data/{name}")),
        env.path(&format!("out/{name}")),
    );

    let before = read_all(&input);
    let after = read_all(&output);
    assert_eq!(
        after.schema(),
        before.schema(),
        "{name}: the Arrow schema, with its metadata, is kept"
    );
    assert_eq!(
        docs_of(&after),
        expected_docs,
        "{name}: exactly the consented rows, in order"
    );

    let (r_in, r_out) = (
        SerializedFileReader::new(File::open(&input).unwrap()).unwrap(),
        SerializedFileReader::new(File::open(&output).unwrap()).unwrap(),
    );
    let (m_in, m_out) = (r_in.metadata(), r_out.metadata());
    assert_eq!(
        m_out.file_metadata().key_value_metadata(),
        m_in.file_metadata().key_value_metadata(),
        "{name}: key-value metadata (including ARROW:schema) is kept"
    );
    assert_eq!(
        m_out.file_metadata().schema_descr().root_schema(),
        m_in.file_metadata().schema_descr().root_schema()
    );
    let codecs = |m: &parquet::file::metadata::ParquetMetaData| -> Vec<String> {
        m.row_group(0)
            .columns()
            .iter()
            .map(|c| {
                format!("{:?}", c.compression())
                    .split('(')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    if m_out.num_row_groups() > 0 {
        assert_eq!(
            codecs(m_out),
            codecs(m_in),
            "{name}: each column keeps its codec"
        );
    }
    let biggest_in = m_in
        .row_groups()
        .iter()
        .map(|g| g.num_rows())
        .max()
        .unwrap();
    assert!(m_out
        .row_groups()
        .iter()
        .all(|g| g.num_rows() <= biggest_in && g.num_rows() > 0));
    let p = env.last_statement();
    assert_eq!(
        p["predicate"]["inputs"][0]["rows_kept"],
        expected_docs.len()
    );
    assert_eq!(p["predicate"]["inputs"][0]["format"], "parquet");
    env
}

#[test]
fn pyarrow_dictionary_snappy_with_several_row_groups() {
    let env = filter_one(
        "pyarrow-dict-snappy.parquet",
        "user_id",
        &["d0", "d3", "d7"],
    );
    let p = env.last_statement();
    assert_eq!(
        p["predicate"]["inputs"][0]["rows_dropped"],
        serde_json::json!({"revoked": 2, "no_consent": 1, "missing_subject": 2})
    );
}

#[test]
fn pyarrow_nested_struct_subject_gzip() {
    filter_one(
        "pyarrow-nested-gzip.parquet",
        "meta.author.id",
        &["d0", "d3", "d7"],
    );
}

#[test]
fn pyarrow_int64_subject_matches_decimal_text() {
    let env = filter_one("pyarrow-int-zstd.parquet", "user_id", &["d0", "d3", "d7"]);
    let p = env.last_statement();
    assert_eq!(
        p["predicate"]["inputs"][0]["rows_dropped"],
        serde_json::json!({"revoked": 2, "no_consent": 2, "missing_subject": 1})
    );
}

#[test]
fn pyarrow_large_string_subject() {
    filter_one(
        "pyarrow-large-string.parquet",
        "user_id",
        &["d0", "d3", "d7"],
    );
}

#[test]
fn duckdb_zstd_and_int32_files() {
    filter_one("duckdb-zstd.parquet", "user_id", &["d0", "d3", "d7"]);
    filter_one(
        "duckdb-int32-snappy.parquet",
        "user_id",
        &["d0", "d3", "d7"],
    );
}

#[test]
fn a_row_group_that_loses_no_row_is_copied_encoded() {
    // Row group 2 of the snappy fixture holds rows 6 ("") and 7 (alice): not all kept.
    // Build a file whose first row group is all alice, so it must come out byte-identical.
    let env = Env::new();
    consent(&env);
    let batch = read_all(&repo().join("fixtures/parquet/pyarrow-dict-snappy.parquet"));
    let keep =
        arrow::array::BooleanArray::from(vec![true, false, false, true, false, false, false, true]);
    let alices = arrow::compute::filter_record_batch(&batch, &keep).unwrap();
    let rest = batch.slice(1, 2);
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    env.write("data/a.parquet", parquet_of(&[&alices, &rest], props));
    filter(&env, "user_id", &[]).expect(0);
    let chunk_bytes = |path: &Path, rg: usize| -> Vec<Vec<u8>> {
        let bytes = std::fs::read(path).unwrap();
        let r = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        r.metadata()
            .row_group(rg)
            .columns()
            .iter()
            .map(|c| {
                let (start, len) = c.byte_range();
                bytes[start as usize..(start + len) as usize].to_vec()
            })
            .collect()
    };
    let out = env.path("out/a.parquet");
    assert_eq!(
        chunk_bytes(&out, 0),
        chunk_bytes(&env.path("data/a.parquet"), 0),
        "encoded chunks copied as they were"
    );
    let r = SerializedFileReader::new(File::open(&out).unwrap()).unwrap();
    assert_eq!(
        r.metadata().num_row_groups(),
        1,
        "the row group with no consented row is left out"
    );
    assert_eq!(docs(&out), ["d0", "d3", "d7"]);
}

#[test]
fn statistics_of_a_rewritten_row_group_hold_no_dropped_subject() {
    let env = filter_one(
        "pyarrow-dict-snappy.parquet",
        "user_id",
        &["d0", "d3", "d7"],
    );
    let r =
        SerializedFileReader::new(File::open(env.path("out/pyarrow-dict-snappy.parquet")).unwrap())
            .unwrap();
    let bytes = std::fs::read(env.path("out/pyarrow-dict-snappy.parquet")).unwrap();
    for name in ["bob", "carol"] {
        assert!(
            !bytes.windows(name.len()).any(|w| w == name.as_bytes()),
            "{name} survives somewhere in the output file (data, dictionary or statistics)"
        );
    }
    for rg in r.metadata().row_groups() {
        let stats = rg.column(1).statistics().expect("statistics are written");
        assert_eq!(stats.min_bytes_opt(), Some(b"alice".as_slice()));
        assert_eq!(stats.max_bytes_opt(), Some(b"alice".as_slice()));
    }
}

#[test]
fn corrupt_or_unsuitable_parquet_fails_alone() {
    let env = Env::new();
    consent(&env);
    let good = fixture("pyarrow-dict-snappy.parquet");
    env.write("data/good.parquet", &good);
    env.write("data/truncated.parquet", &good[..good.len() / 2]);
    let mut flipped = good.clone();
    for b in flipped.iter_mut().skip(4).take(good.len() / 2) {
        *b ^= 0x5a;
    }
    env.write("data/flipped.parquet", &flipped);
    env.write("data/empty.parquet", b"");
    env.write("data/text.parquet", b"not parquet at all, PAR1");
    env.write("data/other.parquet", fixture("pyarrow-nested-gzip.parquet"));
    let out = filter(&env, "user_id", &[]).expect(1);
    assert!(out.stdout.contains("partial"), "{}", out.stdout);
    let p = env.last_statement();
    let inputs = p["predicate"]["inputs"].as_array().unwrap();
    let status = |f: &str| {
        inputs
            .iter()
            .find(|i| i["path"].as_str().unwrap().ends_with(f))
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("good.parquet"), "ok");
    for bad in [
        "truncated.parquet",
        "flipped.parquet",
        "empty.parquet",
        "text.parquet",
        "other.parquet",
    ] {
        assert_eq!(status(bad), "failed", "{bad}");
        assert!(
            !env.path(&format!("out/{bad}")).exists(),
            "no output for {bad}"
        );
    }
    let other = inputs
        .iter()
        .find(|i| i["path"].as_str().unwrap().ends_with("other.parquet"))
        .unwrap();
    assert!(
        other["error"]
            .as_str()
            .unwrap()
            .contains("no column user_id"),
        "{other}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(env.path("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("good.parquet")]);
    assert_eq!(docs(&env.path("out/good.parquet")), ["d0", "d3", "d7"]);
}

#[test]
fn jsonl_and_parquet_in_one_tree() {
    let env = Env::new();
    consent(&env);
    env.write("data/a/rows.parquet", fixture("duckdb-zstd.parquet"));
    env.write(
        "data/b/rows.jsonl",
        "{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n",
    );
    filter(&env, "user_id", &["--threads", "1"]).expect(0);
    assert_eq!(
        env.read_string("out/b/rows.jsonl"),
        "{\"user_id\":\"alice\"}\n"
    );
    assert_eq!(docs(&env.path("out/a/rows.parquet")), ["d0", "d3", "d7"]);
    let t = &env.last_statement()["predicate"]["totals"];
    assert_eq!(
        (t["rows_in"].as_u64(), t["rows_kept"].as_u64()),
        (Some(10), Some(4))
    );
}

#[test]
fn a_column_whose_dictionary_fell_back_is_rewritten_plain_and_the_rest_keep_theirs() {
    use arrow::array::{ArrayRef, StringArray};
    use parquet::basic::Encoding;
    use std::sync::Arc;
    let env = Env::new();
    consent(&env);
    // `doc` holds a distinct value per row, so its 64-byte dictionary page limit is soon
    // full and its later pages fall back to PLAIN; `user_id`'s four values stay dictionary.
    let users = ["alice", "bob", "carol", "1"];
    let ids: Vec<String> = (0..400).map(|i| format!("doc-{i:04}")).collect();
    let subjects: Vec<&str> = (0..400).map(|i| users[i % 4]).collect();
    let batch = RecordBatch::try_from_iter([
        ("doc", Arc::new(StringArray::from(ids)) as ArrayRef),
        ("user_id", Arc::new(StringArray::from(subjects)) as ArrayRef),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_dictionary_page_size_limit(64)
        .set_data_page_row_count_limit(50)
        .set_write_batch_size(50)
        .build();
    env.write("data/a.parquet", parquet_of(&[&batch], props.clone()));
    // The same rows, then a row group where `doc` repeats one value: there the dictionary
    // held, so the column keeps it.
    let few = RecordBatch::try_from_iter([
        (
            "doc",
            Arc::new(StringArray::from(vec!["same"; 8])) as ArrayRef,
        ),
        (
            "user_id",
            Arc::new(StringArray::from(vec!["alice"; 8])) as ArrayRef,
        ),
    ])
    .unwrap();
    env.write("data/b.parquet", parquet_of(&[&batch, &few], props));
    filter(&env, "user_id", &[]).expect(0);

    let chunks = |path: &Path| {
        let r = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let rg = r.metadata().row_group(0).clone();
        let of = |c: usize| {
            let chunk = rg.column(c);
            let plain = chunk
                .page_encoding_stats_mask()
                .is_some_and(|m| m.is_set(Encoding::PLAIN));
            (chunk.dictionary_page_offset().is_some(), plain)
        };
        (of(0), of(1))
    };
    let (doc_in, user_in) = chunks(&env.path("data/a.parquet"));
    assert_eq!(
        doc_in,
        (true, true),
        "the input's doc column falls back to PLAIN"
    );
    assert_eq!(
        user_in,
        (true, false),
        "the input's user_id column stays dictionary"
    );
    let (doc_out, user_out) = chunks(&env.path("out/a.parquet"));
    assert_eq!(
        doc_out,
        (false, true),
        "doc is written plain from the start"
    );
    assert_eq!(user_out, (true, false), "user_id keeps its dictionary");
    let (doc_b, _) = chunks(&env.path("out/b.parquet"));
    assert!(
        doc_b.0,
        "doc keeps its dictionary where one row group's held"
    );
    let want: Vec<String> = (0..400)
        .filter(|i| i % 4 == 0 || i % 4 == 3)
        .map(|i| format!("doc-{i:04}"))
        .collect();
    assert_eq!(
        docs(&env.path("out/a.parquet")),
        want,
        "alice's and 1's rows, in order"
    );
}

#[test]
fn every_column_type_comes_back_exactly_minus_the_dropped_rows() {
    use arrow::array::{
        ArrayRef, BinaryArray, BooleanArray, DictionaryArray, Int32Array, LargeStringArray,
        ListBuilder, StringArray, StringBuilder, StructArray,
    };
    use arrow::datatypes::{DataType, Field, Int32Type};
    use std::sync::Arc;
    let env = Env::new();
    consent(&env);
    let n = 3000;
    // Values short enough to sit inside a view and long enough to point into a page, nulls,
    // and the same in every container the rewrite decodes.
    let text = |i: usize| match i % 5 {
        0 => None,
        1 => Some(format!("t{i}")),
        _ => Some(format!(
            "{i}-{}",
            "long text that does not fit in a view ".repeat(i % 7)
        )),
    };
    let texts: Vec<Option<String>> = (0..n).map(text).collect();
    let mut list = ListBuilder::new(StringBuilder::new());
    for i in 0..n {
        if i % 11 == 0 {
            list.append_null();
        } else {
            for j in 0..i % 4 {
                list.values()
                    .append_value(format!("item {i}.{j} of a list"));
            }
            list.append(true);
        }
    }
    let inner = StructArray::from(vec![
        (
            Arc::new(Field::new("note", DataType::Utf8, true)),
            Arc::new(StringArray::from(texts.clone())) as ArrayRef,
        ),
        (
            Arc::new(Field::new("n", DataType::Int32, false)),
            Arc::new(Int32Array::from_iter_values(0..n as i32)) as ArrayRef,
        ),
    ]);
    let [doc, user_id] = docs_and_users(n);
    let batch = RecordBatch::try_from_iter([
        doc,
        user_id,
        (
            "text",
            Arc::new(StringArray::from(texts.clone())) as ArrayRef,
        ),
        (
            "large",
            Arc::new(LargeStringArray::from(texts.clone())) as ArrayRef,
        ),
        (
            "bytes",
            Arc::new(BinaryArray::from_iter(
                texts.iter().map(|t| t.as_ref().map(|s| s.as_bytes())),
            )) as ArrayRef,
        ),
        ("inner", Arc::new(inner) as ArrayRef),
        ("list", Arc::new(list.finish()) as ArrayRef),
        (
            "category",
            Arc::new(
                (0..n)
                    .map(|i| ["red", "green", "blue"].get(i % 4).copied())
                    .collect::<DictionaryArray<Int32Type>>(),
            ) as ArrayRef,
        ),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .set_max_row_group_row_count(Some(1000))
        .set_data_page_row_count_limit(128)
        .set_write_batch_size(128)
        .build();
    env.write("data/a.parquet", parquet_of(&[&batch], props));
    filter(&env, "user_id", &[]).expect(0);

    // alice (i % 4 == 0) and 1 (i % 4 == 3) stay.
    let keep = BooleanArray::from_iter((0..n).map(|i| Some(i % 4 == 0 || i % 4 == 3)));
    let want =
        arrow::compute::filter_record_batch(&read_all(&env.path("data/a.parquet")), &keep).unwrap();
    let got = read_all(&env.path("out/a.parquet"));
    assert_eq!(got.schema(), want.schema(), "the Arrow schema is kept");
    assert_eq!(got.num_rows(), n / 2);
    for (i, field) in want.schema().fields().iter().enumerate() {
        assert_eq!(
            got.column(i).as_ref(),
            want.column(i).as_ref(),
            "column {}: every kept value, null and length",
            field.name()
        );
    }
}

#[test]
fn a_plain_text_file_of_one_row_group_comes_out_the_same_whatever_the_threads() {
    use arrow::array::{ArrayRef, StringArray};
    use std::sync::Arc;
    let env = Env::new();
    consent(&env);
    // One row group of long text stored PLAIN (no dictionary): its pages are compressed
    // by several workers at once when there are several.
    let n = 6000;
    let mut rng = Rng(0x7e_47);
    let [doc, user_id] = docs_and_users(n);
    let batch = RecordBatch::try_from_iter([
        doc,
        user_id,
        (
            "text",
            Arc::new(StringArray::from_iter_values((0..n).map(|_| {
                let len = 200 + rng.below(400);
                text(&mut rng, len)
            }))) as ArrayRef,
        ),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_dictionary_enabled(false)
        .set_data_page_size_limit(64 << 10)
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    env.write("data/a.parquet", parquet_of(&[&batch], props));
    let mut outputs = Vec::new();
    for threads in ["1", "2", "5"] {
        let _ = std::fs::remove_dir_all(env.path("out"));
        filter(&env, "user_id", &["--threads", threads]).expect(0);
        outputs.push(env.read("out/a.parquet"));
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "the same bytes");
    let want: Vec<String> = (0..n)
        .filter(|i| i % 4 == 0 || i % 4 == 3)
        .map(|i| format!("d{i}"))
        .collect();
    assert_eq!(docs(&env.path("out/a.parquet")), want);
    let kept = read_all(&env.path("out/a.parquet"));
    let texts = text_column(&read_all(&env.path("data/a.parquet")), "text");
    let want_texts: Vec<Option<String>> = (0..n)
        .filter(|i| i % 4 == 0 || i % 4 == 3)
        .map(|i| texts[i].clone())
        .collect();
    assert_eq!(text_column(&kept, "text"), want_texts);
}

//! Erase jobs (CONTRACT §2 [erase], §4, §5, §6): subjects are swept out of datasets and
//! embedding caches in place, files without an erased subject are left alone, hostile ids
//! never become paths, a killed job run again finishes with exactly one signed report, and
//! the report names subjects only by pseudonym.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use serde_json::{json, Value};
use sha2::Digest as _;

use crate::util::*;

// ---------------------------------------------------------------------------------------
// Helpers

/// Writes `erase.toml`: an erase job named `e` over `data/` (subject field `user_id`), with
/// keys and reports in the test directory. `extra` holds [erase] and anything else.
fn erase_job(env: &Env, extra: &str) -> PathBuf {
    env.keys();
    env.write(
        "erase.toml",
        format!(
            "[job]\nname = \"e\"\nkind = \"erase\"\nas_of = \"2026-11-01T00:00:00Z\"\n\n\
             [input]\npaths = [\"data\"]\nsubject_field = \"user_id\"\n\n\
             [report]\ndir = \"reports\"\nsigning_key = \"keys/signing.key\"\n\
             pseudonym_key = \"keys/pseudonym.key\"\n\n{extra}"
        ),
    )
}

/// `[erase]` with a subjects file and the given embedding caches, datasets swept.
fn erase_section(caches: &str) -> String {
    format!("[erase]\nsubjects_file = \"erase.txt\"\n\n{caches}")
}

const JOURNAL: &str = "reports/.consentry-journal-e.json";

fn run_erase(env: &Env, more: &[&str]) -> Output {
    let mut args = vec!["run", "erase.toml", "--no-progress"];
    args.extend_from_slice(more);
    env.run(&args)
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The inputs[] entry of a report for `path` (as the report shows it, relative to the job).
fn input<'a>(p: &'a Value, path: &str) -> &'a Value {
    p["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["path"] == path)
        .unwrap_or_else(|| panic!("no input {path} in {:#}", p["inputs"]))
}

fn erased_rows(p: &Value, path: &str) -> u64 {
    input(p, path)["rows_dropped"]["erased"]
        .as_u64()
        .unwrap_or(0)
}

fn cache<'a>(p: &'a Value, path: &str) -> &'a Value {
    p["erase"]["caches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"] == path)
        .unwrap_or_else(|| panic!("no cache {path} in {:#}", p["erase"]["caches"]))
}

/// Inode, mtime and size of a path (not following symlinks).
fn stamp(path: &Path) -> (u64, i64, i64, u64) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.mtime(), m.mtime_nsec(), m.size())
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Every path below `root`, not following symlinks, sorted.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out.sort();
    out
}

/// What is below `root`: every entry's kind, inode, mtime, mode and content digest (files)
/// or target (symlinks). Directory mtimes only with `dir_mtimes`.
fn tree(root: &Path, dir_mtimes: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut paths = walk(root);
    paths.insert(0, root.to_path_buf());
    for p in paths {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let desc = if m.file_type().is_symlink() {
            format!(
                "link -> {} ino {}",
                std::fs::read_link(&p).unwrap().display(),
                m.ino()
            )
        } else if m.is_dir() {
            match dir_mtimes {
                true => format!("dir ino {} mtime {}.{}", m.ino(), m.mtime(), m.mtime_nsec()),
                false => format!("dir ino {}", m.ino()),
            }
        } else {
            format!(
                "file ino {} mtime {}.{} mode {:o} nlink {} sha {}",
                m.ino(),
                m.mtime(),
                m.mtime_nsec(),
                m.mode(),
                m.nlink(),
                sha(&std::fs::read(&p).unwrap())
            )
        };
        out.insert(rel, desc);
    }
    out
}

/// Temporary files (`.consentry-*.tmp`) anywhere below `root`.
fn temps(root: &Path) -> Vec<PathBuf> {
    walk(root)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(".consentry-") && name.ends_with(".tmp")
        })
        .collect()
}

/// A report file and its decoded statement, as text, for searching.
fn report_texts(env: &Env) -> Vec<String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for r in env.reports() {
        let bytes = std::fs::read(&r).unwrap();
        let envelope: Value = serde_json::from_slice(&bytes).unwrap();
        let payload = base64::engine::general_purpose::STANDARD
            .decode(envelope["payload"].as_str().unwrap())
            .unwrap();
        out.push(String::from_utf8_lossy(&bytes).into_owned());
        out.push(String::from_utf8(payload).unwrap());
    }
    out
}

/// The pseudonym a report must carry for `id`: hex HMAC-SHA256 under the pseudonym key.
fn pseudonym(env: &Env, id: &str) -> String {
    use hmac::{KeyInit, Mac};
    let key = env.read("keys/pseudonym.key");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(id.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn pseudonyms(env: &Env, ids: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = ids.iter().map(|id| pseudonym(env, id)).collect();
    out.sort();
    out
}

fn symlink(target: &str, link: &Path) {
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// JSONL lines, each with whether the job must remove it; returns (file bytes, expected).
fn lines(rows: &[(&str, bool)]) -> (Vec<u8>, Vec<u8>) {
    let all: String = rows.iter().map(|(l, _)| *l).collect();
    let kept: String = rows.iter().filter(|(_, e)| !e).map(|(l, _)| *l).collect();
    (all.into_bytes(), kept.into_bytes())
}

// Parquet

/// A Parquet file of (doc, <subject>, text) rows, `row_group` rows per group, zstd.
fn parquet_bytes(
    subject: &str,
    docs: &[String],
    users: &[Option<String>],
    row_group: usize,
) -> Vec<u8> {
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
        .build();
    parquet_with(subject, docs, users, props)
}

/// A Parquet file of (doc, <subject>, text) rows written with `props`; a row's text is
/// "text of <doc> lorem ipsum".
fn parquet_with(
    subject: &str,
    docs: &[String],
    users: &[Option<String>],
    props: WriterProperties,
) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("doc", DataType::Utf8, false),
        Field::new(subject, DataType::Utf8, true),
        Field::new("text", DataType::Utf8, false),
    ]));
    let text: Vec<String> = docs
        .iter()
        .map(|d| format!("text of {d} lorem ipsum"))
        .collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(docs)) as ArrayRef,
            Arc::new(StringArray::from(users.to_vec())) as ArrayRef,
            Arc::new(StringArray::from_iter_values(&text)) as ArrayRef,
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(Vec::new(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.into_inner().unwrap()
}

fn small_parquet(subject: &str, users: &[Option<&str>], row_group: usize) -> Vec<u8> {
    let docs: Vec<String> = (0..users.len()).map(|i| format!("d{i}")).collect();
    let users: Vec<Option<String>> = users.iter().map(|u| u.map(String::from)).collect();
    parquet_bytes(subject, &docs, &users, row_group)
}

/// The fixtures' eight users (make.py) in four row groups: alice,bob | carol,alice |
/// None,bob | "",alice.
fn groups_of_two() -> Vec<u8> {
    small_parquet(
        "user_id",
        &[
            Some("alice"),
            Some("bob"),
            Some("carol"),
            Some("alice"),
            None,
            Some("bob"),
            Some(""),
            Some("alice"),
        ],
        2,
    )
}

fn metadata(path: &Path) -> parquet::file::metadata::ParquetMetaData {
    SerializedFileReader::new(File::open(path).unwrap())
        .unwrap()
        .metadata()
        .clone()
}

/// The encoded bytes of every column chunk of row group `rg`.
fn chunk_bytes(path: &Path, rg: usize) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    metadata(path)
        .row_group(rg)
        .columns()
        .iter()
        .map(|c| {
            let (start, len) = c.byte_range();
            bytes[start as usize..(start + len) as usize].to_vec()
        })
        .collect()
}

fn codecs(m: &parquet::file::metadata::ParquetMetaData, rg: usize) -> Vec<String> {
    m.row_group(rg)
        .columns()
        .iter()
        .map(|c| format!("{:?}", c.compression()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Datasets in place

#[test]
fn jsonl_rows_of_erased_subjects_go_and_every_other_line_stays_byte_identical() {
    let env = Env::new();
    // CRLF, surrounding whitespace and blank lines are fine; there is no header.
    env.write("erase.txt", "alice\r\n\r\n  42  \n\nzed-never-seen\n");
    let (a, a_expected) = lines(&[
        ("{\"id\":1,\"user_id\":\"alice\",\"text\":\"hi\"}\n", true),
        (
            "{\"id\":2, \"user_id\" : \"bob\" ,\"text\":\"caf\u{e9} \\u00e9\"}  \n",
            false,
        ),
        ("{\"id\":3,\"user_id\":42}\n", true),
        ("{\"id\":4,\"user_id\":\"42\"}\n", true),
        ("\n", false),
        ("{\"id\":5,\"user_id\":\"\\u0061lice\"}\n", true),
        ("{\"id\":42,\"user_id\":\"bob\"}\n", false),
        ("{\"id\":6,\"user_id\":42.0}\n", false),
        ("{\"id\":7,\"user_id\":\"Alice\"}\r\n", false),
        ("{\"id\":8,\"user_id\":\"alice \"}\n", false),
        ("{\"id\":9,\"meta\":{\"user_id\":\"alice\"}}\n", false),
        ("{\"id\":10,\"user_id\":null,\"by\":\"alice\"}\n", false),
        ("{\"id\":11,\"user_id\":\"alice\"}\n", true),
        ("{\"id\":12,\"user_id\":\"carol\"}", false),
    ]);
    let a_path = env.write("data/a.jsonl", &a);
    std::fs::set_permissions(&a_path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let b = b"{\"user_id\":\"bob\"}\n{\"user_id\":\"carol\",\"note\":\"alice\"}\n".to_vec();
    env.write("data/sub/b.jsonl", &b);
    let c = b"{\"user_id\":\"alice\"}\n{\"user_id\":42}\n".to_vec();
    env.write("data/sub/c.jsonl", &c);
    env.write("data/notes.txt", "alice wrote this\n");
    erase_job(&env, &erase_section(""));
    let (b_before, notes_before) = (
        stamp(&env.path("data/sub/b.jsonl")),
        stamp(&env.path("data/notes.txt")),
    );

    let out = run_erase(&env, &[]).expect(0);
    assert!(out.stdout.contains("complete"), "{}", out.stdout);

    assert_eq!(
        env.read_string("data/a.jsonl"),
        String::from_utf8(a_expected.clone()).unwrap(),
        "kept lines byte-identical, in order, the last one still without a newline"
    );
    assert_eq!(
        std::fs::metadata(&a_path).unwrap().permissions().mode() & 0o777,
        0o640,
        "a rewritten file keeps its permission bits"
    );
    assert_eq!(
        env.read("data/sub/c.jsonl"),
        b"",
        "every row erased: an empty file"
    );
    assert_eq!(env.read("data/sub/b.jsonl"), b);
    assert_eq!(
        stamp(&env.path("data/sub/b.jsonl")),
        b_before,
        "a file without an erased subject is not touched (same inode, same mtime)"
    );
    assert_eq!(stamp(&env.path("data/notes.txt")), notes_before);

    let statement = env.last_statement();
    let p = &statement["predicate"];
    assert_eq!(p["status"], "complete", "{:#}", p["problems"]);
    assert_eq!(p["job"]["kind"], "erase");
    let e = &p["erase"];
    assert_eq!(e["rows_removed"], 7);
    assert_eq!(e["files_rewritten"], 2);
    assert_eq!(e["files_untouched"], 1);
    assert_eq!(e["files_failed"], 0);
    assert_eq!(e["malformed_kept"], 0);
    assert_eq!(e["subjects_from_file"], 3);
    assert_eq!(e["rejected_ids"], json!([]));
    assert_eq!(
        e["subjects"],
        json!(pseudonyms(&env, &["alice", "42", "zed-never-seen"]))
    );
    assert_eq!(e["resumed"], false);
    let v = &e["verification"];
    assert_eq!(v["files_checked"], 2, "every rewritten file is read again");
    assert_eq!(v["residual_rows"], 0);
    assert_eq!(v["residual_entries"], 0);
    assert_eq!(v["passed"], true);

    let ia = input(p, "data/a.jsonl");
    assert_eq!(ia["rows_dropped"], json!({"erased": 5}));
    assert_eq!(ia["status"], "ok");
    assert_eq!(ia["sha256_before"], sha(&a));
    assert_eq!(ia["sha256_after"], sha(&a_expected));
    assert_eq!(ia["output"]["path"], "data/a.jsonl");
    assert_eq!(ia["output"]["sha256"], sha(&a_expected));
    assert_eq!(
        ia["rows_kept"].as_u64().unwrap() + 5,
        ia["rows_in"].as_u64().unwrap()
    );
    assert_eq!(erased_rows(p, "data/sub/c.jsonl"), 2);
    let ib = input(p, "data/sub/b.jsonl");
    assert_eq!(ib["output"], Value::Null, "output only when rewritten");
    assert_eq!(ib["sha256_before"], sha(&b));
    assert_eq!(ib["sha256_after"], sha(&b));
    assert_eq!(ib["rows_dropped"], json!({}));
    let subjects: BTreeMap<String, String> = statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["digest"]["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        subjects,
        BTreeMap::from([
            ("data/a.jsonl".to_string(), sha(&a_expected)),
            ("data/sub/c.jsonl".to_string(), sha(b"")),
        ]),
        "the statement lists exactly the rewritten files"
    );
}

#[test]
fn malformed_lines_are_removed_when_they_name_an_erased_subject_and_kept_otherwise() {
    let env = Env::new();
    env.write("erase.txt", "alice\n42\n");
    let (a, expected) = lines(&[
        ("{\"user_id\":\"alice\",\"text\":\"trunc\n", true),
        ("[1, \"alice\"]\n", true),
        ("{\"user_id\": 42, \"x\": }\n", true),
        ("{\"user_id\":\"al\\u0069ce\",,}\n", true),
        ("{\"user_id\":\"bob\" \"text\":\"missing comma\"}\n", false),
        ("not json at all\n", false),
        ("{\"user_id\":\"alice2\",}\n", false),
        ("{\"user_id\":\"bob\",\"n\":420,}\n", false),
        ("{\"user_id\":\"bob\",\"user_id\":\"alice\"}\n", true),
        ("{\"user_id\":\"bob\",\"user_id\":\"carol\"}\n", false),
        ("{\"user_id\":\"dave\"}\n", false),
    ]);
    env.write("data/a.jsonl", &a);
    let (gz, gz_expected) = lines(&[
        ("{\"user_id\":\"dave\"}\n", false),
        ("{oops \"alice\"\n", true),
        ("{oops \"dave\"\n", false),
    ]);
    env.write("data/b.jsonl.gz", gzip(&gz));
    erase_job(&env, &erase_section(""));

    let out = run_erase(&env, &[]).expect(1);
    assert!(out.stdout.contains("partial"), "{}", out.stdout);
    assert_eq!(
        env.read_string("data/a.jsonl"),
        String::from_utf8(expected).unwrap()
    );
    assert_eq!(
        String::from_utf8(gunzip(&env.read("data/b.jsonl.gz"))).unwrap(),
        String::from_utf8(gz_expected).unwrap()
    );
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "partial");
    assert_eq!(p["erase"]["malformed_kept"], 5);
    assert_eq!(p["erase"]["rows_removed"], 6);
    assert_eq!(erased_rows(p, "data/a.jsonl"), 5);
    assert_eq!(erased_rows(p, "data/b.jsonl.gz"), 1);
    assert!(
        p["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().contains("malformed")),
        "{:#}",
        p["problems"]
    );
    assert_eq!(
        p["erase"]["verification"]["passed"], true,
        "no row of an erased subject is left; the job is partial for the kept malformed lines"
    );
}

#[test]
fn gzip_and_zstd_files_are_rewritten_in_their_own_codec() {
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    let (m1, e1) = lines(&[
        ("{\"user_id\":\"bob\",\"n\":1}\n", false),
        ("{\"user_id\":\"carol\",\"n\":2}\n", false),
    ]);
    let (m2, e2) = lines(&[
        ("{\"user_id\":\"alice\",\"n\":3}\n", true),
        ("{ \"user_id\" : \"dave\" , \"n\":4}\n", false),
    ]);
    let mut multi = gzip(&m1);
    multi.extend(gzip(&m2));
    env.write("data/multi.jsonl.gz", &multi);
    let (f1, z1) = lines(&[
        ("{\"user_id\":\"alice\",\"n\":5}\n", true),
        ("{\"user_id\":\"erin\",\"n\":6}\n", false),
    ]);
    let (f2, z2) = lines(&[
        ("{\"user_id\":\"frank\",\"n\":7}\n", false),
        ("{\"user_id\":\"alice\",\"n\":8}\n", true),
    ]);
    let mut frames = zstd(&f1);
    frames.extend(zstd(&f2));
    env.write("data/frames.jsonl.zst", &frames);
    let keep = b"{\"user_id\":\"bob\"}\n".to_vec();
    env.write("data/keep.jsonl.gz", gzip(&keep));
    env.write("data/keep.jsonl.zst", zstd(&keep));
    erase_job(&env, &erase_section(""));
    let before = (
        stamp(&env.path("data/keep.jsonl.gz")),
        stamp(&env.path("data/keep.jsonl.zst")),
    );

    run_erase(&env, &[]).expect(0);
    let gz = env.read("data/multi.jsonl.gz");
    assert_eq!(&gz[..2], &[0x1f, 0x8b], ".gz in, .gz out");
    assert_eq!(
        String::from_utf8(gunzip(&gz)).unwrap(),
        String::from_utf8([e1, e2].concat()).unwrap(),
        "both gzip members are read; kept lines byte-identical"
    );
    let zst = env.read("data/frames.jsonl.zst");
    assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd], ".zst in, .zst out");
    assert_eq!(
        String::from_utf8(unzstd(&zst)).unwrap(),
        String::from_utf8([z1, z2].concat()).unwrap()
    );
    assert_eq!(
        (
            stamp(&env.path("data/keep.jsonl.gz")),
            stamp(&env.path("data/keep.jsonl.zst"))
        ),
        before,
        "compressed files without an erased subject are not recompressed"
    );
    let p = &env.last_statement()["predicate"];
    assert_eq!(input(p, "data/multi.jsonl.gz")["format"], "jsonl.gz");
    assert_eq!(input(p, "data/frames.jsonl.zst")["format"], "jsonl.zst");
    assert_eq!(erased_rows(p, "data/multi.jsonl.gz"), 1);
    assert_eq!(erased_rows(p, "data/frames.jsonl.zst"), 2);
    assert_eq!(
        input(p, "data/multi.jsonl.gz")["output"]["sha256"],
        sha(&gz)
    );
    assert_eq!(p["erase"]["files_rewritten"], 2);
    assert_eq!(p["erase"]["files_untouched"], 2);
    assert_eq!(p["status"], "complete");
}

#[test]
fn parquet_row_groups_without_an_erased_subject_are_copied_without_re_encoding() {
    let env = Env::new();
    env.write("erase.txt", "carol\n3\n");
    for (name, fixture_name) in [
        ("dict.parquet", "pyarrow-dict-snappy.parquet"),
        ("int.parquet", "pyarrow-int-zstd.parquet"),
        ("duck.parquet", "duckdb-zstd.parquet"),
    ] {
        env.write(&format!("data/{name}"), fixture(fixture_name));
    }
    // The fixtures' users, in four row groups of two rows.
    env.write("data/groups.parquet", groups_of_two());
    env.write(
        "data/clean.parquet",
        small_parquet(
            "user_id",
            &[Some("alice"), Some("bob"), None, Some("dave")],
            2,
        ),
    );
    let originals: BTreeMap<&str, PathBuf> = ["dict", "int", "duck", "groups"]
        .into_iter()
        .map(|n| {
            let copy = env.write(
                &format!("orig/{n}.parquet"),
                env.read(&format!("data/{n}.parquet")),
            );
            (n, copy)
        })
        .collect();
    erase_job(&env, &erase_section(""));
    let clean_before = stamp(&env.path("data/clean.parquet"));

    run_erase(&env, &[]).expect(0);
    let all_but_d2 = ["d0", "d1", "d3", "d4", "d5", "d6", "d7"];
    // (file, row groups that hold no erased subject, as (index before, index after))
    let untouched_groups: [(&str, &[(usize, usize)]); 4] = [
        ("dict", &[(1, 1), (2, 2)]),
        ("int", &[(1, 1)]),
        ("duck", &[]),
        ("groups", &[(0, 0), (2, 2), (3, 3)]),
    ];
    for (name, groups) in untouched_groups {
        let (orig, now) = (&originals[name], env.path(&format!("data/{name}.parquet")));
        assert_eq!(
            docs(&now),
            all_but_d2,
            "{name}: exactly d2 removed, order kept"
        );
        assert_eq!(
            read_all(&now).schema(),
            read_all(orig).schema(),
            "{name}: Arrow schema kept"
        );
        let (m_orig, m_now) = (metadata(orig), metadata(&now));
        assert_eq!(
            m_now.file_metadata().key_value_metadata(),
            m_orig.file_metadata().key_value_metadata(),
            "{name}: key-value metadata kept"
        );
        assert_eq!(
            m_now.num_row_groups(),
            m_orig.num_row_groups(),
            "{name}: one row group lost one row, none vanished"
        );
        for rg in 0..m_now.num_row_groups() {
            assert_eq!(codecs(&m_now, rg), codecs(&m_orig, rg), "{name}: codecs");
        }
        for &(before, after) in groups {
            assert_eq!(
                chunk_bytes(&now, after),
                chunk_bytes(orig, before),
                "{name}: row group {before} holds no erased subject and is copied byte for byte"
            );
        }
        let p = env.last_statement();
        let i = input(&p["predicate"], &format!("data/{name}.parquet"));
        assert_eq!(i["rows_dropped"], json!({"erased": 1}), "{name}");
        assert_eq!(i["format"], "parquet");
        assert_eq!(i["output"]["sha256"], sha(&std::fs::read(&now).unwrap()));
    }
    assert_eq!(
        stamp(&env.path("data/clean.parquet")),
        clean_before,
        "a Parquet file without an erased subject is not touched"
    );
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["erase"]["files_rewritten"], 4);
    assert_eq!(p["erase"]["files_untouched"], 1);
    assert_eq!(p["status"], "complete");
}

#[test]
fn parquet_row_groups_left_empty_are_dropped_and_a_fully_erased_file_keeps_its_schema() {
    let env = Env::new();
    env.write("erase.txt", "alice\nbob\n");
    env.write("data/duck.parquet", fixture("duckdb-zstd.parquet"));
    env.write("data/dict.parquet", fixture("pyarrow-dict-snappy.parquet"));
    env.write("data/groups.parquet", groups_of_two());
    let only_alice = small_parquet("user_id", &[Some("alice"); 5], 2);
    env.write("data/only-alice.parquet", &only_alice);
    env.write("orig/only-alice.parquet", &only_alice);
    erase_job(&env, &erase_section(""));

    run_erase(&env, &[]).expect(0);
    for name in ["duck", "dict", "groups"] {
        let path = env.path(&format!("data/{name}.parquet"));
        assert_eq!(docs(&path), ["d2", "d4", "d6"], "{name}");
        let m = metadata(&path);
        assert!(
            m.row_groups().iter().all(|g| g.num_rows() > 0),
            "{name}: no empty row group"
        );
    }
    assert_eq!(
        metadata(&env.path("data/groups.parquet")).num_row_groups(),
        3,
        "groups: the row group [alice, bob] is gone"
    );
    let empty = env.path("data/only-alice.parquet");
    assert_eq!(read_all(&empty).num_rows(), 0);
    assert_eq!(
        read_all(&empty).schema(),
        read_all(&env.path("orig/only-alice.parquet")).schema()
    );
    let p = &env.last_statement()["predicate"];
    assert_eq!(erased_rows(p, "data/duck.parquet"), 5);
    assert_eq!(erased_rows(p, "data/only-alice.parquet"), 5);
    assert_eq!(p["erase"]["verification"]["residual_rows"], 0);
}

/// A file as ML teams keep text: no dictionaries (or one that overflowed), so every string
/// column, the subject's included, is stored PLAIN; the subject is null in some rows. Each
/// row's text names its doc, so its bytes can be looked for.
fn plain_text_parquet(users: &[Option<&str>], props: WriterProperties) -> Vec<u8> {
    let docs: Vec<String> = (0..users.len()).map(|i| format!("d{i}")).collect();
    let users: Vec<Option<String>> = users.iter().map(|u| u.map(String::from)).collect();
    parquet_with("user_id", &docs, &users, props)
}

#[test]
fn plain_text_columns_lose_the_erased_rows_page_by_page_and_keep_everything_else() {
    let env = Env::new();
    env.write("erase.txt", "bob\n");
    let users: Vec<Option<&str>> = (0..3000)
        .map(|i| match i % 7 {
            0 => None,
            1 | 4 => Some("bob"),
            2 => Some("alice"),
            _ => Some("carol"),
        })
        .collect();
    let mut originals = BTreeMap::new();
    for (name, compression, dictionary) in [
        ("plain", parquet::basic::Compression::UNCOMPRESSED, false),
        (
            "zstd",
            parquet::basic::Compression::ZSTD(Default::default()),
            false,
        ),
        ("snappy", parquet::basic::Compression::SNAPPY, true),
    ] {
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_dictionary_enabled(dictionary)
            // Dictionaries overflow into PLAIN pages; pages of 100 rows, groups of 1000.
            .set_dictionary_page_size_limit(200)
            .set_data_page_row_count_limit(100)
            .set_write_batch_size(100)
            .set_max_row_group_row_count(Some(1000))
            .build();
        let bytes = plain_text_parquet(&users, props);
        env.write(&format!("data/{name}.parquet"), &bytes);
        originals.insert(name, env.write(&format!("orig/{name}.parquet"), &bytes));
    }
    erase_job(&env, &erase_section(""));

    run_erase(&env, &[]).expect(0);
    let kept: Vec<String> = (0..3000)
        .filter(|i| i % 7 != 1 && i % 7 != 4)
        .map(|i| format!("d{i}"))
        .collect();
    for (name, orig) in &originals {
        let now = env.path(&format!("data/{name}.parquet"));
        let (before, after) = (read_all(orig), read_all(&now));
        assert_eq!(after.schema(), before.schema(), "{name}");
        assert_eq!(
            docs_of(&after),
            kept,
            "{name}: exactly bob's rows go, in order"
        );
        assert_eq!(
            text_column(&after, "user_id"),
            text_column(&before, "user_id")
                .into_iter()
                .filter(|u| u.as_deref() != Some("bob"))
                .collect::<Vec<_>>(),
            "{name}: subjects and nulls of the kept rows"
        );
        assert!(
            text_column(&after, "text")
                .iter()
                .zip(&kept)
                .all(|(t, d)| t.as_deref() == Some(format!("text of {d} lorem ipsum").as_str())),
            "{name}: every kept row's text is its own"
        );
        let m = metadata(&now);
        for rg in m.row_groups() {
            let stats = rg.column(1).statistics().expect("statistics are written");
            assert_eq!(stats.min_bytes_opt(), Some(b"alice".as_slice()), "{name}");
            assert_eq!(stats.max_bytes_opt(), Some(b"carol".as_slice()), "{name}");
            assert_eq!(
                stats.null_count_opt(),
                Some(143),
                "{name}: 1000 rows, every 7th null"
            );
        }
        let p = env.last_statement();
        assert_eq!(
            erased_rows(&p["predicate"], &format!("data/{name}.parquet")),
            857
        );
    }
    // Uncompressed, the file's bytes can be searched: neither bob nor the text of one of
    // his rows is anywhere, not in a page, a statistic or the page index.
    let bytes = env.read("data/plain.parquet");
    for gone in ["bob", "text of d1 ", "text of d2997 "] {
        assert!(
            !bytes.windows(gone.len()).any(|w| w == gone.as_bytes()),
            "{gone:?} survives in the rewritten file"
        );
    }
    assert!(bytes.windows(11).any(|w| w == b"text of d0 "));
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["erase"]["verification"]["passed"], true);
    assert_eq!(p["status"], "complete");
}

/// Damage inside the pages of PLAIN text columns, which are rewritten without Arrow: each
/// file fails alone and unchanged, or reads and is swept; nothing panics.
#[test]
fn plain_text_pages_with_random_damage_fail_alone_unchanged_or_are_swept() {
    let env = Env::new();
    let mut rng = Rng(0x0da3_a6e5_9a6e);
    env.write("erase.txt", "bob\n");
    let users: Vec<Option<&str>> = (0..400)
        .map(|i| [None, Some("bob"), Some("alice")][i % 3])
        .collect();
    let mut originals = BTreeMap::new();
    for (name, compression) in [
        ("plain", parquet::basic::Compression::UNCOMPRESSED),
        (
            "zstd",
            parquet::basic::Compression::ZSTD(Default::default()),
        ),
        ("snappy", parquet::basic::Compression::SNAPPY),
    ] {
        let props = WriterProperties::builder()
            .set_compression(compression)
            .set_dictionary_enabled(false)
            .set_data_page_row_count_limit(50)
            .set_write_batch_size(50)
            .set_max_row_group_row_count(Some(200))
            .build();
        let good = plain_text_parquet(&users, props);
        let n = good.len();
        let footer = n - 8 - u32::from_le_bytes(good[n - 8..n - 4].try_into().unwrap()) as usize;
        for v in 0..40 {
            let mut bytes = good.clone();
            for _ in 0..rng.pick(&[1, 1, 2, 8]) {
                let at = 4 + rng.below(footer - 4);
                bytes[at] = match rng.below(3) {
                    0 => bytes[at] ^ (1 << rng.below(8)),
                    1 => rng.pick(&[0, 0x7f, 0x80, 0xff]),
                    _ => rng.next() as u8,
                };
            }
            let path = format!("data/{name}-{v:02}.parquet");
            env.write(&path, &bytes);
            originals.insert(path, bytes);
        }
    }
    erase_job(&env, &erase_section(""));
    let stderr = sweep_of_damaged_files(&env, &originals, 10);
    assert!(
        !stderr.contains("internal error"),
        "the page rewrite met damage with a panic (caught, but a bug): {stderr}"
    );
}

// ---------------------------------------------------------------------------------------
// Embedding caches

#[test]
fn embedding_caches_in_three_layouts_lose_exactly_the_erased_subjects() {
    let env = Env::new();
    env.write("erase.txt", "alice\nzed\n");
    // datasets = false: the input files are left alone even when they hold a subject.
    env.write("data/a.jsonl", "{\"user_id\":\"alice\"}\n");
    for f in ["vec.npy", "meta.json", "nested/deep.bin"] {
        env.write(&format!("cache/dirs/alice/{f}"), "alice's vectors");
    }
    env.write("cache/dirs/bob/vec.npy", "bob");
    env.write("cache/dirs/alice-2/vec.npy", "alice-2");
    for f in ["alice.npy", "alice.json", "zed.npy"] {
        env.write(&format!("cache/files/{f}"), "gone");
    }
    for f in ["bob.npy", "alice-2.npy", "Alice.npy", "xalice.npy"] {
        env.write(&format!("cache/files/{f}"), "stays");
    }
    let (table, table_expected) = lines(&[
        ("{\"subject\":\"alice\",\"vec\":[0.1,0.2]}\n", true),
        ("{\"subject\":\"bob\",\"vec\":[0.3,0.4]}\n", false),
        ("{\"subject\":\"zed\",\"vec\":[0.5,0.6]}\n", true),
        (
            "{\"user_id\":\"alice\",\"subject\":\"bob\",\"vec\":[0.7]}\n",
            false,
        ),
    ]);
    env.write("cache/table/vectors.jsonl", &table);
    env.write(
        "cache/table/part/vectors.parquet",
        small_parquet(
            "subject",
            &[Some("bob"), Some("alice"), Some("carol"), Some("zed")],
            2,
        ),
    );
    env.write("cache/table/other.jsonl", "{\"subject\":\"bob\"}\n");
    erase_job(
        &env,
        "[erase]\nsubjects_file = \"erase.txt\"\ndatasets = false\n\n\
         [[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n\n\
         [[erase.embeddings]]\npath = \"cache/files\"\nlayout = \"file-per-subject\"\n\n\
         [[erase.embeddings]]\npath = \"cache/table\"\nlayout = \"table\"\nsubject_field = \"subject\"\n",
    );
    let data_before = stamp(&env.path("data/a.jsonl"));
    let other_before = stamp(&env.path("cache/table/other.jsonl"));

    run_erase(&env, &[]).expect(0);
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(env.path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    assert_eq!(
        names("cache/dirs"),
        BTreeSet::from(["bob".into(), "alice-2".into()])
    );
    assert_eq!(
        names("cache/files"),
        ["bob.npy", "alice-2.npy", "Alice.npy", "xalice.npy"]
            .map(String::from)
            .into()
    );
    assert_eq!(env.read_string("cache/dirs/bob/vec.npy"), "bob");
    assert_eq!(env.read("cache/table/vectors.jsonl"), table_expected);
    assert_eq!(
        text_column(
            &read_all(&env.path("cache/table/part/vectors.parquet")),
            "subject"
        ),
        [Some("bob".to_string()), Some("carol".to_string())]
    );
    assert_eq!(stamp(&env.path("cache/table/other.jsonl")), other_before);
    assert_eq!(
        stamp(&env.path("data/a.jsonl")),
        data_before,
        "datasets = false leaves the datasets alone"
    );

    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "complete", "{:#}", p["problems"]);
    let dirs = cache(p, "cache/dirs");
    assert_eq!(dirs["layout"], "dir-per-subject");
    assert_eq!(
        dirs["entries_removed"], 1,
        "a subject's directory counts once"
    );
    assert_eq!(dirs["subjects_found"], 1);
    assert_eq!(dirs["subjects_absent"], 1);
    assert_eq!(dirs["error"], Value::Null);
    let files = cache(p, "cache/files");
    assert_eq!(files["layout"], "file-per-subject");
    assert_eq!(files["entries_removed"], 3);
    assert_eq!(files["subjects_found"], 2);
    assert_eq!(files["subjects_absent"], 0);
    assert_eq!(erased_rows(p, "cache/table/vectors.jsonl"), 2);
    assert_eq!(erased_rows(p, "cache/table/part/vectors.parquet"), 2);
    assert_eq!(input(p, "cache/table/other.jsonl")["output"], Value::Null);
    assert!(
        p["inputs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["path"] != "data/a.jsonl"),
        "datasets = false: the datasets are not even read"
    );
    let v = &p["erase"]["verification"];
    assert_eq!(v["caches_checked"], 2);
    assert_eq!(v["files_checked"], 2);
    assert_eq!(v["residual_entries"], 0);
    assert_eq!(v["passed"], true);
}

#[test]
fn hostile_ids_never_become_paths_and_nothing_outside_a_cache_root_is_touched() {
    let env = Env::new();
    let long = "x".repeat(300);
    env.write(
        "erase.txt",
        [
            format!("alice\n../outside\n..\n.\na/b\nev\0il\nta\tb\n\n   \nmallory\n{long}\n")
                .as_bytes(),
            b"caf\xe9 latin-1\n",
        ]
        .concat(),
    );
    // Sentinels outside the cache roots.
    env.write("outside/sentinel.txt", "do not touch");
    env.write("outside/inner/deep.txt", "do not touch either");
    env.write(
        "outside/data.jsonl",
        "{\"user_id\":\"alice\"}\n{\"user_id\":\"mallory\"}\n",
    );
    env.write(
        "outside/vectors.jsonl",
        "{\"user_id\":\"alice\",\"vec\":[1]}\n",
    );
    env.write("outside.npy", "sibling of the cache roots");
    env.write("cache/outside.npy", "parent of the per-file root");
    env.write("cache/outside/keep.txt", "parent of the by-subject root");
    // dir-per-subject
    env.write("cache/by-subject/alice/vec.npy", "alice");
    symlink(
        "../../../outside",
        &env.path("cache/by-subject/alice/escape"),
    );
    symlink("../../outside", &env.path("cache/by-subject/mallory"));
    env.write(
        "cache/by-subject/a/b/vec.npy",
        "not a subject: a/b is no name",
    );
    env.write("cache/by-subject/bob/vec.npy", "bob");
    // file-per-subject
    env.write("cache/per-file/alice.npy", "alice");
    symlink(
        "../../outside/sentinel.txt",
        &env.path("cache/per-file/mallory.npy"),
    );
    symlink("../../outside/inner", &env.path("cache/per-file/mallory.d"));
    env.write("cache/per-file/a/b.npy", "not a subject");
    env.write("cache/per-file/bob.npy", "bob");
    // table, with a symlink to a file outside
    env.write(
        "cache/table/vectors.jsonl",
        "{\"user_id\":\"alice\",\"vec\":[1]}\n{\"user_id\":\"bob\",\"vec\":[2]}\n{\"user_id\":\"../outside\",\"vec\":[3]}\n",
    );
    symlink(
        "../../outside/vectors.jsonl",
        &env.path("cache/table/linked.jsonl"),
    );
    // the dataset, with a symlink to a file outside
    let rows: Vec<String> = [
        "alice",
        "bob",
        "../outside",
        "..",
        ".",
        "a/b",
        "mallory",
        long.as_str(),
    ]
    .iter()
    .map(|u| format!("{{\"user_id\":{}}}\n", serde_json::to_string(u).unwrap()))
    .collect();
    env.write("data/a.jsonl", rows.concat());
    symlink("../outside/data.jsonl", &env.path("data/linked.jsonl"));
    erase_job(
        &env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/by-subject\"\nlayout = \"dir-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/per-file\"\nlayout = \"file-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/table\"\nlayout = \"table\"\nsubject_field = \"user_id\"\n",
        ),
    );
    let outside_before = tree(&env.path("outside"), true);
    let siblings_before = (
        stamp(&env.path("outside.npy")),
        stamp(&env.path("cache/outside.npy")),
        tree(&env.path("cache/outside"), true),
    );

    let out = run_erase(&env, &[]).expect(1);
    assert_eq!(
        tree(&env.path("outside"), true),
        outside_before,
        "nothing outside the cache roots is touched, through symlinks or `..`"
    );
    assert_eq!(
        (
            stamp(&env.path("outside.npy")),
            stamp(&env.path("cache/outside.npy")),
            tree(&env.path("cache/outside"), true),
        ),
        siblings_before
    );
    assert!(!exists(&env.path("cache/by-subject/alice")));
    assert!(
        !exists(&env.path("cache/by-subject/mallory")),
        "the symlink named like an erased subject is removed itself"
    );
    assert!(!exists(&env.path("cache/per-file/alice.npy")));
    assert!(!exists(&env.path("cache/per-file/mallory.npy")));
    assert!(!exists(&env.path("cache/per-file/mallory.d")));
    assert_eq!(
        env.read_string("cache/by-subject/a/b/vec.npy"),
        "not a subject: a/b is no name"
    );
    assert_eq!(env.read_string("cache/per-file/a/b.npy"), "not a subject");
    assert_eq!(env.read_string("cache/by-subject/bob/vec.npy"), "bob");
    assert_eq!(env.read_string("cache/per-file/bob.npy"), "bob");
    assert!(exists(&env.path("cache/by-subject")) && exists(&env.path("cache/per-file")));
    assert_eq!(
        env.read_string("cache/table/vectors.jsonl"),
        "{\"user_id\":\"bob\",\"vec\":[2]}\n"
    );
    assert!(
        std::fs::symlink_metadata(env.path("cache/table/linked.jsonl"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(std::fs::symlink_metadata(env.path("data/linked.jsonl"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        env.read_string("data/a.jsonl"),
        "{\"user_id\":\"bob\"}\n",
        "ids unusable as names still erase their dataset rows"
    );

    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "partial");
    let e = &p["erase"];
    let rejected: Vec<u64> = e["rejected_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(!r["reason"].as_str().unwrap().is_empty());
            r["line"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        rejected,
        [6, 7, 12],
        "the NUL, tab and non-UTF-8 ids are reported by line"
    );
    assert_eq!(e["subjects_from_file"], 7);
    assert_eq!(
        e["subjects"],
        json!(pseudonyms(
            &env,
            &[
                "alice",
                "../outside",
                "..",
                ".",
                "a/b",
                "mallory",
                long.as_str()
            ]
        ))
    );
    assert_eq!(e["ids_unusable_as_names"], 4);
    let by_subject = cache(p, "cache/by-subject");
    assert_eq!(by_subject["entries_removed"], 2);
    assert_eq!(by_subject["subjects_found"], 2);
    let per_file = cache(p, "cache/per-file");
    assert_eq!(per_file["entries_removed"], 3);
    assert_eq!(per_file["subjects_found"], 2);
    assert_eq!(e["rows_removed"], 9);
    assert_eq!(e["verification"]["residual_entries"], 0);
    assert_eq!(e["verification"]["residual_rows"], 0);
    let skipped = p["skipped"]["symlinks"].to_string();
    assert!(
        skipped.contains("data/linked.jsonl") && skipped.contains("cache/table/linked.jsonl"),
        "{skipped}"
    );
    for text in report_texts(&env).iter().chain([&out.stdout, &out.stderr]) {
        assert!(!text.contains("mallory"), "a raw id leaked: {text}");
        assert!(!text.contains(&long), "a raw id leaked");
    }
}

#[test]
fn an_empty_id_from_the_snapshot_is_reported_and_never_looked_up() {
    let env = Env::new();
    env.sqlite(
        "consent.db",
        &format!(
            "{RECORDS_TABLE} INSERT INTO consent_records (id, user_id, purpose, status, created_at) VALUES
             ('1','','model_training','revoked','2025-01-01T00:00:00Z'),
             ('2','bob','model_training','revoked','2025-01-01T00:00:00Z'),
             ('3','keep','model_training','granted','2025-01-01T00:00:00Z');"
        ),
    );
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"bob\"}\n{\"user_id\":\"keep\"}\n",
    );
    env.write("cache/dirs/bob/v", "bob");
    env.write("cache/dirs/keep/v", "keep");
    erase_job(
        &env,
        "[consent]\nsnapshot = \"consent.db\"\npurpose = \"model_training\"\n\n\
         [erase]\nsubjects_from_revocations = true\n\n\
         [[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n",
    );
    run_erase(&env, &[]).expect(1);
    assert_eq!(env.read_string("cache/dirs/keep/v"), "keep");
    assert!(!exists(&env.path("cache/dirs/bob")));
    assert_eq!(env.read_string("data/a.jsonl"), "{\"user_id\":\"keep\"}\n");
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "partial");
    assert_eq!(p["erase"]["ids_unusable_as_names"], 1);
    assert_eq!(p["erase"]["subjects_from_revocations"], 2);
}

// ---------------------------------------------------------------------------------------
// Hard links, revocations

#[test]
fn a_hard_linked_file_is_reported_not_rewritten() {
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    let plain = b"{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n".to_vec();
    env.write("data/a.jsonl", &plain);
    env.write("data/b.jsonl.gz", gzip(&plain));
    env.write("data/c.parquet", fixture("pyarrow-dict-snappy.parquet"));
    env.write("data/d.jsonl", &plain);
    std::fs::create_dir_all(env.path("elsewhere")).unwrap();
    let linked = [
        ("data/a.jsonl", "elsewhere/a.jsonl"),
        ("data/b.jsonl.gz", "elsewhere/b.jsonl.gz"),
        ("data/c.parquet", "elsewhere/c.parquet"),
    ];
    for (name, other) in linked {
        std::fs::hard_link(env.path(name), env.path(other)).unwrap();
    }
    erase_job(&env, &erase_section(""));
    let before: Vec<_> = linked
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .map(|n| (stamp(&env.path(n)), env.read(n)))
        .collect();

    let out = run_erase(&env, &[]).expect(1);
    assert!(out.stdout.contains("partial"), "{}", out.stdout);
    let after: Vec<_> = linked
        .iter()
        .flat_map(|(a, b)| [*a, *b])
        .map(|n| (stamp(&env.path(n)), env.read(n)))
        .collect();
    assert_eq!(
        after, before,
        "both names of each hard-linked file are unchanged"
    );
    for (name, _) in linked {
        assert_eq!(std::fs::metadata(env.path(name)).unwrap().nlink(), 2);
    }
    assert_eq!(env.read("data/d.jsonl"), b"{\"user_id\":\"bob\"}\n");

    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "partial");
    assert_eq!(p["erase"]["files_failed"], 3);
    assert_eq!(p["erase"]["files_rewritten"], 1);
    for (name, _) in linked {
        let i = input(p, name);
        assert_eq!(i["status"], "failed", "{name}");
        assert_eq!(i["output"], Value::Null, "{name}");
        assert!(
            i["error"].as_str().unwrap().contains("hard link"),
            "{name}: {}",
            i["error"]
        );
        assert!(
            p["problems"].to_string().contains(name),
            "{name}: {:#}",
            p["problems"]
        );
    }
}

#[test]
fn subjects_from_revocations_are_read_from_the_snapshot_at_as_of() {
    let env = Env::new();
    env.sqlite(
        "consent.db",
        &format!(
            "{RECORDS_TABLE} INSERT INTO consent_records
             (id, user_id, purpose, status, granted_at, revoked_at, expiry_at, derived_purposes, created_at) VALUES
             ('1','alice','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,NULL,'2025-01-01T00:00:00Z'),
             ('2','bob','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,NULL,'2025-01-01T00:00:00Z'),
             ('3','bob','model_training','revoked',NULL,'2025-06-01T00:00:00Z',NULL,NULL,'2025-06-01T00:00:00Z'),
             ('4','carol','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,NULL,'2025-01-01T00:00:00Z'),
             ('5','carol','model_training','revoked',NULL,'2027-01-01T00:00:00Z',NULL,NULL,'2027-01-01T00:00:00Z'),
             ('6','dave','model_training','granted','2025-01-01T00:00:00Z','2026-01-01T00:00:00Z',NULL,NULL,'2025-01-01T00:00:00Z'),
             ('7','erin','model_training','granted','2025-01-01T00:00:00Z',NULL,'2026-01-01T00:00:00Z',NULL,'2025-01-01T00:00:00Z'),
             ('8','frank','model_training','pending',NULL,NULL,NULL,NULL,'2025-01-01T00:00:00Z'),
             ('9','gina','ads','revoked',NULL,'2025-06-01T00:00:00Z',NULL,NULL,'2025-06-01T00:00:00Z'),
             ('10','hank','analytics','granted','2025-01-01T00:00:00Z',NULL,NULL,'[\"model_training\"]','2025-01-01T00:00:00Z'),
             ('11','hank','analytics','revoked',NULL,'2025-06-01T00:00:00Z',NULL,'[\"model_training\"]','2025-06-01T00:00:00Z'),
             ('12','7','model_training','revoked',NULL,'2025-06-01T00:00:00Z',NULL,NULL,'2025-06-01T00:00:00Z');"
        ),
    );
    env.write("erase.txt", "zoe\nbob\n");
    let users = [
        "alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "zoe", "ivan",
    ];
    let mut rows: Vec<String> = users
        .iter()
        .map(|u| format!("{{\"user_id\":\"{u}\",\"text\":\"x\"}}\n"))
        .collect();
    rows.push("{\"user_id\":7}\n".into());
    env.write("data/a.jsonl", rows.concat());
    erase_job(
        &env,
        "[consent]\nsnapshot = \"consent.db\"\npurpose = \"model_training\"\n\n\
         [erase]\nsubjects_file = \"erase.txt\"\nsubjects_from_revocations = true\n",
    );

    run_erase(&env, &[]).expect(0);
    let kept: String = ["alice", "carol", "erin", "frank", "gina", "ivan"]
        .iter()
        .map(|u| format!("{{\"user_id\":\"{u}\",\"text\":\"x\"}}\n"))
        .collect();
    assert_eq!(env.read_string("data/a.jsonl"), kept);
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "complete");
    let e = &p["erase"];
    assert_eq!(e["subjects_from_revocations"], 4, "bob, dave, hank and 7");
    assert_eq!(
        e["subjects"],
        json!(pseudonyms(&env, &["bob", "dave", "hank", "7", "zoe"])),
        "the union of both sources, each once"
    );
    assert_eq!(e["rows_removed"], 5);
    assert_eq!(
        p["consent"]["sha256"],
        sha(&env.read("consent.db")),
        "the snapshot read is in the report"
    );
}

/// A new consent request (`pending`) after a revocation grants nothing: the subject still
/// revoked. A grant after the revocation does restore consent, pending request or not.
#[test]
fn a_pending_request_after_a_revocation_does_not_hide_it() {
    let env = Env::new();
    env.sqlite(
        "consent.db",
        &format!(
            "{RECORDS_TABLE} INSERT INTO consent_records
             (id, user_id, purpose, status, granted_at, revoked_at, created_at) VALUES
             ('1','rp','model_training','granted','2025-01-01T00:00:00Z',NULL,'2025-01-01T00:00:00Z'),
             ('2','rp','model_training','revoked',NULL,'2025-03-01T00:00:00Z','2025-03-01T00:00:00Z'),
             ('3','rp','model_training','pending',NULL,NULL,'2025-06-01T00:00:00Z'),
             ('4','rgp','model_training','revoked',NULL,'2025-03-01T00:00:00Z','2025-03-01T00:00:00Z'),
             ('5','rgp','model_training','granted','2025-04-01T00:00:00Z',NULL,'2025-04-01T00:00:00Z'),
             ('6','rgp','model_training','pending',NULL,NULL,'2025-06-01T00:00:00Z'),
             ('7','rf','model_training','revoked',NULL,'2025-03-01T00:00:00Z','2025-03-01T00:00:00Z'),
             ('8','rf','model_training','granted','2027-01-01T00:00:00Z',NULL,'2025-06-01T00:00:00Z'),
             ('9','p','model_training','pending',NULL,NULL,'2025-06-01T00:00:00Z');
             INSERT INTO consent_records (id, user_id, purpose, status, derived_purposes, created_at) VALUES
             ('10','dq','analytics','pending','[\"model_training\"]','2025-01-01T00:00:00Z'),
             ('11','dq','analytics','revoked',NULL,'2025-03-01T00:00:00Z');"
        ),
    );
    let users = ["rp", "rgp", "rf", "p", "dq"];
    let rows: String = users
        .iter()
        .map(|u| format!("{{\"user_id\":\"{u}\"}}\n"))
        .collect();
    env.write("data/a.jsonl", &rows);
    erase_job(
        &env,
        "[consent]\nsnapshot = \"consent.db\"\npurpose = \"model_training\"\n\n\
         [erase]\nsubjects_from_revocations = true\n",
    );
    run_erase(&env, &[]).expect(0);
    assert_eq!(
        env.read_string("data/a.jsonl"),
        "{\"user_id\":\"rgp\"}\n{\"user_id\":\"p\"}\n",
        "rp and rf revoked and were never granted again; dq revoked a purpose that derives \
         model_training, though only a pending record of it said so"
    );
    let e = &env.last_statement()["predicate"]["erase"];
    assert_eq!(e["subjects"], json!(pseudonyms(&env, &["rp", "rf", "dq"])));
}

// ---------------------------------------------------------------------------------------
// Idempotence, dry run, pseudonyms

/// A small corpus over every format and cache layout; alice and 42 are erased.
fn mixed_corpus(env: &Env) {
    env.write("erase.txt", "alice\n42\n2\n");
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n{\"user_id\":42}\n{\"user_id\":\"carol\"}\n{\"user_id\":\"dave\"}\n",
    );
    env.write("data/clean.jsonl", "{\"user_id\":\"bob\"}\n");
    env.write(
        "data/g/b.jsonl.gz",
        gzip(b"{\"user_id\":\"bob\"}\n{\"user_id\":\"alice\"}\n"),
    );
    env.write(
        "data/z/c.jsonl.zst",
        zstd(b"{\"user_id\":\"42\"}\n{\"user_id\":\"erin\"}\n"),
    );
    env.write("data/p/d.parquet", fixture("pyarrow-dict-snappy.parquet"));
    env.write("data/p/e.parquet", fixture("pyarrow-int-zstd.parquet"));
    env.write("cache/dirs/alice/v.npy", "a");
    env.write("cache/dirs/bob/v.npy", "b");
    env.write("cache/files/42.npy", "42");
    env.write("cache/files/bob.npy", "b");
    env.write(
        "cache/table/t.jsonl",
        "{\"user_id\":\"alice\",\"v\":[1]}\n{\"user_id\":\"bob\",\"v\":[2]}\n",
    );
    erase_job(
        env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/files\"\nlayout = \"file-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/table\"\nlayout = \"table\"\nsubject_field = \"user_id\"\n",
        ),
    );
}

#[test]
fn running_the_same_job_twice_changes_nothing_the_second_time() {
    let env = Env::new();
    mixed_corpus(&env);
    run_erase(&env, &[]).expect(0);
    let first = env.last_statement();
    assert_eq!(first["predicate"]["erase"]["files_rewritten"], 6);
    let data = tree(&env.path("data"), false);
    let caches = tree(&env.path("cache"), false);

    run_erase(&env, &[]).expect(0);
    assert_eq!(env.reports().len(), 2, "each run signs its report");
    assert_eq!(tree(&env.path("data"), false), data, "no file rewritten");
    assert_eq!(tree(&env.path("cache"), false), caches);
    let statement = env.last_statement();
    let p = &statement["predicate"];
    assert_eq!(p["status"], "complete");
    let e = &p["erase"];
    assert_eq!(e["rows_removed"], 0);
    assert_eq!(e["files_rewritten"], 0);
    assert_eq!(e["files_untouched"], 7);
    assert_eq!(e["resumed"], false);
    for c in e["caches"].as_array().unwrap() {
        assert_eq!(c["entries_removed"], 0, "{c}");
        assert_eq!(c["subjects_found"], 0, "{c}");
        assert_eq!(c["subjects_absent"], 3, "already absent: {c}");
    }
    assert_eq!(e["verification"]["passed"], true);
    assert_eq!(e["verification"]["residual_rows"], 0);
    assert_eq!(statement["subject"], json!([]), "no output file");
    assert!(p["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["output"].is_null() && i["sha256_before"] == i["sha256_after"]));
}

#[test]
fn files_without_an_erased_subject_are_only_read() {
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    env.write(
        "data/compressed/y.jsonl.gz",
        gzip(b"{\"user_id\":\"bob\"}\n"),
    );
    env.write(
        "data/compressed/y.jsonl.zst",
        zstd(b"{\"user_id\":\"bob\"}\n"),
    );
    env.write(
        "data/compressed/z.parquet",
        small_parquet("user_id", &[Some("bob")], 1),
    );
    env.write("data/plain/x.jsonl", "{\"user_id\":\"bob\"}\n".repeat(1000));
    env.write("data/dirty/a.jsonl", "{\"user_id\":\"alice\"}\n");
    erase_job(&env, &erase_section(""));
    let compressed = tree(&env.path("data/compressed"), true);
    let plain = tree(&env.path("data/plain"), true);
    std::thread::sleep(Duration::from_millis(20));

    run_erase(&env, &[]).expect(0);
    assert_eq!(
        tree(&env.path("data/compressed"), true),
        compressed,
        "a directory whose files hold no erased subject is not written to, not even a temporary file"
    );
    assert_eq!(
        tree(&env.path("data/plain"), true),
        plain,
        "a directory whose plain JSONL files hold no erased subject is not written to, not even a temporary file"
    );
    assert_eq!(env.read_string("data/dirty/a.jsonl"), "");
}

/// Once the job has a report directory, a dry run still creates nothing there, and runs
/// while a real run of the job holds its lock.
#[test]
fn a_dry_run_after_a_real_run_creates_nothing_and_runs_beside_one() {
    let env = Env::new();
    mixed_corpus(&env);
    std::fs::create_dir(env.path("reports")).unwrap();
    let lock = std::fs::File::create(env.path("reports/.consentry-run-e.lock")).unwrap();
    let before = tree(env.dir.path(), true);
    lock.lock().unwrap();
    run_erase(&env, &["--dry-run"]).expect(0);
    let out = run_erase(&env, &[]).expect(2);
    assert!(out.stderr.contains("already running"), "{}", out.stderr);
    assert_eq!(
        tree(env.dir.path(), true),
        before,
        "neither run changed anything"
    );
    drop(lock);
    std::fs::remove_file(env.path("reports/.consentry-run-e.lock")).unwrap();
    let before = tree(env.dir.path(), true);
    run_erase(&env, &["--dry-run"]).expect(0);
    assert_eq!(
        tree(env.dir.path(), true),
        before,
        "no lock file made by a dry run"
    );
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let env = Env::new();
    mixed_corpus(&env);
    let before = tree(env.dir.path(), true);
    std::thread::sleep(Duration::from_millis(20));

    let out = run_erase(&env, &["--dry-run"]).expect(0);
    assert_eq!(
        tree(env.dir.path(), true),
        before,
        "a dry run changes nothing"
    );
    assert!(!exists(&env.path("reports")), "no report, no journal");
    for line in [
        "remove 2 of 5 rows from data/a.jsonl",
        "remove 1 of 2 rows from data/g/b.jsonl.gz",
        "remove 1 of 2 rows from data/z/c.jsonl.zst",
        "remove 3 of 8 rows from data/p/d.parquet",
        "remove 2 of 8 rows from data/p/e.parquet",
        "remove 1 of 2 rows from cache/table/t.jsonl",
    ] {
        assert!(
            out.stdout.contains(line),
            "plan lacks {line:?}:\n{}",
            out.stdout
        );
    }
    assert!(!out.stdout.contains("data/clean.jsonl"), "{}", out.stdout);
    assert!(
        out.stdout.contains("would remove 1 entry,"),
        "cache entries in the plan:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("rows to remove; 6 files to rewrite")
            && !out.stdout.contains("removed"),
        "a plan says what it would do, not what it did:\n{}",
        out.stdout
    );

    let out = run_erase(&env, &["--dry-run", "--json"]).expect(0);
    assert_eq!(tree(env.dir.path(), true), before);
    let plan: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(plan["job"]["dry_run"], true);
    assert_eq!(plan["report"], Value::Null);
    assert_eq!(plan["erase"]["rows_removed"], 10);
    assert_eq!(plan["erase"]["files_rewritten"], 6);
    assert_eq!(plan["erase"]["files_untouched"], 1);
    assert_eq!(erased_rows(&plan, "data/p/d.parquet"), 3);
    assert!(plan["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["output"].is_null()));
    assert_eq!(cache(&plan, "cache/dirs")["entries_removed"], 1);
    assert_eq!(cache(&plan, "cache/files")["entries_removed"], 1);

    // The real run does what the plan said.
    run_erase(&env, &[]).expect(0);
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["erase"]["rows_removed"], 10);
    assert_eq!(p["erase"]["files_rewritten"], 6);
    assert_eq!(env.reports().len(), 1);
}

#[test]
fn reports_and_output_name_subjects_only_by_pseudonym() {
    let env = Env::new();
    let ids = ["Quintessa-Vantablack", "Ozymandias-Kettle", "987654321987"];
    env.write(
        "erase.txt",
        format!(
            "{}\n{}\n{}\nRejected\tQuux-Tabbed\n",
            ids[0], ids[1], ids[2]
        ),
    );
    env.write(
        "data/a.jsonl",
        format!(
            "{{\"user_id\":\"{}\"}}\n{{\"user_id\":{}}}\n{{\"user_id\":\"bob\"}}\n{{broken \"{}\"\n{{broken \"Quux-Tabbed\"\n",
            ids[0], ids[2], ids[1]
        ),
    );
    env.write("data/hl.jsonl", format!("{{\"user_id\":\"{}\"}}\n", ids[1]));
    std::fs::hard_link(env.path("data/hl.jsonl"), env.path("hl-other.jsonl")).unwrap();
    env.write(&format!("cache/dirs/{}/v", ids[0]), "v");
    env.write(&format!("cache/files/{}.npy", ids[1]), "v");
    env.write(
        "cache/table/t.jsonl",
        format!("{{\"user_id\":\"{}\"}}\n{{\"user_id\":\"bob\"}}\n", ids[2]),
    );
    erase_job(
        &env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/files\"\nlayout = \"file-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/table\"\nlayout = \"table\"\nsubject_field = \"user_id\"\n",
        ),
    );
    let mut outputs = Vec::new();
    for args in [
        &["--dry-run"][..],
        &["--dry-run", "--json"],
        &[],
        &["--json"],
    ] {
        let out = run_erase(&env, args);
        assert_eq!(out.code, 1, "{args:?}: {}{}", out.stdout, out.stderr);
        outputs.push(out.stdout);
        outputs.push(out.stderr);
    }
    let r = env.reports();
    assert_eq!(r.len(), 2);
    for report in &r {
        let out = env.run(&["report", "show", path_str(report)]);
        outputs.push(out.stdout);
        outputs.push(out.stderr);
        let html = env.path("show.html");
        env.run(&[
            "report",
            "show",
            path_str(report),
            "--html",
            path_str(&html),
        ]);
        outputs.push(std::fs::read_to_string(&html).unwrap_or_default());
    }
    outputs.extend(report_texts(&env));
    for text in &outputs {
        for id in ids.iter().chain(&["Quux-Tabbed"]) {
            assert!(!text.contains(id), "raw id {id:?} in:\n{text}");
        }
    }
    let first: Value = serde_json::from_str(&report_texts(&env)[1]).unwrap();
    let e = &first["predicate"]["erase"];
    assert_eq!(e["subjects"], json!(pseudonyms(&env, &ids)));
    assert_eq!(e["rows_removed"], 4);
    assert_eq!(
        e["rejected_ids"],
        json!([{"line": 4, "reason": e["rejected_ids"][0]["reason"]}])
    );
}

// ---------------------------------------------------------------------------------------
// The journal

/// The files a journal records rewrites of. It is JSON Lines whose first line names the job;
/// every line is whole but the last, which a kill during its append may have cut short.
fn journaled_rewrites(bytes: &[u8]) -> BTreeSet<String> {
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    let mut files = BTreeSet::new();
    for (n, line) in lines.iter().enumerate() {
        let entry: Value = match serde_json::from_slice(line) {
            Ok(entry) if line.ends_with(b"\n") => entry,
            _ if n + 1 == lines.len() => break,
            Ok(_) => unreachable!("only the last line can lack its newline"),
            Err(e) => panic!("journal line {} is not whole JSON: {e}", n + 1),
        };
        if n == 0 {
            assert!(
                entry.get("identity").is_some(),
                "the journal opens with the job's identity"
            );
        }
        if let Some(file) = entry["rewrite"]["file"].as_str() {
            files.insert(file.to_string());
        }
    }
    files
}

/// Starts the job with one worker and kills it (SIGKILL) as soon as its journal exists,
/// i.e. as it renames its first rewrite and while it works on the others.
fn interrupt_after_first_rewrite(env: &Env) {
    interrupt_when(env, || env.path(JOURNAL).exists());
}

/// Starts the job with one worker and kills it (SIGKILL) as soon as `now()` says so.
fn interrupt_when(env: &Env, now: impl Fn() -> bool) {
    let mut child = Command::new(BIN)
        .args(["run", "erase.toml", "--no-progress", "--threads", "1"])
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !now() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the job ended before it could be interrupted: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no journal");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed while still running");
    assert!(env.path(JOURNAL).exists());
}

/// alice in a small file and in two big ones, so the job runs long enough to be interrupted.
fn journal_corpus(env: &Env) {
    env.write("erase.txt", "alice\n");
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n",
    );
    let big: String = (0..25_000)
        .map(|i| {
            let u = if i % 1000 == 999 { "alice" } else { "bob" };
            format!("{{\"id\":{i},\"user_id\":\"{u}\",\"text\":\"lorem ipsum dolor sit amet\"}}\n")
        })
        .collect();
    env.write("data/b.jsonl", &big);
    env.write("data/c.jsonl", &big);
}

#[test]
fn a_journal_left_by_a_killed_run_refuses_a_changed_subject_list_until_discarded() {
    let env = Env::new();
    journal_corpus(&env);
    erase_job(&env, &erase_section(""));
    interrupt_after_first_rewrite(&env);
    let journal = env.read_string(JOURNAL);
    assert!(
        !journal.contains("alice"),
        "the journal holds no subject id"
    );

    env.write("erase.txt", "alice\nbob\n");
    let data = tree(&env.path("data"), true);
    let out = run_erase(&env, &[]).expect(2);
    assert!(
        out.stderr.contains("--discard-journal") && out.stderr.contains("subjects"),
        "{}",
        out.stderr
    );
    assert_eq!(
        tree(&env.path("data"), true),
        data,
        "refused: nothing changed"
    );
    assert_eq!(env.read_string(JOURNAL), journal, "the journal is kept");
    assert!(env.reports().is_empty());

    let out = run_erase(&env, &["--discard-journal"]).expect(0);
    assert!(out.stdout.contains("complete"), "{}", out.stdout);
    assert!(!env.path(JOURNAL).exists());
    assert_eq!(env.reports().len(), 1);
    for f in ["data/a.jsonl", "data/b.jsonl", "data/c.jsonl"] {
        assert_eq!(env.read(f), b"", "{f}: alice and bob are both gone");
    }
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "complete");
    assert_eq!(p["erase"]["resumed"], false);
    assert_eq!(
        p["erase"]["subjects"],
        json!(pseudonyms(&env, &["alice", "bob"]))
    );
}

#[test]
fn cache_entries_a_killed_run_removed_count_as_removed_when_the_job_is_run_again() {
    let env = Env::new();
    // 2,000 erased subjects with a cache entry (two files each, so the sweep takes long
    // enough to be cut), 500 without one, and one entry that stays.
    let ids: Vec<String> = (0..2500).map(|i| format!("s{i:05}")).collect();
    env.write("erase.txt", &(ids.join("\n") + "\n"));
    env.write("data/a.jsonl", "{\"user_id\":\"bob\"}\n");
    for id in &ids[..2000] {
        for f in ["a.npy", "b.npy"] {
            env.write(&format!("cache/dirs/{id}/{f}"), id);
        }
    }
    env.write("cache/dirs/bob/a.npy", "bob");
    erase_job(
        &env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n",
        ),
    );
    // Killed once the sweep has removed something: mid-sweep, or, on a slow machine, later.
    let entries = || std::fs::read_dir(env.path("cache/dirs")).unwrap().count();
    interrupt_when(&env, || entries() < 2001);
    let journal = env.read_string(JOURNAL);
    assert!(
        ids.iter().all(|id| !journal.contains(id.as_str())),
        "the journal holds no subject id"
    );
    // Some entries come back before the re-run: each is removed again and counted once.
    for id in &ids[..300] {
        env.write(&format!("cache/dirs/{id}/a.npy"), id);
    }

    let out = run_erase(&env, &[]).expect(0);
    assert!(out.stdout.contains("complete"), "{}", out.stdout);
    assert_eq!(entries(), 1, "only bob's entry is left");
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["erase"]["resumed"], true);
    let c = cache(p, "cache/dirs");
    assert_eq!(
        (
            &c["entries_removed"],
            &c["subjects_found"],
            &c["subjects_absent"]
        ),
        (&json!(2000), &json!(2000), &json!(500)),
        "entries removed before the kill are removed by this job, not absent: {c:#}"
    );
    assert_eq!(p["erase"]["verification"]["residual_entries"], 0);
}

#[test]
fn a_journal_left_by_a_killed_run_refuses_a_changed_snapshot_or_spec() {
    let env = Env::new();
    journal_corpus(&env);
    let consent = |extra: &str| {
        env.sqlite(
            "consent.db",
            &format!(
                "{RECORDS_TABLE} INSERT INTO consent_records (id, user_id, purpose, status, created_at) VALUES
                 ('1','alice','model_training','revoked','2025-01-01T00:00:00Z'),
                 ('2','bob','model_training','granted','2025-01-01T00:00:00Z'){extra};"
            ),
        )
    };
    consent("");
    let original_snapshot = env.read("consent.db");
    let spec = "[consent]\nsnapshot = \"consent.db\"\npurpose = \"model_training\"\n\n\
                [erase]\nsubjects_from_revocations = true\n";
    erase_job(&env, spec);
    interrupt_after_first_rewrite(&env);
    let data = tree(&env.path("data"), true);

    // The same subjects, but another snapshot.
    consent(",('3','carol','model_training','granted','2025-01-01T00:00:00Z')");
    let out = run_erase(&env, &[]).expect(2);
    assert!(out.stderr.contains("snapshot"), "{}", out.stderr);
    assert_eq!(tree(&env.path("data"), true), data);

    // Another spec (only a comment differs).
    env.write("consent.db", &original_snapshot);
    erase_job(&env, &format!("# changed\n{spec}"));
    let out = run_erase(&env, &[]).expect(2);
    assert!(out.stderr.contains("spec"), "{}", out.stderr);
    assert_eq!(tree(&env.path("data"), true), data);
    assert!(env.reports().is_empty());

    // Back to what the interrupted run used: it resumes and finishes.
    erase_job(&env, spec);
    run_erase(&env, &[]).expect(0);
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["erase"]["resumed"], true);
    assert_eq!(
        p["erase"]["rows_removed"], 51,
        "the interrupted run's rewrite counts too"
    );
    assert_eq!(p["erase"]["files_rewritten"], 3);
    assert!(!env.path(JOURNAL).exists());
}

#[test]
fn a_resumed_run_verifies_the_files_the_interrupted_run_rewrote() {
    let env = Env::new();
    journal_corpus(&env);
    erase_job(&env, &erase_section(""));
    // Kill once the journal says a rewrite was renamed into place.
    interrupt_when(&env, || {
        std::fs::read(env.path(JOURNAL))
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains("\"done\":true"))
    });

    run_erase(&env, &[]).expect(0);
    let p = &env.last_statement()["predicate"];
    let e = &p["erase"];
    assert_eq!(e["resumed"], true);
    assert_eq!(e["files_rewritten"], 3);
    assert_eq!(e["rows_removed"], 51);
    assert_eq!(erased_rows(p, "data/a.jsonl"), 1);
    assert_eq!(
        e["verification"]["files_checked"], e["files_rewritten"],
        "the verification re-reads every file the report says was rewritten, the interrupted run's too"
    );
}

#[test]
fn a_subjects_file_with_a_byte_order_mark_does_not_lose_its_first_id() {
    let env = Env::new();
    // As Windows editors save UTF-8.
    env.write("erase.txt", "\u{feff}alice\r\nbob\r\n");
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n{\"user_id\":\"carol\"}\n",
    );
    erase_job(&env, &erase_section(""));
    let out = run_erase(&env, &[]);
    let p = &env.last_statement()["predicate"];
    let alice_left = env.read_string("data/a.jsonl").contains("alice");
    let line_1_reported = p["erase"]["rejected_ids"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["line"] == 1);
    assert!(
        !alice_left || (out.code == 1 && line_1_reported),
        "the first id is neither erased nor reported; the job says {} (exit {}):\n{}",
        p["status"],
        out.code,
        out.stdout
    );
    assert!(!env.read_string("data/a.jsonl").contains("bob"));
}

/// Two such files concatenated carry a byte order mark mid-file; ids pasted from documents
/// carry no-break or ideographic spaces. Each is trimmed like ASCII whitespace, and an id
/// listed twice is one subject.
#[test]
fn subjects_file_ids_are_trimmed_of_any_whitespace_and_byte_order_marks_and_counted_once() {
    let env = Env::new();
    env.write(
        "erase.txt",
        "\u{feff}alice\r\n\u{feff}bob\r\n\u{3000}carol\ndave\u{a0}\nalice\n",
    );
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n{\"user_id\":\"carol\"}\n\
         {\"user_id\":\"dave\"}\n{\"user_id\":\"erin\"}\n",
    );
    erase_job(&env, &erase_section(""));
    run_erase(&env, &[]).expect(0);
    assert_eq!(env.read_string("data/a.jsonl"), "{\"user_id\":\"erin\"}\n");
    let e = &env.last_statement()["predicate"]["erase"];
    assert_eq!(
        e["subjects"],
        json!(pseudonyms(&env, &["alice", "bob", "carol", "dave"]))
    );
    assert_eq!(e["subjects_from_file"], 4);
    assert_eq!(e["rows_removed"], 4);
}

#[test]
fn a_symlinked_input_file_is_never_replaced_by_a_copy_while_its_target_keeps_the_rows() {
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    env.write(
        "elsewhere/real.jsonl",
        "{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n",
    );
    symlink("../elsewhere/real.jsonl", &env.path("data/linked.jsonl"));
    erase_job(&env, &erase_section(""));
    let spec = env
        .read_string("erase.toml")
        .replace("paths = [\"data\"]", "paths = [\"data/linked.jsonl\"]");
    env.write("erase.toml", spec);

    let out = run_erase(&env, &[]);
    assert!(
        std::fs::symlink_metadata(env.path("data/linked.jsonl"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink was replaced by a regular file (exit {}):\n{}",
        out.code,
        out.stdout
    );
    assert!(
        out.code != 0 || !env.read_string("elsewhere/real.jsonl").contains("alice"),
        "the job says complete while the file the input path names still holds an erased row:\n{}",
        out.stdout
    );
}

#[test]
fn an_id_that_looks_like_a_temporary_file_is_still_erased() {
    let env = Env::new();
    env.write("erase.txt", ".consentry-eve\n");
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\".consentry-eve\"}\n{\"user_id\":\"bob\"}\n",
    );
    env.write("cache/dirs/.consentry-eve/vec.npy", "eve");
    env.write("cache/dirs/bob/vec.npy", "bob");
    erase_job(
        &env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n",
        ),
    );
    let out = run_erase(&env, &[]);
    assert_eq!(env.read_string("data/a.jsonl"), "{\"user_id\":\"bob\"}\n");
    assert_eq!(env.read_string("cache/dirs/bob/vec.npy"), "bob");
    assert!(
        out.code != 0 || !exists(&env.path("cache/dirs/.consentry-eve")),
        "the job says complete while the subject's cache entry is still there:\n{}",
        out.stdout
    );
}

/// Runs the erase job over `originals` (damaged copies of Parquet files, by path) and checks
/// that each failed alone and was left as it was, or read as Parquet and was swept (its
/// digest in the report), with at least `min_failed` failures and ten rewrites: no panic
/// escapes and no temporary file stays. Returns what the job printed on stderr.
fn sweep_of_damaged_files(
    env: &Env,
    originals: &BTreeMap<String, Vec<u8>>,
    min_failed: usize,
) -> String {
    let out = run_erase(env, &[]).expect(1);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let p = &env.last_statement()["predicate"];
    let (mut failed, mut rewritten) = (0, 0);
    for (path, bytes) in originals {
        let i = input(p, path);
        let now = env.read(path);
        match (i["status"].as_str().unwrap(), i["output"].is_null()) {
            ("failed", _) => {
                failed += 1;
                assert!(!i["error"].as_str().unwrap().is_empty(), "{path}: {i}");
                assert_eq!(&now, bytes, "{path}: a failed file is left as it was");
            }
            ("ok", true) => assert_eq!(&now, bytes, "{path}: untouched"),
            ("ok", false) => {
                rewritten += 1;
                assert_eq!(i["output"]["sha256"], sha(&now), "{path}");
            }
            (status, _) => panic!("{path}: status {status}"),
        }
    }
    assert!(
        failed >= min_failed && rewritten > 10,
        "the damage must be both caught and harmless: {failed} failed, {rewritten} rewritten"
    );
    assert_eq!(p["erase"]["verification"]["passed"], true);
    let names: BTreeSet<String> = walk(&env.path("data"))
        .iter()
        .map(|f| format!("data/{}", f.file_name().unwrap().to_string_lossy()))
        .collect();
    assert_eq!(
        names,
        originals.keys().cloned().collect(),
        "no temporary file is left"
    );
    out.stderr
}

/// Damaged Parquet files, whatever the damage: each fails alone and is left exactly as it
/// was, or reads as a Parquet file and is swept; no panic escapes and no temporary file stays.
#[test]
fn parquet_files_with_random_byte_damage_fail_alone_unchanged_or_are_swept() {
    let env = Env::new();
    let mut rng = Rng(0x5eed_da3a_6e00);
    env.write("erase.txt", "alice\nbob\n1\n2\n");
    let mut originals = BTreeMap::new();
    for name in [
        "pyarrow-dict-snappy.parquet",
        "pyarrow-int-zstd.parquet",
        "duckdb-zstd.parquet",
        "duckdb-int32-snappy.parquet",
    ] {
        let good = fixture(name);
        let n = good.len();
        let footer_len = u32::from_le_bytes(good[n - 8..n - 4].try_into().unwrap()) as usize;
        let footer = n - 8 - footer_len;
        for v in 0..60 {
            let mut bytes = good.clone();
            for _ in 0..rng.pick(&[1, 1, 2, 4]) {
                // Mostly the footer (the metadata every read trusts), else the pages.
                let at = match rng.chance(60) {
                    true => footer + rng.below(footer_len),
                    false => 4 + rng.below(footer - 4),
                };
                bytes[at] = match rng.below(3) {
                    0 => bytes[at] ^ (1 << rng.below(8)),
                    1 => rng.pick(&[0, 0x7f, 0x80, 0xff]),
                    _ => rng.next() as u8,
                };
            }
            let path = format!("data/{}-{v:02}.parquet", name.trim_end_matches(".parquet"));
            env.write(&path, &bytes);
            originals.insert(path, bytes);
        }
    }
    erase_job(&env, &erase_section(""));
    sweep_of_damaged_files(&env, &originals, 50);
}

/// Parquet writers accept repeated names. With two `user_id` columns, or a struct with two
/// `id` fields, judging by one would keep the rows the other names: the file fails alone.
#[test]
fn a_parquet_file_with_two_columns_at_the_subject_path_fails_alone_unchanged() {
    use arrow::array::{Array, StructArray};
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    let text = |v: &[&str]| Arc::new(StringArray::from(v.to_vec())) as ArrayRef;
    let write = |path: &str, schema: Schema, columns: Vec<ArrayRef>| {
        let schema = Arc::new(schema);
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let mut w = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
        w.write(&batch).unwrap();
        env.write(path, w.into_inner().unwrap());
    };
    write(
        "data/top.parquet",
        Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new("user_id", DataType::Utf8, true),
        ]),
        vec![text(&["bob", "carol"]), text(&["alice", "dave"])],
    );
    let id = Arc::new(Field::new("id", DataType::Utf8, true));
    let meta = StructArray::new(
        vec![id.clone(), id].into(),
        vec![text(&["bob", "carol"]), text(&["alice", "dave"])],
        None,
    );
    write(
        "data/nested.parquet",
        Schema::new(vec![Field::new("meta", meta.data_type().clone(), true)]),
        vec![Arc::new(meta) as ArrayRef],
    );
    for (file, field) in [("top", "user_id"), ("nested", "meta.id")] {
        let before = env.read(&format!("data/{file}.parquet"));
        erase_job(&env, &erase_section(""));
        let spec = env.read_string("erase.toml").replace(
            "subject_field = \"user_id\"",
            &format!("subject_field = \"{field}\""),
        );
        env.write("erase.toml", spec);
        run_erase(&env, &[]).expect(1);
        let p = &env.last_statement()["predicate"];
        let i = input(p, &format!("data/{file}.parquet"));
        assert_eq!(i["status"], "failed", "{i}");
        assert!(
            i["error"]
                .as_str()
                .unwrap()
                .contains(&format!("2 columns are named {field}")),
            "{i}"
        );
        assert_eq!(env.read(&format!("data/{file}.parquet")), before);
    }
}

/// A subject_field that misses the file's subjects (`userid` for `user_id`) finds no
/// erased row, and must not pass for a clean sweep: the file in which no row names a subject
/// makes the job partial, and the report counts the rows that name none.
#[test]
fn a_file_in_which_no_row_names_a_subject_makes_the_erase_partial() {
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    let misnamed = "{\"userid\":\"alice\"}\n{\"userid\":\"bob\"}\n\n";
    env.write("data/misnamed.jsonl", misnamed);
    env.write(
        "data/mixed.jsonl",
        "{\"user_id\":\"alice\"}\n{\"anonymous\":true}\n{\"user_id\":null}\n{\"user_id\":\"bob\"}\n",
    );
    env.write(
        "data/nulls.parquet",
        small_parquet("user_id", &[None, None, None], 2),
    );
    env.write("data/blank.jsonl", "\n\n");
    erase_job(&env, &erase_section(""));
    let out = run_erase(&env, &[]).expect(1);
    assert_eq!(env.read_string("data/misnamed.jsonl"), misnamed);
    assert_eq!(
        env.read_string("data/mixed.jsonl"),
        "{\"anonymous\":true}\n{\"user_id\":null}\n{\"user_id\":\"bob\"}\n"
    );
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["status"], "partial");
    let problems = p["problems"].to_string();
    assert!(problems.contains("data/misnamed.jsonl"), "{problems}");
    // Some rows name a subject; an anonymous shard (its column present, all null); blank
    // lines only: none of these is a misplaced subject_field.
    for fine in ["mixed", "nulls", "blank"] {
        assert!(!problems.contains(fine), "{fine}: {problems}");
    }
    assert!(out.stdout.contains("names a subject"), "{}", out.stdout);
    // misnamed: 2 (not its blank line); mixed: 2; nulls: 3.
    assert_eq!(p["erase"]["rows_without_subject"], 7);
}

/// Only consentry's own temporary files (`.consentry-XXXXXX.tmp`) are skipped and removed;
/// a dataset that merely starts with `.consentry-` is swept like any other, and a file with
/// a similar name is left alone.
#[test]
fn only_consentrys_own_temporary_files_are_skipped_and_removed() {
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    let rows = "{\"user_id\":\"alice\"}\n{\"user_id\":\"bob\"}\n";
    env.write("data/.consentry-notes.jsonl", rows);
    env.write("data/.consentry-Ab3dE9.tmp", "left by a killed run");
    env.write("data/.consentry-notes.tmp", "someone else's");
    erase_job(&env, &erase_section(""));
    run_erase(&env, &[]).expect(0);
    assert_eq!(
        env.read_string("data/.consentry-notes.jsonl"),
        "{\"user_id\":\"bob\"}\n"
    );
    assert!(!exists(&env.path("data/.consentry-Ab3dE9.tmp")));
    assert_eq!(
        env.read_string("data/.consentry-notes.tmp"),
        "someone else's"
    );
    assert_eq!(
        env.last_statement()["predicate"]["erase"]["rows_removed"],
        1
    );
}

#[test]
fn a_cache_root_listed_twice_is_refused_before_anything_changes() {
    let env = Env::new();
    env.write("erase.txt", "alice\n");
    env.write("data/a.jsonl", "{\"user_id\":\"alice\"}\n");
    env.write("cache/dirs/alice/v", "a");
    erase_job(
        &env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"./cache/dirs/\"\nlayout = \"file-per-subject\"\n",
        ),
    );
    let before = tree(env.dir.path(), true);
    let out = run_erase(&env, &[]).expect(2);
    let spec = env.read_string("erase.toml");
    let second = spec
        .lines()
        .position(|l| l.contains("./cache/dirs/"))
        .unwrap()
        + 1;
    assert!(
        out.stderr.contains("erase.toml")
            && out.stderr.contains(&format!("line {second}:"))
            && out.stderr.contains("listed twice"),
        "names the second entry's line:\n{}",
        out.stderr
    );
    assert_eq!(tree(env.dir.path(), true), before);
}

#[test]
fn a_missing_subjects_file_is_refused_before_anything_changes() {
    let env = Env::new();
    env.write("data/a.jsonl", "{\"user_id\":\"alice\"}\n");
    env.write("cache/dirs/alice/v", "a");
    erase_job(
        &env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n",
        ),
    );
    let before = tree(env.dir.path(), true);
    std::thread::sleep(Duration::from_millis(20));
    let out = run_erase(&env, &[]).expect(2);
    assert!(out.stderr.contains("erase.txt"), "{}", out.stderr);
    assert_eq!(tree(env.dir.path(), true), before);
}

// ---------------------------------------------------------------------------------------
// Crash safety

const CRASH_ERASED: [&str; 6] = [
    "sub-0007", "sub-0042", "sub-0101", "sub-0333", "90210", "carol",
];

#[derive(Clone, Copy, PartialEq)]
enum Codec {
    Plain,
    Gzip,
    Zstd,
}

/// A dataset or table file of the crash corpus: what is written, and what must be there after.
struct CrashFile {
    rel: String,
    codec: Codec,
    disk: Vec<u8>,
    expected: Vec<u8>,
    erased: u64,
}

struct CrashParquet {
    rel: String,
    disk: Vec<u8>,
    expected_docs: Vec<String>,
    erased: u64,
}

struct Corpus {
    files: Vec<CrashFile>,
    parquet: Vec<CrashParquet>,
    dirs: Vec<String>,
    per_file: Vec<String>,
}

impl Corpus {
    fn build() -> Corpus {
        let mut rng = Rng(0x5eed);
        let erased = |u: &str| CRASH_ERASED.contains(&u);
        let mut files = Vec::new();
        for f in 0..24 {
            let codec = match f % 6 {
                1 => Codec::Gzip,
                4 => Codec::Zstd,
                _ => Codec::Plain,
            };
            let mut rows = Vec::new();
            for i in 0..2000 {
                let (line, user) = loop {
                    let u = format!("sub-{:04}", rng.below(400));
                    let (line, user) = match rng.below(8) {
                        0 => {
                            let n = 90200 + rng.below(20);
                            (format!("{{\"id\":\"{f}-{i}\",\"user_id\":{n},\"t\":{i}}}\n"), n.to_string())
                        }
                        1 => (
                            format!("{{\"user_id\" : \"{u}\" , \"id\":\"{f}-{i}\", \"text\":\"caf\\u00e9 {i}\"}}\n"),
                            u,
                        ),
                        2 => (
                            format!(
                                "{{\"id\":\"{f}-{i}\",\"meta\":{{\"user_id\":\"sub-0007\"}},\"user_id\":\"{u}\"}}\r\n"
                            ),
                            u,
                        ),
                        _ => (
                            format!("{{\"id\":\"{f}-{i}\",\"user_id\":\"{u}\",\"text\":\"lorem ipsum dolor sit amet {i}\"}}\n"),
                            u,
                        ),
                    };
                    // The first four files hold no erased subject.
                    if f >= 4 || !erased(&user) {
                        break (line, user);
                    }
                };
                rows.push((line, erased(&user)));
            }
            let all: String = rows.iter().map(|(l, _)| l.as_str()).collect();
            let expected: String = rows
                .iter()
                .filter(|(_, e)| !e)
                .map(|(l, _)| l.as_str())
                .collect();
            let n = rows.iter().filter(|(_, e)| *e).count() as u64;
            let half = rows[..1000]
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<String>();
            let disk = match codec {
                Codec::Plain => all.clone().into_bytes(),
                // Two gzip members.
                Codec::Gzip => {
                    [gzip(half.as_bytes()), gzip(&all.as_bytes()[half.len()..])].concat()
                }
                Codec::Zstd => zstd(all.as_bytes()),
            };
            let ext = match codec {
                Codec::Plain => "jsonl",
                Codec::Gzip => "jsonl.gz",
                Codec::Zstd => "jsonl.zst",
            };
            files.push(CrashFile {
                rel: format!("data/part-{:02}/f{f:02}.{ext}", f / 8),
                codec,
                disk,
                expected: expected.into_bytes(),
                erased: n,
            });
        }
        // The table cache: vectors with a subject column.
        let mut rows = Vec::new();
        for i in 0..2000 {
            let u = format!("sub-{:04}", rng.below(400));
            rows.push((
                format!(
                    "{{\"user_id\":\"{u}\",\"vec\":[{}.5,-0.{i}]}}\n",
                    rng.below(100)
                ),
                erased(&u),
            ));
        }
        files.push(CrashFile {
            rel: "cache/table/vectors.jsonl".into(),
            codec: Codec::Plain,
            disk: rows
                .iter()
                .map(|(l, _)| l.as_str())
                .collect::<String>()
                .into_bytes(),
            expected: rows
                .iter()
                .filter(|(_, e)| !e)
                .map(|(l, _)| l.as_str())
                .collect::<String>()
                .into_bytes(),
            erased: rows.iter().filter(|(_, e)| *e).count() as u64,
        });
        // A big Parquet file whose erased subjects sit in two of its ten row groups.
        let docs: Vec<String> = (0..20_000).map(|i| format!("p{i}")).collect();
        let users: Vec<Option<String>> = (0..20_000)
            .map(|i| {
                let in_group = matches!(i / 2000, 3 | 7);
                Some(match (in_group, i % 97) {
                    (true, 0) => "sub-0042".to_string(),
                    (true, 1) => "sub-0333".to_string(),
                    _ => format!("sub-{:04}", 500 + i % 300),
                })
            })
            .collect();
        let expected_docs: Vec<String> = docs
            .iter()
            .zip(&users)
            .filter(|(_, u)| !erased(u.as_deref().unwrap()))
            .map(|(d, _)| d.clone())
            .collect();
        let parquet = vec![
            CrashParquet {
                rel: "data/pq/big.parquet".into(),
                erased: (docs.len() - expected_docs.len()) as u64,
                disk: parquet_bytes("user_id", &docs, &users, 2000),
                expected_docs,
            },
            CrashParquet {
                rel: "data/pq/fixture.parquet".into(),
                disk: fixture("pyarrow-dict-snappy.parquet"),
                expected_docs: ["d0", "d1", "d3", "d4", "d5", "d6", "d7"]
                    .map(String::from)
                    .into(),
                erased: 1,
            },
        ];
        let mut dirs: Vec<String> = (0..40).map(|k| format!("sub-{:04}", k * 10 + 5)).collect();
        dirs.extend(["sub-0007", "sub-0042", "sub-0101", "carol"].map(String::from));
        let mut per_file: Vec<String> = (0..40)
            .map(|k| format!("sub-{:04}.npy", k * 10 + 4))
            .collect();
        per_file.extend(
            ["sub-0007.npy", "sub-0333.npy", "sub-0333.json", "90210.npy"].map(String::from),
        );
        Corpus {
            files,
            parquet,
            dirs,
            per_file,
        }
    }

    /// Writes every file and cache entry afresh.
    fn restore(&self, env: &Env) {
        for d in ["data", "cache"] {
            let _ = std::fs::remove_dir_all(env.path(d));
        }
        for f in &self.files {
            env.write(&f.rel, &f.disk);
        }
        for p in &self.parquet {
            env.write(&p.rel, &p.disk);
        }
        for d in &self.dirs {
            env.write(
                &format!("cache/dirs/{d}/vec.bin"),
                format!("vectors of {d}"),
            );
            env.write(&format!("cache/dirs/{d}/meta/info.json"), "{}");
        }
        for f in &self.per_file {
            env.write(&format!("cache/files/{f}"), format!("vectors in {f}"));
        }
    }

    fn rewritten(&self) -> u64 {
        self.files.iter().filter(|f| f.erased > 0).count() as u64
            + self.parquet.iter().filter(|p| p.erased > 0).count() as u64
    }

    fn rows_removed(&self) -> u64 {
        self.files.iter().map(|f| f.erased).sum::<u64>()
            + self.parquet.iter().map(|p| p.erased).sum::<u64>()
    }

    /// Everything on disk is what an uninterrupted run leaves.
    fn check(&self, env: &Env, when: &str) {
        for f in &self.files {
            let bytes = env.read(&f.rel);
            let plain = match f.codec {
                Codec::Plain => bytes,
                Codec::Gzip => {
                    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "{when}: {}", f.rel);
                    gunzip(&bytes)
                }
                Codec::Zstd => {
                    assert_eq!(&bytes[..4], &[0x28, 0xb5, 0x2f, 0xfd], "{when}: {}", f.rel);
                    unzstd(&bytes)
                }
            };
            assert!(
                plain == f.expected,
                "{when}: {} differs from the original minus the erased rows",
                f.rel
            );
        }
        for p in &self.parquet {
            assert_eq!(
                docs(&env.path(&p.rel)),
                p.expected_docs,
                "{when}: {}",
                p.rel
            );
        }
        let names = |dir: &str| -> BTreeSet<String> {
            std::fs::read_dir(env.path(dir))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        };
        let kept = |all: &[String], strip: bool| -> BTreeSet<String> {
            all.iter()
                .filter(|n| {
                    let subject = if strip {
                        n.rsplit_once('.').unwrap().0
                    } else {
                        n.as_str()
                    };
                    !CRASH_ERASED.contains(&subject)
                })
                .cloned()
                .collect()
        };
        assert_eq!(names("cache/dirs"), kept(&self.dirs, false), "{when}");
        assert_eq!(names("cache/files"), kept(&self.per_file, true), "{when}");
        for d in kept(&self.dirs, false) {
            assert_eq!(
                env.read_string(&format!("cache/dirs/{d}/vec.bin")),
                format!("vectors of {d}")
            );
        }
        for root in ["data", "cache", "reports"] {
            assert_eq!(
                temps(&env.path(root)),
                Vec::<PathBuf>::new(),
                "{when}: temporary files left"
            );
        }
        assert!(
            !env.path(JOURNAL).exists(),
            "{when}: the journal is removed once the report is signed"
        );
    }

    /// The newest report accounts for all of the work, whichever run did it.
    fn check_report(&self, env: &Env, when: &str) {
        let p = &env.last_statement()["predicate"];
        assert_eq!(p["status"], "complete", "{when}: {:#}", p["problems"]);
        let e = &p["erase"];
        assert_eq!(
            e["rows_removed"],
            self.rows_removed(),
            "{when}: rows removed"
        );
        assert_eq!(
            e["files_rewritten"],
            self.rewritten(),
            "{when}: files rewritten"
        );
        assert_eq!(e["verification"]["passed"], true, "{when}");
        for f in &self.files {
            assert_eq!(erased_rows(p, &f.rel), f.erased, "{when}: {}", f.rel);
            let i = input(p, &f.rel);
            assert_eq!(i["sha256_before"], sha(&f.disk), "{when}: {}", f.rel);
            if f.erased > 0 {
                assert_eq!(
                    i["output"]["sha256"],
                    sha(&env.read(&f.rel)),
                    "{when}: {}",
                    f.rel
                );
            }
        }
        for q in &self.parquet {
            assert_eq!(erased_rows(p, &q.rel), q.erased, "{when}: {}", q.rel);
        }
    }
}

enum Kill {
    After(Duration),
    /// As soon as the journal exists.
    JournalAppears,
    /// As soon as the journal records this many rewrites.
    JournalHolds(usize),
    /// As soon as a new report file exists.
    ReportAppears,
}

/// Runs the job and SIGKILLs it at `kill`. Returns whether it was killed (else it finished).
fn run_and_kill(env: &Env, kill: &Kill, reports_before: usize) -> bool {
    let mut child = Command::new(BIN)
        .args(["run", "erase.toml", "--no-progress"])
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert_eq!(status.code(), Some(0), "the job failed on its own");
            return false;
        }
        let fire = match kill {
            Kill::After(d) => start.elapsed() >= *d,
            Kill::JournalAppears => env.path(JOURNAL).exists(),
            Kill::JournalHolds(n) => std::fs::read(env.path(JOURNAL))
                .is_ok_and(|bytes| journaled_rewrites(&bytes).len() >= *n),
            Kill::ReportAppears => env.reports().len() > reports_before,
        };
        if fire {
            child.kill().unwrap();
            let status = child.wait().unwrap();
            return status.signal() == Some(9);
        }
        assert!(start.elapsed() < Duration::from_secs(120), "the job hangs");
        std::thread::sleep(Duration::from_micros(500));
    }
}

#[test]
fn a_job_killed_at_any_point_and_run_again_finishes_with_one_report() {
    let env = Env::new();
    let corpus = Corpus::build();
    env.write("erase.txt", CRASH_ERASED.join("\n") + "\n");
    erase_job(
        &env,
        &erase_section(
            "[[erase.embeddings]]\npath = \"cache/dirs\"\nlayout = \"dir-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/files\"\nlayout = \"file-per-subject\"\n\n\
             [[erase.embeddings]]\npath = \"cache/table\"\nlayout = \"table\"\nsubject_field = \"user_id\"\n",
        ),
    );
    assert!(corpus.files[..4].iter().all(|f| f.erased == 0));
    assert!(corpus.files[4..].iter().all(|f| f.erased > 0));

    // An uninterrupted run, timed.
    corpus.restore(&env);
    let start = Instant::now();
    run_erase(&env, &[]).expect(0);
    let full = start.elapsed();
    corpus.check(&env, "uninterrupted run");
    corpus.check_report(&env, "uninterrupted run");
    assert_eq!(env.reports().len(), 1);

    let mut kills: Vec<(String, Kill)> = [0.0, 0.2, 0.4, 0.6, 0.8]
        .iter()
        .map(|f| {
            let d = Duration::from_millis(20) + full.mul_f64(*f);
            (format!("killed after {d:?}"), Kill::After(d))
        })
        .collect();
    kills.push((
        "killed when the journal appears".into(),
        Kill::JournalAppears,
    ));
    kills.push(("killed after 12 rewrites".into(), Kill::JournalHolds(12)));
    kills.push(("killed when the report appears".into(), Kill::ReportAppears));
    let mut interrupted_with_journal = 0;
    for (when, kill) in &kills {
        corpus.restore(&env);
        let before = env.reports().len();
        let killed = run_and_kill(&env, kill, before);
        let journal = env.path(JOURNAL).exists();
        let mut journaled = 0;
        if journal {
            let text = env.read_string(JOURNAL);
            journaled = journaled_rewrites(text.as_bytes()).len();
            assert!(
                !text.contains("sub-") && !text.contains("carol"),
                "{when}: the journal holds no subject id"
            );
        }
        let left = [&env.path("data"), &env.path("cache")]
            .map(|d| temps(d).len())
            .iter()
            .sum::<usize>();
        let mut resumed = "";
        if killed && !journal && env.reports().len() > before {
            // Killed after the report was signed and the journal removed: the job had
            // finished, only its exit status was lost. Running it again is a second run.
            eprintln!("{when} (full run {full:?}): killed after the job had finished");
            assert_eq!(env.reports().len(), before + 1, "{when}");
            corpus.check(&env, when);
            corpus.check_report(&env, when);
            run_erase(&env, &[]).expect(0);
            assert_eq!(env.reports().len(), before + 2, "{when}");
            let p = &env.last_statement()["predicate"];
            assert_eq!(p["erase"]["rows_removed"], 0, "{when}");
            assert_eq!(p["erase"]["files_rewritten"], 0, "{when}");
            corpus.check(&env, when);
            continue;
        }
        if killed {
            let out = run_erase(&env, &[]).expect(0);
            if journal && out.stdout.contains("already signed") {
                resumed = ", report already signed";
                let newest = env.reports().pop().unwrap();
                assert!(
                    out.stdout
                        .contains(&format!("sha256 {}", sha(&std::fs::read(newest).unwrap()))),
                    "{when}: the summary names the signed report's digest: {}",
                    out.stdout
                );
            } else if journal {
                resumed = ", resumed";
                interrupted_with_journal += 1;
                let p = env.last_statement();
                assert_eq!(p["predicate"]["erase"]["resumed"], true, "{when}");
            }
        }
        eprintln!(
            "{when} (full run {full:?}): killed {killed}, journal {journal} with {journaled} files, \
             {left} temporary files left{resumed}"
        );
        assert_eq!(
            env.reports().len(),
            before + 1,
            "{when}: exactly one report for the killed run and its re-run"
        );
        corpus.check(&env, when);
        corpus.check_report(&env, when);
    }
    assert!(
        interrupted_with_journal >= 2,
        "too few kills hit a run in progress"
    );

    let mut args = vec!["verify".to_string(), "--chain".to_string()];
    args.extend(env.reports().iter().map(|r| path_str(r).to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run(&args).expect(0);

    // Once more after completion: one more report, nothing rewritten.
    let data = tree(&env.path("data"), false);
    let caches = tree(&env.path("cache"), false);
    let before = env.reports().len();
    run_erase(&env, &[]).expect(0);
    assert_eq!(env.reports().len(), before + 1);
    assert_eq!(tree(&env.path("data"), false), data);
    assert_eq!(tree(&env.path("cache"), false), caches);
    let p = &env.last_statement()["predicate"];
    assert_eq!(p["erase"]["files_rewritten"], 0);
    assert_eq!(p["erase"]["rows_removed"], 0);
}

// ---------------------------------------------------------------------------------------
// Found by review

#[test]
fn a_symlink_below_the_inputs_makes_an_erasure_partial() {
    let env = Env::new();
    env.write("archive/old.jsonl", "{\"user_id\":\"bob\"}\n");
    env.write("data/a.jsonl", "{\"user_id\":\"carol\"}\n");
    symlink("../archive/old.jsonl", &env.path("data/current.jsonl"));
    env.write("erase.txt", "bob\n");
    erase_job(&env, &erase_section(""));
    let out = run_erase(&env, &[]).expect(1);
    assert!(
        out.stdout
            .contains("symlinks below the inputs were not followed"),
        "{}",
        out.stdout
    );
    assert_eq!(
        env.read_string("archive/old.jsonl"),
        "{\"user_id\":\"bob\"}\n",
        "not followed"
    );
}

#[test]
fn file_per_subject_matches_a_whole_name_before_a_stem() {
    let env = Env::new();
    env.write("data/a.jsonl", "");
    for name in ["john.doe", "john.npy", "jane.doe.npy", "keep.npy"] {
        env.write(&format!("cache/{name}"), "v");
    }
    env.write("erase.txt", "john.doe\njane.doe\n");
    erase_job(
        &env,
        &erase_section("[[erase.embeddings]]\npath = \"cache\"\nlayout = \"file-per-subject\"\n"),
    );
    run_erase(&env, &[]).expect(0);
    assert!(
        !env.path("cache/john.doe").exists(),
        "an entry named exactly the id"
    );
    assert!(
        !env.path("cache/jane.doe.npy").exists(),
        "an id with a dot, plus extension"
    );
    assert!(env.path("cache/john.npy").exists() && env.path("cache/keep.npy").exists());
}

#[test]
fn a_binary_parquet_subject_column_is_read_as_text() {
    let env = Env::new();
    let schema = Arc::new(Schema::new(vec![
        Field::new("doc", DataType::Utf8, false),
        Field::new("user_id", DataType::Binary, true),
    ]));
    let users: Vec<Option<&[u8]>> = vec![Some(b"bob"), Some(b"carol"), None, Some(b"\xff\xfe")];
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["d0", "d1", "d2", "d3"])) as ArrayRef,
            Arc::new(arrow::array::BinaryArray::from(users)) as ArrayRef,
        ],
    )
    .unwrap();
    let mut w = ArrowWriter::try_new(Vec::new(), schema, None).unwrap();
    w.write(&batch).unwrap();
    env.write("data/b.parquet", w.into_inner().unwrap());
    env.write("erase.txt", "bob\n");
    erase_job(&env, &erase_section(""));
    run_erase(&env, &[]).expect(0);
    assert_eq!(docs(&env.path("data/b.parquet")), ["d1", "d2", "d3"]);
}

#[test]
fn verify_says_when_the_key_was_not_pinned() {
    let env = Env::new();
    env.write("data/a.jsonl", "{\"user_id\":\"bob\"}\n");
    env.write("erase.txt", "bob\n");
    erase_job(&env, &erase_section(""));
    run_erase(&env, &[]).expect(0);
    let report = env.reports().pop().unwrap();
    let out = env.run(&["verify", path_str(&report)]).expect(0);
    assert!(out.stdout.contains("pass --pubkey"), "{}", out.stdout);
    let pinned = env
        .run(&[
            "verify",
            "--pubkey",
            path_str(&env.path("keys/signing.pub")),
            path_str(&report),
        ])
        .expect(0);
    assert!(
        !pinned.stdout.contains("pass --pubkey"),
        "{}",
        pinned.stdout
    );
}

/// A row group of many small pages (with a page index), erased two ways: a few subjects in
/// short runs (the reader skips their rows while decoding) and every other row (it decodes
/// all and filters). Either way the output holds exactly the other rows, in order, with
/// every column still aligned to its row.
#[test]
fn parquet_rows_stay_aligned_across_pages_whether_erased_rows_are_runs_or_scattered() {
    let env = Env::new();
    let n = 20_000;
    let docs: Vec<String> = (0..n).map(|i| format!("d{i}")).collect();
    let runs: Vec<Option<String>> = (0..n)
        .map(|i| Some(format!("u{}", (i / 3) % 997)))
        .collect();
    let scattered: Vec<Option<String>> = (0..n)
        .map(|i| {
            Some(if i % 2 == 0 {
                "x".into()
            } else {
                format!("u{i}")
            })
        })
        .collect();
    for (name, users) in [("runs", &runs), ("scattered", &scattered)] {
        // Many small pages in one row group, so skipping crosses page boundaries.
        let props = WriterProperties::builder()
            .set_data_page_row_count_limit(300)
            .set_write_batch_size(100)
            .set_dictionary_enabled(false)
            .set_compression(parquet::basic::Compression::ZSTD(Default::default()))
            .build();
        let bytes = parquet_with("user_id", &docs, users, props);
        env.write(&format!("data/{name}.parquet"), bytes);
    }
    env.write("erase.txt", "u5\nu700\nx\n");
    erase_job(&env, &erase_section(""));
    run_erase(&env, &[]).expect(0);

    for (name, users) in [("runs", &runs), ("scattered", &scattered)] {
        let path = env.path(&format!("data/{name}.parquet"));
        let m = metadata(&path);
        assert_eq!(m.num_row_groups(), 1, "{name}");
        let out = read_all(&path);
        let want: Vec<usize> = (0..n)
            .filter(|&i| !matches!(users[i].as_deref(), Some("u5" | "u700" | "x")))
            .collect();
        assert!(want.len() < n && !want.is_empty(), "{name}");
        let got_docs = text_column(&out, "doc");
        let got_users = text_column(&out, "user_id");
        let got_text = text_column(&out, "text");
        assert_eq!(got_docs.len(), want.len(), "{name}");
        for (k, &i) in want.iter().enumerate() {
            assert_eq!(
                got_docs[k].as_deref(),
                Some(docs[i].as_str()),
                "{name} row {k}"
            );
            assert_eq!(got_users[k], users[i], "{name} row {k}");
            assert_eq!(
                got_text[k].as_deref(),
                Some(format!("text of {} lorem ipsum", docs[i]).as_str()),
                "{name} row {k}"
            );
        }
    }
}

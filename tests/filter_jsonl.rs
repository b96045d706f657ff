//! Filtering JSONL datasets: the exact bytes a user gets back, and the exact counts the
//! signed report gives for every row that was not kept (CONTRACT §4, §5).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use crate::util::*;

const CONSENT: &str =
    "snapshot = \"consent.db\"\nschema = \"consent-records\"\npurpose = \"model_training\"";

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// SQL for a snapshot in which every user of `users` holds valid consent at the job's as_of.
fn granted(users: &[&str]) -> String {
    let mut sql = RECORDS_TABLE.to_string();
    for (i, user) in users.iter().enumerate() {
        sql += &format!(
            "\nINSERT INTO consent_records (id, user_id, purpose, status, granted_at, created_at) \
             VALUES ('g{i}', '{}', 'model_training', 'granted', '2026-01-01T00:00:00Z', \
             '2026-01-01T00:00:00Z');",
            user.replace('\'', "''")
        );
    }
    sql
}

/// A consent snapshot granting `users`, and `job.toml` filtering `data/` by `field`.
fn setup(env: &Env, users: &[&str], field: &str) {
    env.sqlite("consent.db", &granted(users));
    env.filter_job(CONSENT, field, "");
}

/// Replaces `from` with `to` in `job.toml` (for keys the `extra` of `filter_job` cannot
/// reach, such as `[input] exclude`).
fn edit_job(env: &Env, from: &str, to: &str) {
    let text = env.read_string("job.toml");
    assert!(text.contains(from), "job.toml has no {from:?}:\n{text}");
    env.write("job.toml", text.replacen(from, to, 1));
}

fn run(env: &Env, flags: &[&str]) -> Output {
    let mut args = vec!["run", "job.toml", "--no-progress"];
    args.extend_from_slice(flags);
    env.run(&args)
}

/// Runs the job, expects exit 0 and returns the predicate of its report.
fn run_ok(env: &Env) -> Value {
    run(env, &[]).expect(0);
    env.last_statement()["predicate"].clone()
}

/// The report entry of one input file.
fn input<'a>(predicate: &'a Value, path: &str) -> &'a Value {
    let inputs = predicate["inputs"].as_array().expect("inputs[]");
    inputs
        .iter()
        .find(|i| i["path"] == path)
        .unwrap_or_else(|| {
            let paths: Vec<&Value> = inputs.iter().map(|i| &i["path"]).collect();
            panic!("no input {path:?} in the report; inputs: {paths:?}")
        })
}

fn reasons(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
}

/// `rows_dropped` (or `rows_dropped_by_reason`) as a map.
fn dropped(v: &Value) -> BTreeMap<String, u64> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .iter()
        .map(|(k, n)| (k.clone(), n.as_u64().unwrap()))
        .collect()
}

/// Asserts one input's row counts: rows in, kept, and the dropped map, exactly.
fn assert_counts(entry: &Value, rows_in: u64, kept: u64, by_reason: &[(&str, u64)]) {
    let path = &entry["path"];
    assert_eq!(entry["status"], "ok", "{path}: {entry:#}");
    assert_eq!(entry["rows_in"], rows_in, "{path} rows_in: {entry:#}");
    assert_eq!(entry["rows_kept"], kept, "{path} rows_kept: {entry:#}");
    assert_eq!(
        dropped(&entry["rows_dropped"]),
        reasons(by_reason),
        "{path} rows_dropped"
    );
}

/// Byte equality with a readable first difference instead of two huge dumps.
fn assert_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let lo = at.saturating_sub(60);
    let show = |b: &[u8]| {
        String::from_utf8_lossy(&b[lo.min(b.len())..(at + 60).min(b.len())]).into_owned()
    };
    panic!(
        "{what}: {} bytes, expected {}; first difference at byte {at}\n  got:  {:?}\n  want: {:?}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    );
}

/// Every file below `dir`, as paths relative to it with `/` separators.
fn files_below(dir: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let e = e.unwrap();
            let path = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// Bytes kept
// ---------------------------------------------------------------------------------------

#[test]
fn kept_lines_are_byte_identical_and_in_order() {
    let env = Env::new();
    setup(&env, &["u1", "u2"], "user_id");
    let first: Vec<u8> = [BOM, b"{\"user_id\":\"u1\",\"text\":\"after a BOM\"}\n"].concat();
    let lines: Vec<(&[u8], bool)> = vec![
        (&first, true),
        (
            b"{ \"text\" : \"odd   spacing\" ,   \"user_id\"   :   \"u2\" }\n",
            true,
        ),
        (b"{\"user_id\":\"nobody\",\"text\":\"dropped\"}\n", false),
        (
            b"\t{\"z\":1,\"a\":[1,2.50,{\"b\":null}],\"user_id\":\"u1\"}  \n",
            true,
        ),
        (
            "{\"user_id\":\"u2\",\"text\":\"héllo wörld ✓ 日本語 😀\",\"e\":\"\\u00e9\\n\\t\"}\r\n"
                .as_bytes(),
            true,
        ),
        (b"{\"user_id\":\"nobody2\"}\r\n", false),
        (
            b"{\"b\":{\"user_id\":\"nobody\"},\"user_id\":\"u1\",\"a\":true}\n",
            true,
        ),
        (b"{\"user_id\":\"u1\",\r\"cr\":\r1}\n", true),
        (
            "{\"user_id\":\"u2\",\"ls\":\"line\u{2028}sep\u{2029}para\u{85}nel\"}\n".as_bytes(),
            true,
        ),
        (b"{\"user_id\":\"u1\",\"last\":\"no newline\"}", true),
    ];
    let body: Vec<u8> = lines.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let want: Vec<u8> = lines
        .iter()
        .filter(|(_, k)| *k)
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    env.write("data/a.jsonl", &body);

    // A BOM on a dropped first line goes with it; a dropped last line leaves the previous
    // line's newline alone.
    env.write(
        "data/b.jsonl",
        [
            BOM,
            b"{\"user_id\":\"nobody\"}\n{\"user_id\":\"u1\"}\n{\"user_id\":\"nobody\"}",
        ]
        .concat(),
    );
    // A BOM alone on the first line leaves a blank line.
    env.write("data/c.jsonl", [BOM, b"\n{\"user_id\":\"u2\"}\n"].concat());
    // CRLF files keep their `\r`, also on a last line without `\n`.
    let crlf = b"{\"user_id\":\"u1\"}\r\n{\"user_id\":\"nobody\"}\r\n\r\n{\"user_id\":\"u2\"}\r";
    env.write("data/d.jsonl", crlf);
    env.write("data/empty.jsonl", b"");

    let p = run_ok(&env);
    assert_bytes("out/a.jsonl", &env.read("out/a.jsonl"), &want);
    assert_counts(input(&p, "data/a.jsonl"), 10, 8, &[("no_consent", 2)]);
    assert_bytes(
        "out/b.jsonl",
        &env.read("out/b.jsonl"),
        b"{\"user_id\":\"u1\"}\n",
    );
    assert_counts(input(&p, "data/b.jsonl"), 3, 1, &[("no_consent", 2)]);
    assert_bytes(
        "out/c.jsonl",
        &env.read("out/c.jsonl"),
        b"{\"user_id\":\"u2\"}\n",
    );
    assert_counts(input(&p, "data/c.jsonl"), 2, 1, &[("blank", 1)]);
    assert_bytes(
        "out/d.jsonl",
        &env.read("out/d.jsonl"),
        b"{\"user_id\":\"u1\"}\r\n{\"user_id\":\"u2\"}\r",
    );
    assert_counts(
        input(&p, "data/d.jsonl"),
        4,
        2,
        &[("blank", 1), ("no_consent", 1)],
    );
    assert_bytes("out/empty.jsonl", &env.read("out/empty.jsonl"), b"");
    assert_counts(input(&p, "data/empty.jsonl"), 0, 0, &[]);
    assert_eq!(p["status"], "complete");
}

#[test]
fn a_line_nested_very_deep_is_judged_without_crashing() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    let depth = 200_000;
    let deep_ok = format!(
        "{{\"user_id\":\"u1\",\"deep\":{}{}}}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let deep_objects = format!(
        "{{\"deep\":{}1{},\"user_id\":\"u1\"}}\n",
        "{\"a\":".repeat(depth),
        "}".repeat(depth)
    );
    let deep_unclosed = format!("{{\"user_id\":\"u1\",\"deep\":{}\n", "[".repeat(depth));
    let body = [deep_ok.as_str(), &deep_objects, &deep_unclosed].concat();
    env.write("data/deep.jsonl", &body);
    let p = run_ok(&env);
    assert_bytes(
        "out/deep.jsonl",
        &env.read("out/deep.jsonl"),
        [deep_ok.as_bytes(), deep_objects.as_bytes()]
            .concat()
            .as_slice(),
    );
    assert_counts(input(&p, "data/deep.jsonl"), 3, 2, &[("malformed", 1)]);
}

// ---------------------------------------------------------------------------------------
// Reasons
// ---------------------------------------------------------------------------------------

#[test]
fn every_drop_reason_is_counted_per_file_and_in_totals() {
    let env = Env::new();
    setup(&env, &["u1", "42"], "user_id");
    let rows: Vec<(&[u8], Option<&str>)> = vec![
        (b"{\"user_id\":\"u1\",\"n\":1}\n", None),
        // blank
        (b"\n", Some("blank")),
        (b"   \t  \n", Some("blank")),
        (b"\r\n", Some("blank")),
        // malformed
        (b"{\"user_id\":\"u1\",\"text\":\"trunc\n", Some("malformed")),
        (b"{\"user_id\":\"u1\"\n", Some("malformed")),
        (b"[{\"user_id\":\"u1\"}]\n", Some("malformed")),
        (b"{\"user_id\":\"u1\"} x\n", Some("malformed")),
        (
            b"{\"user_id\":\"u1\"}{\"user_id\":\"u1\"}\n",
            Some("malformed"),
        ),
        (
            b"{\"user_id\":\"u1\",\"t\":\"\xff\xfe\"}\n",
            Some("malformed"),
        ),
        (b"{\"user_id\":\"u1\xc0\xaf\"}\n", Some("malformed")),
        (
            b"{\"user_id\":\"u1\",\"t\":\"raw\ttab\"}\n",
            Some("malformed"),
        ),
        (b"{\"user_id\":\"u1\",}\n", Some("malformed")),
        (b"{'user_id':'u1'}\n", Some("malformed")),
        (b"{\"user_id\":\"u1\",\"x\":NaN}\n", Some("malformed")),
        (b"{\"user_id\":042}\n", Some("malformed")),
        (b"{\"user_id\":\"u1\0\"}\n", Some("malformed")),
        (b"{\"user_id\":\"u1\"}\x0c\n", Some("malformed")),
        (b"{\"user_id\":\"u1\"}\xc2\xa0\n", Some("malformed")),
        (
            b"\xEF\xBB\xBF{\"user_id\":\"u1\",\"bom\":\"not first\"}\n",
            Some("malformed"),
        ),
        (
            b"{\"user_id\":\"u1\"}\r{\"user_id\":\"u1\"}\n",
            Some("malformed"),
        ),
        (b"\"u1\"\n", Some("malformed")),
        (b"42\n", Some("malformed")),
        (b"null\n", Some("malformed")),
        // missing subject
        (b"{\"text\":\"no id\"}\n", Some("missing_subject")),
        (b"{}\n", Some("missing_subject")),
        (b"{\"user_id\":null}\n", Some("missing_subject")),
        (b"{\"user_id\":\"\"}\n", Some("missing_subject")),
        (b"{\"User_id\":\"u1\"}\n", Some("missing_subject")),
        (
            b"{\"meta\":{\"user_id\":\"u1\"}}\n",
            Some("missing_subject"),
        ),
        // invalid subject
        (b"{\"user_id\":4.2}\n", Some("invalid_subject")),
        (b"{\"user_id\":1e3}\n", Some("invalid_subject")),
        (b"{\"user_id\":42.0}\n", Some("invalid_subject")),
        (b"{\"user_id\":true}\n", Some("invalid_subject")),
        (b"{\"user_id\":false}\n", Some("invalid_subject")),
        (b"{\"user_id\":{\"id\":\"u1\"}}\n", Some("invalid_subject")),
        (b"{\"user_id\":[\"u1\"]}\n", Some("invalid_subject")),
        // ambiguous subject
        (
            b"{\"user_id\":\"u1\",\"user_id\":\"u1\"}\n",
            Some("ambiguous_subject"),
        ),
        (
            b"{\"user_id\":\"u1\",\"t\":1,\"user\\u005fid\":\"u1\"}\n",
            Some("ambiguous_subject"),
        ),
        (
            b"{\"user_id\":\"u1\",\"user_id\":null}\n",
            Some("ambiguous_subject"),
        ),
        // no consent: ids match exactly, nothing is normalised
        (b"{\"user_id\":\"stranger\"}\n", Some("no_consent")),
        (b"{\"user_id\":\"U1\"}\n", Some("no_consent")),
        (b"{\"user_id\":\" u1\"}\n", Some("no_consent")),
        (b"{\"user_id\":\"u1 \"}\n", Some("no_consent")),
        (b"{\"user_id\":43}\n", Some("no_consent")),
        // kept
        (b"{\"user_id\":42}\n", None),
        (b"{\"user_id\":\"42\"}\n", None),
        (b"{\"user_id\":\"u1\",\"last\":true}", None),
    ];
    let body: Vec<u8> = rows.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let want: Vec<u8> = rows
        .iter()
        .filter(|(_, r)| r.is_none())
        .flat_map(|(l, _)| l.iter().copied())
        .collect();
    env.write("data/reasons.jsonl", &body);
    env.write(
        "data/second.jsonl",
        b"{\"user_id\":\"u1\"}\n\n{\"user_id\":\"nobody\"}\n{\"user_id\":\"nobody\"}\nnot json\n",
    );

    let p = run_ok(&env);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, r) in &rows {
        if let Some(r) = r {
            *expected.entry(r).or_default() += 1;
        }
    }
    let per_file: Vec<(&str, u64)> = expected.iter().map(|(k, n)| (*k, *n)).collect();
    assert_eq!(
        per_file,
        vec![
            ("ambiguous_subject", 3),
            ("blank", 3),
            ("invalid_subject", 7),
            ("malformed", 20),
            ("missing_subject", 6),
            ("no_consent", 5)
        ]
    );
    assert_bytes("out/reasons.jsonl", &env.read("out/reasons.jsonl"), &want);
    assert_counts(input(&p, "data/reasons.jsonl"), 48, 4, &per_file);
    assert_bytes(
        "out/second.jsonl",
        &env.read("out/second.jsonl"),
        b"{\"user_id\":\"u1\"}\n",
    );
    assert_counts(
        input(&p, "data/second.jsonl"),
        5,
        1,
        &[("blank", 1), ("malformed", 1), ("no_consent", 2)],
    );

    let t = &p["totals"];
    assert_eq!(t["files"], 2, "{t:#}");
    assert_eq!(t["files_failed"], 0, "{t:#}");
    assert_eq!(t["rows_in"], 53, "{t:#}");
    assert_eq!(t["rows_kept"], 5, "{t:#}");
    assert_eq!(t["rows_dropped"], 48, "{t:#}");
    assert_eq!(
        dropped(&t["rows_dropped_by_reason"]),
        reasons(&[
            ("ambiguous_subject", 3),
            ("blank", 4),
            ("invalid_subject", 7),
            ("malformed", 21),
            ("missing_subject", 6),
            ("no_consent", 7),
        ])
    );
    assert_eq!(p["status"], "complete");
}

#[test]
fn integer_ids_match_their_decimal_text() {
    let env = Env::new();
    setup(
        &env,
        &["42", "0", "-7", "123456789012345678901234567890"],
        "user_id",
    );
    let rows: Vec<(&str, Option<&str>)> = vec![
        ("{\"user_id\":42}\n", None),
        ("{\"user_id\":\"42\"}\n", None),
        ("{\"user_id\" : 42 , \"x\":1}\n", None),
        ("{\"user_id\":0}\n", None),
        ("{\"user_id\":-7}\n", None),
        ("{\"user_id\":123456789012345678901234567890}\n", None),
        ("{\"user_id\":42.0}\n", Some("invalid_subject")),
        ("{\"user_id\":4.2e1}\n", Some("invalid_subject")),
        ("{\"user_id\":42E0}\n", Some("invalid_subject")),
        ("{\"user_id\":43}\n", Some("no_consent")),
        ("{\"user_id\":\"042\"}\n", Some("no_consent")),
        ("{\"user_id\":\"+42\"}\n", Some("no_consent")),
        ("{\"user_id\":+42}\n", Some("malformed")),
        ("{\"user_id\":042}\n", Some("malformed")),
        ("{\"user_id\":42.}\n", Some("malformed")),
    ];
    let body: String = rows.iter().map(|(l, _)| *l).collect();
    let want: String = rows
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(l, _)| *l)
        .collect();
    env.write("data/ids.jsonl", &body);
    let p = run_ok(&env);
    assert_bytes("out/ids.jsonl", &env.read("out/ids.jsonl"), want.as_bytes());
    assert_counts(
        input(&p, "data/ids.jsonl"),
        15,
        6,
        &[("invalid_subject", 3), ("no_consent", 3), ("malformed", 3)],
    );
}

#[test]
fn escaped_ids_match_their_unescaped_value() {
    let env = Env::new();
    setup(
        &env,
        &["zoë", "a\"b", "back\\slash", "tab\there", "😀x", "a/b"],
        "user_id",
    );
    let rows: Vec<(&str, Option<&str>)> = vec![
        (r#"{"user_id":"zo\u00eb"}"#, None),
        (r#"{"user_id":"zo\u00EB"}"#, None),
        (r#"{"user_id":"zoë"}"#, None),
        (r#"{"user_id":"a\"b"}"#, None),
        (r#"{"user_id":"a\u0022b"}"#, None),
        (r#"{"user_id":"back\\slash"}"#, None),
        (r#"{"user_id":"tab\there"}"#, None),
        (r#"{"user_id":"\ud83d\ude00x"}"#, None),
        (r#"{"user_id":"a\/b"}"#, None),
        (r#"{"user\u005fid":"zoë"}"#, None),
        // no normalisation: a decomposed ë is another id
        (r#"{"user_id":"zoe\u0308"}"#, Some("no_consent")),
        (r#"{"user_id":"a\\\"b"}"#, Some("no_consent")),
        (r#"{"user_id":"zo\\u00eb"}"#, Some("no_consent")),
        // a lone surrogate is no text
        (r#"{"user_id":"\ud800"}"#, Some("invalid_subject")),
        // an invalid escape anywhere makes the line malformed
        (r#"{"user_id":"zoë","x":"\q"}"#, Some("malformed")),
        (r#"{"user_id":"zo\u00e"}"#, Some("malformed")),
    ];
    let body: String = rows.iter().map(|(l, _)| format!("{l}\n")).collect();
    let want: String = rows
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(l, _)| format!("{l}\n"))
        .collect();
    env.write("data/esc.jsonl", &body);
    let p = run_ok(&env);
    assert_bytes("out/esc.jsonl", &env.read("out/esc.jsonl"), want.as_bytes());
    assert_counts(
        input(&p, "data/esc.jsonl"),
        16,
        10,
        &[("no_consent", 3), ("invalid_subject", 1), ("malformed", 2)],
    );
}

#[test]
fn dotted_subject_path_follows_nested_objects() {
    let env = Env::new();
    setup(&env, &["u1", "u2"], "meta.author.id");
    let rows: Vec<(&str, Option<&str>)> = vec![
        (r#"{"meta":{"author":{"id":"u1"}},"text":"a"}"#, None),
        (
            r#"{"text":"b","meta":{"x":[1,{"id":"n"}],"author":{"name":"A","id":"u2"}}}"#,
            None,
        ),
        (
            r#"{"meta":{"author":{"id":42}},"user_id":"u1"}"#,
            Some("no_consent"),
        ),
        (r#"{"user_id":"u1","meta":{"author":{"id":"u1"}}}"#, None),
        (
            r#"{"meta":{"author":{"id":"stranger"}}}"#,
            Some("no_consent"),
        ),
        // missing along the way
        (r#"{"meta":{"author":{}}}"#, Some("missing_subject")),
        (r#"{"meta":{}}"#, Some("missing_subject")),
        (r#"{"text":"no meta"}"#, Some("missing_subject")),
        (r#"{"meta.author.id":"u1"}"#, Some("missing_subject")),
        (
            r#"{"other":{"author":{"id":"u1"}}}"#,
            Some("missing_subject"),
        ),
        (
            r#"{"meta":{"author":{"id":null}}}"#,
            Some("missing_subject"),
        ),
        // an intermediate that is not an object
        (r#"{"meta":{"author":"u1"}}"#, Some("missing_subject")),
        (r#"{"meta":"u1"}"#, Some("missing_subject")),
        (r#"{"meta":null}"#, Some("missing_subject")),
        (
            r#"{"meta":[{"author":{"id":"u1"}}]}"#,
            Some("missing_subject"),
        ),
        // the leaf is not an id
        (
            r#"{"meta":{"author":{"id":{"v":"u1"}}}}"#,
            Some("invalid_subject"),
        ),
        (r#"{"meta":{"author":{"id":1.5}}}"#, Some("invalid_subject")),
        // duplicates at any level of the path
        (
            r#"{"meta":{"author":{"id":"u1","id":"u1"}}}"#,
            Some("ambiguous_subject"),
        ),
        (
            r#"{"meta":{"author":{"id":"u1"},"author":{"id":"u1"}}}"#,
            Some("ambiguous_subject"),
        ),
        (
            r#"{"meta":{"author":{"id":"u1"}},"meta":{"x":1}}"#,
            Some("ambiguous_subject"),
        ),
        (
            r#"{"meta":{"author":{"id":"u1"},"auth\u006fr":{"id":"u2"}}}"#,
            Some("ambiguous_subject"),
        ),
        // duplicates off the path are fine
        (
            r#"{"meta":{"author":{"id":"u1"},"x":1,"x":2},"y":1,"y":2}"#,
            None,
        ),
        (
            r#"{"meta":{"author":{"id":"u1"}},"x":{"meta":{"author":{"id":"u2"}}}}"#,
            None,
        ),
        (
            r#"{"meta":{"x":{"author":{"id":"stranger"}},"author":{"id":"u1"}}}"#,
            None,
        ),
        // a duplicate intermediate key is ambiguous whatever the other occurrence holds
        (
            r#"{"meta":{"author":{"id":"u1"}},"meta":null}"#,
            Some("ambiguous_subject"),
        ),
        (
            r#"{"meta":5,"meta":{"author":{"id":"u1"}}}"#,
            Some("ambiguous_subject"),
        ),
    ];
    let body: String = rows.iter().map(|(l, _)| format!("{l}\n")).collect();
    let want: String = rows
        .iter()
        .filter(|(_, r)| r.is_none())
        .map(|(l, _)| format!("{l}\n"))
        .collect();
    env.write("data/nested.jsonl", &body);
    let p = run_ok(&env);
    assert_bytes(
        "out/nested.jsonl",
        &env.read("out/nested.jsonl"),
        want.as_bytes(),
    );
    assert_counts(
        input(&p, "data/nested.jsonl"),
        26,
        6,
        &[
            ("no_consent", 2),
            ("missing_subject", 10),
            ("invalid_subject", 2),
            ("ambiguous_subject", 6),
        ],
    );
}

// ---------------------------------------------------------------------------------------
// Compression
// ---------------------------------------------------------------------------------------

const GZIP_MAGIC: &[u8] = b"\x1f\x8b";
const ZSTD_MAGIC: &[u8] = b"\x28\xb5\x2f\xfd";

/// Lines for the codec tests: (all bytes, kept bytes).
fn mixed_lines(n: usize, tag: &str) -> (Vec<u8>, Vec<u8>) {
    let (mut all, mut kept) = (Vec::new(), Vec::new());
    for i in 0..n {
        let line = match i % 4 {
            0 | 1 => format!(
                "{{\"user_id\":\"u{}\",\"i\":{i},\"tag\":\"{tag}\"}}\n",
                i % 3
            ),
            2 => format!("{{\"user_id\":\"nobody\",\"i\":{i}}}\n"),
            _ => format!("{{\"user_id\":null,\"i\":{i}}}\n"),
        };
        all.extend_from_slice(line.as_bytes());
        if i % 4 < 2 {
            kept.extend_from_slice(line.as_bytes());
        }
    }
    (all, kept)
}

#[test]
fn gzip_and_zstd_in_give_the_same_codec_out_multi_member_read_whole() {
    let env = Env::new();
    setup(&env, &["u0", "u1", "u2"], "user_id");
    let (all, kept) = mixed_lines(2000, "gz");
    // Two members, split in the middle of a line.
    let cut = all.len() / 2 + 7;
    assert_ne!(all[cut - 1], b'\n');
    env.write(
        "data/a.jsonl.gz",
        [gzip(&all[..cut]), gzip(&all[cut..])].concat(),
    );
    let (zall, zkept) = mixed_lines(1500, "zst");
    let zcut = zall.len() / 3 + 3;
    env.write(
        "data/b.jsonl.zst",
        [zstd(&zall[..zcut]), zstd(&zall[zcut..])].concat(),
    );
    // Every row dropped: still a valid, empty stream of the same codec.
    let none = b"{\"user_id\":\"nobody\"}\n{\"user_id\":\"nobody\"}\n";
    env.write("data/none.jsonl.gz", gzip(none));
    env.write("data/none.jsonl.zst", zstd(none));

    let p = run_ok(&env);
    let a = env.read("out/a.jsonl.gz");
    assert!(a.starts_with(GZIP_MAGIC), "out/a.jsonl.gz is not gzip");
    assert_bytes("gunzip(out/a.jsonl.gz)", &gunzip(&a), &kept);
    assert_counts(
        input(&p, "data/a.jsonl.gz"),
        2000,
        1000,
        &[("no_consent", 500), ("missing_subject", 500)],
    );
    assert_eq!(input(&p, "data/a.jsonl.gz")["format"], "jsonl.gz");
    assert_eq!(
        input(&p, "data/a.jsonl.gz")["output"]["path"],
        "out/a.jsonl.gz"
    );

    let b = env.read("out/b.jsonl.zst");
    assert!(b.starts_with(ZSTD_MAGIC), "out/b.jsonl.zst is not zstd");
    assert_bytes("unzstd(out/b.jsonl.zst)", &unzstd(&b), &zkept);
    assert_counts(
        input(&p, "data/b.jsonl.zst"),
        1500,
        750,
        &[("no_consent", 375), ("missing_subject", 375)],
    );
    assert_eq!(input(&p, "data/b.jsonl.zst")["format"], "jsonl.zst");

    let ng = env.read("out/none.jsonl.gz");
    assert!(
        ng.starts_with(GZIP_MAGIC),
        "empty gzip output must still be gzip: {ng:?}"
    );
    assert_eq!(gunzip(&ng), b"");
    let nz = env.read("out/none.jsonl.zst");
    assert!(
        nz.starts_with(ZSTD_MAGIC),
        "empty zstd output must still be zstd: {nz:?}"
    );
    assert_eq!(unzstd(&nz), b"");
    assert_counts(input(&p, "data/none.jsonl.gz"), 2, 0, &[("no_consent", 2)]);
    assert_counts(input(&p, "data/none.jsonl.zst"), 2, 0, &[("no_consent", 2)]);

    // The report's digest is the digest of the bytes on disk.
    use sha2::Digest as _;
    for (rel, bytes) in [("data/a.jsonl.gz", &a), ("data/b.jsonl.zst", &b)] {
        assert_eq!(
            input(&p, rel)["output"]["sha256"],
            hex::encode(sha2::Sha256::digest(bytes)),
            "{rel}"
        );
    }
}

#[test]
fn gzip_header_fields_and_zstd_skippable_frames_are_read() {
    use std::io::Write as _;
    let env = Env::new();
    setup(&env, &["u0", "u1", "u2"], "user_id");
    let (all, kept) = mixed_lines(300, "hdr");
    // gzip with a file name, a comment, an extra field and a modification time.
    let mut enc = flate2::GzBuilder::new()
        .filename("a.jsonl")
        .comment("exported by a tool")
        .extra(b"XY\x02\x00hi".to_vec())
        .mtime(1_700_000_000)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(&all).unwrap();
    env.write("data/named.jsonl.gz", enc.finish().unwrap());
    // zstd: a checksummed frame, a skippable frame, then a plain frame.
    let half = all.len() / 2;
    let mut z = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    z.include_checksum(true).unwrap();
    z.write_all(&all[..half]).unwrap();
    let mut bytes = z.finish().unwrap();
    bytes.extend_from_slice(b"\x50\x2a\x4d\x18\x05\x00\x00\x00hello");
    bytes.extend_from_slice(&zstd(&all[half..]));
    env.write("data/frames.jsonl.zst", bytes);
    let p = run_ok(&env);
    assert_bytes(
        "gunzip(out/named.jsonl.gz)",
        &gunzip(&env.read("out/named.jsonl.gz")),
        &kept,
    );
    assert_bytes(
        "unzstd(out/frames.jsonl.zst)",
        &unzstd(&env.read("out/frames.jsonl.zst")),
        &kept,
    );
    for rel in ["data/named.jsonl.gz", "data/frames.jsonl.zst"] {
        assert_counts(
            input(&p, rel),
            300,
            150,
            &[("no_consent", 75), ("missing_subject", 75)],
        );
    }
}

#[test]
fn a_corrupt_compressed_file_fails_alone_and_leaves_no_output() {
    let env = Env::new();
    setup(&env, &["u0", "u1", "u2"], "user_id");
    let (all, kept) = mixed_lines(400, "ok");
    env.write("data/good.jsonl", &all);
    env.write("data/good.jsonl.gz", gzip(&all));

    // A valid gzip header, then bytes that are no deflate stream.
    let header = &gzip(b"x")[..10];
    env.write(
        "data/bad-body.jsonl.gz",
        [header, b"\x07this is not deflate data at all\n".as_slice()].concat(),
    );
    // A whole stream whose CRC does not match its data.
    let mut crc = gzip(&all);
    let n = crc.len();
    crc[n - 8] ^= 0xff;
    env.write("data/bad-crc.jsonl.gz", crc);
    // A stream cut short, after a few valid lines have been decoded.
    let (big, _) = mixed_lines(20_000, "trunc");
    let g = gzip(&big);
    env.write("data/bad-trunc.jsonl.gz", &g[..g.len() / 2]);
    // A zstd frame header, then garbage.
    env.write(
        "data/bad.jsonl.zst",
        [ZSTD_MAGIC, b"\x00\x00garbage garbage garbage".as_slice()].concat(),
    );

    let out = run(&env, &[]).expect(1);
    let p = env.last_statement()["predicate"].clone();
    assert_eq!(p["status"], "partial", "{out:?}");
    let bad = [
        "data/bad-body.jsonl.gz",
        "data/bad-crc.jsonl.gz",
        "data/bad-trunc.jsonl.gz",
        "data/bad.jsonl.zst",
    ];
    for rel in bad {
        let entry = input(&p, rel);
        assert_eq!(entry["status"], "failed", "{rel}: {entry:#}");
        assert!(
            entry["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{rel}: a failed file says why: {entry:#}"
        );
        assert!(entry["output"].is_null(), "{rel}: {entry:#}");
        assert!(
            p["problems"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m.as_str().unwrap().contains(rel)),
            "problems name {rel}: {:#}",
            p["problems"]
        );
    }
    assert_eq!(p["totals"]["files"], 6);
    assert_eq!(p["totals"]["files_failed"], 4);
    assert_eq!(
        files_below(&env.path("out")),
        set(&["good.jsonl", "good.jsonl.gz"]),
        "only the good files have outputs and no temporary file is left"
    );
    assert_bytes("out/good.jsonl", &env.read("out/good.jsonl"), &kept);
    assert_bytes(
        "gunzip(out/good.jsonl.gz)",
        &gunzip(&env.read("out/good.jsonl.gz")),
        &kept,
    );
    assert_counts(
        input(&p, "data/good.jsonl"),
        400,
        200,
        &[("no_consent", 100), ("missing_subject", 100)],
    );
    assert_eq!(input(&p, "data/good.jsonl.gz")["status"], "ok");
}

// ---------------------------------------------------------------------------------------
// Large files
// ---------------------------------------------------------------------------------------

/// A generated dataset: its bytes, the bytes a filter keeps, and its counts.
struct Generated {
    input: Vec<u8>,
    kept: Vec<u8>,
    rows_in: u64,
    rows_kept: u64,
    dropped: BTreeMap<String, u64>,
}

/// Users u0..u49 and 7000..7009 hold consent.
fn consenting() -> Vec<String> {
    (0..50)
        .map(|i| format!("u{i}"))
        .chain((7000..7010).map(|i| i.to_string()))
        .collect()
}

/// `lines` ~250-byte lines of every kind, with long lines `(index, bytes of text, kept)` at
/// the given places. The first line starts with a BOM; the last line is kept and has no
/// newline.
fn generate(seed: u64, lines: usize, long: &[(usize, usize, bool)]) -> Generated {
    let mut rng = Rng(seed);
    let mut g = Generated {
        input: Vec::new(),
        kept: Vec::new(),
        rows_in: 0,
        rows_kept: 0,
        dropped: BTreeMap::new(),
    };
    for i in 0..lines {
        let pad_len = 180 + rng.below(80);
        let pad = text(&mut rng, pad_len);
        let (line, reason): (String, Option<&str>) = if i + 1 == lines {
            (
                format!("{{\"user_id\":\"u3\",\"i\":{i},\"end\":true}}"),
                None,
            )
        } else if let Some(&(_, len, keep)) = long.iter().find(|(at, _, _)| *at == i) {
            let user = if keep { "u7" } else { "x7" };
            let line = format!(
                "{{\"i\":{i},\"user_id\":\"{user}\",\"text\":\"{}\"}}\n",
                text(&mut rng, len)
            );
            (line, (!keep).then_some("no_consent"))
        } else {
            match rng.below(20) {
                0..=10 => (
                    format!(
                        "{{\"i\":{i},\"user_id\":\"u{}\",\"text\":\"{pad}\"}}\n",
                        rng.below(50)
                    ),
                    None,
                ),
                11 => (
                    format!(
                        "{{\"user_id\":{},\"i\":{i},\"text\":\"{pad}\"}}\n",
                        7000 + rng.below(10)
                    ),
                    None,
                ),
                12 => (
                    format!(
                        "{{\"i\":{i},\"user_id\":\"u{}\",\"text\":\"{pad}\"}}\r\n",
                        rng.below(50)
                    ),
                    None,
                ),
                13 | 14 => (
                    format!(
                        "{{\"i\":{i},\"user_id\":\"x{}\",\"text\":\"{pad}\"}}\n",
                        rng.below(50)
                    ),
                    Some("no_consent"),
                ),
                15 => {
                    let whole = format!("{{\"i\":{i},\"user_id\":\"u1\",\"text\":\"{pad}\"}}");
                    let cut = 1 + rng.below(whole.len() - 1);
                    (format!("{}\n", &whole[..cut]), Some("malformed"))
                }
                16 => (" ".repeat(rng.below(4)) + "\n", Some("blank")),
                17 => (
                    format!("{{\"i\":{i},\"text\":\"{pad}\"}}\n"),
                    Some("missing_subject"),
                ),
                18 => (
                    format!("{{\"i\":{i},\"user_id\":1.5,\"text\":\"{pad}\"}}\n"),
                    Some("invalid_subject"),
                ),
                _ => (
                    format!("{{\"user_id\":\"u2\",\"i\":{i},\"user_id\":\"u2\"}}\n"),
                    Some("ambiguous_subject"),
                ),
            }
        };
        let line = if i == 0 {
            [BOM, line.as_bytes()].concat()
        } else {
            line.into_bytes()
        };
        g.input.extend_from_slice(&line);
        g.rows_in += 1;
        match reason {
            None => {
                g.kept.extend_from_slice(&line);
                g.rows_kept += 1;
            }
            Some(r) => *g.dropped.entry(r.to_string()).or_default() += 1,
        }
    }
    g
}

#[test]
fn large_files_cross_chunk_boundaries_and_threads_do_not_change_bytes() {
    let env = Env::new();
    let users = consenting();
    let users: Vec<&str> = users.iter().map(String::as_str).collect();
    setup(&env, &users, "user_id");
    // ~6 MB of short lines, one 5 MB kept line and one 3 MB dropped line: chunks of a few
    // MB end in the middle of both.
    let big = generate(
        0x5EED,
        24_000,
        &[(3_000, 5 << 20, true), (12_000, 3 << 20, false)],
    );
    assert!(big.input.len() > 13 << 20, "{} bytes", big.input.len());
    env.write("data/big.jsonl", &big.input);
    // A gzip copy of a smaller set, in three members.
    let small = generate(0xC0FFEE, 20_000, &[]);
    let thirds = [
        0,
        small.input.len() / 3,
        2 * small.input.len() / 3 + 11,
        small.input.len(),
    ];
    let gz: Vec<u8> = thirds
        .windows(2)
        .flat_map(|w| gzip(&small.input[w[0]..w[1]]))
        .collect();
    env.write("data/small.jsonl.gz", &gz);

    run(&env, &["--threads", "1"]).expect(0);
    let p = env.last_statement()["predicate"].clone();
    let one_big = env.read("out/big.jsonl");
    let one_gz = env.read("out/small.jsonl.gz");
    assert_bytes("out/big.jsonl", &one_big, &big.kept);
    assert_bytes("gunzip(out/small.jsonl.gz)", &gunzip(&one_gz), &small.kept);
    let expect = |g: &Generated, rel: &str| {
        let e = input(&p, rel);
        assert_eq!(e["rows_in"], g.rows_in, "{rel}");
        assert_eq!(e["rows_kept"], g.rows_kept, "{rel}");
        assert_eq!(dropped(&e["rows_dropped"]), g.dropped, "{rel}");
    };
    expect(&big, "data/big.jsonl");
    expect(&small, "data/small.jsonl.gz");
    // Each input is hashed as read, beside the kept bytes hashed as written: both digests
    // are those of the whole files, across every chunk.
    use sha2::Digest as _;
    let sha = |bytes: &[u8]| hex::encode(sha2::Sha256::digest(bytes));
    for (rel, before, after) in [
        ("data/big.jsonl", &big.input, &one_big),
        ("data/small.jsonl.gz", &gz, &one_gz),
    ] {
        assert_eq!(input(&p, rel)["sha256_before"], sha(before), "{rel}");
        assert_eq!(input(&p, rel)["output"]["sha256"], sha(after), "{rel}");
    }

    std::fs::rename(env.path("out"), env.path("out-threads-1")).unwrap();
    run(&env, &["--threads", "4"]).expect(0);
    assert_bytes(
        "out/big.jsonl (4 threads)",
        &env.read("out/big.jsonl"),
        &one_big,
    );
    assert_bytes(
        "out/small.jsonl.gz (4 threads vs 1)",
        &env.read("out/small.jsonl.gz"),
        &one_gz,
    );
    let p4 = env.last_statement()["predicate"].clone();
    assert_eq!(p4["totals"], p["totals"]);
    assert_eq!(p4["inputs"], p["inputs"]);
}

// ---------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------

#[test]
fn the_tree_is_mirrored_with_globs_and_symlinks_not_followed() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    edit_job(
        &env,
        "subject_field = \"user_id\"",
        "subject_field = \"user_id\"\nexclude = [\"skip/**\"]",
    );
    let row =
        |tag: &str| format!("{{\"user_id\":\"u1\",\"tag\":\"{tag}\"}}\n{{\"user_id\":\"n\"}}\n");
    env.write("data/top.jsonl", row("top"));
    env.write("data/a/b/deep.jsonl", row("deep"));
    env.write("data/a/c.jsonl.gz", gzip(row("gz").as_bytes()));
    env.write("data/a/skip/kept.jsonl", row("nested-skip-name"));
    env.write("data/skip/x.jsonl", row("SKIPPED-1"));
    env.write("data/skip/y/z.jsonl", row("SKIPPED-2"));
    env.write("data/notes.txt", row("TXT"));
    env.write("data/a/rows.json", row("JSON"));
    env.write("data/a/empty-dir/.keep", "");
    env.write("elsewhere/secret.jsonl", row("SECRET-VIA-LINK"));
    std::os::unix::fs::symlink("../elsewhere/secret.jsonl", env.path("data/link.jsonl")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", env.path("data/linkdir")).unwrap();

    let p = run_ok(&env);
    assert_eq!(
        files_below(&env.path("out")),
        set(&[
            "a/b/deep.jsonl",
            "a/c.jsonl.gz",
            "a/skip/kept.jsonl",
            "top.jsonl"
        ])
    );
    assert!(!env.path("out/skip").exists());
    assert!(!env.path("out/linkdir").exists());
    assert_eq!(
        env.read_string("out/a/b/deep.jsonl"),
        "{\"user_id\":\"u1\",\"tag\":\"deep\"}\n"
    );
    assert_eq!(
        gunzip(&env.read("out/a/c.jsonl.gz")),
        b"{\"user_id\":\"u1\",\"tag\":\"gz\"}\n"
    );
    let inputs: Vec<&str> = p["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        inputs,
        vec![
            "data/a/b/deep.jsonl",
            "data/a/c.jsonl.gz",
            "data/a/skip/kept.jsonl",
            "data/top.jsonl"
        ]
    );
    let symlinks: BTreeSet<String> = p["skipped"]["symlinks"]
        .as_array()
        .unwrap_or_else(|| panic!("skipped.symlinks: {:#}", p["skipped"]))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    assert_eq!(symlinks, set(&["data/link.jsonl", "data/linkdir"]));
    assert_eq!(p["totals"]["rows_in"], 8);
    assert_eq!(p["totals"]["rows_kept"], 4);
}

#[test]
fn several_input_paths_mirror_below_their_common_directory() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    edit_job(
        &env,
        "paths = [\"data\"]",
        "paths = [\"data/x\", \"data/y/f.jsonl\", \"data/x\", \"data/x/sub\"]",
    );
    let row = "{\"user_id\":\"u1\"}\n{\"user_id\":\"nobody\"}\n";
    env.write("data/x/a.jsonl", row);
    env.write("data/x/sub/b.jsonl", row);
    env.write("data/y/f.jsonl", row);
    env.write("data/y/not-listed.jsonl", row);
    let p = run_ok(&env);
    assert_eq!(
        files_below(&env.path("out")),
        set(&["x/a.jsonl", "x/sub/b.jsonl", "y/f.jsonl"])
    );
    let inputs: Vec<&str> = p["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        inputs,
        vec!["data/x/a.jsonl", "data/x/sub/b.jsonl", "data/y/f.jsonl"],
        "each file once, however often it is named"
    );
    assert_eq!(p["totals"]["rows_in"], 6);
    assert_eq!(p["totals"]["rows_kept"], 3);
    assert_eq!(env.read_string("out/y/f.jsonl"), "{\"user_id\":\"u1\"}\n");
}

#[test]
fn file_names_with_spaces_and_unicode_are_mirrored() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    let row = "{\"user_id\":\"u1\"}\n{\"user_id\":\"nobody\"}\n";
    env.write("data/with space/Zoë's 日本.jsonl", row);
    env.write("data/-dash/--x.jsonl", row);
    let p = run_ok(&env);
    assert_eq!(
        files_below(&env.path("out")),
        set(&["-dash/--x.jsonl", "with space/Zoë's 日本.jsonl"])
    );
    assert_eq!(
        env.read_string("out/with space/Zoë's 日本.jsonl"),
        "{\"user_id\":\"u1\"}\n"
    );
    assert_counts(
        input(&p, "data/with space/Zoë's 日本.jsonl"),
        2,
        1,
        &[("no_consent", 1)],
    );
}

// ---------------------------------------------------------------------------------------
// Dry runs and what is never written
// ---------------------------------------------------------------------------------------

#[test]
fn dry_run_writes_nothing_and_prints_the_counts() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"n1\"}\n\n{\"user_id\":\"u1\"}\nbad\n",
    );
    env.write(
        "data/b.jsonl.gz",
        gzip(b"{\"user_id\":\"u1\"}\n{\"user_id\":\"n2\"}\n"),
    );
    let before = files_below(env.dir.path());

    let out = run(&env, &["--dry-run"]).expect(0);
    assert_eq!(
        files_below(env.dir.path()),
        before,
        "a dry run writes nothing"
    );
    assert!(!env.path("out").exists());
    assert!(!env.path("reports").exists());
    for needle in [
        "7 rows",
        "3 kept",
        "4 dropped",
        "no_consent 2",
        "blank 1",
        "malformed 1",
    ] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} in stdout:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("dry run"),
        "stdout says it was a dry run:\n{}",
        out.stdout
    );

    let out = run(&env, &["--dry-run", "--json"]).expect(0);
    assert_eq!(files_below(env.dir.path()), before);
    let v: Value = serde_json::from_str(&out.stdout).expect("one JSON object");
    assert_eq!(v["totals"]["rows_in"], 7, "{v:#}");
    assert_eq!(v["totals"]["rows_kept"], 3);
    assert_eq!(v["totals"]["rows_dropped"], 4);
    assert_eq!(
        dropped(&v["totals"]["rows_dropped_by_reason"]),
        reasons(&[("no_consent", 2), ("blank", 1), ("malformed", 1)])
    );
    assert!(v["report"].is_null(), "{v:#}");
}

#[test]
fn nothing_of_a_dropped_row_is_written_anywhere() {
    const MARK: &str = "DROPPED-ROW-MARKER-51c2";
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    let body = format!(
        "{{\"user_id\":\"u1\",\"text\":\"keep me\"}}\n\
         {{\"user_id\":\"{MARK}-id\",\"text\":\"{MARK} no consent\"}}\n\
         {{\"user_id\":\"u1\",\"text\":\"{MARK} malformed\"\n\
         {{\"text\":\"{MARK} missing\"}}\n\
         {{\"user_id\":4.5,\"text\":\"{MARK} invalid\"}}\n\
         {{\"user_id\":\"u1\",\"user_id\":\"{MARK}\"}}\n\
         [\"{MARK}\"]\n\
         {{\"user_id\":\"u1\",\"text\":\"kept too\"}}\n"
    );
    env.write("data/plain.jsonl", &body);
    env.write("data/sub/packed.jsonl.gz", gzip(body.as_bytes()));
    env.write("data/sub/packed.jsonl.zst", zstd(body.as_bytes()));
    let mut printed = String::new();
    let out = run(&env, &[]).expect(0);
    printed += &(out.stdout + &out.stderr);
    // A second job into another directory, with the JSON summary and progress lines.
    std::fs::rename(env.path("out"), env.path("out-1")).unwrap();
    let out = env.run(&["run", "job.toml", "--json"]).expect(0);
    printed += &(out.stdout + &out.stderr);
    assert!(!printed.contains(MARK), "printed:\n{printed}");

    let p = env.last_statement()["predicate"].clone();
    assert_eq!(p["totals"]["rows_kept"], 6);
    assert_eq!(p["totals"]["rows_dropped"], 18);

    let mut checked = 0;
    for rel in files_below(env.dir.path()) {
        if rel.starts_with("data/") || rel == "consent.db" {
            continue;
        }
        let raw = env.read(&rel);
        let mut views = vec![raw.clone()];
        if rel.ends_with(".gz") {
            views.push(gunzip(&raw));
        }
        if rel.ends_with(".zst") {
            views.push(unzstd(&raw));
        }
        if rel.ends_with(".dsse.json") {
            let envelope: Value = serde_json::from_slice(&raw).unwrap();
            use base64::Engine as _;
            views.push(
                base64::engine::general_purpose::STANDARD
                    .decode(envelope["payload"].as_str().unwrap())
                    .unwrap(),
            );
        }
        for v in views {
            assert!(
                !v.windows(MARK.len()).any(|w| w == MARK.as_bytes()),
                "{rel} holds bytes of a dropped row"
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 8,
        "outputs and reports were checked ({checked} files)"
    );
    let kept =
        "{\"user_id\":\"u1\",\"text\":\"keep me\"}\n{\"user_id\":\"u1\",\"text\":\"kept too\"}\n";
    assert_eq!(env.read_string("out/plain.jsonl"), kept);
    assert_eq!(
        gunzip(&env.read("out/sub/packed.jsonl.gz")),
        kept.as_bytes()
    );
    assert_eq!(
        unzstd(&env.read("out/sub/packed.jsonl.zst")),
        kept.as_bytes()
    );
}

/// The journal a filter run killed part-way leaves, made with an earlier spec: it had
/// started `outputs` and, with `signing`, was about to sign a report with that job id.
fn interrupted_journal(env: &Env, outputs: &[&str], signing: Option<&str>) {
    let outputs: Vec<String> = outputs
        .iter()
        .map(|o| env.path(o).to_string_lossy().into_owned())
        .collect();
    let journal = serde_json::json!({
        "identity": {"job": "t", "spec_sha256": "an earlier spec", "subjects": "", "snapshot_sha256": null},
        "files": {},
        "signing": signing,
        "outputs": outputs,
    });
    env.write("reports/.consentry-journal-t.json", journal.to_string());
}

#[test]
fn discarding_the_journal_of_a_filter_run_killed_before_a_spec_edit_removes_its_outputs() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n",
    );
    env.write("data/b/c.jsonl", "{\"user_id\":\"u2\"}\n");
    interrupted_journal(&env, &["out/a.jsonl", "old-out/x.jsonl"], None);
    env.write(
        "out/a.jsonl",
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n{\"us",
    );
    env.write("old-out/x.jsonl", "{\"user_id\":\"u2\"}\n");
    let out = run(&env, &[]).expect(2);
    assert!(out.stderr.contains("different job spec"), "{}", out.stderr);
    assert!(
        env.read_string("out/a.jsonl").ends_with("{\"us"),
        "refused: nothing touched"
    );

    let out = run(&env, &["--discard-journal"]).expect(0);
    assert_eq!(env.read_string("out/a.jsonl"), "{\"user_id\":\"u1\"}\n");
    assert_eq!(env.read_string("out/b/c.jsonl"), "");
    assert!(
        out.stderr.contains("old-out/x.jsonl") && out.stderr.contains("left as it is"),
        "{}",
        out.stderr
    );
    assert_eq!(env.read_string("old-out/x.jsonl"), "{\"user_id\":\"u2\"}\n");
    assert!(!env.path("reports/.consentry-journal-t.json").exists());
}

#[test]
fn discarding_the_journal_of_a_run_that_signed_keeps_its_outputs() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    env.write("data/a.jsonl", "{\"user_id\":\"u1\"}\n");
    run(&env, &[]).expect(0);
    let id = env.last_statement()["predicate"]["job"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Killed after its report was signed, before its journal went: the outputs are signed.
    interrupted_journal(&env, &["out/a.jsonl"], Some(&id));
    let out = run(&env, &["--discard-journal"]).expect(2);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert_eq!(env.read_string("out/a.jsonl"), "{\"user_id\":\"u1\"}\n");

    // Killed about to sign, but no report carries its id: the outputs were never signed.
    std::fs::write(env.path("out/a.jsonl"), "half\n").unwrap();
    interrupted_journal(&env, &["out/a.jsonl"], Some("never-signed"));
    run(&env, &["--discard-journal"]).expect(0);
    assert_eq!(env.read_string("out/a.jsonl"), "{\"user_id\":\"u1\"}\n");
}

#[test]
fn a_rerun_after_a_kill_between_signing_and_journal_removal_names_the_signed_report() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n",
    );
    run(&env, &[]).expect(0);
    let p = env.last_statement()["predicate"].clone();
    let report = env.reports();
    assert_eq!(report.len(), 1);
    use sha2::Digest as _;
    let sha = hex::encode(sha2::Sha256::digest(std::fs::read(&report[0]).unwrap()));
    // The journal that run held just before it removed it: same spec and snapshot, signing.
    let journal = serde_json::json!({
        "identity": {
            "job": "t",
            "spec_sha256": p["job"]["spec_sha256"],
            "subjects": "",
            "snapshot_sha256": p["consent"]["sha256"],
        },
        "files": {},
        "signing": p["job"]["id"],
        "outputs": [env.path("out/a.jsonl").to_string_lossy()],
    });
    env.write("reports/.consentry-journal-t.json", journal.to_string());

    let out = run(&env, &[]).expect(0);
    assert!(out.stdout.contains("nothing left to do"), "{}", out.stdout);
    let name = report[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        out.stdout.contains(&name)
            && out
                .stdout
                .contains(&format!("chain      sequence 1, report sha256 {sha}")),
        "the summary names the signed report and its digest: {}",
        out.stdout
    );
    assert!(!env.path("reports/.consentry-journal-t.json").exists());
    assert_eq!(env.read_string("out/a.jsonl"), "{\"user_id\":\"u1\"}\n");
}

#[test]
fn a_run_killed_before_its_first_journal_save_leaves_no_temp_file_after_a_rerun() {
    let env = Env::new();
    setup(&env, &["u1"], "user_id");
    env.write("data/sub/a.jsonl", "{\"user_id\":\"u1\"}\n");
    // The temp file of an output created just before the kill, with no journal yet.
    env.write(
        "out/sub/.consentry-Ab12Cd.tmp",
        "{\"user_id\":\"u1\"}\n{\"us",
    );
    run(&env, &[]).expect(0);
    assert!(!env.path("out/sub/.consentry-Ab12Cd.tmp").exists());
    assert_eq!(env.read_string("out/sub/a.jsonl"), "{\"user_id\":\"u1\"}\n");
}

/// A filter job SIGKILLed at several points and run again finishes the work: every output
/// equals a clean run's, no temp file remains, and exactly one report is signed.
#[test]
fn a_filter_job_killed_part_way_finishes_when_run_again() {
    let env = Env::new();
    env.sqlite(
        "consent.db",
        &format!(
            "{RECORDS_TABLE} INSERT INTO consent_records (id, user_id, purpose, status, created_at)
             VALUES ('1','even','model_training','granted','2025-01-01T00:00:00Z');"
        ),
    );
    let mut expected = Vec::new();
    for f in 0..16 {
        let mut data = String::new();
        let mut kept = String::new();
        for i in 0..12_000 {
            let user = if i % 2 == 0 { "even" } else { "odd" };
            let line = format!(
                "{{\"user_id\":\"{user}\",\"n\":{i},\"text\":\"{}\"}}\n",
                "x".repeat(60)
            );
            if i % 2 == 0 {
                kept.push_str(&line);
            }
            data.push_str(&line);
        }
        let name = format!("part-{f:02}.jsonl");
        if f % 4 == 0 {
            env.write(&format!("data/{name}.gz"), gzip(data.as_bytes()));
            expected.push((format!("out/{name}.gz"), kept));
        } else {
            env.write(&format!("data/{name}"), data);
            expected.push((format!("out/{name}"), kept));
        }
    }
    env.filter_job(
        "snapshot = \"consent.db\"\npurpose = \"model_training\"",
        "user_id",
        "",
    );
    let started = std::time::Instant::now();
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    let full = started.elapsed();
    let check = |env: &Env| {
        for (path, kept) in &expected {
            let bytes = env.read(path);
            let text = if path.ends_with(".gz") {
                gunzip(&bytes)
            } else {
                bytes
            };
            assert_eq!(String::from_utf8(text).unwrap(), *kept, "{path}");
        }
        let leftovers: Vec<_> = walk_files(&env.path("out"))
            .into_iter()
            .chain(walk_files(&env.path("reports")))
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                // Lock files stay, empty, for the next run.
                name.starts_with(".consentry-") && !name.ends_with(".lock")
            })
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    };
    check(&env);
    let reports = |env: &Env| env.reports().len();
    for fraction in [0.05, 0.25, 0.5, 0.75, 0.95] {
        std::fs::remove_dir_all(env.path("out")).unwrap();
        let before = reports(&env);
        let mut child = std::process::Command::new(BIN)
            .args(["run", "job.toml", "--no-progress"])
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(fraction));
        let _ = child.kill();
        let killed = child.wait().unwrap();
        let out = env.run(&["run", "job.toml", "--no-progress"]);
        if killed.success() {
            // The job finished before the kill: a re-run refuses to overwrite its outputs.
            assert_eq!(out.code, 2, "{}", out.stderr);
            assert_eq!(reports(&env), before + 1);
        } else {
            assert_eq!(
                out.code, 0,
                "re-run after a kill at {fraction}: {}",
                out.stderr
            );
            assert!(
                reports(&env) == before + 1 || reports(&env) == before + 2,
                "one report for the work"
            );
        }
        check(&env);
    }
}

fn walk_files(root: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

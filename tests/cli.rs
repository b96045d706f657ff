//! The command line: help, exit codes, and the errors that stop a job before it writes
//! anything (CONTRACT §1, §2), without ever printing a subject id.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::util::*;

const CONSENT: &str =
    "snapshot = \"consent.db\"\nschema = \"consent-records\"\npurpose = \"model_training\"";

const CANARY: &str = "CANARY-a91f";

/// SQL granting consent to `users`.
fn granted(users: &[&str]) -> String {
    let mut sql = RECORDS_TABLE.to_string();
    for (i, user) in users.iter().enumerate() {
        sql += &format!(
            "\nINSERT INTO consent_records (id, user_id, purpose, status, granted_at, created_at) \
             VALUES ('c{i}', '{user}', 'model_training', 'granted', '2026-01-01T00:00:00Z', \
             '2026-01-01T00:00:00Z');"
        );
    }
    sql
}

/// A valid job: snapshot granting u1, one dataset with a kept and a dropped row.
fn valid_job(env: &Env) {
    env.sqlite("consent.db", &granted(&["u1"]));
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"u1\",\"t\":1}\n{\"user_id\":\"u2\",\"t\":2}\n",
    );
    env.filter_job(CONSENT, "user_id", "");
}

/// Replaces `from` with `to` in `job.toml`.
fn edit_job(env: &Env, from: &str, to: &str) {
    let text = env.read_string("job.toml");
    assert!(text.contains(from), "job.toml has no {from:?}:\n{text}");
    env.write("job.toml", text.replacen(from, to, 1));
}

/// `line N` for the first line of `job.toml` holding `needle`, as errors name it.
fn line_of(env: &Env, needle: &str) -> String {
    let text = env.read_string("job.toml");
    let n = text.lines().position(|l| l.contains(needle));
    format!("line {}:", n.expect("needle in job.toml") + 1)
}

/// Every path below `dir` with its bytes (directories as `name/` with no bytes) and mode.
fn tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode();
            if meta.is_dir() {
                out.insert(format!("{rel}/"), (Vec::new(), mode));
                walk(root, &path, out);
            } else {
                out.insert(rel, (std::fs::read(&path).unwrap_or_default(), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs the job and expects it to be refused: exit 2, every one of `mentions` in the error,
/// nothing on stdout, and not one file created, changed or removed.
fn expect_refused(env: &Env, mentions: &[&str]) -> Output {
    let before = tree(env.dir.path());
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    for m in mentions {
        assert!(
            out.stderr.contains(m),
            "the error mentions {m:?}:\n{}",
            out.stderr
        );
    }
    assert!(out.stdout.is_empty(), "nothing on stdout:\n{}", out.stdout);
    assert!(!env.path("out").exists(), "no out/ dir");
    assert!(!env.path("reports").exists(), "no reports/ dir");
    let after = tree(env.dir.path());
    let changed: Vec<&String> = after
        .keys()
        .chain(before.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "the job changed {changed:?}");
    out
}

// ---------------------------------------------------------------------------------------
// Help and version
// ---------------------------------------------------------------------------------------

#[test]
fn help_lists_commands_and_exit_codes() {
    let env = Env::new();
    let out = env.run(&["--help"]).expect(0);
    for needle in ["run", "verify", "keygen", "consent", "report"] {
        assert!(
            out.stdout.contains(needle),
            "{needle:?} in --help:\n{}",
            out.stdout
        );
    }
    let lower = out.stdout.to_lowercase();
    assert!(
        lower.contains("exit code"),
        "--help explains exit codes:\n{}",
        out.stdout
    );
    for code in ["0", "1", "2", "3"] {
        assert!(
            out.stdout.lines().any(|l| l.trim_start().starts_with(code)),
            "exit code {code} in --help:\n{}",
            out.stdout
        );
    }

    let out = env.run(&["run", "--help"]).expect(0);
    for flag in ["--dry-run", "--threads", "--no-progress", "--json", "JOB"] {
        assert!(
            out.stdout.contains(flag),
            "{flag} in run --help:\n{}",
            out.stdout
        );
    }
}

#[test]
fn version_prints_the_package_version() {
    let env = Env::new();
    let out = env.run(&["--version"]).expect(0);
    assert_eq!(
        out.stdout.trim(),
        format!("consentry {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn bad_invocations_exit_2() {
    let env = Env::new();
    valid_job(&env);
    let before = tree(env.dir.path());
    env.run(&[]).expect(2);
    env.run(&["run"]).expect(2);
    env.run(&["frobnicate"]).expect(2);
    env.run(&["run", "job.toml", "--bogus"]).expect(2);
    env.run(&["run", "job.toml", "--threads", "many"]).expect(2);
    let out = env
        .run(&["run", "job.toml", "--threads", "0", "--no-progress"])
        .expect(2);
    assert!(out.stderr.contains("threads"), "{}", out.stderr);
    let out = env.run(&["run", "missing.toml"]).expect(2);
    assert!(out.stderr.contains("missing.toml"), "{}", out.stderr);
    assert_eq!(
        tree(env.dir.path()),
        before,
        "bad invocations change nothing"
    );
}

// ---------------------------------------------------------------------------------------
// Job spec errors
// ---------------------------------------------------------------------------------------

#[test]
fn the_valid_job_used_below_runs() {
    // The refusals below differ from this job by one edit each.
    let env = Env::new();
    valid_job(&env);
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(
        env.read_string("out/a.jsonl"),
        "{\"user_id\":\"u1\",\"t\":1}\n"
    );
}

#[test]
fn unknown_key_in_consent_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(
        &env,
        "purpose = \"model_training\"",
        "purpose = \"model_training\"\npurpse = \"analytics\"",
    );
    expect_refused(&env, &["job.toml", "purpse"]);
}

#[test]
fn a_misspelt_required_key_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(
        &env,
        "purpose = \"model_training\"",
        "purpse = \"model_training\"",
    );
    expect_refused(&env, &["job.toml", "purpose"]);
}

#[test]
fn unknown_section_is_refused() {
    let env = Env::new();
    valid_job(&env);
    let text = env.read_string("job.toml") + "\n[outptu]\ndir = \"elsewhere\"\n";
    env.write("job.toml", text);
    expect_refused(&env, &["job.toml", "outptu"]);
}

#[test]
fn filter_job_without_output_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(&env, "[output]\ndir = \"out\"\n", "");
    expect_refused(&env, &["job.toml", "[output]"]);
}

#[test]
fn bad_kind_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(&env, "kind = \"filter\"", "kind = \"filtre\"");
    expect_refused(&env, &["job.toml", "filtre", &line_of(&env, "filtre")]);
}

#[test]
fn bad_name_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(&env, "name = \"t\"", "name = \"a b\"");
    expect_refused(&env, &["job.toml", "a b", &line_of(&env, "a b")]);
    edit_job(&env, "name = \"a b\"", "name = \"../escape\"");
    expect_refused(&env, &["job.toml", "../escape"]);
    edit_job(&env, "name = \"../escape\"", "name = \"\"");
    expect_refused(&env, &["job.toml", "name"]);
}

#[test]
fn bad_as_of_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(
        &env,
        "as_of = \"2026-11-01T00:00:00Z\"",
        "as_of = \"next tuesday\"",
    );
    expect_refused(
        &env,
        &[
            "job.toml",
            "as_of",
            "next tuesday",
            &line_of(&env, "next tuesday"),
        ],
    );
    edit_job(
        &env,
        "as_of = \"next tuesday\"",
        "as_of = \"2026-13-01T00:00:00Z\"",
    );
    expect_refused(&env, &["job.toml", "as_of"]);
}

#[test]
fn output_dir_overlapping_an_input_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(&env, "dir = \"out\"", "dir = \"data/out\"");
    expect_refused(&env, &["job.toml", "data", &line_of(&env, "data/out")]);
    assert!(!env.path("data/out").exists());
    // An output dir holding the input is an overlap too.
    edit_job(&env, "dir = \"data/out\"", "dir = \".\"");
    expect_refused(&env, &["job.toml"]);
    // So is the same directory spelt another way.
    edit_job(&env, "dir = \".\"", "dir = \"./data/../data\"");
    expect_refused(&env, &["job.toml"]);
}

/// A symlink below the output dir could lead outputs into an input tree (or anywhere):
/// the job is refused before it writes anything.
#[test]
fn a_symlinked_directory_below_the_output_dir_is_refused() {
    let env = Env::new();
    valid_job(&env);
    env.write("data/forum/b.jsonl", "{\"user_id\":\"u1\",\"t\":3}\n");
    env.write("elsewhere/keep.txt", "x");
    std::fs::create_dir(env.path("out")).unwrap();
    std::os::unix::fs::symlink("../elsewhere", env.path("out/forum")).unwrap();
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(
        out.stderr.contains("out/forum") && out.stderr.contains("symlink"),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(env.path("elsewhere"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["keep.txt"], "nothing was written through the link");
    assert!(!env.path("out/a.jsonl").exists() && !env.path("reports").exists());
}

#[test]
fn missing_snapshot_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(&env, "snapshot = \"consent.db\"", "snapshot = \"nope.db\"");
    expect_refused(&env, &["nope.db"]);
    assert!(
        !env.path("nope.db").exists(),
        "a missing snapshot is not created"
    );
}

#[test]
fn snapshot_that_is_not_sqlite_is_refused() {
    let env = Env::new();
    valid_job(&env);
    env.write(
        "consent.db",
        "user_id,purpose,status\nu1,model_training,granted\n".repeat(200),
    );
    let out = expect_refused(&env, &["consent.db"]);
    assert!(
        out.stderr.to_lowercase().contains("sqlite"),
        "says it is not SQLite:\n{}",
        out.stderr
    );
}

#[test]
fn snapshot_without_the_table_lists_its_tables() {
    let env = Env::new();
    valid_job(&env);
    env.sqlite(
        "consent.db",
        "CREATE TABLE users (id TEXT); CREATE TABLE audit_events (x INTEGER);",
    );
    expect_refused(
        &env,
        &["consent.db", "consent_records", "users", "audit_events"],
    );
}

#[test]
fn missing_input_path_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(&env, "paths = [\"data\"]", "paths = [\"data\", \"nodata\"]");
    expect_refused(&env, &["nodata"]);
}

#[test]
fn unknown_schema_is_refused() {
    let env = Env::new();
    valid_job(&env);
    edit_job(
        &env,
        "schema = \"consent-records\"",
        "schema = \"consent-record\"",
    );
    expect_refused(&env, &["job.toml", "consent-record"]);
}

#[test]
fn an_existing_output_file_is_refused_and_left_alone() {
    let env = Env::new();
    valid_job(&env);
    env.write("data/b/c.jsonl", "{\"user_id\":\"u1\"}\n");
    env.write("out/b/c.jsonl", "precious\n");
    let before = tree(env.dir.path());
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(
        out.stderr.contains("c.jsonl"),
        "names the file:\n{}",
        out.stderr
    );
    assert_eq!(env.read_string("out/b/c.jsonl"), "precious\n");
    assert!(
        !env.path("out/a.jsonl").exists(),
        "no other output is written either"
    );
    assert!(!env.path("reports").exists());
    assert_eq!(tree(env.dir.path()), before);
}

#[test]
fn invalid_toml_is_refused_with_its_line() {
    let env = Env::new();
    valid_job(&env);
    edit_job(&env, "kind = \"filter\"", "kind = \"filter");
    expect_refused(&env, &["job.toml", "line 3"]);
}

#[test]
fn a_job_file_that_is_not_utf8_or_not_a_file_is_refused() {
    let env = Env::new();
    valid_job(&env);
    let mut bytes = env.read("job.toml");
    bytes.extend_from_slice(b"# caf\xe9\n");
    env.write("job.toml", bytes);
    expect_refused(&env, &["job.toml"]);
    std::fs::remove_file(env.path("job.toml")).unwrap();
    std::fs::create_dir(env.path("job.toml")).unwrap();
    expect_refused(&env, &["job.toml"]);
}

#[test]
fn bad_subject_field_and_globs_are_refused() {
    let env = Env::new();
    valid_job(&env);
    for (from, to, mention) in [
        (
            "subject_field = \"user_id\"",
            "subject_field = \"meta..id\"",
            "meta..id",
        ),
        (
            "subject_field = \"user_id\"",
            "subject_field = \"\"",
            "subject_field",
        ),
        (
            "subject_field = \"user_id\"",
            "subject_field = \"user_id\"\ninclude = [\"[unclosed\"]",
            "[unclosed",
        ),
        (
            "subject_field = \"user_id\"",
            "subject_field = \"user_id\"\nexclude = [\"a/{b\"]",
            "a/{b",
        ),
        (
            "subject_field = \"user_id\"",
            "subject_field = \"user_id\"\ninclude = []",
            "include",
        ),
        ("paths = [\"data\"]", "paths = []", "paths"),
        ("[input]\npaths = [\"data\"]\n", "[input]\n", "paths"),
    ] {
        let original = env.read_string("job.toml");
        edit_job(&env, from, to);
        // The error names the line of the value, when the value is there at all.
        let written = env.read_string("job.toml").contains(mention);
        let line = written.then(|| line_of(&env, mention));
        let mut mentions = vec!["job.toml", mention];
        mentions.extend(line.as_deref());
        expect_refused(&env, &mentions);
        env.write("job.toml", original);
    }
}

#[test]
fn relative_paths_resolve_against_the_job_file_not_the_working_directory() {
    let env = Env::new();
    env.keys();
    env.sqlite("proj/consent.db", &granted(&["u1"]));
    env.write(
        "proj/data/a.jsonl",
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n",
    );
    let spec = "[job]\nname = \"t\"\nkind = \"filter\"\nas_of = \"2026-11-01T00:00:00Z\"\n\
        [consent]\nsnapshot = \"consent.db\"\nschema = \"consent-records\"\npurpose = \"model_training\"\n\
        [input]\npaths = [\"data\"]\nsubject_field = \"user_id\"\n[output]\ndir = \"out\"\n\
        [report]\ndir = \"reports\"\nsigning_key = \"../keys/signing.key\"\n\
        pseudonym_key = \"../keys/pseudonym.key\"\n";
    env.write("proj/job.toml", spec);
    // Decoys where a cwd-relative reading would look.
    env.write("data/a.jsonl", "{\"user_id\":\"DECOY\"}\n");
    env.run(&["run", "proj/job.toml", "--no-progress"])
        .expect(0);
    assert_eq!(
        env.read_string("proj/out/a.jsonl"),
        "{\"user_id\":\"u1\"}\n"
    );
    assert!(!env.path("out").exists());
    assert!(!env.path("reports").exists());
    assert!(env.path("proj/reports").is_dir());
    // And from inside the project, by an absolute path.
    std::fs::remove_dir_all(env.path("proj/out")).unwrap();
    let abs = env.path("proj/job.toml");
    env.run(&["run", path_str(&abs), "--no-progress"]).expect(0);
    assert_eq!(
        env.read_string("proj/out/a.jsonl"),
        "{\"user_id\":\"u1\"}\n"
    );
}

#[test]
fn snapshot_that_is_empty_or_a_directory_is_refused() {
    let env = Env::new();
    valid_job(&env);
    env.write("consent.db", b"");
    expect_refused(&env, &["consent.db"]);
    std::fs::remove_file(env.path("consent.db")).unwrap();
    std::fs::create_dir(env.path("consent.db")).unwrap();
    expect_refused(&env, &["consent.db"]);
}

#[test]
fn an_existing_empty_output_dir_is_fine() {
    let env = Env::new();
    valid_job(&env);
    std::fs::create_dir(env.path("out")).unwrap();
    env.write("out/unrelated.txt", "left alone\n");
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(
        env.read_string("out/a.jsonl"),
        "{\"user_id\":\"u1\",\"t\":1}\n"
    );
    assert_eq!(env.read_string("out/unrelated.txt"), "left alone\n");
}

#[test]
fn an_output_dir_reaching_an_input_through_a_symlink_is_refused() {
    let env = Env::new();
    valid_job(&env);
    std::fs::create_dir(env.path("data/inner")).unwrap();
    std::os::unix::fs::symlink("data/inner", env.path("sneaky")).unwrap();
    edit_job(&env, "dir = \"out\"", "dir = \"sneaky\"");
    expect_refused(&env, &["sneaky"]);
}

#[test]
fn an_output_dir_that_cannot_be_a_directory_is_refused_before_anything_is_written() {
    // `out` is a file: no output can be written below it, so the job is misconfigured.
    let env = Env::new();
    valid_job(&env);
    env.write("out", "i am a file\n");
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(out.stderr.contains("not a directory"), "{}", out.stderr);
    assert!(!env.path("reports").exists(), "no reports/ dir");
    assert_eq!(env.read_string("out"), "i am a file\n");
    // A dangling symlink on the way to the output dir.
    let env = Env::new();
    valid_job(&env);
    std::os::unix::fs::symlink("data/inner/deeper", env.path("dangling")).unwrap();
    edit_job(&env, "dir = \"out\"", "dir = \"dangling/x\"");
    expect_refused(&env, &["dangling"]);
}

// ---------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------

fn chmod(env: &Env, rel: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.path(rel), std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_signing_key_readable_by_others_is_refused() {
    let env = Env::new();
    valid_job(&env);
    chmod(&env, "keys/signing.key", 0o644);
    let out = expect_refused(&env, &["signing.key", "chmod"]);
    assert!(out.stderr.contains("600"), "{}", out.stderr);
    chmod(&env, "keys/signing.key", 0o640);
    expect_refused(&env, &["signing.key", "chmod"]);
}

#[test]
fn a_pseudonym_key_readable_by_others_is_refused() {
    let env = Env::new();
    valid_job(&env);
    chmod(&env, "keys/pseudonym.key", 0o644);
    expect_refused(&env, &["pseudonym.key", "chmod"]);
}

#[test]
fn missing_keys_are_refused() {
    let env = Env::new();
    valid_job(&env);
    std::fs::rename(env.path("keys/signing.key"), env.path("keys/moved.key")).unwrap();
    expect_refused(&env, &["signing.key"]);
    std::fs::rename(env.path("keys/moved.key"), env.path("keys/signing.key")).unwrap();
    std::fs::remove_file(env.path("keys/pseudonym.key")).unwrap();
    expect_refused(&env, &["pseudonym.key"]);
}

#[test]
fn malformed_keys_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    valid_job(&env);
    let good = env.read("keys/signing.key");
    let secret = |rel: &str, bytes: &[u8]| {
        env.write(rel, bytes);
        std::fs::set_permissions(env.path(rel), std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    secret(
        "keys/signing.key",
        b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    expect_refused(&env, &["signing.key"]);
    secret("keys/signing.key", &good);
    secret("keys/pseudonym.key", b"short");
    expect_refused(&env, &["pseudonym.key"]);
}

// ---------------------------------------------------------------------------------------
// Snapshot contents and privacy
// ---------------------------------------------------------------------------------------

/// A snapshot where row `c7`, of the canary subject, has `column = 'yesterday'`.
fn bad_timestamp_snapshot(env: &Env, column: &str) {
    let mut sql = granted(&["u1"]);
    let cols = ["granted_at", "created_at", "revoked_at", "expiry_at"];
    assert!(cols.contains(&column), "{column}");
    let values: Vec<&str> = cols
        .iter()
        .map(|c| match *c {
            c if c == column => "'yesterday'",
            "granted_at" | "created_at" => "'2026-01-01T00:00:00Z'",
            _ => "NULL",
        })
        .collect();
    sql += &format!(
        "\nINSERT INTO consent_records (id, user_id, purpose, status, {}) \
         VALUES ('c7', '{CANARY}', 'model_training', 'granted', {});",
        cols.join(", "),
        values.join(", ")
    );
    env.sqlite("consent.db", &sql);
}

#[test]
fn an_unparseable_timestamp_names_the_row_and_never_the_subject() {
    for column in ["granted_at", "created_at", "revoked_at", "expiry_at"] {
        let env = Env::new();
        valid_job(&env);
        env.write("data/b.jsonl", format!("{{\"user_id\":\"{CANARY}\"}}\n"));
        bad_timestamp_snapshot(&env, column);
        let out = expect_refused(&env, &["consent.db", "c7", column]);
        assert!(
            !out.stderr.contains(CANARY) && !out.stdout.contains(CANARY),
            "{column}: the subject id is printed:\n{}",
            out.stderr
        );
        let out = env.run(&["run", "job.toml", "--json"]).expect(2);
        assert!(
            !out.stderr.contains(CANARY) && !out.stdout.contains(CANARY),
            "{column} --json: the subject id is printed:\n{}{}",
            out.stdout,
            out.stderr
        );
    }
}

/// Every byte of every file below `dir`, with DSSE payloads decoded.
fn contents_below(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (rel, (bytes, _)) in tree(dir) {
        if rel.ends_with('/') {
            continue;
        }
        if rel.ends_with(".dsse.json") {
            let envelope: Value = serde_json::from_slice(&bytes).unwrap();
            use base64::Engine as _;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(envelope["payload"].as_str().unwrap())
                .unwrap();
            out.push((format!("{rel} (payload)"), payload));
        }
        out.push((rel, bytes));
    }
    out
}

#[test]
fn a_subject_id_never_reaches_the_terminal_or_a_report() {
    let env = Env::new();
    valid_job(&env);
    env.write(
        "data/b.jsonl",
        format!(
            "{{\"user_id\":\"{CANARY}\",\"t\":1}}\n\
             {{\"user_id\":\"{CANARY}\",\"user_id\":\"u1\"}}\n\
             {{\"user_id\":\"{CANARY}\"\n"
        ),
    );
    let mut printed = String::new();
    for (i, flags) in [&["--no-progress"][..], &["--json"], &["--dry-run"], &[]]
        .iter()
        .enumerate()
    {
        let mut args = vec!["run", "job.toml"];
        args.extend_from_slice(flags);
        let out = env.run(&args).expect(0);
        printed += &out.stdout;
        printed += &out.stderr;
        if env.path("out").exists() {
            std::fs::rename(env.path("out"), env.path(&format!("out-{i}"))).unwrap();
        }
    }
    assert!(!printed.contains(CANARY), "printed:\n{printed}");
    let p = env.last_statement()["predicate"].clone();
    assert_eq!(p["totals"]["rows_dropped"], 4, "{:#}", p["totals"]);
    let reports = contents_below(&env.path("reports"));
    assert!(
        reports.len() >= 3,
        "{:?}",
        reports.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    for (rel, bytes) in reports {
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "reports/{rel} holds a raw subject id"
        );
    }

    // Nor when the canary sits in a snapshot row the job refuses.
    bad_timestamp_snapshot(&env, "granted_at");
    std::fs::remove_dir_all(env.path("reports")).unwrap();
    let out = env.run(&["run", "job.toml"]).expect(2);
    assert!(!out.stderr.contains(CANARY), "{}", out.stderr);
    assert!(!out.stdout.contains(CANARY), "{}", out.stdout);
}

// ---------------------------------------------------------------------------------------
// Output formats
// ---------------------------------------------------------------------------------------

#[test]
fn json_prints_one_object_with_status_exit_code_and_report() {
    let env = Env::new();
    valid_job(&env);
    // No --no-progress: progress goes to stderr, never into the JSON.
    let out = env.run(&["run", "job.toml", "--json"]).expect(0);
    let mut values = serde_json::Deserializer::from_str(&out.stdout).into_iter::<Value>();
    let v = values
        .next()
        .expect("a JSON value")
        .unwrap_or_else(|e| panic!("{e}:\n{}", out.stdout));
    assert!(
        values.next().is_none(),
        "exactly one JSON value:\n{}",
        out.stdout
    );
    assert!(v.is_object(), "{v}");
    assert_eq!(out.stdout.trim_end().lines().count(), 1, "{}", out.stdout);
    assert_eq!(v["status"], "complete", "{v:#}");
    assert_eq!(v["exit_code"], 0, "{v:#}");
    let report = v["report"]
        .as_str()
        .unwrap_or_else(|| panic!("report: {v:#}"));
    assert!(env.path(report).is_file(), "{report} exists");
    assert!(report.ends_with(".dsse.json"), "{report}");

    // A partial job says so, with exit code 1.
    std::fs::remove_dir_all(env.path("out")).unwrap();
    env.write(
        "data/broken.jsonl.gz",
        b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03garbage",
    );
    let out = env.run(&["run", "job.toml", "--json"]).expect(1);
    let v: Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}:\n{}", out.stdout));
    assert_eq!(v["status"], "partial", "{v:#}");
    assert_eq!(v["exit_code"], 1, "{v:#}");
    assert!(v["report"].is_string(), "{v:#}");
}

#[test]
fn text_summary_goes_to_stdout_and_nothing_to_stderr_without_progress() {
    let env = Env::new();
    valid_job(&env);
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert!(out.stderr.is_empty(), "stderr:\n{}", out.stderr);
    assert!(out.stdout.contains("complete"), "{}", out.stdout);
    assert!(
        out.stdout.contains("reports/"),
        "names the report:\n{}",
        out.stdout
    );
}

#[test]
fn a_closed_stdout_is_not_a_crash() {
    let env = Env::new();
    valid_job(&env);
    // The reader exits at once; consentry writes its summary a moment later into a pipe
    // nobody reads.
    let script = format!(
        "{{ sleep 0.3; '{}' run job.toml --no-progress; echo \"rc=$?\" >&2; }} | true",
        BIN
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rc=0"),
        "exit 0 on a broken pipe:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        env.read_string("out/a.jsonl"),
        "{\"user_id\":\"u1\",\"t\":1}\n"
    );
}

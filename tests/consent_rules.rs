//! CONTRACT §3: every validity rule, judged through `consent check` and through a filter job.

use crate::util::*;

const AS_OF: &str = "2026-11-01T00:00:00Z";

/// Runs `consent check` and returns (exit code, first line).
fn check(env: &Env, db: &str, subject: &str, purpose: &str) -> (i32, String) {
    let out = env.run(&[
        "consent",
        "check",
        "--snapshot",
        db,
        "--subject",
        subject,
        "--purpose",
        purpose,
        "--as-of",
        AS_OF,
    ]);
    assert!(
        out.code == 0 || out.code == 1,
        "unexpected exit {}: {}",
        out.code,
        out.stderr
    );
    (
        out.code,
        out.stdout.lines().next().unwrap_or_default().to_string(),
    )
}

fn verdict(env: &Env, db: &str, subject: &str) -> String {
    let (code, line) = check(env, db, subject, "model_training");
    let word = line.split(" (").next().unwrap().to_string();
    assert_eq!(
        code == 0,
        word == "valid",
        "exit code agrees with the answer: {line}"
    );
    word
}

/// Writes a filter job over `data/` by the `model_training` consent of snapshot `db`, with
/// `rules` added to `[consent]`, and runs it.
fn filter_by(env: &Env, db: &str, rules: &str) -> Output {
    env.filter_job(
        &format!("snapshot = \"{db}\"\npurpose = \"model_training\"\n{rules}"),
        "user_id",
        "",
    );
    env.run(&["run", "job.toml", "--no-progress"])
}

fn records(rows: &str) -> String {
    format!("{RECORDS_TABLE}\n{rows}")
}

#[test]
fn latest_covering_record_decides_and_ties_go_to_revoked() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, created_at) VALUES
             ('1','regrant','model_training','granted','2025-01-01T00:00:00Z'),
             ('2','regrant','model_training','revoked','2025-02-01T00:00:00Z'),
             ('3','regrant','model_training','granted','2025-03-01T00:00:00Z'),
             ('4','tie','model_training','granted','2025-03-01T00:00:00Z'),
             ('5','tie','model_training','revoked','2025-03-01T00:00:00Z'),
             ('6','future','model_training','granted','2025-01-01T00:00:00Z'),
             ('7','future','model_training','revoked','2026-11-01T00:00:01Z'),
             ('8','onlyfuture','model_training','granted','2027-01-01T00:00:00Z'),
             ('9','pend','model_training','pending','2025-01-01T00:00:00Z'),
             ('10','other','analytics','granted','2025-01-01T00:00:00Z'),
             ('11','at_t','model_training','granted','2026-11-01T00:00:00Z');",
        ),
    );
    assert_eq!(verdict(&env, "c.db", "regrant"), "valid");
    assert_eq!(verdict(&env, "c.db", "tie"), "not valid: revoked");
    assert_eq!(
        verdict(&env, "c.db", "future"),
        "valid",
        "a revocation after as_of is ignored"
    );
    assert_eq!(verdict(&env, "c.db", "onlyfuture"), "not valid: no_consent");
    assert_eq!(verdict(&env, "c.db", "pend"), "not valid: pending");
    assert_eq!(
        verdict(&env, "c.db", "other"),
        "not valid: no_consent",
        "another purpose does not cover"
    );
    assert_eq!(
        verdict(&env, "c.db", "at_t"),
        "valid",
        "a record at exactly as_of counts"
    );
    assert_eq!(verdict(&env, "c.db", "nobody"), "not valid: no_consent");
}

#[test]
fn granted_records_must_meet_time_and_job_rules() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        &records(
            "INSERT INTO consent_records VALUES
             ('1','ok','model_training','granted','2025-01-01T00:00:00Z',NULL,'2027-01-01T00:00:00Z',3,'[\"text\",\"audio\"]','consent',NULL,'2025-01-01T00:00:00Z'),
             ('2','exp','model_training','granted','2025-01-01T00:00:00Z',NULL,'2026-11-01T00:00:00Z',3,'[\"text\"]','consent',NULL,'2025-01-01T00:00:00Z'),
             ('3','rvk','model_training','granted','2025-01-01T00:00:00Z','2026-10-31T23:59:59Z',NULL,3,'[\"text\"]','consent',NULL,'2025-01-01T00:00:00Z'),
             ('4','rvk_later','model_training','granted','2025-01-01T00:00:00Z','2026-11-02T00:00:00Z',NULL,3,'[\"text\"]','consent',NULL,'2025-01-01T00:00:00Z'),
             ('5','old','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,1,'[\"text\"]','consent',NULL,'2025-01-01T00:00:00Z'),
             ('6','nover','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,NULL,'[\"text\"]','consent',NULL,'2025-01-01T00:00:00Z'),
             ('7','cats','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,3,'[\"audio\"]','consent',NULL,'2025-01-01T00:00:00Z'),
             ('8','basis','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,3,'[\"text\"]','contract',NULL,'2025-01-01T00:00:00Z');",
        ),
    );
    env.write(
        "data/rows.jsonl",
        [
            "ok",
            "exp",
            "rvk",
            "rvk_later",
            "old",
            "nover",
            "cats",
            "basis",
        ]
        .iter()
        .map(|u| format!("{{\"user_id\":\"{u}\"}}\n"))
        .collect::<String>(),
    );
    env.filter_job(
        "snapshot = \"c.db\"\npurpose = \"model_training\"\nmin_notice_version = 2\nrequired_categories = [\"text\"]",
        "user_id",
        "",
    );
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(
        env.read_string("out/rows.jsonl"),
        "{\"user_id\":\"ok\"}\n{\"user_id\":\"rvk_later\"}\n"
    );
    let dropped = &env.last_statement()["predicate"]["totals"]["rows_dropped_by_reason"];
    assert_eq!(
        dropped,
        &serde_json::json!({"expired": 1, "revoked": 1, "notice_outdated": 2, "category_missing": 1, "legal_basis": 1})
    );
}

#[test]
fn absent_columns_impose_no_constraint() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        "CREATE TABLE consent_records (id INTEGER PRIMARY KEY, user_id TEXT, purpose TEXT, status TEXT, granted_at TEXT);
         INSERT INTO consent_records VALUES (1, 'u1', 'model_training', 'granted', '2025-01-01 10:00:00');",
    );
    env.write("data/a.jsonl", "{\"user_id\":\"u1\"}\n");
    env.filter_job(
        "snapshot = \"c.db\"\npurpose = \"model_training\"\nmin_notice_version = 2\nrequired_categories = [\"text\"]",
        "user_id",
        "",
    );
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(env.read_string("out/a.jsonl"), "{\"user_id\":\"u1\"}\n");
    assert!(
        out.stdout.contains("min_notice_version is not checked"),
        "{}",
        out.stdout
    );
    let warnings = &env.last_statement()["predicate"]["consent"]["warnings"];
    assert_eq!(warnings.as_array().unwrap().len(), 2, "{warnings}");
}

#[test]
fn derived_purposes_cover_and_revoking_the_source_revokes_them() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, derived_purposes, created_at) VALUES
             ('1','d_ok','analytics','granted','[\"model_training\"]','2025-01-01T00:00:00Z'),
             ('2','d_rev','analytics','granted','[\"model_training\",\"x\"]','2025-01-01T00:00:00Z'),
             ('3','d_rev','analytics','revoked',NULL,'2025-06-01T00:00:00Z'),
             ('4','d_none','analytics','granted','[\"x\"]','2025-01-01T00:00:00Z'),
             ('5','d_mix','model_training','revoked',NULL,'2025-01-01T00:00:00Z'),
             ('6','d_mix','analytics','granted','[\"model_training\"]','2025-02-01T00:00:00Z'),
             ('7','d_late','analytics','granted','[\"model_training\"]','2027-01-01T00:00:00Z');",
        ),
    );
    assert_eq!(verdict(&env, "c.db", "d_ok"), "valid");
    assert_eq!(verdict(&env, "c.db", "d_rev"), "not valid: revoked");
    assert_eq!(verdict(&env, "c.db", "d_none"), "not valid: no_consent");
    assert_eq!(
        verdict(&env, "c.db", "d_mix"),
        "valid",
        "the later derived grant decides"
    );
    assert_eq!(verdict(&env, "c.db", "d_late"), "not valid: no_consent");
}

#[test]
fn every_timestamp_form_is_read_and_garbage_names_the_row() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, granted_at, expiry_at, created_at) VALUES
             ('1','iso','model_training','granted','2025-01-01T00:00:00Z','2026-11-01T00:00:01Z',NULL),
             ('2','off','model_training','granted','2025-01-01T00:00:00+05:30','2026-11-01T05:29:59+05:30',NULL),
             ('3','naive','model_training','granted','2025-01-01 00:00:00.123456','2026-11-01 00:00:00.000001',NULL),
             ('4','unix','model_training','granted',1735689600,1793491201,NULL),
             ('5','unix_exp','model_training','granted',1735689600,1793491200,NULL);",
        ),
    );
    assert_eq!(verdict(&env, "c.db", "iso"), "valid");
    assert_eq!(
        verdict(&env, "c.db", "off"),
        "not valid: expired",
        "05:29:59+05:30 is before as_of"
    );
    assert_eq!(verdict(&env, "c.db", "naive"), "valid");
    assert_eq!(verdict(&env, "c.db", "unix"), "valid");
    assert_eq!(verdict(&env, "c.db", "unix_exp"), "not valid: expired");

    env.sqlite(
        "bad.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, granted_at) VALUES
             ('c1','SECRET-USER-9','model_training','granted','yesterday');",
        ),
    );
    env.write("data/a.jsonl", "{\"user_id\":\"SECRET-USER-9\"}\n");
    let out = filter_by(&env, "bad.db", "").expect(2);
    assert!(
        !env.path("out").exists() && !env.path("reports").exists(),
        "nothing written"
    );
    assert!(
        out.stderr.contains("row id \"c1\"") && out.stderr.contains("granted_at"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("SECRET-USER-9"),
        "no subject id in errors: {}",
        out.stderr
    );
}

/// Numbers are Unix seconds only between 2000 and 9999: a revocation written as a Julian
/// day, in milliseconds or as `YYYYMMDD` would otherwise land in 1970 or after as_of and
/// be ignored, keeping the rows of a subject who revoked.
#[test]
fn numeric_timestamps_outside_2000_to_9999_name_the_row_instead_of_moving_a_revocation() {
    let env = Env::new();
    let table = "CREATE TABLE consent_records (id TEXT, user_id TEXT, purpose TEXT, status TEXT, created_at);";
    env.sqlite(
        "ok.db",
        &format!(
            "{table} INSERT INTO consent_records VALUES
             ('1','text_digits','model_training','granted','1735689600'),
             ('2','real','model_training','granted',1735689600.5),
             ('3','real','model_training','revoked',1735689600.25),
             ('4','t_offset','model_training','granted','2025-01-01T00:00:00+0530');"
        ),
    );
    assert_eq!(verdict(&env, "ok.db", "text_digits"), "valid");
    assert_eq!(
        verdict(&env, "ok.db", "real"),
        "valid",
        "fractions of a second order records"
    );
    assert_eq!(verdict(&env, "ok.db", "t_offset"), "valid");
    env.sqlite(
        "forever.db",
        "CREATE TABLE consent_records (id TEXT, user_id TEXT, purpose TEXT, status TEXT, expiry_at, created_at);
         INSERT INTO consent_records VALUES
             ('1','forever','model_training','granted',253402300799,'2025-01-01T00:00:00Z'),
             ('2','lapsed','model_training','granted',1767225600,'2025-01-01T00:00:00Z');",
    );
    assert_eq!(
        verdict(&env, "forever.db", "forever"),
        "valid",
        "9999-12-31T23:59:59Z, a 'never expires' sentinel"
    );
    assert_eq!(verdict(&env, "forever.db", "lapsed"), "not valid: expired");

    env.write("data/a.jsonl", "{\"user_id\":\"SECRET-USER-9\"}\n");
    for (i, (what, value)) in [
        ("a YYYYMMDD date", "'20260301'"),
        ("a Julian day", "julianday('2026-03-01')"),
        ("milliseconds", "1772323200000"),
        ("a year", "2026"),
    ]
    .iter()
    .enumerate()
    {
        let db = format!("bad{i}.db");
        env.sqlite(
            &db,
            &format!(
                "{table} INSERT INTO consent_records VALUES
                 ('g{i}','SECRET-USER-9','model_training','granted','2025-01-01T00:00:00Z'),
                 ('r{i}','SECRET-USER-9','model_training','revoked',{value});"
            ),
        );
        let out = filter_by(&env, &db, "").expect(2);
        assert!(
            out.stderr.contains(&format!("row id \"r{i}\""))
                && out.stderr.contains("created_at")
                && out.stderr.contains("between 2000 and 9999"),
            "{what}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("SECRET-USER-9"), "{}", out.stderr);
        assert!(!env.path("out").exists(), "{what}: nothing written");
    }
}

/// SQLite names columns case-insensitively and reads generated columns like stored ones:
/// neither may make a constraint look absent.
#[test]
fn columns_are_found_whatever_their_letter_case_and_generated_ones_count() {
    let env = Env::new();
    env.sqlite(
        "case.db",
        "CREATE TABLE consent_records (id TEXT, User_Id TEXT, PURPOSE TEXT, Status TEXT,
             Granted_At TEXT, Revoked_At TEXT, Expiry_At TEXT, Created_At TEXT);
         INSERT INTO consent_records VALUES
             ('1','alice','model_training','granted','2025-01-01T00:00:00Z',NULL,'2026-01-01T00:00:00Z','2025-01-01T00:00:00Z'),
             ('2','bob','model_training','granted','2025-01-01T00:00:00Z','2025-06-01T00:00:00Z',NULL,'2025-01-01T00:00:00Z'),
             ('3','carol','model_training','granted','2025-01-01T00:00:00Z',NULL,NULL,'2025-01-01T00:00:00Z');",
    );
    assert_eq!(verdict(&env, "case.db", "alice"), "not valid: expired");
    assert_eq!(verdict(&env, "case.db", "bob"), "not valid: revoked");
    assert_eq!(verdict(&env, "case.db", "carol"), "valid");

    env.sqlite(
        "generated.db",
        "CREATE TABLE consent_records (id TEXT, user_id TEXT, purpose TEXT, status TEXT,
             granted_at TEXT, created_at TEXT,
             expiry_at TEXT GENERATED ALWAYS AS (date(granted_at, '+1 year')) VIRTUAL,
             notice_version INTEGER GENERATED ALWAYS AS (1) STORED);
         INSERT INTO consent_records (id, user_id, purpose, status, granted_at, created_at) VALUES
             ('1','old','model_training','granted','2025-01-01T00:00:00Z','2025-01-01T00:00:00Z'),
             ('2','new','model_training','granted','2026-06-01T00:00:00Z','2026-06-01T00:00:00Z');",
    );
    assert_eq!(verdict(&env, "generated.db", "old"), "not valid: expired");
    assert_eq!(verdict(&env, "generated.db", "new"), "valid");
    env.write("data/a.jsonl", "{\"user_id\":\"new\"}\n");
    filter_by(&env, "generated.db", "min_notice_version = 2").expect(0);
    assert_eq!(
        env.read_string("out/a.jsonl"),
        "",
        "a generated notice_version is checked"
    );
}

/// `Model_Training` may or may not be `model_training`; a column declared `COLLATE NOCASE`
/// says one thing, the contract's exact match another. Either guess could keep a revoked
/// subject's rows, so the snapshot is refused with the row named.
#[test]
fn a_purpose_spelled_in_another_letter_case_is_refused_not_guessed() {
    let env = Env::new();
    env.write("data/a.jsonl", "{\"user_id\":\"SECRET-USER-9\"}\n");
    for (collation, rows) in [
        (
            "",
            "('1','SECRET-USER-9','model_training','granted',NULL,'2025-01-01T00:00:00Z'),
             ('2','SECRET-USER-9','Model_Training','revoked',NULL,'2025-03-01T00:00:00Z')",
        ),
        (
            "COLLATE NOCASE",
            "('1','SECRET-USER-9','model_training','granted',NULL,'2025-01-01T00:00:00Z'),
             ('2','SECRET-USER-9','Model_Training','revoked',NULL,'2025-03-01T00:00:00Z')",
        ),
        (
            // A deriving purpose in another case: `Analytics` is not `analytics`.
            "COLLATE NOCASE",
            "('1','bob','analytics','granted','[\"model_training\"]','2025-01-01T00:00:00Z'),
             ('2','SECRET-USER-9','Analytics','granted',NULL,'2025-01-01T00:00:00Z')",
        ),
    ] {
        env.sqlite(
            "c.db",
            &format!(
                "DROP TABLE IF EXISTS consent_records;
                 CREATE TABLE consent_records (id TEXT, user_id TEXT, purpose TEXT {collation},
                     status TEXT, derived_purposes TEXT, created_at TEXT);
                 INSERT INTO consent_records VALUES {rows};"
            ),
        );
        let out = filter_by(&env, "c.db", "").expect(2);
        assert!(
            out.stderr.contains("row id \"2\"") && out.stderr.contains("only in letter case"),
            "{collation}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("SECRET-USER-9"), "{}", out.stderr);
        assert!(!env.path("out").exists());
    }
}

/// A NULL legal basis is the platform's default, consent: it passes where consent is
/// allowed and fails where it is not. A basis that is not text names the row.
#[test]
fn a_null_legal_basis_counts_as_consent() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, legal_basis, created_at) VALUES
             ('1','null_basis','model_training','granted',NULL,'2025-01-01T00:00:00Z'),
             ('2','consent','model_training','granted','consent','2025-01-01T00:00:00Z'),
             ('3','contract','model_training','granted','contract','2025-01-01T00:00:00Z');",
        ),
    );
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"null_basis\"}\n{\"user_id\":\"consent\"}\n{\"user_id\":\"contract\"}\n",
    );
    for (allowed, kept) in [
        (
            "",
            "{\"user_id\":\"null_basis\"}\n{\"user_id\":\"consent\"}\n",
        ),
        (
            "allowed_legal_bases = [\"contract\"]",
            "{\"user_id\":\"contract\"}\n",
        ),
        (
            "allowed_legal_bases = [\"consent\", \"contract\"]",
            "{\"user_id\":\"null_basis\"}\n{\"user_id\":\"consent\"}\n{\"user_id\":\"contract\"}\n",
        ),
    ] {
        let _ = std::fs::remove_dir_all(env.path("out"));
        filter_by(&env, "c.db", allowed).expect(0);
        assert_eq!(env.read_string("out/a.jsonl"), kept, "{allowed}");
    }

    env.sqlite(
        "bad.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, legal_basis, created_at) VALUES
             ('b1','x','model_training','granted',CAST(X'636f6e7472e16374' AS TEXT),'2025-01-01T00:00:00Z');",
        ),
    );
    let _ = std::fs::remove_dir_all(env.path("out"));
    let out = filter_by(&env, "bad.db", "").expect(2);
    assert!(
        out.stderr.contains("row id \"b1\"") && out.stderr.contains("legal_basis"),
        "{}",
        out.stderr
    );
}

#[test]
fn dpdp_cmp_rows_are_judged_by_grant_and_withdrawal() {
    let env = Env::new();
    env.sqlite(
        "d.db",
        "CREATE TABLE consents (id INTEGER PRIMARY KEY, user_id VARCHAR, purpose VARCHAR, granted BOOLEAN,
                                granted_at DATETIME, withdrawn_at DATETIME, metadata JSON);
         INSERT INTO consents VALUES
           (1,'live','model_training',1,'2025-01-01 10:00:00.000000',NULL,'{}'),
           (2,'gone','model_training',0,'2025-01-01 10:00:00.000000','2026-10-01 00:00:00.000000',NULL),
           (3,'later','model_training',0,'2025-01-01 10:00:00.000000','2026-12-01 00:00:00.000000',NULL),
           (4,'regrant','model_training',0,'2025-01-01 10:00:00.000000','2025-06-01 00:00:00.000000',NULL),
           (5,'regrant','model_training',1,'2025-07-01 10:00:00.000000',NULL,NULL),
           (6,'future','model_training',1,'2026-12-01 10:00:00.000000',NULL,NULL),
           (7,'asked','model_training',0,NULL,NULL,NULL);",
    );
    let dpdp = |subject: &str| {
        let out = env.run(&[
            "consent",
            "check",
            "--snapshot",
            "d.db",
            "--schema",
            "dpdp-cmp",
            "--subject",
            subject,
            "--purpose",
            "model_training",
            "--as-of",
            AS_OF,
        ]);
        out.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .split(" (")
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(dpdp("live"), "valid");
    assert_eq!(dpdp("gone"), "not valid: revoked");
    assert_eq!(dpdp("later"), "valid", "withdrawn only after as_of");
    assert_eq!(dpdp("regrant"), "valid");
    assert_eq!(dpdp("future"), "not valid: no_consent");
    assert_eq!(dpdp("asked"), "not valid: pending");
}

/// The same history stored three ways gives the same filtered output.
#[test]
fn one_history_in_each_schema_filters_alike() {
    let env = Env::new();
    env.sqlite(
        "records.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, granted_at, revoked_at, created_at) VALUES
             ('1','a','model_training','granted','2025-01-01T00:00:00Z',NULL,'2025-01-01T00:00:00Z'),
             ('2','b','model_training','granted','2025-01-01T00:00:00Z',NULL,'2025-01-01T00:00:00Z'),
             ('3','b','model_training','revoked',NULL,'2026-01-01T00:00:00Z','2026-01-01T00:00:00Z'),
             ('4','c','model_training','granted','2027-01-01T00:00:00Z',NULL,'2027-01-01T00:00:00Z');",
        ),
    );
    env.sqlite(
        "dpdp.db",
        "CREATE TABLE consents (id INTEGER PRIMARY KEY, user_id TEXT, purpose TEXT, granted INTEGER,
                                granted_at TEXT, withdrawn_at TEXT, metadata TEXT);
         INSERT INTO consents VALUES (1,'a','model_training',1,'2025-01-01 00:00:00',NULL,NULL),
                                     (2,'b','model_training',0,'2025-01-01 00:00:00','2026-01-01 00:00:00',NULL),
                                     (3,'c','model_training',1,'2027-01-01 00:00:00',NULL,NULL);",
    );
    env.sqlite(
        "custom.db",
        "CREATE TABLE ledger (event_id INTEGER PRIMARY KEY, subject TEXT, use_case TEXT, state TEXT, ts TEXT);
         INSERT INTO ledger VALUES (1,'a','model_training','granted','2025-01-01T00:00:00Z'),
                                   (2,'b','model_training','granted','2025-01-01T00:00:00Z'),
                                   (3,'b','model_training','revoked','2026-01-01T00:00:00Z'),
                                   (4,'c','model_training','granted','2027-01-01T00:00:00Z');",
    );
    let data =
        "{\"user_id\":\"a\",\"n\":1}\n{\"user_id\":\"b\",\"n\":2}\n{\"user_id\":\"c\",\"n\":3}\n";
    let consents = [
        "snapshot = \"../records.db\"\nschema = \"consent-records\"\npurpose = \"model_training\"",
        "snapshot = \"../dpdp.db\"\nschema = \"dpdp-cmp\"\npurpose = \"model_training\"",
        "snapshot = \"../custom.db\"\nschema = \"custom\"\npurpose = \"model_training\"\n\
         [consent.columns]\ntable = \"ledger\"\nid = \"event_id\"\nuser_id = \"subject\"\npurpose = \"use_case\"\n\
         status = \"state\"\ncreated_at = \"ts\"",
    ];
    for (i, consent) in consents.iter().enumerate() {
        let job = Env {
            dir: tempfile::tempdir_in(env.dir.path()).unwrap(),
        };
        job.write("data/x.jsonl", data);
        job.filter_job(consent, "user_id", "");
        job.run(&["run", "job.toml", "--no-progress"]).expect(0);
        assert_eq!(
            job.read_string("out/x.jsonl"),
            "{\"user_id\":\"a\",\"n\":1}\n",
            "schema #{i}"
        );
    }
}

#[test]
fn custom_column_names_are_checked_and_quoted() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        "CREATE TABLE \"odd table\" (\"user id\" TEXT, \"the purpose\" TEXT, st TEXT, t TEXT);
         INSERT INTO \"odd table\" VALUES ('u1','model_training','granted','2025-01-01T00:00:00Z');",
    );
    env.write("data/a.jsonl", "{\"user_id\":\"u1\"}\n");
    let custom = |user_col: &str| {
        format!(
            "snapshot = \"c.db\"\nschema = \"custom\"\npurpose = \"model_training\"\n[consent.columns]\n\
             table = \"odd table\"\nuser_id = {user_col:?}\npurpose = \"the purpose\"\nstatus = \"st\"\ncreated_at = \"t\""
        )
    };
    env.filter_job(&custom("user id"), "user_id", "");
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(env.read_string("out/a.jsonl"), "{\"user_id\":\"u1\"}\n");

    std::fs::remove_dir_all(env.path("out")).unwrap();
    env.filter_job(&custom("x\" FROM sqlite_schema; --"), "user_id", "");
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(
        out.stderr.contains("has no column") && out.stderr.contains("user id"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out").exists());
}

#[test]
fn a_hostile_snapshot_cannot_run_triggers_or_views() {
    let env = Env::new();
    let db = env.sqlite(
        "c.db",
        &records(
            "CREATE TABLE audit (n INTEGER);
             INSERT INTO consent_records (id, user_id, purpose, status, created_at)
                 VALUES ('1','u1','model_training','granted','2025-01-01T00:00:00Z');
             CREATE TRIGGER t AFTER INSERT ON consent_records BEGIN INSERT INTO audit VALUES (1); END;",
        ),
    );
    let before = std::fs::read(&db).unwrap();
    assert_eq!(verdict(&env, "c.db", "u1"), "valid");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the snapshot is never written"
    );

    // A view named like the table is not read as the table.
    env.sqlite(
        "v.db",
        "CREATE TABLE real (user_id TEXT, purpose TEXT, status TEXT, created_at TEXT);
         CREATE VIEW consent_records AS SELECT * FROM real;",
    );
    let out = env.run(&[
        "consent",
        "check",
        "--snapshot",
        "v.db",
        "--subject",
        "u",
        "--purpose",
        "p",
    ]);
    assert_eq!(out.code, 2, "{}{}", out.stdout, out.stderr);
}

#[test]
fn inspect_counts_records_subjects_and_verdicts() {
    let env = Env::new();
    env.sqlite(
        "c.db",
        &records(
            "INSERT INTO consent_records (id, user_id, purpose, status, created_at) VALUES
             ('1','a','model_training','granted','2025-01-01T00:00:00Z'),
             ('2','b','model_training','granted','2025-01-01T00:00:00Z'),
             ('3','b','model_training','revoked','2025-05-01T00:00:00Z'),
             ('4','a','analytics','granted','2024-12-31T00:00:00Z');",
        ),
    );
    let out = env
        .run(&[
            "consent",
            "inspect",
            "--snapshot",
            "c.db",
            "--purpose",
            "model_training",
            "--as-of",
            AS_OF,
            "--json",
        ])
        .expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["schema"], "consent-records");
    assert_eq!(v["records"], 4);
    assert_eq!(v["subjects"], 2);
    assert_eq!(v["earliest"], "2024-12-31T00:00:00Z");
    assert_eq!(v["latest"], "2025-05-01T00:00:00Z");
    assert_eq!(v["judged"]["subjects"]["valid"], 1);
    assert_eq!(v["judged"]["subjects"]["not_valid"]["revoked"], 1);
    let mt = v["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["purpose"] == "model_training")
        .unwrap();
    assert_eq!(mt["subjects"], 2);
    assert_eq!(
        mt["records_by_status"],
        serde_json::json!({"granted": 2, "revoked": 1})
    );
}

/// Tens of thousands of records, each subject's deciding record far from its first (an
/// append-only log), so a load that hands records between threads in batches must still
/// fold every subject's records together: the filter keeps exactly the valid subjects.
#[test]
fn a_large_log_folds_records_far_apart_into_the_right_verdicts() {
    let env = Env::new();
    let n = 30_000;
    env.sqlite(
        "c.db",
        &records(&format!(
            "WITH RECURSIVE i(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM i WHERE x + 1 < {n})
             INSERT INTO consent_records (id, user_id, purpose, status, derived_purposes, created_at)
             SELECT 'g' || x, 's' || x, 'model_training', 'granted', NULL, '2025-01-01T00:00:00Z' FROM i
             UNION ALL
             -- Every third subject revokes later; every third + 1 has an older revocation.
             SELECT 'r' || x, 's' || x, 'model_training', 'revoked', NULL,
                    CASE x % 3 WHEN 0 THEN '2025-06-01T00:00:00Z' ELSE '2024-06-01T00:00:00Z' END
               FROM i WHERE x % 3 IN (0, 1)
             UNION ALL
             -- Subjects covered only through a purpose that derives ours, or one that does not.
             SELECT 'd' || x, CASE x % 2 WHEN 0 THEN 'd' || x ELSE 'e' || x END, 'analytics', 'granted',
                    CASE x % 2 WHEN 0 THEN '[\"model_training\"]' ELSE '[\"other\"]' END,
                    '2025-01-01T00:00:00Z'
               FROM i WHERE x < 2000;"
        )),
    );
    let mut data = String::new();
    let mut expected = String::new();
    for x in 0..n {
        let line = format!("{{\"user_id\":\"s{x}\"}}\n");
        if x % 3 != 0 {
            expected += &line;
        }
        data += &line;
    }
    for x in 0..2000 {
        let id = if x % 2 == 0 {
            format!("d{x}")
        } else {
            format!("e{x}")
        };
        let line = format!("{{\"user_id\":\"{id}\"}}\n");
        if x % 2 == 0 {
            expected += &line;
        }
        data += &line;
    }
    env.write("data/x.jsonl", &data);
    env.filter_job(
        "snapshot = \"c.db\"\nschema = \"consent-records\"\npurpose = \"model_training\"",
        "user_id",
        "",
    );
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(env.read_string("out/x.jsonl"), expected);
    let st = env.last_statement();
    assert_eq!(
        st["predicate"]["consent"]["records_read"],
        n + n / 3 * 2 + 2000,
        "{}",
        st["predicate"]["consent"]
    );
}

#[test]
fn records_read_from_a_pending_write_ahead_log_are_flagged() {
    let env = Env::new();
    let db = env.sqlite(
        "c.db",
        &records(
            "PRAGMA journal_mode = WAL;
             INSERT INTO consent_records (id, user_id, purpose, status, created_at) VALUES
             ('1','u1','model_training','granted','2025-01-01T00:00:00Z');",
        ),
    );
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n",
    );
    filter_by(&env, "c.db", "").expect(0);
    let warnings = &env.last_statement()["predicate"]["consent"]["warnings"];
    assert_eq!(warnings, &serde_json::json!([]), "checkpointed on close");

    // A writer that stays open keeps its grant of u2 in the log, unmerged.
    let writer = rusqlite::Connection::open(&db).unwrap();
    writer
        .execute_batch(
            "PRAGMA wal_autocheckpoint = 0;
             INSERT INTO consent_records (id, user_id, purpose, status, created_at) VALUES
             ('2','u2','model_training','granted','2025-01-01T00:00:00Z');",
        )
        .unwrap();
    std::fs::remove_dir_all(env.path("out")).unwrap();
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(
        env.read_string("out/a.jsonl"),
        "{\"user_id\":\"u1\"}\n{\"user_id\":\"u2\"}\n",
        "SQLite reads the log"
    );
    let warnings = env.last_statement()["predicate"]["consent"]["warnings"].clone();
    let warnings = warnings.as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].as_str().unwrap().contains("write-ahead log"),
        "{warnings:?}"
    );
    assert!(
        !warnings[0].as_str().unwrap().contains("u2"),
        "{warnings:?}"
    );
    assert!(out.stdout.contains("write-ahead log"), "{}", out.stdout);

    // Through a symlink SQLite reads the log beside the target, and the warning looks there.
    std::os::unix::fs::symlink(&db, env.path("link.db")).unwrap();
    env.filter_job(
        "snapshot = \"link.db\"\npurpose = \"model_training\"",
        "user_id",
        "",
    );
    std::fs::remove_dir_all(env.path("out")).unwrap();
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    assert_eq!(env.read_string("out/a.jsonl").lines().count(), 2);
    let warnings = &env.last_statement()["predicate"]["consent"]["warnings"];
    assert_eq!(warnings.as_array().unwrap().len(), 1, "{warnings}");
    drop(writer);
}

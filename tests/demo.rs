//! The bundled demo: its fixtures agree with their readable sources, and the demo job keeps
//! exactly the rows its consent history allows.

use crate::util::*;

#[test]
fn binary_fixtures_match_their_text() {
    let demo = repo().join("fixtures/demo");
    assert_eq!(
        gunzip(&std::fs::read(demo.join("data/chat/2026-10.jsonl.gz")).unwrap()),
        std::fs::read(demo.join("text/chat.jsonl")).unwrap()
    );
    assert_eq!(
        unzstd(&std::fs::read(demo.join("data/support/2026-10.jsonl.zst")).unwrap()),
        std::fs::read(demo.join("text/support.jsonl")).unwrap()
    );
    let papers = read_all(&demo.join("data/papers/2026-10.parquet"));
    let text = std::fs::read_to_string(demo.join("text/papers.jsonl")).unwrap();
    for column in ["id", "user_id", "text", "lang"] {
        let want: Vec<Option<String>> = text
            .lines()
            .map(|l| {
                let row: serde_json::Value = serde_json::from_str(l).unwrap();
                row[column].as_str().map(String::from)
            })
            .collect();
        assert_eq!(
            text_column(&papers, column),
            want,
            "data/papers/2026-10.parquet is stale: run fixtures/demo/build.sh"
        );
    }
    let dump = |conn: &rusqlite::Connection| -> Vec<Vec<String>> {
        let mut stmt = conn
            .prepare("SELECT * FROM consent_records ORDER BY id")
            .unwrap();
        let n = stmt.column_count();
        stmt.query_map([], |r| {
            Ok((0..n)
                .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                .collect::<Vec<_>>())
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let built = rusqlite::Connection::open_in_memory().unwrap();
    built
        .execute_batch(&std::fs::read_to_string(demo.join("consent.sql")).unwrap())
        .unwrap();
    let shipped = rusqlite::Connection::open_with_flags(
        demo.join("consent.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    assert_eq!(
        dump(&shipped),
        dump(&built),
        "consent.db is stale: run fixtures/demo/build.sh"
    );
}

#[test]
fn demo_job_keeps_exactly_the_consented_rows() {
    let env = Env::new();
    let job = std::fs::read_to_string(repo().join("jobs/demo-filter.toml")).unwrap();
    let fixtures = repo().join("fixtures");
    let job = job
        .replace("../fixtures", path_str(&fixtures))
        .replace("../target/demo", path_str(env.dir.path()));
    env.write("demo-filter.toml", job);
    let out = env
        .run(&["run", "demo-filter.toml", "--no-progress"])
        .expect(0);
    assert!(out.stdout.contains("complete"), "{}", out.stdout);

    let forum = env.read_string("out/forum/2026-10.jsonl");
    let ids: Vec<&str> = forum.lines().map(|l| &l[7..12]).collect();
    assert_eq!(ids, ["f-001", "f-004", "f-005", "f-006", "f-012"]);
    assert!(
        forum.contains("{\"id\":\"f-004\", \"user_id\" : \"ivan\","),
        "bytes kept as written"
    );
    let chat = String::from_utf8(gunzip(&env.read("out/chat/2026-10.jsonl.gz"))).unwrap();
    assert_eq!(
        chat.lines().map(|l| &l[7..12]).collect::<Vec<_>>(),
        ["c-003", "c-005"]
    );
    let support = String::from_utf8(unzstd(&env.read("out/support/2026-10.jsonl.zst"))).unwrap();
    assert_eq!(
        support.lines().map(|l| &l[7..12]).collect::<Vec<_>>(),
        ["s-006"]
    );

    // The Parquet shard: its first row group keeps every row and is copied as it was
    // encoded; the second loses bob; the third (carol, expired, and a null author) goes.
    let papers = env.path("out/papers/2026-10.parquet");
    assert_eq!(
        paper_ids(&papers),
        ["p-001", "p-002", "p-003", "p-004", "p-006"]
    );
    assert_eq!(row_groups(&papers), [3, 2]);

    let p = &env.last_statement()["predicate"];
    assert_eq!(p["totals"]["rows_in"], 33);
    assert_eq!(p["totals"]["rows_kept"], 13);
    assert_eq!(
        p["totals"]["rows_dropped_by_reason"],
        serde_json::json!({
            "blank": 1, "malformed": 1, "missing_subject": 3, "invalid_subject": 1, "ambiguous_subject": 1,
            "legal_basis": 1, "category_missing": 1, "notice_outdated": 1, "expired": 2, "pending": 1,
            "revoked": 5, "no_consent": 2
        })
    );
    assert_eq!(p["consent"]["subjects"]["judged"], 14);
    assert_eq!(p["consent"]["subjects"]["valid"], 5);
}

/// The `id` column of a Parquet file, in row order.
fn paper_ids(path: &std::path::Path) -> Vec<String> {
    text_column(&read_all(path), "id")
        .into_iter()
        .map(Option::unwrap)
        .collect()
}

/// The row count of each row group of a Parquet file.
fn row_groups(path: &std::path::Path) -> Vec<i64> {
    use parquet::file::reader::FileReader;
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(path).unwrap())
            .unwrap();
    reader
        .metadata()
        .row_groups()
        .iter()
        .map(|rg| rg.num_rows())
        .collect()
}

/// Copies a directory tree (the demo cache) with std only.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn demo_erase_job_sweeps_the_filtered_output_and_the_cache() {
    let env = Env::new();
    let fixtures = repo().join("fixtures");
    for job in ["demo-filter.toml", "demo-erase.toml"] {
        let text = std::fs::read_to_string(repo().join("jobs").join(job)).unwrap();
        let text = text
            .replace("../fixtures", path_str(&fixtures))
            .replace("../target/demo", path_str(env.dir.path()));
        env.write(job, text);
    }
    env.run(&["run", "demo-filter.toml", "--no-progress"])
        .expect(0);
    copy_tree(&fixtures.join("demo/cache"), &env.path("cache"));
    let dry = env
        .run(&["run", "demo-erase.toml", "--no-progress", "--dry-run"])
        .expect(0);
    assert!(
        dry.stdout.contains("would      remove 2 of 5 rows from"),
        "{}",
        dry.stdout
    );
    assert!(
        env.path("cache/per-file/alice.vec").exists(),
        "a dry run changes nothing"
    );

    env.run(&["run", "demo-erase.toml", "--no-progress"])
        .expect(0);
    let forum = env.read_string("out/forum/2026-10.jsonl");
    assert_eq!(
        forum.lines().map(|l| &l[7..12]).collect::<Vec<_>>(),
        ["f-004", "f-006", "f-012"]
    );
    let chat = String::from_utf8(gunzip(&env.read("out/chat/2026-10.jsonl.gz"))).unwrap();
    assert_eq!(
        chat.lines().map(|l| &l[7..12]).collect::<Vec<_>>(),
        ["c-005"]
    );
    assert!(!env.path("cache/by-subject/alice").exists());
    assert!(env.path("cache/by-subject/ivan/embedding.txt").exists());
    assert!(
        !env.path("cache/per-file/alice.vec").exists()
            && !env.path("cache/per-file/42.vec").exists()
    );
    assert!(env.path("cache/per-file/niaj.vec").exists());
    assert_eq!(
        env.read_string("cache/table/vectors.jsonl"),
        "{\"user_id\":\"ivan\",\"doc\":\"f-004\",\"vector\":[0.40,-0.10,0.95]}\n"
    );
    let papers = env.path("out/papers/2026-10.parquet");
    assert_eq!(paper_ids(&papers), ["p-001", "p-002", "p-003"]);
    assert_eq!(
        row_groups(&papers),
        [3],
        "the emptied row group is left out"
    );
    let e = &env.last_statement()["predicate"]["erase"];
    assert_eq!(e["rows_removed"], 8);
    assert_eq!(e["verification"]["passed"], true);
    let reports = || std::fs::read_dir(env.path("reports")).unwrap().count();
    let before = reports();
    env.run(&["run", "demo-erase.toml", "--no-progress"])
        .expect(0);
    assert_eq!(
        env.last_statement()["predicate"]["erase"]["files_rewritten"],
        0
    );
    assert_eq!(reports(), before + 1);
    let files: Vec<String> = std::fs::read_dir(env.path("reports"))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".dsse.json"))
        .collect();
    // The erase job rewrote some of the filter job's outputs: their digests in the filter's
    // report are superseded by the erase's, not broken.
    let mut args = vec!["verify", "--chain", "--check-files"];
    args.extend(files.iter().map(String::as_str));
    env.run(&args).expect(0);
    let forum = env.path("out/forum/2026-10.jsonl");
    std::fs::write(&forum, env.read_string("out/forum/2026-10.jsonl") + "{}\n").unwrap();
    let out = env.run(&args).expect(3);
    assert!(
        out.stdout
            .contains("changed since 00000002-demo-erase.dsse.json"),
        "{}",
        out.stdout
    );
}

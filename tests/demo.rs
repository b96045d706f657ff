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

    let p = &env.last_statement()["predicate"];
    assert_eq!(p["totals"]["rows_in"], 25);
    assert_eq!(p["totals"]["rows_kept"], 8);
    assert_eq!(
        p["totals"]["rows_dropped_by_reason"],
        serde_json::json!({
            "blank": 1, "malformed": 1, "missing_subject": 2, "invalid_subject": 1, "ambiguous_subject": 1,
            "legal_basis": 1, "category_missing": 1, "notice_outdated": 1, "expired": 1, "pending": 1,
            "revoked": 4, "no_consent": 2
        })
    );
    assert_eq!(p["consent"]["subjects"]["judged"], 14);
    assert_eq!(p["consent"]["subjects"]["valid"], 5);
}

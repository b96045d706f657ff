//! CONTRACT §6: signed, chained reports that an auditor can check with or without consentry.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::util::*;

/// A job dir with a valid subject `u1` and a dropped canary; runs the job `runs` times,
/// clearing the output in between, and returns the report files in order.
fn env_with_reports(runs: usize) -> (Env, Vec<std::path::PathBuf>) {
    let env = Env::new();
    env.sqlite(
        "consent.db",
        &format!(
            "{RECORDS_TABLE} INSERT INTO consent_records (id, user_id, purpose, status, created_at)
             VALUES ('1','u1','model_training','granted','2025-01-01T00:00:00Z');"
        ),
    );
    env.write(
        "data/a.jsonl",
        "{\"user_id\":\"u1\",\"t\":1}\n{\"user_id\":\"CANARY-5e1d\",\"t\":2}\n",
    );
    env.filter_job(
        "snapshot = \"consent.db\"\npurpose = \"model_training\"",
        "user_id",
        "",
    );
    for _ in 0..runs {
        let _ = std::fs::remove_dir_all(env.path("out"));
        env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    }
    let reports = env.reports();
    (env, reports)
}

fn verify(env: &Env, extra: &[&str]) -> Output {
    let mut args = vec!["verify", "--chain"];
    args.extend_from_slice(extra);
    let files: Vec<String> = std::fs::read_dir(env.path("reports"))
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .filter(|p| p.ends_with(".dsse.json"))
        .collect();
    let mut files = files;
    files.sort();
    let refs: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend_from_slice(&refs);
    env.run(&args)
}

#[test]
fn reports_are_dsse_envelopes_over_in_toto_statements() {
    let (env, reports) = env_with_reports(1);
    assert_eq!(reports.len(), 1);
    assert!(reports[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("00000001-t"));
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&reports[0]).unwrap()).unwrap();
    assert_eq!(envelope["payloadType"], "application/vnd.in-toto+json");
    let keyid = envelope["signatures"][0]["keyid"].as_str().unwrap();
    let der = Command::new("openssl")
        .args([
            "pkey",
            "-pubin",
            "-in",
            path_str(&env.path("keys/signing.pub")),
            "-outform",
            "DER",
        ])
        .output();
    if let Some(der) = der.ok().filter(|o| o.status.success()) {
        use sha2::Digest;
        assert_eq!(
            keyid,
            hex::encode(sha2::Sha256::digest(&der.stdout)),
            "keyid is sha256 of the SPKI DER"
        );
    }
    let s = env.last_statement();
    assert_eq!(s["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(s["predicateType"], "https://consentry.dev/job-report/v1");
    assert_eq!(s["subject"][0]["name"], "out/a.jsonl");
    use sha2::Digest;
    assert_eq!(
        s["subject"][0]["digest"]["sha256"],
        hex::encode(sha2::Sha256::digest(env.read("out/a.jsonl")))
    );
    let p = &s["predicate"];
    assert_eq!(
        p["chain"],
        serde_json::json!({"sequence": 1, "previous_sha256": null})
    );
    assert_eq!(p["status"], "complete");
    assert_eq!(p["job"]["kind"], "filter");
    assert_eq!(
        p["inputs"][0]["rows_dropped"],
        serde_json::json!({"no_consent": 1})
    );
    verify(&env, &["--check-files"]).expect(0);
}

#[test]
fn the_readme_openssl_recipe_verifies_a_report() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let (env, reports) = env_with_reports(1);
    let script = format!(
        "set -e\ncd {dir}\nR={report}\n\
         jq -r .payload \"$R\" | base64 -d > payload.bin\n\
         T=$(jq -j .payloadType \"$R\")\n\
         {{ printf 'DSSEv1 %d %s %d ' \"${{#T}}\" \"$T\" \"$(wc -c < payload.bin)\"; cat payload.bin; }} > pae.bin\n\
         jq -r '.signatures[0].sig' \"$R\" | base64 -d > sig.bin\n\
         openssl pkeyutl -verify -pubin -inkey keys/signing.pub -rawin -in pae.bin -sigfile sig.bin\n",
        dir = path_str(env.dir.path()),
        report = path_str(&reports[0])
    );
    if Command::new("jq").arg("--version").output().is_err() {
        eprintln!("skipped: jq is not installed");
        return;
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Signature Verified Successfully"));
    // The same recipe rejects a payload changed by one byte.
    let tamper = script.replace(
        "cat payload.bin;",
        "sed 's/complete/partial_/' payload.bin;",
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&tamper)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn the_chain_names_every_tampering() {
    let (env, reports) = env_with_reports(4);
    assert_eq!(reports.len(), 4);
    verify(&env, &[]).expect(0);
    let original: Vec<Vec<u8>> = reports.iter().map(|r| std::fs::read(r).unwrap()).collect();
    let restore = || {
        for entry in std::fs::read_dir(env.path("reports")).unwrap() {
            let p = entry.unwrap().path();
            if p.to_string_lossy().ends_with(".dsse.json") {
                std::fs::remove_file(p).unwrap();
            }
        }
        for (r, bytes) in reports.iter().zip(&original) {
            std::fs::write(r, bytes).unwrap();
        }
    };

    // Altered: the payload of report 2 is edited (signature no longer matches).
    let mut env2: serde_json::Value = serde_json::from_slice(&original[1]).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload =
        String::from_utf8(b64.decode(env2["payload"].as_str().unwrap()).unwrap()).unwrap();
    let forged = payload.replace("\"rows_kept\":1", "\"rows_kept\":2");
    assert_ne!(forged, payload);
    env2["payload"] = b64.encode(forged).into();
    std::fs::write(&reports[1], serde_json::to_vec(&env2).unwrap()).unwrap();
    let out = verify(&env, &[]).expect(3);
    assert!(
        out.stdout.contains("00000002-t.dsse.json") && out.stdout.contains("signature"),
        "{}",
        out.stdout
    );
    restore();

    // Removed from the middle.
    std::fs::remove_file(&reports[1]).unwrap();
    let out = verify(&env, &[]).expect(3);
    assert!(
        out.stdout
            .contains("00000003-t.dsse.json: sequence 3 where 2 was expected"),
        "{}",
        out.stdout
    );
    restore();

    // Reordered: reports 2 and 3 swap names.
    std::fs::write(&reports[1], &original[2]).unwrap();
    std::fs::write(&reports[2], &original[1]).unwrap();
    let out = verify(&env, &[]).expect(3);
    assert!(
        out.stdout
            .contains("does not match its signed sequence number"),
        "{}",
        out.stdout
    );
    restore();

    // Duplicated: report 4 copied as a fifth.
    std::fs::write(env.path("reports/00000005-t.dsse.json"), &original[3]).unwrap();
    let out = verify(&env, &[]).expect(3);
    assert!(
        out.stdout
            .contains("00000005-t.dsse.json: sequence 4 where 5 was expected"),
        "{}",
        out.stdout
    );
    restore();
    verify(&env, &[]).expect(0);
}

#[test]
fn check_files_notices_a_changed_output() {
    let (env, _) = env_with_reports(1);
    verify(&env, &["--check-files"]).expect(0);
    std::fs::write(
        env.path("out/a.jsonl"),
        "{\"user_id\":\"u1\",\"t\":1}\n{\"injected\":1}\n",
    )
    .unwrap();
    let out = verify(&env, &["--check-files"]).expect(3);
    assert!(out.stdout.contains("out/a.jsonl changed"), "{}", out.stdout);
}

#[test]
fn a_report_signed_by_another_key_fails_against_a_pinned_key() {
    let (env, reports) = env_with_reports(1);
    let other = env.path("other");
    env.run(&["keygen", "--out", path_str(&other)]).expect(0);
    let out = env
        .run(&[
            "verify",
            "--pubkey",
            path_str(&other.join("signing.pub")),
            path_str(&reports[0]),
        ])
        .expect(3);
    assert!(out.stdout.contains("FAILED"), "{}", out.stdout);
    env.run(&[
        "verify",
        "--pubkey",
        path_str(&env.path("keys/signing.pub")),
        path_str(&reports[0]),
    ])
    .expect(0);
}

#[test]
fn a_key_that_cannot_be_read_is_a_bad_invocation_not_a_failed_report() {
    let (env, reports) = env_with_reports(1);
    for key in ["nowhere.pub", "keys/signing.key"] {
        let out = env
            .run(&["verify", "--pubkey", key, path_str(&reports[0])])
            .expect(2);
        assert!(out.stderr.contains("--pubkey"), "{key}: {}", out.stderr);
    }
}

/// A chain is signed by one key: a report signed by another, even one whose public key it
/// names beside it, fails the chain unless each key's reports are verified on their own.
#[test]
fn a_chain_whose_reports_are_signed_by_different_keys_fails_without_a_pinned_key() {
    let (env, _) = env_with_reports(1);
    env.run(&["keygen", "--out", "keys2"]).expect(0);
    let spec = env
        .read_string("job.toml")
        .replace("keys/signing.key", "keys2/signing.key");
    env.write("job.toml", spec);
    let _ = std::fs::remove_dir_all(env.path("out"));
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    let out = verify(&env, &[]).expect(3);
    assert!(
        out.stdout.contains("00000002-") && out.stdout.contains("a chain is signed by one key"),
        "{}",
        out.stdout
    );
}

fn sha256_of(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// Nothing in a chain shows that its newest reports were deleted; a head digest recorded
/// earlier (printed by each job and by `verify --chain`) does, for every report up to it.
#[test]
fn an_anchor_shows_that_no_report_up_to_it_was_removed() {
    let (env, reports) = env_with_reports(2);
    std::fs::remove_dir_all(env.path("out")).unwrap();
    let run = env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    let printed = run
        .stdout
        .split("report sha256 ")
        .nth(1)
        .map(|rest| rest.trim().to_string())
        .unwrap_or_else(|| panic!("the job prints its report's sha256:\n{}", run.stdout));
    let third = env.path("reports/00000003-t.dsse.json");
    let sum = Command::new("sha256sum").arg(&third).output().unwrap();
    let sum = String::from_utf8(sum.stdout).unwrap();
    assert_eq!(sum.split_whitespace().next(), Some(printed.as_str()));
    let out = verify(&env, &[]).expect(0);
    assert!(
        out.stdout
            .contains(&format!("00000003-t.dsse.json sha256 {printed}")),
        "verify --chain prints the head:\n{}",
        out.stdout
    );

    // One more job: the anchor is now inside the chain.
    std::fs::remove_dir_all(env.path("out")).unwrap();
    env.run(&["run", "job.toml", "--no-progress"]).expect(0);
    verify(&env, &["--anchor", &printed.to_uppercase()]).expect(0);
    // Removing reports newer than the anchor cannot be seen, by design...
    std::fs::remove_file(env.path("reports/00000004-t.dsse.json")).unwrap();
    verify(&env, &["--anchor", &printed]).expect(0);
    // ...but removing the anchored one can, though the chain left is unbroken.
    std::fs::remove_file(&third).unwrap();
    verify(&env, &[]).expect(0);
    let out = verify(&env, &["--anchor", &printed]).expect(3);
    assert!(
        out.stdout.contains(&format!("FAILED anchor {printed}"))
            && out.stdout.contains("removed or replaced"),
        "{}",
        out.stdout
    );
    let out = verify(&env, &["--anchor", &printed, "--json"]).expect(3);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["anchors"][0]["ok"], false);
    assert!(v["heads"][0]["report"]
        .as_str()
        .unwrap()
        .ends_with("00000002-t.dsse.json"));

    // A chain that fails offers no head to record.
    let first = env.path("reports/00000001-t.dsse.json");
    let mut bytes = std::fs::read(&first).unwrap();
    bytes.push(b' ');
    std::fs::write(&first, bytes).unwrap();
    let out = verify(&env, &[]).expect(3);
    assert!(!out.stdout.contains("head "), "{}", out.stdout);
    // Nor does an anchor it holds pass.
    let second = sha256_of(&env.path("reports/00000002-t.dsse.json"));
    let out = verify(&env, &["--anchor", &second, "--json"]).expect(3);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["anchors"][0]["ok"], false, "{v}");
    assert!(
        v["anchors"][0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("does not verify"),
        "{v}"
    );

    let out = verify(&env, &["--anchor", "abc"]).expect(2);
    assert!(out.stderr.contains("64 hex digits"), "{}", out.stderr);
    let out = env
        .run(&["verify", "--anchor", &printed, path_str(&reports[0])])
        .expect(2);
    assert!(out.stderr.contains("--chain"), "{}", out.stderr);
}

/// A FIFO or a device under a report's name must not hang verify or the next job.
#[test]
fn a_report_name_that_is_not_a_regular_file_fails_instead_of_hanging() {
    let (env, reports) = env_with_reports(1);
    let fifo = env.path("reports/00000002-x.dsse.json");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let out = verify(&env, &[]).expect(3);
    assert!(out.stdout.contains("not a regular file"), "{}", out.stdout);
    let out = env
        .run(&["verify", path_str(&fifo), path_str(&reports[0])])
        .expect(3);
    assert!(out.stdout.contains("not a regular file"), "{}", out.stdout);
    // The next job stops before it does anything (not after writing its outputs).
    let _ = std::fs::remove_dir_all(env.path("out"));
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(
        out.stderr.contains("00000002-x.dsse.json") && out.stderr.contains("not a regular file"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out").exists(), "no output written");
    std::fs::remove_file(&fifo).unwrap();
    std::fs::create_dir(&fifo).unwrap();
    env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(!env.path("out").exists(), "no output written");
}

#[test]
fn a_report_directory_that_is_a_file_stops_the_job_before_it_writes() {
    let (env, _) = env_with_reports(0);
    env.write("reports", "not a directory\n");
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(
        out.stderr.contains("reports") && out.stderr.contains("not a directory"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out").exists(), "no output written");
    assert_eq!(env.read_string("reports"), "not a directory\n");
    std::fs::remove_file(env.path("reports")).unwrap();
    std::os::unix::fs::symlink("nowhere", env.path("reports")).unwrap();
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(out.stderr.contains("reports"), "{}", out.stderr);
    assert!(!env.path("out").exists(), "no output written");
}

/// An output rewritten by a later job must match that job's report, and only a report of
/// the same key may vouch for it: one signed by another key (whose public key it names)
/// cannot make the earlier report's changed output pass.
#[test]
fn only_a_later_report_of_the_same_key_supersedes_an_outputs_digest() {
    let (env, reports) = env_with_reports(1);
    env.run(&["keygen", "--out", "keys2"]).expect(0);
    env.write("erase.txt", "u1\n");
    env.write(
        "erase.toml",
        "[job]\nname = \"e\"\nkind = \"erase\"\n\n[input]\npaths = [\"out\"]\n\
         subject_field = \"user_id\"\n\n[erase]\nsubjects_file = \"erase.txt\"\n\n\
         [report]\ndir = \"reports\"\nsigning_key = \"keys2/signing.key\"\n\
         pseudonym_key = \"keys2/pseudonym.key\"\n",
    );
    env.run(&["run", "erase.toml", "--no-progress"]).expect(0);
    let second = env.path("reports/00000002-e.dsse.json");
    let out = env
        .run(&[
            "verify",
            "--check-files",
            path_str(&reports[0]),
            path_str(&second),
        ])
        .expect(3);
    assert!(
        out.stdout
            .contains("out/a.jsonl changed since the report was signed"),
        "{}",
        out.stdout
    );
}

#[test]
fn keygen_writes_private_files_and_never_overwrites() {
    let env = Env::new();
    let dir = env.path("k");
    let out = env.run(&["keygen", "--out", path_str(&dir)]).expect(0);
    assert!(out.stdout.contains("key id"));
    let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("signing.key"), 0o600);
    assert_eq!(mode("pseudonym.key"), 0o600);
    assert_eq!(std::fs::read(dir.join("pseudonym.key")).unwrap().len(), 32);
    let before = std::fs::read(dir.join("signing.key")).unwrap();
    env.run(&["keygen", "--out", path_str(&dir)]).expect(2);
    assert_eq!(std::fs::read(dir.join("signing.key")).unwrap(), before);
}

#[test]
fn an_exposed_or_linked_signing_key_is_refused_before_any_work() {
    let (env, _) = env_with_reports(0);
    std::fs::set_permissions(
        env.path("keys/signing.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(out.stderr.contains("chmod 600"), "{}", out.stderr);
    assert!(!env.path("out").exists() && !env.path("reports").exists());

    std::fs::set_permissions(
        env.path("keys/signing.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::rename(env.path("keys/signing.key"), env.path("real.key")).unwrap();
    std::os::unix::fs::symlink(env.path("real.key"), env.path("keys/signing.key")).unwrap();
    let out = env.run(&["run", "job.toml", "--no-progress"]).expect(2);
    assert!(
        out.stderr.contains("symlink") || out.stderr.contains("symbolic link"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out").exists());
}

#[test]
fn no_raw_subject_id_leaves_the_process() {
    let (env, reports) = env_with_reports(1);
    let _ = std::fs::remove_dir_all(env.path("out"));
    let run = env.run(&["run", "job.toml", "--json"]).expect(0);
    let show = env
        .run(&["report", "show", path_str(&reports[0]), "--html", "r.html"])
        .expect(0);
    let mut seen = run.stdout + &run.stderr + &show.stdout + &show.stderr;
    for r in std::fs::read_dir(env.path("reports")).unwrap() {
        let bytes = std::fs::read(r.unwrap().path()).unwrap();
        seen += &String::from_utf8_lossy(&bytes);
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
            if let Some(p) = v["payload"].as_str() {
                use base64::Engine as _;
                seen += &String::from_utf8_lossy(
                    &base64::engine::general_purpose::STANDARD.decode(p).unwrap(),
                );
            }
        }
    }
    seen += &env.read_string("r.html");
    assert!(
        !seen.contains("CANARY-5e1d"),
        "the canary subject id leaked"
    );
    assert!(!seen.contains("u1\""), "a kept subject id leaked");
}

#[test]
fn report_show_writes_one_self_contained_page() {
    let (env, reports) = env_with_reports(1);
    let out = env
        .run(&["report", "show", path_str(&reports[0]), "--html", "r.html"])
        .expect(0);
    assert!(
        out.stdout.contains("filter job t: complete"),
        "{}",
        out.stdout
    );
    let html = env.read_string("r.html");
    assert!(html.starts_with("<!doctype html>") && html.contains("<svg"));
    assert!(!html.contains("<script"), "no script");
    assert!(
        !html.contains("src=") && !html.contains("<link") && !html.contains("@import"),
        "no external assets"
    );
    assert!(html.contains("no_consent"));
}

#[test]
fn jobs_writing_to_one_report_dir_at_once_keep_one_chain() {
    let (env, _) = env_with_reports(0);
    // Eight jobs with their own outputs, one report directory, started together.
    let mut children = Vec::new();
    for i in 0..8 {
        let job = env
            .read_string("job.toml")
            .replace("dir = \"out\"", &format!("dir = \"out{i}\""))
            .replace("name = \"t\"", &format!("name = \"t{i}\""));
        env.write(&format!("job{i}.toml"), job);
        let child = std::process::Command::new(BIN)
            .args(["run", &format!("job{i}.toml"), "--no-progress"])
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        children.push(child);
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let out = verify(&env, &[]).expect(0);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("ok     ") && l.contains(".dsse.json"))
            .count(),
        8
    );
    let mut sequences: Vec<u64> = std::fs::read_dir(env.path("reports"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.ends_with(".dsse.json")
                .then(|| name[..8].parse().unwrap())
        })
        .collect();
    sequences.sort();
    assert_eq!(sequences, (1..=8).collect::<Vec<u64>>());
}

#[test]
fn a_copy_of_a_running_jobs_spec_is_refused_and_runs_once_it_ends() {
    // Another run of the job, from another spec file, holds the job's run lock.
    let (env, _) = env_with_reports(1);
    std::fs::remove_dir_all(env.path("out")).unwrap();
    std::fs::copy(env.path("job.toml"), env.path("copy.toml")).unwrap();
    let lock = std::fs::File::create(env.path("reports/.consentry-run-t.lock")).unwrap();
    lock.lock().unwrap();
    let out = env.run(&["run", "copy.toml", "--no-progress"]).expect(2);
    assert!(
        out.stderr.contains("job t is already running")
            && out.stderr.contains(".consentry-run-t.lock"),
        "{}",
        out.stderr
    );
    assert!(!env.path("out").exists(), "nothing written");
    drop(lock);
    env.run(&["run", "copy.toml", "--no-progress"]).expect(0);
    assert_eq!(
        env.read_string("out/a.jsonl"),
        "{\"user_id\":\"u1\",\"t\":1}\n"
    );
}

#[test]
fn a_second_run_of_the_same_job_while_one_runs_is_refused() {
    let (env, _) = env_with_reports(0);
    let big: String = (0..200_000)
        .map(|i| format!("{{\"user_id\":\"u1\",\"n\":{i}}}\n"))
        .collect();
    env.write("data/big.jsonl", big);
    let mut first = std::process::Command::new(BIN)
        .args(["run", "job.toml", "--no-progress"])
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the first run holds its lock (it creates the report directory then).
    let start = std::time::Instant::now();
    while !env.path("reports").exists() && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let second = env.run(&["run", "job.toml", "--no-progress"]);
    let first = first.wait().unwrap();
    assert!(first.success());
    assert_eq!(second.code, 2, "{}", second.stderr);
    if second.stderr.contains("already exists") {
        // The first run finished before the second started: its outputs refuse the second.
        return;
    }
    assert!(
        second.stderr.contains("already running"),
        "{}",
        second.stderr
    );
}

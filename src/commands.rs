//! The commands besides `run`: keygen, verify, consent check/inspect, report show.
//!
//! Each resolves its flags, calls into the library and prints. `consent check` is the one
//! place that prints a subject id, because the operator typed it.

use std::io::Write;

use serde_json::{json, Value};

use crate::cli::{CheckArgs, InspectArgs, KeygenArgs, ShowArgs, SnapshotArgs, VerifyArgs};
use crate::consent::{self, Rules, SchemaKind};
use crate::error::{Error, IoContext, Result};
use crate::report::sign;
use crate::report::{render, verify as verifier};
use crate::time::Timestamp;
use crate::Exit;

/// Writes to stdout; a closed pipe (`consentry … | head`) is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write", "<stdout>".as_ref(), e))
        }
        _ => Ok(()),
    }
}

pub fn keygen(args: &KeygenArgs) -> Result<Exit> {
    let id = sign::keygen(&args.out).map_err(|e| Error::Key {
        path: args.out.clone(),
        message: e.to_string(),
    })?;
    emit(&format!(
        "wrote {dir}/{} (secret, 0600), {dir}/{} (public) and {dir}/{} (secret, 0600)\nkey id {id}\n",
        sign::SIGNING_KEY_FILE,
        sign::PUBLIC_KEY_FILE,
        sign::PSEUDONYM_KEY_FILE,
        dir = args.out.display()
    ))?;
    Ok(Exit::Ok)
}

pub fn verify(args: &VerifyArgs) -> Result<Exit> {
    // A key that cannot be read is a bad invocation (exit 2), not a report that failed.
    if let Some(p) = &args.pubkey {
        crate::report::sign::Verifier::load(p)
            .map_err(|e| Error::Usage(format!("--pubkey {}: {e}", p.display())))?;
    }
    let anchors = args
        .anchor
        .iter()
        .map(|a| {
            let hex = a.to_ascii_lowercase();
            match hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                true => Ok(hex),
                false => Err(Error::Usage(format!(
                    "--anchor {a:?}: expected a sha256 (64 hex digits)"
                ))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let opts = verifier::Options {
        pubkey: args.pubkey.as_deref(),
        chain: args.chain,
        check_files: args.check_files,
        anchors: &anchors,
    };
    let result = verifier::verify(&args.reports, &opts);
    if args.json {
        let mut v = serde_json::to_value(&result).unwrap_or(Value::Null);
        v["ok"] = Value::Bool(result.ok());
        emit(&format!("{v}\n"))?;
    } else {
        let mut text = String::new();
        let findings = [
            ("", &result.reports),
            ("chain ", &result.chains),
            ("anchor ", &result.anchors),
        ];
        for (kind, list) in findings {
            for f in list {
                let verdict = if f.ok { "ok    " } else { "FAILED" };
                text += &format!("{verdict} {kind}{}\n", f.report);
                for p in &f.problems {
                    text += &format!("       {p}\n");
                }
            }
        }
        for h in &result.heads {
            text += &format!("head   {} sha256 {}\n", h.report, h.sha256);
        }
        for id in &result.key_ids {
            text += &format!("key    {id}\n");
        }
        if !result.pinned {
            text +=
                "note   the public key was read from where each report says it is; anyone who can \
                     write there could swap it: pass --pubkey with the key you trust\n";
        }
        emit(&text)?;
    }
    Ok(if result.ok() {
        Exit::Ok
    } else {
        Exit::VerifyFailed
    })
}

fn schema(args: &SnapshotArgs) -> Result<Option<SchemaKind>> {
    match args.schema.as_deref() {
        None => Ok(None),
        Some(name) => SchemaKind::from_name(name).map(Some).ok_or_else(|| {
            Error::Usage(format!(
                "--schema {name:?}: expected consent-records or dpdp-cmp (custom layouts need a job spec)"
            ))
        }),
    }
}

fn instant(s: Option<&str>) -> Result<Timestamp> {
    match s {
        None => Ok(Timestamp::now()),
        Some(s) => Timestamp::parse(s).map_err(|e| Error::Usage(format!("--as-of {s:?}: {e}"))),
    }
}

pub fn consent_check(args: &CheckArgs) -> Result<Exit> {
    let as_of = instant(args.as_of.as_deref())?;
    let kind = schema(&args.snapshot)?;
    let e = consent::explain(
        &args.snapshot.snapshot,
        kind.as_ref(),
        &args.subject,
        &args.purpose,
        as_of,
        &Rules::default(),
    )?;
    if args.json {
        let v = json!({
            "subject": args.subject,
            "purpose": e.purpose,
            "as_of": e.as_of,
            "schema": e.schema,
            "valid": e.verdict.is_valid(),
            "reason": if e.verdict.is_valid() { Value::Null } else { Value::from(e.verdict.as_str()) },
            "deciding_record": e.deciding_record,
            "records": e.records,
        });
        emit(&format!("{v}\n"))?;
    } else {
        let mut text = match e.verdict.is_valid() {
            true => "valid".to_string(),
            false => format!("not valid: {}", e.verdict),
        };
        if let Some(id) = &e.deciding_record {
            text += &format!(" (decided by record {id})");
        }
        text += &format!(
            "\n  subject {:?}, purpose {:?}, as of {}, schema {}\n",
            args.subject, e.purpose, e.as_of, e.schema
        );
        for r in &e.records {
            text += &format!(
                "  record {} ({}) at {}: {}\n",
                r.id, r.purpose, r.at, r.verdict
            );
        }
        emit(&text)?;
    }
    Ok(if e.verdict.is_valid() {
        Exit::Ok
    } else {
        Exit::Partial
    })
}

pub fn consent_inspect(args: &InspectArgs) -> Result<Exit> {
    let kind = schema(&args.snapshot)?;
    let info = consent::inspect(&args.snapshot.snapshot, kind.as_ref())?;
    let judged = match &args.purpose {
        None => None,
        Some(purpose) => {
            let as_of = instant(args.as_of.as_deref())?;
            let schema = match &kind {
                Some(k) => k.clone(),
                None => SchemaKind::from_name(info.schema).unwrap_or(SchemaKind::ConsentRecords),
            };
            let snap = consent::load(
                &args.snapshot.snapshot,
                &schema,
                purpose,
                as_of,
                &Rules::default(),
            )?;
            Some((purpose.clone(), as_of, snap.counts()))
        }
    };
    if args.json {
        let mut v = serde_json::to_value(&info).unwrap_or(Value::Null);
        if let Some((purpose, as_of, counts)) = &judged {
            v["judged"] = json!({"purpose": purpose, "as_of": as_of, "subjects": counts});
        }
        emit(&format!("{v}\n"))?;
        return Ok(Exit::Ok);
    }
    let mut text = format!(
        "{}\n  schema   {} (table {})\n  sha256   {}\n  records  {}\n  subjects {}\n",
        info.file.path.display(),
        info.schema,
        info.table,
        info.file.sha256,
        info.records,
        info.subjects
    );
    if let (Some(a), Some(b)) = (info.earliest, info.latest) {
        text += &format!("  events   {a} .. {b}\n");
    }
    for p in &info.purposes {
        let statuses: Vec<String> = p
            .records_by_status
            .iter()
            .map(|(s, n)| format!("{s} {n}"))
            .collect();
        text += &format!(
            "  purpose  {}: {} subjects; records {}\n",
            p.purpose,
            p.subjects,
            statuses.join(", ")
        );
    }
    if let Some((purpose, as_of, counts)) = judged {
        let not: Vec<String> = counts
            .not_valid
            .iter()
            .map(|(v, n)| format!("{v} {n}"))
            .collect();
        text +=
            &format!(
            "  judged   {purpose} at {as_of}: {} subjects with records, {} valid; not valid: {}\n",
            counts.judged,
            counts.valid,
            if not.is_empty() { "none".into() } else { not.join(", ") }
        );
    }
    emit(&text)?;
    Ok(Exit::Ok)
}

/// Reads a report's statement without verifying it (`verify` is for that).
fn read_statement(path: &std::path::Path) -> Result<Value> {
    let bytes = std::fs::read(path).at("cannot read report", path)?;
    crate::report::read_unverified(&bytes).map_err(|m| Error::Input {
        path: path.to_path_buf(),
        message: m,
    })
}

pub fn report_show(args: &ShowArgs) -> Result<Exit> {
    let statement = read_statement(&args.report)?;
    let mut text = render::summary(&statement, Some(&args.report.display().to_string()), None);
    text += "  (not verified here: run `consentry verify` to check the signature)\n";
    if let Some(out) = &args.html {
        std::fs::write(out, render::html(&statement)).at("cannot write", out)?;
        text += &format!("  html       {}\n", out.display());
    }
    emit(&text)?;
    Ok(Exit::Ok)
}

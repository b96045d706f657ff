//! Reports for people: the one-screen text summary and the self-contained HTML page.
//!
//! Both render the signed statement as JSON (`serde_json::Value`), so `report show` needs
//! nothing but the report file and shows exactly what was signed.

use std::fmt::Write as _;

use serde_json::Value;

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// `n` and its noun: "1 file", "2 files".
fn count(v: &Value, one: &str, many: &str) -> String {
    let k = n(v);
    format!("{k} {}", if k == 1 { one } else { many })
}

fn reasons(v: &Value) -> String {
    let parts: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, c)| format!("{k} {}", n(c)))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// The one-screen summary of a statement's predicate. `report` is where it was written.
pub fn summary(statement: &Value, report: Option<&str>, report_sha256: Option<&str>) -> String {
    let p = &statement["predicate"];
    let job = &p["job"];
    let t = &p["totals"];
    let mut out = String::new();
    let dry = if job["dry_run"] == Value::Bool(true) {
        " (dry run: nothing written)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "consentry {} job {}: {}{dry}",
        s(&job["kind"]),
        s(&job["name"]),
        s(&p["status"])
    );
    let _ = writeln!(out, "  as of      {}", s(&job["as_of"]));
    if let Some(c) = p.get("consent").filter(|c| !c.is_null()) {
        let _ = writeln!(
            out,
            "  consent    {} ({}, purpose {})",
            s(&c["path"]),
            s(&c["schema"]),
            s(&c["purpose"])
        );
        let subj = &c["subjects"];
        let _ = writeln!(
            out,
            "             {} judged: {} valid; not valid: {}",
            count(&subj["judged"], "subject", "subjects"),
            n(&subj["valid"]),
            reasons(&subj["not_valid"])
        );
        for w in c["warnings"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "             warning: {}", s(w));
        }
    }
    let failed = n(&t["files_failed"]);
    let _ = writeln!(
        out,
        "  inputs     {}{}, {}: {} kept, {} dropped",
        count(&t["files"], "file", "files"),
        if failed > 0 {
            format!(" ({failed} failed)")
        } else {
            String::new()
        },
        count(&t["rows_in"], "row", "rows"),
        n(&t["rows_kept"]),
        n(&t["rows_dropped"])
    );
    let _ = writeln!(
        out,
        "  dropped    {}",
        reasons(&t["rows_dropped_by_reason"])
    );
    if let Some(e) = p.get("erase").filter(|e| !e.is_null()) {
        erase_summary(&mut out, e, p);
    }
    let outputs = statement["subject"].as_array().map_or(0, Vec::len);
    let _ = writeln!(
        out,
        "  outputs    {}, {}",
        count(&outputs.into(), "file", "files"),
        count(&t["bytes_out"], "byte", "bytes")
    );
    let skipped = &p["skipped"];
    let symlinks = skipped["symlinks"].as_array().map_or(0, Vec::len);
    if symlinks > 0 {
        let _ = writeln!(out, "  skipped    {symlinks} symlinks (not followed)");
    }
    if let Some(r) = report {
        let _ = writeln!(out, "  report     {r}");
    }
    if n(&p["chain"]["sequence"]) > 0 {
        let _ = write!(out, "  chain      sequence {}", s(&p["chain"]["sequence"]));
        if let Some(sha) = report_sha256 {
            let _ = write!(out, ", report sha256 {sha}");
        }
        let _ = writeln!(out);
    }
    for problem in p["problems"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  problem    {}", s(problem));
    }
    out
}

fn erase_summary(out: &mut String, e: &Value, p: &Value) {
    let dry = p["job"]["dry_run"] == Value::Bool(true);
    let _ = writeln!(
        out,
        "  erase      {} ({} from the subjects file, {} revoked); {} {}; {} {}, {} untouched, {} failed",
        count(
            &e["subjects"].as_array().map_or(0, Vec::len).into(),
            "subject",
            "subjects"
        ),
        n(&e["subjects_from_file"]),
        n(&e["subjects_from_revocations"]),
        count(&e["rows_removed"], "row", "rows"),
        if dry { "to remove" } else { "removed" },
        count(&e["files_rewritten"], "file", "files"),
        if dry { "to rewrite" } else { "rewritten" },
        n(&e["files_untouched"]),
        n(&e["files_failed"])
    );
    if dry {
        for f in p["inputs"].as_array().into_iter().flatten() {
            let erased = n(&f["rows_dropped"]["erased"]);
            if erased > 0 {
                let _ = writeln!(
                    out,
                    "  would      remove {erased} of {} rows from {}",
                    n(&f["rows_in"]),
                    s(&f["path"])
                );
            }
        }
    }
    for c in e["caches"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  cache      {} ({}): {} {}, {} none",
            s(&c["path"]),
            s(&c["layout"]),
            if dry { "would remove" } else { "removed" },
            count(&c["entries_removed"], "entry", "entries"),
            count(&c["subjects_absent"], "subject had", "subjects had")
        );
    }
    let v = &e["verification"];
    if !dry {
        let _ = writeln!(
            out,
            "  verified   re-read {} and {}: {} and {} of erased subjects left ({})",
            count(&v["files_checked"], "rewritten file", "rewritten files"),
            count(&v["caches_checked"], "cache", "caches"),
            count(&v["residual_rows"], "row", "rows"),
            count(&v["residual_entries"], "entry", "entries"),
            if v["passed"] == Value::Bool(true) {
                "passed"
            } else {
                "FAILED"
            }
        );
    }
    if e["resumed"] == Value::Bool(true) {
        let _ = writeln!(
            out,
            "  resumed    this run finished the work of an interrupted run of the same job"
        );
    }
}

fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One self-contained HTML page: no external assets, no script.
pub fn html(statement: &Value) -> String {
    let p = &statement["predicate"];
    let job = &p["job"];
    let t = &p["totals"];
    let mut out = String::new();
    let title = format!(
        "consentry report: {} ({})",
        s(&job["name"]),
        s(&p["status"])
    );
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
         body{{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#f4f4f4}}\
         .partial{{color:#b00}}.complete{{color:#070}}</style></head><body>",
        esc(&title)
    );
    let _ = write!(
        out,
        "<h1>{}</h1><p class=\"{}\">status: <b>{}</b></p>",
        esc(&format!(
            "consentry {} job {}",
            s(&job["kind"]),
            s(&job["name"])
        )),
        esc(&s(&p["status"])),
        esc(&s(&p["status"]))
    );
    out.push_str("<h2>Job</h2><table>");
    for key in [
        "id",
        "as_of",
        "started_at",
        "finished_at",
        "spec_path",
        "spec_sha256",
    ] {
        let _ = write!(
            out,
            "<tr><th>{}</th><td>{}</td></tr>",
            esc(key),
            esc(&s(&job[key]))
        );
    }
    let _ = write!(
        out,
        "<tr><th>tool</th><td>{} {}</td></tr></table>",
        esc(&s(&job["tool"]["name"])),
        esc(&s(&job["tool"]["version"]))
    );
    if let Some(c) = p.get("consent").filter(|c| !c.is_null()) {
        out.push_str("<h2>Consent snapshot</h2><table>");
        for key in ["path", "sha256", "schema", "purpose", "records_read"] {
            let _ = write!(
                out,
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(key),
                esc(&s(&c[key]))
            );
        }
        let subj = &c["subjects"];
        let _ = write!(
            out,
            "<tr><th>subjects</th><td>{} judged, {} valid; not valid: {}</td></tr></table>",
            n(&subj["judged"]),
            n(&subj["valid"]),
            esc(&reasons(&subj["not_valid"]))
        );
    }
    out.push_str("<h2>Totals</h2><table>");
    for key in [
        "files",
        "files_failed",
        "rows_in",
        "rows_kept",
        "rows_dropped",
        "bytes_in",
        "bytes_out",
    ] {
        let _ = write!(out, "<tr><th>{}</th><td>{}</td></tr>", esc(key), n(&t[key]));
    }
    out.push_str("</table><h2>Dropped rows by reason</h2>");
    out.push_str(&bar_chart(&t["rows_dropped_by_reason"]));
    out.push_str("<h2>Files</h2><table><tr><th>path</th><th>format</th><th>status</th><th>rows in</th><th>kept</th><th>dropped by reason</th><th>sha256 before</th><th>output sha256</th><th>error</th></tr>");
    for f in p["inputs"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td></tr>",
            esc(&s(&f["path"])),
            esc(&s(&f["format"])),
            esc(&s(&f["status"])),
            n(&f["rows_in"]),
            n(&f["rows_kept"]),
            esc(&reasons(&f["rows_dropped"])),
            esc(&s(&f["sha256_before"])),
            esc(&s(&f["output"]["sha256"])),
            esc(&s(&f["error"]))
        );
    }
    out.push_str("</table>");
    let problems: Vec<String> = p["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    if !problems.is_empty() {
        out.push_str("<h2>Problems</h2><ul>");
        for problem in problems {
            let _ = write!(out, "<li>{}</li>", esc(&problem));
        }
        out.push_str("</ul>");
    }
    let _ = writeln!(
        out,
        "<h2>Chain</h2><p>sequence {}, previous report sha256 <code>{}</code></p></body></html>",
        esc(&s(&p["chain"]["sequence"])),
        esc(&s(&p["chain"]["previous_sha256"]))
    );
    out
}

/// A horizontal bar chart as inline SVG.
fn bar_chart(counts: &Value) -> String {
    let rows: Vec<(String, u64)> = counts
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), n(v)))
        .collect();
    if rows.is_empty() {
        return "<p>No rows were dropped.</p>".into();
    }
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1);
    let (bar_w, row_h) = (400.0, 24.0);
    let height = rows.len() as f64 * row_h + 8.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"720\" height=\"{height}\" role=\"img\" aria-label=\"dropped rows by reason\">"
    );
    for (i, (reason, count)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 4.0;
        let w = (*count as f64 / max as f64 * bar_w).max(1.0);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{ty}\" font-size=\"13\">{label}</text><rect x=\"170\" y=\"{y}\" width=\"{w:.1}\" height=\"18\" fill=\"#c0504d\"/><text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"13\">{count}</text>",
            ty = y + 14.0,
            label = esc(reason),
            tx = 176.0 + w,
        );
    }
    svg.push_str("</svg>");
    svg
}

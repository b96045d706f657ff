//! Snapshot loading at platform scale: `consent::load` opening, hashing and judging a
//! `consent-records` snapshot of 10,000,000 records over 5,000,000 subjects (`u%08d`).
//!
//! The snapshot is generated outside the timed loop from a fixed seed, once, and cached as
//! `target/bench-data/snapshot-10m.db` (under `$CARGO_TARGET_DIR` when that is set). It is
//! written under a temporary name and renamed into place, and it carries its generator
//! version and expected counts in a `bench_meta` table, so an interrupted or outdated
//! generation is never reused. `CONSENTRY_BENCH_RECORDS=<n>` scales it down (subjects = n/2).
//!
//! The mix is an append-only consent log, in `created_at` order (so a subject's records are
//! scattered through the file, as in a real log): grants (some with an expiry), revocations after
//! grants, expired grants and renewals, pending records, a revocation written after `as_of`
//! (ignored), and a second purpose, `analytics`, for some subjects, ~2% of whose records list
//! `model_training` in `derived_purposes`. Timestamps are ISO-8601 `...Z` text. Each subject's
//! scenario fixes its verdict, so every iteration asserts the judged and valid subject counts
//! and the records read, and the bench cannot time a no-op.
//!
//! The requirement it measures: loaded and ready to judge in under 10 s, peak memory under
//! 1 GB. Before timing, one untimed load checks the counts and prints the process's peak RSS
//! during that load (Linux: `/proc/self/clear_refs`, then `VmHWM`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;

use common::Rng;
use consentry::consent::{self, Rules, SchemaKind};
use consentry::time::Timestamp;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use rusqlite::{params, Connection, OpenFlags};

/// Bump when the generated data changes, so a cached file from an older generator is rebuilt.
const GENERATOR_VERSION: i64 = 2;
const SEED: u64 = 0x5E_EDC0_5E17;
const DEFAULT_RECORDS: u64 = 10_000_000;

const AS_OF: &str = "2026-11-01T00:00:00Z";
const AS_OF_S: i64 = 1_793_491_200;
const DAY: i64 = 86_400;
/// First events fall in [2023-01-01, 2026-01-01); later events of a subject follow within
/// weeks, so everything but the deliberately late revocations is before `AS_OF`.
const T_START: i64 = 1_672_531_200;
const T_END: i64 = 1_767_225_600;

const MT: &str = "model_training";
const AN: &str = "analytics";

/// A first event time.
fn start(rng: &mut Rng) -> i64 {
    T_START + rng.below((T_END - T_START) as u64) as i64
}

/// The gap to a subject's next event: one to sixty days.
fn step(rng: &mut Rng) -> i64 {
    DAY + rng.below(59 * DAY as u64) as i64
}

/// What generation produced, and what loading it must find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Expect {
    records: u64,
    subjects: u64,
    /// Records at or before `AS_OF` (all are of a covering purpose).
    read: u64,
    judged: u64,
    valid: u64,
    /// Analytics records, and those of them listing `model_training` as derived.
    analytics: u64,
    derived: u64,
}

/// One consent event, as a row of `consent_records` (other columns are filled per row).
struct Event {
    purpose: &'static str,
    status: &'static str,
    granted_at: Option<i64>,
    revoked_at: Option<i64>,
    expiry_at: Option<i64>,
    derived: bool,
    created_at: i64,
}

fn grant(purpose: &'static str, t: i64, expiry_at: Option<i64>, derived: bool) -> Event {
    Event {
        purpose,
        status: "granted",
        granted_at: Some(t),
        revoked_at: None,
        expiry_at,
        derived,
        created_at: t,
    }
}

fn revoke(purpose: &'static str, granted_at: i64, t: i64) -> Event {
    Event {
        purpose,
        status: "revoked",
        granted_at: Some(granted_at),
        revoked_at: Some(t),
        expiry_at: None,
        derived: false,
        created_at: t,
    }
}

fn pending(purpose: &'static str, t: i64) -> Event {
    Event {
        purpose,
        status: "pending",
        granted_at: None,
        revoked_at: None,
        expiry_at: None,
        derived: false,
        created_at: t,
    }
}

/// Picks one scenario of exactly `k` (1..=4) records for a subject, pushes its events, and
/// returns whether the subject is judged for `model_training` and whether it is valid.
fn scenario(k: u64, rng: &mut Rng, ev: &mut Vec<Event>) -> (bool, bool) {
    let t0 = start(rng);
    let t1 = t0 + step(rng);
    let t2 = t1 + step(rng);
    let t3 = t2 + step(rng);
    let r = rng.below(1000);
    match k {
        1 if r < 550 => {
            // A grant, most without an expiry, some expiring well after as_of.
            let expiry = rng
                .chance(300)
                .then(|| AS_OF_S + DAY * (30 + rng.below(700) as i64));
            ev.push(grant(MT, t0, expiry, false));
            (true, true)
        }
        1 if r < 700 => {
            ev.push(pending(MT, t0));
            (true, false)
        }
        1 if r < 850 => {
            // Expired half a year after the grant, before as_of.
            ev.push(grant(MT, t0, Some(t0 + 180 * DAY), false));
            (true, false)
        }
        1 => {
            // Analytics only, deriving nothing: not a model_training subject at all.
            ev.push(grant(AN, t0, None, false));
            (false, false)
        }
        2 if r < 400 => {
            ev.push(grant(MT, t0, None, false));
            ev.push(revoke(MT, t0, t1));
            (true, false)
        }
        2 if r < 700 => {
            ev.push(grant(MT, t0, None, false));
            ev.push(grant(AN, t1, None, false));
            (true, true)
        }
        2 if r < 900 => {
            ev.push(pending(MT, t0));
            ev.push(grant(MT, t1, None, false));
            (true, true)
        }
        2 => {
            // A revocation written after as_of: ignored, the grant stands.
            ev.push(grant(MT, t0, None, false));
            ev.push(revoke(MT, t0, AS_OF_S + DAY * (1 + rng.below(60) as i64)));
            (true, true)
        }
        3 if r < 450 => {
            ev.push(grant(MT, t0, None, false));
            ev.push(revoke(MT, t0, t1));
            ev.push(grant(MT, t2, None, false));
            (true, true)
        }
        3 if r < 700 => {
            // Expired, then renewed after the expiry.
            let renewed = t0 + 180 * DAY + step(rng);
            ev.push(grant(MT, t0, Some(t0 + 180 * DAY), false));
            ev.push(grant(MT, renewed, None, false));
            ev.push(grant(AN, t1, None, false));
            (true, true)
        }
        3 if r < 975 => {
            // Analytics granted and revoked; it derives nothing, so model_training stands.
            ev.push(grant(MT, t0, None, false));
            ev.push(grant(AN, t1, None, false));
            ev.push(revoke(AN, t1, t2));
            (true, true)
        }
        3 => {
            // Analytics derives model_training; revoking analytics later revokes it too.
            ev.push(grant(MT, t0, None, false));
            ev.push(grant(AN, t1, None, true));
            ev.push(revoke(AN, t1, t2));
            (true, false)
        }
        _ if r < 600 => {
            ev.push(grant(MT, t0, None, false));
            ev.push(revoke(MT, t0, t1));
            ev.push(grant(AN, t0 + DAY, None, false));
            ev.push(revoke(AN, t0 + DAY, t2));
            (true, false)
        }
        _ if r < 975 => {
            ev.push(pending(MT, t0));
            ev.push(grant(MT, t1, None, false));
            ev.push(grant(AN, t2, None, false));
            ev.push(grant(AN, t3, None, false));
            (true, true)
        }
        _ => {
            // model_training only through analytics' derived purposes; the latest grant decides.
            ev.push(grant(AN, t0, None, true));
            ev.push(revoke(AN, t0, t1));
            ev.push(grant(AN, t2, None, true));
            ev.push(grant(AN, t3, None, false));
            (true, true)
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for Unix seconds (days-from-civil inverse, proleptic Gregorian).
fn iso(secs: i64, out: &mut [u8; 20]) -> &str {
    let (days, rem) = (secs.div_euclid(DAY), secs.rem_euclid(DAY));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let put = |out: &mut [u8; 20], at: usize, width: usize, mut v: i64| {
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(out, 0, 4, y);
    put(out, 5, 2, m);
    put(out, 8, 2, d);
    put(out, 11, 2, rem / 3600);
    put(out, 14, 2, rem / 60 % 60);
    put(out, 17, 2, rem % 60);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ] {
        out[at] = c;
    }
    std::str::from_utf8(out).expect("ASCII")
}

/// Unix seconds of 2020-01-01: events are kept as `u32` seconds after it while sorting.
const EPOCH: i64 = 1_577_836_800;

/// An event as kept for sorting: 24 bytes, so 10M events take 240 MB while generating.
#[derive(Clone, Copy)]
struct Packed {
    created_at: u32,
    user: u32,
    /// 0 for NULL.
    granted_at: u32,
    revoked_at: u32,
    expiry_at: u32,
    /// Bit 0: analytics; bits 1-2: status (0 granted, 1 revoked, 2 pending); bit 3: derived.
    flags: u8,
}

const STATUSES: [&str; 3] = ["granted", "revoked", "pending"];

fn pack(user: u32, ev: &Event) -> Packed {
    let t = |v: i64| u32::try_from(v - EPOCH).expect("event time between 2020 and 2156");
    let opt = |v: Option<i64>| v.map_or(0, t);
    let status = STATUSES.iter().position(|s| *s == ev.status).unwrap() as u8;
    Packed {
        created_at: t(ev.created_at),
        user,
        granted_at: opt(ev.granted_at),
        revoked_at: opt(ev.revoked_at),
        expiry_at: opt(ev.expiry_at),
        flags: u8::from(ev.purpose == AN) | status << 1 | u8::from(ev.derived) << 3,
    }
}

/// Writes the snapshot to `path` and returns what loading it must find.
///
/// Every subject's events are drawn first, then written in `created_at` order (ties by
/// subject), as an append-only log holds them: one subject's records are scattered through
/// the file, not adjacent.
fn generate(path: &Path, records: u64) -> rusqlite::Result<Expect> {
    let subjects = records / 2;
    let mut expect = Expect {
        records,
        subjects,
        ..Expect::default()
    };
    let mut rng = Rng(SEED);
    let mut log: Vec<Packed> = Vec::with_capacity(records as usize);
    let mut events = Vec::with_capacity(4);
    for s in 0..subjects {
        // 1, 2, 3 or 4 records (40/30/20/10%: two on average), bounded so that every
        // remaining subject gets one to four and the total comes out exact.
        let left = records - log.len() as u64;
        let others = subjects - s - 1;
        let k = match rng.below(10) {
            0..=3 => 1,
            4..=6 => 2,
            7..=8 => 3,
            _ => 4,
        }
        .clamp(left.saturating_sub(4 * others).max(1), left - others);
        events.clear();
        let (judged, valid) = scenario(k, &mut rng, &mut events);
        assert_eq!(events.len() as u64, k);
        expect.judged += u64::from(judged);
        expect.valid += u64::from(valid);
        for ev in &events {
            expect.analytics += u64::from(ev.purpose == AN);
            expect.derived += u64::from(ev.derived);
            expect.read += u64::from(ev.created_at <= AS_OF_S);
            log.push(pack(s as u32, ev));
        }
    }
    assert_eq!(log.len() as u64, records);
    log.sort_unstable_by_key(|p| (p.created_at, p.user));

    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;
         CREATE TABLE consent_records (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL,
             purpose TEXT NOT NULL, status TEXT NOT NULL, granted_at DATETIME, revoked_at DATETIME,
             expiry_at DATETIME, notice_version INTEGER, data_categories TEXT, legal_basis TEXT,
             derived_purposes TEXT, created_at DATETIME NOT NULL);
         CREATE TABLE bench_meta (version INTEGER, records INTEGER, subjects INTEGER,
             read INTEGER, judged INTEGER, valid INTEGER, analytics INTEGER, derived INTEGER);",
    )?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO consent_records (user_id, purpose, status, granted_at, revoked_at,
                 expiry_at, notice_version, data_categories, legal_basis, derived_purposes, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'consent', ?9, ?10)",
        )?;
        let (mut g, mut r, mut e, mut c) = ([0u8; 20], [0u8; 20], [0u8; 20], [0u8; 20]);
        let mut user = String::with_capacity(9);
        let at = |v: u32| (v != 0).then(|| EPOCH + i64::from(v));
        for p in &log {
            user.clear();
            write!(user, "u{:08}", p.user).unwrap();
            insert.execute(params![
                user,
                if p.flags & 1 != 0 { AN } else { MT },
                STATUSES[usize::from(p.flags >> 1 & 3)],
                at(p.granted_at).map(|t| iso(t, &mut g)),
                at(p.revoked_at).map(|t| iso(t, &mut r)),
                at(p.expiry_at).map(|t| iso(t, &mut e)),
                1 + rng.below(3) as i64,
                if rng.chance(300) {
                    r#"["text","images"]"#
                } else {
                    r#"["text"]"#
                },
                (p.flags & 8 != 0).then_some(r#"["model_training"]"#),
                iso(EPOCH + i64::from(p.created_at), &mut c),
            ])?;
        }
    }
    drop(log);
    // The platform's own lookup index: not used by a full scan, but it is part of the file
    // that is hashed, as it would be in a real snapshot.
    tx.execute_batch(
        "CREATE INDEX consent_records_user_purpose ON consent_records (user_id, purpose)",
    )?;
    tx.execute(
        "INSERT INTO bench_meta VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            GENERATOR_VERSION,
            expect.records as i64,
            expect.subjects as i64,
            expect.read as i64,
            expect.judged as i64,
            expect.valid as i64,
            expect.analytics as i64,
            expect.derived as i64,
        ],
    )?;
    tx.commit()?;
    conn.close().map_err(|(_, e)| e)?;
    Ok(expect)
}

/// The counts of a complete snapshot written by this generator version, if `path` is one.
fn cached(path: &Path, records: u64) -> Option<Expect> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).ok()?;
    let row = conn
        .query_row("SELECT * FROM bench_meta", [], |r| {
            let n = |i| r.get::<_, i64>(i).map(|v| v as u64);
            Ok((
                r.get::<_, i64>(0)?,
                Expect {
                    records: n(1)?,
                    subjects: n(2)?,
                    read: n(3)?,
                    judged: n(4)?,
                    valid: n(5)?,
                    analytics: n(6)?,
                    derived: n(7)?,
                },
            ))
        })
        .ok()?;
    (row.0 == GENERATOR_VERSION && row.1.records == records).then_some(row.1)
}

/// The cached snapshot for `records`, generated first if missing or outdated.
fn snapshot_file(records: u64) -> (PathBuf, Expect) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    #[allow(clippy::manual_is_multiple_of)] // u64::is_multiple_of is newer than rust-version
    let name = if records % 1_000_000 == 0 {
        format!("snapshot-{}m.db", records / 1_000_000)
    } else {
        format!("snapshot-{records}.db")
    };
    let path = dir.join(name);
    if let Some(expect) = cached(&path, records) {
        eprintln!("snapshot: reusing {}", path.display());
        return (path, expect);
    }
    let partial = path.with_extension("db.partial");
    let _ = std::fs::remove_file(&partial);
    eprintln!(
        "snapshot: generating {records} records into {}",
        path.display()
    );
    let start = Instant::now();
    let expect = generate(&partial, records).expect("generate the snapshot");
    std::fs::rename(&partial, &path).unwrap();
    let bytes = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "snapshot: generated in {:.1} s, {:.0} MB: {expect:?}",
        start.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );
    (path, expect)
}

/// Runs `f` and returns the process's peak resident set during it, in bytes, where Linux lets
/// the high-water mark be reset; `None` elsewhere.
fn peak_rss_during(f: impl FnOnce()) -> Option<u64> {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    f();
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    reset.then_some(kb * 1024)
}

fn bench(c: &mut Criterion) {
    let records = std::env::var("CONSENTRY_BENCH_RECORDS")
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse::<u64>()
                .expect("CONSENTRY_BENCH_RECORDS: a number")
        })
        .unwrap_or(DEFAULT_RECORDS);
    assert!(records >= 2, "CONSENTRY_BENCH_RECORDS must be at least 2");
    let (path, expect) = snapshot_file(records);
    assert_eq!(expect.subjects, records / 2);
    let as_of = Timestamp::parse(AS_OF).unwrap();
    let rules = Rules::default();
    let load = || {
        consent::load(&path, &SchemaKind::ConsentRecords, MT, as_of, &rules)
            .expect("load the snapshot")
    };
    let check = |snapshot: &consent::Snapshot| {
        let counts = snapshot.counts();
        assert_eq!(counts.judged, expect.judged, "judged subjects");
        assert_eq!(counts.valid, expect.valid, "valid subjects");
        assert_eq!(snapshot.records_read, expect.read, "records read");
    };

    // One untimed load: the counts, and the memory the load needs.
    let start = Instant::now();
    let peak = peak_rss_during(|| check(&load()));
    eprintln!(
        "snapshot: first load {:.2} s{}",
        start.elapsed().as_secs_f64(),
        peak.map(|b| format!(", peak RSS {:.0} MB", b as f64 / 1e6))
            .unwrap_or_default()
    );

    let mut group = c.benchmark_group("snapshot");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        // 8-16 s per load of 10M records on this 2-vCPU machine: ten samples of one load.
        .measurement_time(Duration::from_secs(
            (records * 12).div_ceil(1_000_000).max(3),
        ))
        .throughput(Throughput::Elements(records));
    let label = path.file_stem().unwrap().to_string_lossy().into_owned();
    group.bench_function(BenchmarkId::new("load", label), |b| {
        // Times the load alone: checking the counts and dropping the table are outside.
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let snapshot = load();
                spent += start.elapsed();
                check(&snapshot);
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

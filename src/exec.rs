//! Parallel execution and progress: the only place with rayon and indicatif.
//!
//! Work is a parallel map over files (and, inside a file, over chunks) whose results come
//! back in input order, so `--threads 1` and `--threads 8` write the same bytes and the
//! same report. Progress is drawn by one background thread from atomic counters the
//! workers bump; workers never touch the terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use crate::dataset::jsonl::OnRead;
use crate::error::{Error, Result};

/// Runs `work` on a pool of `threads` workers (default: one per core).
pub fn with_pool<T: Send>(threads: Option<usize>, work: impl FnOnce() -> T + Send) -> Result<T> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        if n == 0 {
            return Err(Error::Usage("--threads must be at least 1".into()));
        }
        builder = builder.num_threads(n);
    }
    let pool = builder
        .build()
        .map_err(|e| Error::Usage(format!("cannot start worker threads: {e}")))?;
    Ok(pool.install(work))
}

/// The number of workers of the current pool.
pub fn workers() -> usize {
    rayon::current_num_threads()
}

/// Maps `f` over `items` in parallel; results keep the order of `items`.
pub fn par_map<T: Sync, U: Send>(items: &[T], f: impl Fn(&T) -> U + Sync + Send) -> Vec<U> {
    items.par_iter().map(f).collect()
}

/// Runs `a` and `b` in parallel.
pub fn join<A: Send, B: Send>(
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B + Send,
) -> (A, B) {
    rayon::join(a, b)
}

/// Runs `work`, turning a panic inside it (say, a reader meeting bytes it did not expect)
/// into an error, so one file cannot bring down the job.
pub fn guard<T>(work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(_) => Err("the reader failed on this file's bytes (internal panic caught); the file is corrupt or unsupported".into()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A live bar (stderr is a terminal).
    Bar,
    /// A plain line every few seconds (stderr is a file or pipe).
    Lines,
    Off,
}

impl ProgressMode {
    pub fn detect(disabled: bool) -> ProgressMode {
        match (disabled, std::io::stderr().is_terminal()) {
            (true, _) => ProgressMode::Off,
            (false, true) => ProgressMode::Bar,
            (false, false) => ProgressMode::Lines,
        }
    }
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    rows: AtomicU64,
    bytes: AtomicU64,
}

/// Progress of one job: counters the workers bump and a thread that shows them.
pub struct Progress {
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    drawer: Option<JoinHandle<()>>,
}

const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn start(mode: ProgressMode, verb: &'static str, files: u64, bytes: u64) -> Progress {
        let counters = Arc::new(Counters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let drawer = match mode {
            ProgressMode::Off => None,
            ProgressMode::Bar => {
                let (c, s) = (Arc::clone(&counters), Arc::clone(&stop));
                Some(std::thread::spawn(move || draw_bar(&c, &s, files, bytes)))
            }
            ProgressMode::Lines => {
                let (c, s) = (Arc::clone(&counters), Arc::clone(&stop));
                Some(std::thread::spawn(move || {
                    draw_lines(&c, &s, verb, files, bytes)
                }))
            }
        };
        Progress {
            counters,
            stop,
            drawer,
        }
    }

    pub fn on_read(&self) -> OnRead {
        let c = Arc::clone(&self.counters);
        Arc::new(move |n| {
            c.bytes.fetch_add(n, Ordering::Relaxed);
        })
    }

    pub fn add_rows(&self, n: u64) {
        self.counters.rows.fetch_add(n, Ordering::Relaxed);
    }

    pub fn file_done(&self) {
        self.counters.files.fetch_add(1, Ordering::Relaxed);
    }

    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.drawer.take() {
            let _ = d.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn draw_bar(c: &Counters, stop: &AtomicBool, files: u64, bytes: u64) {
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(bytes),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {elapsed_precise} [{bar:30}] {bytes}/{total_bytes} {msg} eta {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    while !stop.load(Ordering::Relaxed) {
        bar.set_position(c.bytes.load(Ordering::Relaxed));
        bar.set_message(format!(
            "files {}/{files}, rows {}",
            c.files.load(Ordering::Relaxed),
            c.rows.load(Ordering::Relaxed)
        ));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

fn draw_lines(c: &Counters, stop: &AtomicBool, verb: &str, files: u64, bytes: u64) {
    let start = Instant::now();
    let mut next = start + LINE_EVERY;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() < next {
            continue;
        }
        next += LINE_EVERY;
        let done = c.bytes.load(Ordering::Relaxed);
        let elapsed = start.elapsed().as_secs_f64();
        let eta = if done > 0 && bytes > done {
            format!(
                ", eta {:.0}s",
                elapsed * (bytes - done) as f64 / done as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            std::io::stderr(),
            "consentry: {verb} {}/{files} files, {} rows, {} of {} MB ({:.0}%){eta}",
            c.files.load(Ordering::Relaxed),
            c.rows.load(Ordering::Relaxed),
            done / 1_000_000,
            bytes / 1_000_000,
            if bytes > 0 {
                done as f64 * 100.0 / bytes as f64
            } else {
                100.0
            }
        );
    }
}

/// Drops values on a background thread, for drops that block: closing the last handle on a
/// large replaced file makes the kernel free its blocks and cached pages, work the job's
/// workers need not wait for. At most `queue` values wait; a worker that would queue one
/// more waits instead, so what is held back stays bounded. `finish` waits until everything
/// sent has been dropped.
pub struct Dropper<T: Send + 'static> {
    tx: std::sync::mpsc::SyncSender<T>,
    thread: JoinHandle<()>,
}

impl<T: Send + 'static> Dropper<T> {
    pub fn start(queue: usize) -> Dropper<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<T>(queue);
        let thread = std::thread::spawn(move || rx.into_iter().for_each(drop));
        Dropper { tx, thread }
    }

    pub fn drop_later(&self, value: T) {
        // Only fails if the thread is gone (it cannot panic): then drop here.
        if let Err(e) = self.tx.send(value) {
            drop(e.0);
        }
    }

    pub fn finish(self) {
        drop(self.tx);
        // Dropping cannot panic, so the thread cannot have failed.
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropper_has_dropped_everything_when_finish_returns() {
        let counted = Arc::new(());
        let dropper = Dropper::start(3);
        for _ in 0..100 {
            dropper.drop_later(Arc::clone(&counted));
        }
        dropper.finish();
        assert_eq!(Arc::strong_count(&counted), 1);
    }
}

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Chunks of several MiB are allocated and freed all the time; mimalloc keeps them mapped
/// instead of returning each to the kernel and faulting it back in (measured: less system time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Takes memory in small pages, not transparent huge ones. A first touch of a huge page
/// zeroes 2 MiB at once: on a virtual machine, touching the same 256 MiB took from 0.03 s to
/// 0.77 s that way and 0.1 s every time in small pages, and Parquet jobs, which allocate a
/// few hundred MiB over their course, spent 17% less CPU without huge pages (10 alternating
/// runs). How freed memory is kept is `consentry::memory`'s business.
fn small_pages() {
    // mimalloc asked for huge pages on the memory it mapped before `main`; this flag turns
    // them off for the whole process, that memory included. Failure only costs speed.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments; touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    small_pages();
    // A panic inside a reader (hostile bytes) is caught and the file reported as failed; the
    // default hook would print its message, which may quote data. Say only where it was.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
        eprintln!("consentry: internal error{at}; the file being processed is reported as failed");
    }));
    let cli = consentry::cli::Cli::parse();
    match consentry::run(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(err) => {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "consentry: error: {err}");
            // A late error shows its inner error's message; its causes follow.
            let mut source = match &err {
                consentry::Error::Late(inner) => std::error::Error::source(inner.as_ref()),
                other => std::error::Error::source(other),
            };
            while let Some(cause) = source {
                let _ = write!(stderr, ": {cause}");
                source = cause.source();
            }
            let _ = writeln!(stderr);
            ExitCode::from(err.exit() as u8)
        }
    }
}

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Chunks of several MiB are allocated and freed all the time; mimalloc keeps them mapped
/// instead of returning each to the kernel and faulting it back in (measured: less system time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: how long freed memory stays with the process before it
/// is handed back to the kernel (its position in mimalloc's `mi_option_t`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes memory cheap to get: freed memory is never handed back to the kernel, and memory is
/// taken in small pages, not transparent huge ones.
///
/// Parquet rewrites allocate buffers of a MiB and more for every page and column chunk.
/// With mimalloc's default (purge after a second) they kept landing on memory given back,
/// which the kernel zeroes again on the next touch: 12-14% of a Parquet filter's CPU went to
/// clearing pages. Huge pages make each first touch zero 2 MiB at once, and on a virtual
/// machine that took from 0.03 s to 0.77 s for the same 256 MiB (small pages: 0.1 s every
/// time); with them off, a Parquet filter spent 17% less CPU (10 alternating runs). The
/// job's peak memory is unchanged; the process keeps it until it exits.
fn tune_memory() {
    // SAFETY: sets one integer option; called first thing in `main`, before other threads.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // mimalloc asked for huge pages on the memory it mapped before `main`; this flag turns
    // them off for the whole process, that memory included. Failure only costs speed.
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with integer arguments; touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    tune_memory();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // Its default (a second) tells it apart from every other option, so a mimalloc that
        // renumbered its options fails here instead of silently tuning something else.
        // SAFETY: reads and sets one integer option.
        unsafe {
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), 1000);
            }
            tune_memory();
            assert_eq!(libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY), -1);
        }
    }
}

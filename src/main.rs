use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Chunks of several MiB are allocated and freed all the time; mimalloc keeps them mapped
/// instead of returning each to the kernel and faulting it back in (measured: less system time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = consentry::cli::Cli::parse();
    match consentry::run(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(err) => {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "consentry: error: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                let _ = write!(stderr, ": {cause}");
                source = cause.source();
            }
            let _ = writeln!(stderr);
            ExitCode::from(err.exit() as u8)
        }
    }
}

//! The `camstream` command line. Errors are printed once, on one line, with a non-zero exit.

mod cli;

// glibc's malloc returns large tensor buffers to the kernel on every free (mmap/munmap),
// which cost a third of CPU time as page faults in training and inference; mimalloc
// keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camstream: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! The `camstream` command line. Errors are printed once, on one line, with a non-zero exit.

mod cli;

// glibc's malloc returns large tensor buffers to the kernel on every free (mmap/munmap),
// which cost a third of CPU time as page faults in training and inference; mimalloc
// keeps and reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in `mi_option_e` (`mimalloc.h` of mimalloc v3, which
/// libmimalloc-sys builds by default), which the sys crate does not name: how long freed
/// memory waits before it goes back to the kernel.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hand freed memory back (unless `MIMALLOC_PURGE_DELAY` says otherwise). By default
/// mimalloc returns it after a second, and the next tensor of that size faults in fresh
/// zeroed pages: 18-22 k page faults in a 10-iteration EfficientNet-B0 `bench` (4 k
/// without), and Grad-CAM 3-9 % faster without on the 2-core EPYC (ResNet-50 2-3 %).
/// The process keeps its peak, which the bounded pipelines already keep flat.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option's value; mimalloc reads it when it next purges.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

use std::process::ExitCode;

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader of stdout goes away (`| head`)
    // instead of panicking in println!.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    keep_freed_memory();
    match cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("camstream: error: {}", cli::in_flags(&one_line(&e)));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each said once: a library error that already
/// quotes its source (`path: No such file or directory`) is not followed by it again.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    /// The index names the option meant: mimalloc v3's purge delay defaults to 1000 ms,
    /// no option near it to that.
    #[test]
    fn the_purge_delay_index_is_mimallocs() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            // SAFETY: reads one option.
            let ms = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
            assert_eq!(ms, 1000);
        }
    }
}

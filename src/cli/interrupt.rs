//! Ctrl-C and SIGTERM (what Kubernetes, Slurm and systemd send). The first signal asks
//! a graceful command (`video`) to finish the frames in flight and close a playable
//! file; every other command stops at once. A second signal, or the first one for the
//! others, removes this process's temporary files and exits with 128 + the signal, so
//! no debris is left.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

static CANCEL: AtomicBool = AtomicBool::new(false);
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static GRACEFUL: AtomicBool = AtomicBool::new(false);

/// Starts listening. Call once, before any output file exists.
pub fn install() {
    let Ok(mut signals) = Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    std::thread::spawn(move || {
        for sig in signals.forever() {
            let first = SIGNAL.compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst);
            if first.is_ok() && GRACEFUL.load(Ordering::SeqCst) {
                CANCEL.store(true, Ordering::SeqCst);
                continue;
            }
            camstream_media::io::remove_temps_and_exit(128 + sig);
        }
    });
}

/// This command stops gracefully on the first signal: it polls [`cancel`].
pub fn graceful() -> &'static AtomicBool {
    GRACEFUL.store(true, Ordering::SeqCst);
    &CANCEL
}

/// The exit status a run stopped by a signal ends with (130 for Ctrl-C, 143 for SIGTERM).
pub fn exit_code() -> i32 {
    128 + SIGNAL.load(Ordering::SeqCst).max(2)
}

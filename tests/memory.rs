//! Peak memory of whole `camstream` runs, measured by the kernel.
//!
//! Alone in its own test binary on purpose: a child's `ru_maxrss` starts at the peak of
//! the process that spawned it (exec folds the parent's high-water mark in), so a test
//! harness that has itself grown (the fuzz regressions parse models in-process) would
//! hide this run's figure under its own. This harness only writes small files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Peak RSS (MB) of one `camstream` run, from the kernel's accounting of the child.
// The child is reaped by wait4, which `Child` does not know about.
#[allow(clippy::zombie_processes)]
fn peak_rss_mb(dir: &Path, args: &[String]) -> f64 {
    let child = Command::new(env!("CARGO_BIN_EXE_camstream"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut status = 0;
    // SAFETY: waiting for our own child; rusage is plain data filled in by the kernel.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "run failed"
    );
    usage.ru_maxrss as f64 / 1024.0
}

/// `image` streams: memory does not grow with the number of inputs (it held every
/// result until the end: 60 MB for 1 picture, 352 MB for 1000), and each output is on
/// disk when its input is done.
#[test]
fn image_memory_is_flat_in_the_number_of_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let png = std::fs::read(repo("samples/images/circle.png")).unwrap();
    let shapes = repo("samples/models/shapes.toml");
    let mut peaks = Vec::new();
    // From 60 on, the allocator and the thread pools are warm: growth past it is per input.
    for n in [60, 240] {
        let inputs: Vec<String> = (0..n)
            .map(|i| {
                let name = format!("in{n}/p{i}.png");
                std::fs::create_dir_all(dir.join(format!("in{n}"))).unwrap();
                std::fs::write(dir.join(&name), &png).unwrap();
                name
            })
            .collect();
        // The smaller of two runs: one run of the same inputs varies by up to ~20 MB
        // in a debug build (the threads' timing decides what is in flight at the peak).
        let mut runs = Vec::new();
        for run in 0..2 {
            let out = format!("out{n}-{run}");
            let mut cmd: Vec<String> = ["image", "-m", shapes.to_str().unwrap(), "--out"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            cmd.push(out.clone());
            cmd.extend(inputs.iter().cloned());
            runs.push(peak_rss_mb(dir, &cmd));
            let written = std::fs::read_dir(dir.join(&out)).unwrap().count();
            assert_eq!(written, n, "one overlay per input, nothing else");
        }
        peaks.push(runs.into_iter().fold(f64::INFINITY, f64::min));
    }
    eprintln!(
        "peak RSS: 60 pictures {:.0} MB, 240 pictures {:.0} MB",
        peaks[0], peaks[1]
    );
    // Holding every result took about 0.25 MB per 256x256 picture: +45 MB here.
    assert!(peaks[1] < peaks[0] + 15.0, "{peaks:?}");
}

//! What every fuzz target shares: camstream's parsers read files, so each input is
//! written to a file of the right name first, in a folder of this process.

use std::path::{Path, PathBuf};

fn dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("camstream-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("fuzz folder");
        d
    })
}

/// Writes `files` (name, bytes) and runs `parse` on the first one's path.
pub fn with_files(files: &[(&str, &[u8])], parse: impl FnOnce(&Path)) {
    for (name, bytes) in files {
        std::fs::write(dir().join(name), bytes).expect("write fuzz input");
    }
    parse(&dir().join(files[0].0));
}

/// The signal readers: open, then read every sample (errors are fine, panics are not).
pub fn read_signal(path: &Path) {
    let opts = camstream_media::decode::signal::OpenOptions::default();
    if let Ok(mut r) = camstream_media::decode::signal::open(path, &opts) {
        let _ = camstream_media::decode::signal::read_all(r.as_mut());
    }
}

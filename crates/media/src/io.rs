//! Output files. Each is written under a temporary name in its destination folder and
//! renamed when complete, so an interrupted run never leaves a half-written file under
//! the real name. Temporary names start with [`TEMP_PREFIX`] and carry the host and
//! process, so a later run can sweep the ones whose process is gone ([`sweep_stale`]),
//! and a signal handler can remove this process's at once ([`remove_temps_and_exit`]).
//! The outputs of one job are renamed together, last ([`Staged`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// What every temporary output's name starts with.
pub const TEMP_PREFIX: &str = ".camstream-";

/// Jobs of one process get distinct temporary names even for the same output.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// This process's temporary files that exist now (removed by a second signal).
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// A short, file-name-safe tag of this machine, so that a sweep on a shared file system
/// only judges processes of its own host.
fn host_tag() -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: gethostname writes at most buf.len() bytes into buf.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        let name: &[u8] = if ok {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            &buf[..end]
        } else {
            b"localhost"
        };
        // FNV-1a: stable across runs and builds, unlike std's hasher.
        let h = name.iter().fold(0xcbf29ce484222325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
        });
        format!("{:08x}", h as u32)
    })
    .clone()
}

/// The hidden name an output lives under until it is complete:
/// `.camstream-<host>-<pid>-<n>.<name>.tmp.<ext>`, in the output's folder (so the final
/// rename stays on one file system). The extension stays last: some writers choose the
/// format by it.
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let id = format!(
        "{}-{}-{}",
        host_tag(),
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = match path.extension() {
        Some(e) => format!("{TEMP_PREFIX}{id}.{name}.tmp.{}", e.to_string_lossy()),
        None => format!("{TEMP_PREFIX}{id}.{name}.tmp"),
    };
    path.with_file_name(tmp)
}

/// What a temporary name says: (host tag, process id, the final file name).
fn parse_temp(name: &str) -> Option<(&str, i32, &str)> {
    let rest = name.strip_prefix(TEMP_PREFIX)?;
    let (id, rest) = rest.split_once('.')?;
    let mut parts = id.splitn(3, '-');
    let (host, pid) = (parts.next()?, parts.next()?.parse().ok()?);
    parts.next()?;
    let end = rest.rfind(".tmp")?;
    Some((host, pid, &rest[..end]))
}

fn process_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Removes the temporary files and folders in `dir` left by camstream processes of this
/// host that are gone (killed, crashed, out of power); returns how many. Files of live processes,
/// and of other hosts sharing the folder, are left alone.
pub fn sweep_stale(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let host = host_tag();
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some((h, pid, _)) = name.to_str().and_then(parse_temp) else {
            continue;
        };
        if h != host || process_alive(pid) {
            continue;
        }
        // A scratch folder (`camstream batch`) goes with everything in it.
        let gone = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(e.path())
        } else {
            std::fs::remove_file(e.path())
        };
        removed += gone.is_ok() as usize;
    }
    removed
}

/// The process id of another live camstream run on this host writing `path` now.
pub fn other_writer(path: &Path) -> Option<i32> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let target = path.file_name()?.to_str()?;
    let (host, me) = (host_tag(), std::process::id() as i32);
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name();
        let (h, pid, final_name) = parse_temp(name.to_str()?)?;
        (h == host && pid != me && final_name == target && process_alive(pid)).then_some(pid)
    })
}

/// Removes every temporary file of this process and exits with `code`, for a second
/// Ctrl-C or SIGTERM: nothing is left behind, and no new temporary file can appear
/// (the registry stays locked until the process is gone).
pub fn remove_temps_and_exit(code: i32) -> ! {
    let live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
    for p in live.iter() {
        let _ = std::fs::remove_file(p);
    }
    std::mem::forget(live);
    std::process::exit(code)
}

/// A temporary output: removed when dropped, unless [`TempPath::persist`]ed under its
/// final name.
#[derive(Debug)]
pub struct TempPath {
    tmp: PathBuf,
    path: PathBuf,
    live: bool,
}

impl TempPath {
    /// A new temporary name for `path` (no file is created).
    pub fn new(path: &Path) -> Self {
        let tmp = temp_name(path);
        LIVE.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tmp.clone());
        Self {
            tmp,
            path: path.to_path_buf(),
            live: true,
        }
    }

    /// Where the file is being written.
    pub fn tmp(&self) -> &Path {
        &self.tmp
    }

    /// Its final name.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn forget(&mut self) {
        self.live = false;
        let mut live = LIVE.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = live.iter().position(|p| *p == self.tmp) {
            live.swap_remove(i);
        }
    }

    /// Renames the file to its final name.
    pub fn persist(mut self) -> Result<PathBuf> {
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.forget();
        Ok(self.path.clone())
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if self.live {
            let _ = std::fs::remove_file(&self.tmp);
            self.forget();
        }
    }
}

/// The complete outputs of one job, still under temporary names: renamed together by
/// [`Staged::commit`], or all removed when dropped (a failed job leaves nothing).
#[derive(Debug, Default)]
pub struct Staged(Vec<TempPath>);

impl Staged {
    pub fn push(&mut self, t: TempPath) {
        self.0.push(t);
    }

    pub fn extend(&mut self, other: Staged) {
        self.0.extend(other.0);
    }

    /// The final names, in order.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.0.iter().map(|t| t.path.clone()).collect()
    }

    /// Renames every file, one after the other with nothing in between, and returns the
    /// final names.
    pub fn commit(self) -> Result<Vec<PathBuf>> {
        self.0.into_iter().map(TempPath::persist).collect()
    }
}

/// Runs `write` on a temporary path next to `path` and returns it complete, not yet
/// renamed; on error nothing is left.
pub fn stage<E, F>(path: &Path, write: F) -> std::result::Result<TempPath, E>
where
    F: FnOnce(&Path) -> std::result::Result<(), E>,
{
    let t = TempPath::new(path);
    write(t.tmp())?;
    Ok(t)
}

/// Runs `write` on a temporary path next to `path`, then renames it into place.
pub fn write_atomic<E, F>(path: &Path, write: F) -> std::result::Result<(), E>
where
    F: FnOnce(&Path) -> std::result::Result<(), E>,
    E: From<Error>,
{
    stage(path, write)?.persist()?;
    Ok(())
}

pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    stage_png(path, img)?.persist().map(drop)
}

/// A PNG complete under its temporary name.
pub fn stage_png(path: &Path, img: &image::RgbImage) -> Result<TempPath> {
    stage(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::file(path, format!("cannot write: {e}")))
    })
}

/// An output written as it is produced: it lives under a temporary name until
/// [`StreamFile::commit`] renames it, and is removed if dropped uncommitted.
pub struct StreamFile {
    pub(crate) temp: TempPath,
    w: Option<std::io::BufWriter<std::fs::File>>,
}

impl StreamFile {
    pub fn create(path: &Path) -> Result<Self> {
        let temp = TempPath::new(path);
        let f = std::fs::File::create(temp.tmp()).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            temp,
            w: Some(std::io::BufWriter::new(f)),
        })
    }

    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        match &mut self.w {
            Some(w) => w
                .write_all(bytes)
                .map_err(|e| Error::io(self.temp.path(), e)),
            None => Ok(()),
        }
    }

    pub(crate) fn finish(&mut self) -> Result<std::fs::File> {
        let w = self
            .w
            .take()
            .ok_or_else(|| Error::file(self.temp.path(), "already closed"))?;
        w.into_inner()
            .map_err(|e| Error::io(self.temp.path(), e.into_error()))
    }

    /// Completes the file on disk, still under its temporary name.
    pub fn finish_staged(mut self) -> Result<TempPath> {
        let f = self.finish()?;
        f.sync_all().map_err(|e| Error::io(self.temp.path(), e))?;
        Ok(self.temp)
    }

    pub fn commit(self) -> Result<PathBuf> {
        self.finish_staged()?.persist()
    }
}

/// A mono 16-bit PCM WAV of `samples` in -1..1 (clipped), written atomically.
pub fn write_wav(path: &Path, rate: u32, samples: &[f32]) -> Result<()> {
    let wav_err = |e: hound::Error| Error::file(path, format!("cannot write WAV: {e}"));
    write_atomic(path, |tmp| {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(tmp, spec).map_err(wav_err)?;
        for v in samples {
            w.write_sample((v.clamp(-1.0, 1.0) * 32767.0) as i16)
                .map_err(wav_err)?;
        }
        w.finalize().map_err(wav_err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_are_unique_recognisable_and_keep_the_extension() {
        let out = Path::new("/data/out/clip.mp4");
        let (a, b) = (temp_name(out), temp_name(out));
        assert_ne!(
            a, b,
            "two jobs writing one path in one process must not collide"
        );
        for t in [&a, &b] {
            let name = t.file_name().unwrap().to_string_lossy();
            assert!(name.starts_with(TEMP_PREFIX), "{name}");
            assert!(name.ends_with(".clip.mp4.tmp.mp4"), "{name}");
            assert_eq!(t.parent(), out.parent());
            let (host, pid, final_name) = parse_temp(&name).unwrap();
            assert_eq!(
                (host, pid, final_name),
                (host_tag().as_str(), std::process::id() as i32, "clip.mp4")
            );
        }
    }

    #[test]
    fn a_sweep_removes_temps_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        // A process that has exited: its pid is free (until reused, which only keeps
        // the file).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let host = host_tag();
        let names = [
            format!("{TEMP_PREFIX}{host}-{dead}-0.a.mp4.tmp.mp4"),
            format!("{TEMP_PREFIX}{host}-{}-0.b.mp4.tmp.mp4", std::process::id()),
            format!("{TEMP_PREFIX}0badc0de-{dead}-0.c.mp4.tmp.mp4"),
            "user.mp4".to_string(),
        ];
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        // A dead process's scratch folder goes with its contents; a live one's stays.
        let scratch = dir
            .path()
            .join(format!("{TEMP_PREFIX}{host}-{dead}-1.0123abcd.tmp"));
        std::fs::create_dir_all(scratch.join("out")).unwrap();
        std::fs::write(scratch.join("out/annotated.mp4"), b"x").unwrap();
        let live = format!("{TEMP_PREFIX}{host}-{}-1.4567cdef.tmp", std::process::id());
        std::fs::create_dir(dir.path().join(&live)).unwrap();
        assert_eq!(sweep_stale(dir.path()), 2);
        assert!(!scratch.exists());
        std::fs::remove_dir(dir.path().join(&live)).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = names[1..].to_vec();
        want.sort();
        assert_eq!(left, want, "only the dead process's file on this host goes");
        // A live writer of b.mp4 other than this process is reported; this one is not.
        assert_eq!(other_writer(&dir.path().join("b.mp4")), None);
    }

    #[test]
    fn staged_outputs_appear_together_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let count = || std::fs::read_dir(dir.path()).unwrap().count();
        let write = |name: &str| {
            stage(&dir.path().join(name), |tmp| {
                std::fs::write(tmp, name).map_err(|e| Error::io(tmp, e))
            })
            .unwrap()
        };
        let mut set = Staged::default();
        set.push(write("a.json"));
        set.push(write("b.csv"));
        assert_eq!(count(), 2);
        drop(set);
        assert_eq!(count(), 0, "a dropped set leaves nothing");
        let mut set = Staged::default();
        set.push(write("a.json"));
        set.push(write("b.csv"));
        let paths = set.commit().unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(std::fs::read_to_string(&paths[1]).unwrap(), "b.csv");
        assert_eq!(count(), 2);
        assert!(LIVE
            .lock()
            .unwrap()
            .iter()
            .all(|p| !p.starts_with(dir.path())));
    }

    #[test]
    fn a_failed_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let r: Result<()> = write_atomic(&path, |tmp| {
            std::fs::write(tmp, b"half").map_err(|e| Error::io(tmp, e))?;
            Err(Error::file(tmp, "failed half way"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

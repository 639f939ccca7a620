//! Output files: written to a temporary name in the destination folder and renamed when
//! complete, so an interrupted run never leaves a half-written file under the real name.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Jobs of one process get distinct temporary names even for the same output.
static NEXT_TEMP: AtomicU64 = AtomicU64::new(0);

/// The hidden name an output lives under until it is complete: unique per process and
/// per call, in the output's folder (so the final rename stays on one file system).
pub fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    let id = format!(
        "{}-{}",
        std::process::id(),
        NEXT_TEMP.fetch_add(1, Ordering::Relaxed)
    );
    // Keep the extension last: some writers choose the format by it.
    let tmp = match ext {
        Some(e) => format!(".{name}.{id}.tmp.{e}"),
        None => format!(".{name}.{id}.tmp"),
    };
    path.with_file_name(tmp)
}

/// Runs `write` on a temporary path next to `path`, then renames it into place.
pub fn write_atomic<E, F>(path: &Path, write: F) -> std::result::Result<(), E>
where
    F: FnOnce(&Path) -> std::result::Result<(), E>,
    E: From<Error>,
{
    let tmp = temp_name(path);
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e).into()
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    write_atomic(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::file(path, format!("cannot write: {e}")))
    })
}

/// An output written as it is produced: it lives under a temporary name until
/// [`StreamFile::commit`] renames it, and is removed if dropped uncommitted.
pub struct StreamFile {
    pub(crate) path: PathBuf,
    pub(crate) tmp: PathBuf,
    w: Option<std::io::BufWriter<std::fs::File>>,
}

impl StreamFile {
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = temp_name(path);
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            w: Some(std::io::BufWriter::new(f)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        match &mut self.w {
            Some(w) => w.write_all(bytes).map_err(|e| Error::io(&self.path, e)),
            None => Ok(()),
        }
    }

    pub(crate) fn finish(&mut self) -> Result<std::fs::File> {
        let w = self
            .w
            .take()
            .ok_or_else(|| Error::file(&self.path, "already closed"))?;
        w.into_inner()
            .map_err(|e| Error::io(&self.path, e.into_error()))
    }

    pub fn commit(mut self) -> Result<PathBuf> {
        let f = self.finish()?;
        f.sync_all().map_err(|e| Error::io(&self.path, e))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        Ok(self.path.clone())
    }
}

impl Drop for StreamFile {
    fn drop(&mut self) {
        if self.w.is_some() {
            self.w = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
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
    fn temporary_names_are_unique_hidden_and_keep_the_extension() {
        let out = Path::new("/data/out/clip.mp4");
        let (a, b) = (temp_name(out), temp_name(out));
        assert_ne!(
            a, b,
            "two jobs writing one path in one process must not collide"
        );
        for t in [&a, &b] {
            let name = t.file_name().unwrap().to_string_lossy();
            assert!(name.starts_with(".clip.mp4."), "{name}");
            assert!(name.ends_with(".tmp.mp4"), "{name}");
            assert_eq!(t.parent(), out.parent());
        }
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

//! Output files: written to a temporary name in the destination folder and renamed when
//! complete, so an interrupted run never leaves a half-written file under the real name.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned());
    // Keep the extension last: some writers choose the format by it.
    let tmp = match ext {
        Some(e) => format!(".{name}.{}.tmp.{e}", std::process::id()),
        None => format!(".{name}.{}.tmp", std::process::id()),
    };
    path.with_file_name(tmp)
}

/// Runs `write` on a temporary path next to `path`, then renames it into place.
pub fn write_atomic<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    let tmp = temp_name(path);
    match write(&tmp) {
        Ok(()) => std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io(path, e)
        }),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

pub fn write_npy(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    let t = Tensor::from_slice(data, shape, &Device::Cpu)?;
    write_atomic(path, |tmp| {
        t.write_npy(tmp)
            .map_err(|e| Error::input(path, format!("cannot write: {e}")))
    })
}

pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    write_atomic(path, |tmp| {
        img.save_with_format(tmp, image::ImageFormat::Png)
            .map_err(|e| Error::input(path, format!("cannot write: {e}")))
    })
}

/// A float32 (or float64) `.npy` as flat values and shape.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    if !path.exists() {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let t = Tensor::read_npy(path)
        .map_err(|e| Error::input(path, format!("not a readable .npy array ({e})")))?;
    if !t.dtype().is_float() {
        return Err(Error::input(
            path,
            format!(
                "holds {:?} values; camstream needs float32 tensors",
                t.dtype()
            ),
        ));
    }
    let shape = t.dims().to_vec();
    let data = t
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((data, shape))
}

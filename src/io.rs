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

/// An output written as it is produced: it lives under a temporary name until
/// [`StreamFile::commit`] renames it, and is removed if dropped uncommitted.
pub struct StreamFile {
    path: PathBuf,
    tmp: PathBuf,
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

    fn finish(&mut self) -> Result<std::fs::File> {
        let w = self
            .w
            .take()
            .ok_or_else(|| Error::input(&self.path, "already closed"))?;
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

/// Header bytes reserved for a streamed `.npy`, so the final shape fits in place.
const NPY_HEADER: usize = 128;

fn npy_header(shape: &[usize]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while dict.len() < NPY_HEADER - 10 - 1 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut h = b"\x93NUMPY\x01\x00".to_vec();
    h.extend((dict.len() as u16).to_le_bytes());
    h.extend(dict.as_bytes());
    h
}

/// A float32 `.npy` whose first dimension grows as rows are appended.
pub struct NpyStream {
    file: StreamFile,
    row: Vec<usize>,
    rows: usize,
}

impl NpyStream {
    /// `row`: the shape of one row (empty for a 1D array).
    pub fn create(path: &Path, row: &[usize]) -> Result<Self> {
        let mut file = StreamFile::create(path)?;
        file.write(&npy_header(&[0]))?;
        Ok(Self {
            file,
            row: row.to_vec(),
            rows: 0,
        })
    }

    pub fn push(&mut self, values: &[f32]) -> Result<()> {
        let per: usize = self.row.iter().product();
        self.rows += values.len() / per.max(1);
        let mut bytes = Vec::with_capacity(values.len() * 4);
        for v in values {
            bytes.extend(v.to_le_bytes());
        }
        self.file.write(&bytes)
    }

    pub fn commit(mut self) -> Result<PathBuf> {
        use std::io::{Seek, SeekFrom, Write};
        let mut shape = vec![self.rows];
        shape.extend(&self.row);
        let mut f = self.file.finish()?;
        let path = self.file.path.clone();
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&npy_header(&shape)))
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(&path, e))?;
        std::fs::rename(&self.file.tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }
}

//! The `.npy` format, read and written in one place: the header parser behind whole
//! arrays, streamed recordings and the shape checks, and writers for whole and growing
//! float32 arrays.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::io::{stage, StreamFile, TempPath};

/// A `.npy` header: the dtype (`descr`, e.g. `<f4`), the order, the shape, and where
/// the data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub descr: String,
    pub fortran: bool,
    pub shape: Vec<usize>,
    pub data_at: u64,
}

impl Header {
    /// Reads the header from the start of a `.npy` file; the error says what is wrong.
    pub fn read(f: &mut impl Read) -> std::result::Result<Self, String> {
        let bad = |m: &str| format!("not a valid .npy file ({m})");
        let mut pre = [0u8; 10];
        f.read_exact(&mut pre).map_err(|_| bad("too short"))?;
        if &pre[..6] != b"\x93NUMPY" {
            return Err(bad("no NUMPY magic"));
        }
        let (len, start) = if pre[6] == 1 {
            (u16::from_le_bytes([pre[8], pre[9]]) as usize, 10u64)
        } else {
            let mut more = [0u8; 2];
            f.read_exact(&mut more).map_err(|_| bad("too short"))?;
            (
                u32::from_le_bytes([pre[8], pre[9], more[0], more[1]]) as usize,
                12u64,
            )
        };
        if len > 1 << 20 {
            return Err(bad("header too long"));
        }
        let mut h = vec![0u8; len];
        f.read_exact(&mut h).map_err(|_| bad("header cut short"))?;
        let h = String::from_utf8_lossy(&h).to_string();
        let field = |key: &str| -> Option<String> {
            let i = h.find(&format!("'{key}'"))? + key.len() + 2;
            let rest = h[i..].trim_start().strip_prefix(':')?.trim_start();
            Some(rest.to_string())
        };
        let descr = field("descr")
            .and_then(|r| {
                r.strip_prefix('\'')
                    .map(|r| r.split('\'').next().unwrap_or("").to_string())
            })
            .ok_or_else(|| bad("no descr"))?;
        let fortran = field("fortran_order").is_some_and(|r| r.starts_with("True"));
        let shape_txt = field("shape")
            .and_then(|r| {
                r.strip_prefix('(')
                    .map(|r| r.split(')').next().unwrap_or("").to_string())
            })
            .ok_or_else(|| bad("no shape"))?;
        let shape = shape_txt
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<usize>().map_err(|_| bad("bad shape")))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Header {
            descr,
            fortran,
            shape,
            data_at: start + len as u64,
        })
    }
}

/// The header of a `.npy` file.
pub fn header(path: &Path) -> Result<Header> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Header::read(&mut f).map_err(|m| Error::file(path, m))
}

/// A float32 (or float64) `.npy` as flat values and shape.
pub fn read_npy(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let h = Header::read(&mut f)
        .map_err(|m| Error::file(path, format!("not a readable .npy array ({m})")))?;
    let size: usize = match h.descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        d => {
            return Err(Error::file(
                path,
                format!("holds {d} values; camstream needs float32 tensors"),
            ))
        }
    };
    if h.fortran && h.shape.len() > 1 {
        return Err(Error::file(path, "is in Fortran order; save it in C order"));
    }
    // The header's shape is untrusted: compare it with the bytes on disk before
    // allocating anything (a shape of 10^15 values must be an error, not an abort).
    let want = h
        .shape
        .iter()
        .try_fold(size, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::file(path, format!("shape {:?} is too large", h.shape)))?;
    let n = want / size;
    let at = f.stream_position().map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let have = len.saturating_sub(at);
    if have < want as u64 {
        return Err(Error::file(
            path,
            format!("not a readable .npy array (data cut short: {have} of {want} bytes)"),
        ));
    }
    let mut bytes = Vec::with_capacity(want);
    f.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() < want {
        return Err(Error::file(
            path,
            format!(
                "not a readable .npy array (data cut short: {} of {want} bytes)",
                bytes.len()
            ),
        ));
    }
    let data = bytes[..n * size]
        .chunks_exact(size)
        .map(|b| match size {
            4 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            _ => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        })
        .collect();
    Ok((data, h.shape))
}

/// Writes a whole float32 array (candle's writer: numpy's own header layout).
pub fn write_npy(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    stage_npy(path, data, shape)?.persist().map(drop)
}

/// [`write_npy`], complete under its temporary name.
pub fn stage_npy(path: &Path, data: &[f32], shape: &[usize]) -> Result<TempPath> {
    let t = candle_core::Tensor::from_slice(data, shape, &candle_core::Device::Cpu)?;
    stage(path, |tmp| {
        t.write_npy(tmp)
            .map_err(|e| Error::file(path, format!("cannot write: {e}")))
    })
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

    /// Writes the final shape into the header; the file stays under its temporary name.
    pub fn finish_staged(mut self) -> Result<TempPath> {
        use std::io::{Seek, SeekFrom, Write};
        let mut shape = vec![self.rows];
        shape.extend(&self.row);
        let mut f = self.file.finish()?;
        f.seek(SeekFrom::Start(0))
            .and_then(|_| f.write_all(&npy_header(&shape)))
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io(self.file.path(), e))?;
        Ok(self.file.temp)
    }

    pub fn commit(self) -> Result<PathBuf> {
        self.finish_staged()?.persist()
    }
}

//! Arrays as recordings: `.npy` of shape (L,), (C,L) or (L,C) (the smaller dimension is
//! the channels), float32/float64/int16, read in chunks without loading the file; and
//! raw little-endian float32 files (`.f32`, interleaved). Neither stores a rate.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::{SignalError, SignalInfo, SignalReader};
use crate::npy;

#[derive(Clone, Copy)]
enum Dtype {
    F32,
    F64,
    I16,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F64 => 8,
            Dtype::I16 => 2,
        }
    }
    fn decode(self, b: &[u8]) -> f32 {
        match self {
            Dtype::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            Dtype::F64 => {
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            Dtype::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
        }
    }
}

pub struct NpyReader {
    info: SignalInfo,
    dtype: Dtype,
    /// One reader per channel for channel-major (C,L) arrays, else one interleaved.
    files: Vec<BufReader<File>>,
    interleaved: bool,
    left: u64,
    buf: Vec<u8>,
}

impl NpyReader {
    pub fn open(path: &Path, rate: Option<f64>) -> Result<Self, SignalError> {
        let mut f = File::open(path).map_err(|e| SignalError::io(path, e))?;
        let npy::Header {
            descr,
            fortran,
            shape,
            data_at,
        } = npy::Header::read(&mut f).map_err(|m| SignalError::format(path, m))?;
        let dtype = match descr.as_str() {
            "<f4" => Dtype::F32,
            "<f8" => Dtype::F64,
            "<i2" => Dtype::I16,
            d => {
                return Err(SignalError::format(
                    path,
                    format!(
                        "dtype {d}; a recording must be float32, float64 or int16 (little-endian)"
                    ),
                ))
            }
        };
        let (channels, frames, channel_major) = match shape.as_slice() {
            [l] => (1, *l, false),
            [a, b] => {
                // The smaller dimension is the channels; row-major (C,L) is channel-major.
                let (c, l, first) = if a <= b {
                    (*a, *b, true)
                } else {
                    (*b, *a, false)
                };
                (c, l, first != fortran)
            }
            s => {
                return Err(SignalError::format(
                    path,
                    format!(
                        "array of shape {s:?}; a recording is (L,), (C,L) or (L,C) \
                         (preprocessed windows (N,C,L) go to the model as they are)"
                    ),
                ))
            }
        };
        if frames == 0 || channels == 0 {
            return Err(SignalError::Empty {
                path: path.to_path_buf(),
            });
        }
        let need = channels
            .checked_mul(frames)
            .and_then(|n| n.checked_mul(dtype.size()))
            .and_then(|n| data_at.checked_add(n as u64))
            .ok_or_else(|| SignalError::format(path, format!("shape {shape:?} is too large")))?;
        let len = f.metadata().map_err(|e| SignalError::io(path, e))?.len();
        if len < need {
            return Err(SignalError::format(
                path,
                format!("truncated: shape {shape:?} needs {need} bytes, the file has {len}"),
            ));
        }
        let files = if channel_major && channels > 1 {
            (0..channels)
                .map(|c| {
                    let mut h = File::open(path).map_err(|e| SignalError::io(path, e))?;
                    h.seek(SeekFrom::Start(
                        data_at + (c * frames * dtype.size()) as u64,
                    ))
                    .map_err(|e| SignalError::io(path, e))?;
                    Ok(BufReader::new(h))
                })
                .collect::<Result<Vec<_>, SignalError>>()?
        } else {
            f.seek(SeekFrom::Start(data_at))
                .map_err(|e| SignalError::io(path, e))?;
            vec![BufReader::new(f)]
        };
        Ok(Self {
            info: SignalInfo {
                path: path.to_path_buf(),
                rate,
                channels: (0..channels).map(|c| format!("ch{c}")).collect(),
                frames: Some(frames as u64),
                format: format!("npy {descr} {shape:?}"),
            },
            dtype,
            interleaved: files.len() == 1,
            files,
            left: frames as u64,
            buf: Vec::new(),
        })
    }
}

fn read_values(
    path: &Path,
    r: &mut BufReader<File>,
    dtype: Dtype,
    n: usize,
    buf: &mut Vec<u8>,
) -> Result<(), SignalError> {
    buf.resize(n * dtype.size(), 0);
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            SignalError::format(path, "data ends early: truncated")
        } else {
            SignalError::io(path, e)
        }
    })
}

impl SignalReader for NpyReader {
    fn info(&self) -> &SignalInfo {
        &self.info
    }

    fn read(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<usize, SignalError> {
        let n = (max_frames as u64).min(self.left) as usize;
        if n == 0 {
            return Ok(0);
        }
        let c = self.info.channels.len();
        let sz = self.dtype.size();
        if self.interleaved {
            read_values(
                &self.info.path,
                &mut self.files[0],
                self.dtype,
                n * c,
                &mut self.buf,
            )?;
            out.extend(self.buf.chunks_exact(sz).map(|b| self.dtype.decode(b)));
        } else {
            let base = out.len();
            out.resize(base + n * c, 0.0);
            for ch in 0..c {
                read_values(
                    &self.info.path,
                    &mut self.files[ch],
                    self.dtype,
                    n,
                    &mut self.buf,
                )?;
                for (i, b) in self.buf.chunks_exact(sz).enumerate() {
                    out[base + i * c + ch] = self.dtype.decode(b);
                }
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

impl NpyReader {
    /// A raw little-endian float32 file of interleaved frames: an array without a header.
    pub fn open_raw(path: &Path, rate: Option<f64>, channels: usize) -> Result<Self, SignalError> {
        let channels = channels.max(1);
        let f = File::open(path).map_err(|e| SignalError::io(path, e))?;
        let len = f.metadata().map_err(|e| SignalError::io(path, e))?.len();
        let frame = 4 * channels as u64;
        if len % frame != 0 {
            return Err(SignalError::format(
                path,
                format!("{len} bytes is not a whole number of {channels}-channel float32 frames: truncated?"),
            ));
        }
        if len == 0 {
            return Err(SignalError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(Self {
            info: SignalInfo {
                path: path.to_path_buf(),
                rate,
                channels: (0..channels).map(|c| format!("ch{c}")).collect(),
                frames: Some(len / frame),
                format: "raw float32".into(),
            },
            dtype: Dtype::F32,
            files: vec![BufReader::new(f)],
            interleaved: true,
            left: len / frame,
            buf: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::signal::read_all;

    #[test]
    fn channel_major_and_interleaved_arrays_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let a: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..10).map(|i| -(i as f32)).collect();
        let cl = dir.path().join("cl.npy");
        crate::npy::write_npy(&cl, &[a.clone(), b.clone()].concat(), &[2, 10]).unwrap();
        let lc = dir.path().join("lc.npy");
        let inter: Vec<f32> = a.iter().zip(&b).flat_map(|(x, y)| [*x, *y]).collect();
        crate::npy::write_npy(&lc, &inter, &[10, 2]).unwrap();
        for p in [cl, lc] {
            let mut r = NpyReader::open(&p, Some(100.0)).unwrap();
            let mut out = Vec::new();
            // Odd chunk sizes cross nothing: channel readers advance together.
            while r.read(3, &mut out).unwrap() > 0 {}
            let ch: Vec<Vec<f32>> = (0..2)
                .map(|c| out.iter().skip(c).step_by(2).copied().collect())
                .collect();
            assert_eq!(ch, vec![a.clone(), b.clone()], "{}", p.display());
        }
        let mut r = NpyReader::open(&dir.path().join("cl.npy"), None).unwrap();
        assert_eq!(read_all(&mut r).unwrap()[1], b);
    }

    #[test]
    fn raw_float32_frames_read_as_interleaved_channels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.f32");
        let v: Vec<f32> = vec![1.0, -1.0, 2.0, -2.0, 3.0, -3.0];
        std::fs::write(
            &p,
            v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
        )
        .unwrap();
        let mut r = NpyReader::open_raw(&p, Some(250.0), 2).unwrap();
        assert_eq!(r.info().frames, Some(3));
        assert_eq!(
            read_all(&mut r).unwrap(),
            vec![vec![1.0, 2.0, 3.0], vec![-1.0, -2.0, -3.0]]
        );
        std::fs::write(&p, [0u8; 6]).unwrap();
        assert!(NpyReader::open_raw(&p, None, 1).is_err());
    }
}

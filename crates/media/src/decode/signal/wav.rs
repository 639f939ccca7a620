//! WAV through `hound`: 8/16/24/32-bit integer and 32-bit float, any rate and channel
//! count. Integers are scaled so that full scale is 1.0 (as soundfile/torchaudio do).

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use super::{SignalError, SignalInfo, SignalReader};

pub struct WavReader {
    info: SignalInfo,
    inner: hound::WavReader<BufReader<File>>,
    float: bool,
    scale: f32,
    channels: usize,
    left: u64,
}

fn wav_error(path: &Path, e: hound::Error) -> SignalError {
    match e {
        hound::Error::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            SignalError::format(path, "WAV data ends early: the file is truncated")
        }
        hound::Error::IoError(io) => SignalError::io(path, io),
        other => SignalError::format(path, format!("not a WAV file hound can read ({other})")),
    }
}

impl WavReader {
    pub fn open(path: &Path) -> Result<Self, SignalError> {
        let file = File::open(path).map_err(|e| SignalError::io(path, e))?;
        let inner = hound::WavReader::new(BufReader::new(file)).map_err(|e| wav_error(path, e))?;
        let spec = inner.spec();
        let float = spec.sample_format == hound::SampleFormat::Float;
        if float && spec.bits_per_sample != 32 {
            return Err(SignalError::format(
                path,
                format!(
                    "{}-bit float WAV; only 32-bit float is supported",
                    spec.bits_per_sample
                ),
            ));
        }
        let channels = spec.channels as usize;
        let frames = inner.duration() as u64;
        if frames == 0 {
            return Err(SignalError::Empty {
                path: path.to_path_buf(),
            });
        }
        // The header's size must fit the file, or the reader would stop short silently.
        let file_len = std::fs::metadata(path)
            .map_err(|e| SignalError::io(path, e))?
            .len();
        let bytes = frames * channels as u64 * spec.bits_per_sample.div_ceil(8) as u64;
        if bytes > file_len {
            return Err(SignalError::format(
                path,
                format!(
                    "WAV header announces {frames} frames ({bytes} bytes) but the file has {file_len} bytes: truncated"
                ),
            ));
        }
        Ok(Self {
            info: SignalInfo {
                path: path.to_path_buf(),
                rate: Some(spec.sample_rate as f64),
                channels: (0..channels).map(|c| format!("ch{c}")).collect(),
                frames: Some(frames),
                format: format!(
                    "WAV {}-bit {} {} Hz",
                    spec.bits_per_sample,
                    if float { "float" } else { "int" },
                    spec.sample_rate
                ),
            },
            scale: if float {
                1.0
            } else {
                1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32
            },
            inner,
            float,
            channels,
            left: frames,
        })
    }
}

impl SignalReader for WavReader {
    fn info(&self) -> &SignalInfo {
        &self.info
    }

    fn read(&mut self, max_frames: usize, out: &mut Vec<f32>) -> Result<usize, SignalError> {
        let n = (max_frames as u64).min(self.left) as usize;
        let want = n * self.channels;
        let path = self.info.path.clone();
        if self.float {
            for s in self.inner.samples::<f32>().take(want) {
                out.push(s.map_err(|e| wav_error(&path, e))?);
            }
        } else {
            let scale = self.scale;
            for s in self.inner.samples::<i32>().take(want) {
                out.push(s.map_err(|e| wav_error(&path, e))? as f32 * scale);
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::signal::read_all;

    #[test]
    fn integer_widths_scale_to_full_scale_one() {
        let dir = tempfile::tempdir().unwrap();
        for bits in [8u16, 16, 24, 32] {
            let p = dir.path().join(format!("w{bits}.wav"));
            let spec = hound::WavSpec {
                channels: 2,
                sample_rate: 8000,
                bits_per_sample: bits,
                sample_format: hound::SampleFormat::Int,
            };
            let half = 1i64 << (bits - 2);
            let mut w = hound::WavWriter::create(&p, spec).unwrap();
            for v in [half, -half, 0, -2 * half] {
                w.write_sample(v as i32).unwrap();
            }
            w.finalize().unwrap();
            let mut r = WavReader::open(&p).unwrap();
            assert_eq!(r.info().rate, Some(8000.0));
            let ch = read_all(&mut r).unwrap();
            assert_eq!(ch, vec![vec![0.5, 0.0], vec![-0.5, -1.0]], "{bits} bits");
        }
    }
}

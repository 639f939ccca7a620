//! Streaming sample-rate conversion with rubato's synchronous FFT resampler. The
//! resampler's start-up delay is trimmed and the tail flushed, so output frame k lies at
//! time k / rate_out and a recording of n frames yields round(n * out / in) frames.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler as _};

use crate::error::{Error, Result};

/// Input frames per resampler call.
const CHUNK: usize = 1024;

pub struct Resampler {
    fft: Fft<f32>,
    channels: usize,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    skip: usize,
    in_frames: u64,
    out_frames: u64,
    rate_in: usize,
    rate_out: usize,
}

fn whole(rate: f64) -> Option<usize> {
    (rate > 0.0 && (rate - rate.round()).abs() < 1e-6).then(|| rate.round() as usize)
}

impl Resampler {
    /// `None` when the rates are equal (nothing to do).
    pub fn new(rate_in: f64, rate_out: f64, channels: usize) -> Result<Option<Self>> {
        if (rate_in - rate_out).abs() < 1e-9 {
            return Ok(None);
        }
        // Beyond this, one side is almost surely a wrong rate (and FFT sizes explode).
        const MAX_RATIO: f64 = 1000.0;
        if rate_in > 0.0
            && rate_out > 0.0
            && (rate_in / rate_out).max(rate_out / rate_in) > MAX_RATIO
        {
            return Err(Error::Unsupported {
                what: "resampling ratio",
                name: format!("{rate_in} Hz -> {rate_out} Hz"),
                supported: vec![format!(
                    "rates within {MAX_RATIO}x of the model's (is the input rate right?)"
                )],
            });
        }
        let (Some(ri), Some(ro)) = (whole(rate_in), whole(rate_out)) else {
            return Err(Error::Unsupported {
                what: "resampling ratio",
                name: format!("{rate_in} Hz -> {rate_out} Hz"),
                supported: vec!["whole-number rates in Hz".into()],
            });
        };
        let fft = Fft::<f32>::new(ri, ro, CHUNK, channels, FixedSync::Input).map_err(|e| {
            Error::Unsupported {
                what: "resampling ratio",
                name: format!("{ri} Hz -> {ro} Hz ({e})"),
                supported: vec!["whole-number rates in Hz".into()],
            }
        })?;
        let skip = fft.output_delay();
        Ok(Some(Self {
            fft,
            channels,
            pending: Vec::new(),
            scratch: Vec::new(),
            skip,
            in_frames: 0,
            out_frames: 0,
            rate_in: ri,
            rate_out: ro,
        }))
    }

    /// Frames the whole input yields.
    fn expected(&self) -> u64 {
        (self.in_frames as u128 * self.rate_out as u128 + self.rate_in as u128 / 2)
            .div_euclid(self.rate_in as u128) as u64
    }

    fn run(&mut self, partial: Option<usize>, out: &mut Vec<f32>) -> Result<()> {
        let c = self.channels;
        let need = self.fft.input_frames_next();
        let produced = self.fft.output_frames_next();
        let avail = partial.unwrap_or(need);
        if self.pending.len() < need * c {
            self.pending.resize(need * c, 0.0);
        }
        self.scratch.resize(produced * c, 0.0);
        let input = InterleavedSlice::new(&self.pending[..need * c], c, need)
            .map_err(|e| Error::file("resampler", e.to_string()))?;
        let mut output = InterleavedSlice::new_mut(&mut self.scratch[..], c, produced)
            .map_err(|e| Error::file("resampler", e.to_string()))?;
        let idx = partial.map(|p| Indexing::new().partial_len(p));
        let (_, written) = self
            .fft
            .process_into_buffer(&input, &mut output, idx.as_ref())
            .map_err(|e| Error::file("resampler", e.to_string()))?;
        self.pending.drain(..avail.min(self.pending.len() / c) * c);
        let drop = self.skip.min(written);
        self.skip -= drop;
        let limit = self.expected().saturating_sub(self.out_frames) as usize;
        let keep = (written - drop).min(limit);
        out.extend_from_slice(&self.scratch[drop * c..(drop + keep) * c]);
        self.out_frames += keep as u64;
        Ok(())
    }

    /// Resamples interleaved frames, appending what is ready to `out`.
    pub fn push(&mut self, frames: &[f32], out: &mut Vec<f32>) -> Result<()> {
        let c = self.channels;
        self.in_frames += (frames.len() / c) as u64;
        self.pending.extend_from_slice(frames);
        while self.pending.len() >= self.fft.input_frames_next() * c {
            self.run(None, out)?;
        }
        Ok(())
    }

    /// Flushes the delay line: appends the last frames.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<()> {
        let c = self.channels;
        let left = self.pending.len() / c;
        self.pending.truncate(left * c);
        self.run(Some(left), out)?;
        let mut guard = 0;
        while self.out_frames < self.expected() && guard < 64 {
            self.pending.clear();
            self.run(Some(0), out)?;
            guard += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resample(x: &[f32], from: f64, to: f64, piece: usize) -> Vec<f32> {
        let mut r = Resampler::new(from, to, 1).unwrap().unwrap();
        let mut out = Vec::new();
        for c in x.chunks(piece) {
            r.push(c, &mut out).unwrap();
        }
        r.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn a_sine_keeps_its_frequency_phase_and_length() {
        // 5 Hz at 360 Hz -> 250 Hz, fed in odd pieces.
        let f = 5.0;
        let x: Vec<f32> = (0..3600)
            .map(|i| (std::f64::consts::TAU * f * i as f64 / 360.0).sin() as f32)
            .collect();
        let y = resample(&x, 360.0, 250.0, 777);
        assert_eq!(y.len(), 2500);
        // Away from the ends the output is the same sine sampled at 250 Hz (no delay).
        let err = (100..2400)
            .map(|k| (y[k] - (std::f64::consts::TAU * f * k as f64 / 250.0).sin() as f32).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-3, "max error {err}");
        // The piece size does not change the result.
        let z = resample(&x, 360.0, 250.0, 4096);
        let d = y
            .iter()
            .zip(&z)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn equal_rates_need_no_resampler_and_fractional_ones_are_refused() {
        assert!(Resampler::new(250.0, 250.0, 1).unwrap().is_none());
        assert!(Resampler::new(333.3, 250.0, 1).is_err());
    }
}

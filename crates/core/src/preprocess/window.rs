//! Cuts a stream of planar samples into model-sized windows with a hop, holding no more
//! than one window plus one chunk. A tail shorter than a window is zero-padded so every
//! sample of the recording is explained.

use std::collections::VecDeque;

use super::melspec::LogMel;
use super::{InputKind, InputSpec};

/// One window of samples at the model's rate.
#[derive(Clone, Debug)]
pub struct Window {
    pub index: u64,
    /// First sample (model rate).
    pub start: u64,
    /// Samples that are real (the rest is padding).
    pub valid: usize,
    /// (C, len) planar samples.
    pub samples: Vec<f32>,
}

pub enum Cut {
    /// Channel 0 samples from `start` on (for plots), in order, each sample once.
    Trace {
        start: u64,
        samples: Vec<f32>,
    },
    Window(Window),
}

pub struct Windower {
    len: usize,
    hop: usize,
    channels: usize,
    /// Per channel, samples from `buf_start` on.
    buf: Vec<VecDeque<f32>>,
    buf_start: u64,
    total: u64,
    next: u64,
    traced: u64,
    emitted: u64,
    last_end: u64,
}

impl Windower {
    pub fn new(len: usize, hop: usize, channels: usize) -> Self {
        Self {
            len,
            hop: hop.max(1),
            channels,
            buf: vec![VecDeque::new(); channels],
            buf_start: 0,
            total: 0,
            next: 0,
            traced: 0,
            emitted: 0,
            last_end: 0,
        }
    }

    fn trace_to(&mut self, end: u64, out: &mut Vec<Cut>) {
        if end > self.traced {
            let a = (self.traced - self.buf_start) as usize;
            let b = (end - self.buf_start) as usize;
            out.push(Cut::Trace {
                start: self.traced,
                samples: self.buf[0].range(a..b).copied().collect(),
            });
            self.traced = end;
        }
    }

    fn window(&mut self, start: u64, valid: usize) -> Window {
        let a = (start - self.buf_start) as usize;
        let mut samples = vec![0f32; self.channels * self.len];
        for (c, ch) in self.buf.iter().enumerate() {
            for (d, v) in samples[c * self.len..c * self.len + valid]
                .iter_mut()
                .zip(ch.range(a..a + valid))
            {
                *d = *v;
            }
        }
        let w = Window {
            index: self.emitted,
            start,
            valid,
            samples,
        };
        self.emitted += 1;
        self.last_end = start + valid as u64;
        w
    }

    fn trim(&mut self) {
        let keep_from = self.next.min(self.traced);
        if keep_from > self.buf_start {
            let n = ((keep_from - self.buf_start) as usize).min(self.buf[0].len());
            for ch in &mut self.buf {
                ch.drain(..n);
            }
            self.buf_start += n as u64;
        }
    }

    /// Adds planar samples (`channels` slices of equal length).
    pub fn push(&mut self, planar: &[Vec<f32>], out: &mut Vec<Cut>) {
        for (b, p) in self.buf.iter_mut().zip(planar) {
            b.extend(p.iter().copied());
        }
        self.total += planar.first().map_or(0, |p| p.len() as u64);
        while self.next + self.len as u64 <= self.total {
            let s = self.next;
            self.trace_to(s + self.len as u64, out);
            let w = self.window(s, self.len);
            out.push(Cut::Window(w));
            self.next += self.hop as u64;
        }
        // Samples in a gap between windows (hop > len) still belong to the trace.
        let gap_end = self.next.min(self.total);
        self.trace_to(gap_end, out);
        self.trim();
    }

    /// The rest of the trace and, if samples are left unexplained, a padded window.
    pub fn finish(&mut self, out: &mut Vec<Cut>) {
        let total = self.total;
        self.trace_to(total, out);
        if self.next < total && (total > self.last_end || self.emitted == 0) {
            let s = self.next;
            let w = self.window(s, (total - s) as usize);
            out.push(Cut::Window(w));
        }
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// The model input for one window: (C, L) normalised samples, or for audio models the
/// normalised (1, n_mels, frames) log-mel spectrogram.
pub struct Features {
    mel: Option<LogMel>,
    spec: InputSpec,
}

impl Features {
    pub fn new(spec: &InputSpec) -> Self {
        Self {
            mel: match (&spec.kind, &spec.frontend) {
                (InputKind::Audio, Some(m)) => Some(LogMel::new(m.clone())),
                _ => None,
            },
            spec: spec.clone(),
        }
    }

    /// Samples per window: the model's length, or for audio the samples whose centred
    /// frames make the model's frame count.
    pub fn window_len(&self) -> usize {
        match &self.mel {
            Some(m) => m.samples_for(self.frames()),
            None => self.spec.size[0],
        }
    }

    /// Spectrogram frames per window (audio models).
    pub fn frames(&self) -> usize {
        match &self.mel {
            Some(m) if m.config().time_major => self.spec.size[0],
            Some(_) => self.spec.size[1],
            None => 0,
        }
    }

    /// (n_mels, frames) from a model input or map laid out as the model takes it.
    pub fn mel_major(&self, x: &[f32]) -> Vec<f32> {
        match &self.mel {
            Some(m) if m.config().time_major => {
                let (t, b) = (self.frames(), m.config().n_mels);
                (0..b)
                    .flat_map(|j| (0..t).map(move |i| x[i * b + j]))
                    .collect()
            }
            _ => x.to_vec(),
        }
    }

    /// Channels of raw samples the front end takes.
    pub fn channels(&self) -> usize {
        if self.mel.is_some() {
            1
        } else {
            self.spec.channels
        }
    }

    pub fn mel(&self) -> Option<&LogMel> {
        self.mel.as_ref()
    }

    pub fn compute(&self, w: &Window) -> Vec<f32> {
        let s = &self.spec;
        let at = |v: &[f32], i: usize| v.get(i).copied();
        match &self.mel {
            Some(mel) => {
                let m = at(&s.mean, 0).unwrap_or(0.0);
                let d = at(&s.std, 0).unwrap_or(1.0);
                let spec: Vec<f32> = mel
                    .compute(&w.samples)
                    .into_iter()
                    .map(|v| (v / s.scale - m) / d)
                    .collect();
                if mel.config().time_major {
                    let (t, b) = (self.frames(), mel.config().n_mels);
                    (0..t)
                        .flat_map(|i| spec.iter().skip(i).step_by(t).take(b).copied())
                        .collect()
                } else {
                    spec
                }
            }
            None => {
                let len = self.window_len();
                let mut out = w.samples.clone();
                for (c, chunk) in out.chunks_mut(len).enumerate() {
                    let m = at(&s.mean, c).unwrap_or(0.0);
                    let d = at(&s.std, c).unwrap_or(1.0);
                    if m != 0.0 || d != 1.0 || s.scale != 1.0 {
                        for v in chunk {
                            *v = (*v / s.scale - m) / d;
                        }
                    }
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(len: usize, hop: usize, total: usize, piece: usize) -> (Vec<Window>, Vec<f32>) {
        let x: Vec<f32> = (0..total).map(|i| i as f32).collect();
        let mut w = Windower::new(len, hop, 1);
        let mut out = Vec::new();
        for p in x.chunks(piece) {
            w.push(&[p.to_vec()], &mut out);
        }
        w.finish(&mut out);
        let mut wins = Vec::new();
        let mut trace = Vec::new();
        for c in out {
            match c {
                Cut::Trace { start, samples } => {
                    assert_eq!(start as usize, trace.len());
                    trace.extend(samples);
                }
                Cut::Window(w) => wins.push(w),
            }
        }
        (wins, trace)
    }

    #[test]
    fn windows_tile_the_recording_with_a_padded_tail() {
        let (w, trace) = cut(10, 10, 35, 7);
        assert_eq!(trace, (0..35).map(|i| i as f32).collect::<Vec<_>>());
        let starts: Vec<u64> = w.iter().map(|w| w.start).collect();
        assert_eq!(starts, [0, 10, 20, 30]);
        assert_eq!(w[3].valid, 5);
        assert_eq!(
            &w[3].samples,
            &[30., 31., 32., 33., 34., 0., 0., 0., 0., 0.]
        );
        assert_eq!(w[1].samples[0], 10.0);
    }

    #[test]
    fn overlapping_and_gapped_hops() {
        let (w, _) = cut(10, 4, 30, 3);
        let starts: Vec<u64> = w.iter().map(|w| w.start).collect();
        // 0,4,...,20 are full; 24..30 is covered by the window at 20, so no tail.
        assert_eq!(starts, [0, 4, 8, 12, 16, 20]);
        let (w, trace) = cut(4, 10, 25, 6);
        assert_eq!(trace.len(), 25);
        let starts: Vec<u64> = w.iter().map(|w| w.start).collect();
        assert_eq!(starts, [0, 10, 20]);
        assert_eq!(w[2].samples, [20., 21., 22., 23.]);
        // A recording shorter than a window still gets one (padded) window.
        let (w, _) = cut(10, 10, 3, 3);
        assert_eq!((w.len(), w[0].valid), (1, 3));
    }
}

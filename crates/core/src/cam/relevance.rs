//! Relevance over a whole recording: each window's map, ReLU'd and resized to the
//! window (Captum's `LayerAttribution.interpolate(..., 'linear')` of a ReLU'd
//! LayerGradCam), is laid at the window's place; where windows overlap the values are
//! averaged. Maps are not min-max normalised per window, so windows stay comparable.

use std::collections::VecDeque;

use super::resize_linear;

/// Per-position relevance of one 1D window: ReLU(raw) linearly resized to `len`.
pub fn window_relevance(raw: &[f32], len: usize) -> Vec<f32> {
    let r: Vec<f32> = raw.iter().map(|v| v.max(0.0)).collect();
    resize_linear(&r, &[r.len()], &[len])
}

/// A spectrogram model's map: ReLU(raw (h', w')) bilinearly resized to the model input's
/// spectrogram dims.
pub fn window_relevance_tf(raw: &[f32], spatial: &[usize], dims: [usize; 2]) -> Vec<f32> {
    let r: Vec<f32> = raw.iter().map(|v| v.max(0.0)).collect();
    resize_linear(&r, spatial, &dims)
}

/// Mean over mel bands of a (mels, frames) map, then linear interpolation from frame
/// centres (frame t at sample `centre + t*hop`) to `len` samples.
pub fn frames_to_samples(
    tf: &[f32],
    mels: usize,
    frames: usize,
    hop: usize,
    centre: f32,
    len: usize,
) -> Vec<f32> {
    let prof: Vec<f32> = (0..frames)
        .map(|t| (0..mels).map(|m| tf[m * frames + t]).sum::<f32>() / mels as f32)
        .collect();
    (0..len)
        .map(|i| {
            let p = ((i as f32 - centre) / hop as f32).max(0.0);
            let k = (p.floor() as usize).min(frames - 1);
            let f = p - k as f32;
            let b = prof[(k + 1).min(frames - 1)];
            prof[k] * (1.0 - f) + b * f
        })
        .collect()
}

/// One output position: the mean of the windows that cover it and the class of the
/// covering window whose centre is nearest (none in a gap between windows).
#[derive(Clone, Debug, PartialEq)]
pub struct Combined {
    pub values: Vec<f32>,
    pub class: Option<usize>,
}

/// Streams the overlap-mean: windows arrive in order of their start, and everything
/// before the latest start is final and can be drained. Holds at most one window.
pub struct OverlapMean {
    dim: usize,
    /// Position of the first value still held.
    start: u64,
    sum: VecDeque<f32>,
    count: VecDeque<u32>,
    best: VecDeque<(f32, Option<usize>)>,
}

impl OverlapMean {
    /// `dim` values per position (1 for a signal, n_mels for a spectrogram's frames).
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            start: 0,
            sum: VecDeque::new(),
            count: VecDeque::new(),
            best: VecDeque::new(),
        }
    }

    fn grow(&mut self, end: u64) {
        while self.start + (self.count.len() as u64) < end {
            self.sum.extend(std::iter::repeat_n(0.0, self.dim));
            self.count.push_back(0);
            self.best.push_back((f32::INFINITY, None));
        }
    }

    /// Adds a window's values (position-major, `dim` per position) from `at` on, but
    /// only its first `valid` positions.
    pub fn add(&mut self, at: u64, values: &[f32], valid: usize, class: usize) {
        let n = (values.len() / self.dim).min(valid);
        self.grow(at + n as u64);
        let centre = at as f32 + n as f32 / 2.0;
        for i in 0..n {
            let pos = at + i as u64;
            if pos < self.start {
                continue;
            }
            let k = (pos - self.start) as usize;
            for d in 0..self.dim {
                self.sum[k * self.dim + d] += values[i * self.dim + d];
            }
            self.count[k] += 1;
            let dist = (pos as f32 + 0.5 - centre).abs();
            if dist < self.best[k].0 {
                self.best[k] = (dist, Some(class));
            }
        }
    }

    /// Drains the positions before `end` (final once no later window can start there).
    pub fn drain_to(&mut self, end: u64, out: &mut Vec<Combined>) {
        self.grow(end);
        while self.start < end {
            let n = self.count.pop_front().unwrap_or(0);
            let (_, class) = self.best.pop_front().unwrap_or((0.0, None));
            let values: Vec<f32> = self
                .sum
                .drain(..self.dim)
                .map(|s| if n > 0 { s / n as f32 } else { 0.0 })
                .collect();
            out.push(Combined { values, class });
            self.start += 1;
        }
    }
}

/// Maps a stream at one rate to another by linear interpolation: output j takes the
/// value at input position j * from / to (and the class of the nearest input).
pub struct RateMap {
    ratio: f64,
    /// Input values received so far (the last two are kept).
    seen: u64,
    prev: Option<(f32, Option<usize>)>,
    last: Option<(f32, Option<usize>)>,
    next_out: u64,
}

impl RateMap {
    /// From values at `from` Hz to `to` Hz.
    pub fn new(from: f64, to: f64) -> Self {
        Self {
            ratio: from / to,
            seen: 0,
            prev: None,
            last: None,
            next_out: 0,
        }
    }

    fn emit(&mut self, limit: Option<u64>, out: &mut Vec<(f32, Option<usize>)>) {
        loop {
            if limit.is_some_and(|l| self.next_out >= l) {
                return;
            }
            let p = self.next_out as f64 * self.ratio;
            let k = p.floor() as u64;
            // Needs inputs k and k+1; at the end (limit given) the last one is held.
            let (a, b) = match (self.prev, self.last) {
                (Some(a), Some(b)) if k + 2 == self.seen => (a, b),
                (_, Some(b)) if k + 1 == self.seen && limit.is_some() => (b, b),
                (_, Some(b)) if k + 1 >= self.seen && limit.is_some() => (b, b),
                _ => return,
            };
            let f = (p - k as f64) as f32;
            let v = a.0 * (1.0 - f) + b.0 * f;
            let class = if f < 0.5 { a.1 } else { b.1 };
            out.push((v, class));
            self.next_out += 1;
        }
    }

    /// Feeds input values; appends the outputs they complete.
    pub fn push(&mut self, input: &[Combined], out: &mut Vec<(f32, Option<usize>)>) {
        for c in input {
            self.prev = self.last;
            self.last = Some((c.values[0], c.class));
            self.seen += 1;
            self.emit(None, out);
        }
    }

    /// Emits the outputs up to `total` (the input's length at the output rate).
    pub fn finish(&mut self, total: u64, out: &mut Vec<(f32, Option<usize>)>) {
        self.emit(Some(total), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_windows_average_and_the_nearest_centre_names_the_class() {
        let mut m = OverlapMean::new(1);
        let mut out = Vec::new();
        m.add(0, &[1.0; 4], 4, 0);
        m.drain_to(2, &mut out);
        m.add(2, &[3.0; 4], 4, 1);
        m.drain_to(8, &mut out);
        let v: Vec<f32> = out.iter().map(|c| c.values[0]).collect();
        assert_eq!(v, [1., 1., 2., 2., 3., 3., 0., 0.]);
        let cls: Vec<Option<usize>> = out.iter().map(|c| c.class).collect();
        // Positions 2, 3: window 0's centre is 2, window 1's is 4 -> 2 is nearer 0's.
        assert_eq!(
            cls,
            [
                Some(0),
                Some(0),
                Some(0),
                Some(1),
                Some(1),
                Some(1),
                None,
                None
            ]
        );
    }

    #[test]
    fn rate_map_interpolates_and_ends_on_the_input_length() {
        let inp: Vec<Combined> = (0..5)
            .map(|i| Combined {
                values: vec![i as f32],
                class: Some(i),
            })
            .collect();
        let mut r = RateMap::new(5.0, 10.0); // upsample x2
        let mut out = Vec::new();
        r.push(&inp[..3], &mut out);
        r.push(&inp[3..], &mut out);
        r.finish(10, &mut out);
        let v: Vec<f32> = out.iter().map(|o| o.0).collect();
        assert_eq!(v, [0., 0.5, 1., 1.5, 2., 2.5, 3., 3.5, 4., 4.]);
        assert_eq!(out[3].1, Some(2));
    }

    #[test]
    fn captum_linear_interpolation_of_a_window() {
        // F.interpolate(torch.tensor([[[0., 2., -1.]]]), size=6, mode='linear')
        // after ReLU: [0, 2, 0] -> [0, 0.5, 1.5, 1.5, 0.5, 0]
        let v = window_relevance(&[0.0, 2.0, -1.0], 6);
        assert_eq!(v, [0.0, 0.5, 1.5, 1.5, 0.5, 0.0]);
    }
}

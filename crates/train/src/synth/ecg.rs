//! Synthetic single-lead ECG: P-QRS-T beats as sums of Gaussians, with noise and baseline
//! wander. Class `ectopic` has one premature, wide, P-less ventricular-like beat followed
//! by a compensatory pause; its window is the ground truth.

use rand::Rng as _;
use rand_distr::{Distribution, Normal};

use super::Rng;

pub const LABELS: [&str; 2] = ["normal", "ectopic"];
pub const RATE: f32 = 250.0;
pub const LEN: usize = 2000;
/// The ground-truth window around an ectopic beat's R peak, in seconds.
pub const WINDOW: (f32, f32) = (-0.12, 0.45);

pub struct EcgSample {
    pub signal: Vec<f32>,
    pub class: usize,
    /// [start, end) samples of the ectopic beat, for class 1.
    pub window: Option<(usize, usize)>,
}

/// (centre offset from R in s, width in s, amplitude in mV)
type Wave = (f32, f32, f32);

struct Morph {
    normal: Vec<Wave>,
    ectopic: Vec<Wave>,
}

impl Morph {
    fn random(rng: &mut Rng) -> Self {
        let r = rng.random_range(0.8..1.3);
        let normal = vec![
            (
                -rng.random_range(0.15..0.2),
                rng.random_range(0.02..0.03),
                rng.random_range(0.1..0.2),
            ),
            (-0.035, 0.008, -rng.random_range(0.05..0.15)),
            (0.0, rng.random_range(0.009..0.013), r),
            (0.035, 0.01, -rng.random_range(0.1..0.3)),
            (
                rng.random_range(0.24..0.3),
                rng.random_range(0.04..0.06),
                rng.random_range(0.2..0.4),
            ),
        ];
        let ectopic = vec![
            (
                0.0,
                rng.random_range(0.03..0.045),
                r * rng.random_range(1.1..1.5),
            ),
            (
                0.07,
                rng.random_range(0.025..0.035),
                -rng.random_range(0.3..0.6),
            ),
            (
                rng.random_range(0.28..0.34),
                rng.random_range(0.05..0.07),
                -rng.random_range(0.25..0.45),
            ),
        ];
        Self { normal, ectopic }
    }
}

fn add_beat(sig: &mut [f32], rate: f32, r_time: f32, waves: &[Wave]) {
    for &(c, w, a) in waves {
        let centre = r_time + c;
        let lo = (((centre - 5.0 * w) * rate).floor().max(0.0)) as usize;
        let hi = (((centre + 5.0 * w) * rate).ceil().max(0.0) as usize).min(sig.len());
        for (i, v) in sig.iter_mut().enumerate().take(hi).skip(lo) {
            let t = i as f32 / rate - centre;
            *v += a * (-(t * t) / (2.0 * w * w)).exp();
        }
    }
}

/// A recording of `len` samples at `rate` Hz; each beat (not the first) is ectopic with
/// probability `p_ectopic`, or exactly one is when `force_one`. Returns the signal and
/// the ectopic windows.
pub fn record(
    rng: &mut Rng,
    len: usize,
    rate: f32,
    p_ectopic: f32,
    force_one: bool,
) -> (Vec<f32>, Vec<(usize, usize)>) {
    let morph = Morph::random(rng);
    let rr = rng.random_range(0.6..1.0f32);
    let dur = len as f32 / rate;
    let mut beats: Vec<f32> = Vec::new();
    let mut t = rng.random_range(0.1..rr);
    while t < dur + 0.5 {
        beats.push(t);
        t += rr * rng.random_range(0.95..1.05);
    }
    let mut sig = vec![0f32; len];
    let mut windows = Vec::new();
    // Beats whose window fits inside the record may become ectopic.
    let eligible: Vec<usize> = (1..beats.len())
        .filter(|&k| beats[k] + WINDOW.0 > 0.0 && beats[k] + WINDOW.1 < dur)
        .collect();
    let forced = if force_one && !eligible.is_empty() {
        Some(eligible[rng.random_range(0..eligible.len())])
    } else {
        None
    };
    let mut k = 0;
    while k < beats.len() {
        let t = beats[k];
        let ectopic = match forced {
            Some(f) => k == f,
            None => k > 0 && eligible.contains(&k) && rng.random::<f32>() < p_ectopic,
        };
        if ectopic {
            // Premature by 30-45 % of the RR interval; the next beat keeps the sinus
            // rhythm, which leaves the compensatory pause.
            let prev = if k > 0 { beats[k - 1] } else { t - rr };
            let te = prev + rr * rng.random_range(0.55..0.7);
            add_beat(&mut sig, rate, te, &morph.ectopic);
            let s = ((te + WINDOW.0) * rate).max(0.0) as usize;
            let e = (s + ((WINDOW.1 - WINDOW.0) * rate).round() as usize).min(len);
            windows.push((s, e));
        } else {
            add_beat(&mut sig, rate, t, &morph.normal);
        }
        k += 1;
    }
    // Baseline wander (breathing) and measurement noise.
    let amp = rng.random_range(0.05..0.3f32);
    let f = rng.random_range(0.15..0.5f32);
    let ph = rng.random_range(0.0..std::f32::consts::TAU);
    let amp2 = rng.random_range(0.0..0.1f32);
    let f2 = rng.random_range(0.02..0.1f32);
    let noise = Normal::new(0.0f32, rng.random_range(0.01..0.05)).expect("valid sigma");
    for (i, v) in sig.iter_mut().enumerate() {
        let t = i as f32 / rate;
        *v += amp * (std::f32::consts::TAU * f * t + ph).sin()
            + amp2 * (std::f32::consts::TAU * f2 * t).sin()
            + noise.sample(rng);
    }
    (sig, windows)
}

/// One 8 s, 250 Hz window, class chosen uniformly.
pub fn sample(rng: &mut Rng) -> EcgSample {
    let class = rng.random_range(0..2);
    let (signal, windows) = record(rng, LEN, RATE, 0.0, class == 1);
    EcgSample {
        signal,
        class,
        window: windows.first().copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ectopic_samples_have_one_window_and_normal_none() {
        let mut rng = crate::synth::rng(3);
        for _ in 0..20 {
            let s = sample(&mut rng);
            assert_eq!(s.signal.len(), LEN);
            assert!(s.signal.iter().all(|v| v.is_finite()));
            match s.class {
                1 => {
                    let (a, b) = s.window.expect("window");
                    assert!(b > a && b <= LEN);
                    assert_eq!(b - a, ((WINDOW.1 - WINDOW.0) * RATE).round() as usize);
                }
                _ => assert!(s.window.is_none()),
            }
        }
    }
}

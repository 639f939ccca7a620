//! Audio events: one tone, chirp, click train or noise burst at a random time in a
//! noisy 3 s clip at 16 kHz; the ground truth is the event's interval.

use rand::Rng as _;
use rand_distr::{Distribution, Normal};

use super::Rng;

pub const LABELS: [&str; 4] = ["tone", "chirp", "clicks", "noise"];
pub const RATE: u32 = 16000;
pub const LEN: usize = 48000;

pub struct AudioSample {
    pub wave: Vec<f32>,
    pub class: usize,
    /// [start, end) in samples.
    pub interval: (usize, usize),
}

/// Raised-cosine ramps of 10 ms at both ends of an event.
fn envelope(i: usize, n: usize) -> f32 {
    let ramp = (0.01 * RATE as f32) as usize;
    let k = i.min(n - 1 - i);
    if k >= ramp {
        1.0
    } else {
        0.5 - 0.5 * (std::f32::consts::PI * k as f32 / ramp as f32).cos()
    }
}

pub fn event(rng: &mut Rng, class: usize, n: usize) -> Vec<f32> {
    let sr = RATE as f32;
    let amp = rng.random_range(0.15..0.5f32);
    let mut e = vec![0f32; n];
    match class {
        0 => {
            let f = rng.random_range(300.0..3000.0f32);
            for (i, v) in e.iter_mut().enumerate() {
                let t = i as f32 / sr;
                *v = (std::f32::consts::TAU * f * t).sin()
                    + 0.3 * (std::f32::consts::TAU * 2.0 * f * t).sin();
            }
        }
        1 => {
            let (mut f0, mut f1) = (
                rng.random_range(200.0..1000.0f32),
                rng.random_range(2000.0..6000.0f32),
            );
            if rng.random::<bool>() {
                std::mem::swap(&mut f0, &mut f1);
            }
            let dur = n as f32 / sr;
            let k = (f1 - f0) / dur;
            for (i, v) in e.iter_mut().enumerate() {
                let t = i as f32 / sr;
                *v = (std::f32::consts::TAU * (f0 * t + 0.5 * k * t * t)).sin();
            }
        }
        2 => {
            let rate = rng.random_range(8.0..30.0f32);
            let period = (sr / rate) as usize;
            let decay = rng.random_range(0.0005..0.002f32) * sr;
            let noise = Normal::new(0.0f32, 1.0).expect("valid sigma");
            let mut start = rng.random_range(0..period.max(1));
            while start < n {
                for j in 0..(decay * 5.0) as usize {
                    if start + j < n {
                        e[start + j] += 2.0 * noise.sample(rng) * (-(j as f32) / decay).exp();
                    }
                }
                start += period;
            }
        }
        _ => {
            let noise = Normal::new(0.0f32, 0.6).expect("valid sigma");
            // A one-pole low-pass colours the burst differently from the background.
            let a = rng.random_range(0.0..0.8f32);
            let mut prev = 0.0;
            for v in e.iter_mut() {
                prev = a * prev + (1.0 - a) * noise.sample(rng);
                *v = prev * (1.0 + a);
            }
        }
    }
    for (i, v) in e.iter_mut().enumerate() {
        *v *= amp * envelope(i, n);
    }
    e
}

/// One clip with one event, class chosen uniformly.
pub fn sample(rng: &mut Rng) -> AudioSample {
    let class = rng.random_range(0..LABELS.len());
    let n = (rng.random_range(0.3..0.8f32) * RATE as f32) as usize;
    let start =
        rng.random_range((0.1 * RATE as f32) as usize..LEN - n - (0.1 * RATE as f32) as usize);
    let bg = Normal::new(0.0f32, rng.random_range(0.005..0.03)).expect("valid sigma");
    let hum = rng.random_range(0.0..0.02f32);
    let mut wave: Vec<f32> = (0..LEN)
        .map(|i| {
            bg.sample(rng) + hum * (std::f32::consts::TAU * 50.0 * i as f32 / RATE as f32).sin()
        })
        .collect();
    for (i, v) in event(rng, class, n).into_iter().enumerate() {
        wave[start + i] += v;
    }
    AudioSample {
        wave,
        class,
        interval: (start, start + n),
    }
}

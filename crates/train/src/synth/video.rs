//! Clips of moving shapes over a textured background, encoded with our own encoder:
//! the sample video, and the test inputs of the video pipeline (positions are known).

use std::path::Path;

use rand::Rng as _;

use super::shapes::{random_shape, Canvas, Shape};
use super::Rng;
use camstream_media::decode::VideoInfo;
use camstream_media::encode::{AudioSource, EncodeError, EncodeOptions, VideoEncoder};
use camstream_media::frame::Picture;

#[derive(Clone, Debug)]
pub struct ClipSpec {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u32,
    /// One or more moving shapes (classes taken in turn from a random start).
    pub shapes: usize,
    pub audio: bool,
    /// Irregular frame times (variable frame rate), in a 1/1000 s time base.
    pub vfr: bool,
    pub seed: u64,
}

/// Ground truth of one frame: (class, [x0, y0, x1, y1]) per shape.
pub type FrameTruth = Vec<(usize, [u32; 4])>;

struct Mover {
    shape: Shape,
    vx: f32,
    vy: f32,
    spin: f32,
}

/// A short beep every second on quiet noise, so an audio track is easy to check.
fn beeps(rate: u32, seconds: f64, rng: &mut Rng) -> Vec<f32> {
    let n = (seconds * rate as f64).ceil() as usize;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let on = t.fract() < 0.15;
            let tone = if on {
                0.3 * (std::f32::consts::TAU * 440.0 * t).sin()
            } else {
                0.0
            };
            tone + 0.01 * (rng.random::<f32>() - 0.5)
        })
        .collect()
}

/// Writes the clip and returns each frame's ground truth.
pub fn write_clip(
    path: &Path,
    format: &str,
    spec: &ClipSpec,
) -> Result<Vec<FrameTruth>, EncodeError> {
    let mut rng = super::rng(spec.seed);
    let (w, h) = (spec.width, spec.height);
    let background = Canvas::textured(&mut rng, w, h);
    let bg_mean = background.mean();
    let short = w.min(h) as f32;
    let first_class = rng.random_range(0..3);
    let mut movers: Vec<Mover> = (0..spec.shapes)
        .map(|k| {
            let class = (first_class + k) % 3;
            let speed = short * rng.random_range(0.25..0.45);
            let dir = rng.random_range(0.0..std::f32::consts::TAU);
            Mover {
                shape: random_shape(&mut rng, class, w, h, 0.35 * short, 0.5 * short, bg_mean),
                vx: speed * dir.cos(),
                vy: speed * dir.sin(),
                spin: rng.random_range(-1.0..1.0),
            }
        })
        .collect();
    let (tb, frame_ticks) = if spec.vfr {
        ((1, 1000), 1000 / spec.fps as i64)
    } else {
        ((1, spec.fps as i32), 1)
    };
    let info = VideoInfo {
        time_base: tb,
        has_audio: spec.audio,
        ..VideoInfo::constant_rate(path, (w, h), spec.fps as i32, Some(spec.frames as u64))
    };
    let audio = if spec.audio {
        AudioSource::Pcm {
            rate: 48000,
            samples: beeps(48000, info.duration_s, &mut rng),
        }
    } else {
        AudioSource::None
    };
    let opts = EncodeOptions {
        crf: 23,
        preset: "veryfast".into(),
        threads: 0,
    };
    let mut enc = VideoEncoder::create(path, format, &info, &opts, audio)?;
    let dt = 1.0 / spec.fps as f32;
    let mut truth = Vec::with_capacity(spec.frames as usize);
    let mut pts = 0i64;
    for _ in 0..spec.frames {
        let mut canvas = Canvas {
            w,
            h,
            px: background.px.clone(),
        };
        let mut boxes = Vec::new();
        for m in &movers {
            boxes.push((m.shape.class, canvas.draw(&m.shape)));
        }
        enc.write(Picture::Rgb(canvas.to_image()), pts)?;
        truth.push(boxes);
        // Variable frame rate: frame durations between 0.5 and 1.5 of the nominal.
        pts += if spec.vfr {
            (frame_ticks as f32 * rng.random_range(0.5..1.5))
                .round()
                .max(1.0) as i64
        } else {
            frame_ticks
        };
        for m in movers.iter_mut() {
            let r = m.shape.size / 2.0 + 1.0;
            m.shape.cx += m.vx * dt;
            m.shape.cy += m.vy * dt;
            m.shape.angle += m.spin * dt;
            if m.shape.cx < r || m.shape.cx > w as f32 - r {
                m.vx = -m.vx;
                m.shape.cx = m.shape.cx.clamp(r, w as f32 - r);
            }
            if m.shape.cy < r || m.shape.cy > h as f32 - r {
                m.vy = -m.vy;
                m.shape.cy = m.shape.cy.clamp(r, h as f32 - r);
            }
        }
    }
    enc.finish(None)?;
    Ok(truth)
}

//! Video models (3D CNNs) in the streaming pipeline: clips cut from the frames, every
//! frame annotated with the slice of its time position, clip records, bounded memory,
//! and a map whose temporal peak is where the motion is.

mod common;

use std::path::{Path, PathBuf};

use camstream_media::decode::{VideoDecoder, VideoInfo};
use camstream_media::encode::{AudioSource, EncodeOptions, VideoEncoder};
use camstream_media::frame::Picture;
use camstream_train::synth::video::{write_clip, ClipSpec};
use common::{camstream, ok, s};
use image::{Rgb, RgbImage};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn frames_of(path: &Path) -> (u64, bool) {
    let mut d = VideoDecoder::open(path, Default::default()).unwrap();
    let audio = d.info().has_audio;
    let mut n = 0;
    while d.next_frame().unwrap().is_some() {
        n += 1;
    }
    (n, audio)
}

/// 60 frames with audio through r2plus1d_18: clips of 8 samples every 4, every 2nd
/// frame a sample. 30 samples make clips at samples 0, 4, ..., 20 and a last one from 24
/// padded with sample 29: 7 clips, every frame written once, with its clip.
#[test]
fn a_video_model_annotates_every_frame_with_its_clip() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.mp4");
    let spec = ClipSpec {
        width: 160,
        height: 96,
        fps: 25,
        frames: 60,
        shapes: 1,
        audio: true,
        vfr: false,
        seed: 5,
    };
    write_clip(&input, "mp4", &spec).unwrap();
    let (out, frames, clips) = (
        tmp.path().join("out.mp4"),
        tmp.path().join("frames.jsonl"),
        tmp.path().join("clips.jsonl"),
    );
    ok(&camstream(&[
        "video",
        s(&input),
        "-o",
        s(&out),
        "-m",
        "r2plus1d_18",
        "--clip-len",
        "8",
        "--clip-stride",
        "4",
        "--frame-step",
        "2",
        "--frames-json",
        s(&frames),
        "--clips-json",
        s(&clips),
        "-q",
    ]));
    assert_eq!(frames_of(&out), (60, true), "frame-exact, with its audio");
    let c = lines(&clips);
    assert_eq!(c.len(), 7);
    for (k, r) in c.iter().enumerate() {
        assert_eq!(r["clip"], k as u64);
        assert_eq!(r["first_frame"], 8 * k as u64, "sample 4k is frame 8k");
        assert_eq!(r["padded"], k == 6);
        let last = if k == 6 { 58 } else { 8 * k as u64 + 14 };
        assert_eq!(r["last_frame"], last);
    }
    let f = lines(&frames);
    assert_eq!(f.len(), 60);
    for (i, r) in f.iter().enumerate() {
        assert_eq!(r["index"], i as u64);
        // The nearest clip's middle: clip k covers samples 4k..4k+8, middle 4k + 3.5.
        let q = i as f64 / 2.0;
        let q = q.floor();
        let nearest = (0..7u64)
            .min_by(|&a, &b| {
                let d = |k: u64| ((4 * k) as f64 + 3.5 - q).abs();
                d(a).partial_cmp(&d(b)).unwrap()
            })
            .unwrap();
        assert_eq!(r["clip"], nearest, "frame {i}");
        let class = &c[nearest as usize]["class"];
        assert_eq!(&r["class"], class, "frame {i} shows its clip's class");
    }
}

/// The hand-built motion detector of `samples/models/motion3d.toml`: Grad-CAM of class
/// "motion" at `relu` is |frame difference|, where and when something moves.
fn motion_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/models/motion3d.toml")
}

/// A grey video with a white square that stands still except during frames
/// `moving` (it slides right by 2 px a frame there).
fn square_video(path: &Path, frames: u32, moving: std::ops::Range<u32>) {
    let (w, h) = (64u32, 64u32);
    let info = VideoInfo::constant_rate(path, (w, h), 25, Some(frames as u64));
    let opts = EncodeOptions {
        crf: 10,
        preset: "ultrafast".into(),
        threads: 0,
    };
    let mut enc = VideoEncoder::create(path, "mp4", &info, &opts, AudioSource::None).unwrap();
    let mut x = 8u32;
    for f in 0..frames {
        if moving.contains(&f) {
            x += 2;
        }
        let img = RgbImage::from_fn(w, h, |px, py| {
            let inside = (x..x + 12).contains(&px) && (26..38).contains(&py);
            Rgb(if inside { [240; 3] } else { [60; 3] })
        });
        enc.write(Picture::Rgb(img), f as i64).unwrap();
    }
    enc.finish(None).unwrap();
}

/// The square moves during frames 20..28 of 48 only. Clips of 8 side by side: the
/// clip map of class "motion" is zero where nothing moves, so the hottest frames (their
/// peaks in the frame records) are inside the interval, and clips without motion have
/// only cold frames.
#[test]
fn the_temporal_peak_falls_where_the_shape_moves() {
    let tmp = tempfile::tempdir().unwrap();
    let model = motion_model();
    let input = tmp.path().join("square.mp4");
    square_video(&input, 48, 20..28);
    let out = tmp.path().join("out.mp4");
    let frames = tmp.path().join("frames.jsonl");
    // One scale for the whole video (`clip`), so still clips stay cold.
    ok(&camstream(&[
        "video",
        s(&input),
        "-o",
        s(&out),
        "-m",
        s(&model),
        "-c",
        "motion",
        "--frames-json",
        s(&frames),
        "--norm",
        "clip",
        "--no-label",
        "-q",
    ]));
    // Decode the annotated video. The picture is grey, so red minus blue is the
    // overlay's colour alone (JET runs from blue, cold, to red, hot): a frame's heat is
    // its hottest pixel's.
    let mut d = VideoDecoder::open(&out, Default::default()).unwrap();
    let mut heat = Vec::new();
    while let Some(f) = d.next_frame().unwrap() {
        let rgb = f.picture.into_rgb().unwrap();
        let rb = rgb.pixels().map(|p| p[0] as f64 - p[2] as f64);
        heat.push(rb.fold(f64::NEG_INFINITY, f64::max));
    }
    assert_eq!(heat.len(), 48);
    let peak = (0..48)
        .max_by(|&a, &b| heat[a].partial_cmp(&heat[b]).unwrap())
        .unwrap();
    eprintln!("heat per frame: {heat:.0?}; peak at frame {peak}");
    assert!((19..29).contains(&peak), "peak at frame {peak}: {heat:?}");
    let still = heat[..12]
        .iter()
        .chain(&heat[40..])
        .fold(f64::NEG_INFINITY, |m, v| m.max(*v));
    assert!(
        heat[peak] > still + 20.0,
        "moving {:.0} vs still {still:.0}",
        heat[peak]
    );
    let records = lines(&frames);
    assert!(records.iter().all(|r| r["label"] == "motion"));
}

/// Memory is bounded by the clip length, never by the video: 10 s and 60 s of input
/// through the clip pipeline peak at the same RSS (the report's figure).
#[test]
fn clip_memory_is_flat_from_10_to_60_seconds() {
    let tmp = tempfile::tempdir().unwrap();
    let model = motion_model();
    let mut peaks = Vec::new();
    for (name, frames) in [("s10.mp4", 250), ("s60.mp4", 1500)] {
        let input = tmp.path().join(name);
        let spec = ClipSpec {
            width: 160,
            height: 96,
            fps: 25,
            frames,
            shapes: 1,
            audio: false,
            vfr: false,
            seed: 3,
        };
        write_clip(&input, "mp4", &spec).unwrap();
        let (out, report) = (tmp.path().join("o.mp4"), tmp.path().join("r.json"));
        ok(&camstream(&[
            "video",
            s(&input),
            "-o",
            s(&out),
            "-m",
            s(&model),
            "--clip-stride",
            "4",
            "--report",
            s(&report),
            "-q",
        ]));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        assert_eq!(r["frames"], frames);
        peaks.push(r["peak_rss_mb"].as_f64().unwrap());
    }
    eprintln!("peak RSS: 10 s {:.1} MB, 60 s {:.1} MB", peaks[0], peaks[1]);
    // A frame kept per frame would add 1250 x 46 KB = 58 MB, half the peak.
    assert!(peaks[1] <= peaks[0] * 1.15, "{peaks:?}");
}

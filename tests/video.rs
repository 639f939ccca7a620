//! The video pipeline end to end on clips the test makes with our own encoder (real
//! FFmpeg, no mocks), checked with our own decoder.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use camstream_media::decode::{Section, VideoDecoder};
use camstream_train::synth::video::{write_clip, ClipSpec, FrameTruth};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_camstream")
}

fn shapes_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/models/shapes.toml")
}

fn clip(dir: &Path, name: &str, spec: ClipSpec) -> (PathBuf, Vec<FrameTruth>) {
    let p = dir.join(name);
    let t = write_clip(&p, "mp4", &spec).expect("write clip");
    (p, t)
}

fn spec(w: u32, h: u32, frames: u32, audio: bool) -> ClipSpec {
    ClipSpec {
        width: w,
        height: h,
        fps: 25,
        frames,
        shapes: 1,
        audio,
        vfr: false,
        seed: 11,
    }
}

/// Runs camstream, killing it if it does not finish in time (a hang fails the test).
fn run(args: &[&str], limit: Duration) -> (Output, Duration) {
    run_env(args, &[], limit)
}

/// `run` with environment variables set (test builds read CAMSTREAM_FAIL_AT).
fn run_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    let mut child = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("camstream {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (out, start.elapsed())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (frame times in ms, width, height, fps, has audio); containers differ in time base.
fn probe(p: &Path) -> (Vec<i64>, u32, u32, (i32, i32), bool) {
    let mut d = VideoDecoder::open(p, Section::default()).expect("open output");
    let info = d.info().clone();
    let mut pts = Vec::new();
    while let Some(f) = d.next_frame().expect("decode") {
        pts.push((f.seconds * 1000.0).round() as i64);
    }
    (pts, info.width, info.height, info.rate, info.has_audio)
}

fn audio_packets(p: &Path) -> usize {
    camstream_media::decode::init();
    let mut ictx = ffmpeg_next::format::input(p).unwrap();
    let idx = ictx
        .streams()
        .best(ffmpeg_next::media::Type::Audio)
        .map(|s| s.index());
    let Some(idx) = idx else { return 0 };
    ictx.packets().filter(|(s, _)| s.index() == idx).count()
}

fn no_leftovers(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(camstream_media::io::TEMP_PREFIX) || n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[test]
fn output_keeps_frames_timing_size_and_audio() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = clip(tmp.path(), "in.mp4", spec(320, 180, 50, true));
    let out = tmp.path().join("out.mp4");
    let (o, _) = run(
        &[
            "video",
            s(&input),
            "-o",
            s(&out),
            "-m",
            s(&shapes_model()),
            "-q",
            "--batch",
            "4",
        ],
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = probe(&input);
    let b = probe(&out);
    assert_eq!(b.0.len(), 50, "frame count");
    assert_eq!(a.0, b.0, "timestamps");
    assert_eq!((a.1, a.2, a.3), (b.1, b.2, b.3), "size and rate");
    assert!(b.4, "audio stream kept");
    assert_eq!(
        audio_packets(&input),
        audio_packets(&out),
        "audio packets copied unchanged"
    );
    no_leftovers(tmp.path());
}

#[test]
fn odd_size_variable_rate_and_sections() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sp = spec(321, 241, 40, false);
    sp.vfr = true;
    let (input, _) = clip(tmp.path(), "odd.mp4", sp);
    let out = tmp.path().join("odd_out.mkv");
    let (o, _) = run(
        &[
            "video",
            s(&input),
            "-o",
            s(&out),
            "-m",
            s(&shapes_model()),
            "-q",
            "--every",
            "3",
        ],
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = probe(&input);
    let b = probe(&out);
    assert_eq!((b.1, b.2), (321, 241));
    assert_eq!(a.0, b.0, "irregular timestamps preserved");
    assert!(!b.4);

    // A section: 0.4 s from 0.4 s of a 25 fps clip = 10 frames, timestamps from 0.
    let (input, _) = clip(tmp.path(), "cfr.mp4", spec(160, 96, 40, true));
    let out = tmp.path().join("cut.mp4");
    let (o, _) = run(
        &[
            "video",
            s(&input),
            "-o",
            s(&out),
            "-m",
            s(&shapes_model()),
            "-q",
            "--start",
            "0.4",
            "--duration",
            "0.4",
        ],
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let b = probe(&out);
    assert_eq!(b.0.len(), 10, "{:?}", b.0);
    assert_eq!(b.0[0], 0);
    assert!(b.4);
}

#[test]
fn heatmap_peak_follows_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, truth) = clip(tmp.path(), "move.mp4", spec(320, 180, 60, false));
    let out = tmp.path().join("move_out.mp4");
    let json = tmp.path().join("frames.jsonl");
    let (o, _) = run(
        &[
            "video",
            s(&input),
            "-o",
            s(&out),
            "-m",
            s(&shapes_model()),
            "-q",
            "--frames-json",
            s(&json),
        ],
        Duration::from_secs(180),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), truth.len());
    let mut hits = 0;
    for (l, t) in lines.iter().zip(&truth) {
        let (x, y) = (
            l["peak_x"].as_u64().unwrap() as u32,
            l["peak_y"].as_u64().unwrap() as u32,
        );
        let [x0, y0, x1, y1] = t[0].1;
        if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
            hits += 1;
        }
    }
    let rate = hits as f32 / truth.len() as f32;
    eprintln!("pointing game over frames: {:.1} %", rate * 100.0);
    // 83 % with the shipped model: its 16x16 layer lights these large shapes' rims, and
    // the peak sometimes sits just outside the box (README, the shapes task). Chance is
    // the box's share of the frame, about a tenth.
    assert!(rate >= 0.8, "pointing game {rate}");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let m = shapes_model();
    let (input, _) = clip(t, "ok.mp4", spec(160, 96, 20, true));
    let bytes = std::fs::read(&input).unwrap();
    let truncated = t.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let text = t.join("notes.mp4");
    std::fs::write(&text, "not a video at all").unwrap();
    let wav = t.join("sound.wav");
    {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&wav, spec).unwrap();
        for i in 0..8000 {
            w.write_sample(((i as f32 * 0.1).sin() * 1000.0) as i16)
                .unwrap();
        }
        w.finalize().unwrap();
    }
    for (bad, expect) in [
        (t.join("missing.mp4"), "no such file"),
        (truncated, "truncated.mp4"),
        (text, "not a media file"),
        (wav, "no video stream"),
    ] {
        let out = t.join("bad_out.mp4");
        let (o, _) = run(
            &["video", s(&bad), "-o", s(&out), "-m", s(&m), "-q"],
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {err}");
        assert!(err.contains(expect), "{bad:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(!out.exists());
    }
    no_leftovers(t);
}

#[test]
fn a_failing_stage_stops_everything_and_leaves_no_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = clip(tmp.path(), "long.mp4", spec(160, 96, 250, true));
    for stage in ["decode", "preprocess", "model", "overlay", "encode"] {
        let out = tmp.path().join(format!("{stage}.mp4"));
        let at = format!("{stage}:12");
        let (o, took) = run_env(
            &[
                "video",
                s(&input),
                "-o",
                s(&out),
                "-m",
                s(&shapes_model()),
                "-q",
            ],
            &[("CAMSTREAM_FAIL_AT", &at)],
            Duration::from_secs(60),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stage}: {err}");
        assert!(
            err.contains(&format!("stage {stage} failed at frame 12")),
            "{err}"
        );
        assert!(!out.exists(), "{stage}: output must not exist");
        eprintln!("{stage}: failed run ended after {took:?}");
    }
    no_leftovers(tmp.path());
}

#[test]
fn memory_stays_flat_for_a_longer_input() {
    let tmp = tempfile::tempdir().unwrap();
    // Both clips are long enough for every queue to fill (a 2 s clip ended before they
    // did, 12 % under a 12 s one): growth past that is per frame. Runs of one clip vary
    // by ~7 %; a frame kept per frame would add 50 MB (+35 %) over the 300 more.
    let (short, _) = clip(tmp.path(), "short.mp4", spec(320, 180, 150, false));
    let (long, _) = clip(tmp.path(), "long.mp4", spec(320, 180, 450, false));
    let mut peaks = Vec::new();
    for input in [&short, &long] {
        let out = tmp.path().join("o.mp4");
        let rep = tmp.path().join("r.json");
        let (o, _) = run(
            &[
                "video",
                s(input),
                "-o",
                s(&out),
                "-m",
                s(&shapes_model()),
                "-q",
                "--report",
                s(&rep),
            ],
            Duration::from_secs(300),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let r: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
        peaks.push(r["peak_rss_mb"].as_f64().unwrap());
        stages_count_frames_and_cpu(&r);
    }
    eprintln!(
        "peak RSS: 6 s input {:.1} MB, 18 s input {:.1} MB",
        peaks[0], peaks[1]
    );
    assert!(peaks[1] <= peaks[0] * 1.15, "{peaks:?}");
}

/// A run's report: every stage handled every frame, spent CPU on its own threads, and
/// the stages' CPU fits in the process's.
fn stages_count_frames_and_cpu(r: &serde_json::Value) {
    let frames = r["frames"].as_u64().unwrap();
    let stages = r["stages"].as_array().unwrap();
    let names: Vec<&str> = stages
        .iter()
        .map(|st| st["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["decode", "preprocess", "model", "overlay", "encode"]
    );
    let mut own = 0.0;
    for st in stages {
        assert_eq!(st["count"].as_u64(), Some(frames), "{st}");
        let cpu = st["cpu_s"].as_f64().unwrap();
        assert!(cpu > 0.0, "{st}");
        own += cpu;
    }
    let all = r["cpu_s"].as_f64().unwrap();
    assert!(
        own <= all + 0.01,
        "stages {own} s of CPU, the process {all} s"
    );
}

/// `bench --video --json`: the pipeline's report with every stage's count and CPU, the
/// model alone's CPU a frame, and the two ratios against the model alone, the second
/// recomputed here from the report's own figures. No timing is asserted.
#[test]
fn bench_video_reports_the_frame_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, _) = clip(tmp.path(), "in.mp4", spec(160, 96, 24, false));
    // The run's thrown-away output goes to the temp folder: this one, checked after.
    let (o, _) = run_env(
        &[
            "bench",
            "-m",
            s(&shapes_model()),
            "-b",
            "4",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--threads",
            "1",
            "--video",
            s(&input),
            "--json",
        ],
        &[("TMPDIR", s(tmp.path()))],
        Duration::from_secs(300),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    no_leftovers(tmp.path());
    let stdout = String::from_utf8_lossy(&o.stdout);
    let j: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let video = &j["video"];
    assert_eq!(video["frames"].as_u64(), Some(24), "{video}");
    stages_count_frames_and_cpu(video);
    let num = |k: &str| j[k].as_f64().unwrap_or_else(|| panic!("{k} in {j}"));
    assert!(num("model_cpu_ms_per_frame") > 0.0);
    assert!(num("video_over_model") > 0.0);
    // The ratio had every core been busy: the end-to-end one over the share of the
    // cores the run used, which can only raise it.
    let used =
        video["cpu_s"].as_f64().unwrap() / (num("cores") * video["wall_s"].as_f64().unwrap());
    let bound = num("video_cpu_bound");
    let want = num("video_over_model") / used;
    assert!(
        (bound - want).abs() <= 1e-6 * want,
        "{bound} against {want}"
    );
    // A process uses at most all its cores (the two clocks are read microseconds apart).
    assert!(bound >= num("video_over_model") * 0.999, "{bound}");
    assert!(
        !stdout.contains("frames/s end to end"),
        "JSON only: {stdout}"
    );
}

/// Starts `video` on a 500-frame clip, waits until it writes, sends `signals` (a short
/// pause between them) and returns the exit code and the output's path.
fn interrupted_video(tmp: &Path, signals: &[i32]) -> (Option<i32>, PathBuf, String) {
    let (input, _) = clip(tmp, "long.mp4", spec(160, 96, 500, true));
    let out = tmp.join("cut.mp4");
    let child = Command::new(bin())
        .args([
            "video",
            s(&input),
            "-o",
            s(&out),
            "-m",
            s(&shapes_model()),
            "-q",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until frames are being written (the child's temporary file exists).
    let marker = format!("-{}-", child.id());
    let part_exists = || {
        std::fs::read_dir(tmp).unwrap().flatten().any(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with(camstream_media::io::TEMP_PREFIX) && n.contains(&marker)
        })
    };
    let start = Instant::now();
    while !part_exists() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(part_exists(), "the run never started writing");
    std::thread::sleep(Duration::from_millis(300));
    for sig in signals {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as i32, *sig);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        out,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn ctrl_c_and_sigterm_leave_a_playable_file_of_the_frames_done() {
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let tmp = tempfile::tempdir().unwrap();
        let (got, out, err) = interrupted_video(tmp.path(), &[sig]);
        assert!(got == Some(code) || got == Some(0), "{got:?}: {err}");
        let (frames, w, h, _, audio) = probe(&out);
        assert_eq!((w, h), (160, 96));
        assert!(!frames.is_empty() && audio);
        if got == Some(code) {
            assert!(frames.len() < 500, "interrupted run has every frame");
        }
        eprintln!(
            "signal {sig}: stopped after {} of 500 frames (exit {got:?})",
            frames.len()
        );
        no_leftovers(tmp.path());
    }
}

#[test]
fn a_second_signal_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Two different signals: two of one kind may merge into one in the kernel.
    let (got, out, err) = interrupted_video(tmp.path(), &[libc::SIGINT, libc::SIGTERM]);
    if got == Some(0) {
        // Finished before the signals arrived: nothing to check.
        return;
    }
    assert_eq!(got, Some(143), "{err}");
    assert!(
        !out.exists(),
        "a second signal must not leave a partial output"
    );
    no_leftovers(tmp.path());
}

/// Sets the display matrix of an MP4's first track to a quarter turn clockwise, as a
/// phone writes it for portrait video (ISO 14496-12 `tkhd`: a, b, u, c, d, v, x, y, w;
/// 16.16 fixed point, w in 2.30).
fn turn_quarter_clockwise(mp4: &Path) {
    let mut b = std::fs::read(mp4).unwrap();
    let pos = b.windows(4).position(|w| w == b"tkhd").expect("tkhd box");
    let version = b[pos + 4];
    let matrix = pos + if version == 1 { 56 } else { 44 };
    let m: [i32; 9] = [0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x4000_0000];
    for (i, v) in m.iter().enumerate() {
        b[matrix + 4 * i..matrix + 4 * i + 4].copy_from_slice(&v.to_be_bytes());
    }
    std::fs::write(mp4, b).unwrap();
}

#[test]
fn a_portrait_phone_video_is_turned_upright_before_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, truth) = clip(tmp.path(), "phone.mp4", spec(160, 96, 40, false));
    turn_quarter_clockwise(&input);
    let d = VideoDecoder::open(&input, Section::default()).unwrap();
    assert_eq!(
        (d.info().width, d.info().height, d.info().rotation),
        (96, 160, 90)
    );
    let out = tmp.path().join("upright.mp4");
    let json = tmp.path().join("frames.jsonl");
    let (o, _) = run(
        &[
            "video",
            s(&input),
            "-o",
            s(&out),
            "-m",
            s(&shapes_model()),
            "-q",
            "--frames-json",
            s(&json),
        ],
        Duration::from_secs(180),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (frames, w, h, _, _) = probe(&out);
    assert_eq!((w, h, frames.len()), (96, 160, 40), "written upright");
    // The model saw upright frames: the heat's peak is on the shape where it is after
    // the turn, (x, y) -> (H - 1 - y, x) with H = 96.
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hits = lines
        .iter()
        .zip(&truth)
        .filter(|(l, t)| {
            let (x, y) = (
                l["peak_x"].as_u64().unwrap() as u32,
                l["peak_y"].as_u64().unwrap() as u32,
            );
            let [x0, y0, x1, y1] = t[0].1;
            (96 - y1..96 - y0 + 1).contains(&x) && (x0..x1).contains(&y)
        })
        .count();
    let rate = hits as f32 / truth.len() as f32;
    eprintln!("pointing on the turned frames: {:.1} %", rate * 100.0);
    assert!(rate >= 0.75, "pointing game {rate}");
}

/// Frames kept in the decoder's YUV reach the encoder without RGB: at an even size as
/// they are, at an odd size (4:4:4 output) through one conversion. Both must come back
/// with their colours, and `keep_yuv` must hand out the planes the file holds.
#[test]
fn yuv_frames_encode_at_even_and_odd_sizes() {
    use camstream_media::decode::VideoInfo;
    use camstream_media::encode::{AudioSource, EncodeOptions, VideoEncoder};
    use camstream_media::frame::{Picture, Yuv420};

    let tmp = tempfile::tempdir().unwrap();
    for (w, h) in [(64u32, 48u32), (65, 49)] {
        let path = tmp.path().join(format!("yuv_{w}x{h}.mp4"));
        let info = VideoInfo::constant_rate(&path, (w, h), 25, Some(3));
        let opts = EncodeOptions {
            crf: 10,
            ..EncodeOptions::default()
        };
        // Left half red, right half blue.
        let img = image::RgbImage::from_fn(w, h, |x, _| {
            image::Rgb(if x < w / 2 {
                [220, 30, 30]
            } else {
                [30, 30, 220]
            })
        });
        let mut enc = VideoEncoder::create(&path, "mp4", &info, &opts, AudioSource::None).unwrap();
        for pts in 0..3 {
            let yuv = Yuv420::from_rgb(&img).unwrap();
            enc.write(Picture::Yuv(yuv), pts).unwrap();
        }
        enc.finish(None).unwrap();

        let mut d = VideoDecoder::open(&path, Section::default())
            .unwrap()
            .keep_yuv();
        let mut n = 0;
        while let Some(f) = d.next_frame().unwrap() {
            // 4:2:0 files come out as planes, 4:4:4 ones in RGB.
            assert_eq!(matches!(f.picture, Picture::Yuv(_)), w % 2 == 0, "{w}x{h}");
            let rgb = f.picture.into_rgb().unwrap();
            assert_eq!(rgb.dimensions(), (w, h));
            for (x, want) in [(w / 4, [220, 30, 30]), (3 * w / 4, [30, 30, 220])] {
                let got = rgb.get_pixel(x, h / 2).0;
                for k in 0..3 {
                    assert!(got[k].abs_diff(want[k]) <= 12, "{w}x{h} at x {x}: {got:?}");
                }
            }
            n += 1;
        }
        assert_eq!(n, 3, "{w}x{h}");
    }
}

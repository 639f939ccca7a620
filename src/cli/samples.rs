//! `camstream samples`: (re)makes the sample inputs in `samples/` from the synthetic
//! generators, deterministically.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use camstream_train::synth::{self, audio, ecg, shapes, video};
use camstream_train::tasks::{AudioEvents, Task};

#[derive(Args)]
pub struct SamplesArgs {
    /// Output folder
    #[arg(long, short = 'o', default_value = "samples")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot create {}", p.display()))
}

pub fn run(a: &SamplesArgs) -> Result<()> {
    let out = &a.out;
    let mut rng = synth::rng(a.seed);

    // Pictures: one of each shape, 256x256, so the overlay is large enough to look at.
    let dir = out.join("images");
    mkdir(&dir)?;
    for (class, name) in shapes::LABELS.iter().enumerate() {
        let mut canvas = shapes::Canvas::textured(&mut rng, 256, 256);
        let s = shapes::random_shape(&mut rng, class, 256, 256, 70.0, 110.0, canvas.mean());
        canvas.draw(&s);
        camstream_media::io::write_png(&dir.join(format!("{name}.png")), &canvas.to_image())?;
    }

    // Video: 10 s, 640x360, 25 fps, two moving shapes, AAC audio.
    let dir = out.join("video");
    mkdir(&dir)?;
    let path = dir.join("shapes.mp4");
    camstream_media::io::write_atomic(&path, |tmp| {
        video::write_clip(
            tmp,
            "mp4",
            &video::ClipSpec {
                width: 640,
                height: 360,
                fps: 25,
                frames: 250,
                shapes: 2,
                audio: true,
                vfr: false,
                seed: a.seed,
            },
        )
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{}: {e}", tmp.display()))
    })?;

    // ECG: 60 s at 250 Hz with some ectopic beats, as CSV (with header) and .npy (1, L),
    // plus eight 8 s windows (N, 1, 2000) for the window model.
    let dir = out.join("ecg");
    mkdir(&dir)?;
    let (sig, windows) = ecg::record(&mut rng, 60 * ecg::RATE as usize, ecg::RATE, 0.08, false);
    let csv = dir.join("ecg_60s.csv");
    camstream_media::io::write_atomic(&csv, |tmp| {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(tmp).map_err(|e| camstream_media::Error::io(tmp, e))?,
        );
        let mut w = || -> std::io::Result<()> {
            writeln!(f, "time_s,mV")?;
            for (i, v) in sig.iter().enumerate() {
                writeln!(f, "{:.3},{v:.4}", i as f32 / ecg::RATE)?;
            }
            f.flush()
        };
        w().map_err(|e| camstream_media::Error::io(tmp, e))
    })?;
    camstream_media::npy::write_npy(&dir.join("ecg_60s.npy"), &sig, &[1, sig.len()])?;
    let mut win = Vec::new();
    let mut truth = Vec::new();
    for i in 0..8 {
        let s = loop {
            let s = ecg::sample(&mut rng);
            if s.class == i % 2 {
                break s;
            }
        };
        win.extend(&s.signal);
        truth.push(
            serde_json::json!({"index": i, "label": ecg::LABELS[s.class], "window": s.window}),
        );
    }
    camstream_media::npy::write_npy(&dir.join("ecg_windows.npy"), &win, &[8, 1, ecg::LEN])?;
    std::fs::write(
        dir.join("ecg_windows.truth.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "rate_hz": ecg::RATE,
            "record_ectopic_windows": windows,
            "windows": truth
        }))?,
    )?;

    // Audio: one 3 s clip per event class, as 16 kHz WAVs and as log-mel .npy (N,1,mels,frames).
    let dir = out.join("audio");
    mkdir(&dir)?;
    let task = AudioEvents::default();
    let mut specs = Vec::new();
    let mut truth = Vec::new();
    for class in 0..audio::LABELS.len() {
        let s = loop {
            let s = audio::sample(&mut rng);
            if s.class == class {
                break s;
            }
        };
        let wav = dir.join(format!("{}.wav", audio::LABELS[class]));
        camstream_media::io::write_wav(&wav, audio::RATE, &s.wave)?;
        specs.extend(task.features(&s.wave));
        truth.push(serde_json::json!({
            "file": format!("{}.wav", audio::LABELS[class]),
            "label": audio::LABELS[class],
            "event_s": [s.interval.0 as f32 / audio::RATE as f32, s.interval.1 as f32 / audio::RATE as f32]
        }));
    }
    let size = task.input_size();
    camstream_media::npy::write_npy(
        &dir.join("events.npy"),
        &specs,
        &[audio::LABELS.len(), 1, size[0], size[1]],
    )?;
    std::fs::write(
        dir.join("events.truth.json"),
        serde_json::to_string_pretty(&truth)?,
    )?;
    eprintln!("wrote sample inputs under {}", out.display());
    Ok(())
}

//! `camstream signal` on recordings: the Captum references reproduced from CSV, WAV and
//! `.npy`; pointing game through the streaming path (WFDB 212 at 360 Hz, resampled; WAV
//! audio); flat memory on a 2-hour record; and the errors a user meets.

mod common;

use std::path::{Path, PathBuf};

use camstream_media::decode::signal::wfdb::{write_record, Format, SignalSpec};
use camstream_train::synth::{audio, ecg, rng};
use common::{camstream, fails, fixtures, max_abs, npy, npy_usize, ok, s};

fn ecg_cfg() -> PathBuf {
    fixtures().join("ecg/ecg_cnn.toml")
}

fn sample_model(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("samples/models/{name}.toml"))
}

fn write_csv(path: &Path, header: &str, values: &[f32]) {
    let mut t = format!("{header}\n");
    for v in values {
        // `{}` prints the shortest text that reads back as the same f32.
        t += &format!("{v}\n");
    }
    std::fs::write(path, t).unwrap();
}

fn write_wav(path: &Path, rate: u32, values: &[f32], bits: u16) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: if bits == 32 {
            hound::SampleFormat::Float
        } else {
            hound::SampleFormat::Int
        },
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for v in values {
        if bits == 32 {
            w.write_sample(*v).unwrap();
        } else {
            let full = (1i32 << (bits - 1)) as f32;
            w.write_sample((v * full).round().clamp(-full, full - 1.0) as i32)
                .unwrap();
        }
    }
    w.finalize().unwrap();
}

fn windows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn no_temp_files(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// The 16 reference ECG windows (250 Hz) laid end to end, as CSV, float WAV and .npy:
/// with the default hop every window is one reference sample, so the relevance is
/// Captum's `LayerAttribution.interpolate(LayerGradCam(..., relu_attributions=True),
/// (2000,), 'linear')` of each, and the raw maps are the Grad-CAM references.
#[test]
fn captum_references_from_csv_wav_and_npy() {
    let tmp = tempfile::tempdir().unwrap();
    let (x, shape) = npy(fixtures().join("ecg/input.npy"));
    assert_eq!(shape, [16, 1, 2000]);
    let csv = tmp.path().join("ref.csv");
    write_csv(&csv, "lead_mv", &x);
    let wav = tmp.path().join("ref_wav.wav");
    write_wav(&wav, 250, &x, 32);
    let flat = tmp.path().join("ref_npy.npy");
    camstream_media::npy::write_npy(&flat, &x, &[x.len()]).unwrap();
    let pred = npy_usize(fixtures().join("ecg/pred.npy"));
    let cfg = ecg_cfg();

    for (input, stem) in [(&csv, "ref"), (&wav, "ref_wav"), (&flat, "ref_npy")] {
        let out = tmp.path().join(format!("out_{stem}"));
        let mut args = vec!["signal", "-m", s(&cfg), s(input), "--cam-npy"];
        args.extend(["-o", s(&out), "-q"]);
        if stem != "ref_wav" {
            args.extend(["--rate", "250"]);
        }
        ok(&camstream(&args));
        let (rel, rs) = npy(out.join(format!("{stem}.relevance.npy")));
        assert_eq!(rs, [32000], "{stem}");
        let (up, _) = npy(fixtures().join("ecg/captum_layergradcam_features6_pred_up_linear.npy"));
        let e = max_abs(&rel, &up);
        assert!(e <= 1e-4, "{stem}: relevance vs Captum: {e}");
        let (cam, cs) = npy(out.join(format!("{stem}.cam.npy")));
        assert_eq!(cs, [16, 125]);
        let relu: Vec<f32> = cam.iter().map(|v| v.max(0.0)).collect();
        let (captum, _) = npy(fixtures().join("ecg/captum_layergradcam_features6_pred.npy"));
        assert!(
            max_abs(&relu, &captum) <= 1e-4,
            "{stem}: raw maps vs Captum"
        );
        let w = windows(&out.join(format!("{stem}.windows.jsonl")));
        let classes: Vec<usize> = w
            .iter()
            .map(|w| w["class"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(classes, pred, "{stem}");
        assert_eq!(w[3]["start_s"], 24.0);
        assert_eq!(w[3]["end_s"], 32.0);
        // The CSV has the same values as the .npy, one row per input sample.
        let text = std::fs::read_to_string(out.join(format!("{stem}.relevance.csv"))).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], "time_s,value,class");
        assert_eq!(rows.len(), 32001);
        let r = rows[2001].split(',').collect::<Vec<_>>();
        assert_eq!(r[0], "8.000000");
        assert!((r[1].parse::<f32>().unwrap() - rel[2000]).abs() < 1e-6);
        assert_eq!(r[2].parse::<usize>().unwrap(), pred[1]);
        assert!(out.join(format!("{stem}.png")).is_file());
        no_temp_files(&out);
    }

    // Another layer and a fixed class, from the CSV.
    let out = tmp.path().join("fixed");
    ok(&camstream(&[
        "signal",
        "-m",
        s(&ecg_cfg()),
        s(&csv),
        "--rate",
        "250",
        "-l",
        "features.4",
        "-c",
        "1",
        "-o",
        s(&out),
        "--no-plot",
        "-q",
    ]));
    let (rel, _) = npy(out.join("ref.relevance.npy"));
    let (up, _) = npy(fixtures().join("ecg/captum_layergradcam_features4_fixed_up_linear.npy"));
    assert!(max_abs(&rel, &up) <= 1e-4);
    assert!(!out.join("ref.png").exists());
}

/// Synthetic ECG at 360 Hz stored as a WFDB format-212 record: read, resampled to the
/// model's 250 Hz, windowed, explained, mapped back to 360 Hz. The relevance peak of
/// each ectopic window must fall on the ectopic beat.
#[test]
fn ecg_pointing_game_through_wfdb_212_and_resampling() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(2024);
    let per = 2880; // 8 s at 360 Hz: one model window
    let n = 40;
    let mut sig = Vec::new();
    let mut truth = Vec::new();
    for k in 0..n {
        let class = k % 2;
        let (x, wins) = ecg::record(&mut r, per, 360.0, 0.0, class == 1);
        truth.push((
            class,
            wins.first().map(|&(a, b)| (k * per + a, k * per + b)),
        ));
        sig.extend(x);
    }
    let gain = 400.0f32;
    let digital: Vec<i32> = sig
        .iter()
        .map(|v| (v * gain).round().clamp(-2047.0, 2047.0) as i32)
        .collect();
    let spec = SignalSpec {
        gain: gain as f64,
        baseline: 0,
        units: "mV".into(),
        description: "MLII".into(),
    };
    write_record(tmp.path(), "syn", Format::F212, 360.0, &[digital], &[spec]).unwrap();
    let out = tmp.path().join("out");
    let rec = tmp.path().join("syn");
    ok(&camstream(&[
        "signal",
        "-m",
        s(&sample_model("ecg")),
        s(&rec),
        "-o",
        s(&out),
        "-q",
    ]));
    let (rel, shape) = npy(out.join("syn.relevance.npy"));
    assert_eq!(shape, [n * per]);
    let w = windows(&out.join("syn.windows.jsonl"));
    assert_eq!(w.len(), n);
    let correct = w
        .iter()
        .zip(&truth)
        .filter(|(w, t)| w["class"].as_u64() == Some(t.0 as u64))
        .count();
    let (mut hits, mut total) = (0, 0);
    for (k, (_, region)) in truth.iter().enumerate() {
        let Some((a, b)) = region else { continue };
        let seg = &rel[k * per..(k + 1) * per];
        let peak = k * per + (0..per).max_by(|&i, &j| seg[i].total_cmp(&seg[j])).unwrap();
        total += 1;
        hits += usize::from(peak >= *a && peak < *b);
    }
    eprintln!("accuracy {correct}/{n}, pointing {hits}/{total}");
    assert!(correct as f32 >= 0.9 * n as f32);
    assert!(
        hits as f32 >= 0.85 * total as f32,
        "pointing {hits}/{total}"
    );
    assert!(out.join("syn.png").is_file());
}

/// Synthetic audio events in one float WAV: the relevance peak of each 3 s window must
/// fall inside the event.
#[test]
fn audio_pointing_game_from_a_wav() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(77);
    let n = 40;
    let mut wave = Vec::new();
    let mut truth = Vec::new();
    for k in 0..n {
        let a = audio::sample(&mut r);
        truth.push((
            a.class,
            k * audio::LEN + a.interval.0,
            k * audio::LEN + a.interval.1,
        ));
        wave.extend(a.wave);
    }
    // Float samples: the clips' peaks exceed integer full scale.
    let wav = tmp.path().join("events.wav");
    write_wav(&wav, audio::RATE, &wave, 32);
    let out = tmp.path().join("out");
    ok(&camstream(&[
        "signal",
        "-m",
        s(&sample_model("audio")),
        s(&wav),
        "-o",
        s(&out),
        "-q",
    ]));
    let (rel, shape) = npy(out.join("events.relevance.npy"));
    assert_eq!(shape, [wave.len()]);
    let (tf, tfs) = npy(out.join("events.relevance_tf.npy"));
    assert_eq!(tfs, [1 + wave.len() / 160, 64]);
    assert!(tf.iter().all(|v| v.is_finite() && *v >= 0.0));
    let w = windows(&out.join("events.windows.jsonl"));
    assert_eq!(w.len(), n);
    let mut hits = 0;
    let mut correct = 0;
    for (k, (class, a, b)) in truth.iter().enumerate() {
        correct += usize::from(w[k]["class"].as_u64() == Some(*class as u64));
        let seg = &rel[k * audio::LEN..(k + 1) * audio::LEN];
        let p = k * audio::LEN
            + (0..seg.len())
                .max_by(|&i, &j| seg[i].total_cmp(&seg[j]))
                .unwrap();
        hits += usize::from(p >= *a && p < *b);
    }
    eprintln!("accuracy {correct}/{n}, pointing {hits}/{n}");
    assert!(correct as f32 >= 0.9 * n as f32);
    assert!(hits as f32 >= 0.85 * n as f32, "pointing {hits}/{n}");
    assert!(out.join("events.png").is_file());
}

fn rss_of(report: &str) -> (f64, serde_json::Value) {
    let v: serde_json::Value = serde_json::from_str(report.trim()).unwrap();
    (v["peak_rss_mb"].as_f64().unwrap(), v)
}

/// Two hours at 360 Hz (2.6 M samples, 900 windows) in the same memory as 10 minutes.
#[test]
fn a_two_hour_record_streams_in_flat_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = rng(5);
    let ten_min = 360 * 600;
    let (x, _) = ecg::record(&mut r, ten_min, 360.0, 0.1, false);
    let digital: Vec<i32> = x.iter().map(|v| (v * 200.0).round() as i32).collect();
    let spec = || SignalSpec {
        gain: 200.0,
        baseline: 0,
        units: "mV".into(),
        description: "MLII".into(),
    };
    write_record(
        tmp.path(),
        "short",
        Format::F212,
        360.0,
        std::slice::from_ref(&digital),
        &[spec()],
    )
    .unwrap();
    let long: Vec<i32> = digital.iter().copied().cycle().take(ten_min * 12).collect();
    write_record(tmp.path(), "long", Format::F212, 360.0, &[long], &[spec()]).unwrap();
    let mut rss = Vec::new();
    for name in ["short", "long"] {
        let out = tmp.path().join(format!("out_{name}"));
        let rec = tmp.path().join(format!("{name}.hea"));
        // The lower peak of two runs: a single run's peak now and then carries 10-20 MB
        // of allocator timing noise (seen with the binary from before the crate split
        // too), while real growth with length shows in every run.
        let runs: Vec<(f64, serde_json::Value)> = (0..2)
            .map(|_| {
                rss_of(&ok(&camstream(&[
                    "signal",
                    "-m",
                    s(&sample_model("ecg")),
                    s(&rec),
                    "-o",
                    s(&out),
                    "--json",
                    "-q",
                    "--from",
                    "300",
                    "--to",
                    "330",
                ])))
            })
            .collect();
        let (mb, v) = runs.into_iter().min_by(|a, b| a.0.total_cmp(&b.0)).unwrap();
        eprintln!("{name}: {mb:.1} MB, {} windows/s", v["windows_per_s"]);
        rss.push((mb, v));
    }
    let (short, long) = (&rss[0], &rss[1]);
    assert_eq!(long.1["windows"], 900);
    assert_eq!(long.1["input_frames"], 360 * 7200);
    // Every stage counts what it handled: the read stage the input samples, the others
    // the windows.
    let stages: Vec<(String, u64, String)> = long.1["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| {
            let f = |k: &str| st[k].as_str().unwrap().to_string();
            (f("stage"), st["count"].as_u64().unwrap(), f("unit"))
        })
        .collect();
    let want = [
        ("read", 360 * 7200, "samples"),
        ("window", 900, "windows"),
        ("model", 900, "windows"),
        ("write", 900, "windows"),
    ];
    let want: Vec<(String, u64, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), *b, c.to_string()))
        .collect();
    assert_eq!(stages, want);
    // Each stage's own threads did its work.
    for st in long.1["stages"].as_array().unwrap() {
        assert!(st["cpu_s"].as_f64().unwrap() > 0.0, "{st}");
    }
    let (_, shape) = npy(tmp.path().join("out_long/long.relevance.npy"));
    assert_eq!(shape, [360 * 7200]);
    assert!(
        long.0 <= short.0 * 1.10 + 4.0,
        "peak memory grew from {:.1} MB (10 min) to {:.1} MB (2 h)",
        short.0,
        long.0
    );
}

#[test]
fn bad_recordings_fail_with_one_line_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let out = t.join("out");
    let cfg = ecg_cfg();
    let run = |input: &Path, extra: &[&str]| {
        let mut a = vec!["signal", "-m", s(&cfg), s(input), "-o", s(&out), "-q"];
        a.extend(extra);
        fails(&camstream(&a))
    };

    let empty = t.join("empty.csv");
    std::fs::write(&empty, "lead\n").unwrap();
    assert!(run(&empty, &[]).contains("holds no samples"));

    let nan = t.join("nan.csv");
    std::fs::write(&nan, "a\n0.1\n0.2\nnan\n0.3\n").unwrap();
    let e = run(&nan, &["--rate", "250"]);
    assert!(e.contains("sample 2 of channel 0 is NaN"), "{e}");

    let ragged = t.join("ragged.csv");
    std::fs::write(&ragged, "a,b\n1,2\n3,4\n5\n").unwrap();
    let e = run(&ragged, &[]);
    assert!(e.contains("line 4: 1 fields"), "{e}");

    let text = t.join("text.csv");
    std::fs::write(&text, "a\n1\nabc\n").unwrap();
    assert!(run(&text, &[]).contains("line 3: `abc` is not a number"));

    let wav = t.join("cut.wav");
    write_wav(&wav, 250, &vec![0.1; 4000], 16);
    let bytes = std::fs::read(&wav).unwrap();
    std::fs::write(&wav, &bytes[..bytes.len() - 1000]).unwrap();
    let e = run(&wav, &[]);
    assert!(e.contains("truncated"), "{e}");

    let spec = SignalSpec {
        gain: 200.0,
        baseline: 0,
        units: "mV".into(),
        description: "II".into(),
    };
    write_record(t, "rec", Format::F16, 250.0, &[vec![5; 3000]], &[spec]).unwrap();
    let dat = t.join("rec.dat");
    let b = std::fs::read(&dat).unwrap();
    std::fs::write(&dat, &b[..b.len() / 2]).unwrap();
    let e = run(&t.join("rec.hea"), &[]);
    assert!(e.contains("truncated"), "{e}");

    let junk = t.join("junk.npy");
    std::fs::write(&junk, b"not numpy at all").unwrap();
    assert!(run(&junk, &[]).contains("not a valid .npy"));

    let odd = t.join("x.xyz");
    std::fs::write(&odd, "1").unwrap();
    assert!(run(&odd, &[]).contains("unsupported signal format `.xyz`"));

    let missing = t.join("nope.wav");
    assert!(run(&missing, &[]).contains("no such file"));

    let two = t.join("two.csv");
    let mut body = "time,MLII,V5\n".to_string();
    for i in 0..3000 {
        body += &format!("{},{},{}\n", i as f32 / 250.0, 0.1, 0.2);
    }
    std::fs::write(&two, body).unwrap();
    let e = run(&two, &["--channel", "V2"]);
    assert!(
        e.contains("no channel `V2`") && e.contains("0=MLII, 1=V5"),
        "{e}"
    );
    let e = run(&two, &["--rate", "333.3"]);
    assert!(e.contains("--rate"), "{e}");
    let e = run(&two, &["--column", "V9"]);
    assert!(e.contains("no column `V9`"), "{e}");

    let frac = t.join("frac.csv");
    write_csv(&frac, "x", &vec![0.0; 1000]);
    let e = run(&frac, &["--rate", "333.3"]);
    assert!(e.contains("whole-number rates"), "{e}");

    if out.exists() {
        no_temp_files(&out);
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0);
    }

    // The two-lead CSV works: lead 0 by default (said on stderr), V5 by name.
    let o = camstream(&[
        "signal",
        "-m",
        s(&ecg_cfg()),
        s(&two),
        "-o",
        s(&out),
        "--no-plot",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && err.contains("used channel 0 (MLII)"),
        "{err}"
    );
    ok(&camstream(&[
        "signal",
        "-m",
        s(&ecg_cfg()),
        s(&two),
        "-o",
        s(&out),
        "--channel",
        "V5",
        "-q",
    ]));
    let (rel, sh) = npy(out.join("two.relevance.npy"));
    assert_eq!(sh, [3000]);
    assert!(rel.iter().all(|v| v.is_finite()));
}

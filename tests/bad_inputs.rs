//! Bad and unusual inputs, paths and options, one table row each. Every row checks the
//! exit code, a one-line message on stderr naming the file or parameter, no panic, the
//! inputs unchanged (hash before and after) and no file left behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use camstream_train::synth::video::{write_clip, ClipSpec};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_camstream")
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Runs camstream in `dir`, killing it if it does not finish in time (a hang fails).
fn run_in(dir: &Path, args: &[String]) -> Output {
    let start = Instant::now();
    let limit = Duration::from_secs(240);
    let mut child = Command::new(bin())
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("camstream {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Every file under `dir` (relative path) with a hash of its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, u64> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                // FNV-1a: enough to see any change.
                let h = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
                });
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), h);
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

/// A row: what is in the working folder, the command, what stderr must say.
struct Row {
    name: &'static str,
    /// (file name in the working folder, its bytes).
    files: Vec<(&'static str, Vec<u8>)>,
    args: Vec<String>,
    /// Every one of these must be in the message.
    says: Vec<&'static str>,
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(repo(p)).unwrap()
}

fn rows() -> Vec<Row> {
    let shapes = repo("samples/models/shapes.toml");
    let ecg = repo("samples/models/ecg.toml");
    let (shapes, ecg) = (shapes.display(), ecg.display());
    let video = read("samples/video/shapes.mp4");
    let png = read("samples/images/circle.png");
    let csv = read("samples/ecg/ecg_60s.csv");
    let ecg_npy = read("samples/ecg/ecg_60s.npy");
    let v = || vec![("in.mp4", video.clone())];
    let mut truncated = video.clone();
    truncated.truncate(video.len() / 20);
    let header_only_csv = b"time_s,lead\n".to_vec();
    let mut npy_bomb = b"\x93NUMPY\x01\x00".to_vec();
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000), }";
    let mut dict = dict.to_string();
    while !(dict.len() + 11).is_multiple_of(64) {
        dict.push(' ');
    }
    dict.push('\n');
    npy_bomb.extend((dict.len() as u16).to_le_bytes());
    npy_bomb.extend(dict.as_bytes());
    let mut rows = vec![
        Row {
            name: "video output is its input",
            files: v(),
            args: args(&format!("video in.mp4 -o in.mp4 -m {shapes}")),
            says: vec!["would overwrite the input", "--output"],
        },
        Row {
            name: "video output is a symlink to its input",
            files: v(),
            args: args(&format!("video in.mp4 -o link.mp4 -m {shapes}")),
            says: vec!["would overwrite the input"],
        },
        Row {
            name: "report over the input",
            files: v(),
            args: args(&format!(
                "video in.mp4 -o out/o.mp4 --report in.mp4 -m {shapes}"
            )),
            says: vec!["--report", "would overwrite the input"],
        },
        Row {
            name: "frames json equal to the output",
            files: v(),
            args: args(&format!(
                "video in.mp4 -o out/o.mp4 --frames-json out/o.mp4 -m {shapes}"
            )),
            says: vec!["--output and --frames-json name the same file"],
        },
        Row {
            name: "image overlay over its input",
            files: vec![("circle.png", png.clone())],
            args: args(&format!("image circle.png --out . -m {shapes}")),
            says: vec!["circle.png", "would overwrite the input"],
        },
        Row {
            name: "two inputs with one stem",
            files: vec![("a/x.png", png.clone()), ("b/x.png", png.clone())],
            args: args(&format!("image a/x.png b/x.png --out out -m {shapes}")),
            says: vec!["a/x.png", "b/x.png", "same name"],
        },
        Row {
            name: "output is an existing folder",
            files: v(),
            args: args(&format!("video in.mp4 -o . -m {shapes}")),
            says: vec!["existing folder"],
        },
        Row {
            name: "unknown container",
            files: v(),
            args: args(&format!("video in.mp4 -o out/o.avi -m {shapes}")),
            says: vec!["o.avi", "unknown container", ".mp4"],
        },
        Row {
            name: "no extension",
            files: v(),
            args: args(&format!("video in.mp4 -o out/o -m {shapes}")),
            says: vec!["unknown container"],
        },
        Row {
            name: "start past the end",
            files: v(),
            args: args(&format!(
                "video in.mp4 -o out/o.mp4 --start 100 -m {shapes}"
            )),
            says: vec!["in.mp4", "--start", "past the end"],
        },
        Row {
            name: "mp4 truncated to 5 %",
            files: vec![("in.mp4", truncated)],
            args: args(&format!("video in.mp4 -o out/o.mp4 -m {shapes}")),
            says: vec!["in.mp4"],
        },
        Row {
            name: "unknown preset",
            files: v(),
            args: args(&format!(
                "video in.mp4 -o out/o.mp4 --preset bogus -m {shapes}"
            )),
            says: vec!["--preset", "bogus", "ultrafast"],
        },
        Row {
            name: "signal plot start past the end (streamed CSV)",
            files: vec![("ecg.csv", csv.clone())],
            args: args(&format!(
                "signal ecg.csv -m {ecg} --from 100 --to 200 -o out"
            )),
            says: vec!["ecg.csv", "--from", "past the end"],
        },
        Row {
            name: "signal plot start past the end (npy)",
            files: vec![("ecg.npy", ecg_npy.clone())],
            args: args(&format!("signal ecg.npy -m {ecg} --from 100 -o out")),
            says: vec!["ecg.npy", "--from", "past the end"],
        },
        Row {
            name: "absurd rate",
            files: vec![("ecg.npy", ecg_npy.clone())],
            args: args(&format!("signal ecg.npy -m {ecg} --rate 1e9 -o out")),
            says: vec!["1000000000 Hz", "rate"],
        },
        Row {
            name: "signal folder",
            files: vec![("rec/ecg.csv", csv.clone())],
            args: args(&format!("signal rec -m {ecg} -o out")),
            says: vec!["rec", "is a folder"],
        },
        Row {
            name: "two recordings with one stem",
            files: vec![("a/ecg.csv", csv.clone()), ("b/ecg.npy", ecg_npy.clone())],
            args: args(&format!("signal a/ecg.csv b/ecg.npy -m {ecg} -o out")),
            says: vec!["a/ecg.csv", "b/ecg.npy", "same name"],
        },
        Row {
            name: "header-only CSV",
            files: vec![("h.csv", header_only_csv)],
            args: args(&format!("signal h.csv -m {ecg} -o out")),
            says: vec!["h.csv", "no samples"],
        },
        Row {
            name: "missing file, said once",
            files: vec![],
            args: args(&format!("image nothere.png -m {shapes} -o out")),
            says: vec!["nothere.png"],
        },
        Row {
            name: "npy declaring 40 GB",
            files: vec![("bomb.npy", npy_bomb)],
            args: args(&format!("image bomb.npy -m {shapes} -o out")),
            says: vec!["bomb.npy"],
        },
        Row {
            name: "not a picture",
            files: vec![("fake.png", b"this is not a picture".to_vec())],
            args: args(&format!("image fake.png -m {shapes} -o out")),
            says: vec!["fake.png"],
        },
        Row {
            name: "not a WAV",
            files: vec![("fake.wav", b"RIFF\x10\x00\x00\x00WAVEjunk".to_vec())],
            args: args(&format!("signal fake.wav -m {ecg} -o out")),
            says: vec!["fake.wav"],
        },
    ];
    // Malformed files of every parser (these already worked; they must keep working).
    let circle = repo("samples/images/circle.png");
    let circle = circle.display();
    let mut st_bomb = (1u64 << 62).to_le_bytes().to_vec();
    st_bomb.extend(b"{}");
    rows.extend([
        Row {
            name: "TOML config that is not TOML",
            files: vec![("m.toml", b"[input\nkind = ".to_vec())],
            args: args(&format!("image {circle} -m m.toml -o out")),
            says: vec!["m.toml"],
        },
        Row {
            name: "ONNX file of junk",
            files: vec![("m.onnx", b"\x08\x07junk that is not protobuf".to_vec())],
            args: args(&format!("image {circle} -m m.onnx -o out")),
            says: vec!["m.onnx"],
        },
        Row {
            name: "safetensors header of 2^62 bytes",
            files: vec![("w.safetensors", st_bomb)],
            args: args(&format!(
                "image {circle} -m resnet18 -w w.safetensors -o out"
            )),
            says: vec!["w.safetensors"],
        },
        Row {
            name: "pth that is not a zip",
            files: vec![("w.pth", b"PK\x03\x04 broken".to_vec())],
            args: args(&format!("image {circle} -m resnet18 -w w.pth -o out")),
            says: vec!["w.pth"],
        },
        Row {
            name: "WFDB header with a bad format",
            files: vec![
                (
                    "rec.hea",
                    b"rec 1 360 100\nrec.dat 999 200 11 1024 0 0 0 MLII\n".to_vec(),
                ),
                ("rec.dat", vec![0; 300]),
            ],
            args: args(&format!("signal rec.hea -m {ecg} -o out")),
            says: vec!["rec"],
        },
    ]);
    for bad in ["0", "-250", "NaN"] {
        rows.push(Row {
            name: "rate not a positive number",
            files: vec![("ecg.npy", ecg_npy.clone())],
            args: args(&format!("signal ecg.npy -m {ecg} --rate={bad} -o out")),
            says: vec!["--rate must be a positive number"],
        });
    }
    rows.push(Row {
        name: "a PNG of 30000 x 30000",
        files: vec![("bomb.png", png_bomb())],
        args: args(&format!("image bomb.png -m {shapes} -o out")),
        says: vec!["bomb.png", "30000x30000", "MB"],
    });
    rows
}

/// A valid PNG header declaring 30000 x 30000 pixels, with a tiny compressed body.
fn png_bomb() -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    fn crc32(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in b {
            c ^= u32::from(x);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xedb88320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    let mut ihdr = 30000u32.to_be_bytes().to_vec();
    ihdr.extend(30000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    // A stored (uncompressed) zlib stream of one empty row start: decoding fails later,
    // but the size must be refused first.
    chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x01, 0x00, 0xfe, 0xff, 0x00, 0x00, 0x01, 0x00, 0x01,
        ],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

#[test]
fn bad_inputs_get_one_line_and_leave_inputs_and_folders_as_they_were() {
    let mut failures = Vec::new();
    for row in rows() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        for (name, bytes) in &row.files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, bytes).unwrap();
        }
        if row.name.contains("symlink") {
            std::os::unix::fs::symlink(dir.join("in.mp4"), dir.join("link.mp4")).unwrap();
        }
        let before = snapshot(dir);
        let o = run_in(dir, &row.args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        let after = snapshot(dir);
        let mut why = Vec::new();
        if o.status.code() != Some(1) {
            why.push(format!("exit {:?}", o.status.code()));
        }
        let lines: Vec<&str> = err.lines().collect();
        if lines.len() != 1 || !lines[0].starts_with("camstream: error: ") {
            why.push("not one error line".into());
        }
        if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
            why.push("panic".into());
        }
        for s in &row.says {
            if !err.contains(s) {
                why.push(format!("does not say `{s}`"));
            }
        }
        if before != after {
            why.push(format!("files changed: {before:?} -> {after:?}"));
        }
        if why.is_empty() {
            eprintln!("ok   {:48} {}", row.name, err.trim());
        } else {
            failures.push(format!(
                "{}: {} (stderr: {err:?})",
                row.name,
                why.join("; ")
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_truncated_video_is_written_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Matroska declares its duration up front, so a cut file still says how long it was.
    let whole = dir.join("whole.mkv");
    let spec = ClipSpec {
        width: 160,
        height: 96,
        fps: 25,
        frames: 250,
        shapes: 1,
        audio: false,
        vfr: false,
        seed: 3,
    };
    write_clip(&whole, "matroska", &spec).unwrap();
    let video = std::fs::read(&whole).unwrap();
    std::fs::write(dir.join("half.mkv"), &video[..video.len() / 2]).unwrap();
    let shapes = repo("samples/models/shapes.toml");
    let o = run_in(
        dir,
        &args(&format!(
            "video half.mkv -o o.mp4 --report r.json -q -m {}",
            shapes.display()
        )),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("warning") && err.contains("declared frames"),
        "{err}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("r.json")).unwrap()).unwrap();
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    let frames = r["frames"].as_u64().unwrap();
    assert!(frames > 0 && frames < 250, "{frames}");
}

#[test]
fn a_live_writer_is_refused_and_a_dead_ones_temp_is_swept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("in.mp4"), read("samples/video/shapes.mp4")).unwrap();
    let shapes = repo("samples/models/shapes.toml");
    let cmd = args(&format!(
        "video in.mp4 -o o.mp4 --duration 0.5 -q -m {}",
        shapes.display()
    ));
    // This test process is alive: its temporary name for o.mp4 marks a live writer.
    let live = camstream_media::io::temp_name(&dir.join("o.mp4"));
    std::fs::write(&live, b"partial").unwrap();
    let o = run_in(dir, &cmd);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("another camstream run"), "{err}");
    assert!(live.exists(), "a live run's file must be left alone");
    std::fs::remove_file(&live).unwrap();

    // A process that is gone: its temporary file is debris, removed by the next run.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let name = live
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replace(&format!("-{}-", std::process::id()), &format!("-{dead}-"));
    std::fs::write(dir.join(&name), b"debris").unwrap();
    let o = run_in(dir, &cmd);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("removed 1 temporary file"), "{err}");
    assert!(!dir.join(&name).exists());
    assert!(dir.join("o.mp4").exists());
}

/// Inputs the fuzzers (`fuzz/`) found crashing a parser, named `<target>-<what>.<ext>`:
/// each must now give an error or a value, never a panic.
#[test]
fn fuzz_crashes_stay_fixed() {
    let dir = repo("tests/fixtures/fuzz");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = e.path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let target = name.split('-').next().unwrap().to_string();
        let parsed = std::panic::catch_unwind(|| match target.as_str() {
            "csv" | "wav" | "npy" => {
                let opts = camstream_media::decode::signal::OpenOptions::default();
                if let Ok(mut r) = camstream_media::decode::signal::open(&path, &opts) {
                    let _ = camstream_media::decode::signal::read_all(r.as_mut());
                }
                if target == "npy" {
                    let _ = camstream_media::npy::read_npy(&path);
                }
            }
            "onnx" => {
                let req = camstream_core::ModelRequest::new(camstream_core::ModelSource::Onnx(
                    path.clone(),
                ));
                let _ = camstream_core::Network::load(&req, &candle_core::Device::Cpu);
            }
            "pth" | "safetensors" => {
                let _ = camstream_core::model::Weights::load(&path, &candle_core::Device::Cpu);
            }
            other => panic!("{name}: no parser for target `{other}`"),
        });
        assert!(parsed.is_ok(), "{name} panics the {target} parser again");
        seen += 1;
    }
    assert!(seen > 0, "no regression inputs in {}", dir.display());
}

/// `signal` stopped by SIGTERM (a scheduler's stop) or Ctrl-C leaves nothing: no temporary
/// file, no output under its final name; the exit status says which signal.
#[test]
fn a_stopped_signal_run_leaves_nothing() {
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // Two hours of a 250 Hz trace: long enough to be stopped half way.
        let n = 2 * 3600 * 250;
        let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.05).sin()).collect();
        camstream_media::npy::write_npy(&dir.join("long.npy"), &x, &[n]).unwrap();
        let ecg = repo("samples/models/ecg.toml");
        let child = Command::new(bin())
            .args(args(&format!(
                "signal long.npy -m {} -o out -q",
                ecg.display()
            )))
            .current_dir(dir)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = dir.join("out");
        let start = Instant::now();
        let writing = || std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some());
        while !writing() && start.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as i32, sig);
        }
        let o = child.wait_with_output().unwrap();
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        eprintln!("signal {sig}: exit {:?}, left {left:?}", o.status.code());
        if o.status.code() == Some(0) {
            continue; // finished before the signal: nothing to check
        }
        assert_eq!(
            o.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

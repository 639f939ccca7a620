//! `camstream plan` / `batch` / `batch-status` as a cluster runs them: real processes
//! for the shards, real clips and recordings the test makes, SIGKILL and SIGTERM, and
//! the commit protocol checked from the files it leaves.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use camstream_batch::config::sha256_file;
use camstream_batch::manifest;
use camstream_train::synth::video::{write_clip, ClipSpec};
use serde_json::Value;

use common::s;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_camstream")
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn shapes() -> String {
    repo("samples/models/shapes.toml").display().to_string()
}

/// `n` distinct clips of `frames` frames, named clip00.mp4, clip01.mp4, ...
fn clips(dir: &Path, n: usize, frames: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let p = dir.join(format!("clip{i:02}.mp4"));
            let spec = ClipSpec {
                width: 96,
                height: 80,
                fps: 25,
                frames,
                shapes: 1,
                audio: i % 3 == 0,
                vfr: false,
                seed: 100 + i as u64,
            };
            write_clip(&p, "mp4", &spec).expect("write clip");
            p
        })
        .collect()
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    // The shard comes from the test's variables only, never from the caller's.
    for var in [
        "JOB_COMPLETION_INDEX",
        "CAMSTREAM_NUM_SHARDS",
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
    ] {
        c.env_remove(var);
    }
    c.args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs to the end, failing the test after two minutes (a hang).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let child = command(args, env).spawn().expect("spawn");
    finish(child)
}

fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("camstream did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> Value {
    assert!(o.status.success(), "exit {:?}: {}", o.status, stderr(o));
    summary(o)
}

/// The shard summary, the last line of stdout.
fn summary(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary: {}", stderr(o)));
    serde_json::from_str(line).expect("summary JSON")
}

fn plan(inputs: &[&str], manifest: &Path, extra: &[&str]) -> Vec<camstream_batch::Entry> {
    let mut args = vec!["plan"];
    args.extend(inputs);
    args.extend(["-o", s(manifest)]);
    args.extend(extra);
    let o = run(&args, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    manifest::read(manifest).unwrap()
}

/// `n` clips under `dir/in`, planned with the shapes model into `dir/manifest.jsonl`.
fn planned_clips(dir: &Path, n: usize, frames: u32) -> (PathBuf, Vec<camstream_batch::Entry>) {
    clips(&dir.join("in"), n, frames);
    let manifest = dir.join("manifest.jsonl");
    let entries = plan(&[s(&dir.join("in"))], &manifest, &["--model", &shapes()]);
    (manifest, entries)
}

/// `camstream batch` on a manifest, with its scratch folder beside the manifest (so that
/// a test can see what is left in it).
fn batch_args<'a>(manifest: &'a Path, out: &'a str, model: &'a str) -> Vec<&'a str> {
    let scratch = scratch_of(manifest).display().to_string();
    vec![
        "batch",
        "--manifest",
        s(manifest),
        "--out",
        out,
        "--model",
        model,
        "--scratch",
        Box::leak(scratch.into_boxed_str()),
    ]
}

fn scratch_of(manifest: &Path) -> PathBuf {
    manifest.with_file_name("scratch")
}

/// The only config folder under `out`.
fn config_dir(out: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "one config folder: {dirs:?}");
    dirs[0].clone()
}

/// key -> the marker's outputs as (name, size, sha256).
fn markers(cfg: &Path) -> BTreeMap<String, Vec<(String, u64, String)>> {
    let Ok(rd) = std::fs::read_dir(cfg.join("_done")) else {
        return BTreeMap::new();
    };
    rd.map(|e| {
        let p = e.unwrap().path();
        let m: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        let outs = m["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let name = o["name"].as_str().unwrap().to_string();
                let sha = o["sha256"].as_str().unwrap().to_string();
                (name, o["size"].as_u64().unwrap(), sha)
            })
            .collect();
        (m["key"].as_str().unwrap().to_string(), outs)
    })
    .collect()
}

/// Every marker's outputs are there with its sizes and hashes; with `complete`, every
/// input folder has a marker and holds exactly the marker's files (no debris).
fn check_commits(cfg: &Path, complete: bool) {
    let marks = markers(cfg);
    for (key, outs) in &marks {
        assert!(!outs.is_empty(), "{key}: marker without outputs");
        for (name, size, sha) in outs {
            let p = cfg.join(key).join(name);
            assert!(p.exists(), "marker {key} names {name}, which is missing");
            assert_eq!(
                std::fs::metadata(&p).unwrap().len(),
                *size,
                "{}",
                p.display()
            );
            assert_eq!(&sha256_file(&p).unwrap(), sha, "{}", p.display());
        }
    }
    if complete {
        for e in std::fs::read_dir(cfg).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.starts_with('_') {
                continue;
            }
            let outs = marks
                .get(&name)
                .unwrap_or_else(|| panic!("outputs of {name} without a marker"));
            let mut files: Vec<String> = std::fs::read_dir(cfg.join(&name))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let mut want: Vec<String> = outs.iter().map(|o| o.0.clone()).collect();
            want.sort();
            assert_eq!(files, want, "{name} holds exactly its marker's files");
        }
    }
}

/// `batch-status --json` for a manifest and output URL.
fn status_json(manifest: &Path, out: &str) -> Value {
    let o = run(
        &[
            "batch-status",
            "--manifest",
            s(manifest),
            "--out",
            out,
            "--json",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The input key of a progress line (`shard 0/3 [2/4] <key> <uri>: ...`).
fn key_of(line: &str) -> String {
    line.split_whitespace().nth(3).unwrap().to_string()
}

/// key -> how many times a worker's log says it finished that input itself.
fn completions(logs: &[String]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for line in logs.iter().flat_map(|l| l.lines()) {
        if line.contains(": done, ") {
            *n.entry(key_of(line)).or_insert(0) += 1;
        }
    }
    n
}

/// Spawns a shard and returns it with a channel of its stderr lines.
fn spawn_shard(args: &[&str], env: &[(&str, &str)]) -> (Child, mpsc::Receiver<String>) {
    let mut child = command(args, env).spawn().expect("spawn");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Reads lines until the `n`-th "start"; returns everything read.
fn until_start(rx: &mpsc::Receiver<String>, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut starts = 0;
    while starts < n {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("the shard started an input");
        starts += line.ends_with(": start") as usize;
        seen.push(line);
    }
    seen
}

#[test]
fn three_shards_with_a_kill_and_a_rerun_equal_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, entries) = planned_clips(dir.path(), 12, 40);
    assert_eq!(entries.len(), 12);
    let model = shapes();

    // The reference: everything in one process.
    let one = dir.path().join("one");
    let o = run(&batch_args(&manifest, s(&one), &model), &[]);
    let sum = ok(&o);
    assert_eq!(
        (sum["done"].as_u64(), sum["inputs"].as_u64()),
        (Some(12), Some(12))
    );
    let reference = markers(&config_dir(&one));
    assert_eq!(reference.len(), 12);
    check_commits(&config_dir(&one), true);

    // Three shards as three processes, as an Indexed Job runs them; the one with the
    // most inputs is killed (SIGKILL) while it works on its second.
    let started = Instant::now();
    let three = dir.path().join("three");
    let count = |i: u64| entries.iter().filter(|e| e.shard(3) == i).count();
    let victim = (0..3).max_by_key(|&i| count(i)).unwrap();
    assert!(count(victim) >= 2, "12 inputs leave some shard 2 or more");
    let args = batch_args(&manifest, s(&three), &model);
    let mut logs = Vec::new();
    let mut others = Vec::new();
    let mut killed = None;
    for i in 0..3u64 {
        let index = i.to_string();
        let env = [
            ("JOB_COMPLETION_INDEX", index.as_str()),
            ("CAMSTREAM_NUM_SHARDS", "3"),
        ];
        if i == victim {
            let (mut child, rx) = spawn_shard(&args, &env);
            let seen = until_start(&rx, 2);
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.code(), None, "killed by a signal");
            let key = key_of(seen.last().unwrap());
            logs.push(seen.join("\n") + "\n" + &rx.try_iter().collect::<Vec<_>>().join("\n"));
            killed = Some((index, key));
        } else {
            others.push(command(&args, &env).spawn().unwrap());
        }
    }
    for child in others {
        let o = finish(child);
        ok(&o);
        logs.push(stderr(&o));
    }
    let (index, key) = killed.unwrap();
    let cfg = config_dir(&three);
    assert!(
        !markers(&cfg).contains_key(&key),
        "the input killed mid-way has no marker"
    );
    check_commits(&cfg, false);

    // The retry of the killed index completes the union.
    let env = [
        ("JOB_COMPLETION_INDEX", index.as_str()),
        ("CAMSTREAM_NUM_SHARDS", "3"),
    ];
    let o = run(&args, &env);
    let sum = ok(&o);
    assert!(sum["skipped"].as_u64().unwrap() >= 1, "{sum}");
    logs.push(stderr(&o));
    let wall = started.elapsed();
    // The killed worker's scratch folder is gone too: the retry swept it.
    let left: Vec<_> = std::fs::read_dir(scratch_of(&manifest)).unwrap().collect();
    assert!(left.is_empty(), "scratch debris: {left:?}");
    eprintln!("3 shards, a kill and a rerun: {:.1} s", wall.as_secs_f64());

    assert_eq!(
        markers(&cfg),
        reference,
        "the shards' outputs equal one process's"
    );
    check_commits(&cfg, true);
    let done = completions(&logs);
    assert_eq!(done.len(), 12, "{done:?}");
    assert!(
        done.values().all(|&n| n == 1),
        "an input done twice: {done:?}"
    );

    // Rerunning everything does no work and touches nothing.
    let stamp = |k: &str| {
        std::fs::metadata(cfg.join("_done").join(format!("{k}.json")))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before: Vec<_> = reference.keys().map(|k| stamp(k)).collect();
    for i in 0..3 {
        let index = i.to_string();
        let env = [
            ("JOB_COMPLETION_INDEX", index.as_str()),
            ("CAMSTREAM_NUM_SHARDS", "3"),
        ];
        let sum = ok(&run(&args, &env));
        assert_eq!(sum["done"].as_u64(), Some(0), "{sum}");
        assert_eq!(sum["skipped"], sum["inputs"], "{sum}");
    }
    let after: Vec<_> = reference.keys().map(|k| stamp(k)).collect();
    assert_eq!(before, after);

    let st = status_json(&manifest, s(&three));
    assert_eq!(
        (st["done"].as_u64(), st["missing"].as_u64()),
        (Some(12), Some(0)),
        "{st}"
    );
    assert_eq!(st["num_shards"].as_u64(), Some(3));
    let per: Vec<u64> = st["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["done"].as_u64().unwrap())
        .collect();
    assert_eq!(per, (0..3).map(|i| count(i) as u64).collect::<Vec<_>>());
}

#[test]
fn two_workers_with_the_same_index_both_succeed_with_one_set_of_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = planned_clips(dir.path(), 4, 30);
    let out = dir.path().join("out");
    let model = shapes();
    let mut args = batch_args(&manifest, s(&out), &model);
    args.extend(["--shard-index", "0", "--num-shards", "1"]);
    let a = command(&args, &[]).spawn().unwrap();
    let b = command(&args, &[]).spawn().unwrap();
    let (a, b) = (finish(a), finish(b));
    ok(&a);
    ok(&b);
    let cfg = config_dir(&out);
    assert_eq!(markers(&cfg).len(), 4);
    check_commits(&cfg, true);
    let done = completions(&[stderr(&a), stderr(&b)]);
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(done.values().all(|&n| n == 1), "one marker each: {done:?}");
}

#[test]
fn a_bad_input_is_recorded_and_the_shard_exits_42() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    clips(&inputs, 2, 20);
    std::fs::write(inputs.join("broken.mp4"), b"this is not a video").unwrap();
    let manifest = dir.path().join("manifest.jsonl");
    let entries = plan(&[s(&inputs)], &manifest, &["--model", &shapes()]);
    let bad = entries
        .iter()
        .find(|e| e.uri.ends_with("broken.mp4"))
        .unwrap();
    let out = dir.path().join("out");
    let model = shapes();
    let args = batch_args(&manifest, s(&out), &model);

    let o = run(&args, &[]);
    assert_eq!(o.status.code(), Some(42), "{}", stderr(&o));
    let sum = summary(&o);
    assert_eq!(
        (sum["done"].as_u64(), sum["failed"].as_u64()),
        (Some(2), Some(1)),
        "{sum}"
    );
    let cfg = config_dir(&out);
    let failed: Value = serde_json::from_slice(
        &std::fs::read(cfg.join("_failed").join(format!("{}.json", bad.key))).unwrap(),
    )
    .unwrap();
    let why = failed["error"].as_str().unwrap();
    assert!(why.contains("broken.mp4") && !why.contains('\n'), "{why}");
    assert!(
        !cfg.join(&bad.key).exists(),
        "a failed input leaves no outputs"
    );
    check_commits(&cfg, true);

    // A failure is final: the rerun does no work and still says 42; --retry-failed
    // tries again.
    let o = run(&args, &[]);
    assert_eq!(o.status.code(), Some(42));
    assert!(
        stderr(&o).contains("failed in an earlier run"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(": start"), "{}", stderr(&o));
    let mut retry = args.clone();
    retry.push("--retry-failed");
    let o = run(&retry, &[]);
    assert_eq!(o.status.code(), Some(42));
    assert_eq!(stderr(&o).matches(": start").count(), 1, "{}", stderr(&o));

    let st = run(
        &["batch-status", "--manifest", s(&manifest), "--out", s(&out)],
        &[],
    );
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(
        text.contains("3 inputs, 2 done, 1 failed, 0 missing"),
        "{text}"
    );
}

#[test]
fn sigterm_finishes_the_input_in_progress_or_aborts_it_unmarked() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = planned_clips(dir.path(), 3, 60);
    let model = shapes();
    for (grace, finishes) in [("60", true), ("0", false)] {
        let out = dir.path().join(format!("out-{grace}"));
        let mut args = batch_args(&manifest, s(&out), &model);
        args.extend(["--grace", grace]);
        let (child, rx) = spawn_shard(&args, &[]);
        let seen = until_start(&rx, 1);
        let key = key_of(seen.last().unwrap());
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let o = finish(child);
        assert_eq!(o.status.code(), Some(143), "grace {grace}: {}", stderr(&o));
        let sum = summary(&o);
        assert_eq!(sum["stopped"], true, "{sum}");
        let cfg = out.join(entries_config(&manifest));
        let marks = markers(&cfg);
        assert_eq!(
            marks.contains_key(&key),
            finishes,
            "grace {grace}: {marks:?}"
        );
        assert_eq!(marks.len(), finishes as usize, "no input after the signal");
        if cfg.exists() {
            check_commits(&cfg, true);
        }
    }
}

fn entries_config(manifest: &Path) -> String {
    manifest::read(manifest).unwrap()[0].config.clone()
}

#[test]
fn recordings_shard_on_a_slurm_array_through_the_sbatch_script() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    // Three recordings of 20, 30 and 40 s cut from the sample ECG.
    let text = std::fs::read_to_string(repo("samples/ecg/ecg_60s.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for secs in [20, 30, 40] {
        let body = lines[..1 + secs * 250].join("\n");
        std::fs::write(inputs.join(format!("ecg_{secs}s.csv")), body + "\n").unwrap();
    }
    let model = repo("samples/models/ecg.toml").display().to_string();
    let manifest = dir.path().join("manifest.jsonl");
    plan(&[s(&inputs)], &manifest, &["--model", &model]);
    // Two array tasks of `sbatch --array=10-12:2 deploy/slurm/array.sbatch`, run as
    // Slurm would run them: the script with the task's variables, camstream on PATH.
    let out = dir.path().join("out");
    let bin_dir = Path::new(bin()).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for id in ["10", "12"] {
        let o = Command::new("bash")
            .arg(repo("deploy/slurm/array.sbatch"))
            .args([s(&manifest), s(&out)])
            .env_remove("JOB_COMPLETION_INDEX")
            .envs([
                ("PATH", path.as_str()),
                ("CAMSTREAM_MODEL", model.as_str()),
                ("SLURM_ARRAY_TASK_ID", id),
                ("SLURM_ARRAY_TASK_MIN", "10"),
                ("SLURM_ARRAY_TASK_STEP", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
                ("SLURM_CPUS_PER_TASK", "2"),
            ])
            .output()
            .unwrap();
        let sum = ok(&o);
        assert_eq!(sum["num_shards"].as_u64(), Some(2));
        assert_eq!(sum["shard"].as_u64(), Some(if id == "10" { 0 } else { 1 }));
    }
    let cfg = config_dir(&out);
    let marks = markers(&cfg);
    assert_eq!(marks.len(), 3);
    for outs in marks.values() {
        let names: Vec<&str> = outs.iter().map(|o| o.0.as_str()).collect();
        assert!(names.contains(&"signal.png"), "{names:?}");
        assert!(names.contains(&"signal.windows.jsonl"), "{names:?}");
    }
    check_commits(&cfg, true);
}

#[test]
fn settings_that_cannot_work_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    let files = clips(&inputs, 1, 10);
    let manifest = dir.path().join("manifest.jsonl");
    plan(&[s(&inputs)], &manifest, &["--model", &shapes()]);
    let out = dir.path().join("out");
    let model = shapes();
    let args = batch_args(&manifest, s(&out), &model);

    let mut other = args.clone();
    other.extend(["--alpha", "0.3"]);
    let e = common::fails(&run(&other, &[]));
    assert!(e.contains("planned with explain settings"), "{e}");

    let e = common::fails(&run(&args, &[("JOB_COMPLETION_INDEX", "1")]));
    assert!(e.contains("CAMSTREAM_NUM_SHARDS"), "{e}");
    let e = common::fails(&run(
        &args,
        &[("JOB_COMPLETION_INDEX", "3"), ("CAMSTREAM_NUM_SHARDS", "3")],
    ));
    assert!(e.contains("not below the shard count 3"), "{e}");
    let mut shard = args.clone();
    shard.extend(["--num-shards", "2"]);
    let e = common::fails(&run(&shard, &[]));
    assert!(e.contains("--shard-index"), "{e}");

    std::fs::write(dir.path().join("junk.jsonl"), "{\"uri\": 3}\n").unwrap();
    let junk = dir.path().join("junk.jsonl");
    let e = common::fails(&run(&batch_args(&junk, s(&out), &model), &[]));
    assert!(e.contains("line 1"), "{e}");
    let e = common::fails(&run(
        &[
            "plan",
            s(&dir.path().join("nothing")),
            "-o",
            s(&junk),
            "--model",
            &model,
        ],
        &[],
    ));
    assert!(e.contains("nothing"), "{e}");
    let e = common::fails(&run(
        &[
            "batch",
            "--manifest",
            s(&manifest),
            "--out",
            "ftp://x/y",
            "--model",
            &model,
        ],
        &[],
    ));
    assert!(e.contains("unsupported scheme"), "{e}");
    // Asking about a folder nothing ran in is an error, and does not create it.
    let none = dir.path().join("never-ran");
    let e = common::fails(&run(
        &[
            "batch-status",
            "--manifest",
            s(&manifest),
            "--out",
            s(&none),
        ],
        &[],
    ));
    assert!(e.contains("never-ran"), "{e}");
    assert!(!none.exists());

    // An input changed since the plan fails for good rather than silently mixing.
    std::fs::write(&files[0], b"replaced").unwrap();
    let o = run(&args, &[]);
    assert_eq!(o.status.code(), Some(42), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("changed since it was planned"),
        "{}",
        stderr(&o)
    );
}

/// The same protocol on S3, against a server on 127.0.0.1 that `scripts/batch-test.sh`
/// starts (moto) and names in CAMSTREAM_TEST_S3 (`s3://bucket/prefix`, with the AWS_*
/// variables set).
#[test]
#[ignore = "needs an S3 server: run scripts/batch-test.sh"]
fn the_protocol_on_an_s3_server() {
    let base = std::env::var("CAMSTREAM_TEST_S3").expect("CAMSTREAM_TEST_S3=s3://bucket/prefix");
    let dir = tempfile::tempdir().unwrap();
    let files = clips(&dir.path().join("in"), 5, 20);

    // Inputs on the bucket too; the plan lists the prefix once.
    let store = camstream_batch::Store::open(&format!("{base}/in")).unwrap();
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        store.upload(name, f).unwrap();
    }
    let manifest = dir.path().join("manifest.jsonl");
    let entries = plan(
        &[&format!("{base}/in/")],
        &manifest,
        &["--model", &shapes()],
    );
    assert_eq!(entries.len(), 5);
    assert!(entries.iter().all(|e| e.uri.starts_with("s3://")));

    let out = format!("{base}/out");
    let model = shapes();
    let args = batch_args(&manifest, &out, &model);
    let mut logs = Vec::new();
    for i in ["0", "1"] {
        let env = [("JOB_COMPLETION_INDEX", i), ("CAMSTREAM_NUM_SHARDS", "2")];
        let o = run(&args, &env);
        ok(&o);
        logs.push(stderr(&o));
    }
    // Two duplicate workers of shard 0 and a rerun: no work, all exit 0.
    let env = [("JOB_COMPLETION_INDEX", "0"), ("CAMSTREAM_NUM_SHARDS", "2")];
    let (a, b) = (
        command(&args, &env).spawn().unwrap(),
        command(&args, &env).spawn().unwrap(),
    );
    for o in [finish(a), finish(b)] {
        assert_eq!(ok(&o)["done"].as_u64(), Some(0));
    }
    let done = completions(&logs);
    assert!(
        done.len() == 5 && done.values().all(|&n| n == 1),
        "{done:?}"
    );

    // Every marker's outputs are on the bucket with its sizes and hashes.
    let cfg = camstream_batch::Store::open(&format!("{out}/{}", entries[0].config)).unwrap();
    let marks = cfg.list("_done").unwrap();
    assert_eq!(marks.len(), 5);
    for (name, _) in &marks {
        let m: camstream_batch::run::Marker =
            serde_json::from_slice(&cfg.get(&format!("_done/{name}")).unwrap().unwrap()).unwrap();
        for o in &m.outputs {
            let bytes = cfg.get(&format!("{}/{}", m.key, o.name)).unwrap().unwrap();
            assert_eq!(bytes.len() as u64, o.size);
            let local = dir.path().join("check");
            std::fs::write(&local, &bytes).unwrap();
            assert_eq!(sha256_file(&local).unwrap(), o.sha256);
        }
    }
    // The server honours create-only puts (If-None-Match: *), which the markers need.
    assert!(cfg.create("probe", b"1".to_vec()).unwrap());
    assert!(!cfg.create("probe", b"2".to_vec()).unwrap());
    assert_eq!(cfg.get("probe").unwrap().unwrap(), b"1");
    // A large output goes up in parts and comes back whole.
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..(camstream_batch::store::PART_SIZE * 2 + 12345))
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let stored = cfg.upload("big.bin", &big).unwrap();
    assert_eq!(stored.sha256, sha256_file(&big).unwrap());
    assert_eq!(cfg.get("big.bin").unwrap().unwrap(), data);

    let st = status_json(&manifest, &out);
    assert_eq!(
        (st["done"].as_u64(), st["missing"].as_u64()),
        (Some(5), Some(0)),
        "{st}"
    );
}

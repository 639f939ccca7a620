//! The storage and manifest pieces of the commit protocol, on the local and in-memory
//! stores (the S3 run is in tests/batch.rs, behind scripts/batch-test.sh).

use camstream_batch::config::sha256_file;
use camstream_batch::manifest::{self, Entry};
use camstream_batch::store::{Meta, Store, PART_SIZE};

fn stores(dir: &std::path::Path) -> Vec<Store> {
    vec![
        Store::open(dir.join("local").to_str().unwrap()).unwrap(),
        Store::open(&format!("file://{}", dir.join("url").display())).unwrap(),
        Store::open("memory:///prefix").unwrap(),
    ]
}

#[test]
fn create_only_puts_keep_the_first_writer() {
    let dir = tempfile::tempdir().unwrap();
    for store in stores(dir.path()) {
        assert!(store.create("cfg/_done/k.json", b"first".to_vec()).unwrap());
        assert!(!store
            .create("cfg/_done/k.json", b"second".to_vec())
            .unwrap());
        assert_eq!(store.get("cfg/_done/k.json").unwrap().unwrap(), b"first");
        assert!(store.exists("cfg/_done/k.json").unwrap());
        assert!(!store.exists("cfg/_done/other.json").unwrap());
        assert_eq!(store.get("cfg/_done/other.json").unwrap(), None);
        store.delete("cfg/_done/k.json").unwrap();
        store.delete("cfg/_done/k.json").unwrap();
        assert!(!store.exists("cfg/_done/k.json").unwrap());
    }
}

#[test]
fn large_files_go_up_in_parts_and_come_back_whole() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let data: Vec<u8> = (0..PART_SIZE * 2 + 777)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    std::fs::write(&big, &data).unwrap();
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello").unwrap();
    for store in stores(dir.path()) {
        let s = store.upload("cfg/k/big.bin", &big).unwrap();
        assert_eq!((s.name.as_str(), s.size), ("big.bin", data.len() as u64));
        assert_eq!(s.sha256, sha256_file(&big).unwrap());
        assert_eq!(store.get("cfg/k/big.bin").unwrap().unwrap(), data);
        let s = store.upload("cfg/k/small.txt", &small).unwrap();
        assert_eq!(
            s.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let back = dir.path().join("back.bin");
        store.download("cfg/k/big.bin", &back).unwrap();
        assert_eq!(std::fs::read(&back).unwrap(), data);
        let names: Vec<String> = store
            .list("cfg")
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["k/big.bin", "k/small.txt"]);
    }
}

#[test]
fn unknown_schemes_are_refused_by_name() {
    let e = Store::open("ftp://host/x").err().unwrap().to_string();
    assert!(e.contains("`out`") && e.contains("ftp://"), "{e}");
}

fn entry(uri: &str, config: &str) -> Entry {
    let meta = Meta {
        size: 10,
        mtime: "2026-12-05T00:00:00+00:00".into(),
    };
    Entry::new(uri.into(), meta, config)
}

#[test]
fn keys_and_shards_are_deterministic() {
    let a = entry("/data/a.mp4", "c0");
    assert_eq!(a, entry("/data/a.mp4", "c0"));
    assert_eq!(a.key.len(), 32);
    assert_ne!(a.key, entry("/data/b.mp4", "c0").key);
    // Changing the size or mtime makes another input.
    let mut meta = Meta {
        size: 11,
        mtime: a.mtime.clone(),
    };
    assert_ne!(Entry::new(a.uri.clone(), meta.clone(), "c0").key, a.key);
    meta.size = 10;
    meta.mtime = "2026-12-05T00:00:01+00:00".into();
    assert_ne!(Entry::new(a.uri.clone(), meta, "c0").key, a.key);
    // Every input lands in exactly one shard, and 100 inputs spread over 4.
    let entries: Vec<Entry> = (0..100)
        .map(|i| entry(&format!("/d/{i}.mp4"), "c0"))
        .collect();
    let mut counts = [0; 4];
    for e in &entries {
        counts[e.shard(4) as usize] += 1;
        assert_eq!(e.shard(1), 0);
    }
    assert!(counts.iter().all(|&c| c > 10), "{counts:?}");
}

#[test]
fn manifests_round_trip_and_bad_lines_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let entries = vec![entry("/d/a.mp4", "c0"), entry("s3://b/x.wav", "c0")];
    manifest::write(&path, &entries).unwrap();
    assert_eq!(manifest::read(&path).unwrap(), entries);

    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&serde_json::to_string(&entry("/d/c.mp4", "c1")).unwrap());
    std::fs::write(&path, &text).unwrap();
    let e = manifest::read(&path).unwrap_err().to_string();
    assert!(
        e.contains("line 3") && e.contains("one manifest, one config"),
        "{e}"
    );

    std::fs::write(
        &path,
        "{\"uri\":\"x\",\"size\":1,\"mtime\":\"t\",\"key\":\"nothex\",\"config\":\"c\"}\n",
    )
    .unwrap();
    let e = manifest::read(&path).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("32 hex digits"), "{e}");
}

#[test]
fn plans_walk_folders_for_media_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    for name in [
        "b.mp4",
        "sub/a.wav",
        "sub/notes.txt",
        ".hidden.mp4",
        "c.MKV",
        "rec.dat",
    ] {
        std::fs::write(root.join(name), b"x").unwrap();
    }
    let entries = manifest::plan(&[root.display().to_string()], "c0").unwrap();
    let names: Vec<String> = entries
        .iter()
        .map(|e| {
            e.uri
                .strip_prefix(&format!("{}/", root.canonicalize().unwrap().display()))
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["b.mp4", "c.MKV", "sub/a.wav"]);
    // A file named explicitly is taken whatever its extension, and each input once.
    let notes = root.join("sub/notes.txt").display().to_string();
    let again = manifest::plan(&[notes.clone(), notes], "c0").unwrap();
    assert_eq!(again.len(), 1);
    assert!(manifest::plan(&[dir.path().join("none").display().to_string()], "c0").is_err());
}

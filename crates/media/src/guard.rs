//! Checks made before a run starts, so that no output can destroy an input or another
//! output of the same run: paths are compared by what they resolve to (symlinks
//! followed, hard links by device and inode), not by how they are spelled.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a path names on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    /// An existing file: its device and inode (one for every link to it).
    File(u64, u64),
    /// A name not yet on disk: its folder resolved, plus the file name.
    Name(PathBuf),
}

fn identity(p: &Path) -> Identity {
    if let Ok(m) = std::fs::metadata(p) {
        return Identity::File(m.dev(), m.ino());
    }
    let parent = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf());
    Identity::Name(dir.join(p.file_name().unwrap_or_default()))
}

/// One output of a run: the parameter that names it and its path.
#[derive(Clone, Copy, Debug)]
pub struct Output<'a> {
    pub param: &'a str,
    pub path: &'a Path,
}

/// Refuses outputs that resolve to an input, to another output, or to a folder, and
/// outputs another live camstream run is writing now.
pub fn check_outputs(inputs: &[&Path], outputs: &[Output]) -> Result<()> {
    let ins: Vec<Identity> = inputs.iter().map(|p| identity(p)).collect();
    let mut seen: Vec<(Identity, &Output)> = Vec::with_capacity(outputs.len());
    for out in outputs {
        if out.path.is_dir() {
            return Err(Error::file(
                out.path,
                format!("`{}` is an existing folder; give a file name", out.param),
            ));
        }
        let id = identity(out.path);
        if let Some(i) = ins.iter().position(|x| *x == id) {
            return Err(Error::file(
                out.path,
                format!(
                    "`{}` would overwrite the input {}; choose another name",
                    out.param,
                    inputs[i].display()
                ),
            ));
        }
        if let Some((_, first)) = seen.iter().find(|(x, _)| *x == id) {
            return Err(Error::file(
                out.path,
                format!(
                    "`{}` and `{}` name the same file; give each output its own",
                    first.param, out.param
                ),
            ));
        }
        if let Some(pid) = crate::io::other_writer(out.path) {
            return Err(Error::file(
                out.path,
                format!("another camstream run (process {pid}) is writing it now"),
            ));
        }
        seen.push((id, out));
    }
    Ok(())
}

/// Inputs whose outputs would share a name in one folder (`a/x.png` and `b/x.png` both
/// give `x.png`): each clash as (stem, the inputs).
pub fn stem_clashes(inputs: &[PathBuf]) -> Vec<(String, Vec<&Path>)> {
    let mut by_stem: std::collections::BTreeMap<String, Vec<&Path>> = Default::default();
    for p in inputs {
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        by_stem.entry(stem).or_default().push(p);
    }
    by_stem.into_iter().filter(|(_, v)| v.len() > 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(path: &Path) -> Output<'_> {
        Output {
            param: "output",
            path,
        }
    }

    #[test]
    fn an_output_that_resolves_to_an_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.mp4");
        std::fs::write(&input, b"video").unwrap();
        let link = dir.path().join("link.mp4");
        std::os::unix::fs::symlink(&input, &link).unwrap();
        let hard = dir.path().join("hard.mp4");
        std::fs::hard_link(&input, &hard).unwrap();
        let dotted = dir.path().join(".").join("in.mp4");
        for o in [&input, &link, &hard, &dotted] {
            let e = check_outputs(&[&input], &[out(o)]).unwrap_err().to_string();
            assert!(e.contains("would overwrite the input"), "{e}");
        }
        let fresh = dir.path().join("out.mp4");
        check_outputs(&[&input], &[out(&fresh)]).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), b"video");
    }

    #[test]
    fn two_outputs_on_one_file_or_a_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        let b = dir.path().join("sub/../a.json");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let e = check_outputs(
            &[],
            &[
                Output {
                    param: "frames_json",
                    path: &a,
                },
                Output {
                    param: "report",
                    path: &b,
                },
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`frames_json` and `report` name the same file"),
            "{e}"
        );
        let e = check_outputs(&[], &[out(dir.path())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("existing folder"), "{e}");
    }

    #[test]
    fn inputs_with_one_stem_clash() {
        let inputs: Vec<PathBuf> = ["a/x.png", "b/x.png", "c/y.png", "x.jpg"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let c = stem_clashes(&inputs);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, "x");
        assert_eq!(c[0].1.len(), 3);
    }
}

//! Users' labelled data for [`crate::eval::evaluate`]: a folder with one subfolder per
//! class (torchvision's `ImageFolder` layout), or a manifest (JSON lines or CSV) that
//! names each file's class and, optionally, where its evidence is. Files are pictures or
//! float32 `.npy` tensors, read one batch at a time so memory does not grow with the
//! dataset.

use std::path::{Path, PathBuf};

use camstream_core::model::Network;
use camstream_core::preprocess::{InputSpec, Placement};
use camstream_media::inputs::read_inputs;

use crate::error::{Error, Result};
use crate::eval::{Labelled, Samples};
use crate::tasks::Region;

/// Extensions a dataset folder's files may have; anything else in it is skipped.
const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "npy"];

/// Where the evidence for the class is, in the file's own coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Evidence {
    /// x0, y0, x1, y1 in pixels (ends exclusive, like PIL's crop box).
    Box([f64; 4]),
    /// Samples start..end of a 1D tensor.
    Span([usize; 2]),
}

#[derive(Clone, Debug)]
pub struct Item {
    pub path: PathBuf,
    pub label: String,
    pub evidence: Option<Evidence>,
    /// Where the item was listed ("line 3", "folder cat"), for messages.
    origin: String,
}

/// The items of a labelled folder or manifest, in a fixed order.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub source: PathBuf,
    pub items: Vec<Item>,
}

impl Dataset {
    /// A folder of class folders, or a `.jsonl` / `.csv` manifest whose paths are
    /// relative to the manifest's folder. Every listed file must exist.
    pub fn open(path: &Path) -> Result<Self> {
        let items = if path.is_dir() {
            from_folder(path)?
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
            let base = path.parent().unwrap_or(Path::new("."));
            match path.extension().and_then(|e| e.to_str()) {
                Some("jsonl") | Some("json") => from_json_lines(&text, base, path)?,
                Some("csv") => from_csv(&text, base, path)?,
                _ => return Err(Error::data(
                    path,
                    "not a dataset: give a folder of class folders, or a .jsonl or .csv manifest",
                )),
            }
        };
        if items.is_empty() {
            return Err(Error::data(path, "lists no samples"));
        }
        if let Some(missing) = items.iter().find(|i| !i.path.is_file()) {
            return Err(Error::data(
                path,
                format!(
                    "{}: no such file {}",
                    missing.origin,
                    missing.path.display()
                ),
            ));
        }
        Ok(Self {
            source: path.to_path_buf(),
            items,
        })
    }

    /// Every item's class index in `net`, checked before any work starts.
    pub fn classes(&self, net: &Network) -> Result<Vec<usize>> {
        self.items
            .iter()
            .map(|i| {
                net.parse_class(&i.label)
                    .map_err(|e| Error::data(&self.source, format!("{}: {e}", i.origin)))
            })
            .collect()
    }

    /// The first `limit` items (all without one) as [`Samples`] for `net`.
    pub fn samples(&self, net: &Network, limit: Option<usize>) -> Result<DataSamples<'_>> {
        let mut classes = self.classes(net)?;
        classes.truncate(limit.unwrap_or(usize::MAX));
        Ok(DataSamples {
            data: self,
            spec: net.input.clone(),
            classes,
            next: 0,
        })
    }
}

/// A dataset read a batch at a time.
pub struct DataSamples<'a> {
    data: &'a Dataset,
    spec: InputSpec,
    classes: Vec<usize>,
    next: usize,
}

impl Samples for DataSamples<'_> {
    fn name(&self) -> String {
        self.data.source.display().to_string()
    }

    fn len(&self) -> usize {
        self.classes.len()
    }

    fn take(&mut self, n: usize) -> Result<Vec<Labelled>> {
        let end = (self.next + n).min(self.classes.len());
        let mut out = Vec::with_capacity(end - self.next);
        for (item, &class) in self.data.items[self.next..end]
            .iter()
            .zip(&self.classes[self.next..end])
        {
            let mut read = read_inputs(&item.path, &self.spec)?;
            if read.len() != 1 {
                return Err(Error::data(
                    &item.path,
                    format!("holds {} samples; a dataset file holds one", read.len()),
                ));
            }
            let r = read.remove(0);
            let region = item
                .evidence
                .map(|e| {
                    region(
                        e,
                        &r.shape[1..],
                        r.placement,
                        &item.path,
                        self.spec.kind.rank(),
                    )
                })
                .transpose()?
                .flatten();
            out.push(Labelled {
                input: r.data,
                shape: r.shape,
                class,
                region,
            });
        }
        self.next = end;
        Ok(out)
    }
}

/// The evidence in model-input coordinates: through the picture's placement, clipped
/// to what the model sees (None when it lies wholly outside, e.g. cropped away).
fn region(
    e: Evidence,
    size: &[usize],
    placement: Option<Placement>,
    path: &Path,
    rank: usize,
) -> Result<Option<Region>> {
    match (e, rank) {
        (Evidence::Span([start, end]), 1) => {
            let end = end.min(size[0]);
            Ok((start < end).then_some(Region::Span { start, end }))
        }
        (Evidence::Box(b), 2) => {
            let (h, w) = (size[0] as f64, size[1] as f64);
            // Per axis: file pixels to model pixels (scale, offset), and the model
            // pixels that show the file (lo..hi).
            let axes = match placement {
                Some(p) => {
                    let [sx, sy, sw, sh] = p.source.map(f64::from);
                    let [mx, my, mw, mh] = p.model.map(f64::from);
                    let s = (mw / sw, mh / sh);
                    [
                        (s.0, mx - sx * s.0, mx, mx + mw),
                        (s.1, my - sy * s.1, my, my + mh),
                    ]
                }
                None => [(1.0, 0.0, 0.0, w), (1.0, 0.0, 0.0, h)],
            };
            let to = |v: f64, (s, o, lo, hi): (f64, f64, f64, f64)| (v * s + o).clamp(lo, hi);
            let [ax, ay] = axes;
            let (x0, x1) = (to(b[0], ax).floor(), to(b[2], ax).ceil());
            let (y0, y1) = (to(b[1], ay).floor(), to(b[3], ay).ceil());
            Ok((x0 < x1 && y0 < y1).then_some(Region::Box {
                x0: x0 as usize,
                y0: y0 as usize,
                x1: x1 as usize,
                y1: y1 as usize,
            }))
        }
        (Evidence::Box(_), _) => Err(Error::data(
            path,
            "a box is for pictures; 1D data takes a span",
        )),
        (Evidence::Span(_), _) => Err(Error::data(
            path,
            "a span is for 1D data; pictures take a box",
        )),
    }
}

fn from_folder(root: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for class_dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        let label = file_name(&class_dir);
        let mut stack = vec![class_dir];
        while let Some(dir) = stack.pop() {
            for p in sorted_entries(&dir)?.into_iter().rev() {
                if p.is_dir() {
                    stack.push(p);
                } else if has_extension(&p) {
                    items.push(Item {
                        path: p,
                        label: label.clone(),
                        evidence: None,
                        origin: format!("folder {label}"),
                    });
                }
            }
        }
    }
    // Depth-first with reversed pushes: restore the plain sorted order within a class.
    items.sort_by(|a, b| (&a.label, &a.path).cmp(&(&b.label, &b.path)));
    Ok(items)
}

/// Entries of `dir` that are not hidden, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| !file_name(p).starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn has_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// One JSON object per line: `{"path": ..., "label": "cat" | 3, "box": [x0, y0, x1, y1]}`
/// or `"span": [start, end]`; blank lines are skipped.
fn from_json_lines(text: &str, base: &Path, path: &Path) -> Result<Vec<Item>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Line {
        path: PathBuf,
        label: serde_json::Value,
        #[serde(rename = "box")]
        bbox: Option<[f64; 4]>,
        span: Option<[usize; 2]>,
    }
    let mut items = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = format!("line {}", i + 1);
        let l: Line =
            serde_json::from_str(line).map_err(|e| Error::data(path, format!("{origin}: {e}")))?;
        let label = match l.label {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) if n.is_u64() => n.to_string(),
            other => {
                return Err(Error::data(
                    path,
                    format!("{origin}: label {other} is neither a class name nor an index"),
                ))
            }
        };
        let evidence =
            evidence(l.bbox, l.span).map_err(|m| Error::data(path, format!("{origin}: {m}")))?;
        items.push(Item {
            path: base.join(l.path),
            label,
            evidence,
            origin,
        });
    }
    Ok(items)
}

/// A header row, then rows of `path,label` with optional `x0,y0,x1,y1` or `start,end`.
fn from_csv(text: &str, base: &Path, path: &Path) -> Result<Vec<Item>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let bad = |origin: &str, m: String| Error::data(path, format!("{origin}: {m}"));
    let header = reader
        .headers()
        .map_err(|e| bad("header", e.to_string()))?
        .clone();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let (Some(pc), Some(lc)) = (col("path"), col("label")) else {
        return Err(bad("header", "needs `path` and `label` columns".into()));
    };
    let boxes = ["x0", "y0", "x1", "y1"].map(col);
    let spans = ["start", "end"].map(col);
    let mut items = Vec::new();
    for (i, row) in reader.records().enumerate() {
        let origin = format!("line {}", i + 2);
        let row = row.map_err(|e| bad(&origin, e.to_string()))?;
        let field = |c: usize| row.get(c).map(str::trim).unwrap_or("");
        let numbers = |cols: &[Option<usize>]| -> std::result::Result<Option<Vec<f64>>, String> {
            if cols.iter().any(Option::is_none) || cols.iter().all(|c| field(c.unwrap()).is_empty())
            {
                return Ok(None);
            }
            cols.iter()
                .map(|c| {
                    let f = field(c.unwrap());
                    f.parse::<f64>()
                        .map_err(|_| format!("`{f}` is not a number"))
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map(Some)
        };
        let bbox = numbers(&boxes)
            .map_err(|m| bad(&origin, m))?
            .map(|v| [v[0], v[1], v[2], v[3]]);
        let span = numbers(&spans)
            .map_err(|m| bad(&origin, m))?
            .map(|v| [v[0].max(0.0) as usize, v[1].max(0.0) as usize]);
        let evidence = evidence(bbox, span).map_err(|m| bad(&origin, m))?;
        items.push(Item {
            path: base.join(field(pc)),
            label: field(lc).to_string(),
            evidence,
            origin,
        });
    }
    Ok(items)
}

fn evidence(
    bbox: Option<[f64; 4]>,
    span: Option<[usize; 2]>,
) -> std::result::Result<Option<Evidence>, String> {
    match (bbox, span) {
        (Some(_), Some(_)) => Err("give a box or a span, not both".into()),
        (Some(b), None) if b.iter().all(|v| v.is_finite()) && b[0] < b[2] && b[1] < b[3] => {
            Ok(Some(Evidence::Box(b)))
        }
        (Some(b), None) => Err(format!("box {b:?} must be x0 < x1, y0 < y1")),
        (None, Some([s, e])) if s < e => Ok(Some(Evidence::Span([s, e]))),
        (None, Some(s)) => Err(format!("span {s:?} must be start < end")),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_follows_the_picture_into_the_model_input() {
        // A 200x100 picture stretched to 50x50: x / 4, y / 2.
        let p = Placement {
            model: [0, 0, 50, 50],
            source: [0, 0, 200, 100],
        };
        let r = region(
            Evidence::Box([20.0, 10.0, 42.0, 31.0]),
            &[50, 50],
            Some(p),
            Path::new("x"),
            2,
        );
        assert_eq!(
            r.unwrap(),
            Some(Region::Box {
                x0: 5,
                y0: 5,
                x1: 11,
                y1: 16
            })
        );
        // A centre crop that cuts the box away: no region.
        let crop = Placement {
            model: [0, 0, 50, 50],
            source: [50, 0, 100, 100],
        };
        let r = region(
            Evidence::Box([0.0, 0.0, 40.0, 40.0]),
            &[50, 50],
            Some(crop),
            Path::new("x"),
            2,
        );
        assert_eq!(r.unwrap(), None);
        let r = region(Evidence::Span([3, 900]), &[100], None, Path::new("x"), 1);
        assert_eq!(r.unwrap(), Some(Region::Span { start: 3, end: 100 }));
        assert!(region(Evidence::Span([3, 9]), &[10, 10], None, Path::new("x"), 2).is_err());
    }

    #[test]
    fn manifests_name_their_bad_line() {
        let base = Path::new("/data");
        let m = Path::new("/data/m.jsonl");
        let ok = from_json_lines(
            "{\"path\": \"a.png\", \"label\": \"cat\", \"box\": [1, 2, 3, 4]}\n\n{\"path\": \"b.npy\", \"label\": 2}\n",
            base,
            m,
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].path, Path::new("/data/a.png"));
        assert_eq!(ok[0].evidence, Some(Evidence::Box([1.0, 2.0, 3.0, 4.0])));
        assert_eq!(ok[1].label, "2");
        let e = from_json_lines(
            "{\"path\": \"a.png\", \"label\": \"cat\"}\n{\"path\": 3}\n",
            base,
            m,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("/data/m.jsonl: line 2: "), "{e}");
        let e = from_json_lines(
            "{\"path\": \"a\", \"label\": \"c\", \"box\": [5, 0, 1, 1]}",
            base,
            m,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 1: box"), "{e}");

        let csv = "path,label,start,end\nr1.npy,ectopic,10,20\nr2.npy,normal,,\n";
        let ok = from_csv(csv, base, Path::new("/data/m.csv")).unwrap();
        assert_eq!(ok[0].evidence, Some(Evidence::Span([10, 20])));
        assert_eq!(ok[1].evidence, None);
        let e = from_csv("file,class\na,b\n", base, Path::new("/data/m.csv"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs `path` and `label`"), "{e}");
        let e = from_csv(
            "path,label,x0,y0,x1,y1\na,b,1,2,x,4\n",
            base,
            Path::new("/data/m.csv"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 2: `x` is not a number"), "{e}");
    }
}

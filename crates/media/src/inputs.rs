//! Files the network takes whole, as its input: pictures (PNG, JPEG), prepared for the
//! model's input spec, and float32 `.npy` tensors, used as they are. One reader for the
//! `image` command, `eval` on labelled data and any other front end.

use std::path::Path;

use image::RgbImage;

use camstream_core::preprocess::{denormalise, prepare_image, InputSpec, Placement};

use crate::error::{Error, Result};
use crate::npy::read_npy;
use crate::picture::read_image;

/// One sample of a file, ready for the network.
pub struct FileInput {
    /// (C, spatial...) values, normalised as the model expects.
    pub data: Vec<f32>,
    /// (C, spatial...) of this sample.
    pub shape: Vec<usize>,
    /// Pictures only: which source pixels lie where in the model input.
    pub placement: Option<Placement>,
    /// 2D inputs: what an overlay is drawn on (the part of the picture the model sees,
    /// or a denormalised tensor) and the model-input rectangle (x, y, w, h) it shows.
    pub view: Option<(RgbImage, [usize; 4])>,
}

/// Reads one file: a `.npy` of (C, spatial...) or (N, C, spatial...) float32 values,
/// checked against `spec` (channels, finite values, not empty), or a picture (2D models).
pub fn read_inputs(path: &Path, spec: &InputSpec) -> Result<Vec<FileInput>> {
    let rank = spec.kind.rank();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ext == "npy" {
        return read_tensor(path, spec);
    }
    if rank != 2 {
        return Err(Error::Unsupported {
            what: if rank == 1 {
                "signal format"
            } else {
                "clip format"
            },
            name: format!(".{ext}"),
            supported: vec![format!(".npy {} float32", shapes(rank))],
        });
    }
    Ok(vec![picture_input(&read_image(path)?, spec)])
}

/// A decoded picture prepared for a 2D model, with the view an overlay is drawn on.
pub fn picture_input(img: &RgbImage, spec: &InputSpec) -> FileInput {
    let p = prepare_image(img, spec);
    let [sx, sy, sw, sh] = p.placement.source;
    let view = image::imageops::crop_imm(img, sx, sy, sw, sh).to_image();
    let mut shape = vec![spec.channels];
    shape.extend(p.size);
    FileInput {
        data: p.chw,
        shape,
        placement: Some(p.placement),
        view: Some((view, p.placement.model.map(|v| v as usize))),
    }
}

/// The array shapes a model of this spatial rank takes.
fn shapes(rank: usize) -> &'static str {
    match rank {
        1 => "(C,L) or (N,C,L)",
        2 => "(C,H,W) or (N,C,H,W)",
        _ => "(C,T,H,W) or (N,C,T,H,W)",
    }
}

fn read_tensor(path: &Path, spec: &InputSpec) -> Result<Vec<FileInput>> {
    let (data, shape) = read_npy(path)?;
    tensor_inputs(path, data, &shape, spec)
}

/// A float32 tensor of (C, spatial...) or (N, C, spatial...) values from `origin` (a file,
/// or a request), checked against `spec` (rank, channels, finite values, not empty) and
/// split into samples.
pub fn tensor_inputs(
    origin: &Path,
    data: Vec<f32>,
    shape: &[usize],
    spec: &InputSpec,
) -> Result<Vec<FileInput>> {
    let path = origin;
    let rank = spec.kind.rank();
    if data.len() != shape.iter().product::<usize>() {
        return Err(Error::file(
            path,
            format!("{} values do not fill shape {shape:?}", data.len()),
        ));
    }
    let (n, per) = if shape.len() == rank + 1 {
        (1, shape.to_vec())
    } else if shape.len() == rank + 2 {
        (shape[0], shape[1..].to_vec())
    } else {
        return Err(Error::file(
            path,
            format!("array of shape {shape:?}; expected {}", shapes(rank)),
        ));
    };
    if per[0] != spec.channels {
        return Err(Error::file(
            path,
            format!(
                "{} channels, the model takes {} (shape {shape:?})",
                per[0], spec.channels
            ),
        ));
    }
    if data.iter().any(|v| !v.is_finite()) {
        return Err(Error::file(path, "contains NaN or infinite values"));
    }
    if n == 0 || per.contains(&0) {
        return Err(Error::file(
            path,
            format!("holds no samples (shape {shape:?})"),
        ));
    }
    let len: usize = per.iter().product();
    Ok(data
        .chunks_exact(len)
        .map(|d| FileInput {
            data: d.to_vec(),
            shape: per.clone(),
            placement: None,
            view: (rank == 2)
                .then(|| (denormalise(d, per[1], per[2], spec), [0, 0, per[2], per[1]])),
        })
        .collect())
}

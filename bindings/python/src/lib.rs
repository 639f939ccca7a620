//! `camstream._camstream`: the library's explain API for Python. Thin: arrays are copied
//! in while the GIL is held, the network runs with the GIL released, every error is one
//! `camstream.Error` with the CLI's one-line message, and no panic crosses into Python.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use camstream_core::cam::Targets;
use camstream_core::metrics::{measure, Measured, MetricsConfig};
use camstream_core::preprocess::InputKind;
use camstream_core::{
    CamConfig, ExplainOptions, Input, Method, ModelRequest, ModelSource, Network,
};
use camstream_media::decode::signal::{self, OpenOptions};
use camstream_media::render::{colormap_by_name, overlay_like_show_cam_on_image, COLORMAPS};
use camstream_pipeline::signal::{run_signal, ChannelChoice, SignalJob, SignalOutput, WindowModel};
use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    IntoPyArray, PyArrayDyn, PyReadonlyArray2, PyReadonlyArray3, PyReadonlyArrayDyn,
    PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyList;

create_exception!(
    camstream,
    Error,
    PyException,
    "camstream's one error type: bad shapes or dtypes, unknown layers, classes out of range, unreadable files. The message is the one line the CLI prints."
);

fn error(msg: impl std::fmt::Display) -> PyErr {
    let line = msg.to_string().lines().collect::<Vec<_>>().join(" ");
    Error::new_err(line)
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Runs `f` with the GIL released; an error or a panic becomes `camstream.Error`.
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T, String> + Send) -> PyResult<T> {
    py.detach(|| std::panic::catch_unwind(AssertUnwindSafe(f)))
        .map_err(|p| {
            error(format!(
                "internal error (please report): {}",
                panic_message(p)
            ))
        })?
        .map_err(error)
}

/// A float32 array's values in logical order (any strides) and its shape; other dtypes
/// are refused by name.
fn f32_array(x: &Bound<'_, PyAny>, name: &str) -> PyResult<(Vec<f32>, Vec<usize>)> {
    match x.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        Ok(a) => {
            let shape = a.shape().to_vec();
            let data = match a.as_slice() {
                Ok(s) => s.to_vec(),
                Err(_) => a.as_array().iter().copied().collect(),
            };
            Ok((data, shape))
        }
        Err(_) => {
            let what = x
                .getattr("dtype")
                .map(|d| format!("dtype {d}"))
                .unwrap_or_else(|_| {
                    format!(
                        "a {}",
                        x.get_type()
                            .name()
                            .map(|n| n.to_string())
                            .unwrap_or_default()
                    )
                });
            Err(error(format!(
                "`{name}` must be a float32 numpy array, got {what}"
            )))
        }
    }
}

fn py_array<'py>(py: Python<'py>, data: Vec<f32>, shape: &[usize]) -> Bound<'py, PyArrayDyn<f32>> {
    ArrayD::from_shape_vec(IxDyn(shape), data)
        .expect("shape matches data")
        .into_pyarray(py)
}

/// A class given as an index or a label, or one per sample.
fn targets(net: &Network, target: Option<&Bound<'_, PyAny>>) -> PyResult<Targets> {
    let one = |v: &Bound<'_, PyAny>| -> PyResult<usize> {
        let s = if let Ok(i) = v.extract::<i64>() {
            if i < 0 {
                return Err(error(format!(
                    "class {i} is out of range: classes are 0..={}",
                    net.num_classes.saturating_sub(1)
                )));
            }
            i.to_string()
        } else if let Ok(s) = v.extract::<String>() {
            s
        } else {
            return Err(error(
                "`target` must be a class index, a label, or a list of them",
            ));
        };
        net.parse_class(&s).map_err(error)
    };
    match target {
        None => Ok(Targets::TopOne),
        Some(t) if t.is_none() => Ok(Targets::TopOne),
        Some(t) => match t.cast::<PyList>() {
            Ok(list) => Ok(Targets::PerSample(
                list.iter().map(|v| one(&v)).collect::<PyResult<_>>()?,
            )),
            Err(_) => Ok(Targets::All(one(t)?)),
        },
    }
}

/// A recording explained: the windows' JSON lines, the relevance per input sample, notes.
type SignalOut = (Vec<String>, Py<PyArrayDyn<f32>>, Vec<String>);

/// One batch explained: numpy arrays and lists, one entry per sample.
#[pyclass(name = "Result", frozen, get_all, module = "camstream._camstream")]
struct Explained {
    /// (N, h, w) or (N, l): the signed map at the layer, before ReLU (final maps when
    /// several layers or aug_smooth combine them).
    raw: Py<PyArrayDyn<f32>>,
    /// (N, H, W) or (N, L): pytorch-grad-cam's final map at the input's size, in [0, 1].
    heatmap: Py<PyArrayDyn<f32>>,
    classes: Vec<usize>,
    labels: Vec<String>,
    /// (N,): the explained class's logit.
    logits: Py<PyArrayDyn<f32>>,
    /// (N,): its softmax (sigmoid for multi-label models) probability.
    probabilities: Py<PyArrayDyn<f32>>,
    layer: String,
    method: String,
}

#[pymethods]
impl Explained {
    fn __len__(&self) -> usize {
        self.classes.len()
    }
    fn __repr__(&self) -> String {
        format!(
            "camstream.Result({} samples, {} at {}, classes {:?})",
            self.classes.len(),
            self.method,
            self.layer,
            self.labels
        )
    }
}

/// A model cut at its target layer(s), explaining with one CAM method.
#[pyclass(frozen, subclass, module = "camstream._camstream")]
struct Explainer {
    inner: camstream_core::Explainer,
}

#[pymethods]
impl Explainer {
    #[new]
    #[pyo3(signature = (model, weights=None, layer=None, method="gradcam", device="cpu", threads=None, labels=None, eigen_smooth=false, aug_smooth=false, method_batch=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &str,
        weights: Option<PathBuf>,
        layer: Option<String>,
        method: &str,
        device: &str,
        threads: Option<usize>,
        labels: Option<PathBuf>,
        eigen_smooth: bool,
        aug_smooth: bool,
        method_batch: Option<usize>,
    ) -> PyResult<Self> {
        if let Some(n) = threads {
            // Read when the thread pools start: the first network run in the process.
            std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
            std::env::set_var("CANDLE_NUM_THREADS", n.max(1).to_string());
        }
        let model = model.to_string();
        let device = device.to_string();
        let method = method.to_string();
        let inner = detached(py, move || {
            let choice = camstream_core::device::DeviceChoice::parse(&device).ok_or_else(|| {
                format!("`device` must be cpu, cuda, cuda:N or auto, got `{device}`")
            })?;
            let (dev, _) = camstream_core::device::select(choice).map_err(|e| e.to_string())?;
            let request = ModelRequest {
                source: ModelSource::parse(&model).map_err(|e| e.to_string())?,
                weights,
                target: layer.clone(),
                labels,
            };
            let net = Network::load(&request, &dev).map_err(|e| e.to_string())?;
            let config = CamConfig {
                method: Method::from_name(&method).map_err(|e| e.to_string())?,
                eigen_smooth,
                aug_smooth,
                method_batch,
            };
            Ok(
                camstream_core::Explainer::from_network(net, layer.as_deref())
                    .map_err(|e| e.to_string())?
                    .with_config(config),
            )
        })?;
        Ok(Self { inner })
    }

    /// Every target layer with its per-sample output shape: [(name, shape)].
    fn layers(&self, py: Python<'_>) -> PyResult<Vec<(String, Vec<usize>)>> {
        let net = self.inner.network().clone();
        detached(py, move || net.layer_shapes().map_err(|e| e.to_string()))
    }

    /// The target layer(s), comma-separated.
    #[getter]
    fn layer(&self) -> String {
        self.inner.layer().to_string()
    }

    #[getter]
    fn method(&self) -> &'static str {
        self.inner.method().name()
    }

    #[getter]
    fn labels(&self) -> Vec<String> {
        let net = self.inner.network();
        (0..net.num_classes).map(|c| net.label(c)).collect()
    }

    /// `image`, `signal`, `audio` or `clip`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.network().input.kind.name()
    }

    /// (C, H, W) or (C, L) of one model input.
    #[getter]
    fn input_shape(&self) -> Vec<usize> {
        let spec = &self.inner.network().input;
        let mut s = vec![spec.channels];
        s.extend(&spec.size);
        s
    }

    /// Explains a batch: `x` float32 (N,C,H,W) or (N,C,L), model-ready; `target` None
    /// (each sample's top-1), a class index or label, or one per sample.
    #[pyo3(signature = (x, target=None, batch=8))]
    fn explain(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        target: Option<&Bound<'_, PyAny>>,
        batch: usize,
    ) -> PyResult<Explained> {
        let (data, shape) = f32_array(x, "x")?;
        let net = self.inner.network();
        let rank = net.input.kind.rank();
        if shape.len() != rank + 2 || shape[0] == 0 {
            let want = ["(N,C,L)", "(N,C,H,W)", "(N,C,T,H,W)"][rank - 1];
            return Err(error(format!(
                "`x` must be {want} for this {} model, got shape {shape:?}",
                self.kind()
            )));
        }
        let targets = targets(net, target)?;
        let explainer = &self.inner;
        let (maps, raws, spatial, explained) = detached(py, move || {
            let per: usize = shape[1..].iter().product();
            let inputs: Vec<Input> = data
                .chunks(per)
                .map(|d| Input::new(d, &shape[1..]))
                .collect();
            let options = ExplainOptions {
                batch: batch.max(1),
                top_k: 1,
                final_map: true,
            };
            let out = explainer
                .explain(&inputs, &targets, &options)
                .map_err(|e| e.to_string())?;
            let maps: Vec<f32> = out.iter().flat_map(|e| e.map.iter().copied()).collect();
            let raws: Vec<f32> = out.iter().flat_map(|e| e.raw.iter().copied()).collect();
            let spatial = out[0].spatial.clone();
            Ok((maps, raws, spatial, out))
        })?;
        let n = explained.len();
        let mut raw_shape = vec![n];
        raw_shape.extend(&spatial);
        let mut map_shape = vec![n];
        map_shape.extend(&x.getattr("shape")?.extract::<Vec<usize>>()?[2..]);
        Ok(Explained {
            raw: py_array(py, raws, &raw_shape).unbind(),
            heatmap: py_array(py, maps, &map_shape).unbind(),
            classes: explained.iter().map(|e| e.class).collect(),
            labels: explained.iter().map(|e| e.label.clone()).collect(),
            logits: py_array(py, explained.iter().map(|e| e.logit).collect(), &[n]).unbind(),
            probabilities: py_array(py, explained.iter().map(|e| e.probability).collect(), &[n])
                .unbind(),
            layer: explainer.layer().to_string(),
            method: explainer.method().name().to_string(),
        })
    }

    /// Faithfulness of each sample's final map (`heatmap` (N, spatial...), e.g. a
    /// Result's) for its class: pytorch-grad-cam's confidence change and ROAD, torchcam's
    /// average drop/increase, RISE deletion/insertion. One JSON object per sample.
    #[pyo3(signature = (x, heatmap, classes, baseline="zero", steps=20, seed=0))]
    #[allow(clippy::too_many_arguments)]
    fn metrics_json(
        &self,
        py: Python<'_>,
        x: &Bound<'_, PyAny>,
        heatmap: &Bound<'_, PyAny>,
        classes: Vec<usize>,
        baseline: &str,
        steps: usize,
        seed: u64,
    ) -> PyResult<Vec<String>> {
        let (data, shape) = f32_array(x, "x")?;
        let (maps, mshape) = f32_array(heatmap, "heatmap")?;
        if shape.len() < 3
            || mshape.first() != shape.first()
            || mshape[1..] != shape[2..]
            || classes.len() != shape[0]
        {
            return Err(error(format!(
                "`x` {shape:?}, `heatmap` {mshape:?} and {} classes do not match: heatmap must be (N, spatial...) of x (N, C, spatial...), one class per sample",
                classes.len()
            )));
        }
        let config = MetricsConfig {
            steps: steps.max(1),
            baseline: baseline
                .parse()
                .map_err(|e| error(format!("`baseline`: {e}")))?,
            seed,
            ..Default::default()
        };
        let net = self.inner.network();
        detached(py, move || {
            let per: usize = shape[1..].iter().product();
            let p: usize = shape[2..].iter().product();
            let mut out = Vec::with_capacity(classes.len());
            for (i, &class) in classes.iter().enumerate() {
                let sample = Measured {
                    input: &data[i * per..(i + 1) * per],
                    shape: &shape[1..],
                    map: &maps[i * p..(i + 1) * p],
                    class,
                };
                let f = measure(net, sample, &config).map_err(|e| e.to_string())?;
                out.push(camstream_core::record::to_line(&f));
            }
            Ok(out)
        })
    }

    /// A recording (a file camstream reads, or a float32 array (L,) or (C,L) with `rate`)
    /// explained window by window: (JSON lines of the windows, relevance per input sample,
    /// notes).
    #[pyo3(signature = (source, rate=None, hop=None, target=None, batch=8))]
    fn explain_signal_json(
        &self,
        py: Python<'_>,
        source: &Bound<'_, PyAny>,
        rate: Option<f64>,
        hop: Option<f64>,
        target: Option<&Bound<'_, PyAny>>,
        batch: usize,
    ) -> PyResult<SignalOut> {
        let net = self.inner.network();
        if net.input.kind == InputKind::Image {
            return Err(error(
                "this model takes pictures; explain_signal needs a signal or audio model",
            ));
        }
        let class = match targets(net, target)? {
            Targets::TopOne => None,
            Targets::All(c) => Some(c),
            _ => {
                return Err(error(
                    "`target` of a recording is one class for every window",
                ))
            }
        };
        let dir = tempfile::tempdir().map_err(error)?;
        let path = if let Ok(p) = source.extract::<PathBuf>() {
            p
        } else {
            let (data, shape) = f32_array(source, "source")?;
            if rate.is_none() {
                return Err(error("an array has no sample rate: give `rate`"));
            }
            let p = dir.path().join("signal.npy");
            camstream_media::npy::write_npy(&p, &data, &shape).map_err(error)?;
            p
        };
        let model_rate = net.input.sample_rate.map(f64::from);
        let hop = match (hop, model_rate) {
            (Some(h), Some(r)) => Some((h * r).round().max(1.0) as usize),
            (Some(_), None) => {
                return Err(error(
                    "`hop` is in seconds, but this model has no sample rate",
                ))
            }
            _ => None,
        };
        let explainer = &self.inner;
        let out_dir = dir.path().to_path_buf();
        let (lines, relevance, notes) = detached(py, move || {
            let reader = signal::open(
                &path,
                &OpenOptions {
                    rate,
                    ..OpenOptions::default()
                },
            )
            .map_err(|e| e.to_string())?;
            let job = SignalJob {
                explainer,
                model: WindowModel {
                    class,
                    batch: batch.max(1),
                    metrics: None,
                },
                hop,
                channels: if explainer.network().input.channels == 1 {
                    ChannelChoice::Mix
                } else {
                    ChannelChoice::Auto
                },
                output: SignalOutput {
                    out_dir: out_dir.clone(),
                    stem: "out".into(),
                    cam_npy: false,
                    plot: false,
                    from_s: None,
                    to_s: None,
                    colormap: &camstream_media::render::JET,
                },
                progress: None,
                cancel: None,
            };
            let report = run_signal(&job, reader).map_err(|e| e.to_string())?;
            let text = std::fs::read_to_string(out_dir.join("out.windows.jsonl"))
                .map_err(|e| e.to_string())?;
            let (rel, _) = camstream_media::npy::read_npy(&out_dir.join("out.relevance.npy"))
                .map_err(|e| e.to_string())?;
            Ok((
                text.lines().map(str::to_string).collect::<Vec<_>>(),
                rel,
                report.notes,
            ))
        })?;
        let n = relevance.len();
        Ok((lines, py_array(py, relevance, &[n]).unbind(), notes))
    }

    /// A video annotated into `output` (H.264), streamed in constant memory; returns the
    /// per-frame records as JSON lines. Needs the `video` build.
    #[pyo3(signature = (input, output, batch=8, every=1, target=None, alpha=0.5, progress=false))]
    #[allow(clippy::too_many_arguments)]
    fn explain_video_json(
        &self,
        py: Python<'_>,
        input: PathBuf,
        output: PathBuf,
        batch: usize,
        every: usize,
        target: Option<&Bound<'_, PyAny>>,
        alpha: f32,
        progress: bool,
    ) -> PyResult<Vec<String>> {
        let class = match targets(self.inner.network(), target)? {
            Targets::TopOne => None,
            Targets::All(c) => Some(c),
            _ => return Err(error("`target` of a video is one class for every frame")),
        };
        video::run(
            py,
            &self.inner,
            &input,
            &output,
            batch,
            every,
            class,
            alpha,
            progress,
        )
    }

    /// For the overhead benchmark (bench/overhead.py): `iters` timed calls of the Rust
    /// explain API on `x` inside this process, seconds each, with no conversion to Python.
    #[pyo3(signature = (x, iters=10))]
    fn _time_rust(&self, py: Python<'_>, x: &Bound<'_, PyAny>, iters: usize) -> PyResult<Vec<f64>> {
        let (data, shape) = f32_array(x, "x")?;
        let explainer = &self.inner;
        detached(py, move || {
            let per: usize = shape[1..].iter().product();
            let inputs: Vec<Input> = data
                .chunks(per)
                .map(|d| Input::new(d, &shape[1..]))
                .collect();
            let options = ExplainOptions {
                batch: inputs.len(),
                top_k: 1,
                final_map: true,
            };
            (0..iters)
                .map(|_| {
                    let t = std::time::Instant::now();
                    explainer
                        .explain(&inputs, &Targets::TopOne, &options)
                        .map_err(|e| e.to_string())?;
                    Ok(t.elapsed().as_secs_f64())
                })
                .collect()
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "camstream.Explainer({}, layer={}, method={})",
            self.inner.network().name,
            self.inner.layer(),
            self.inner.method().name()
        )
    }
}

#[cfg(feature = "video")]
mod video {
    use std::path::Path;
    use std::sync::atomic::AtomicBool;

    use camstream_media::decode::Section;
    use camstream_media::encode::EncodeOptions;
    use camstream_pipeline::{run_video, FrameJob, ModelConfig, Norm, OverlayConfig, VideoJob};
    use pyo3::prelude::*;

    use super::{detached, error};

    #[allow(clippy::too_many_arguments)]
    pub fn run(
        py: Python<'_>,
        explainer: &camstream_core::Explainer,
        input: &Path,
        output: &Path,
        batch: usize,
        every: usize,
        class: Option<usize>,
        alpha: f32,
        progress: bool,
    ) -> PyResult<Vec<String>> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(error("`alpha` must be within 0..1"));
        }
        let dir = tempfile::tempdir().map_err(error)?;
        let records = dir.path().join("frames.jsonl");
        detached(py, move || {
            let show = |done: u64, total: Option<u64>| {
                if progress {
                    eprint!(
                        "\rcamstream: {done}/{} frames",
                        total.map_or("?".into(), |t| t.to_string())
                    );
                }
            };
            let job = VideoJob {
                input: input.to_path_buf(),
                output: output.to_path_buf(),
                section: Section::default(),
                encode: EncodeOptions::default(),
                frames_json: Some(records.clone()),
                clips_json: None,
                report: None,
                frames: FrameJob {
                    explainer,
                    model: ModelConfig {
                        class,
                        batch: batch.max(1),
                        every: every.max(1),
                        norm: Norm::Frame,
                        metrics: None,
                        metrics_every: 1,
                        clips: Default::default(),
                    },
                    overlay: OverlayConfig {
                        colormap: &camstream_media::render::JET,
                        alpha,
                        label: true,
                        renormalise: true,
                    },
                    overlay_workers: 2,
                },
                progress: Some(&show),
                observe: None,
            };
            run_video(&job, &AtomicBool::new(false)).map_err(|e| e.to_string())?;
            if progress {
                eprintln!();
            }
            let text = std::fs::read_to_string(&records).map_err(|e| e.to_string())?;
            Ok(text.lines().map(str::to_string).collect())
        })
    }
}

#[cfg(not(feature = "video"))]
mod video {
    use std::path::Path;

    use pyo3::prelude::*;

    #[allow(clippy::too_many_arguments)]
    pub fn run(
        _: Python<'_>,
        _: &camstream_core::Explainer,
        _: &Path,
        _: &Path,
        _: usize,
        _: usize,
        _: Option<usize>,
        _: f32,
        _: bool,
    ) -> PyResult<Vec<String>> {
        Err(super::error(
            "this camstream was built without video support (FFmpeg): rebuild with the `video` feature",
        ))
    }
}

/// pytorch-grad-cam's `show_cam_on_image`, byte for byte: `rgb` uint8 (H,W,3), `mask`
/// float32 (H,W) in [0, 1].
#[pyfunction]
#[pyo3(signature = (rgb, mask, colormap="jet", alpha=0.5))]
fn overlay<'py>(
    py: Python<'py>,
    rgb: PyReadonlyArray3<'py, u8>,
    mask: &Bound<'py, PyAny>,
    colormap: &str,
    alpha: f32,
) -> PyResult<Bound<'py, PyArrayDyn<u8>>> {
    let cmap = colormap_by_name(colormap).ok_or_else(|| {
        error(format!(
            "unknown colormap `{colormap}`; colormaps: {}",
            COLORMAPS.join(", ")
        ))
    })?;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(error(format!("`alpha` must be within 0..1, got {alpha}")));
    }
    let mask: PyReadonlyArray2<'py, f32> = mask
        .extract()
        .map_err(|_| error("`mask` must be a float32 (H,W) numpy array"))?;
    let (h, w) = (rgb.shape()[0], rgb.shape()[1]);
    if rgb.shape()[2] != 3 || mask.shape() != [h, w] {
        return Err(error(format!(
            "`rgb` must be (H,W,3) uint8 and `mask` (H,W): got {:?} and {:?}",
            rgb.shape(),
            mask.shape()
        )));
    }
    let px: Vec<u8> = rgb.as_array().iter().copied().collect();
    let m: Vec<f32> = mask.as_array().iter().copied().collect();
    let out = overlay_like_show_cam_on_image(&px, &m, cmap, alpha);
    Ok(ArrayD::from_shape_vec(IxDyn(&[h, w, 3]), out)
        .expect("same size")
        .into_pyarray(py))
}

/// The CAM methods, by the names `method=` takes.
#[pyfunction]
fn methods() -> Vec<&'static str> {
    Method::ALL.iter().map(|m| m.name()).collect()
}

/// Whether this build can annotate videos (FFmpeg linked).
#[pyfunction]
fn has_video() -> bool {
    cfg!(feature = "video")
}

#[pymodule]
fn _camstream(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // candle's element-wise pool spins before parking; on a shared machine the spinning
    // steals cores (the CLI sets the same).
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "1");
    }
    // The maths pool's threads flush subnormals (4x on some trained networks); Python's
    // own thread is left as it is, for numpy's sake.
    camstream_core::device::init_cpu_pool();
    m.add("Error", m.py().get_type::<Error>())?;
    m.add_class::<Explainer>()?;
    m.add_class::<Explained>()?;
    m.add_function(wrap_pyfunction!(overlay, m)?)?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(has_video, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

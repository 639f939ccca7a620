//! Plots of whole recordings of any length: the stream is binned into a bounded number
//! of pixel columns as it goes (bins double when there are too many), so a 24-hour
//! recording plots in the same memory as a minute. The plot shows the trace coloured by
//! relevance, the window classes as bands, the relevance curve, and for audio models the
//! log-mel spectrogram with the time×frequency heatmap over it.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::colormap::Colormap;
use super::plot::register_font;
use crate::error::{Error, Result};

/// Columns the plot is drawn with (the envelope keeps between this and twice as many).
const COLUMNS: usize = 1200;

#[derive(Clone, Debug)]
struct Col {
    min: f32,
    max: f32,
    first: f32,
    last: f32,
    rel_sum: f32,
    rel_max: f32,
    n: u32,
    /// Per-dimension sums (spectrogram frames: log-mel and relevance, `dim` each).
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Col {
    fn new(dim: usize) -> Self {
        Self {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            first: 0.0,
            last: 0.0,
            rel_sum: 0.0,
            rel_max: 0.0,
            n: 0,
            a: vec![0.0; dim],
            b: vec![0.0; dim],
        }
    }
    fn merge(mut self, o: Col) -> Col {
        if o.n == 0 {
            return self;
        }
        if self.n == 0 {
            return o;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.last = o.last;
        self.rel_sum += o.rel_sum;
        self.rel_max = self.rel_max.max(o.rel_max);
        self.n += o.n;
        for (x, y) in self.a.iter_mut().zip(&o.a) {
            *x += y;
        }
        for (x, y) in self.b.iter_mut().zip(&o.b) {
            *x += y;
        }
        self
    }
}

/// A stream of positions (samples or frames) from `from` to `to` binned into columns.
pub struct Envelope {
    from: u64,
    to: Option<u64>,
    bin: u64,
    dim: usize,
    cols: Vec<Col>,
    /// Positions per second.
    pub rate: f64,
}

impl Envelope {
    pub fn new(rate: f64, from: u64, to: Option<u64>, dim: usize) -> Self {
        // A known span gets its bin size at once; an open one starts at one position.
        let bin = to.map_or(1, |t| {
            (t.saturating_sub(from)).div_ceil(COLUMNS as u64).max(1)
        });
        Self {
            from,
            to,
            bin,
            dim,
            cols: Vec::new(),
            rate,
        }
    }

    fn col(&mut self, pos: u64) -> Option<&mut Col> {
        if pos < self.from || self.to.is_some_and(|t| pos >= t) {
            return None;
        }
        let mut c = ((pos - self.from) / self.bin) as usize;
        while c >= 2 * COLUMNS {
            let old = std::mem::take(&mut self.cols);
            let mut it = old.into_iter();
            while let Some(x) = it.next() {
                let y = it.next().unwrap_or_else(|| Col::new(self.dim));
                self.cols.push(x.merge(y));
            }
            self.bin *= 2;
            c = ((pos - self.from) / self.bin) as usize;
        }
        while self.cols.len() <= c {
            self.cols.push(Col::new(self.dim));
        }
        Some(&mut self.cols[c])
    }

    /// A sample of the trace and its relevance.
    pub fn push(&mut self, pos: u64, value: f32, relevance: f32) {
        if let Some(c) = self.col(pos) {
            if c.n == 0 {
                c.first = value;
            }
            c.min = c.min.min(value);
            c.max = c.max.max(value);
            c.last = value;
            c.rel_sum += relevance;
            c.rel_max = c.rel_max.max(relevance);
            c.n += 1;
        }
    }

    /// A spectrogram frame and its relevance per band.
    pub fn push_frame(&mut self, pos: u64, spec: &[f32], relevance: &[f32]) {
        if let Some(c) = self.col(pos) {
            for (x, y) in c.a.iter_mut().zip(spec) {
                *x += y;
            }
            for (x, y) in c.b.iter_mut().zip(relevance) {
                *x += y;
            }
            let m = relevance.iter().copied().fold(0.0, f32::max);
            c.rel_max = c.rel_max.max(m);
            c.n += 1;
        }
    }

    fn span_s(&self) -> (f64, f64) {
        let t0 = self.from as f64 / self.rate;
        let t1 = (self.from + self.bin * self.cols.len() as u64) as f64 / self.rate;
        (t0, t1.max(t0 + 1.0 / self.rate))
    }

    fn col_time(&self, i: usize) -> (f64, f64) {
        let a = (self.from + self.bin * i as u64) as f64 / self.rate;
        (a, a + self.bin as f64 / self.rate)
    }

    pub fn is_empty(&self) -> bool {
        self.cols.iter().all(|c| c.n == 0)
    }
}

/// One window's class, as a band on the time axis.
#[derive(Clone, Debug)]
pub struct Band {
    pub start_s: f64,
    pub end_s: f64,
    pub class: usize,
}

pub struct RecordingPlot<'a> {
    pub title: &'a str,
    pub samples: &'a Envelope,
    /// Spectrogram frames (audio models).
    pub frames: Option<&'a Envelope>,
    pub bands: &'a [Band],
    pub labels: &'a [String],
    pub cmap: &'a Colormap,
    pub y_desc: &'a str,
}

fn class_colour(c: usize) -> RGBColor {
    let col = colorous::TABLEAU10[c % 10];
    RGBColor(col.r, col.g, col.b)
}

fn draw_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |e| Error::file(path, format!("cannot draw plot: {e}"))
}

/// Draws the recording plot, complete under its temporary name (renamed with the run's
/// other outputs).
pub fn plot_recording(path: &Path, p: &RecordingPlot) -> Result<crate::io::TempPath> {
    register_font();
    if p.samples.is_empty() {
        return Err(Error::file(
            path,
            "nothing to plot in the chosen time range",
        ));
    }
    let err = draw_err(path);
    let (t0, t1) = p.samples.span_s();
    let rel_max = p
        .samples
        .cols
        .iter()
        .map(|c| c.rel_max)
        .fold(0.0f32, f32::max)
        .max(1e-12);
    let height = if p.frames.is_some() { 980 } else { 720 };
    crate::io::stage(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1600, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let root = root
            .titled(p.title, ("sans-serif", 24))
            .map_err(|e| err(e.to_string()))?;
        let (top, rest) = root.split_vertically(if p.frames.is_some() { 300 } else { 400 });
        trace_panel(&top, p, t0, t1, rel_max).map_err(|e| err(e.to_string()))?;
        let rest = if let Some(f) = p.frames {
            let (spec, rest) = rest.split_vertically(340);
            spectrogram_panel(&spec, f, t0, t1, p.cmap).map_err(|e| err(e.to_string()))?;
            rest
        } else {
            rest
        };
        let (bands, rel) = rest.split_vertically(110);
        bands_panel(&bands, p, t0, t1).map_err(|e| err(e.to_string()))?;
        relevance_panel(&rel, p, t0, t1, rel_max).map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn trace_panel(area: &Area, p: &RecordingPlot, t0: f64, t1: f64, rel_max: f32) -> DrawResult {
    let env = p.samples;
    let (lo, hi) = env
        .cols
        .iter()
        .filter(|c| c.n > 0)
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), c| {
            (a.min(c.min), b.max(c.max))
        });
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let (lo, hi) = ((lo - pad) as f64, (hi + pad) as f64);
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(t0..t1, lo..hi)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(p.y_desc)
        .light_line_style(WHITE)
        .draw()?;
    let mut prev: Option<(f64, f32)> = None;
    for (i, c) in env.cols.iter().enumerate() {
        if c.n == 0 {
            prev = None;
            continue;
        }
        let (a, b) = env.col_time(i);
        let x = (a + b) / 2.0;
        let r = c.rel_max / rel_max;
        let col = p.cmap.rgb_f(r);
        let style = RGBColor(col[0], col[1], col[2]).stroke_width(2);
        // Relevance also tints the background, so short bursts stand out.
        if r > 0.05 {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(a, lo), (b, hi)],
                RGBColor(col[0], col[1], col[2])
                    .mix(0.18 * r as f64)
                    .filled(),
            )))?;
        }
        if let Some((px, pv)) = prev {
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(px, pv as f64), (x, c.first as f64)],
                style,
            )))?;
        }
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(x, c.min as f64), (x, c.max as f64)],
            style,
        )))?;
        prev = Some((x, c.last));
    }
    Ok(())
}

fn spectrogram_panel(area: &Area, f: &Envelope, t0: f64, t1: f64, cmap: &Colormap) -> DrawResult {
    let dim = f.dim;
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(t0..t1, 0f64..dim as f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc("time (s)")
        .y_desc("mel band")
        .draw()?;
    let cells: Vec<(usize, Vec<f32>, Vec<f32>)> = f
        .cols
        .iter()
        .enumerate()
        .filter(|(_, c)| c.n > 0)
        .map(|(i, c)| {
            let n = c.n as f32;
            (
                i,
                c.a.iter().map(|v| v / n).collect(),
                c.b.iter().map(|v| v / n).collect(),
            )
        })
        .collect();
    let (slo, shi) = cells
        .iter()
        .flat_map(|c| c.1.iter())
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let rmax = cells
        .iter()
        .flat_map(|c| c.2.iter())
        .copied()
        .fold(0.0f32, f32::max)
        .max(1e-12);
    let span = (shi - slo).max(1e-6);
    for (i, spec, rel) in &cells {
        let (a, b) = f.col_time(*i);
        for m in 0..dim {
            // Grey log-mel, the heatmap blended over it where relevance is high.
            let g = ((spec[m] - slo) / span).clamp(0.0, 1.0);
            let r = (rel[m] / rmax).clamp(0.0, 1.0);
            let hc = cmap.rgb_f(r);
            let w = 0.65 * r;
            let mix = |h: u8| ((1.0 - w) * g * 255.0 + w * h as f32).round() as u8;
            chart.draw_series(std::iter::once(Rectangle::new(
                [(a, m as f64), (b, (m + 1) as f64)],
                RGBColor(mix(hc[0]), mix(hc[1]), mix(hc[2])).filled(),
            )))?;
        }
    }
    Ok(())
}

fn bands_panel(area: &Area, p: &RecordingPlot, t0: f64, t1: f64) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .margin_top(4)
        .x_label_area_size(0)
        .y_label_area_size(70)
        .build_cartesian_2d(t0..t1, 0f64..1f64)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(0)
        .y_desc("class")
        .draw()?;
    let px_per_s = 1400.0 / (t1 - t0).max(1e-9);
    for b in p.bands {
        if b.end_s <= t0 || b.start_s >= t1 {
            continue;
        }
        let (a, e) = (b.start_s.max(t0), b.end_s.min(t1));
        // A pixel's gap keeps neighbouring windows of one class apart.
        let e = (e - 1.0 / px_per_s).max(a);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(a, 0.35), (e, 0.95)],
            class_colour(b.class).mix(0.75).filled(),
        )))?;
        let label = p.labels.get(b.class).map_or("?", String::as_str);
        if (e - a) * px_per_s > 9.0 * label.len() as f64 {
            chart.draw_series(std::iter::once(Text::new(
                label.to_string(),
                (a + 2.0 / px_per_s, 0.85),
                ("sans-serif", 15).into_font().color(&WHITE),
            )))?;
        }
    }
    // Legend: every class that appears.
    let mut seen: Vec<usize> = p.bands.iter().map(|b| b.class).collect();
    seen.sort_unstable();
    seen.dedup();
    for (k, c) in seen.iter().enumerate() {
        let x = t0 + (t1 - t0) * (0.01 + 0.14 * k as f64);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x, 0.04), (x + (t1 - t0) * 0.012, 0.26)],
            class_colour(*c).filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            p.labels.get(*c).cloned().unwrap_or_else(|| c.to_string()),
            (x + (t1 - t0) * 0.016, 0.27),
            ("sans-serif", 15).into_font(),
        )))?;
    }
    Ok(())
}

fn relevance_panel(area: &Area, p: &RecordingPlot, t0: f64, t1: f64, rel_max: f32) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(t0..t1, 0f64..1.05f64)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("relevance")
        .light_line_style(WHITE)
        .draw()?;
    let env = p.samples;
    let pts: Vec<(f64, f64)> = env
        .cols
        .iter()
        .enumerate()
        .filter(|(_, c)| c.n > 0)
        .map(|(i, c)| {
            let (a, b) = env.col_time(i);
            ((a + b) / 2.0, (c.rel_max / rel_max) as f64)
        })
        .collect();
    chart.draw_series(
        AreaSeries::new(pts, 0.0, RGBColor(220, 60, 40).mix(0.35))
            .border_style(RGBColor(200, 40, 30)),
    )?;
    Ok(())
}

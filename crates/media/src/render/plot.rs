//! Signal plots: the trace coloured by relevance, seconds on the x axis, with the
//! class and score in the title (plotters, text by ab_glyph with the embedded font).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use super::colormap::Colormap;
use crate::error::{Error, Result};

static FONT: Once = Once::new();

pub(crate) fn register_font() {
    FONT.call_once(|| {
        // A failure only loses the text, never the plot.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Writes a PNG of `signal` (sampled at `rate` Hz, or per sample when unknown) coloured
/// by `relevance` in [0, 1], complete under its temporary name (the caller renames it
/// with the run's other outputs).
pub fn plot_signal(
    path: &Path,
    signal: &[f32],
    relevance: &[f32],
    rate: Option<f32>,
    title: &str,
    cmap: &Colormap,
) -> Result<crate::io::TempPath> {
    let (rate, x_desc) = match rate {
        Some(r) if r > 0.0 => (r, "time (s)"),
        _ => (1.0, "sample"),
    };
    register_font();
    if signal.is_empty() || signal.len() != relevance.len() {
        return Err(Error::file(path, "signal and relevance lengths differ"));
    }
    let err = |e: String| Error::file(path, format!("cannot draw plot: {e}"));
    let (lo, hi) = signal
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let dur = signal.len() as f32 / rate;
    crate::io::stage(path, |tmp| {
        let root = BitMapBackend::new(tmp, (1400, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f32..dur, (lo - pad)..(hi + pad))
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("amplitude")
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| err(e.to_string()))?;
        // Relevance as a tinted band behind the trace, then the trace in its colour.
        let area = chart.plotting_area();
        for (i, r) in relevance.iter().enumerate() {
            if *r < 0.05 {
                continue;
            }
            let c = cmap.rgb_f(*r);
            let t0 = i as f32 / rate;
            let t1 = (i + 1) as f32 / rate;
            area.draw(&Rectangle::new(
                [(t0, lo - pad), (t1, hi + pad)],
                RGBColor(c[0], c[1], c[2]).mix(0.25 * *r as f64).filled(),
            ))
            .map_err(|e| err(e.to_string()))?;
        }
        for i in 1..signal.len() {
            let c = cmap.rgb_f(relevance[i]);
            let seg = [
                ((i - 1) as f32 / rate, signal[i - 1]),
                (i as f32 / rate, signal[i]),
            ];
            area.draw(&PathElement::new(
                seg,
                RGBColor(c[0], c[1], c[2]).stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))
    })
}

//! The JSON records camstream writes, one line per explained item. Their schema is
//! documented here once; keys are written in alphabetical order, and 32-bit scores as
//! the 64-bit numbers they widen to (`0.9746862649917603`), as they always were.
//!
//! | record | written by | keys |
//! |---|---|---|
//! | [`SampleRecord`] | `image`, `signal` on `.npy` tensors (`--json`, stdout) | class, index, input, label, layer, logit, method, metrics (with `--metrics`), probability, rank (with top-k) |
//! | [`FrameRecord`] | `video --frames-json` | class, explained, index, label, logit, method, metrics (with `--metrics`, measured frames), peak_x, peak_y, probability, pts, seconds |
//! | [`WindowRecord`] | `signal` (`<stem>.windows.jsonl`) | class, end_s, label, logit, method, metrics (with `--metrics`), padded, probability, start_s, window |
//!
//! `metrics` is a [`Faithfulness`] object.

use serde::Serialize;

use crate::explain::Explanation;
use crate::metrics::Faithfulness;

/// One explained sample of a picture or tensor file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SampleRecord {
    pub class: usize,
    /// The sample's index within its file.
    pub index: usize,
    /// The input file.
    pub input: String,
    pub label: String,
    pub layer: String,
    #[serde(serialize_with = "widened")]
    pub logit: f32,
    /// The CAM method's name (`Method::name`).
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Faithfulness>,
    #[serde(serialize_with = "widened")]
    pub probability: f32,
    /// 1-based rank of `class` among the sample's logits, with top-k only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
}

impl SampleRecord {
    pub fn new(
        e: &Explanation,
        method: &str,
        input: String,
        index: usize,
        rank: Option<usize>,
    ) -> Self {
        Self {
            class: e.class,
            index,
            input,
            label: e.label.clone(),
            layer: e.layer.to_string(),
            logit: e.logit,
            method: method.to_string(),
            metrics: None,
            probability: e.probability,
            rank,
        }
    }
}

/// One frame of an annotated video.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameRecord {
    pub class: usize,
    /// Video models: the clip (0, 1, ...) whose class and map the frame shows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip: Option<u64>,
    /// False for frames that reuse an earlier frame's map (`every` > 1).
    pub explained: bool,
    pub index: u64,
    pub label: String,
    #[serde(serialize_with = "widened")]
    pub logit: f32,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Faithfulness>,
    /// The heatmap's peak, in source pixels.
    pub peak_x: usize,
    pub peak_y: usize,
    #[serde(serialize_with = "widened")]
    pub probability: f32,
    /// Presentation time in the stream's time base, and in seconds.
    pub pts: i64,
    pub seconds: f64,
}

/// One clip of a video explained by a video model (3D CNN).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClipRecord {
    pub class: usize,
    pub clip: u64,
    /// Seconds of the clip's last sample.
    pub end_s: f64,
    /// Frame indices of its first and last samples.
    pub first_frame: u64,
    pub label: String,
    pub last_frame: u64,
    #[serde(serialize_with = "widened")]
    pub logit: f32,
    pub method: String,
    #[serde(serialize_with = "widened")]
    pub probability: f32,
    /// Samples past the video's end repeat its last one.
    pub padded: bool,
    pub start_s: f64,
}

/// One window of a recorded signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowRecord {
    pub class: usize,
    pub end_s: f64,
    pub label: String,
    #[serde(serialize_with = "widened")]
    pub logit: f32,
    pub method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Faithfulness>,
    /// The window runs past the recording's end and was padded with zeros.
    pub padded: bool,
    #[serde(serialize_with = "widened")]
    pub probability: f32,
    pub start_s: f64,
    pub window: u64,
}

/// An f32 written as the f64 it widens to, so records keep the digits they always had.
fn widened<S: serde::Serializer>(v: &f32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(f64::from(*v))
}

/// A record as one JSON line (no newline).
pub fn to_line<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("records hold only numbers, strings and booleans")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_the_json_the_tool_always_wrote() {
        let w = WindowRecord {
            class: 0,
            end_s: 8.0,
            label: "normal".into(),
            logit: 1.969_151_6,
            method: "gradcam".into(),
            metrics: None,
            padded: false,
            probability: 0.974_686_26,
            start_s: 0.0,
            window: 0,
        };
        // The line serde_json::json! wrote before these records existed (ecg_60s demo),
        // with the method since there are several.
        assert_eq!(
            to_line(&w),
            r#"{"class":0,"end_s":8.0,"label":"normal","logit":1.9691516160964966,"method":"gradcam","padded":false,"probability":0.9746862649917603,"start_s":0.0,"window":0}"#
        );
        let s = SampleRecord {
            class: 1,
            index: 0,
            input: "a.png".into(),
            label: "square".into(),
            layer: "features.6".into(),
            logit: 9.103_574,
            method: "gradcam".into(),
            metrics: None,
            probability: 0.999_987_5,
            rank: None,
        };
        let line = to_line(&s);
        assert!(!line.contains("rank"), "{line}");
        assert!(line.starts_with(r#"{"class":1,"index":0,"input":"a.png","label":"square","layer":"features.6","logit":9.1035737991333,"#), "{line}");
    }
}

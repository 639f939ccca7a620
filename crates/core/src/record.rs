//! The JSON records camstream writes, one line per explained item. Their schema is
//! documented here once; keys are written in alphabetical order.
//!
//! | record | written by | keys |
//! |---|---|---|
//! | [`SampleRecord`] | `image`, `signal` on `.npy` tensors (`--json`, stdout) | class, index, input, label, layer, logit, probability, rank (with top-k) |
//! | [`FrameRecord`] | `video --frames-json` | class, explained, index, label, logit, peak_x, peak_y, probability, pts, seconds |
//! | [`WindowRecord`] | `signal` (`<stem>.windows.jsonl`) | class, end_s, label, logit, padded, probability, start_s, window |

use serde::Serialize;

use crate::explain::Explanation;

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
    pub logit: f32,
    pub probability: f32,
    /// 1-based rank of `class` among the sample's logits, with top-k only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rank: Option<usize>,
}

impl SampleRecord {
    pub fn new(e: &Explanation, input: String, index: usize, rank: Option<usize>) -> Self {
        Self {
            class: e.class,
            index,
            input,
            label: e.label.clone(),
            layer: e.layer.to_string(),
            logit: e.logit,
            probability: e.probability,
            rank,
        }
    }
}

/// One frame of an annotated video.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FrameRecord {
    pub class: usize,
    /// False for frames that reuse an earlier frame's map (`every` > 1).
    pub explained: bool,
    pub index: u64,
    pub label: String,
    pub logit: f32,
    /// The heatmap's peak, in source pixels.
    pub peak_x: usize,
    pub peak_y: usize,
    pub probability: f32,
    /// Presentation time in the stream's time base, and in seconds.
    pub pts: i64,
    pub seconds: f64,
}

/// One window of a recorded signal.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WindowRecord {
    pub class: usize,
    pub end_s: f64,
    pub label: String,
    pub logit: f32,
    /// The window runs past the recording's end and was padded with zeros.
    pub padded: bool,
    pub probability: f32,
    pub start_s: f64,
    pub window: u64,
}

/// A record as one JSON line (no newline).
pub fn to_line<T: Serialize>(record: &T) -> String {
    serde_json::to_string(record).expect("records hold only numbers, strings and booleans")
}

//! Grad-CAM, one implementation for 1D and 2D: spatial dims are flattened, so the maths
//! never knows whether it explains a picture or a signal.

mod gradcam;
mod heatmap;
mod resize;

pub use gradcam::{CamBatch, GradCam, Targets};
pub use heatmap::{heatmap, minmax_in_place};
pub use resize::resize_linear;

//! Grad-CAM and the CAM family ([`Method`]), one implementation for 1D, 2D and 3D:
//! spatial dims are flattened, so the maths never knows whether it explains a signal, a
//! picture or a clip.

pub mod augment;
mod gradcam;
mod heatmap;
mod method;
mod perturb;
pub mod projection;
pub mod relevance;
mod resize;
mod zoom;

pub use gradcam::{argmax, probability, CamBatch, GradCam, Targets};
pub use heatmap::{
    aggregate, heatmap, heatmap_on_source, minmax_in_place, upsample_to_source, SourceMap,
};
pub use method::{CamConfig, Method, Needs};
pub use resize::{resize_final, resize_linear, resize_linear_corners};

//! Turning maps into pictures: colormaps and heatmap overlays.

mod colormap;
mod overlay;

pub use colormap::{Colormap, JET};
pub use overlay::{overlay, overlay_like_show_cam_on_image};

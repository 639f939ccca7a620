//! Turning maps into pictures: colormaps and heatmap overlays.

mod colormap;
mod overlay;
mod plot;
pub mod recording;
mod strip;
mod text;

pub use colormap::{
    by_name as colormap_by_name, Colormap, COLORMAPS, INFERNO, JET, TURBO, VIRIDIS,
};
pub use overlay::{
    overlay, overlay_like_show_cam_on_image, overlay_yuv, overlay_yuv_rows, Plane, Yuv420Planes,
};
pub use plot::plot_signal;
pub use strip::clip_strip;
pub use text::{draw_label, draw_label_yuv};

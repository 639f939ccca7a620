//! The overlay equals pytorch-grad-cam's `show_cam_on_image` output exactly:
//!
//! ```python
//! rgb = np.float32(rgb_uint8) / 255
//! overlay = show_cam_on_image(rgb, gradcam_layer4_pred_final[i], use_rgb=True)  # JET, 0.5
//! ```

mod common;

use camstream_media::render::{overlay_like_show_cam_on_image, JET};
use candle_core::Tensor;
use common::{fixtures, npy};

#[test]
fn overlay_matches_show_cam_on_image() {
    let dir = fixtures().join("overlay");
    let rgb = Tensor::read_npy(dir.join("input_rgb_uint8.npy")).unwrap();
    let want = Tensor::read_npy(dir.join("overlay_gradcam_layer4_pred.npy")).unwrap();
    let rgb: Vec<u8> = rgb.flatten_all().unwrap().to_vec1().unwrap();
    let want: Vec<u8> = want.flatten_all().unwrap().to_vec1().unwrap();
    let (mask, ms) = npy(dir.join("gradcam_layer4_pred_final.npy"));
    let (n, hw) = (ms[0], ms[1] * ms[2]);
    let mut differ = 0;
    for i in 0..n {
        let got = overlay_like_show_cam_on_image(
            &rgb[i * hw * 3..(i + 1) * hw * 3],
            &mask[i * hw..(i + 1) * hw],
            &JET,
            0.5,
        );
        let w = &want[i * hw * 3..(i + 1) * hw * 3];
        differ += got.iter().zip(w).filter(|(g, w)| g != w).count();
    }
    assert_eq!(differ, 0, "{differ} of {} values differ", rgb.len());
}

//! From decoded inputs to model tensors: resize, crop and normalise per the model's
//! `[input]`, keeping the picture the model saw (at full resolution) for the overlay.

pub mod melspec;
mod spec;
pub mod window;

use image::RgbImage;

pub use spec::{InputKind, InputSpec, Resize};

/// How the model's input relates to the source picture: `model` (x, y, w, h in model
/// pixels) shows `source` (x, y, w, h in source pixels).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub model: [u32; 4],
    pub source: [u32; 4],
}

/// One decoded picture ready for the network.
pub struct PreparedImage {
    /// (C, H, W) normalised values, as the model expects.
    pub chw: Vec<f32>,
    /// (H, W) of this input: the model's size, except with `keep_aspect`.
    pub size: [usize; 2],
    pub placement: Placement,
}

/// The longest side `keep_aspect` makes, in multiples of the short one: a 3000x16 strip
/// would otherwise become a 12000x64 input (1.5 GB of activations for one frame).
/// Beyond it the picture is squeezed along its long side.
pub const MAX_KEEP_ASPECT: f64 = 4.0;

/// (H, W) of the model input for a `w` x `h` picture.
pub fn input_size(w: u32, h: u32, spec: &InputSpec) -> [u32; 2] {
    let (th, tw) = (spec.size[0] as u32, spec.size[1] as u32);
    match spec.resize {
        Resize::KeepAspect => {
            let short = th.min(tw) as f64;
            let s = short / w.min(h) as f64;
            let cap = |v: f64| v.min(short * MAX_KEEP_ASPECT).round().max(1.0) as u32;
            [cap(h as f64 * s), cap(w as f64 * s)]
        }
        _ => [th, tw],
    }
}

/// Where a `w` x `h` picture goes in the model input.
pub fn placement(w: u32, h: u32, spec: &InputSpec) -> Placement {
    let [th, tw] = input_size(w, h, spec);
    match spec.resize {
        Resize::Stretch | Resize::KeepAspect => Placement {
            model: [0, 0, tw, th],
            source: [0, 0, w, h],
        },
        Resize::Letterbox => {
            let s = (tw as f64 / w as f64).min(th as f64 / h as f64);
            let nw = ((w as f64 * s).round() as u32).clamp(1, tw);
            let nh = ((h as f64 * s).round() as u32).clamp(1, th);
            Placement {
                model: [(tw - nw) / 2, (th - nh) / 2, nw, nh],
                source: [0, 0, w, h],
            }
        }
        Resize::ShorterSideCrop(s) => {
            // torchvision: Resize(s) then CenterCrop(th, tw), mapped back to source pixels.
            let scale = s as f64 / w.min(h) as f64;
            let cw = ((tw as f64 / scale).round() as u32).clamp(1, w);
            let ch = ((th as f64 / scale).round() as u32).clamp(1, h);
            Placement {
                model: [0, 0, tw, th],
                source: [(w - cw) / 2, (h - ch) / 2, cw, ch],
            }
        }
    }
}

pub fn prepare_image(img: &RgbImage, spec: &InputSpec) -> PreparedImage {
    let p = placement(img.width(), img.height(), spec);
    let [sx, sy, sw, sh] = p.source;
    let [mx, my, mw, mh] = p.model;
    let [th, tw] = input_size(img.width(), img.height(), spec);
    let small = if (sw, sh) == (mw, mh) {
        image::imageops::crop_imm(img, sx, sy, sw, sh).to_image()
    } else {
        resize_box(img, p.source, (mw, mh))
    };
    let small = if (mw, mh) == (tw, th) {
        small
    } else {
        // The border takes the normalisation mean, i.e. 0 once normalised.
        let fill = image::Rgb(std::array::from_fn(|c| {
            let m = spec
                .mean
                .get(c)
                .or(spec.mean.first())
                .copied()
                .unwrap_or(0.0);
            (m * spec.scale).round().clamp(0.0, 255.0) as u8
        }));
        let mut canvas = RgbImage::from_pixel(tw, th, fill);
        image::imageops::replace(&mut canvas, &small, mx as i64, my as i64);
        canvas
    };
    PreparedImage {
        chw: normalise(&small, spec),
        size: [th as usize, tw as usize],
        placement: p,
    }
}

/// The `source` box (x, y, w, h) of `img` resized to `w` x `h`: bilinear with PIL's
/// antialiasing support when shrinking (torchvision's `Resize` on a PIL picture), with
/// fast_image_resize's SIMD kernels (AVX2 or SSE4.1, picked at run time). A 720p frame
/// takes about a quarter of the image crate's time.
pub fn resize_box(img: &RgbImage, [sx, sy, sw, sh]: [u32; 4], (w, h): (u32, u32)) -> RgbImage {
    use fast_image_resize::{images::ImageRef, FilterType, PixelType, ResizeAlg, ResizeOptions};
    // An RgbImage holds width*height*3 bytes and u8 needs no alignment; `placement`
    // keeps the box inside the picture and both sizes non-zero.
    let src = ImageRef::new(img.width(), img.height(), img.as_raw(), PixelType::U8x3)
        .expect("an RgbImage is a U8x3 buffer");
    let mut dst = fast_image_resize::images::Image::new(w, h, PixelType::U8x3);
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
        .crop(sx as f64, sy as f64, sw as f64, sh as f64);
    fast_image_resize::Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("same pixel type on both sides");
    RgbImage::from_raw(w, h, dst.into_vec()).expect("w*h*3 bytes")
}

/// `x = (p / scale - mean) / std`, channels first; 1-channel models get luma. One plane
/// at a time over the packed pixels, so the loop has no bounds checks or branches to
/// keep it from vectorising (a 224x224 frame's share of the video's preprocess).
pub fn normalise(img: &RgbImage, spec: &InputSpec) -> Vec<f32> {
    let plane = img.width() as usize * img.height() as usize;
    let c = spec.channels;
    let mut out = vec![0f32; c * plane];
    let pixels = img.as_raw().chunks_exact(3);
    for (ch, dst) in out.chunks_exact_mut(plane.max(1)).enumerate() {
        let (scale, mean, std) = (spec.scale, spec.mean[ch], spec.std[ch]);
        if c == 1 {
            for (d, px) in dst.iter_mut().zip(pixels.clone()) {
                let v = 0.299 * px[0] as f32 + 0.587 * px[1] as f32 + 0.114 * px[2] as f32;
                *d = (v / scale - mean) / std;
            }
        } else {
            let k = ch.min(2);
            for (d, px) in dst.iter_mut().zip(pixels.clone()) {
                *d = (px[k] as f32 / scale - mean) / std;
            }
        }
    }
    out
}

/// Undo the normalisation of a (C, H, W) tensor to show it, for `.npy` inputs.
pub fn denormalise(chw: &[f32], h: usize, w: usize, spec: &InputSpec) -> RgbImage {
    let c = chw.len() / (h * w);
    let mut img = RgbImage::new(w as u32, h as u32);
    for (i, px) in img.pixels_mut().enumerate() {
        for k in 0..3 {
            let ch = if c >= 3 { k } else { 0 };
            let m = spec.mean.get(ch).copied().unwrap_or(0.0);
            let s = spec.std.get(ch).copied().unwrap_or(1.0);
            let v = (chw[ch * h * w + i] * s + m) * spec.scale;
            // A model fed raw [0, 1] values (scale 1) is shown as 8-bit.
            let v = if spec.scale <= 1.0 { v * 255.0 } else { v };
            px[k] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::InputKind;

    fn spec() -> InputSpec {
        InputSpec {
            kind: InputKind::Image,
            channels: 3,
            size: vec![4, 6],
            mean: vec![0.5; 3],
            std: vec![0.25; 3],
            scale: 255.0,
            resize: Resize::Stretch,
            sample_rate: None,
            frontend: None,
        }
    }

    #[test]
    fn keep_aspect_keeps_ratios_up_to_its_cap() {
        let s = InputSpec {
            size: vec![64, 64],
            resize: Resize::KeepAspect,
            ..spec()
        };
        // 16:9 is kept; a 3000x16 strip is capped at 4:1, not 12000x64.
        assert_eq!(input_size(320, 180, &s), [64, 114]);
        assert_eq!(input_size(3000, 16, &s), [64, 256]);
        assert_eq!(input_size(16, 3000, &s), [256, 64]);
    }

    #[test]
    fn normalise_then_denormalise_round_trips() {
        let mut img = RgbImage::new(6, 4);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([(i * 10) as u8, 255 - (i * 7) as u8, 128]);
        }
        let s = spec();
        let chw = normalise(&img, &s);
        assert_eq!(chw.len(), 3 * 4 * 6);
        assert!((chw[0] - (0.0 / 255.0 - 0.5) / 0.25).abs() < 1e-6);
        assert_eq!(denormalise(&chw, 4, 6, &s), img);
    }

    #[test]
    fn normalise_writes_planes_and_luma_for_one_channel() {
        let img = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8 * 50, y as u8 * 90, 200]));
        let mut s = spec();
        s.mean = vec![0.1, 0.2, 0.3];
        let chw = normalise(&img, &s);
        // Pixel (x 2, y 1) is the sixth: its green is in the second plane.
        assert_eq!(chw[6 + 5], (90.0 / 255.0 - 0.2) / 0.25);
        assert_eq!(chw[12 + 5], (200.0 / 255.0 - 0.3) / 0.25);
        s.channels = 1;
        let luma = normalise(&img, &s);
        assert_eq!(luma.len(), 6);
        let v = 0.299 * 100.0 + 0.587 * 90.0 + 0.114 * 200.0;
        assert_eq!(luma[5], (v / 255.0 - 0.1) / 0.25);
    }

    #[test]
    fn shorter_side_crop_box_is_centred() {
        let mut s = spec();
        s.size = vec![224, 224];
        s.resize = Resize::ShorterSideCrop(256);
        // 512x1024 (w x h): scale 0.5, crop 448x448 centred.
        assert_eq!(placement(512, 1024, &s).source, [32, 288, 448, 448]);
    }

    #[test]
    fn letterbox_keeps_aspect_and_pads_with_the_mean() {
        let mut s = spec();
        s.size = vec![64, 64];
        s.resize = Resize::Letterbox;
        let p = placement(640, 360, &s);
        assert_eq!(p.model, [0, 14, 64, 36]);
        let img = RgbImage::from_pixel(640, 360, image::Rgb([255, 0, 0]));
        let prep = prepare_image(&img, &s);
        // Border rows normalise to 0, content to (1 - 0.5) / 0.25 = 2 in red.
        assert!(prep.chw[0].abs() < 0.02);
        assert!((prep.chw[32 * 64 + 5] - 2.0).abs() < 1e-5);
    }
}

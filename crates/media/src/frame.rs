//! A video frame as the pipeline carries it: packed RGB, or the decoder's own 8-bit 4:2:0
//! planes. A file job keeps the planes from decode to encode, so the overlay is drawn in
//! the encoder's colour space and the frame is never converted to RGB and back at full
//! size; only the model's input is made in RGB (see [`RgbConverter`]).

use std::borrow::Cow;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling::{context::Context as Scaler, flag::Flags};
use ffmpeg::util::frame::video::Video as AvFrame;
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use crate::render::{draw_label, draw_label_yuv, overlay, overlay_yuv_rows, Colormap};
use crate::render::{Plane, Yuv420Planes};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{what}: {msg}")]
    Convert { what: &'static str, msg: String },
}

/// The flags every RGB conversion of a decoded frame uses, so that a frame kept in YUV
/// reaches the model with the same RGB values as one converted by the decoder.
pub(crate) const TO_RGB: Flags = Flags::BILINEAR;

/// A decoded YUV420P frame (BT.601 limited range, as swscale reads it and libx264 writes).
pub struct Yuv420(AvFrame);

impl Yuv420 {
    /// `frame` must be YUV420P.
    pub(crate) fn new(frame: AvFrame) -> Self {
        debug_assert_eq!(frame.format(), Pixel::YUV420P);
        Self(frame)
    }

    /// `rgb` converted as the encoder converts RGB frames (for tests and benchmarks;
    /// decoded frames come as they are).
    pub fn from_rgb(rgb: &RgbImage) -> Result<Self, FrameError> {
        let (w, h) = rgb.dimensions();
        let err = |e: ffmpeg::Error| FrameError::Convert {
            what: "RGB to YUV",
            msg: e.to_string(),
        };
        let mut src = AvFrame::new(Pixel::RGB24, w, h);
        rgb_into_frame(rgb, &mut src);
        let mut out = AvFrame::empty();
        Scaler::get(Pixel::RGB24, w, h, Pixel::YUV420P, w, h, Flags::BILINEAR)
            .map_err(err)?
            .run(&src, &mut out)
            .map_err(err)?;
        Ok(Self(out))
    }

    pub fn width(&self) -> u32 {
        self.0.width()
    }

    pub fn height(&self) -> u32 {
        self.0.height()
    }

    pub(crate) fn av(&self) -> &AvFrame {
        &self.0
    }

    pub(crate) fn av_mut(&mut self) -> &mut AvFrame {
        &mut self.0
    }

    /// The planes, to draw on. A decoder may still hold the frame as a reference picture:
    /// the first call copies it if it is shared (and fails only if that copy cannot be
    /// allocated: drawing on the shared one would corrupt the frames decoded after it).
    pub fn planes_mut(&mut self) -> Result<Yuv420Planes<'_>, FrameError> {
        // SAFETY: the frame is valid and owned; av_frame_make_writable copies the buffers
        // (and updates the data pointers) only when another reference exists.
        let copied = unsafe { ffmpeg::ffi::av_frame_make_writable(self.0.as_mut_ptr()) };
        if copied < 0 {
            return Err(FrameError::Convert {
                what: "frame copy",
                msg: ffmpeg::Error::from(copied).to_string(),
            });
        }
        let (w, h) = (self.width() as usize, self.height() as usize);
        let strides = [0, 1, 2].map(|i| self.0.stride(i));
        let rows = [h, h.div_ceil(2), h.div_ceil(2)];
        // SAFETY: the frame is valid; its three planes are disjoint buffers of at least
        // stride x rows bytes, now this frame's alone, borrowed mutably through `self` for
        // the planes' lifetime.
        let ptr = unsafe { (*self.0.as_ptr()).data };
        let [y, u, v] = [0, 1, 2]
            .map(|i| unsafe { std::slice::from_raw_parts_mut(ptr[i], strides[i] * rows[i]) });
        Ok(Yuv420Planes {
            width: w,
            height: h,
            y: Plane {
                data: y,
                stride: strides[0],
            },
            u: Plane {
                data: u,
                stride: strides[1],
            },
            v: Plane {
                data: v,
                stride: strides[2],
            },
        })
    }
}

/// A frame's pixels.
pub enum Picture {
    Rgb(RgbImage),
    Yuv(Yuv420),
}

impl Picture {
    pub fn width(&self) -> u32 {
        match self {
            Picture::Rgb(p) => p.width(),
            Picture::Yuv(p) => p.width(),
        }
    }

    pub fn height(&self) -> u32 {
        match self {
            Picture::Rgb(p) => p.height(),
            Picture::Yuv(p) => p.height(),
        }
    }

    /// Blends a heatmap (height x width, in [0, 1]) over the frame; `mask_row(y, row)`
    /// fills its row `y` (see [`overlay_yuv_rows`]).
    pub fn overlay(
        &mut self,
        mut mask_row: impl FnMut(usize, &mut [f32]),
        cmap: &Colormap,
        alpha: f32,
    ) -> Result<(), FrameError> {
        match self {
            Picture::Rgb(p) => {
                let w = p.width() as usize;
                let mut mask = vec![0f32; w * p.height() as usize];
                for (y, row) in mask.chunks_exact_mut(w.max(1)).enumerate() {
                    mask_row(y, row);
                }
                overlay(p, &mask, cmap, alpha)
            }
            Picture::Yuv(p) => overlay_yuv_rows(p.planes_mut()?, mask_row, cmap, alpha),
        }
        Ok(())
    }

    /// Draws `text` at the top-left corner (see [`draw_label`]).
    pub fn draw_label(&mut self, text: &str) -> Result<(), FrameError> {
        match self {
            Picture::Rgb(p) => draw_label(p, text),
            Picture::Yuv(p) => draw_label_yuv(p.planes_mut()?, text),
        }
        Ok(())
    }

    /// The frame in RGB: borrowed when it is, converted when it is not.
    pub fn to_rgb(&self) -> Result<Cow<'_, RgbImage>, FrameError> {
        match self {
            Picture::Rgb(p) => Ok(Cow::Borrowed(p)),
            Picture::Yuv(p) => {
                let mut c = RgbConverter::default();
                c.convert(p)?;
                Ok(Cow::Owned(c.rgb))
            }
        }
    }

    pub fn into_rgb(self) -> Result<RgbImage, FrameError> {
        match self {
            Picture::Rgb(p) => Ok(p),
            yuv => Ok(yuv.to_rgb()?.into_owned()),
        }
    }
}

/// Converts YUV frames to RGB with one swscale context and one output buffer, reused
/// frame after frame (the model's input is made in RGB).
#[derive(Default)]
pub struct RgbConverter {
    scaler: Option<Scaler>,
    out: Option<AvFrame>,
    rgb: RgbImage,
}

// SAFETY: the swscale context has no thread affinity; a converter is used by one thread at
// a time (`&mut`).
unsafe impl Send for RgbConverter {}

impl RgbConverter {
    /// The picture in RGB: itself when it is RGB, else converted into this converter's
    /// buffer.
    pub fn rgb<'a>(&'a mut self, p: &'a Picture) -> Result<&'a RgbImage, FrameError> {
        match p {
            Picture::Rgb(p) => Ok(p),
            Picture::Yuv(p) => {
                self.convert(p)?;
                Ok(&self.rgb)
            }
        }
    }

    fn convert(&mut self, p: &Yuv420) -> Result<(), FrameError> {
        let (w, h) = (p.width(), p.height());
        let err = |msg: String| FrameError::Convert {
            what: "YUV to RGB",
            msg,
        };
        let stale = self
            .scaler
            .as_ref()
            .is_none_or(|s| s.input().width != w || s.input().height != h);
        if stale {
            self.scaler = Some(
                Scaler::get(Pixel::YUV420P, w, h, Pixel::RGB24, w, h, TO_RGB)
                    .map_err(|e| err(e.to_string()))?,
            );
            self.out = None;
            self.rgb = RgbImage::new(w, h);
        }
        let (Some(scaler), out) = (self.scaler.as_mut(), &mut self.out) else {
            return Err(err("no converter".into()));
        };
        let out = out.get_or_insert_with(AvFrame::empty);
        scaler.run(p.av(), out).map_err(|e| err(e.to_string()))?;
        frame_into_rgb(out, &mut self.rgb);
        Ok(())
    }
}

/// Copies packed RGB rows into an RGB24 frame of the same size, whose rows are padded to
/// its stride.
pub(crate) fn rgb_into_frame(rgb: &RgbImage, frame: &mut AvFrame) {
    let (row, stride) = (rgb.width() as usize * 3, frame.stride(0));
    let data = frame.data_mut(0);
    for (y, line) in rgb.as_raw().chunks_exact(row).enumerate() {
        data[y * stride..y * stride + row].copy_from_slice(line);
    }
}

/// Copies an RGB24 frame's padded rows into packed RGB of the same size.
pub(crate) fn frame_into_rgb(frame: &AvFrame, rgb: &mut RgbImage) {
    let (row, stride) = (rgb.width() as usize * 3, frame.stride(0));
    let data = frame.data(0);
    for (y, line) in rgb.chunks_exact_mut(row).enumerate() {
        line.copy_from_slice(&data[y * stride..y * stride + row]);
    }
}

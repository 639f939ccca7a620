//! Demux and decode a video stream with FFmpeg (ffmpeg-next over the system's libav*),
//! frames converted to packed RGB by swscale. The decoder and its scaler are not `Send`:
//! create a [`VideoDecoder`] inside the thread that reads from it.

use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::media::Type;
use ffmpeg::software::scaling::context::Context as Scaler;
use ffmpeg::util::frame::video::Video as AvFrame;
use ffmpeg_next as ffmpeg;
use image::RgbImage;

use crate::frame::{frame_into_rgb, Picture, Yuv420, TO_RGB};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{path}: no such file")]
    NotFound { path: PathBuf },
    #[error("{path}: not a media file FFmpeg can read ({msg})")]
    NotMedia { path: PathBuf, msg: String },
    #[error("{path}: has no video stream")]
    NoVideo { path: PathBuf },
    #[error("{path}: cannot decode video ({msg})")]
    Codec { path: PathBuf, msg: String },
    /// A section that lies outside the video.
    #[error("{path}: {msg}")]
    Section { path: PathBuf, msg: String },
    #[error(
        "{path}: unreadable after {read} packets ({msg}); the file may be truncated or corrupt"
    )]
    Corrupt {
        path: PathBuf,
        read: u64,
        msg: String,
    },
}

/// What the encoder needs to reproduce the input's timing.
#[derive(Clone, Debug)]
pub struct VideoInfo {
    pub path: PathBuf,
    pub width: u32,
    pub height: u32,
    /// The stream's frame rate (`r_frame_rate`), num/den.
    pub rate: (i32, i32),
    /// The stream's time base, num/den.
    pub time_base: (i32, i32),
    pub duration_s: f64,
    /// From the container, when it says; used for progress only.
    pub frames_hint: Option<u64>,
    pub has_audio: bool,
    /// Clockwise degrees the decoder turns each frame by, from the display matrix
    /// (`width` and `height` are after the turn).
    pub rotation: u32,
}

impl VideoInfo {
    /// A video stream to write: `frames` frames (when known) at a constant `fps`, in a
    /// time base of one tick a frame, upright, without audio.
    pub fn constant_rate(
        path: impl Into<PathBuf>,
        (width, height): (u32, u32),
        fps: i32,
        frames: Option<u64>,
    ) -> Self {
        let fps = fps.max(1);
        Self {
            path: path.into(),
            width,
            height,
            rate: (fps, 1),
            time_base: (1, fps),
            duration_s: frames.map_or(0.0, |n| n as f64 / fps as f64),
            frames_hint: frames,
            has_audio: false,
            rotation: 0,
        }
    }

    pub fn fps(&self) -> f64 {
        self.rate.0 as f64 / self.rate.1.max(1) as f64
    }
}

pub struct DecodedFrame {
    /// 0-based index among the frames this decoder delivers.
    pub index: u64,
    /// Presentation timestamp in the stream's time base, relative to the cut start.
    pub pts: i64,
    pub seconds: f64,
    /// Upright, at the stream's first size: RGB, or YUV with [`VideoDecoder::keep_yuv`].
    pub picture: Picture,
}

/// A section of the input: start and length in seconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Section {
    pub start: Option<f64>,
    pub duration: Option<f64>,
}

pub struct VideoDecoder {
    path: PathBuf,
    ictx: ffmpeg::format::context::Input,
    decoder: ffmpeg::decoder::Video,
    scaler: Option<Scaler>,
    /// Deliver YUV420P frames as they are decoded (see [`VideoDecoder::keep_yuv`]).
    yuv: bool,
    stream: usize,
    info: VideoInfo,
    tb: f64,
    /// pts of the section start (the first delivered frame's pts is shifted to 0 + offset).
    start_pts: Option<i64>,
    start_s: f64,
    end_s: Option<f64>,
    next_index: u64,
    packets: u64,
    corrupt: u64,
    eof_sent: bool,
    done: bool,
}

// SAFETY: the only member that is not `Send` is the swscale context, which FFmpeg does
// not tie to the thread that made it; a decoder is used by one thread at a time (`&mut`).
unsafe impl Send for VideoDecoder {}

pub fn init() {
    // Idempotent; quiets FFmpeg's own stderr chatter (errors reach the user through ours).
    let _ = ffmpeg::init();
    ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Fatal);
}

/// Clockwise degrees (0, 90, 180, 270) that turn the stored frames upright, from the
/// stream's display matrix (what phones write for portrait video), as FFmpeg's own
/// autorotate reads it (`av_display_rotation_get`, negated and snapped).
fn display_rotation(st: &ffmpeg::format::stream::Stream) -> u32 {
    let Some(sd) = st
        .side_data()
        .find(|s| s.kind() == ffmpeg::codec::packet::side_data::Type::DisplayMatrix)
    else {
        return 0;
    };
    let m: Vec<f64> = sd
        .data()
        .chunks_exact(4)
        .take(9)
        .map(|b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])) / 65536.0)
        .collect();
    if m.len() < 9 {
        return 0;
    }
    let (s0, s1) = (m[0].hypot(m[3]), m[1].hypot(m[4]));
    if s0 == 0.0 || s1 == 0.0 {
        return 0;
    }
    let deg = (m[1] / s1).atan2(m[0] / s0).to_degrees();
    ((deg / 90.0).round() as i64).rem_euclid(4) as u32 * 90
}

/// `rgb` turned `degrees` clockwise.
fn upright(rgb: RgbImage, degrees: u32) -> RgbImage {
    match degrees {
        90 => image::imageops::rotate90(&rgb),
        180 => image::imageops::rotate180(&rgb),
        270 => image::imageops::rotate270(&rgb),
        _ => rgb,
    }
}

fn rational(r: ffmpeg::Rational) -> (i32, i32) {
    (r.numerator(), r.denominator())
}

impl VideoDecoder {
    pub fn open(path: &Path, section: Section) -> Result<Self, DecodeError> {
        init();
        if !path.exists() {
            return Err(DecodeError::NotFound { path: path.into() });
        }
        let mut ictx = ffmpeg::format::input(path).map_err(|e| DecodeError::NotMedia {
            path: path.into(),
            msg: e.to_string(),
        })?;
        let (stream, params, tb, rate, frames, stream_dur, rotation) = {
            let st = ictx
                .streams()
                .best(Type::Video)
                .ok_or_else(|| DecodeError::NoVideo { path: path.into() })?;
            (
                st.index(),
                st.parameters(),
                st.time_base(),
                st.rate(),
                st.frames(),
                st.duration(),
                display_rotation(&st),
            )
        };
        let has_audio = ictx.streams().best(Type::Audio).is_some();
        let codec_err = |e: ffmpeg::Error| DecodeError::Codec {
            path: path.into(),
            msg: e.to_string(),
        };
        let mut ctx =
            ffmpeg::codec::context::Context::from_parameters(params).map_err(codec_err)?;
        // Frame threads keep decode from being the bottleneck on many cores; on few, one
        // thread leaves more to the network (720p H.264 on the 2-core EPYC: 2.1-2.7 ms of CPU
        // a frame with one thread, 2.6-3.3 with two).
        ctx.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: crate::codec_threads(),
            ..Default::default()
        });
        let decoder = ctx.decoder().video().map_err(codec_err)?;
        let (w, h) = (decoder.width(), decoder.height());
        if w == 0 || h == 0 {
            return Err(DecodeError::Codec {
                path: path.into(),
                msg: "video stream has no size".into(),
            });
        }
        let tbf = tb.numerator() as f64 / tb.denominator().max(1) as f64;
        let container_dur = ictx.duration();
        let duration_s = if stream_dur > 0 {
            stream_dur as f64 * tbf
        } else if container_dur > 0 {
            container_dur as f64 / ffmpeg::ffi::AV_TIME_BASE as f64
        } else {
            0.0
        };
        let start_s = section.start.unwrap_or(0.0).max(0.0);
        if duration_s > 0.0 && start_s >= duration_s {
            return Err(DecodeError::Section {
                path: path.into(),
                msg: format!(
                    "`start` ({start_s} s) is past the end of the video ({duration_s:.2} s)"
                ),
            });
        }
        if start_s > 0.0 {
            // Seek to the keyframe at or before the start; frames before it are dropped.
            let ts = (start_s * ffmpeg::ffi::AV_TIME_BASE as f64) as i64;
            ictx.seek(ts, ..ts).map_err(|e| DecodeError::Corrupt {
                path: path.into(),
                read: 0,
                msg: format!("cannot seek to {start_s} s: {e}"),
            })?;
        }
        let rate = if rate.numerator() > 0 {
            rational(rate)
        } else {
            (25, 1)
        };
        let fps = rate.0 as f64 / rate.1.max(1) as f64;
        let remaining = (duration_s - start_s).max(0.0);
        let span = section.duration.map_or(remaining, |d| d.min(remaining));
        let frames_hint = if section.start.is_none() && section.duration.is_none() && frames > 0 {
            Some(frames as u64)
        } else if span > 0.0 {
            Some((span * fps).round() as u64)
        } else {
            None
        };
        Ok(Self {
            path: path.into(),
            info: VideoInfo {
                path: path.into(),
                // Frames come out upright: a quarter turn swaps the sides.
                width: if rotation % 180 == 90 { h } else { w },
                height: if rotation % 180 == 90 { w } else { h },
                rotation,
                rate,
                time_base: rational(tb),
                duration_s,
                frames_hint,
                has_audio,
            },
            ictx,
            decoder,
            scaler: None,
            yuv: false,
            stream,
            tb: tbf,
            start_pts: None,
            start_s,
            end_s: section.duration.map(|d| start_s + d),
            next_index: 0,
            packets: 0,
            corrupt: 0,
            eof_sent: false,
            done: false,
        })
    }

    pub fn info(&self) -> &VideoInfo {
        &self.info
    }

    /// Frames stored as YUV420P, upright and at the stream's size (most H.264 and HEVC
    /// files) come out as the decoder made them, with no conversion; the rest in RGB.
    pub fn keep_yuv(mut self) -> Self {
        self.yuv = true;
        self
    }

    /// Packets the decoder rejected and skipped (as ffmpeg does).
    pub fn corrupt_packets(&self) -> u64 {
        self.corrupt
    }

    /// The section start in the stream's time base: output timestamps are relative to it.
    pub fn start_pts(&self) -> i64 {
        (self.start_s / self.tb).round() as i64
    }

    /// The frame as stored (before the display rotation), in RGB at the first frame's size.
    fn convert_rgb(&mut self, f: &AvFrame) -> Result<RgbImage, DecodeError> {
        let (w, h) = (f.width(), f.height());
        let (sw, sh) = match self.info.rotation {
            90 | 270 => (self.info.height, self.info.width),
            _ => (self.info.width, self.info.height),
        };
        let stale = self.scaler.as_ref().is_none_or(|s| {
            s.input().width != w || s.input().height != h || s.input().format != f.format()
        });
        if stale {
            // The output keeps the first frame's size if the stream changes resolution.
            self.scaler = Some(
                Scaler::get(f.format(), w, h, Pixel::RGB24, sw, sh, TO_RGB).map_err(|e| {
                    DecodeError::Codec {
                        path: self.path.clone(),
                        msg: format!("no conversion to RGB: {e}"),
                    }
                })?,
            );
        }
        let mut rgb = AvFrame::empty();
        if let Some(s) = self.scaler.as_mut() {
            s.run(f, &mut rgb).map_err(|e| DecodeError::Codec {
                path: self.path.clone(),
                msg: e.to_string(),
            })?;
        }
        let mut out = RgbImage::new(sw, sh);
        frame_into_rgb(&rgb, &mut out);
        Ok(out)
    }

    /// Takes one decoded frame out of the decoder, if it has one ready.
    fn receive(&mut self) -> Result<Option<DecodedFrame>, DecodeError> {
        let mut f = AvFrame::empty();
        while self.decoder.receive_frame(&mut f).is_ok() {
            let pts = f.timestamp().or(f.pts()).unwrap_or(0);
            let secs = pts as f64 * self.tb;
            if secs + 0.5 * self.tb < self.start_s - 1e-6 {
                continue; // before the section (decoded from the preceding keyframe)
            }
            if self.end_s.is_some_and(|e| secs >= e - 1e-6) {
                self.done = true;
                return Ok(None);
            }
            let base = *self.start_pts.get_or_insert(self.start_pts());
            let as_is = self.yuv
                && f.format() == Pixel::YUV420P
                && self.info.rotation == 0
                && (f.width(), f.height()) == (self.info.width, self.info.height);
            let picture = if as_is {
                Picture::Yuv(Yuv420::new(std::mem::replace(&mut f, AvFrame::empty())))
            } else {
                Picture::Rgb(upright(self.convert_rgb(&f)?, self.info.rotation))
            };
            let frame = DecodedFrame {
                index: self.next_index,
                pts: pts - base,
                seconds: secs - self.start_s,
                picture,
            };
            self.next_index += 1;
            return Ok(Some(frame));
        }
        Ok(None)
    }

    pub fn next_frame(&mut self) -> Result<Option<DecodedFrame>, DecodeError> {
        let mut consecutive_errors = 0;
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(f) = self.receive()? {
                return Ok(Some(f));
            }
            if self.done {
                return Ok(None);
            }
            if self.eof_sent {
                self.done = true;
                return Ok(None);
            }
            let mut packet = ffmpeg::Packet::empty();
            match packet.read(&mut self.ictx) {
                Ok(()) => {
                    consecutive_errors = 0;
                    self.packets += 1;
                    if packet.stream() != self.stream {
                        continue;
                    }
                    if self.decoder.send_packet(&packet).is_err() {
                        // A corrupt packet: skip it and count it, like ffmpeg.
                        self.corrupt += 1;
                    }
                }
                Err(ffmpeg::Error::Eof) => {
                    // Drain the frames still inside the decoder.
                    let _ = self.decoder.send_eof();
                    self.eof_sent = true;
                }
                Err(e) => {
                    consecutive_errors += 1;
                    if consecutive_errors > 64 {
                        return Err(DecodeError::Corrupt {
                            path: self.path.clone(),
                            read: self.packets,
                            msg: e.to_string(),
                        });
                    }
                }
            }
        }
    }
}

//! H.264 (libx264) into MP4/MKV with the input's timing: the encoder's time base is the
//! input stream's, so timestamps pass through unchanged. The input's audio stream is
//! copied packet for packet (or, for generated clips, PCM is encoded to AAC).
//!
//! Debian's FFmpeg 5.1 pitfalls handled here: libx264 leaves packet duration 0 (the
//! last frame would be lost), MP4 needs GLOBAL_HEADER before open and `set_parameters`
//! after, and the muxer may change the stream time base in `write_header`.

use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::media::Type;
use ffmpeg::software::scaling::{context::Context as Scaler, flag::Flags};
use ffmpeg::{Dictionary, Rational};
use ffmpeg_next as ffmpeg;

use crate::frame::{rgb_into_frame, Picture, Yuv420};

use crate::decode::VideoInfo;

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("{path}: {msg}")]
    Open { path: PathBuf, msg: String },
    #[error("encoding {path}: {msg}")]
    Write { path: PathBuf, msg: String },
    /// An encoder option out of its range, found before anything is written.
    #[error("`{name}` {why}")]
    BadOption { name: &'static str, why: String },
}

/// libx264's preset unless one is asked for: the fastest. At 720p on the 2-core EPYC,
/// veryfast took 36 ms of a frame and left the video at 0.57 of the model's own rate;
/// ultrafast takes 15 ms (0.70), for files about twice as large at the same CRF.
pub const DEFAULT_PRESET: &str = "ultrafast";

#[derive(Clone, Debug)]
pub struct EncodeOptions {
    pub crf: u8,
    pub preset: String,
    /// libx264 threads; 0 leaves the choice to libx264 (1.5x the cores). By default
    /// [`crate::codec_threads`].
    pub threads: usize,
}

/// libx264's presets, fastest first.
pub const PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

impl EncodeOptions {
    /// Refuses options libx264 would reject, before any file is opened.
    pub fn check(&self) -> Result<(), EncodeError> {
        if !PRESETS.contains(&self.preset.as_str()) {
            return Err(EncodeError::BadOption {
                name: "preset",
                why: format!(
                    "`{}` is not a libx264 preset; presets: {}",
                    self.preset,
                    PRESETS.join(", ")
                ),
            });
        }
        if self.crf > 51 {
            return Err(EncodeError::BadOption {
                name: "crf",
                why: format!("must be within 0..=51, got {}", self.crf),
            });
        }
        Ok(())
    }
}

impl Default for EncodeOptions {
    fn default() -> Self {
        Self {
            crf: 20,
            preset: DEFAULT_PRESET.into(),
            threads: crate::codec_threads(),
        }
    }
}

/// Where the output's audio comes from.
pub enum AudioSource {
    None,
    /// Copy the audio stream of a media file, within [start, end) seconds of it.
    Copy {
        path: PathBuf,
        start: f64,
        end: Option<f64>,
    },
    /// Encode mono PCM to AAC (for generated clips).
    Pcm {
        rate: u32,
        samples: Vec<f32>,
    },
}

struct AudioCopy {
    ictx: ffmpeg::format::context::Input,
    stream: usize,
    in_tb: Rational,
    out: usize,
    start: i64,
    end: Option<i64>,
    pending: Option<ffmpeg::Packet>,
    done: bool,
}

struct AudioPcm {
    encoder: ffmpeg::encoder::Audio,
    out: usize,
    rate: u32,
    samples: Vec<f32>,
    pos: usize,
    frame_size: usize,
    flushed: bool,
}

enum Audio {
    None,
    Copy(Box<AudioCopy>),
    Pcm(Box<AudioPcm>),
}

pub struct VideoEncoder {
    path: PathBuf,
    octx: ffmpeg::format::context::Output,
    encoder: ffmpeg::encoder::Video,
    scaler: Scaler,
    enc_tb: Rational,
    ost_tb: Rational,
    frame_dur: i64,
    rgb: ffmpeg::util::frame::video::Video,
    /// The encoder's input, converted from RGB (or from 4:2:0 into 4:4:4).
    yuv: ffmpeg::util::frame::video::Video,
    from_yuv420: Option<Scaler>,
    audio: Audio,
    width: u32,
    height: u32,
    last_pts: i64,
    tb_secs: f64,
}

// SAFETY: as for the decoder, the swscale context has no thread affinity and an encoder
// is used by one thread at a time (`&mut`).
unsafe impl Send for VideoEncoder {}

fn open_err(path: &Path, what: &str, e: impl std::fmt::Display) -> EncodeError {
    EncodeError::Open {
        path: path.into(),
        msg: format!("{what}: {e}"),
    }
}

impl VideoEncoder {
    /// `path` may carry a temporary name: `format` names the container ("mp4", "matroska").
    pub fn create(
        path: &Path,
        format: &str,
        info: &VideoInfo,
        opts: &EncodeOptions,
        audio: AudioSource,
    ) -> Result<Self, EncodeError> {
        crate::decode::init();
        let mut octx = ffmpeg::format::output_as(path, format)
            .map_err(|e| open_err(path, "cannot create", e))?;
        let global = octx
            .format()
            .flags()
            .contains(ffmpeg::format::Flags::GLOBAL_HEADER);
        let codec = ffmpeg::encoder::find_by_name("libx264").ok_or_else(|| {
            open_err(path, "no H.264 encoder", "FFmpeg was built without libx264")
        })?;
        let enc_tb = Rational::new(info.time_base.0, info.time_base.1);
        let rate = Rational::new(info.rate.0, info.rate.1);
        let mut ost = octx
            .add_stream(codec)
            .map_err(|e| open_err(path, "add stream", e))?;
        let ost_index = ost.index();
        let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| open_err(path, "encoder", e))?;
        // H.264 4:2:0 needs even sizes; odd ones keep their size in 4:4:4.
        let pix = if info.width.is_multiple_of(2) && info.height.is_multiple_of(2) {
            Pixel::YUV420P
        } else {
            Pixel::YUV444P
        };
        enc.set_width(info.width);
        enc.set_height(info.height);
        enc.set_format(pix);
        enc.set_time_base(enc_tb);
        enc.set_frame_rate(Some(rate));
        if global {
            enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
        }
        let mut d = Dictionary::new();
        d.set("crf", &opts.crf.to_string());
        d.set("preset", &opts.preset);
        d.set("threads", &opts.threads.to_string());
        let encoder = enc
            .open_with(d)
            .map_err(|e| open_err(path, "open libx264", e))?;
        ost.set_parameters(&encoder);
        ost.set_time_base(enc_tb);
        ost.set_rate(rate);
        ost.set_avg_frame_rate(rate);

        let audio = match audio {
            AudioSource::None => Audio::None,
            AudioSource::Copy {
                path: src,
                start,
                end,
            } => {
                match open_audio_copy(&src, start, end, &mut octx)
                    .map_err(|e| open_err(path, "audio", e))?
                {
                    Some(c) => Audio::Copy(Box::new(c)),
                    None => Audio::None,
                }
            }
            AudioSource::Pcm { rate, samples } => Audio::Pcm(Box::new(
                open_pcm(rate, samples, &mut octx, global).map_err(|e| open_err(path, "AAC", e))?,
            )),
        };
        octx.write_header()
            .map_err(|e| open_err(path, "write header", e))?;
        // The muxer may pick its own time base (MP4: a multiple of the rate).
        let ost_tb = octx
            .stream(ost_index)
            .map(|s| s.time_base())
            .unwrap_or(enc_tb);
        let scaler = Scaler::get(
            Pixel::RGB24,
            info.width,
            info.height,
            pix,
            info.width,
            info.height,
            Flags::BILINEAR,
        )
        .map_err(|e| open_err(path, "colour conversion", e))?;
        // One frame in the encoder's time base, for the packet duration libx264 leaves 0.
        let frame_dur = ((enc_tb.denominator() as i64 * rate.denominator() as i64)
            / (enc_tb.numerator() as i64 * rate.numerator().max(1) as i64))
            .max(1);
        let tb_secs = enc_tb.numerator() as f64 / enc_tb.denominator().max(1) as f64;
        Ok(Self {
            path: path.into(),
            octx,
            encoder,
            scaler,
            enc_tb,
            ost_tb,
            frame_dur,
            rgb: ffmpeg::util::frame::video::Video::new(Pixel::RGB24, info.width, info.height),
            yuv: ffmpeg::util::frame::video::Video::new(pix, info.width, info.height),
            from_yuv420: None,
            audio,
            width: info.width,
            height: info.height,
            last_pts: 0,
            tb_secs,
        })
    }

    fn werr(&self, what: &str, e: impl std::fmt::Display) -> EncodeError {
        EncodeError::Write {
            path: self.path.clone(),
            msg: format!("{what}: {e}"),
        }
    }

    /// Encodes one frame at `pts` (input stream time base, relative to the cut). A
    /// YUV420P frame of the stream's size goes to libx264 as it is.
    pub fn write(&mut self, picture: Picture, pts: i64) -> Result<(), EncodeError> {
        if (picture.width(), picture.height()) != (self.width, self.height) {
            return Err(self.werr(
                "frame size",
                format!(
                    "{}x{} differs from the stream's",
                    picture.width(),
                    picture.height()
                ),
            ));
        }
        let mut yuv = match picture {
            Picture::Yuv(p) if self.yuv.format() == Pixel::YUV420P => p,
            Picture::Yuv(p) => {
                // 4:4:4 output (odd sizes): one more conversion.
                self.from_yuv420
                    .get_or_insert(
                        Scaler::get(
                            Pixel::YUV420P,
                            self.width,
                            self.height,
                            self.yuv.format(),
                            self.width,
                            self.height,
                            Flags::BILINEAR,
                        )
                        .map_err(|e| self.werr("colour conversion", e))?,
                    )
                    .run(p.av(), &mut self.yuv)
                    .map_err(|e| self.werr("colour conversion", e))?;
                return self.send(None, pts);
            }
            Picture::Rgb(rgb) => {
                // One RGB frame, reused: its rows are overwritten in full each time.
                rgb_into_frame(&rgb, &mut self.rgb);
                self.scaler
                    .run(&self.rgb, &mut self.yuv)
                    .map_err(|e| self.werr("colour conversion", e))?;
                return self.send(None, pts);
            }
        };
        self.send(Some(&mut yuv), pts)
    }

    /// Sends `frame` (else the conversion buffer) to libx264 and writes what comes out.
    fn send(&mut self, frame: Option<&mut Yuv420>, pts: i64) -> Result<(), EncodeError> {
        let frame = match frame {
            Some(f) => f.av_mut(),
            None => &mut self.yuv,
        };
        frame.set_pts(Some(pts));
        self.encoder
            .send_frame(frame)
            .map_err(|e| self.werr("libx264", e))?;
        self.last_pts = pts;
        self.pump_audio(pts as f64 * self.tb_secs)?;
        self.drain()
    }

    fn drain(&mut self) -> Result<(), EncodeError> {
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            if packet.duration() == 0 {
                packet.set_duration(self.frame_dur);
            }
            packet.set_stream(0);
            packet.rescale_ts(self.enc_tb, self.ost_tb);
            packet
                .write_interleaved(&mut self.octx)
                .map_err(|e| EncodeError::Write {
                    path: self.path.clone(),
                    msg: format!("mux: {e}"),
                })?;
        }
        Ok(())
    }

    fn pump_audio(&mut self, until_s: f64) -> Result<(), EncodeError> {
        let path = self.path.clone();
        let err = |e: ffmpeg::Error| EncodeError::Write {
            path: path.clone(),
            msg: format!("audio: {e}"),
        };
        match &mut self.audio {
            Audio::None => Ok(()),
            Audio::Copy(c) => c.pump(until_s, &mut self.octx).map_err(err),
            Audio::Pcm(p) => p.pump(until_s, &mut self.octx).map_err(err),
        }
    }

    /// End time of the last frame written, in seconds.
    pub fn end_s(&self) -> f64 {
        (self.last_pts + self.frame_dur) as f64 * self.tb_secs
    }

    /// Flushes the encoder and the audio, and writes the trailer. `video_end_s` ends the
    /// audio where the video ends (an interrupted run); `None` keeps all of it.
    pub fn finish(mut self, video_end_s: Option<f64>) -> Result<(), EncodeError> {
        self.encoder.send_eof().map_err(|e| self.werr("flush", e))?;
        self.drain()?;
        self.pump_audio(video_end_s.unwrap_or(f64::INFINITY))?;
        if let Audio::Pcm(p) = &mut self.audio {
            p.flush(&mut self.octx).map_err(|e| EncodeError::Write {
                path: self.path.clone(),
                msg: format!("audio flush: {e}"),
            })?;
        }
        self.octx
            .write_trailer()
            .map_err(|e| self.werr("trailer", e))
    }
}

fn open_audio_copy(
    src: &Path,
    start: f64,
    end: Option<f64>,
    octx: &mut ffmpeg::format::context::Output,
) -> Result<Option<AudioCopy>, ffmpeg::Error> {
    let mut ictx = ffmpeg::format::input(src)?;
    let Some((stream, params, in_tb)) = ictx
        .streams()
        .best(Type::Audio)
        .map(|s| (s.index(), s.parameters(), s.time_base()))
    else {
        return Ok(None);
    };
    let mut ost = octx.add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))?;
    ost.set_parameters(params);
    // The input container's codec tag may not be valid in ours.
    unsafe {
        (*ost.parameters().as_mut_ptr()).codec_tag = 0;
    }
    let out = ost.index();
    let tbf = in_tb.numerator() as f64 / in_tb.denominator().max(1) as f64;
    if start > 0.0 {
        let ts = (start * ffmpeg::ffi::AV_TIME_BASE as f64) as i64;
        ictx.seek(ts, ..ts)?;
    }
    Ok(Some(AudioCopy {
        ictx,
        stream,
        in_tb,
        out,
        start: (start / tbf).round() as i64,
        end: end.map(|e| (e / tbf).round() as i64),
        pending: None,
        done: false,
    }))
}

impl AudioCopy {
    /// Copies audio packets up to `until_s` (output time) into the muxer.
    fn pump(
        &mut self,
        until_s: f64,
        octx: &mut ffmpeg::format::context::Output,
    ) -> Result<(), ffmpeg::Error> {
        let tbf = self.in_tb.numerator() as f64 / self.in_tb.denominator().max(1) as f64;
        let out_tb = octx
            .stream(self.out)
            .map(|s| s.time_base())
            .unwrap_or(self.in_tb);
        loop {
            let mut p = match self.pending.take() {
                Some(p) => p,
                None => {
                    if self.done {
                        return Ok(());
                    }
                    let mut p = ffmpeg::Packet::empty();
                    match p.read(&mut self.ictx) {
                        Ok(()) => {}
                        Err(ffmpeg::Error::Eof) => {
                            self.done = true;
                            return Ok(());
                        }
                        Err(_) => continue,
                    }
                    if p.stream() != self.stream {
                        continue;
                    }
                    p
                }
            };
            let pts = p.pts().or(p.dts()).unwrap_or(0);
            // Without a section, keep everything (AAC priming packets have pts < 0).
            if self.start > 0 && pts < self.start {
                continue;
            }
            if self.end.is_some_and(|e| pts >= e) {
                self.done = true;
                return Ok(());
            }
            if (pts - self.start) as f64 * tbf > until_s {
                self.pending = Some(p);
                return Ok(());
            }
            p.set_pts(p.pts().map(|v| v - self.start));
            p.set_dts(p.dts().map(|v| v - self.start));
            p.rescale_ts(self.in_tb, out_tb);
            p.set_position(-1);
            p.set_stream(self.out);
            p.write_interleaved(octx)?;
        }
    }
}

fn open_pcm(
    rate: u32,
    samples: Vec<f32>,
    octx: &mut ffmpeg::format::context::Output,
    global: bool,
) -> Result<AudioPcm, ffmpeg::Error> {
    let codec =
        ffmpeg::encoder::find(ffmpeg::codec::Id::AAC).ok_or(ffmpeg::Error::EncoderNotFound)?;
    let mut ost = octx.add_stream(codec)?;
    let out = ost.index();
    let mut enc = ffmpeg::codec::context::Context::new_with_codec(codec)
        .encoder()
        .audio()?;
    enc.set_rate(rate as i32);
    enc.set_channel_layout(ffmpeg::ChannelLayout::MONO);
    enc.set_channels(1);
    enc.set_format(ffmpeg::format::Sample::F32(
        ffmpeg::format::sample::Type::Planar,
    ));
    enc.set_bit_rate(96_000);
    enc.set_time_base(Rational::new(1, rate as i32));
    if global {
        enc.set_flags(ffmpeg::codec::Flags::GLOBAL_HEADER);
    }
    let encoder = enc.open_as(codec)?;
    ost.set_parameters(&encoder);
    ost.set_time_base(Rational::new(1, rate as i32));
    let frame_size = (encoder.frame_size() as usize).max(1);
    Ok(AudioPcm {
        encoder,
        out,
        rate,
        samples,
        pos: 0,
        frame_size,
        flushed: false,
    })
}

impl AudioPcm {
    fn write_packets(
        &mut self,
        octx: &mut ffmpeg::format::context::Output,
    ) -> Result<(), ffmpeg::Error> {
        let out_tb = octx
            .stream(self.out)
            .map(|s| s.time_base())
            .unwrap_or(Rational::new(1, self.rate as i32));
        let mut packet = ffmpeg::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.out);
            packet.rescale_ts(Rational::new(1, self.rate as i32), out_tb);
            packet.write_interleaved(octx)?;
        }
        Ok(())
    }

    fn pump(
        &mut self,
        until_s: f64,
        octx: &mut ffmpeg::format::context::Output,
    ) -> Result<(), ffmpeg::Error> {
        let until = if until_s.is_finite() {
            ((until_s * self.rate as f64) as usize).min(self.samples.len())
        } else {
            self.samples.len()
        };
        while self.pos < until {
            let n = self.frame_size.min(self.samples.len() - self.pos);
            let mut frame = ffmpeg::util::frame::audio::Audio::new(
                ffmpeg::format::Sample::F32(ffmpeg::format::sample::Type::Planar),
                n,
                ffmpeg::ChannelLayout::MONO,
            );
            frame.set_rate(self.rate);
            frame.plane_mut::<f32>(0)[..n].copy_from_slice(&self.samples[self.pos..self.pos + n]);
            frame.set_pts(Some(self.pos as i64));
            self.encoder.send_frame(&frame)?;
            self.pos += n;
            self.write_packets(octx)?;
        }
        Ok(())
    }

    fn flush(&mut self, octx: &mut ffmpeg::format::context::Output) -> Result<(), ffmpeg::Error> {
        if !self.flushed {
            self.flushed = true;
            self.encoder.send_eof()?;
            self.write_packets(octx)?;
        }
        Ok(())
    }
}

//! Where frames come from and where results go. A file job uses the FFmpeg decoder and
//! encoder and a JSON-lines file; a server feeds frames from memory and takes records
//! (and drawn frames) from channels, with no temporary files.

use crossbeam_channel::Sender;
use image::RgbImage;

use camstream_media::decode::{DecodedFrame, VideoDecoder, VideoInfo};
use camstream_media::encode::VideoEncoder;
use camstream_media::frame::Picture;

use crate::PipelineError;

/// A stream of decoded frames, in presentation order.
pub trait FrameSource: Send {
    /// Size and timing of the frames (for the encoder and the progress total).
    fn info(&self) -> &VideoInfo;
    /// The next frame; `None` at the end.
    fn next_frame(&mut self) -> Result<Option<DecodedFrame>, PipelineError>;
    /// Packets that could not be decoded and were skipped.
    fn corrupt_packets(&self) -> u64 {
        0
    }
}

impl FrameSource for VideoDecoder {
    fn info(&self) -> &VideoInfo {
        VideoDecoder::info(self)
    }
    fn next_frame(&mut self) -> Result<Option<DecodedFrame>, PipelineError> {
        Ok(VideoDecoder::next_frame(self)?)
    }
    fn corrupt_packets(&self) -> u64 {
        VideoDecoder::corrupt_packets(self)
    }
}

/// Frames already in memory (pictures at a fixed rate), e.g. received by a server.
pub struct MemoryFrames<I> {
    info: VideoInfo,
    frames: I,
    next: u64,
}

impl<I: Iterator<Item = RgbImage> + Send> MemoryFrames<I> {
    /// `fps` frames per second (at least 1); every frame must be `width` x `height`.
    pub fn new(frames: I, width: u32, height: u32, fps: i32) -> Self {
        let info = VideoInfo::constant_rate("<memory>", (width, height), fps, None);
        Self {
            info,
            frames,
            next: 0,
        }
    }
}

impl<I: Iterator<Item = RgbImage> + Send> FrameSource for MemoryFrames<I> {
    fn info(&self) -> &VideoInfo {
        &self.info
    }
    fn next_frame(&mut self) -> Result<Option<DecodedFrame>, PipelineError> {
        let Some(rgb) = self.frames.next() else {
            return Ok(None);
        };
        if (rgb.width(), rgb.height()) != (self.info.width, self.info.height) {
            return Err(PipelineError::BadOption {
                name: "frames",
                why: format!(
                    "frame {} is {}x{}, the stream is {}x{}",
                    self.next,
                    rgb.width(),
                    rgb.height(),
                    self.info.width,
                    self.info.height
                ),
            });
        }
        let index = self.next;
        self.next += 1;
        Ok(Some(DecodedFrame {
            index,
            pts: index as i64,
            seconds: index as f64 / self.info.rate.0 as f64,
            picture: Picture::Rgb(rgb),
        }))
    }
}

/// Where drawn frames go, in order. A sink takes the frame: a channel passes it on
/// without a copy.
pub trait FrameSink: Send {
    fn write(&mut self, frame: Picture, pts: i64) -> Result<(), PipelineError>;
    /// Completes the output; `interrupted` ends any audio with the frames written so far.
    fn finish(&mut self, interrupted: bool) -> Result<(), PipelineError>;
}

/// An H.264 file being written (under a temporary name: the caller renames it).
pub struct EncodedVideo(Option<VideoEncoder>);

impl EncodedVideo {
    pub fn new(encoder: VideoEncoder) -> Self {
        Self(Some(encoder))
    }
}

impl FrameSink for EncodedVideo {
    fn write(&mut self, frame: Picture, pts: i64) -> Result<(), PipelineError> {
        match &mut self.0 {
            Some(enc) => Ok(enc.write(frame, pts)?),
            None => Ok(()),
        }
    }
    fn finish(&mut self, interrupted: bool) -> Result<(), PipelineError> {
        if let Some(enc) = self.0.take() {
            let end = interrupted.then(|| enc.end_s());
            enc.finish(end)?;
        }
        Ok(())
    }
}

/// Drawn frames (with their pts) to a channel, in RGB.
impl FrameSink for Sender<(i64, RgbImage)> {
    fn write(&mut self, frame: Picture, pts: i64) -> Result<(), PipelineError> {
        self.send((pts, frame.into_rgb()?))
            .map_err(|_| PipelineError::ReceiverGone("frames"))
    }
    fn finish(&mut self, _interrupted: bool) -> Result<(), PipelineError> {
        Ok(())
    }
}

//! Pictures from files (PNG, JPEG), as the RGB the preprocessing takes.

use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};

/// The largest picture read: a side, and the decoded bytes (RGBA 8-bit at worst).
const MAX_SIDE: u32 = 16_384;
const MAX_BYTES: u64 = 1 << 30;

pub fn read_image(path: &Path) -> Result<RgbImage> {
    let open = || -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
        image::ImageReader::open(path)
            .map_err(|e| Error::io(path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))
    };
    decode_guarded(path, open)
}

/// A picture from bytes in memory (a request's upload); `origin` names it in errors.
pub fn decode_image(bytes: &[u8], origin: &Path) -> Result<RgbImage> {
    let open = || -> Result<image::ImageReader<std::io::Cursor<&[u8]>>> {
        image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| Error::io(origin, e))
    };
    decode_guarded(origin, open)
}

/// Reads the header first: a picture too large is refused before decoding.
fn decode_guarded<R: std::io::BufRead + std::io::Seek>(
    path: &Path,
    open: impl Fn() -> Result<image::ImageReader<R>>,
) -> Result<RgbImage> {
    let reader = open()?;
    if reader.format().is_none() {
        return Err(Error::file(
            path,
            "not a picture camstream can read (PNG or JPEG; or .npy for tensors)",
        ));
    }
    // The header alone says the size: a picture too large is refused before decoding.
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| Error::file(path, format!("cannot decode picture: {e}")))?;
    let bytes = u64::from(w) * u64::from(h) * 4;
    if w > MAX_SIDE || h > MAX_SIDE || bytes > MAX_BYTES {
        return Err(Error::file(
            path,
            format!(
                "is {w}x{h} pixels ({} MB decoded); camstream reads pictures up to {MAX_SIDE} pixels a side and {} MB",
                bytes >> 20,
                MAX_BYTES >> 20
            ),
        ));
    }
    let mut reader = open()?;
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_BYTES);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| Error::file(path, format!("cannot decode picture: {e}")))?;
    Ok(img.to_rgb8())
}

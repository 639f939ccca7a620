//! Pictures from files (PNG, JPEG), as the RGB the preprocessing takes.

use std::path::Path;

use image::RgbImage;

use crate::error::{Error, Result};

pub fn read_image(path: &Path) -> Result<RgbImage> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::file(
            path,
            "not a picture camstream can read (PNG or JPEG; or .npy for tensors)",
        ));
    }
    let img = reader
        .decode()
        .map_err(|e| Error::file(path, format!("cannot decode picture: {e}")))?;
    Ok(img.to_rgb8())
}

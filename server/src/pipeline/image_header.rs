//! What an encoded image's header says, read and checked before any pixel is decoded: its format,
//! its stored size against the pixel budget, whether the file is whole, and the EXIF orientation a
//! viewer turns it by. Also the decoder limits and error mapping that decoding shares with it.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{ImageDecoder as _, ImageError, ImageFormat, ImageReader, Limits};

use super::image_container::check_complete;
use super::image_input_error::ImageInputError;

/// What an image's header says.
pub(super) struct Header {
    pub format: ImageFormat,
    /// Width and height of the stored pixel grid.
    pub stored: (u32, u32),
    /// How a viewer turns the stored grid (EXIF `Orientation`; none when absent).
    pub orientation: Orientation,
}

impl Header {
    /// Width and height as the image is shown: a quarter turn swaps them.
    pub fn shown(&self) -> (u32, u32) {
        let (w, h) = self.stored;
        match self.orientation {
            Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH => (h, w),
            _ => (w, h),
        }
    }
}

pub(super) fn read_header(bytes: &[u8], max_pixels: u64) -> Result<Header, ImageInputError> {
    let format = supported_format(bytes)?;
    let name = format_name(format);
    // Header only. Decoders parse the header when constructed and allocate nothing proportional to
    // the declared size, so this is safe for any input.
    let mut header_reader = ImageReader::with_format(Cursor::new(bytes), format);
    header_reader.limits(decoder_limits(max_pixels, None));
    let mut decoder = match header_reader.into_decoder() {
        Ok(decoder) => decoder,
        Err(e) => {
            // A file cut inside its header is reported as cut, not as whatever the decoder tripped on.
            check_complete(format, bytes)?;
            return Err(decode_error(name, e));
        }
    };
    let (width, height) = decoder.dimensions();
    // A broken or unreadable EXIF block is ignored, as viewers ignore it: the pixels are still fine.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    check_dimensions(width, height, max_pixels)?;
    // A cut-off file would decode "successfully" with the missing part grey.
    check_complete(format, bytes)?;
    Ok(Header { format, stored: (width, height), orientation })
}

pub(super) fn supported_format(bytes: &[u8]) -> Result<ImageFormat, ImageInputError> {
    match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP)) => Ok(f),
        _ => Err(ImageInputError::UnrecognisedFormat),
    }
}

pub(super) fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        _ => "WebP",
    }
}

pub(super) fn check_dimensions(width: u32, height: u32, max_pixels: u64) -> Result<(), ImageInputError> {
    if width == 0 || height == 0 {
        return Err(ImageInputError::Empty { width, height });
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageInputError::TooLarge {
            width,
            height,
            max: max_pixels,
        });
    }
    Ok(())
}

/// Decoder limits for a pixel budget: 8 bytes per pixel covers the widest output we accept
/// (16-bit RGBA); the fixed slack covers metadata and codec working buffers of small images.
pub(super) fn decoder_limits(max_pixels: u64, exact_size: Option<(u32, u32)>) -> Limits {
    const SLACK_BYTES: u64 = 16 << 20;
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(SLACK_BYTES));
    if let Some((w, h)) = exact_size {
        limits.max_image_width = Some(w);
        limits.max_image_height = Some(h);
    }
    limits
}

pub(super) fn decode_error(format: &'static str, error: ImageError) -> ImageInputError {
    match error {
        ImageError::Limits(e) => ImageInputError::DecoderLimit {
            format,
            reason: e.to_string(),
        },
        other => ImageInputError::Corrupt {
            format,
            reason: other.to_string(),
        },
    }
}

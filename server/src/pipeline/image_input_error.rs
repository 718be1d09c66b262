//! Why an input (encoded bytes, a raw pixel buffer or a file) could not become an image: one error
//! type for `image_input` and the header checks of `image_header`.

use std::path::PathBuf;

use super::image_container::ContainerError;

/// Why an input could not become an image.
#[derive(Debug, thiserror::Error)]
pub enum ImageInputError {
    /// The bytes do not start with a PNG, JPEG or WebP signature.
    #[error("not a recognised image (PNG, JPEG or WebP)")]
    UnrecognisedFormat,
    /// The image has more pixels than the budget allows.
    #[error("image is {width}x{height} pixels, more than the limit of {max} pixels")]
    TooLarge { width: u32, height: u32, max: u64 },
    /// The image has no pixels at all.
    #[error("image has zero width or height ({width}x{height})")]
    Empty { width: u32, height: u32 },
    /// The header or pixel data could not be decoded.
    #[error("corrupt or truncated {format} image: {reason}")]
    Corrupt {
        format: &'static str,
        reason: String,
    },
    /// The decoder needed more memory than the pixel budget allows (a lying or hostile file).
    #[error("{format} image needs more memory to decode than allowed: {reason}")]
    DecoderLimit {
        format: &'static str,
        reason: String,
    },
    /// The file's structure is cut short or broken (checked before decoding, see `image_container`).
    #[error(transparent)]
    Incomplete(#[from] ContainerError),
    /// A raw pixel buffer has an unsupported channel count.
    #[error("raw pixels must have 3 (RGB) or 4 (RGBA) channels, got {channels}")]
    UnsupportedChannels { channels: u8 },
    /// A raw pixel buffer's length does not match its declared shape.
    #[error(
        "raw pixel buffer for {width}x{height}x{channels} must be {expected} bytes, got {got}"
    )]
    RawLength {
        width: u32,
        height: u32,
        channels: u8,
        expected: u64,
        got: u64,
    },
    /// The image file does not exist.
    #[error("image file not found: {}", path.display())]
    NotFound { path: PathBuf },
    /// The image file exists but could not be read.
    #[error("cannot read image file {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
}

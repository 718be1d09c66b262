//! Turning untrusted bytes (encoded files or raw pixel buffers) into a bounded RGB image.
//!
//! Every image that reaches the model passes through here, so this is where the pixel budget is
//! enforced: the dimensions are read from the header and checked before any pixel is decoded, and
//! the decoder itself runs under memory limits so a header that lies cannot make it allocate more.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageReader, RgbImage, RgbaImage};

pub use super::image_input_error::ImageInputError;
use super::image_header::{check_dimensions, decode_error, decoder_limits, format_name, read_header};

/// Default pixel budget: 40 megapixels covers every common camera and generator output while
/// keeping a decoded RGB frame (120 MB) well inside the server's memory.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Decodes a PNG, JPEG or WebP file (format guessed from its content) into RGB, turned the way its
/// EXIF orientation says, i.e. as every viewer shows it (a phone photo stored sideways is judged
/// upright, and its heatmap and boxes are in that frame).
///
/// Fails before decoding any pixel data when the header declares more than `max_pixels` pixels or
/// a zero dimension. Transparent pixels are composited on white.
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, ImageInputError> {
    let header = read_header(bytes, max_pixels)?;
    // Phase 2: the full decode, pinned to the dimensions we just approved and to a byte budget
    // derived from the pixel budget, so nothing later in the file can grow the allocation.
    let mut reader = ImageReader::with_format(Cursor::new(bytes), header.format);
    reader.limits(decoder_limits(max_pixels, Some(header.stored)));
    let mut decoded = reader.decode().map_err(|e| decode_error(format_name(header.format), e))?;
    decoded.apply_orientation(header.orientation);
    Ok(flatten_to_rgb(decoded))
}

/// The dimensions an encoded image is shown at (after its EXIF orientation), checked against the
/// pixel budget, and its structure checked complete — everything [`decode_image`] checks before it
/// decodes a pixel. Cheap: the header and the container's markers only.
pub fn probe(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32), ImageInputError> {
    read_header(bytes, max_pixels).map(|h| h.shown())
}

/// Wraps a raw, tightly packed RGB (3 channels) or RGBA (4 channels) buffer, row-major.
///
/// RGBA is composited on white, like decoded files.
pub fn from_raw(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u8,
    max_pixels: u64,
) -> Result<RgbImage, ImageInputError> {
    check_raw(pixels, width, height, channels, max_pixels)?;
    let image = if channels == 3 {
        RgbImage::from_raw(width, height, pixels.to_vec()).map(DynamicImage::ImageRgb8)
    } else {
        RgbaImage::from_raw(width, height, pixels.to_vec()).map(DynamicImage::ImageRgba8)
    };
    // The length was checked above, so the buffer always fits its declared shape.
    let image = image.expect("buffer length matches width * height * channels");
    Ok(flatten_to_rgb(image))
}

/// Everything [`from_raw`] checks, without copying the pixels.
pub fn check_raw(pixels: &[u8], width: u32, height: u32, channels: u8, max_pixels: u64) -> Result<(), ImageInputError> {
    if channels != 3 && channels != 4 {
        return Err(ImageInputError::UnsupportedChannels { channels });
    }
    check_dimensions(width, height, max_pixels)?;
    // The pixel budget bounds width * height, but the budget itself is caller-supplied;
    // checked arithmetic keeps an absurd budget from wrapping the expected length.
    let expected = u64::from(width)
        .checked_mul(u64::from(height))
        .and_then(|n| n.checked_mul(u64::from(channels)))
        .unwrap_or(u64::MAX);
    let got = pixels.len() as u64;
    if got != expected {
        return Err(ImageInputError::RawLength { width, height, channels, expected, got });
    }
    Ok(())
}

/// Reads and decodes an image file; see [`decode_image`].
pub fn load_path(path: impl AsRef<Path>, max_pixels: u64) -> Result<RgbImage, ImageInputError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageInputError::NotFound {
            path: path.to_path_buf(),
        },
        _ => ImageInputError::Unreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        },
    })?;
    decode_image(&bytes, max_pixels)
}

/// Converts any decoded colour type to 8-bit RGB, compositing transparency on white: models see
/// generated images as a viewer would on a page, and black behind alpha would invent dark regions.
fn flatten_to_rgb(image: DynamicImage) -> RgbImage {
    if !image.color().has_alpha() {
        return image.into_rgb8();
    }
    let rgba = image.into_rgba8();
    let (width, height) = rgba.dimensions();
    let mut out = RgbImage::new(width, height);
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let alpha = u32::from(src[3]);
        for c in 0..3 {
            let value = u32::from(src[c]) * alpha + 255 * (255 - alpha);
            dst[c] = ((value + 127) / 255) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::image_container::ContainerError;
    use image::codecs::jpeg::JpegEncoder;
    use image::codecs::png::PngEncoder;
    use image::codecs::webp::WebPEncoder;
    use image::{ExtendedColorType, ImageEncoder};

    fn gradient(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, 100])
        })
    }

    fn png_bytes(pixels: &[u8], width: u32, height: u32, color: ExtendedColorType) -> Vec<u8> {
        let mut out = Vec::new();
        PngEncoder::new(&mut out)
            .write_image(pixels, width, height, color)
            .unwrap();
        out
    }

    /// A PNG that declares `width × height` but carries only a few bytes of pixel data: the
    /// decoder reads chunks up to the first IDAT before it reports dimensions, so one is included.
    fn png_with_stub_data(width: u32, height: u32) -> Vec<u8> {
        let mut ihdr = width.to_be_bytes().to_vec();
        ihdr.extend_from_slice(&height.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (&b"IHDR"[..], &ihdr[..]),
            (b"IDAT", &[0x78, 0x9c, 0x63, 0x00]),
        ] {
            let body = [kind, data].concat();
            out.extend_from_slice(&(data.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
            out.extend_from_slice(&crc32(&body).to_be_bytes());
        }
        out
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn png_roundtrip_is_lossless() {
        let img = gradient(23, 17);
        let bytes = png_bytes(img.as_raw(), 23, 17, ExtendedColorType::Rgb8);
        assert_eq!(decode_image(&bytes, DEFAULT_MAX_PIXELS).unwrap(), img);
    }

    #[test]
    fn jpeg_decodes_with_right_size_and_close_colours() {
        let img = RgbImage::from_pixel(32, 24, image::Rgb([200, 40, 90]));
        let mut bytes = Vec::new();
        JpegEncoder::new_with_quality(&mut bytes, 95)
            .write_image(img.as_raw(), 32, 24, ExtendedColorType::Rgb8)
            .unwrap();
        let out = decode_image(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(out.dimensions(), (32, 24));
        let p = out.get_pixel(16, 12);
        assert!(
            (i32::from(p[0]) - 200).abs() < 8 && (i32::from(p[1]) - 40).abs() < 8,
            "{p:?}"
        );
    }

    #[test]
    fn webp_lossless_roundtrip() {
        let img = gradient(19, 11);
        let mut bytes = Vec::new();
        WebPEncoder::new_lossless(&mut bytes)
            .write_image(img.as_raw(), 19, 11, ExtendedColorType::Rgb8)
            .unwrap();
        assert_eq!(decode_image(&bytes, DEFAULT_MAX_PIXELS).unwrap(), img);
    }

    #[test]
    fn alpha_is_composited_on_white() {
        // Opaque red, fully transparent black, half-transparent black.
        let pixels = [255, 0, 0, 255, 0, 0, 0, 0, 0, 0, 0, 128];
        let bytes = png_bytes(&pixels, 3, 1, ExtendedColorType::Rgba8);
        let out = decode_image(&bytes, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0]);
        assert_eq!(out.get_pixel(1, 0).0, [255, 255, 255]);
        // 255 * (255 - 128) / 255 = 127
        assert_eq!(out.get_pixel(2, 0).0, [127, 127, 127]);
    }

    #[test]
    fn too_many_pixels_is_rejected_with_sizes() {
        let bytes = png_bytes(
            gradient(100, 100).as_raw(),
            100,
            100,
            ExtendedColorType::Rgb8,
        );
        let err = decode_image(&bytes, 9_999).unwrap_err();
        assert!(matches!(
            err,
            ImageInputError::TooLarge {
                width: 100,
                height: 100,
                max: 9_999
            }
        ));
        assert_eq!(
            err.to_string(),
            "image is 100x100 pixels, more than the limit of 9999 pixels"
        );
        assert!(decode_image(&bytes, 10_000).is_ok());
    }

    #[test]
    fn huge_header_is_rejected_before_decoding() {
        // 100k x 100k = 10^10 pixels would need 30 GB; only the header is read. A budget check
        // after decoding would abort on allocation instead of returning this error.
        let err =
            decode_image(&png_with_stub_data(100_000, 100_000), DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(
            matches!(
                err,
                ImageInputError::TooLarge {
                    width: 100_000,
                    height: 100_000,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn header_with_too_little_pixel_data_is_truncated() {
        // The stub has no IEND chunk: refused from its structure before the decoder runs.
        let err = decode_image(&png_with_stub_data(4000, 4000), DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(err, ImageInputError::Incomplete(ContainerError::Truncated(_))), "{err}");
        assert!(err.to_string().starts_with("image data truncated"), "{err}");
    }

    #[test]
    fn truncated_png_and_jpeg_are_refused() {
        let png = png_bytes(gradient(40, 40).as_raw(), 40, 40, ExtendedColorType::Rgb8);
        let err = decode_image(&png[..png.len() / 2], DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(err, ImageInputError::Incomplete(ContainerError::Truncated(_))), "{err}");

        let mut jpeg = Vec::new();
        JpegEncoder::new(&mut jpeg)
            .write_image(gradient(40, 40).as_raw(), 40, 40, ExtendedColorType::Rgb8)
            .unwrap();
        // Cut inside the header: the decoder cannot even read the size, and the cut is named.
        let err = decode_image(&jpeg[..20], DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(err, ImageInputError::Incomplete(ContainerError::Truncated(_))), "{err}");
        // Cut inside the pixel data (a decoder would fill the rest with grey): truncated.
        let err = decode_image(&jpeg[..jpeg.len() / 5 * 4], DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(err.to_string().starts_with("image data truncated"), "{err}");
    }

    #[test]
    fn non_images_are_unrecognised() {
        for bytes in [
            &b"hello world, not an image"[..],
            b"",
            b"GIF89a\x01\x00\x01\x00",
        ] {
            let err = decode_image(bytes, DEFAULT_MAX_PIXELS).unwrap_err();
            assert!(matches!(err, ImageInputError::UnrecognisedFormat));
            assert_eq!(
                err.to_string(),
                "not a recognised image (PNG, JPEG or WebP)"
            );
        }
    }

    #[test]
    fn raw_rgb_and_rgba() {
        let rgb = from_raw(&[1, 2, 3, 4, 5, 6], 2, 1, 3, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rgb.as_raw(), &[1, 2, 3, 4, 5, 6]);
        let rgba = from_raw(&[10, 20, 30, 255, 0, 0, 0, 0], 1, 2, 4, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(rgba.as_raw(), &[10, 20, 30, 255, 255, 255]);
    }

    #[test]
    fn raw_length_mismatch_says_expected_and_got() {
        let err = from_raw(&[0; 10], 2, 2, 3, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(
            err,
            ImageInputError::RawLength {
                expected: 12,
                got: 10,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "raw pixel buffer for 2x2x3 must be 12 bytes, got 10"
        );
    }

    #[test]
    fn raw_rejects_bad_channels_empty_and_oversized() {
        assert!(matches!(
            from_raw(&[0; 8], 2, 2, 2, DEFAULT_MAX_PIXELS),
            Err(ImageInputError::UnsupportedChannels { channels: 2 })
        ));
        assert!(matches!(
            from_raw(&[], 0, 5, 3, DEFAULT_MAX_PIXELS),
            Err(ImageInputError::Empty {
                width: 0,
                height: 5
            })
        ));
        assert!(matches!(
            from_raw(&[0; 48], 4, 4, 3, 15),
            Err(ImageInputError::TooLarge {
                width: 4,
                height: 4,
                max: 15
            })
        ));
    }

    #[test]
    fn load_path_reads_files_and_names_missing_ones() {
        let dir = std::env::temp_dir().join(format!("heie-image-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("g.png");
        std::fs::write(
            &file,
            png_bytes(gradient(5, 4).as_raw(), 5, 4, ExtendedColorType::Rgb8),
        )
        .unwrap();
        assert_eq!(
            load_path(&file, DEFAULT_MAX_PIXELS).unwrap(),
            gradient(5, 4)
        );

        let missing = dir.join("missing.png");
        let err = load_path(&missing, DEFAULT_MAX_PIXELS).unwrap_err();
        assert!(matches!(err, ImageInputError::NotFound { .. }));
        assert!(err.to_string().contains("missing.png"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

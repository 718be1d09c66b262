//! Whether an encoded image is whole: its container walked to the end marker before any decoder runs.
//!
//! Decoders forgive: `image`'s JPEG decoder fills whatever a cut-off file lacks with grey and reports
//! success, and a judge that scores half a grey picture as if it were the image is wrong in a way no
//! client can see. A cut file is recognised from its structure instead: a PNG must reach its `IEND`
//! chunk, a JPEG its end-of-image marker after the last scan, a WebP the length its RIFF header
//! declares. The walk reads lengths and markers only, never pixels, so it costs next to nothing.

use image::ImageFormat;

/// What is wrong with an encoded image's structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContainerError {
    /// The data ends before the format's end marker.
    #[error("image data truncated: {0}")]
    Truncated(String),
    /// The structure is broken before its end.
    #[error("image data corrupt: {0}")]
    Corrupt(String),
}

/// Checks that `bytes` (already recognised as `format`) hold a complete file.
pub fn check_complete(format: ImageFormat, bytes: &[u8]) -> Result<(), ContainerError> {
    match format {
        ImageFormat::Png => png(bytes),
        ImageFormat::Jpeg => jpeg(bytes),
        ImageFormat::WebP => webp(bytes),
        _ => Ok(()),
    }
}

fn truncated<T>(what: impl Into<String>) -> Result<T, ContainerError> {
    Err(ContainerError::Truncated(what.into()))
}

/// PNG: signature, then chunks (length, type, data, CRC) until `IEND`.
fn png(bytes: &[u8]) -> Result<(), ContainerError> {
    let mut at = 8;
    loop {
        let Some(header) = bytes.get(at..at + 8) else {
            return truncated(format!("the PNG ends at byte {} before its IEND chunk", bytes.len()));
        };
        let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        let end = (at + 8).saturating_add(length).saturating_add(4);
        if end > bytes.len() {
            let name = String::from_utf8_lossy(kind);
            return truncated(format!("the PNG ends at byte {} inside its {name:?} chunk ({end} bytes needed)", bytes.len()));
        }
        if kind == b"IEND" {
            return Ok(());
        }
        at = end;
    }
}

/// JPEG: marker segments from SOI; after each start-of-scan, entropy-coded data runs to the next
/// marker (inside it 0xFF is always followed by 0x00 or a restart marker). The file is whole when
/// the end-of-image marker follows. An EOI inside an embedded thumbnail does not count: it sits in
/// an APP segment, which is skipped by its length.
fn jpeg(bytes: &[u8]) -> Result<(), ContainerError> {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if bytes.get(..2) != Some(&[0xFF, SOI]) {
        return Err(ContainerError::Corrupt("a JPEG must start with the start-of-image marker".into()));
    }
    let mut at = 2;
    let mut scans = 0;
    loop {
        // Fill bytes (0xFF) may precede a marker.
        while bytes.get(at) == Some(&0xFF) && bytes.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            if at + 1 >= bytes.len() {
                return truncated(format!("the JPEG ends at byte {} before its end-of-image marker", bytes.len()));
            }
            return Err(ContainerError::Corrupt(format!("no JPEG marker at byte {at}")));
        };
        at += 2;
        match marker {
            EOI if scans > 0 => return Ok(()),
            EOI => return Err(ContainerError::Corrupt("the JPEG ends before any image scan".into())),
            // Standalone markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes.get(at..at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            return truncated(format!("the JPEG ends at byte {} inside a marker segment", bytes.len()));
        };
        if len < 2 {
            return Err(ContainerError::Corrupt(format!("JPEG segment at byte {at} has length {len}")));
        }
        at += len;
        if at > bytes.len() {
            return truncated(format!("the JPEG ends at byte {} inside a marker segment", bytes.len()));
        }
        if marker == SOS {
            scans += 1;
            at = end_of_entropy_data(bytes, at).ok_or_else(|| {
                ContainerError::Truncated(format!(
                    "the JPEG ends at byte {} inside its compressed image data, before the end-of-image marker",
                    bytes.len()
                ))
            })?;
        }
    }
}

/// Where the marker after entropy-coded data starting at `from` begins; `None` if the data runs
/// to the end of the file.
fn end_of_entropy_data(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + 1 < bytes.len() {
        if bytes[at] == 0xFF {
            match bytes[at + 1] {
                // Stuffed zero and restart markers belong to the data.
                0x00 | 0xD0..=0xD7 => at += 2,
                // A run of fill bytes: look at the last one.
                0xFF => at += 1,
                _ => return Some(at),
            }
        } else {
            at += 1;
        }
    }
    None
}

/// WebP: a RIFF container whose header states the file's length.
fn webp(bytes: &[u8]) -> Result<(), ContainerError> {
    let Some(size) = bytes.get(4..8).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
        return truncated("the WebP ends inside its RIFF header");
    };
    let declared = size.saturating_add(8);
    if bytes.len() < declared {
        return truncated(format!("the WebP is {} bytes but its RIFF header declares {declared}", bytes.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::jpeg::JpegEncoder;
    use image::codecs::png::PngEncoder;
    use image::codecs::webp::WebPEncoder;
    use image::{ExtendedColorType, ImageEncoder, RgbImage};

    fn picture() -> RgbImage {
        RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8]))
    }

    fn encode(format: ImageFormat) -> Vec<u8> {
        let img = picture();
        let mut out = Vec::new();
        match format {
            ImageFormat::Png => PngEncoder::new(&mut out).write_image(img.as_raw(), 64, 48, ExtendedColorType::Rgb8),
            ImageFormat::Jpeg => JpegEncoder::new(&mut out).write_image(img.as_raw(), 64, 48, ExtendedColorType::Rgb8),
            _ => WebPEncoder::new_lossless(&mut out).write_image(img.as_raw(), 64, 48, ExtendedColorType::Rgb8),
        }
        .unwrap();
        out
    }

    #[test]
    fn whole_files_pass_and_every_cut_is_truncated() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP] {
            let bytes = encode(format);
            assert_eq!(check_complete(format, &bytes), Ok(()), "{format:?}");
            for cut in [bytes.len() / 5, bytes.len() / 2, bytes.len() - 1] {
                match check_complete(format, &bytes[..cut]) {
                    Err(ContainerError::Truncated(why)) => assert!(!why.is_empty()),
                    other => panic!("{format:?} cut at {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn trailing_bytes_after_the_end_marker_are_accepted() {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let mut bytes = encode(format);
            bytes.extend_from_slice(b"trailing metadata some tools append");
            assert_eq!(check_complete(format, &bytes), Ok(()), "{format:?}");
        }
    }
}

//! JPEG: the record goes into a COM (comment) segment whose text is `heie:` + JSON, placed right after
//! SOI and the APPn segments (JFIF, Exif, ICC, XMP), before the tables. The segments are copied byte for
//! byte and everything from the first SOS (the entropy-coded image) on is untouched; an earlier `heie:`
//! comment is dropped.

use super::MetadataError;

const SOI: [u8; 2] = [0xFF, 0xD8];
const COM: u8 = 0xFE;
const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;
/// A segment's length field counts itself (2 bytes) and must fit 16 bits.
pub const MAX_COMMENT_BYTES: usize = 0xFFFF - 2;

/// A marker segment before SOS: its marker byte and its raw bytes (0xFF, marker, length, payload).
struct Segment<'a> {
    marker: u8,
    raw: &'a [u8],
}

impl Segment<'_> {
    fn payload(&self) -> &[u8] {
        self.raw.get(4..).unwrap_or_default()
    }
    fn is_app(&self) -> bool {
        (0xE0..=0xEF).contains(&self.marker)
    }
}

/// The header segments (SOI excluded) and the rest of the file from the first SOS marker on.
fn segments(jpeg: &[u8]) -> Result<(Vec<Segment<'_>>, &[u8]), MetadataError> {
    if !jpeg.starts_with(&SOI) {
        return Err(MetadataError::Malformed("no JPEG start-of-image marker".into()));
    }
    let mut pos = 2;
    let mut list = Vec::new();
    loop {
        if jpeg.get(pos) != Some(&0xFF) {
            return Err(MetadataError::Malformed(format!("JPEG: no marker at byte {pos}")));
        }
        let start = pos;
        // Any number of 0xFF fill bytes may precede a marker.
        while jpeg.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        let marker = *jpeg.get(pos + 1).ok_or_else(|| MetadataError::Malformed("JPEG ends before its image data".into()))?;
        match marker {
            SOS => return Ok((list, &jpeg[start..])),
            EOI => return Err(MetadataError::Malformed("JPEG has no image data (EOI before SOS)".into())),
            // TEM and RSTn stand alone (no length).
            0x01 | 0xD0..=0xD7 => {
                list.push(Segment { marker, raw: &jpeg[start..pos + 2] });
                pos += 2;
            }
            _ => {
                let len = jpeg
                    .get(pos + 2..pos + 4)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                    .ok_or_else(|| MetadataError::Malformed("JPEG ends inside a segment header".into()))?;
                let end = pos + 2 + len;
                if len < 2 || end > jpeg.len() {
                    return Err(MetadataError::Malformed(format!("JPEG segment 0xFF{marker:02X} runs past the end of the file")));
                }
                list.push(Segment { marker, raw: &jpeg[start..end] });
                pos = end;
            }
        }
    }
}

/// Whether a segment is a comment this program wrote (`prefix` + …).
fn is_ours(segment: &Segment<'_>, prefix: &str) -> bool {
    segment.marker == COM && segment.payload().starts_with(prefix.as_bytes())
}

/// The JPEG with one COM segment holding `prefix` + `text` after SOI and the leading APPn segments.
pub fn with_comment(jpeg: &[u8], prefix: &str, text: &str) -> Result<Vec<u8>, MetadataError> {
    let payload_len = prefix.len() + text.len();
    if payload_len > MAX_COMMENT_BYTES {
        return Err(MetadataError::TooLong { bytes: payload_len, limit: MAX_COMMENT_BYTES });
    }
    let (list, image_data) = segments(jpeg)?;
    let mut comment = vec![0xFF, COM];
    comment.extend_from_slice(&((payload_len + 2) as u16).to_be_bytes());
    comment.extend_from_slice(prefix.as_bytes());
    comment.extend_from_slice(text.as_bytes());

    let leading_apps = list.iter().take_while(|s| s.is_app()).count();
    let mut out = Vec::with_capacity(jpeg.len() + comment.len());
    out.extend_from_slice(&SOI);
    for segment in &list[..leading_apps] {
        out.extend_from_slice(segment.raw);
    }
    out.extend_from_slice(&comment);
    for segment in list[leading_apps..].iter().filter(|s| !is_ours(s, prefix)) {
        out.extend_from_slice(segment.raw);
    }
    out.extend_from_slice(image_data);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_of(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 90]));
        image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Jpeg).unwrap();
        bytes
    }

    #[test]
    fn the_comment_follows_the_app_segments_and_replaces_an_earlier_one() {
        let jpeg = jpeg_of(16, 8);
        let once = with_comment(&jpeg, "heie:", "{\"a\":1}").unwrap();
        let twice = with_comment(&once, "heie:", "{\"a\":2}").unwrap();
        let (list, rest) = segments(&twice).unwrap();
        let ours: Vec<usize> = list.iter().enumerate().filter(|(_, s)| is_ours(s, "heie:")).map(|(i, _)| i).collect();
        assert_eq!(ours.len(), 1);
        assert_eq!(list[ours[0]].payload(), b"heie:{\"a\":2}");
        assert!(list[..ours[0]].iter().all(|s| s.is_app()));
        let (_, original_rest) = segments(&jpeg).unwrap();
        assert_eq!(rest, original_rest, "scan data untouched");
        assert_eq!(twice.len(), jpeg.len() + 4 + "heie:{\"a\":2}".len());
        assert_eq!(image::load_from_memory(&twice).unwrap().to_rgb8(), image::load_from_memory(&jpeg).unwrap().to_rgb8());
    }

    #[test]
    fn a_foreign_comment_is_kept() {
        let jpeg = jpeg_of(8, 8);
        let with_other = with_comment(&jpeg, "made by:", "a camera").unwrap();
        let ours = with_comment(&with_other, "heie:", "{}").unwrap();
        let (list, _) = segments(&ours).unwrap();
        assert!(list.iter().any(|s| s.marker == COM && s.payload() == b"made by:a camera"));
    }

    #[test]
    fn broken_or_oversized_input_is_refused() {
        let jpeg = jpeg_of(8, 8);
        assert!(with_comment(&jpeg[..10], "heie:", "{}").is_err());
        assert!(with_comment(b"\x89PNG", "heie:", "{}").is_err());
        let long = "x".repeat(MAX_COMMENT_BYTES);
        assert!(matches!(with_comment(&jpeg, "heie:", &long), Err(MetadataError::TooLong { .. })));
    }
}

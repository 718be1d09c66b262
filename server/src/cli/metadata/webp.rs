//! WebP: the record goes into an XMP chunk (`heie:data` element) of an extended (VP8X) file. A simple
//! file (one VP8 or VP8L chunk) is turned into the extended layout first: a VP8X header with the canvas
//! size read from the bitstream header and the XMP flag set. The image chunks are copied byte for byte.
//! An XMP chunk this program wrote is replaced; XMP from another tool is left alone and the file refused,
//! since merging XMP documents is not something a byte-level writer should guess at.

use super::MetadataError;

const VP8X_XMP: u8 = 0x04;
const VP8X_ALPHA: u8 = 0x10;
/// The namespace of the `heie:data` element; its presence marks an XMP packet as ours.
pub const XMP_NAMESPACE: &str = "https://github.com/heie-server/heie/ns/1.0/";

struct Chunk<'a> {
    fourcc: [u8; 4],
    data: &'a [u8],
}

fn chunks(webp: &[u8]) -> Result<Vec<Chunk<'_>>, MetadataError> {
    if webp.len() < 12 || &webp[0..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return Err(MetadataError::Malformed("no RIFF/WEBP header".into()));
    }
    let riff_size = u32::from_le_bytes(webp[4..8].try_into().expect("4 bytes")) as usize;
    let end = riff_size.checked_add(8).filter(|&e| e <= webp.len()).ok_or_else(|| {
        MetadataError::Malformed(format!("WebP is shorter ({} bytes) than its RIFF header says ({})", webp.len(), riff_size + 8))
    })?;
    let mut pos = 12;
    let mut list = Vec::new();
    while pos + 8 <= end {
        let fourcc: [u8; 4] = webp[pos..pos + 4].try_into().expect("4 bytes");
        let size = u32::from_le_bytes(webp[pos + 4..pos + 8].try_into().expect("4 bytes")) as usize;
        let data_end = (pos + 8).checked_add(size).filter(|&e| e <= end).ok_or_else(|| {
            MetadataError::Malformed(format!("WebP chunk {} runs past the end of the file", String::from_utf8_lossy(&fourcc)))
        })?;
        list.push(Chunk { fourcc, data: &webp[pos + 8..data_end] });
        // Chunks are padded to an even size.
        pos = data_end + (size & 1);
    }
    if list.is_empty() {
        return Err(MetadataError::Malformed("WebP has no chunks".into()));
    }
    Ok(list)
}

/// Canvas size and alpha hint of a simple file's bitstream.
fn simple_canvas(chunk: &Chunk<'_>) -> Result<(u32, u32, bool), MetadataError> {
    let d = chunk.data;
    match &chunk.fourcc {
        b"VP8 " => {
            // Frame tag (3 bytes), start code 9D 01 2A, then 14-bit width and height (2 scale bits each).
            if d.len() < 10 || d[3..6] != [0x9D, 0x01, 0x2A] {
                return Err(MetadataError::Malformed("VP8 chunk without a key-frame header".into()));
            }
            let width = u16::from_le_bytes([d[6], d[7]]) as u32 & 0x3FFF;
            let height = u16::from_le_bytes([d[8], d[9]]) as u32 & 0x3FFF;
            Ok((width, height, false))
        }
        b"VP8L" => {
            // Signature 0x2F, then width-1 (14 bits), height-1 (14 bits), alpha_is_used (1 bit).
            if d.len() < 5 || d[0] != 0x2F {
                return Err(MetadataError::Malformed("VP8L chunk without its signature".into()));
            }
            let bits = u32::from_le_bytes([d[1], d[2], d[3], d[4]]);
            Ok(((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, (bits >> 28) & 1 == 1))
        }
        other => Err(MetadataError::Malformed(format!("WebP starts with an unknown chunk {}", String::from_utf8_lossy(other)))),
    }
}

fn vp8x_payload(flags: u8, width: u32, height: u32) -> Vec<u8> {
    let mut p = vec![flags, 0, 0, 0];
    p.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    p.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    p
}

/// The XMP document carrying `json` in `heie:data` (`&`, `<`, `>` escaped), exactly as the Python writer
/// (`heie_client.image_metadata`) makes it.
pub fn xmp_packet(json: &str) -> String {
    let escaped = json.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    format!(
        "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\">\
         <rdf:RDF xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\">\
         <rdf:Description rdf:about=\"\" xmlns:heie=\"{XMP_NAMESPACE}\">\
         <heie:data>{escaped}</heie:data>\
         </rdf:Description></rdf:RDF></x:xmpmeta>"
    )
}

fn push_chunk(out: &mut Vec<u8>, fourcc: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(fourcc);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
}

/// The WebP with `json` in an XMP chunk, in the extended layout.
pub fn with_xmp(webp: &[u8], json: &str) -> Result<Vec<u8>, MetadataError> {
    let list = chunks(webp)?;
    let ours = |c: &Chunk<'_>| &c.fourcc == b"XMP " && c.data.windows(XMP_NAMESPACE.len()).any(|w| w == XMP_NAMESPACE.as_bytes());
    if list.iter().any(|c| &c.fourcc == b"XMP " && !ours(c)) {
        return Err(MetadataError::ForeignXmp);
    }
    let packet = xmp_packet(json);
    // VP8X first; then everything but our old XMP; the new XMP after the image data and EXIF, which is
    // where the container spec orders it (unknown chunks may follow).
    let (vp8x, rest): (Vec<u8>, &[Chunk<'_>]) = if &list[0].fourcc == b"VP8X" {
        let mut header = list[0].data.to_vec();
        if header.len() < 10 {
            return Err(MetadataError::Malformed("VP8X chunk shorter than 10 bytes".into()));
        }
        header[0] |= VP8X_XMP;
        (header, &list[1..])
    } else {
        let (width, height, alpha) = simple_canvas(&list[0])?;
        if width == 0 || height == 0 {
            return Err(MetadataError::Malformed("WebP canvas of zero size".into()));
        }
        (vp8x_payload(VP8X_XMP | if alpha { VP8X_ALPHA } else { 0 }, width, height), &list[..])
    };
    let kept: Vec<&Chunk<'_>> = rest.iter().filter(|c| !ours(c)).collect();
    let xmp_at = kept
        .iter()
        .rposition(|c| matches!(&c.fourcc, b"VP8 " | b"VP8L" | b"ALPH" | b"ANMF" | b"EXIF"))
        .map(|i| i + 1)
        .unwrap_or(kept.len());
    let mut body = Vec::with_capacity(webp.len() + packet.len() + 32);
    body.extend_from_slice(b"WEBP");
    push_chunk(&mut body, b"VP8X", &vp8x);
    for (i, chunk) in kept.iter().enumerate() {
        if i == xmp_at {
            push_chunk(&mut body, b"XMP ", packet.as_bytes());
        }
        push_chunk(&mut body, &chunk.fourcc, chunk.data);
    }
    if xmp_at == kept.len() {
        push_chunk(&mut body, b"XMP ", packet.as_bytes());
    }
    let riff_size = u32::try_from(body.len()).map_err(|_| MetadataError::Malformed("WebP over 4 GiB".into()))?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff_size.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lossless_webp(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let image = image::RgbaImage::from_fn(width, height, |x, y| image::Rgba([x as u8 * 20, y as u8 * 30, 5, 200]));
        image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::WebP).unwrap();
        bytes
    }

    #[test]
    fn a_simple_lossless_file_becomes_extended_with_the_canvas_size_and_pixels_kept() {
        let webp = lossless_webp(13, 7);
        assert_eq!(&chunks(&webp).unwrap()[0].fourcc, b"VP8L");
        let once = with_xmp(&webp, "{\"a\":1}").unwrap();
        let twice = with_xmp(&once, "{\"a\":2 & <b>}").unwrap();
        let list = chunks(&twice).unwrap();
        let kinds: Vec<&[u8; 4]> = list.iter().map(|c| &c.fourcc).collect();
        assert_eq!(kinds, [b"VP8X", b"VP8L", b"XMP "]);
        let v = list[0].data;
        assert_eq!(v[0], VP8X_XMP | VP8X_ALPHA);
        assert_eq!(u32::from_le_bytes([v[4], v[5], v[6], 0]) + 1, 13);
        assert_eq!(u32::from_le_bytes([v[7], v[8], v[9], 0]) + 1, 7);
        assert!(String::from_utf8_lossy(list[2].data).contains("<heie:data>{\"a\":2 &amp; &lt;b&gt;}</heie:data>"));
        assert_eq!(list[1].data, chunks(&webp).unwrap()[0].data, "bitstream untouched");
        let riff = u32::from_le_bytes(twice[4..8].try_into().unwrap()) as usize;
        assert_eq!(riff + 8, twice.len());
        assert_eq!(image::load_from_memory(&twice).unwrap().to_rgba8(), image::load_from_memory(&webp).unwrap().to_rgba8());
    }

    #[test]
    fn a_lossy_header_gives_its_canvas() {
        // Key frame tag, start code, 640 × 480 (scale bits set, which must be masked off).
        let data = [0x50, 0x01, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x42, 0xE0, 0x41, 0, 0];
        let chunk = Chunk { fourcc: *b"VP8 ", data: &data };
        assert_eq!(simple_canvas(&chunk).unwrap(), (640, 480, false));
    }

    #[test]
    fn foreign_xmp_and_broken_files_are_refused() {
        let webp = lossless_webp(4, 4);
        let list = chunks(&webp).unwrap();
        let mut body = b"WEBP".to_vec();
        push_chunk(&mut body, b"VP8X", &vp8x_payload(VP8X_XMP, 4, 4));
        push_chunk(&mut body, b"VP8L", list[0].data);
        push_chunk(&mut body, b"XMP ", b"<x:xmpmeta>someone else's</x:xmpmeta>");
        let mut foreign = b"RIFF".to_vec();
        foreign.extend_from_slice(&(body.len() as u32).to_le_bytes());
        foreign.extend_from_slice(&body);
        assert!(matches!(with_xmp(&foreign, "{}"), Err(MetadataError::ForeignXmp)));
        assert!(with_xmp(&webp[..webp.len() - 3], "{}").is_err(), "shorter than RIFF says");
        assert!(with_xmp(b"RIFF\x04\x00\x00\x00WAVE", "{}").is_err());
    }
}

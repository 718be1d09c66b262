//! PNG: the record goes into an uncompressed `iTXt` chunk placed before the first `IDAT`, so readers
//! that stop at the image data (Pillow's `Image.open(...).text`, exiftool, image browsers) see it.
//! Every other chunk is copied byte for byte; an earlier `heie` text chunk (tEXt, zTXt or iTXt, before
//! or after the image data) is dropped so a file never carries two answers.

use super::MetadataError;

pub const SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

/// One chunk of a PNG: `raw` is the whole chunk (length, type, data, CRC) as found in the file.
struct Chunk<'a> {
    kind: [u8; 4],
    data: &'a [u8],
    raw: &'a [u8],
}

/// Splits a PNG into its chunks up to and including IEND, plus whatever trails IEND (kept as is).
fn chunks(png: &[u8]) -> Result<(Vec<Chunk<'_>>, &[u8]), MetadataError> {
    if !png.starts_with(&SIGNATURE) {
        return Err(MetadataError::Malformed("no PNG signature".into()));
    }
    let mut pos = SIGNATURE.len();
    let mut list = Vec::new();
    loop {
        let header = png.get(pos..pos + 8).ok_or_else(|| MetadataError::Malformed("PNG ends before IEND".into()))?;
        let len = u32::from_be_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = header[4..8].try_into().expect("4 bytes");
        let end = pos
            .checked_add(12)
            .and_then(|n| n.checked_add(len))
            .filter(|&end| end <= png.len())
            .ok_or_else(|| MetadataError::Malformed(format!("PNG chunk {} runs past the end of the file", String::from_utf8_lossy(&kind))))?;
        list.push(Chunk { kind, data: &png[pos + 8..pos + 8 + len], raw: &png[pos..end] });
        pos = end;
        if &kind == b"IEND" {
            return Ok((list, &png[pos..]));
        }
    }
}

/// Whether a tEXt, zTXt or iTXt chunk carries `keyword` (all three start with `keyword\0`).
fn is_text_chunk_with_keyword(chunk: &Chunk<'_>, keyword: &str) -> bool {
    matches!(&chunk.kind, b"tEXt" | b"zTXt" | b"iTXt")
        && chunk.data.len() > keyword.len()
        && &chunk.data[..keyword.len()] == keyword.as_bytes()
        && chunk.data[keyword.len()] == 0
}

/// An uncompressed iTXt chunk: keyword, NUL, compression flag 0, method 0, empty language tag, NUL,
/// empty translated keyword, NUL, then the UTF-8 text.
fn itxt_chunk(keyword: &str, text: &str) -> Vec<u8> {
    let mut data = Vec::with_capacity(keyword.len() + 5 + text.len());
    data.extend_from_slice(keyword.as_bytes());
    data.extend_from_slice(&[0, 0, 0, 0, 0]);
    data.extend_from_slice(text.as_bytes());
    let mut chunk = Vec::with_capacity(data.len() + 12);
    chunk.extend_from_slice(&(data.len() as u32).to_be_bytes());
    chunk.extend_from_slice(b"iTXt");
    chunk.extend_from_slice(&data);
    chunk.extend_from_slice(&crc32(&chunk[4..]).to_be_bytes());
    chunk
}

/// The PNG with `text` under `keyword` in an iTXt chunk before the first IDAT.
pub fn with_text(png: &[u8], keyword: &str, text: &str) -> Result<Vec<u8>, MetadataError> {
    let (list, trailer) = chunks(png)?;
    let new_chunk = itxt_chunk(keyword, text);
    let mut out = Vec::with_capacity(png.len() + new_chunk.len());
    out.extend_from_slice(&SIGNATURE);
    let mut inserted = false;
    for chunk in &list {
        if is_text_chunk_with_keyword(chunk, keyword) {
            continue;
        }
        if &chunk.kind == b"IDAT" && !inserted {
            out.extend_from_slice(&new_chunk);
            inserted = true;
        }
        out.extend_from_slice(chunk.raw);
    }
    if !inserted {
        return Err(MetadataError::Malformed("PNG has no IDAT chunk".into()));
    }
    out.extend_from_slice(trailer);
    Ok(out)
}

/// The PNG CRC (ISO 3309 / ITU-T V.42, reflected polynomial 0xEDB88320) over chunk type and data.
/// Bitwise rather than table-driven: a metadata chunk is a few hundred bytes.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
        image.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
        bytes
    }

    #[test]
    fn crc_matches_the_known_iend_value() {
        // Every PNG ends with IEND's CRC AE 42 60 82.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn the_chunk_goes_before_idat_and_replaces_an_earlier_one() {
        let png = png_of(9, 5);
        let once = with_text(&png, "heie", "{\"a\":1}").unwrap();
        let twice = with_text(&once, "heie", "{\"a\":2}").unwrap();
        let (list, _) = chunks(&twice).unwrap();
        let kinds: Vec<&[u8]> = list.iter().map(|c| &c.kind[..]).collect();
        let itxt = kinds.iter().position(|k| *k == b"iTXt").unwrap();
        let idat = kinds.iter().position(|k| *k == b"IDAT").unwrap();
        assert!(itxt < idat, "{kinds:?}");
        assert_eq!(kinds.iter().filter(|k| **k == b"iTXt").count(), 1);
        assert!(list[itxt].data.ends_with(b"{\"a\":2}"));
        // Removing the chunk gives back the original file byte for byte.
        let mut without = SIGNATURE.to_vec();
        for c in list.iter().filter(|c| &c.kind != b"iTXt") {
            without.extend_from_slice(c.raw);
        }
        assert_eq!(without, png);
        let decoded = image::load_from_memory(&twice).unwrap().to_rgb8();
        assert_eq!(decoded, image::load_from_memory(&png).unwrap().to_rgb8());
    }

    #[test]
    fn broken_pngs_are_refused() {
        let png = png_of(4, 4);
        assert!(with_text(&png[..png.len() - 6], "heie", "x").is_err(), "cut inside IEND");
        assert!(with_text(b"GIF89a....", "heie", "x").is_err());
    }
}

//! Images are judged as people see them: the EXIF orientation (all eight values, in JPEG, PNG and
//! WebP files) turns the decoded pixels and swaps the reported size for quarter turns, so a phone
//! photo stored sideways is judged upright and its heatmap lies over the picture a viewer shows.
//! The pixel mapping here is written from the EXIF specification, independently of the decoder; the
//! process test has Pillow write the files and `heie eval` judge them.

mod common;

use std::io::Cursor;
use std::process::Command;

use common::{heie_bin, model};
use heie_server::pipeline::image_input::{decode_image, probe};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::codecs::webp::WebPEncoder;
use image::{ExtendedColorType, ImageEncoder, Rgb, RgbImage};

const MAX_PIXELS: u64 = 4_000_000;

/// A minimal little-endian TIFF block with one IFD entry: Orientation (0x0112, SHORT) = `value`.
fn exif_orientation(value: u16) -> Vec<u8> {
    let mut b = b"II\x2a\x00".to_vec();
    b.extend_from_slice(&8u32.to_le_bytes()); // the IFD follows the header
    b.extend_from_slice(&1u16.to_le_bytes()); // one entry
    b.extend_from_slice(&0x0112u16.to_le_bytes());
    b.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    b.extend_from_slice(&1u32.to_le_bytes());
    b.extend_from_slice(&value.to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    b
}

/// Every stored pixel a different colour, so any misplaced pixel is seen.
fn stored(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| Rgb([(x * 37 % 256) as u8, (y * 53 % 256) as u8, ((x + 3 * y) * 11 % 256) as u8]))
}

/// The picture a viewer shows for EXIF orientation `o` (EXIF 2.3, tag 0x0112): D(x, y) = S(…).
fn shown(s: &RgbImage, o: u16) -> RgbImage {
    let (w, h) = s.dimensions();
    let quarter = matches!(o, 5..=8);
    let (dw, dh) = if quarter { (h, w) } else { (w, h) };
    RgbImage::from_fn(dw, dh, |x, y| {
        let (sx, sy) = match o {
            1 => (x, y),
            2 => (w - 1 - x, y),         // mirrored left-right
            3 => (w - 1 - x, h - 1 - y), // turned half-way
            4 => (x, h - 1 - y),         // mirrored top-bottom
            5 => (y, x),                 // transposed
            6 => (y, h - 1 - x),         // stored turned 90° anticlockwise: shown turned clockwise
            7 => (w - 1 - y, h - 1 - x), // transversed
            8 => (w - 1 - y, x),         // stored turned 90° clockwise
            _ => unreachable!(),
        };
        *s.get_pixel(sx, sy)
    })
}

fn encode(format: &str, img: &RgbImage, orientation: u16) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let mut out = Cursor::new(Vec::new());
    let exif = exif_orientation(orientation);
    match format {
        "png" => {
            let mut e = PngEncoder::new(&mut out);
            e.set_exif_metadata(exif).unwrap();
            e.write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8).unwrap();
        }
        "webp" => {
            let mut e = WebPEncoder::new_lossless(&mut out);
            e.set_exif_metadata(exif).unwrap();
            e.write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8).unwrap();
        }
        _ => {
            let mut e = JpegEncoder::new_with_quality(&mut out, 95);
            e.set_exif_metadata(exif).unwrap();
            e.write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8).unwrap();
        }
    }
    out.into_inner()
}

#[test]
fn lossless_files_decode_to_the_picture_a_viewer_shows_for_all_eight_orientations() {
    let s = stored(7, 4);
    for format in ["png", "webp"] {
        for o in 1..=8u16 {
            let bytes = encode(format, &s, o);
            let want = shown(&s, o);
            assert_eq!(probe(&bytes, MAX_PIXELS).unwrap(), want.dimensions(), "{format} orientation {o}: reported size");
            let got = decode_image(&bytes, MAX_PIXELS).unwrap();
            assert!(got == want, "{format} orientation {o}: pixels are not where a viewer shows them");
        }
    }
}

#[test]
fn a_jpeg_stored_sideways_is_judged_upright() {
    // 400×200 stored, with a bright block in its stored top-left corner; shown 200×400 for 6 and 8.
    let mut s = RgbImage::from_pixel(400, 200, Rgb([20, 20, 20]));
    for y in 0..50 {
        for x in 0..100 {
            s.put_pixel(x, y, Rgb([250, 250, 250]));
        }
    }
    for o in 1..=8u16 {
        let bytes = encode("jpeg", &s, o);
        let want = shown(&s, o);
        assert_eq!(probe(&bytes, MAX_PIXELS).unwrap(), want.dimensions(), "orientation {o}");
        let got = decode_image(&bytes, MAX_PIXELS).unwrap();
        assert_eq!(got.dimensions(), want.dimensions(), "orientation {o}");
        // Lossy: compare the mean brightness of each quadrant, which tells where the block went.
        let quadrants = |img: &RgbImage| {
            let (w, h) = img.dimensions();
            let mut q = [0u64; 4];
            for (x, y, p) in img.enumerate_pixels() {
                q[(usize::from(x >= w / 2)) + 2 * usize::from(y >= h / 2)] += u64::from(p[0]);
            }
            q.map(|v| v * 4 / u64::from(w * h))
        };
        let (g, w) = (quadrants(&got), quadrants(&want));
        for k in 0..4 {
            assert!(g[k].abs_diff(w[k]) < 12, "orientation {o}: quadrant brightness {g:?}, a viewer shows {w:?}");
        }
    }
}

#[test]
fn no_or_broken_exif_leaves_the_image_as_stored() {
    let s = stored(5, 3);
    let mut out = Cursor::new(Vec::new());
    PngEncoder::new(&mut out).write_image(s.as_raw(), 5, 3, ExtendedColorType::Rgb8).unwrap();
    assert_eq!(decode_image(out.get_ref(), MAX_PIXELS).unwrap(), s, "no EXIF");
    // An out-of-range orientation, and a block that is not TIFF at all: viewers ignore both.
    for exif in [exif_orientation(9), b"not a tiff block".to_vec()] {
        let mut out = Cursor::new(Vec::new());
        let mut e = PngEncoder::new(&mut out);
        e.set_exif_metadata(exif).unwrap();
        e.write_image(s.as_raw(), 5, 3, ExtendedColorType::Rgb8).unwrap();
        assert_eq!(decode_image(out.get_ref(), MAX_PIXELS).unwrap(), s);
        assert_eq!(probe(out.get_ref(), MAX_PIXELS).unwrap(), (5, 3));
    }
}

/// Pillow writes a 400×200 JPEG with Orientation 6 (how phones store a portrait photo) and the same
/// pixels again with 1; `heie eval` must judge the first as 200×400: its heatmap and overlay have the
/// size a viewer shows, and its boxes lie inside that frame.
#[test]
fn heie_eval_judges_a_phone_photo_the_way_it_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys
from PIL import Image
d = sys.argv[1]
img = Image.new("RGB", (400, 200))
img.putdata([((x * 3) % 256, (y * 5) % 256, (x * y) % 256) for y in range(200) for x in range(400)])
for o in (1, 6):
    exif = Image.Exif(); exif[0x0112] = o
    img.save(f"{d}/o{o}.jpg", quality=90, exif=exif.tobytes())
"#;
    let made = Command::new("python3").args(["-c", script, dir.path().to_str().unwrap()]).output().expect("python3 runs");
    assert!(made.status.success(), "Pillow is needed (installed by .ci/setup): {}", String::from_utf8_lossy(&made.stderr));
    let out = dir.path().join("out");
    let run = Command::new(heie_bin())
        .arg("eval")
        .args([dir.path().join("o1.jpg"), dir.path().join("o6.jpg")])
        .args(["--model", model("tiny-llm.gguf").to_str().unwrap(), "--mmproj", model("tiny-mmproj.gguf").to_str().unwrap()])
        .args(["--threads", "1", "--n-gpu-layers", "0", "--max-tokens", "8", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    for (name, size) in [("o1", (400, 200)), ("o6", (200, 400))] {
        for kind in ["heatmap", "overlay"] {
            let file = out.join(format!("{name}.{kind}.png"));
            assert_eq!(image::image_dimensions(&file).unwrap(), size, "{}", file.display());
        }
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(format!("{name}.json"))).unwrap()).unwrap();
        let tiling = &json["tiling"];
        assert_eq!((tiling["original_width"].as_u64(), tiling["original_height"].as_u64()), (Some(size.0.into()), Some(size.1.into())), "{name}: {tiling}");
    }
}

//! `heie eval --write-metadata` on real files: PNG, JPEG and WebP (lossy and lossless) made by Pillow,
//! judged by the real engine on the fixture model; the `heie` record is read back with Pillow, the
//! decoded pixels are compared with the originals', and a second run replaces the record instead of
//! adding one. Needs python3 with Pillow (installed by .ci/setup).

mod common;

use std::path::Path;
use std::process::Command;

use common::{heie_bin, model};

/// Makes the images with Pillow: a PNG with a foreign text chunk, a JPEG with an Exif segment and a
/// comment of its own, a lossy (VP8) and a lossless (VP8L, with alpha) WebP.
const MAKE_IMAGES: &str = r#"
import sys
from PIL import Image, PngImagePlugin
d = sys.argv[1]
img = Image.new("RGB", (96, 72))
img.putdata([((x * 3) % 256, (y * 5) % 256, (x * y) % 256) for y in range(72) for x in range(96)])
info = PngImagePlugin.PngInfo(); info.add_text("Software", "a painter")
img.save(f"{d}/picture.png", pnginfo=info)
exif = Image.Exif(); exif[0x010F] = "a camera maker"
img.save(f"{d}/photo.jpg", quality=90, exif=exif.tobytes(), comment=b"shot at noon")
img.save(f"{d}/lossy.webp", quality=80)
rgba = img.convert("RGBA"); rgba.putalpha(Image.linear_gradient("L").resize((96, 72)))
rgba.save(f"{d}/lossless.webp", lossless=True)
"#;

/// Prints, per file, the decoded pixels' hash, mode and the `heie` record Pillow reads (or null).
const READ_BACK: &str = r#"
import hashlib, html, json, re, sys
from PIL import Image
out = {}
for path in sys.argv[1:]:
    im = Image.open(path)
    record = None
    if im.format == "PNG":
        record = im.text.get("heie")
    elif im.format == "JPEG":
        # info["comment"] holds only the last COM segment; the file may have its own comment too.
        ours = [s for m, s in im.applist if m == "COM" and s.startswith(b"heie:")]
        record = ours[0][5:].decode() if ours else None
    elif im.format == "WEBP":
        xmp = im.info.get("xmp", b"")
        xmp = xmp.decode() if isinstance(xmp, bytes) else xmp
        m = re.search(r"<heie:data>(.*?)</heie:data>", xmp, re.S)
        record = html.unescape(m.group(1)) if m else None
    im.load()
    out[path.rsplit("/", 1)[-1]] = {
        "format": im.format, "mode": im.mode, "size": list(im.size),
        "pixels": hashlib.sha256(im.tobytes()).hexdigest(),
        "record": json.loads(record) if record else None,
        "png_software": getattr(im, "text", {}).get("Software") if im.format == "PNG" else None,
        "jpeg_exif_make": im.getexif().get(0x010F) if im.format == "JPEG" else None,
    }
print(json.dumps(out))
"#;

const FILES: [&str; 4] = ["picture.png", "photo.jpg", "lossy.webp", "lossless.webp"];

fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().expect("python3 runs");
    assert!(out.status.success(), "python failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn read_back(dir: &Path) -> serde_json::Value {
    let paths: Vec<_> = FILES.iter().map(|f| dir.join(f)).collect();
    let refs: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
    serde_json::from_str(&python(READ_BACK, &refs)).unwrap()
}

fn eval_with_metadata(dir: &Path) -> (String, String) {
    let out = Command::new(heie_bin())
        .arg("eval")
        .args(FILES.iter().map(|f| dir.join(f)))
        .args(["--model", model("tiny-llm.gguf").to_str().unwrap(), "--mmproj", model("tiny-mmproj.gguf").to_str().unwrap()])
        .args(["--threads", "1", "--out", dir.join("out").to_str().unwrap()])
        // Through the variables, to exercise them on the real binary too.
        .env("HEIE_EVAL_MAX_TOKENS", "6")
        .env("HEIE_EVAL_WRITE_METADATA", "1")
        .env("HEIE_LOG", "error")
        .output()
        .expect("heie runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "heie eval failed: {stderr}\n{stdout}");
    (stdout, stderr)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

#[test]
fn scores_are_written_into_png_jpeg_and_webp_without_touching_pixels() {
    let dir = tempfile::tempdir().unwrap();
    python(MAKE_IMAGES, &[dir.path()]);
    let before = read_back(dir.path());
    for f in FILES {
        assert!(before[f]["record"].is_null(), "{f} starts without a record");
    }
    assert_eq!(read_format_chunk(&dir.path().join("lossy.webp")), *b"VP8 ", "Pillow wrote a simple lossy WebP");
    assert_eq!(read_format_chunk(&dir.path().join("lossless.webp")), *b"VP8L");

    let (stdout, _) = eval_with_metadata(dir.path());
    // The summary line is for people: no Rust debug formatting.
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("score ")).collect();
    assert_eq!(lines.len(), FILES.len(), "{stdout}");
    for line in &lines {
        assert!(line.contains("(zero-shot) · "), "{line}");
        assert!(!line.contains("Some(") && !line.contains("ZeroShot") && !line.contains("Length"), "{line}");
        assert!(line.contains("and the score into"), "{line}");
    }

    let after = read_back(dir.path());
    for f in FILES {
        let (b, a) = (&before[f], &after[f]);
        assert_eq!((&a["format"], &a["mode"], &a["size"]), (&b["format"], &b["mode"], &b["size"]), "{f}");
        assert_eq!(a["pixels"], b["pixels"], "{f}: decoded pixels changed");
        let record = &a["record"];
        assert_eq!(record["version"], 1, "{f}: {record}");
        assert_eq!(record["mode"], "zero_shot", "{f}: {record}");
        let score = record["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{f}: {record}");
        let summary = record["summary"].as_str().unwrap();
        assert!(summary.starts_with("score ") && !summary.contains('\n'), "{f}: {summary:?}");
        assert_eq!(record.as_object().unwrap().len(), 4, "{f}: exactly score, mode, summary, version");
        // The same score as the JSON report beside the heatmap.
        let stem = f.split('.').next().unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("out").join(format!("{stem}.json"))).unwrap()).unwrap();
        assert!((report["score"].as_f64().unwrap() - score).abs() < 1e-4, "{f}: {score} vs {}", report["score"]);
        // One summary line, computed once by the pipeline: the report and the metadata carry the same.
        assert_eq!(report["summary"].as_str(), Some(summary), "{f}");
    }
    assert_eq!(after["picture.png"]["png_software"], "a painter", "other PNG text kept");
    assert_eq!(after["photo.jpg"]["jpeg_exif_make"], "a camera maker", "Exif kept");
    let jpeg = std::fs::read(dir.path().join("photo.jpg")).unwrap();
    assert_eq!(count(&jpeg, b"shot at noon"), 1, "the JPEG's own comment kept");

    // A second run replaces the record: exactly one per file.
    eval_with_metadata(dir.path());
    let needles: [(&str, &[u8]); 4] =
        [("picture.png", b"iTXtheie\0"), ("photo.jpg", b"heie:{"), ("lossy.webp", b"<heie:data>"), ("lossless.webp", b"<heie:data>")];
    for (f, needle) in needles {
        assert_eq!(count(&std::fs::read(dir.path().join(f)).unwrap(), needle), 1, "{f}");
    }
    let again = read_back(dir.path());
    for f in FILES {
        assert_eq!(again[f]["pixels"], before[f]["pixels"], "{f}");
        assert_eq!(again[f]["record"], after[f]["record"], "{f}: greedy decoding gives the same record");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// The fourcc of a WebP's first chunk.
fn read_format_chunk(path: &Path) -> [u8; 4] {
    std::fs::read(path).unwrap()[12..16].try_into().unwrap()
}

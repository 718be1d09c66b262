//! Scores where images live: `heie eval --write-metadata` writes the judgement into the image file
//! itself, under the key `heie`, as JSON `{"mode", "score", "summary", "version": 1}`, without touching
//! the pixels. One byte-level writer per format (`png`, `jpeg`, `webp`); this file picks the writer from
//! the file's magic bytes and replaces the file atomically. `heie-score --write-metadata` (Python)
//! writes exactly the same layout; see README.md in this folder.

pub mod jpeg;
pub mod png;
pub mod webp;

use std::io::Write as _;
use std::path::Path;

/// The key (PNG iTXt keyword, JPEG comment prefix before `:`, XMP element prefix).
pub const KEY: &str = "heie";
/// The version of the JSON layout.
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("not a PNG, JPEG or WebP file (metadata is written only into those)")]
    UnsupportedFormat,
    #[error("malformed image file: {0}")]
    Malformed(String),
    #[error("the WebP already has XMP metadata from another program; it is left as is and no score was written")]
    ForeignXmp,
    #[error("the metadata is {bytes} bytes, over the format's limit of {limit}")]
    TooLong { bytes: usize, limit: usize },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Which producer of a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreMode {
    Trained,
    ZeroShot,
}

impl ScoreMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ScoreMode::Trained => "trained",
            ScoreMode::ZeroShot => "zero_shot",
        }
    }
}

/// What is written into an image.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRecord {
    pub score: f32,
    pub mode: ScoreMode,
    /// One line (newlines are replaced by spaces when written).
    pub summary: String,
}

impl ScoreRecord {
    /// The JSON text: compact, one line, keys in the fixed order score, mode, summary, version (the
    /// Python writer's order, so both give the same text). The score is the f32's shortest decimal
    /// (0.254, not 0.25400001525878906), as Python's `str(numpy.float32(x))`.
    pub fn to_json(&self) -> String {
        let summary = self.summary.split_whitespace().collect::<Vec<_>>().join(" ");
        format!(
            "{{\"score\":{},\"mode\":{},\"summary\":{},\"version\":{VERSION}}}",
            serde_json::to_string(&self.score).expect("an f32 serialises"),
            serde_json::to_string(self.mode.as_str()).expect("a str serialises"),
            serde_json::to_string(&summary).expect("a String serialises"),
        )
    }
}

/// The container formats that can carry the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageContainer {
    Png,
    Jpeg,
    WebP,
}

impl ImageContainer {
    /// From the magic bytes (never the file name, which may lie).
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(&png::SIGNATURE) {
            Some(Self::Png)
        } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
            Some(Self::WebP)
        } else {
            None
        }
    }
}

/// The file's bytes with `record` embedded (an earlier `heie` record replaced).
pub fn embed(bytes: &[u8], record: &ScoreRecord) -> Result<Vec<u8>, MetadataError> {
    let json = record.to_json();
    match ImageContainer::sniff(bytes).ok_or(MetadataError::UnsupportedFormat)? {
        ImageContainer::Png => png::with_text(bytes, KEY, &json),
        ImageContainer::Jpeg => jpeg::with_comment(bytes, &format!("{KEY}:"), &json),
        ImageContainer::WebP => webp::with_xmp(bytes, &json),
    }
}

/// Writes `record` into the image at `path`: read, embed, write a temporary file beside it, rename over
/// the original (atomic on one file system, so a crash leaves the old or the new file, never half of one).
pub fn write_into_file(path: &Path, record: &ScoreRecord) -> Result<(), MetadataError> {
    let bytes = std::fs::read(path)?;
    let updated = embed(&bytes, record)?;
    replace_atomically(path, &updated)?;
    Ok(())
}

fn replace_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.heie-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&temp)?;
        file.write_all(bytes)?;
        // Keep the original's permission bits (a fresh file would get the umask's).
        file.set_permissions(std::fs::metadata(path)?.permissions())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_layout_is_fixed() {
        let record = ScoreRecord { score: 0.254, mode: ScoreMode::ZeroShot, summary: "two\nlines  here".into() };
        let value: serde_json::Value = serde_json::from_str(&record.to_json()).unwrap();
        assert_eq!(value, serde_json::json!({"score": 0.254, "mode": "zero_shot", "summary": "two lines here", "version": 1}));
        assert!(!record.to_json().contains('\n'));
        assert_eq!(record.to_json(), r#"{"score":0.254,"mode":"zero_shot","summary":"two lines here","version":1}"#);
    }

    #[test]
    fn other_formats_are_refused_and_the_file_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image.gif");
        std::fs::write(&path, b"GIF89a\x01\x00\x01\x00").unwrap();
        let record = ScoreRecord { score: 0.5, mode: ScoreMode::Trained, summary: String::new() };
        let e = write_into_file(&path, &record).unwrap_err();
        assert!(e.to_string().contains("not a PNG, JPEG or WebP"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"GIF89a\x01\x00\x01\x00");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}

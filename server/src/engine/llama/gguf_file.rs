//! A GGUF file read and checked in Rust before llama.cpp sees it.
//!
//! llama.cpp trusts the layout it reads: a file cut short or overwritten can make it read past the
//! end of a mapping or trip an assertion that aborts the process. So every `--model`/`--mmproj` goes
//! through [`check`] first: the header, every metadata entry and every tensor's description are parsed
//! here, each count and length bounded by the bytes the file really has, and each tensor's data must
//! lie inside the file. Only a file that passes reaches llama.cpp. The metadata values read on the way
//! serve the engine's own questions (the vision tower's geometry) without a second, C-side parse.

use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use super::backend::ggml_type_layout;
use crate::engine::EngineError;

/// The four bytes every GGUF file starts with.
const MAGIC: &[u8; 4] = b"GGUF";
/// Tensor data is aligned to this many bytes unless `general.alignment` says otherwise.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Smallest encodings, used to refuse counts the rest of the file could not possibly hold.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 4 + 8;

/// Why a file is not a GGUF file llama.cpp can be given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file (it does not start with \"GGUF\")")]
    NotGguf,
    #[error("GGUF version {0} is not supported (2 and 3 are)")]
    UnsupportedVersion(u32),
    #[error("the file ends inside the {section} (at byte {at} of {len}): truncated")]
    Truncated { section: &'static str, at: u64, len: u64 },
    #[error("{section}: {reason}")]
    Invalid { section: &'static str, reason: String },
    #[error("tensor {name:?}: its data ends at byte {end} but the file has {len}: truncated")]
    TensorOutsideFile { name: String, end: u64, len: u64 },
    #[error("cannot read the file: {0}")]
    Io(String),
}

/// One metadata value. Arrays keep their element type and length only: nothing the engine asks
/// about is an array, and a vocabulary's worth of strings need not be kept.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
    Bool(bool),
    String(String),
    Array { element_type: u32, len: u64 },
}

/// What a tensor description says.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
    pub n_bytes: u64,
}

/// A GGUF file whose layout has been checked.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    metadata: BTreeMap<String, (u32, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    /// Where the data section starts.
    pub data_offset: u64,
    pub file_len: u64,
}

/// GGUF value type ids.
mod value_type {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

impl GgufFile {
    /// A `u32` metadata value (GGUF type UINT32 only, as llama.cpp reads it).
    pub fn u32(&self, key: &str) -> Option<u32> {
        match self.metadata.get(key) {
            Some((value_type::U32, MetaValue::Unsigned(v))) => u32::try_from(*v).ok(),
            _ => None,
        }
    }

    /// A string metadata value.
    pub fn string(&self, key: &str) -> Option<String> {
        match self.metadata.get(key) {
            Some((_, MetaValue::String(s))) => Some(s.clone()),
            _ => None,
        }
    }

    /// Any metadata value.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key).map(|(_, v)| v)
    }
}

/// Checks a GGUF file on disk; the error is one line that names the file.
pub fn check(path: &Path, what: &str) -> Result<GgufFile, EngineError> {
    let fail = |e: GgufError| EngineError::Load(format!("{what} {} is not a usable GGUF file: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(GgufError::Io(e.to_string())))?;
    let len = file.metadata().map_err(|e| fail(GgufError::Io(e.to_string())))?.len();
    parse(BufReader::new(file), len).map_err(fail)
}

/// Parses and checks a GGUF file of `len` bytes from `source`.
pub fn parse<R: Read + Seek>(source: R, len: u64) -> Result<GgufFile, GgufError> {
    let mut r = Reader { inner: source, pos: 0, len, section: "header" };
    let mut magic = [0u8; 4];
    r.bytes(&mut magic)?;
    if &magic != MAGIC {
        return Err(GgufError::NotGguf);
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion(version));
    }
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    r.fits(n_kv, MIN_KV_BYTES, "metadata entries")?;

    r.section = "metadata";
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string()?;
        if key.is_empty() {
            return r.invalid("a metadata key is empty".into());
        }
        let kind = r.u32()?;
        let value = r.value(kind, true)?;
        if metadata.insert(key.clone(), (kind, value)).is_some() {
            return r.invalid(format!("the key {key:?} appears twice"));
        }
    }
    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((value_type::U32, MetaValue::Unsigned(a))) if *a > 0 && a.is_power_of_two() => *a,
        Some(_) => return r.invalid("general.alignment must be a power-of-two u32".into()),
    };

    r.section = "tensor table";
    r.fits(n_tensors, MIN_TENSOR_INFO_BYTES, "tensor descriptions")?;
    let mut tensors = Vec::new();
    let mut names = std::collections::HashSet::new();
    for _ in 0..n_tensors {
        let tensor = r.tensor_info(alignment)?;
        if !names.insert(tensor.name.clone()) {
            return r.invalid(format!("the tensor {:?} appears twice", tensor.name));
        }
        tensors.push(tensor);
    }
    let data_offset = r.pos.div_ceil(alignment).saturating_mul(alignment);
    for t in &tensors {
        let end = data_offset.saturating_add(t.offset).saturating_add(t.n_bytes);
        if end > len {
            return Err(GgufError::TensorOutsideFile { name: t.name.clone(), end, len });
        }
    }
    Ok(GgufFile { version, metadata, tensors, data_offset, file_len: len })
}

/// A position-tracking reader that never reads, skips or allocates past the file's length.
struct Reader<R> {
    inner: R,
    pos: u64,
    len: u64,
    section: &'static str,
}

impl<R: Read + Seek> Reader<R> {
    fn truncated<T>(&self) -> Result<T, GgufError> {
        Err(GgufError::Truncated { section: self.section, at: self.pos, len: self.len })
    }

    fn invalid<T>(&self, reason: String) -> Result<T, GgufError> {
        Err(GgufError::Invalid { section: self.section, reason })
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Refuses a count whose smallest encoding is already longer than the rest of the file.
    fn fits(&self, count: u64, min_bytes: u64, what: &str) -> Result<(), GgufError> {
        if count.saturating_mul(min_bytes) > self.remaining() {
            return self.invalid(format!("{count} {what} cannot fit in the {} bytes left: truncated or corrupt", self.remaining()));
        }
        Ok(())
    }

    fn bytes(&mut self, out: &mut [u8]) -> Result<(), GgufError> {
        if out.len() as u64 > self.remaining() {
            return self.truncated();
        }
        self.inner.read_exact(out).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => GgufError::Truncated { section: self.section, at: self.pos, len: self.len },
            _ => GgufError::Io(e.to_string()),
        })?;
        self.pos += out.len() as u64;
        Ok(())
    }

    fn skip(&mut self, n: u64) -> Result<(), GgufError> {
        if n > self.remaining() {
            return self.truncated();
        }
        let delta = i64::try_from(n).map_err(|_| GgufError::Truncated { section: self.section, at: self.pos, len: self.len })?;
        self.inner.seek(SeekFrom::Current(delta)).map_err(|e| GgufError::Io(e.to_string()))?;
        self.pos += n;
        Ok(())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut b = [0u8; N];
        self.bytes(&mut b)?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length-prefixed string; its length is checked against the file before anything is allocated.
    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.u64()?;
        if n > self.remaining() {
            return self.truncated();
        }
        let mut buf = vec![0u8; n as usize];
        self.bytes(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// One value of type `kind`; arrays are walked (their strings' lengths checked) but not kept.
    fn value(&mut self, kind: u32, allow_array: bool) -> Result<MetaValue, GgufError> {
        use value_type::*;
        Ok(match kind {
            U8 => MetaValue::Unsigned(u64::from(self.array::<1>()?[0])),
            I8 => MetaValue::Signed(i64::from(i8::from_le_bytes(self.array()?))),
            U16 => MetaValue::Unsigned(u64::from(u16::from_le_bytes(self.array()?))),
            I16 => MetaValue::Signed(i64::from(i16::from_le_bytes(self.array()?))),
            U32 => MetaValue::Unsigned(u64::from(self.u32()?)),
            I32 => MetaValue::Signed(i64::from(i32::from_le_bytes(self.array()?))),
            F32 => MetaValue::Float(f64::from(f32::from_le_bytes(self.array()?))),
            BOOL => match self.array::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return self.invalid(format!("a bool holds {b}")),
            },
            STRING => MetaValue::String(self.string()?),
            U64 => MetaValue::Unsigned(self.u64()?),
            I64 => MetaValue::Signed(i64::from_le_bytes(self.array()?)),
            F64 => MetaValue::Float(f64::from_le_bytes(self.array()?)),
            ARRAY if allow_array => {
                let element_type = self.u32()?;
                let len = self.u64()?;
                match element_size(element_type) {
                    Some(size) => {
                        let total = len.checked_mul(size).unwrap_or(u64::MAX);
                        self.skip(total)?;
                    }
                    None if element_type == STRING => {
                        self.fits(len, 8, "array strings")?;
                        for _ in 0..len {
                            let n = self.u64()?;
                            self.skip(n)?;
                        }
                    }
                    None => return self.invalid(format!("an array of value type {element_type} is not supported")),
                }
                MetaValue::Array { element_type, len }
            }
            other => return self.invalid(format!("unknown value type {other}")),
        })
    }

    fn tensor_info(&mut self, alignment: u64) -> Result<TensorInfo, GgufError> {
        let name = self.string()?;
        if name.is_empty() {
            return self.invalid("a tensor has an empty name".into());
        }
        let n_dims = self.u32()?;
        if n_dims > MAX_DIMS {
            return self.invalid(format!("tensor {name:?} has {n_dims} dimensions, more than {MAX_DIMS}"));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64()?);
        }
        let ggml_type = self.u32()?;
        let offset = self.u64()?;
        let Some((block, type_size)) = ggml_type_layout(ggml_type) else {
            return self.invalid(format!("tensor {name:?} has unknown or retired ggml type {ggml_type}"));
        };
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)).filter(|&n| n <= i64::MAX as u64);
        let Some(elements) = elements else {
            return self.invalid(format!("tensor {name:?} has dimensions {dims:?} whose product overflows"));
        };
        let first = dims.first().copied().unwrap_or(1);
        if first % block != 0 {
            return self.invalid(format!("tensor {name:?}: first dimension {first} is not a multiple of its block size {block}"));
        }
        let Some(n_bytes) = (elements / block).checked_mul(type_size) else {
            return self.invalid(format!("tensor {name:?} is too large"));
        };
        if offset % alignment != 0 {
            return self.invalid(format!("tensor {name:?}: offset {offset} is not aligned to {alignment}"));
        }
        Ok(TensorInfo { name, dims, ggml_type, offset, n_bytes })
    }
}

/// Bytes per element of the fixed-size value types.
fn element_size(kind: u32) -> Option<u64> {
    use value_type::*;
    match kind {
        U8 | I8 | BOOL => Some(1),
        U16 | I16 => Some(2),
        U32 | I32 | F32 => Some(4),
        U64 | I64 | F64 => Some(8),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models").join(name);
        std::fs::read(path).unwrap()
    }

    fn parse_bytes(b: &[u8]) -> Result<GgufFile, GgufError> {
        parse(Cursor::new(b), b.len() as u64)
    }

    #[test]
    fn the_fixtures_parse_and_their_metadata_reads() {
        let mmproj = parse_bytes(&fixture("tiny-mmproj.gguf")).unwrap();
        assert_eq!(mmproj.string("clip.projector_type").as_deref(), Some("internvl"));
        assert!(mmproj.u32("clip.vision.image_size").is_some());
        assert!(!mmproj.tensors.is_empty());
        let llm = parse_bytes(&fixture("tiny-llm.gguf")).unwrap();
        assert!(matches!(llm.get("tokenizer.ggml.tokens"), Some(MetaValue::Array { element_type: 8, .. })));
        let last = llm.tensors.iter().map(|t| llm.data_offset + t.offset + t.n_bytes).max().unwrap();
        assert!(last <= llm.file_len);
    }

    #[test]
    fn every_cut_is_refused_with_the_section_it_falls_in() {
        let bytes = fixture("tiny-mmproj.gguf");
        let file = parse_bytes(&bytes).unwrap();
        let data_start = file.data_offset as usize;
        let data_end = file.tensors.iter().map(|t| file.data_offset + t.offset + t.n_bytes).max().unwrap() as usize;
        for cut in [0, 3, 4, 10, 30, 200, data_start / 2, data_start - 1, data_start + 10, data_end - 1] {
            let err = parse_bytes(&bytes[..cut]).unwrap_err();
            assert!(err.to_string().contains("truncated") || err == GgufError::NotGguf || matches!(err, GgufError::Invalid { .. }), "cut {cut}: {err}");
        }
        assert!(matches!(parse_bytes(&bytes[..data_end - 1]).unwrap_err(), GgufError::TensorOutsideFile { .. }));
        assert!(matches!(parse_bytes(&bytes[..20]).unwrap_err(), GgufError::Truncated { section: "header", .. } | GgufError::Invalid { .. }));
    }

    #[test]
    fn absurd_counts_and_lengths_are_refused_without_allocating() {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        assert!(matches!(parse_bytes(&b).unwrap_err(), GgufError::Invalid { section: "header", .. }));
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes()); // key length
        b.extend([0u8; 8]);
        assert!(matches!(parse_bytes(&b).unwrap_err(), GgufError::Truncated { section: "metadata", .. }));
        let mut v1 = b"GGUF".to_vec();
        v1.extend(1u32.to_le_bytes());
        assert_eq!(parse_bytes(&v1).unwrap_err(), GgufError::UnsupportedVersion(1));
    }
}

//! TFRecord files: a sequence of records, each `u64 length (LE) · u32 masked CRC32C of the length ·
//! data · u32 masked CRC32C of the data`. Both checksums are verified; a truncated or corrupted file
//! fails with the record index and byte offset instead of yielding garbage.

use std::io::{self, Read, Write};

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TensorFlow's masking of stored CRCs (so that CRCs of data containing CRCs stay well distributed).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xA282_EAD8)
}

/// A record that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TfRecordError {
    #[error("record {index} at byte {offset}: {source}")]
    Io { index: usize, offset: u64, source: io::Error },
    #[error("record {index} at byte {offset}: the file ends inside the record")]
    Truncated { index: usize, offset: u64 },
    #[error("record {index} at byte {offset}: {what} checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { index: usize, offset: u64, what: &'static str, stored: u32, computed: u32 },
    #[error("record {index} at byte {offset}: length {length} exceeds the {max}-byte limit")]
    TooLarge { index: usize, offset: u64, length: u64, max: u64 },
}

/// Largest record accepted (a RichHF record is about 100 kB; this only stops absurd allocations).
pub const MAX_RECORD_BYTES: u64 = 256 << 20;

/// Reads records one by one. After the first error the iterator ends.
pub struct TfRecordReader<R> {
    inner: R,
    index: usize,
    offset: u64,
    failed: bool,
}

impl<R: Read> TfRecordReader<R> {
    pub fn new(inner: R) -> Self {
        TfRecordReader { inner, index: 0, offset: 0, failed: false }
    }

    fn read_record(&mut self) -> Result<Option<Vec<u8>>, TfRecordError> {
        let (index, offset) = (self.index, self.offset);
        let io_err = |source| TfRecordError::Io { index, offset, source };
        let mut header = [0u8; 12];
        match read_full(&mut self.inner, &mut header).map_err(io_err)? {
            0 => return Ok(None),
            12 => {}
            _ => return Err(TfRecordError::Truncated { index, offset }),
        }
        let len_bytes: [u8; 8] = header[..8].try_into().expect("8 bytes");
        let stored = u32::from_le_bytes(header[8..].try_into().expect("4 bytes"));
        let computed = masked_crc32c(&len_bytes);
        if stored != computed {
            return Err(TfRecordError::Checksum { index, offset, what: "length", stored, computed });
        }
        let length = u64::from_le_bytes(len_bytes);
        if length > MAX_RECORD_BYTES {
            return Err(TfRecordError::TooLarge { index, offset, length, max: MAX_RECORD_BYTES });
        }
        let mut data = vec![0u8; length as usize];
        let mut footer = [0u8; 4];
        if read_full(&mut self.inner, &mut data).map_err(io_err)? != data.len()
            || read_full(&mut self.inner, &mut footer).map_err(io_err)? != 4
        {
            return Err(TfRecordError::Truncated { index, offset });
        }
        let stored = u32::from_le_bytes(footer);
        let computed = masked_crc32c(&data);
        if stored != computed {
            return Err(TfRecordError::Checksum { index, offset, what: "data", stored, computed });
        }
        self.index += 1;
        self.offset += 16 + length;
        Ok(Some(data))
    }
}

impl<R: Read> Iterator for TfRecordReader<R> {
    type Item = Result<Vec<u8>, TfRecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let r = self.read_record().transpose();
        if matches!(r, Some(Err(_))) {
            self.failed = true;
        }
        r
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes records in the same framing (for tests and for converting data sets).
pub struct TfRecordWriter<W> {
    inner: W,
}

impl<W: Write> TfRecordWriter<W> {
    pub fn new(inner: W) -> Self {
        TfRecordWriter { inner }
    }

    pub fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        self.inner.write_all(&len)?;
        self.inner.write_all(&masked_crc32c(&len).to_le_bytes())?;
        self.inner.write_all(data)?;
        self.inner.write_all(&masked_crc32c(data).to_le_bytes())
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

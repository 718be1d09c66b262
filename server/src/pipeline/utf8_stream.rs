//! UTF-8-safe streaming of token bytes.
//!
//! A BPE token can end in the middle of a multi-byte character (emoji and CJK are routinely split
//! across two or more tokens), and a gRPC string must be valid UTF-8. This buffers the few bytes
//! of an unfinished character until the rest arrives, so each streamed chunk is valid text and
//! the concatenation of all chunks equals the lossy decoding of all bytes at once.

/// Incremental UTF-8 decoder for a stream of byte chunks.
#[derive(Debug, Default, Clone)]
pub struct Utf8Stream {
    /// Bytes of a character that has started but not finished (at most 3).
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes and returns the text they complete: everything decodable so far that has not
    /// been returned yet, holding back only an unfinished trailing character. Invalid bytes become
    /// U+FFFD, exactly as `String::from_utf8_lossy` would replace them.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::with_capacity(self.pending.len());
        let mut rest: &[u8] = &self.pending;
        while !rest.is_empty() {
            match std::str::from_utf8(rest) {
                Ok(valid) => {
                    text.push_str(valid);
                    rest = &[];
                }
                Err(error) => {
                    let (valid, after) = rest.split_at(error.valid_up_to());
                    text.push_str(std::str::from_utf8(valid).expect("prefix reported valid"));
                    match error.error_len() {
                        Some(invalid) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[invalid..];
                        }
                        // The tail is a valid start of a character cut short: keep it for later.
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        self.pending.drain(..self.pending.len() - keep);
        text
    }

    /// Ends the stream, returning whatever is still buffered; an unfinished character becomes
    /// U+FFFD, because no more bytes will come to complete it.
    pub fn finish(self) -> String {
        String::from_utf8_lossy(&self.pending).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_byte_emoji_split_across_four_pushes() {
        let bytes = "😀".as_bytes();
        assert_eq!(bytes.len(), 4);
        let mut stream = Utf8Stream::new();
        assert_eq!(stream.push(&bytes[..1]), "");
        assert_eq!(stream.push(&bytes[1..2]), "");
        assert_eq!(stream.push(&bytes[2..3]), "");
        assert_eq!(stream.push(&bytes[3..]), "😀");
        assert_eq!(stream.finish(), "");
    }

    #[test]
    fn two_byte_char_split() {
        let mut stream = Utf8Stream::new();
        assert_eq!(stream.push(b"caf\xC3"), "caf");
        assert_eq!(stream.push(b"\xA9!"), "é!");
    }

    #[test]
    fn invalid_bytes_in_the_middle_become_replacement() {
        let mut stream = Utf8Stream::new();
        assert_eq!(stream.push(b"a\xFFb\x80c"), "a\u{FFFD}b\u{FFFD}c");
        // A character interrupted by an ASCII byte is invalid once the ASCII byte arrives.
        assert_eq!(stream.push(b"\xE2\x82"), "");
        assert_eq!(stream.push(b"A"), "\u{FFFD}A");
    }

    #[test]
    fn finish_flushes_an_unfinished_tail_as_replacement() {
        let mut stream = Utf8Stream::new();
        assert_eq!(stream.push(b"ok\xF0\x9F"), "ok");
        assert_eq!(stream.finish(), "\u{FFFD}");
    }

    #[test]
    fn mixed_text_at_every_split_matches_whole_decoding() {
        let mut bytes = "héllo 😀 wörld — 日本語".as_bytes().to_vec();
        bytes.insert(9, 0xFF);
        let whole = String::from_utf8_lossy(&bytes).into_owned();
        for chunk in 1..=5 {
            let mut stream = Utf8Stream::new();
            let mut out = String::new();
            for piece in bytes.chunks(chunk) {
                out.push_str(&stream.push(piece));
                assert!(stream.pending.len() <= 3);
            }
            out.push_str(&stream.finish());
            assert_eq!(out, whole, "chunk size {chunk}");
        }
    }
}

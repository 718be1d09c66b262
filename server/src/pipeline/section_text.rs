//! The text of one generated section as it streams: UTF-8 assembly, stop strings, and what may be shown.
//!
//! A stop string can begin in one token and end several tokens later, so text that could still turn out
//! to be the start of a stop string is held back until it cannot. When a stop string completes, the
//! tokens that wrote it are counted so the engine can remove them from the context.

use super::utf8_stream::Utf8Stream;

/// What happened after a token was added.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// Text that is now safe to show (possibly empty).
    Text(String),
    /// A stop string completed: show `text` (what preceded it, not yet shown) and remove the last
    /// `rollback` tokens already in the context (the current token is never fed).
    Stop { text: String, rollback: u32 },
}

pub struct SectionText {
    stops: Vec<String>,
    utf8: Utf8Stream,
    /// Everything decoded so far.
    text: String,
    /// How much of `text` has been shown.
    shown: usize,
    /// Offset in `text` where each accepted token's text starts.
    token_starts: Vec<usize>,
}

impl SectionText {
    pub fn new(stops: &[&str]) -> SectionText {
        SectionText {
            stops: stops.iter().map(|s| s.to_string()).collect(),
            utf8: Utf8Stream::new(),
            text: String::new(),
            shown: 0,
            token_starts: Vec::new(),
        }
    }

    /// Adds a sampled token's bytes.
    pub fn push(&mut self, bytes: &[u8]) -> Progress {
        let start = self.text.len();
        self.text.push_str(&self.utf8.push(bytes));
        if let Some(stop_at) = self.earliest_stop() {
            // Tokens that start at or after the stop string are removed; the current one was never fed.
            let rollback = self.token_starts.iter().filter(|&&s| s >= stop_at).count() as u32;
            let text = self.text[self.shown.min(stop_at)..stop_at].to_string();
            self.shown = stop_at;
            self.text.truncate(stop_at);
            return Progress::Stop { text, rollback };
        }
        self.token_starts.push(start);
        let safe = self.text.len() - self.held_back();
        let out = if safe > self.shown { self.text[self.shown..safe].to_string() } else { String::new() };
        self.shown = self.shown.max(safe);
        Progress::Text(out)
    }

    /// Flushes held-back text at the end of the section (no stop string came).
    pub fn finish(&mut self) -> String {
        let utf8 = std::mem::replace(&mut self.utf8, Utf8Stream::new());
        self.text.push_str(&utf8.finish());
        let out = self.text[self.shown..].to_string();
        self.shown = self.text.len();
        out
    }

    /// The section's text so far (complete characters only).
    pub fn text(&self) -> &str {
        &self.text
    }

    fn earliest_stop(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.text.find(s.as_str())).min()
    }

    /// Length of the longest suffix of the text that is a proper prefix of a stop string.
    fn held_back(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            for len in (1..stop.len()).rev() {
                if len <= longest {
                    break;
                }
                if stop.is_char_boundary(len) && self.text.ends_with(&stop[..len]) {
                    longest = len;
                    break;
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(section: &mut SectionText, pieces: &[&str]) -> (String, Option<u32>) {
        let mut shown = String::new();
        for p in pieces {
            match section.push(p.as_bytes()) {
                Progress::Text(t) => shown.push_str(&t),
                Progress::Stop { text, rollback } => {
                    shown.push_str(&text);
                    return (shown, Some(rollback));
                }
            }
        }
        shown.push_str(&section.finish());
        (shown, None)
    }

    #[test]
    fn text_without_stops_streams_whole() {
        let mut s = SectionText::new(&["###"]);
        assert_eq!(feed(&mut s, &["A cat", " on a", " mat."]), ("A cat on a mat.".to_string(), None));
    }

    #[test]
    fn stop_string_across_tokens_is_never_shown_and_rolled_back() {
        let mut s = SectionText::new(&["\n\n", "###"]);
        let mut shown = String::new();
        for p in ["Hands", " are", " fine", "\n", "\n"] {
            match s.push(p.as_bytes()) {
                Progress::Text(t) => shown.push_str(&t),
                Progress::Stop { text, rollback } => {
                    shown.push_str(&text);
                    // the first "\n" token was fed and starts inside the stop string
                    assert_eq!(rollback, 1);
                }
            }
        }
        assert_eq!(shown, "Hands are fine");
        assert_eq!(s.text(), "Hands are fine");
    }

    #[test]
    fn partial_stop_prefix_is_released_when_it_does_not_complete() {
        let mut s = SectionText::new(&["###"]);
        assert_eq!(s.push(b"C# and ##"), Progress::Text("C# and ".into()));
        assert_eq!(s.push(b" more"), Progress::Text("## more".into()));
    }

    #[test]
    fn stop_inside_a_single_token_keeps_the_text_before_it() {
        let mut s = SectionText::new(&["So, the potential"]);
        assert_eq!(
            s.push(b"a hand.\nSo, the potential"),
            Progress::Stop { text: "a hand.\n".into(), rollback: 0 }
        );
    }

    #[test]
    fn multibyte_characters_split_across_tokens_stream_whole() {
        let mut s = SectionText::new(&["###"]);
        let bytes = "héllo 🙂".as_bytes();
        let mut shown = String::new();
        for b in bytes {
            if let Progress::Text(t) = s.push(&[*b]) {
                shown.push_str(&t);
            }
        }
        shown.push_str(&s.finish());
        assert_eq!(shown, "héllo 🙂");
    }
}

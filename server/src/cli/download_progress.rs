//! Progress of a model download as plain lines on stderr, for when nobody watches a terminal: a host
//! that started `heie serve` itself (the ComfyUI pack, the A1111/Forge extension) reads them from the
//! server's log and turns them into its own progress bar. The format is a contract with
//! `heie_client.local_server` (keep them in step):
//!
//! `downloading <file>: <done> of <total> bytes`
//!
//! one line when the download starts (or resumes), one each time another `STEP_PERCENT` of the file
//! has arrived, and one when it is complete.


/// A line per this much of the file: ~50 lines for each file, whatever its size.
const STEP_PERCENT: usize = 2;

/// hf-hub's download progress, written as the lines described in the module doc.
pub struct PlainDownloadLines<W: std::io::Write> {
    out: W,
    file: String,
    total: usize,
    done: usize,
    /// The last reported multiple of `STEP_PERCENT` (None before the first line of this file).
    last_step: Option<usize>,
}

impl PlainDownloadLines<std::io::Stderr> {
    pub fn to_stderr() -> Self {
        Self::new(std::io::stderr())
    }
}

impl<W: std::io::Write> PlainDownloadLines<W> {
    pub fn new(out: W) -> Self {
        Self { out, file: String::new(), total: 0, done: 0, last_step: None }
    }

    fn line(&mut self) {
        // A lost progress line must not fail the download.
        let _ = writeln!(self.out, "downloading {}: {} of {} bytes", self.file, self.done, self.total);
        let _ = self.out.flush();
    }

    fn step(&self) -> usize {
        if self.total == 0 {
            return 100 / STEP_PERCENT;
        }
        (self.done.min(self.total) as u128 * 100 / self.total as u128) as usize / STEP_PERCENT
    }
}

impl<W: std::io::Write> hf_hub::api::Progress for PlainDownloadLines<W> {
    // hf-hub calls init again when it (re)opens the transfer, then update with the bytes already on
    // disk: both start the count from zero.
    fn init(&mut self, size: usize, filename: &str) {
        self.file = filename.to_string();
        self.total = size;
        self.done = 0;
        self.last_step = None;
    }

    fn update(&mut self, size: usize) {
        self.done += size;
        let step = self.step();
        if self.last_step.is_none_or(|last| step > last) {
            self.last_step = Some(step);
            self.line();
        }
    }

    fn finish(&mut self) {
        if self.done < self.total || self.last_step != Some(self.step()) {
            self.line();
        }
        self.last_step = Some(self.step());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hf_hub::api::Progress as _;

    fn lines(progress: &PlainDownloadLines<Vec<u8>>) -> Vec<String> {
        String::from_utf8(progress.out.clone()).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn a_line_at_the_start_each_step_and_the_end() {
        let mut progress = PlainDownloadLines::new(Vec::new());
        progress.init(1000, "model.gguf");
        progress.update(0); // hf-hub reports the bytes already on disk first
        for _ in 0..100 {
            progress.update(10);
        }
        progress.finish();
        let lines = lines(&progress);
        assert_eq!(lines.first().unwrap(), "downloading model.gguf: 0 of 1000 bytes");
        assert_eq!(lines.last().unwrap(), "downloading model.gguf: 1000 of 1000 bytes");
        assert_eq!(lines.len(), 1 + 100 / STEP_PERCENT, "{lines:?}");
    }

    #[test]
    fn an_empty_file_reports_once_complete() {
        let mut progress = PlainDownloadLines::new(Vec::new());
        progress.init(0, "empty.gguf");
        progress.update(0);
        progress.finish();
        assert_eq!(lines(&progress), vec!["downloading empty.gguf: 0 of 0 bytes"]);
    }
}

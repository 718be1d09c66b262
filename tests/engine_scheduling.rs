//! How the engine schedules work between sequences (issue 16): a new image's vision encoding and
//! prefill are done a piece at a time between decode steps, so a stream that is already generating
//! keeps producing tokens while another request's image goes in — on the real llama.cpp with the
//! fixture models, observed through the order of engine callbacks (not through timings).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use heie_server::engine::{
    Sampling, SequenceEnd, SequenceProgram, SequenceStats, Step, TileBitmap, Token, TokenVerdict,
};


/// Feeds a few tokens, then generates until its cap, counting every sampled token.
struct Streamer {
    prompt: Option<Vec<Token>>,
    generated: Arc<AtomicUsize>,
    max_tokens: u32,
    generating: bool,
    done: Sender<SequenceEnd>,
}

impl SequenceProgram for Streamer {
    fn next_step(&mut self) -> Step {
        if let Some(tokens) = self.prompt.take() {
            return Step::Feed { tokens, capture: Vec::new(), logits: false };
        }
        if !self.generating {
            self.generating = true;
            return Step::Generate { max_tokens: self.max_tokens, sampling: Sampling { temperature: 0.0, seed: 0 } };
        }
        Step::Finish
    }
    fn on_token(&mut self, _: Token, _: &[u8]) -> TokenVerdict {
        self.generated.fetch_add(1, Ordering::SeqCst);
        TokenVerdict::Continue
    }
    fn finish(&mut self, end: SequenceEnd, _: &SequenceStats) {
        let _ = self.done.send(end);
    }
}

/// Feeds a few tokens, then an image of several tiles; notes how many tokens the streamer had
/// generated when each tile's features arrived.
struct Imager {
    steps: Vec<Step>,
    streamer_tokens: Arc<AtomicUsize>,
    seen_at: Arc<Mutex<Vec<usize>>>,
    done: Sender<SequenceEnd>,
}

impl SequenceProgram for Imager {
    fn next_step(&mut self) -> Step {
        if self.steps.is_empty() {
            Step::Finish
        } else {
            self.steps.remove(0)
        }
    }
    fn on_token(&mut self, _: Token, _: &[u8]) -> TokenVerdict {
        TokenVerdict::Continue
    }
    fn on_image_features(&mut self, _: &[f32], _: usize) {
        self.seen_at.lock().unwrap().push(self.streamer_tokens.load(Ordering::SeqCst));
    }
    fn finish(&mut self, end: SequenceEnd, _: &SequenceStats) {
        let _ = self.done.send(end);
    }
}

fn tile(side: u32, shade: u8) -> TileBitmap {
    let rgb = (0..side * side).flat_map(|i| [shade, (i % 251) as u8, (i % 13) as u8 * 19]).collect();
    TileBitmap { rgb, width: side, height: side }
}

#[test]
fn a_generating_stream_keeps_producing_tokens_while_another_image_goes_in() {
    let engine = common::engine("tiny-llm.gguf", "tiny-mmproj.gguf", 2);
    let prompt = engine.model().tokenize("Describe the picture in detail, please.", false);
    let side = engine.info().tile_size;
    let generated = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = channel();
    let max_tokens = 400;
    engine
        .submit(Box::new(Streamer {
            prompt: Some(prompt.clone()),
            generated: generated.clone(),
            max_tokens,
            generating: false,
            done: done_tx.clone(),
        }))
        .unwrap();
    // Once the stream generates, a second request brings a 7-tile image.
    let started = Instant::now();
    while generated.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(60), "the stream never started generating");
        std::thread::sleep(Duration::from_millis(1));
    }
    let seen_at = Arc::new(Mutex::new(Vec::new()));
    let tiles: Vec<TileBitmap> = (0..7).map(|k| tile(side, 30 * k as u8)).collect();
    engine
        .submit(Box::new(Imager {
            steps: vec![Step::Feed { tokens: prompt, capture: Vec::new(), logits: false }, Step::Images(tiles)],
            streamer_tokens: generated.clone(),
            seen_at: seen_at.clone(),
            done: done_tx,
        }))
        .unwrap();
    for _ in 0..2 {
        let end = done_rx.recv_timeout(Duration::from_secs(300)).expect("both sequences end");
        assert_eq!(end, SequenceEnd::Completed);
    }
    let seen_at = seen_at.lock().unwrap().clone();
    assert_eq!(seen_at.len(), 7, "every tile's features are reported");
    let total = generated.load(Ordering::SeqCst);
    assert!(total > 0 && total as u32 <= max_tokens);
    // The image went in while the stream ran: the stream produced tokens between the first and the
    // last tile's encoding, about one per tile (one piece of image work per decode step), instead of
    // waiting for all seven tiles at once.
    assert!(seen_at[6] < total, "the stream was still generating after the image ({seen_at:?}, {total} tokens)");
    let during = seen_at[6] - seen_at[0];
    assert!(during >= 5, "the stream generated {during} tokens while 7 tiles were encoded ({seen_at:?})");
}

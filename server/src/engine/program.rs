//! The contract between the engine's decode loop and whatever drives a sequence (the CoT pipeline).
//!
//! The engine knows nothing about chains of thought: it asks a [`SequenceProgram`] for the next
//! [`Step`], runs it batched with every other active sequence, and reports results back. This keeps
//! one decode loop for any number of concurrent requests.

use super::runtime::{TileBitmap, Token};
use super::stats::SequenceStats;

/// How the next tokens are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy (deterministic); otherwise softmax temperature.
    pub temperature: f32,
    /// Seed of the sampler's random stream (only used when temperature > 0).
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 0.0, seed: 0 }
    }
}

/// What a sequence wants next.
#[derive(Debug)]
pub enum Step {
    /// Append these tokens. `capture` lists indices into `tokens` whose final hidden state is reported
    /// through [`SequenceProgram::on_hidden`]; `logits` asks for the logits after the last token
    /// through [`SequenceProgram::on_logits`].
    Feed { tokens: Vec<Token>, capture: Vec<usize>, logits: bool },
    /// Append these tokens at the very start of the sequence. Every sequence of a kind starts with the
    /// same ones (the system prompt), so the engine may give the sequence a shared copy of cells
    /// computed once instead of computing them; the result is the same. Only valid as the first step.
    Prefix(Vec<Token>),
    /// Encode tiles through the vision tower and append all their embeddings with batched decodes;
    /// features are reported per tile, in order, through [`SequenceProgram::on_image_features`]. While
    /// other sequences run, the engine does this a piece (one tile's encode, or one chunk of rows) per
    /// decode step, so their streams never wait for a whole image.
    Images(Vec<TileBitmap>),
    /// Sample up to `max_tokens` tokens, reporting each through [`SequenceProgram::on_token`].
    Generate { max_tokens: u32, sampling: Sampling },
    /// The sequence is complete.
    Finish,
}

/// The program's answer to a sampled token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenVerdict {
    /// Keep generating.
    Continue,
    /// Keep generating, and report this token's hidden state when it is fed (a sampled marker).
    ContinueAndCapture,
    /// End the generation here: the sampled token is dropped, and the last `rollback` tokens already
    /// in the context are removed too (a stop string that began in earlier tokens).
    Stop { rollback: u32 },
}

/// Why a generation step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationEnd {
    /// The program said stop.
    Stopped,
    /// The model emitted an end-of-generation token.
    EndOfText,
    /// The token cap was reached.
    Length,
}

/// How a sequence ended, as far as the engine knows.
#[derive(Debug, Clone, PartialEq)]
pub enum SequenceEnd {
    Completed,
    Cancelled,
    Failed(super::EngineError),
    /// Never started: the engine stopped admitting work (shutdown) while the sequence was queued.
    Refused,
}

/// Drives one sequence. Called on the engine thread; must not block.
pub trait SequenceProgram: Send {
    /// The next step. Called again after each step completes.
    fn next_step(&mut self) -> Step;
    /// A sampled token and the bytes it stands for (possibly part of a UTF-8 character).
    fn on_token(&mut self, token: Token, bytes: &[u8]) -> TokenVerdict;
    // The callbacks below default to ignoring what they are given: a program that captures nothing
    // (benches, engine tests) need not spell them out.
    /// A generation step ended.
    fn on_generation_end(&mut self, _end: GenerationEnd) {}
    /// The final-layer hidden state of a captured token (index into the Feed's tokens, or `None` for
    /// a sampled token the program asked to capture).
    fn on_hidden(&mut self, _index: Option<usize>, _hidden: &[f32]) {}
    /// The logits after the last token of a Feed that asked for them.
    fn on_logits(&mut self, _logits: &[f32]) {}
    /// The post-projector embeddings of an encoded tile, `n_tokens × n_embd` row-major.
    fn on_image_features(&mut self, _features: &[f32], _n_tokens: usize) {}
    /// The client is gone: the engine stops the sequence and frees its cells.
    fn is_cancelled(&self) -> bool {
        false
    }
    /// The sequence is over; no more calls follow.
    fn finish(&mut self, end: SequenceEnd, stats: &SequenceStats);
}

//! The pipeline's entry point: validated image and options in, a stream of [`EvalEvent`]s out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use crate::engine::{Engine, EngineError, TileBitmap};

use super::cot_program::CotProgram;
use super::events::{event_channel, EvalEvent, EventReceiver, OutputMode, PromptMode};
use super::finalize::Finalizer;
use super::image_input::ImageInputError;
use super::options::{EvalOptions, OptionError};
use super::prompt;
use super::prompt_tokens::PromptTokens;
use super::tiling;
use super::trained::TrainedHeads;

/// Errors before an evaluation starts. Once started, failures arrive as [`EvalEvent::Error`].
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("image: {0}")]
    Image(#[from] ImageInputError),
    #[error("{0}")]
    Options(#[from] OptionError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Runs HEIE evaluations on an engine.
pub struct Evaluator {
    engine: Arc<Engine>,
    tokens: Arc<PromptTokens>,
    finalizer: Finalizer,
    next_id: AtomicU64,
    trained: bool,
}

impl Evaluator {
    /// Zero-shot evaluation (no trained heads).
    pub fn new(engine: Arc<Engine>) -> Result<Evaluator, EngineError> {
        Evaluator::with_heads(engine, None)
    }

    /// With heads, the primary heatmap and score come from them (mode `trained`); the zero-shot ones
    /// follow as extras.
    pub fn with_heads(engine: Arc<Engine>, heads: Option<Arc<TrainedHeads>>) -> Result<Evaluator, EngineError> {
        let tokens = Arc::new(PromptTokens::new(engine.model(), engine.info().native_markers)?);
        let trained = heads.is_some();
        Ok(Evaluator { engine, tokens, finalizer: Finalizer::start(heads), next_id: AtomicU64::new(1), trained })
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    pub fn prompt_mode(&self) -> PromptMode {
        if self.tokens.native {
            PromptMode::Native
        } else {
            PromptMode::Guided
        }
    }

    pub fn output_mode(&self) -> OutputMode {
        if self.trained {
            OutputMode::Trained
        } else {
            OutputMode::ZeroShot
        }
    }

    /// Tiles the image (on the caller's thread), queues its program and returns the event stream.
    /// Fails at once with `QueueFull` when the engine's queue is full.
    pub fn evaluate(&self, image: &RgbImage, options: EvalOptions) -> Result<(u64, EventReceiver), PipelineError> {
        self.evaluate_decoded(image, options, std::time::Duration::ZERO)
    }

    /// As [`Evaluator::evaluate`], for an image that took `decode_time` to decode: that time counts as
    /// preprocessing in the reported timings.
    pub fn evaluate_decoded(
        &self,
        image: &RgbImage,
        options: EvalOptions,
        decode_time: std::time::Duration,
    ) -> Result<(u64, EventReceiver), PipelineError> {
        let started = Instant::now();
        let options = options.validated()?;
        let info = self.engine.info();
        let (tiling, tiles, thumbnail) = tiling::split(image, 1, options.max_tiles, info.tile_size);
        let bitmaps: Vec<TileBitmap> = tiles
            .into_iter()
            .chain(thumbnail)
            .map(|t| TileBitmap { width: t.width(), height: t.height(), rgb: t.into_raw() })
            .collect();
        let after_image = self
            .engine
            .model()
            .tokenize(&prompt::after_image(options.generation_prompt.as_deref(), self.tokens.native), true);
        // Tokenised here, on the caller's thread, like the rest of the request's text.
        let reference = options.reference.as_ref().map(|r| r.tokenize(self.engine.model()));
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (mut events, receiver) = event_channel();
        events.send(EvalEvent::Started { request_id, tiling, mode: self.output_mode(), prompt_mode: self.prompt_mode() });
        let program = CotProgram::new(
            self.tokens.clone(),
            self.trained,
            after_image,
            tiling,
            bitmaps,
            &options,
            reference,
            events,
            request_id,
            started,
            decode_time + started.elapsed(),
            self.finalizer.clone(),
        );
        self.engine.submit(Box::new(program))?;
        Ok((request_id, receiver))
    }
}

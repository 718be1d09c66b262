//! The pipeline's entry point: validated image and options in, a stream of [`EvalEvent`]s out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;

use crate::engine::{Engine, EngineError, TileBitmap};

use super::cot_program::{context_budget, ContextBudget, CotProgram};
use super::events::{event_channel, EvalEvent, EventReceiver, OutputMode, PromptMode};
use super::finalize::Finalizer;
use super::image_input::ImageInputError;
use super::options::{EvalOptions, OptionError};
use super::reference::ReferenceTokens;
use super::prompt_tokens::{after_image_tokens, PromptTokens};
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
        let finalizer = Finalizer::start_watched(heads, engine.liveness().clone());
        Ok(Evaluator { engine, tokens, finalizer, next_id: AtomicU64::new(1), trained })
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

    /// Checks options for an image of `width × height` before any pixel is decoded, and fills in
    /// what the image decides: the default heatmap size is clamped (aspect kept) to the trained
    /// heads' largest side, and the worst-case context the request can take must fit `--ctx-size`.
    /// A failure names the option to change.
    pub fn prepare(&self, width: u32, height: u32, options: EvalOptions) -> Result<EvalOptions, OptionError> {
        let mut options = options.validated()?;
        if self.trained && options.heatmap_size.is_none() {
            options.heatmap_size = clamp_side(width, height, heie_heads::MAX_OUTPUT_SIDE as u32);
        }
        let info = self.engine.info();
        let grid = tiling::choose_grid(width, height, 1, options.max_tiles, info.tile_size);
        let n_views = grid.n_tiles() as usize + usize::from(grid.n_tiles() != 1);
        let (after_image, user) = after_image_tokens(self.engine.model(), options.generation_prompt.as_deref(), self.tokens.native);
        let reference = options.reference.as_ref().map(|r| r.tokenize(self.engine.model()));
        let budget = self.budget(after_image, user, &options, reference.as_ref(), n_views);
        let available = info.ctx_per_sequence as usize;
        if budget.total() <= available {
            return Ok(options);
        }
        let field = if budget.fixed_text + budget.image + budget.generated <= available {
            "generation_prompt"
        } else if budget.fixed_text + budget.image + budget.user_text >= available {
            "max_tiles"
        } else {
            "max_tokens_per_section"
        };
        Err(OptionError {
            field,
            reason: format!(
                "the request can take {} context tokens ({n_views} image views × {} + {} prompt + {} generated) but the \
                 server's --ctx-size gives each request {available}; lower {field}",
                budget.total(),
                info.tokens_per_tile,
                budget.fixed_text + budget.user_text,
                budget.generated,
            ),
        })
    }

    /// The worst-case context of a request with `options` and the most tiles `max_tiles` allows,
    /// without a client prompt: what start-up compares with `--ctx-size`.
    pub fn worst_case_context(&self, options: &EvalOptions) -> usize {
        let n_views = options.max_tiles as usize + usize::from(options.max_tiles > 1);
        let (after_image, user) = after_image_tokens(self.engine.model(), None, self.tokens.native);
        self.budget(after_image, user, options, None, n_views).total()
    }

    fn budget(&self, after_image: Vec<crate::engine::Token>, user: usize, options: &EvalOptions, reference: Option<&ReferenceTokens>, n_views: usize) -> ContextBudget {
        let tokens_per_tile = self.engine.info().tokens_per_tile;
        context_budget(&self.tokens, self.trained, after_image, user, options, reference, n_views, tokens_per_tile)
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
        let options = self.prepare(image.width(), image.height(), options)?;
        let info = self.engine.info();
        let (tiling, tiles, thumbnail) = tiling::split(image, 1, options.max_tiles, info.tile_size);
        let bitmaps: Vec<TileBitmap> = tiles
            .into_iter()
            .chain(thumbnail)
            .map(|t| TileBitmap { width: t.width(), height: t.height(), rgb: t.into_raw() })
            .collect();
        let (after_image, _) = after_image_tokens(self.engine.model(), options.generation_prompt.as_deref(), self.tokens.native);
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

/// `width × height` scaled down (aspect kept) so neither side exceeds `max_side`; `None` when it fits.
pub fn clamp_side(width: u32, height: u32, max_side: u32) -> Option<(u32, u32)> {
    let longest = width.max(height);
    if longest <= max_side {
        return None;
    }
    let scale = |v: u32| ((u64::from(v) * u64::from(max_side) + u64::from(longest) / 2) / u64::from(longest)).max(1) as u32;
    Some((scale(width), scale(height)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamping_keeps_the_aspect_and_leaves_fitting_sizes_alone() {
        assert_eq!(clamp_side(9000, 3000, 8192), Some((8192, 2731)));
        assert_eq!(clamp_side(3000, 9000, 8192), Some((2731, 8192)));
        assert_eq!(clamp_side(8192, 100, 8192), None);
        assert_eq!(clamp_side(40_000, 1, 8192), Some((8192, 1)));
    }
}

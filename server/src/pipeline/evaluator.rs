//! The pipeline's entry point: validated image and options in, a stream of [`EvalEvent`]s out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use image::RgbImage;

use crate::engine::{injected_reference_text, Engine, EngineError, EngineMetrics, ModelInfo, TileBitmap};

use super::cot_program::{context_budget, ContextBudget, CotProgram, ProgramSetup, ProgramStart};
use super::events::{event_channel, EvalEvent, EventReceiver, OutputMode, PromptMode};
use super::finalize::Finalizer;
use super::image_input::ImageInputError;
use super::options::{EvalOptions, OptionError, MAX_TOKENS_PER_SECTION};
use super::prepared::{context_error, views, PreparedRequest};
use super::reference::{ReferenceCot, ReferenceTokens};
use super::prompt_tokens::{after_image_tokens, PromptTokens};
use super::tiling;
use super::trained::TrainedHeads;
use crate::calibration::Calibration;

/// Errors before an evaluation starts. Once started, failures arrive as [`EvalEvent::Error`].
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("image: {0}")]
    Image(#[from] ImageInputError),
    #[error("{0}")]
    Options(#[from] OptionError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A request prepared for one image size was given an image of another (a bug of the caller).
    #[error("the request was prepared for a {}×{} image but the decoded image is {}×{}", .prepared.0, .prepared.1, .decoded.0, .decoded.1)]
    WrongImage { prepared: (u32, u32), decoded: (u32, u32) },
}

/// Runs HEIE evaluations on an engine.
pub struct Evaluator {
    engine: Arc<Engine>,
    tokens: Arc<PromptTokens>,
    finalizer: Finalizer,
    next_id: AtomicU64,
    trained: bool,
    calibration: Option<Arc<Calibration>>,
    /// [`Evaluator::max_tokens_that_fit`], worked out on first use: it depends only on the model and
    /// the context size, and GetInfo asks for it on every call (a bisection that tokenises each step).
    max_tokens_that_fit: OnceLock<u32>,
}

impl Evaluator {
    /// Zero-shot evaluation (no trained heads).
    pub fn new(engine: Arc<Engine>) -> Result<Evaluator, EngineError> {
        Evaluator::with_heads(engine, None)
    }

    /// With heads, the primary heatmap and score come from them (mode `trained`); the zero-shot ones
    /// follow as extras.
    pub fn with_heads(engine: Arc<Engine>, heads: Option<Arc<TrainedHeads>>) -> Result<Evaluator, EngineError> {
        Evaluator::with_calibration(engine, heads, None)
    }

    /// As [`Evaluator::with_heads`], with a user's calibration replacing every primary score (the raw
    /// one stays in `ScoreOutput::uncalibrated`).
    pub fn with_calibration(
        engine: Arc<Engine>,
        heads: Option<Arc<TrainedHeads>>,
        calibration: Option<Arc<Calibration>>,
    ) -> Result<Evaluator, EngineError> {
        let tokens = Arc::new(PromptTokens::new(engine.model(), engine.info().native_markers)?);
        let trained = heads.is_some();
        let finalizer = Finalizer::start_watched(heads, calibration.clone(), engine.liveness().clone());
        Ok(Evaluator { engine, tokens, finalizer, next_id: AtomicU64::new(1), trained, calibration, max_tokens_that_fit: OnceLock::new() })
    }

    /// The calibration applied to primary scores, if any.
    pub fn calibration(&self) -> Option<&Arc<Calibration>> {
        self.calibration.as_ref()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    // The engine's runtime surface, as the serving core needs it: the core never reaches through
    // the pipeline into the engine.

    /// What the loaded model is and how it runs (names, device, slots, context, tile size).
    pub fn info(&self) -> &Arc<ModelInfo> {
        self.engine.info()
    }

    /// Why a thread the evaluator cannot run without died, once one has.
    pub fn death(&self) -> Option<String> {
        self.engine.liveness().death()
    }

    /// Resolves with the cause when the engine thread or the finalizer dies.
    pub async fn died(&self) -> String {
        self.engine.liveness().died().await
    }

    pub fn engine_metrics(&self) -> &Arc<EngineMetrics> {
        self.engine.metrics()
    }

    /// Requests still waiting for a slot end at once (refused: never started); new ones are refused.
    pub fn stop_admitting(&self) {
        self.engine.stop_admitting()
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

    /// Works out everything about a request for an image of `width × height` before any pixel is
    /// decoded, once (see [`PreparedRequest`]): checks the options, picks the tile grid, tokenises
    /// the text, decides the heatmap size (the default is the image's, clamped with its aspect kept to
    /// the trained heads' largest side) and checks that the worst-case context fits `--ctx-size`. A
    /// failure names the option to change.
    pub fn prepare(&self, width: u32, height: u32, options: EvalOptions) -> Result<PreparedRequest, OptionError> {
        let mut options = options.validated()?;
        if options.reference.is_none() {
            // Test builds only (see `injected_reference_text`); a broken file is the test's bug.
            options.reference = injected_reference_text()
                .map(|text| ReferenceCot::parse(&text).expect("HEIE_FAULT_REFERENCE_COT holds a valid chain of thought"));
        }
        let heatmap_size = match options.heatmap_size {
            Some(size) => size,
            None if self.trained => clamp_side(width, height, heie_heads::MAX_OUTPUT_SIDE as u32).unwrap_or((width, height)),
            None => (width, height),
        };
        let info = self.engine.info();
        let grid = tiling::choose_grid(width, height, 1, options.max_tiles, info.tile_size);
        let n_views = views(&grid);
        let (after_image, user) = after_image_tokens(self.engine.model(), options.generation_prompt.as_deref(), self.tokens.native);
        let reference = options.reference.as_ref().map(|r| r.tokenize(self.engine.model()));
        let budget = self.budget(after_image.clone(), user, &options, reference.as_ref(), n_views);
        let available = info.ctx_per_sequence as usize;
        if budget.total() > available {
            return Err(context_error(&budget, available, n_views, info.tokens_per_tile));
        }
        Ok(PreparedRequest { options, image_size: (width, height), heatmap_size, grid, budget, after_image, reference })
    }

    /// The worst-case context of a request with `options` and the most tiles `max_tiles` allows,
    /// without a client prompt: what start-up compares with `--ctx-size`.
    pub fn worst_case_context(&self, options: &EvalOptions) -> usize {
        let n_views = options.max_tiles as usize + usize::from(options.max_tiles > 1);
        let (after_image, user) = after_image_tokens(self.engine.model(), None, self.tokens.native);
        self.budget(after_image, user, options, None, n_views).total()
    }

    /// The largest `max_tokens_per_section` any request can have on this server: the most that fits
    /// `--ctx-size` for the smallest request (one tile, no prompt, the full explanation), at most
    /// [`MAX_TOKENS_PER_SECTION`]; 0 when not even one token fits. What GetInfo reports, so clients
    /// range their inputs by what the server takes rather than by the option's absolute ceiling.
    pub fn max_tokens_that_fit(&self) -> u32 {
        *self.max_tokens_that_fit.get_or_init(|| self.largest_fitting_cap())
    }

    fn largest_fitting_cap(&self) -> u32 {
        let available = self.engine.info().ctx_per_sequence as usize;
        let fits = |n: u32| {
            let options = EvalOptions { max_tiles: 1, max_tokens_per_section: n, ..EvalOptions::default() };
            self.worst_case_context(&options) <= available
        };
        // The worst case grows with the cap, so the largest fitting cap is found by bisection.
        let (mut low, mut high) = (0, MAX_TOKENS_PER_SECTION);
        if fits(high) {
            return high;
        }
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if fits(middle) {
                low = middle;
            } else {
                high = middle;
            }
        }
        low
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
        let prepared = self.prepare(image.width(), image.height(), options)?;
        self.evaluate_prepared(image, prepared, decode_time + started.elapsed())
    }

    /// Tiles the decoded image of a prepared request (on the caller's thread), queues its program
    /// and returns the event stream. `preprocess`: the time the request took before this (decoding,
    /// preparing). Fails at once with `QueueFull` when the engine's queue is full.
    pub fn evaluate_prepared(
        &self,
        image: &RgbImage,
        prepared: PreparedRequest,
        preprocess: std::time::Duration,
    ) -> Result<(u64, EventReceiver), PipelineError> {
        let started = Instant::now();
        if image.dimensions() != prepared.image_size {
            return Err(PipelineError::WrongImage { prepared: prepared.image_size, decoded: image.dimensions() });
        }
        let tile_size = self.engine.info().tile_size;
        let (tiling, tiles, thumbnail) = tiling::split_into(image, prepared.grid, tile_size);
        let bitmaps: Vec<TileBitmap> = tiles
            .into_iter()
            .chain(thumbnail)
            .map(|t| TileBitmap { width: t.width(), height: t.height(), rgb: t.into_raw() })
            .collect();
        let request_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (mut events, receiver) = event_channel();
        events.send(EvalEvent::Started { request_id, tiling, mode: self.output_mode(), prompt_mode: self.prompt_mode() });
        let start = ProgramStart { request_id, started, preprocess: preprocess + started.elapsed() };
        let setup = ProgramSetup { tokens: self.tokens.clone(), trained: self.trained, finalizer: self.finalizer.clone() };
        let program = CotProgram::new(&setup, prepared, tiling, bitmaps, events, start);
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

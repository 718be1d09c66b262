//! The HEIE pipeline: image input and tiling, the chain-of-thought program, and the zero-shot outputs.

pub mod boxes;
pub mod explanation;
pub mod heatmap;
pub mod heatmap_components;
pub mod image_container;
mod image_header;
pub mod image_input;
mod image_input_error;
pub mod rating;
pub mod tiling;
pub mod utf8_stream;

// The chain-of-thought program and its plumbing.
pub mod calibrated;
pub mod captured;
pub mod cot_plan;
pub mod cot_program;
pub mod evaluator;
pub mod events;
pub mod finalize;
pub mod heads_worker;
pub mod options;
pub mod pending;
pub mod prompt;
pub mod prompt_tokens;
pub mod prepared;
pub mod reference;
pub mod region_category;
pub mod region_mask;
pub mod region_sentences;
pub mod regions;
pub mod score_band;
pub mod section_text;
pub mod summary;

pub use evaluator::{Evaluator, PipelineError};
pub use prepared::PreparedRequest;
pub use events::{EvalEvent, FinishReason, OutputMode, PromptMode};
pub use options::{EvalOptions, Sampling};
pub mod result;
pub use result::EvalResult;
pub mod trained;
